"""How alike two face crops are as pictures: sharpness, perceptual hash, same-photo test.

All functions take grayscale uint8 crops and a ``valid`` mask (True where the crop shows
the photo; see ``pipeline.crops``), so padding never counts as picture content.

``Picture.compare`` answers "are these two crops cut from the same photo?" with two
measures that fail on different edits (``SamePhotoRule`` decides). Pixels: detect already
aligned both on the face, so a residual affine registration (OpenCV's ECC) of one onto the
other, mirrored or not, lines up the same photo however it was re-encoded, resized,
recropped, slightly rotated, retoned or mirrored; what is left is judged as the
correlation over the crop and the worst cell of a grid over the face
(``region_difference``, at the coarser photo's resolution: ``at_common_resolution``), where
a closed eye or an open mouth in another photo of the same sitting shows even when the whole
crop still correlates at 0.99 (ORL's series); cells under a mark of one colour (a watermark
brightens every pixel it covers, a changed eye goes both ways) have no say.
Keypoints (``pipeline.components.keypoints``): SIFT matches under one similarity, most
of them exact to a fraction of a pixel in a copy, also where an overlay (a watermark)
changes a region; counted again without the cells a mark covers (its letters are keypoints
that match nothing) where the pixels agree outside it.
``benchmarks/same_photo.py`` measures both on real photos and real edits of them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.components.keypoints import MIN_CELLS, KeypointMatch, Keypoints, match_keypoints
from pipeline.core.crops import face_box_in_crop, geometry_from_row, valid_mask_of
from pipeline.core.images import MAX_PIXELS, ImageError, load_rgb
from pipeline.core.rows import Box, FaceRow, ImageRow

if TYPE_CHECKING:
    from pipeline.components.embedders import Embeddings
    from pipeline.core.config import CleanParams

_HASH_SIDE = 32
_ERODE = np.ones((5, 5), np.uint8)  # keep away from the edge between photo and padding
_MIN_SHARED = 0.15  # below this share of the crop shown by both, no verdict (0.0)
_ECC_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-4)
_MIN_SCALE = 0.75  # a registration may rescale by 0.75-1.33x (detector jitter, recrops) ...
_MAX_DRIFT = 0.25  # ... and move by a quarter of the crop from where it started
_GRID = 4  # region_difference judges the face in 4 x 4 cells ...
_MIN_CELL = 0.3  # ... each with at least this share of its pixels shown by both crops
_THIN = np.ones((3, 3), np.uint8)  # differences thinner than this are opened away
# A photo shrunk by resampling (bicubic, Lanczos) loses detail finer than about half its new
# pixel: the sharper crop is blurred by this many of the coarser photo's pixels before the two
# are compared (benchmarks/same_photo.py: 0.5 and 0.6 measured alike, 0.3 and 0.8 worse)
_RESAMPLE_SPREAD = 0.5
# The tone fit drops pixels misfitting by more than this many robust SDs and fits again ...
_TONE_OUTLIER, _TONE_REFITS = 2.0, 5
# ... and a face cell whose residual is this one-signed is under an overlay (a watermark):
# no say (benchmarks/same_photo.py: 420 of 482 differing cells of the watermarked copies
# reach it; the only distinct ORL pair a limit down to 0.2 would pass leans 0.30)
_OVERLAY_BALANCE = 0.5


@dataclass(frozen=True)
class Picture:
    """What the likeness checks need of a crop: grey pixels, where the photo is, the face."""

    gray: np.ndarray
    valid: np.ndarray  # True where the crop shows the photo, False on padding
    face: Box  # the face box in crop pixels
    source_pixel: float = 1.0  # crop pixels one pixel of the photo spans (> 1: enlarged)

    @classmethod
    def of(
        cls, rgb: np.ndarray, valid: np.ndarray, face: Box, source_pixel: float = 1.0
    ) -> Picture:
        return cls(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), valid, face, source_pixel)

    @classmethod
    def of_row(cls, rgb: np.ndarray, row: ImageRow) -> Picture:
        """From a decoded crop and its manifest row (which records the geometry)."""
        size = rgb.shape[0]
        geometry = geometry_from_row(row, size)  # type: ignore[arg-type]
        source_pixel = geometry.scale if geometry is not None else 1.0
        return cls.of(rgb, valid_mask_of(row, size), face_box_in_crop(row, size), source_pixel)

    @property
    def centre(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.face
        return (x1 + x2) / 2, (y1 + y2) / 2

    def sharpness(self) -> float:
        """Laplacian variance over the face, padding left out (blur is judged on the face)."""
        x1, y1, x2, y2 = self.face
        region = np.zeros_like(self.valid)
        region[max(0, round(y1)) : round(y2), max(0, round(x1)) : round(x2)] = True
        return laplacian_variance(self.gray, region & self.valid)

    def hash(self) -> str:
        return phash(self.gray, self.valid)

    @cached_property
    def keypoints(self) -> Keypoints:
        """SIFT keypoints on the photo, as it is and mirrored (computed once)."""
        return Keypoints.of(self.gray, self.valid)

    def compare(self, other: Picture) -> Resemblance:
        """How ``other`` matches this crop: keypoints matched under one similarity (mirrored
        or not), then the pixels registered (from the crops' faces and from the keypoints'
        transform, the better) and judged as correlation and worst face region, at the
        coarser photo's resolution."""
        match = match_keypoints(self.keypoints, other.keypoints, self.face)
        found = best_registration(self, other, match)
        if found is None:
            return Resemblance(-1.0, float("inf"), match)
        common = at_common_resolution(found, self.source_pixel, other.source_pixel)
        regions = region_difference(common, self.face)
        unmarked = match.outside(regions.marked) if match and regions.marked else None
        return Resemblance(found.correlation, regions.worst, match, unmarked)


