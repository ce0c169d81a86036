"""`prep sample-data`: a small, deliberately dirty face dataset with ground truth.

Identities are synthetic: a DCGAN (gan-face-generate, trained on the synthetic
DigiFace1M faces) turns one latent vector per class, plus small jitter per
photo, into a consistent 64x64 face. Each photo pastes that face, upscaled to a
realistic size, onto a generated background. Then faults are injected on top
of the clean photos, and every file written is listed in a ground-truth JSON
with the stage and reason that must reject it, so tests can check that the
pipeline catches exactly the injected faults.

Every photo is checked with the pipeline's own MTCNN detector while it is made
(a clean face must be found confidently, a "no face" photo must have none, a
tiny face must still be found...) and redrawn from the next derived seed if
not, so the ground truth holds for any seed rather than by luck.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from pipeline.components.detectors import DETECTORS, Face, FaceDetector, torch_threads
from pipeline.core.config import SampleDataParams
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_write_bytes, atomic_write_text
from pipeline.core.images import decode_rgb, encode_jpeg
from pipeline.core.report import StageReport
from pipeline.core.seeds import derive_seed

LATENT = 100
JITTER = 0.3  # latent noise per photo: same identity, different expression and lighting
FACE_PX = (120, 260)  # pasted face size range (source pixels)
TINY_PX = (38, 48)  # pasted size giving a detected box of about 28-34 px
JPEG_QUALITY = 90
SURE = 0.99  # a face must score this in the check; the pipeline's min_prob is lower
MAX_ATTEMPTS = 40

# (fault kind, stage that must reject it, reason); a None stage means "must be kept".
FAULTS: list[tuple[str, str | None, str | None]] = [
    ("exact_duplicate", "clean", "exact_duplicate"),
    ("near_duplicate", "clean", "near_duplicate"),
    ("blurred", "clean", "blurry"),
    ("no_face", "detect", "no_face"),
    ("two_faces", "detect", "multiple_faces"),
    ("tiny_face", "detect", "too_small"),
    ("other_class_face", "clean", "wrong_identity"),
    ("truncated", "detect", "unreadable"),
    ("zero_byte", "detect", "unreadable"),
    ("non_image", "detect", "unreadable"),
    ("exif_rotated", None, None),
    ("grayscale", None, None),
    ("png_alpha", None, None),
    ("cmyk", None, None),
    ("png16", None, None),
]
# Kinds injected a second time (in another class) when there are enough classes.
REPEATED = ("exact_duplicate", "near_duplicate", "blurred", "no_face")
PNG_KINDS = ("png_alpha", "png16")


@dataclass(frozen=True)
class TruthEntry:
    """One file written: which fault it carries and who must reject it, for what reason.

    ``identities`` lists the classes whose faces appear in the file (beyond the
    brief's fields; it tells a test which identity an other_class_face shows).
    """

    file: str
    label: str
    fault: str | None = None
    of: str | None = None
    expect_stage: str | None = None
    expect_reason: str | None = None
    identities: tuple[str, ...] = ()


class CheckFailedError(Exception):
    """A rendered photo failed its detector check; the caller redraws it."""


@dataclass
class Written:
    """Files written so far: bytes by relative path, and clean photos a fault already copies."""

    out_dir: Path
    data: dict[str, bytes] = field(default_factory=dict)
    clean: list[str] = field(default_factory=list)
    copied: set[str] = field(default_factory=set)

    def add(self, entry: TruthEntry, data: bytes) -> TruthEntry:
        atomic_write_bytes(self.out_dir / entry.file, data)
        self.data[entry.file] = data
        if entry.fault is None:
            self.clean.append(entry.file)
        return entry


def run(params: SampleDataParams, seed: int, out_dir: Path, truth_path: Path) -> StageReport:
    """Write ``params.classes`` x ``params.per_class`` photos plus faults, and the truth JSON."""
    _refuse_non_empty(out_dir, truth_path)
    classes = [f"id{c:02d}" for c in range(params.classes)]
    written = Written(out_dir)
    # One thread: the work is many small calls, which extra threads slow down on a busy machine.
    with torch_threads(1):
        maker = PhotoMaker(params, seed)
        entries = [written.add(entry, data) for entry, data in _clean_photos(maker, classes)]
        for kind, label, index in plan_faults(classes):
            entries.append(written.add(*_make_fault(maker, classes, written, kind, label, index)))
    entries.sort(key=lambda e: e.file)
    truth = {"seed": seed, "classes": classes, "files": [asdict(e) for e in entries]}
    atomic_write_text(truth_path, json.dumps(truth, indent=2, ensure_ascii=False) + "\n")
    faults = Counter(e.fault for e in entries if e.fault)
    extra = {"files": len(entries), "clean_photos": len(entries) - sum(faults.values())}
    return StageReport("sample_data", 0, len(entries), extra={**extra, "faults": dict(faults)})


def _refuse_non_empty(out_dir: Path, truth_path: Path) -> None:
    """Never mix generated photos with existing files (they may be the user's data)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} already exists and is not empty; remove it or pick a new path")
    if truth_path.resolve().is_relative_to(out_dir.resolve()):
        raise UserError(
            f"the truth file {truth_path} must be outside {out_dir} (it is not a photo)"
        )


def photo_name(index: int) -> str:
    """Mostly camera-like names; some with spaces and non-ASCII, as real folders have."""
    if index % 4 == 3:
        return f"photo {index:02d} é.jpg"
    if index % 5 == 1:
        return f"IMG {index:04d} (Zoë).jpeg"
    return f"IMG_{index:04d}.jpg"


def _clean_photos(maker: PhotoMaker, classes: list[str]) -> list[tuple[TruthEntry, bytes]]:
    photos = []
    for c, label in enumerate(classes):
        for i in range(maker.params.per_class):
            data = maker.clean_jpeg(c, f"{label}/clean/{i}")
            photos.append(
                (TruthEntry(f"{label}/{photo_name(i)}", label, identities=(label,)), data)
            )
    return photos


def plan_faults(classes: list[str]) -> list[tuple[str, str, int]]:
    """(kind, class, index within the class) per fault: spread over classes, once or twice each."""
    n = len(classes)
    kinds = [kind for kind, _, _ in FAULTS]
    plan = [(kind, classes[k % n]) for k, kind in enumerate(kinds)]
    if n >= 6:
        plan += [(kind, classes[(kinds.index(kind) + n // 2) % n]) for kind in REPEATED]
    counts: Counter[str] = Counter()
    placed = []
    for kind, label in plan:
        placed.append((kind, label, counts[label]))
        counts[label] += 1
    return placed


def _make_fault(
    maker: PhotoMaker, classes: list[str], written: Written, kind: str, label: str, index: int
) -> tuple[TruthEntry, bytes]:
    c = classes.index(label)
    other = classes[(c + 1) % len(classes)]
    key = f"{label}/fault/{kind}/{index}"
    suffix = ".png" if kind in PNG_KINDS else ".jpg"
    name = f"{label}/IMG_{maker.params.per_class + index:04d}{suffix}"
    stage, reason = next((s, r) for k, s, r in FAULTS if k == kind)
    of = None
    if kind == "exact_duplicate":
        of = _pick_source(written, label, derive_seed(maker.seed, key))
        data = written.data[of]
    elif kind == "near_duplicate":
        of = _stable_source(maker, written, label)
        data = near_duplicate(written.data[of])
    else:
        data = FAULT_MAKERS[kind](maker, c, classes.index(other), key)
    shown = {"two_faces": (label, other), "other_class_face": (other,)}
    no_face = ("no_face", "truncated", "zero_byte", "non_image")
    identities = shown.get(kind, () if kind in no_face else (label,))
    return TruthEntry(name, label, kind, of, stage, reason, identities), data


def _candidates(written: Written, label: str) -> list[str]:
    """Clean photos of the class that no other fault copies yet."""
    per_class = [f for f in written.clean if f.startswith(f"{label}/")]
    return [f for f in per_class if f not in written.copied] or per_class


def _pick_source(written: Written, label: str, seed: int) -> str:
    candidates = _candidates(written, label)
    choice = candidates[int(np.random.default_rng(seed).integers(len(candidates)))]
    written.copied.add(choice)
    return choice


def _stable_source(maker: PhotoMaker, written: Written, label: str) -> str:
    """The clean photo whose face MTCNN finds in the same place after the near-dup edit.

    MTCNN boxes jitter by up to ~15% of the face between a photo and its resized
    copy (the image pyramid samples other scales), and the crops then differ by
    more than re-encoding alone would make them: on 96 photos, 10 near-duplicate
    crop pairs were over 8 bits apart in a 64-bit perceptual hash. The fault is
    there to test duplicate detection, not detector jitter, so it copies the most
    stable of (up to) six photos.
    """
    candidates = _candidates(written, label)[:6]  # each costs two detections
    shifts = [maker.detection_shift(written.data[f], near_duplicate) for f in candidates]
    choice = candidates[int(np.argmin(shifts))]
    written.copied.add(choice)
    return choice


def near_duplicate(data: bytes) -> bytes:
    """The same photo resized to 80% and re-encoded at a lower quality (a re-upload)."""
    rgb = decode_rgb(data, max_pixels=1 << 30)
    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (round(w * 0.8), round(h * 0.8)), interpolation=cv2.INTER_AREA)
    return encode_jpeg(small, 70)


# ---------------------------------------------------------------------------- rendering


@cache
def load_generator() -> torch.nn.Module:
    """The DCGAN generator (64x64 RGB faces from a 100-d latent), on the CPU."""
    try:
        import gan_face_generate
        from gan_face_generate.models import Generator
    except ImportError:
        raise UserError(
            "sample-data needs the synthetic face generator: "
            "pip install --no-deps gan-face-generate==1.1.1"
        ) from None
    weights = Path(gan_face_generate.__file__).parent / "weights.tar"
    state = torch.load(weights, map_location="cpu", weights_only=True)["netG_state_dict"]
    generator = Generator(0, 3, LATENT, 64)
    generator.load_state_dict(state)
    return generator.eval()


def render_face(latent: np.ndarray) -> np.ndarray:
    """A 64x64 RGB uint8 face for one latent vector.

    Bit-identical on re-runs on the same machine: run() fixes torch to one thread,
    so the float32 sums are always done in the same order.
    """
    z = torch.from_numpy(np.asarray(latent, dtype=np.float32)).reshape(1, LATENT, 1, 1)
    with torch.inference_mode():
        out = load_generator()(z)[0].permute(1, 2, 0).numpy()
    return np.clip(np.round((out + 1.0) * 127.5), 0, 255).astype(np.uint8)


def photo_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """Several (w, h) around the configured size: landscape, portrait, bigger, smaller, square."""

    def even(w: float, h: float) -> tuple[int, int]:
        return (int(round(w / 8) * 8), int(round(h / 8) * 8))

    sizes = [
        even(width, height), even(height, width), even(width * 1.25, height * 1.25),
        even(width * 0.8, height * 0.8), even(height, height), even(width * 1.125, width * 0.75),
    ]  # fmt: skip
    return list(dict.fromkeys(sizes))


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A plausible, face-free backdrop: a colour gradient, soft blotches and a few shapes.

    Gradient, blotches and desaturation are all smooth, so they are computed on a
    coarse grid and upscaled once: the same picture at a fraction of the cost.
    """
    c1, c2 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    angle = rng.uniform(0, 2 * np.pi)
    gh, gw = max(2, height // 90), max(2, width // 90)
    # grid cell centres in full-size pixels, as cv2.resize maps them
    ys = (np.arange(gh) + 0.5) * height / gh - 0.5
    xs = (np.arange(gw) + 0.5) * width / gw - 0.5
    t = np.add.outer(ys * np.sin(angle), xs * np.cos(angle))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    field = c1 + (c2 - c1) * t[..., None]
    field += rng.normal(0, 14, (gh, gw, 1)) + rng.normal(0, 5, (gh, gw, 3))
    grey = field.mean(axis=2, keepdims=True)
    field = (grey + 0.6 * (field - grey)).astype(np.float32)  # muted, like real scenes
    big = cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.clip(big, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(3, 9))):
        img = _shape(rng, img)
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def _shape(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    colour = tuple(int(v) for v in rng.uniform(20, 235, 3))
    overlay = img.copy()
    kind = int(rng.integers(0, 3))
    p = [int(v) for v in rng.integers(0, [w, h, w, h])]
    if kind == 0:
        cv2.rectangle(overlay, (p[0], p[1]), (p[2], p[3]), colour, -1)
    elif kind == 1:
        radius = int(rng.integers(10, max(11, h // 3)))
        cv2.circle(overlay, (p[0], p[1]), radius, colour, -1, cv2.LINE_AA)
    else:
        cv2.line(overlay, (p[0], p[1]), (p[2], p[3]), colour, int(rng.integers(2, 12)), cv2.LINE_AA)
    alpha = float(rng.uniform(0.3, 0.8))
    return cv2.addWeighted(overlay, alpha, img, 1 - alpha, 0)


def _soft_mask(size: int, power: float, feather: float) -> np.ndarray:
    """1 in the middle, fading to 0 at the edges of a rounded square: no hard paste seam."""
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    radius = (np.abs(ramp[None, :]) ** power + np.abs(ramp[:, None]) ** power) ** (1 / power)
    return np.clip((1.0 - radius) / feather, 0.0, 1.0)[..., None]


def paste(
    img: np.ndarray,
    face: np.ndarray,
    size: int,
    x: int,
    y: int,
    shape: tuple[float, float] = (4.0, 0.22),
) -> None:
    """Upscale the 64x64 face to ``size`` (bicubic) and blend it in at (x, y), in place.

    ``shape`` is the blend mask's (superellipse power, feather width).
    """
    big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    mask = _soft_mask(size, *shape)
    region = img[y : y + size, x : x + size].astype(np.float32)
    img[y : y + size, x : x + size] = np.clip(np.round(big * mask + region * (1 - mask)), 0, 255)


def vary_face(rng: np.random.Generator, face: np.ndarray) -> np.ndarray:
    """Pose and light that differ from photo to photo, as in real photo sets.

    Without this, aligned crops of one identity look alike to a perceptual hash
    (some distinct photos came within 4 of 64 bits), and clean would take them
    for near-duplicates. A mirror image, a small head tilt, side light and
    exposure change the picture, not who it is.
    """
    if rng.random() < 0.5:
        face = face[:, ::-1]
    turn = cv2.getRotationMatrix2D((31.5, 31.5), float(rng.uniform(-10, 10)), 1.0)
    face = cv2.warpAffine(
        face, turn, (64, 64), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101
    )
    ramp = np.linspace(-1.0, 1.0, 64, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.1, 0.35) * np.add.outer(ramp * np.sin(angle), ramp * np.cos(angle))
    lit = 255.0 * (face.astype(np.float32) / 255.0) ** rng.uniform(0.8, 1.25) * light[..., None]
    return np.clip(np.round(lit), 0, 255).astype(np.uint8)


def blend_shape(rng: np.random.Generator) -> tuple[float, float]:
    """A blend mask (power, feather) for one paste: rounder or squarer, softer or sharper."""
    return (round(float(rng.uniform(2.5, 5.0)), 2), round(float(rng.uniform(0.15, 0.35)), 2))


def sensor_noise(rng: np.random.Generator, img: np.ndarray, sigma: float = 2.5) -> np.ndarray:
    """Fine Gaussian grain over the whole photo, as a camera sensor adds."""
    noisy = rng.standard_normal(img.shape, dtype=np.float32)
    noisy *= np.float32(sigma)
    noisy += img
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------- photos


class PhotoMaker:
    """Renders photos of the synthetic identities and checks them with MTCNN."""

    def __init__(self, params: SampleDataParams, seed: int) -> None:
        self.params = params
        self.seed = seed
        self.sizes = photo_sizes(*params.photo_size)
        make = DETECTORS.get("mtcnn")
        # min_face_size 40 is the pipeline's default min_face_px and twice as fast as 20;
        # the fine detector (20, as in the pipeline) checks tiny faces and empty photos.
        self.coarse: FaceDetector = make(device="cpu", max_side=4096, min_face_size=40)
        self.fine: FaceDetector = make(device="cpu", max_side=4096, min_face_size=20)
        self.identities = [self._identity(c) for c in range(params.classes)]

    def _identity(self, c: int) -> np.ndarray:
        """A class latent whose faces are detected confidently (some latents are profiles)."""
        for attempt in range(MAX_ATTEMPTS):
            rng = np.random.default_rng(derive_seed(self.seed, f"identity/{c}", attempt))
            z0 = rng.standard_normal(LATENT)
            probes = [z0] + [z0 + JITTER * rng.standard_normal(LATENT) for _ in range(2)]
            canvases = [self._on_grey(render_face(z)) for z in probes]
            found = self.coarse.detect_batch(canvases)
            if all(len(f) == 1 and f[0].prob >= SURE for f in found):
                return z0
        raise RuntimeError(f"no detectable identity for class {c} in {MAX_ATTEMPTS} draws")

    @staticmethod
    def _on_grey(face: np.ndarray) -> np.ndarray:
        canvas = np.full((320, 320, 3), 128, dtype=np.uint8)
        paste(canvas, face, 200, 60, 60)
        return canvas

    def attempts(self, key: str, make: Callable[[np.random.Generator], bytes]) -> bytes:
        """``make`` with a fresh derived RNG until its check passes (deterministic)."""
        for attempt in range(MAX_ATTEMPTS):
            try:
                return make(np.random.default_rng(derive_seed(self.seed, key, attempt)))
            except CheckFailedError:
                continue
        raise RuntimeError(f"could not render {key} in {MAX_ATTEMPTS} attempts")

    def face(self, rng: np.random.Generator, c: int) -> np.ndarray:
        return vary_face(
            rng, render_face(self.identities[c] + JITTER * rng.standard_normal(LATENT))
        )

    def canvas(self, rng: np.random.Generator, landscape: bool = False) -> np.ndarray:
        sizes = [s for s in self.sizes if s[0] > s[1]] if landscape else self.sizes
        width, height = sizes[int(rng.integers(len(sizes)))]
        return background(rng, width, height)

    def portrait(
        self, rng: np.random.Generator, c: int, px: tuple[int, int] = FACE_PX
    ) -> np.ndarray:
        """One face of identity ``c`` at a random size and place on a fresh background."""
        img = self.canvas(rng)
        h, w = img.shape[:2]
        size = min(int(rng.integers(px[0], px[1] + 1)), min(h, w) - 16)
        x, y = int(rng.integers(0, w - size)), int(rng.integers(0, h - size))
        paste(img, self.face(rng, c), size, x, y, blend_shape(rng))
        return sensor_noise(rng, img)

    def detection_shift(self, data: bytes, edit: Callable[[bytes], bytes]) -> float:
        """How far the face moves (box and landmarks, share of face width) after ``edit``.

        ``edit`` may resize the photo; coordinates are compared in the original's pixels.
        """
        before, after = decode_rgb(data, 1 << 30), decode_rgb(edit(data), 1 << 30)
        found = self.fine.detect_batch([before, after])
        if len(found[0]) != 1 or len(found[1]) != 1:
            return float("inf")
        scale = np.array([before.shape[1] / after.shape[1], before.shape[0] / after.shape[0]])
        a, b = found[0][0], found[1][0]
        boxes = np.abs(np.reshape(a.box, (2, 2)) - np.reshape(b.box, (2, 2)) * scale)
        points = np.abs(np.array(a.landmarks) - np.array(b.landmarks) * scale)
        return float(max(boxes.max(), points.max()) / max(a.width, 1.0))

    def check_one_face(self, data: bytes, min_side: float = 60.0) -> list[Face]:
        """Decode as the pipeline will, then require one sure face and nothing else."""
        faces = self.coarse.detect_batch([decode_rgb(data, 1 << 30)])[0]
        if len(faces) != 1 or faces[0].prob < SURE or faces[0].short_side < min_side:
            raise CheckFailedError
        return faces

    def clean_jpeg(self, c: int, key: str) -> bytes:
        def make(rng: np.random.Generator) -> bytes:
            data = encode_jpeg(self.portrait(rng, c), JPEG_QUALITY)
            self.check_one_face(data)
            return data

        return self.attempts(key, make)


# ---------------------------------------------------------------------------- faults


def _blurred(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A clearly out-of-focus photo whose face MTCNN still finds (so clean must catch it)."""

    def make(rng: np.random.Generator) -> bytes:
        sharp = maker.portrait(rng, c, (200, 260))
        blurred = cv2.GaussianBlur(sharp, (0, 0), float(rng.uniform(4.0, 5.0)))
        data = encode_jpeg(blurred, JPEG_QUALITY)
        maker.check_one_face(data)
        return data

    return maker.attempts(key, make)


def _no_face(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    def make(rng: np.random.Generator) -> bytes:
        data = encode_jpeg(sensor_noise(rng, maker.canvas(rng)), JPEG_QUALITY)
        if maker.fine.detect_batch([decode_rgb(data, 1 << 30)])[0]:
            raise CheckFailedError
        return data

    return maker.attempts(key, make)


def _two_faces(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """This class's face and another class's, of similar size, side by side."""

    def make(rng: np.random.Generator) -> bytes:
        img = maker.canvas(rng, landscape=True)
        h, w = img.shape[:2]
        size = min(int(rng.integers(130, 190)), w // 2 - 24, h - 16)
        for k, identity in enumerate(rng.permutation([c, other])):
            s = int(size * rng.uniform(0.92, 1.0))
            x = int(rng.integers(k * w // 2, (k + 1) * w // 2 - s))
            y = int(rng.integers(0, h - s))
            paste(img, maker.face(rng, int(identity)), s, x, y, blend_shape(rng))
        data = encode_jpeg(sensor_noise(rng, img), JPEG_QUALITY)
        faces = maker.coarse.detect_batch([decode_rgb(data, 1 << 30)])[0]
        sure = [f for f in faces if f.prob >= SURE]
        if len(faces) != 2 or len(sure) != 2 or sure[1].area < 0.65 * sure[0].area:
            raise CheckFailedError
        return data

    return maker.attempts(key, make)


def _tiny_face(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A face that is found (prob well above min_prob) but about 30 px: too small to use."""

    def make(rng: np.random.Generator) -> bytes:
        data = encode_jpeg(maker.portrait(rng, c, TINY_PX), JPEG_QUALITY)
        faces = maker.fine.detect_batch([decode_rgb(data, 1 << 30)])[0]
        if len(faces) != 1 or faces[0].prob < SURE or not 27 <= faces[0].short_side <= 35:
            raise CheckFailedError
        return data

    return maker.attempts(key, make)


def _other_class_face(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A normal photo of another identity, filed in this class (a labelling mistake)."""
    return maker.clean_jpeg(other, key)


def _truncated(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    """A download cut off half way: the JPEG header is fine, the scan data is not."""
    data = maker.clean_jpeg(c, key)
    return data[: len(data) // 2]


def _zero_byte(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    return b""


def _non_image(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
    return b"<!DOCTYPE html>\n<html><body>403 Forbidden: hotlinking not allowed</body></html>\n"


def _odd_format(
    encode: Callable[[np.ndarray], bytes],
) -> Callable[[PhotoMaker, int, int, str], bytes]:
    """A clean photo stored in an unusual but valid way; checked after decoding it back."""

    def fault(maker: PhotoMaker, c: int, other: int, key: str) -> bytes:
        def make(rng: np.random.Generator) -> bytes:
            data = encode(maker.portrait(rng, c))
            maker.check_one_face(data)
            return data

        return maker.attempts(key, make)

    return fault


def _pil_bytes(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif_rotated(rgb: np.ndarray) -> bytes:
    """Pixels stored turned 90 degrees, with EXIF Orientation 6 saying how to turn them back."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"; PIL's exif_transpose undoes it
    stored = Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_90)
    return _pil_bytes(stored, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())


def grayscale(rgb: np.ndarray) -> bytes:
    return _pil_bytes(Image.fromarray(rgb).convert("L"), "JPEG", quality=JPEG_QUALITY)


def png_alpha(rgb: np.ndarray) -> bytes:
    """RGBA with a transparent border, as cut-out pictures have."""
    alpha = np.zeros(rgb.shape[:2], dtype=np.uint8)
    border = max(4, min(rgb.shape[:2]) // 20)
    alpha[border:-border, border:-border] = 255
    return _pil_bytes(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")


def cmyk(rgb: np.ndarray) -> bytes:
    return _pil_bytes(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=JPEG_QUALITY)


def png16(rgb: np.ndarray) -> bytes:
    """16-bit grayscale PNG (scanners, scientific cameras)."""
    gray = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint16) * 257
    return _pil_bytes(Image.fromarray(gray), "PNG")


FAULT_MAKERS: dict[str, Callable[[PhotoMaker, int, int, str], bytes]] = {
    "blurred": _blurred,
    "no_face": _no_face,
    "two_faces": _two_faces,
    "tiny_face": _tiny_face,
    "other_class_face": _other_class_face,
    "truncated": _truncated,
    "zero_byte": _zero_byte,
    "non_image": _non_image,
    "exif_rotated": _odd_format(exif_rotated),
    "grayscale": _odd_format(grayscale),
    "png_alpha": _odd_format(png_alpha),
    "cmyk": _odd_format(cmyk),
    "png16": _odd_format(png16),
}