@dataclass(frozen=True)
class Resemblance:
    """What ``Picture.compare`` measures of two crops."""

    correlation: float  # of the registered crops; -1.0 when they cannot be registered
    region: float  # the worst face cell's difference (``region_difference``); inf: none
    keypoints: KeypointMatch | None
    # the keypoints counted outside the cells a mark covers (``FaceRegions.marked``); None
    # when no cell is marked
    unmarked: KeypointMatch | None = None


@dataclass(frozen=True)
class SamePhotoRule:
    """clean's thresholds (``same_photo_*``): when two crops are one photo."""

    correlation: float
    region: float
    keypoints: int
    keypoint_share: float
    marked_region: float

    @classmethod
    def of(cls, params: CleanParams) -> SamePhotoRule:
        return cls(
            params.same_photo_correlation, params.same_photo_region,
            params.same_photo_keypoints, params.same_photo_keypoint_share,
            params.same_photo_marked_region,
        )  # fmt: skip

    def verified(self, found: Resemblance) -> bool:
        """A verified copy, by either of two measures that fail on different edits: the
        registered pixels (correlation, and no face region differing: misses a heavy
        re-encode, a watermark's edge) or the keypoints (enough exact matches, spread over
        the face: misses a face with few corners). Under a mark (a watermark), where the
        pixels agree outside it (no region beyond ``marked_region``), the keypoints outside
        it decide: the mark's letters are keypoints that match nothing. Measured by
        benchmarks/same_photo.py (README "The same photo")."""
        pixels = found.correlation >= self.correlation and found.region <= self.region
        marked = found.unmarked is not None and found.region <= self.marked_region
        return pixels or self._exact(found.keypoints) or (marked and self._exact(found.unmarked))

    def _exact(self, match: KeypointMatch | None) -> bool:
        """Enough keypoint matches exact, as a share of all, spread over the face."""
        return match is not None and (
            match.exact >= self.keypoints
            and match.share >= self.keypoint_share
            and match.cells >= MIN_CELLS
        )

    def possible(self, found: Resemblance) -> bool:
        """A possible copy: the registered crops correlate as one photo's do."""
        return found.correlation >= self.correlation


def laplacian_variance(gray: np.ndarray, region: np.ndarray | None = None) -> float:
    """Sharpness: low when edges are smeared. ``region`` (bool) limits it to the face."""
    laplacian = cv2.Laplacian(gray, cv2.CV_64F)
    if region is None:
        return float(laplacian.var())
    inner = cv2.erode(region.astype(np.uint8), _ERODE).astype(bool)
    return float(laplacian[inner].var()) if inner.sum() > 16 else float(laplacian.var())


def phash(gray: np.ndarray, region: np.ndarray | None = None) -> str:
    """Perceptual hash: signs of the 8x8 lowest DCT frequencies against their median.

    Robust to re-encoding, resizing and mild colour change, unlike a content hash.
    Pixels outside ``region`` are set to the region's mean first, so a crop's padding
    does not make every tight headshot hash alike.
    """
    picture = gray.astype(np.float32)
    if region is not None and region.any() and not region.all():
        picture = np.where(region, picture, picture[region].mean())
    small = cv2.resize(picture, (_HASH_SIDE, _HASH_SIDE), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would dominate the median
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


@dataclass(frozen=True)
class Registered:
    """``b`` registered onto ``a``: both in ``a``'s frame, over the pixels both show."""

    correlation: float  # ECC's, over what both show
    a: np.ndarray  # float32
    b: np.ndarray  # float32, tones matched to ``a``
    shared: np.ndarray  # bool, in ``a``'s frame
    scale: float = 1.0  # ``b``'s crop pixels per pixel of ``a``'s (the registration's)


def best_registration(
    first: Picture, second: Picture, match: KeypointMatch | None = None
) -> Registered | None:
    """``second`` registered onto ``first`` as it is and mirrored, and from the keypoints'
    similarity when there is one: the best-correlated.

    The faces' centres are a good start unless the two crops frame the face differently (an
    80 % crop of a tight headshot: detect's box and so the crop's scale change), where the
    keypoints' transform starts ECC at the right scale."""
    (ax, ay), (bx, by) = first.centre, second.centre
    shift = np.float32([[1, 0, bx - ax], [0, 1, by - ay]])
    direct = register(first.gray, second.gray, first.valid, second.valid, shift)
    width = second.gray.shape[1] - 1
    mirror_shift = np.float32([[1, 0, (width - bx) - (width - ax)], [0, 1, by - ay]])
    mirrored = register(
        first.gray, second.gray[:, ::-1], first.valid, second.valid[:, ::-1], mirror_shift
    )
    tries = [direct, mirrored]
    if match is not None:
        gray, valid = (second.gray[:, ::-1], second.valid[:, ::-1]) if match.mirrored else (
            second.gray, second.valid)  # fmt: skip
        tries.append(register(first.gray, gray, first.valid, valid, match.transform))
    found = [r for r in tries if isinstance(r, Registered)]
    return max(found, key=lambda r: r.correlation) if found else None


def at_common_resolution(found: Registered, own_pixel: float, other_pixel: float) -> Registered:
    """``found`` with the sharper crop blurred to the detail the coarser photo holds.

    ``own_pixel`` / ``other_pixel``: crop pixels one source pixel spans in ``a`` / ``b``
    (``Picture.source_pixel``). A copy shrunk to half size and enlarged again by detect's
    crop lacks the fine detail of its original; compared as they are, every edge of the
    face differs a little and a region exceeds the threshold (measured: the pixel test
    alone missed 26 of 72 half-size copies re-saved as JPEG, 10 with this). Another photo
    of the sitting is no nearer for it: an eye or a mouth is far coarser than a pixel, and
    two photos at one resolution are compared unchanged.
    """
    own = max(1.0, own_pixel)  # a photo shown smaller than its crop is limited by the crop
    other = max(1.0, other_pixel / found.scale)
    sigma = _RESAMPLE_SPREAD * float(np.sqrt(abs(other**2 - own**2)))
    if sigma < 0.25:  # a narrower Gaussian leaves the pixels as they are
        return found
    if other > own:
        return replace(found, a=cv2.GaussianBlur(found.a, (0, 0), sigma))
    return replace(found, b=cv2.GaussianBlur(found.b, (0, 0), sigma))


@dataclass(frozen=True)
class FaceRegions:
    """What ``region_difference`` finds in the face's cells."""

    worst: float  # the largest difference of a cell with a say; inf: too little face shown
    marked: tuple[Box, ...] = ()  # the cells a mark of one colour covers (no say)


def region_difference(found: Registered, face: Box) -> FaceRegions:
    """The largest RMS difference left in any cell of a 4 x 4 grid over the face that no
    overlay explains, in units of the face's own grey-level spread, and the cells an
    overlay covers.

    One correlation over the whole crop hardly moves when an eye closes or a mouth opens
    in another photo of the same sitting (same light, background and camera); judged cell
    by cell, that change stands out, while an edit of the photo (re-encoding, resizing,
    tones, a small rotation) leaves every cell nearly alike once registered. Differences
    narrower than 3 px are opened away first (measured: 75 % of real copies pass at 4 ORL
    pairs without the opening, 84 % with it). Cells an overlay covers (``_overlay_cells``:
    a watermark) have no say.
    """
    shared = found.shared
    gain, offset = _tone_fit(found.b[shared], found.a[shared])  # what tone matching left
    signed = (gain * found.b + offset - found.a).astype(np.float32)  # > 0: b brighter
    signed[~shared] = 0
    # Opened (grey erosion then dilation): a difference must be 3 px wide to count, so JPEG
    # speckle and resampling noise drop out while a closed eye or an open mouth stays.
    residual = cv2.morphologyEx(np.abs(signed), cv2.MORPH_OPEN, _THIN)
    x1, y1, x2, y2 = (round(v) for v in face)
    inside = np.zeros_like(shared)
    inside[max(0, y1) : y2, max(0, x1) : x2] = True
    inside &= shared
    if inside.sum() < 16:
        return FaceRegions(float("inf"))
    spread = float(found.a[inside].std()) + 1e-6
    xs = np.linspace(max(0, x1), x2, _GRID + 1).astype(int)
    ys = np.linspace(max(0, y1), y2, _GRID + 1).astype(int)
    cells: list[tuple[float, float]] = []  # (difference, sign balance) of each cell with a say
    boxes: list[Box] = []
    for top, bottom in pairwise(ys):
        for left, right in pairwise(xs):
            cell = inside[top:bottom, left:right]
            if cell.mean() >= _MIN_CELL:  # cells mostly on padding or off the crop: no say
                values = residual[top:bottom, left:right][cell]
                change = signed[top:bottom, left:right][cell]
                balance = float(change.sum() / (np.abs(change).sum() + 1e-6))
                cells.append((float(np.sqrt(np.mean(values**2))) / spread, balance))
                boxes.append((float(left), float(top), float(right), float(bottom)))
    covered = _overlay_cells(cells)
    worst = max((d for i, (d, _) in enumerate(cells) if i not in covered), default=0.0)
    return FaceRegions(worst, tuple(boxes[i] for i in sorted(covered)))


def _tone_fit(b: np.ndarray, a: np.ndarray) -> tuple[float, float]:
    """Gain and offset mapping ``b``'s grey levels onto ``a``'s, fitted again without the
    pixels that differ most: a watermark's bright text would otherwise tilt the fit and
    leave every cell of the face differing a little (measured on ORL: the cells above the
    text at 0.07-0.17 with a plain least-squares fit, at the JPEG noise's 0.03-0.05 without
    the text's pixels)."""
    b, a = b.astype(np.float64), a.astype(np.float64)
    keep = np.ones(b.shape, bool)
    for _ in range(_TONE_REFITS + 1):
        # least squares in closed form, without BLAS: np.polyfit's solver and np.dot's
        # threads made clean 1.24-1.27x slower on ORL
        kept_b, kept_a = b[keep], a[keep]
        mean_b, mean_a = kept_b.mean(), kept_a.mean()
        kept_b, kept_a = kept_b - mean_b, kept_a - mean_a
        variance = float((kept_b * kept_b).sum())
        gain = float((kept_b * kept_a).sum()) / variance if variance > 0 else 1.0
        offset = float(mean_a - gain * mean_b)
        misfit = np.abs(a - (gain * b + offset))
        refit = misfit <= _TONE_OUTLIER * 1.4826 * float(np.median(misfit)) + 1e-6
        if refit.sum() < 16 or np.array_equal(refit, keep):
            break
        keep = refit
    return gain, offset


def _overlay_cells(cells: list[tuple[float, float]]) -> set[int]:
    """Which cells (``(difference, sign balance)``) an overlay of one colour covers.

    A mark laid over the photo (white or black text, a logo) brightens or darkens every
    pixel it covers: the cell's residual is nearly all of one sign (balance = sum / sum of
    magnitudes, near +-1). Another photo of the sitting changes a region both ways (an eye
    closes: the lid lighter, the lashes darker; a head turns: each edge moves): the only
    distinct ORL pair a limit down to 0.2 would let through, s24 09~10 (the light a little
    changed), leans 0.30. The overlay is one colour (the sign of the most
    differing one-signed cell), and a quarter of the cells stays judged: a face that
    changed one way all over is not forgiven.
    """
    marked = [i for i, (_, balance) in enumerate(cells) if abs(balance) >= _OVERLAY_BALANCE]
    if not marked:
        return set()
    colour = np.sign(cells[max(marked, key=lambda i: cells[i][0])][1])
    covered = {i for i in marked if np.sign(cells[i][1]) == colour}
    return covered if len(cells) - len(covered) >= max(1, len(cells) // 4) else set()


def register(
    a: np.ndarray,
    b: np.ndarray,
    valid_a: np.ndarray,
    valid_b: np.ndarray,
    shift: np.ndarray,
) -> Registered | float:
    """``b`` registered onto ``a`` (affine ECC) from x_b = shift @ (x_a, 1) (a 2 x 3 float32
    map); a float (0.0: too little shared picture, -1.0: no plausible registration) when
    there is none."""
    size = valid_b.shape[::-1]
    a_seen_from_b = cv2.warpAffine(valid_a.astype(np.uint8), shift, size)
    shared_b = cv2.erode(valid_b.astype(np.uint8) & a_seen_from_b, _ERODE)
    if shared_b.sum() < _MIN_SHARED * shared_b.size:
        return 0.0
    shared_a = cv2.warpAffine(shared_b, shift, size, flags=cv2.WARP_INVERSE_MAP).astype(bool)
    template = a.astype(np.float32)
    moving = _match_tones(b.astype(np.float32), b[shared_b.astype(bool)], a[shared_a])
    try:
        correlation, warp = cv2.findTransformECC(
            template, moving, shift.copy(), cv2.MOTION_AFFINE, _ECC_CRITERIA, shared_b, 5
        )
    except cv2.error:  # did not converge: nothing lines up, so not the same photo
        return -1.0
    if not _plausible(warp, shift, a.shape[0]):
        return -1.0
    inverse = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    aligned = cv2.warpAffine(moving, warp, a.shape[::-1], flags=inverse)
    seen = cv2.warpAffine(valid_b.astype(np.uint8), warp, a.shape[::-1], flags=inverse)
    shared = cv2.erode(seen & valid_a.astype(np.uint8), _ERODE).astype(bool)
    scale = float(np.sqrt(abs(np.linalg.det(warp[:, :2]))))
    return Registered(float(correlation), template, aligned, shared, scale)


def _plausible(warp: np.ndarray, start: np.ndarray, size: int) -> bool:
    """A real match needs only a small move from the start (the faces' centres, or the
    keypoints' similarity).

    An affine ECC can also collapse onto a degenerate map (a few pixels stretched over the
    whole crop) whose correlation is ~1 for any two pictures; such a map is no match.
    """
    singular = np.linalg.svd(warp[:, :2] @ np.linalg.inv(start[:, :2]), compute_uv=False)
    drift = np.abs(warp[:, 2] - start[:, 2]).max()
    return bool(
        np.linalg.det(warp[:, :2]) > 0
        and singular.min() >= _MIN_SCALE
        and singular.max() <= 1 / _MIN_SCALE
        and drift <= _MAX_DRIFT * size
    )


def _match_tones(image: np.ndarray, own: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Map ``image``'s grey levels so the quantiles of ``own`` (its shared pixels) become
    those of ``other`` (the other crop's shared pixels).

    ECC's correlation already ignores brightness and contrast; this also undoes gamma and
    clipped brightening, which a linear model cannot.
    """
    levels = np.linspace(0, 100, 33)
    source = np.percentile(own, levels) + np.arange(len(levels)) * 1e-6  # strictly rising
    target = np.percentile(other, levels)
    return np.interp(image, np.maximum.accumulate(source), target).astype(np.float32)


# The IJG libjpeg luminance table at quality 50; encoders scale it for other qualities.
_IJG_LUMA = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69,
    56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81,
    104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
])  # fmt: skip


@lru_cache(maxsize=4096)
def source_quality(path: str) -> int:
    """The JPEG quality (1-100) a photo file was saved with, estimated from its luminance
    quantisation table against libjpeg's; 100 for lossless formats (PNG, ...); 0 when the
    file cannot be read. Only the header is read."""
    try:
        with Image.open(path) as image:
            tables = getattr(image, "quantization", None) if image.format == "JPEG" else None
    except (OSError, UnidentifiedImageError):
        return 0
    if not tables:
        return 100
    scale = 100 * float(np.sum(tables[min(tables)])) / float(_IJG_LUMA.sum())
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return int(np.clip(round(quality), 1, 100))


class Likeness:
    """Which pairs of crops show the same photo; pixels are read only for pairs worth it.

    A pair is a *candidate* when its hashes are within ``near_hamming`` bits or, with
    embeddings, its faces within ``duplicate_distance``; a candidate's two crops are decoded
    (each once) and compared (``Picture.compare``). Two levels (``SamePhotoRule``): a
    *verified* copy, rejected, passes the pixel test (correlation and every face region) or
    the keypoint test (exact matches under one similarity); a *possible* copy only
    correlates at least the threshold. The strict level keeps another photo of one sitting
    (ORL) from being thrown away; the loose one catches copies it misses, and another photo
    of the sitting it also catches costs only a shared ``group``, not the photo.
    """

    def __init__(
        self, near_hamming: int, duplicate_distance: float, rule: SamePhotoRule,
        vectors: Embeddings | None = None,
    ) -> None:  # fmt: skip
        self.near_hamming, self.duplicate_distance = near_hamming, duplicate_distance
        self.rule, self.vectors = rule, vectors
        self._pictures: dict[str, Picture | None] = {}
        self._scores: dict[tuple[str, str], Resemblance] = {}

    def distance(self, a: FaceRow, b: FaceRow) -> float:
        """Euclidean distance of the two faces' embeddings (inf without them)."""
        va = self.vectors.get(a.sha256) if self.vectors else None
        vb = self.vectors.get(b.sha256) if self.vectors else None
        if va is None or vb is None:
            return float("inf")
        return float(np.linalg.norm(va.astype(np.float64) - vb))

    def candidate(self, a: FaceRow, b: FaceRow) -> bool:
        if hamming(a.phash, b.phash) <= self.near_hamming:
            return True
        return self.distance(a, b) <= self.duplicate_distance

    def same_photo(self, a: FaceRow, b: FaceRow) -> bool:
        """Any copy of one photo, however edited (re-encoded, resized, cropped, mirrored,
        retoned, slightly rotated, watermarked): a candidate pair (close hashes, or close
        embeddings, which also find the mirrored and recropped copies a hash misses) that
        passes the same-photo test (``SamePhotoRule.verified``). A hash or an embedding
        alone also matches different photos that merely look alike (the same person in the
        same pose and light), so they only propose pairs; once the pixels or the keypoints
        verify one, the embedder is not asked again: a watermark over the face moves dlib's
        embedding of a copy past ``duplicate_distance`` (0.251 and 0.258 measured), while
        clean rejects the same 4 of ORL's distinct photos either way."""
        return self.candidate(a, b) and self.rule.verified(self.scores(a, b))

    def possible_copy(self, a: FaceRow, b: FaceRow) -> bool:
        """A verified copy, or a pair whose crops correlate as one photo's do though the
        strict tests fail: a heavily edited copy or another photo of the same sitting.
        Clean groups these, so split never puts them on both sides; it rejects only
        verified copies."""
        if not self.candidate(a, b):
            return False
        found = self.scores(a, b)
        return self.rule.verified(found) or self.rule.possible(found)

    def scores(self, a: FaceRow, b: FaceRow) -> Resemblance:
        """The pair's ``Resemblance``, computed once."""
        a, b = (a, b) if a.path <= b.path else (b, a)  # one order: the same verdict either way
        key = (a.path, b.path)
        if key not in self._scores:
            first, second = self.picture(a), self.picture(b)
            unreadable = Resemblance(-1.0, float("inf"), None)
            self._scores[key] = first.compare(second) if first and second else unreadable
        return self._scores[key]

    def picture(self, row: FaceRow) -> Picture | None:
        """The row's crop, decoded once; None when it cannot be read (never the same photo)."""
        if row.path not in self._pictures:
            try:
                rgb = load_rgb(Path(row.path), MAX_PIXELS)
            except ImageError:
                self._pictures[row.path] = None
            else:
                self._pictures[row.path] = Picture.of_row(rgb, row)
        return self._pictures[row.path]
