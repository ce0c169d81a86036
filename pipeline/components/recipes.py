"""Augmentation recipes: named, listable, and auditable.

Every recipe answers one call, ``apply(image, seed, variant) -> (image, applied_params)``:
the same (image, seed, variant) always gives the same pixels, and the parameters
that were actually applied come back as JSON-safe data for the manifest's
``params`` column. As in albumentations' transform interface, parameters are
sampled separately from applying them, so a run can be audited and replayed:

- ``classic8`` is deterministic: ``get_params(variant)`` says which of its three
  ops to use, ``replay(image, params)`` reproduces an output from the manifest.
- albumentations recipes (``light`` / ``medium`` / ``heavy`` or a YAML / JSON file)
  are replayed by calling ``apply`` with the manifest's ``seed`` and ``variant``.

albumentations is imported only when such a recipe is built, and without torch
(see ``import_albumentations``): ``classic8`` and ``prep list recipes`` stay fast.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.registry import AUTO, Registry

if TYPE_CHECKING:
    import albumentations as alb

RECIPE_FILE_SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json"}

# Arrays up to this size go into the manifest as lists (e.g. an affine matrix);
# larger ones (a noise map) are summarised, or `params` would hold whole images.
_MAX_ARRAY_CELLS = 64

# Not parameters of the image transform (the input shape; what boxes and masks would
# get): left out of the audit trail to keep the manifest readable.
_DROPPED_KEYS = {"shape", "bbox_matrix", "fill_mask"}


class Recipe(ABC):
    """What the augment stage needs from a recipe, whatever builds it."""

    name: str = ""
    #: Distinct variants the recipe can make (None: unlimited, i.e. random).
    max_variants: int | None = None
    #: True when variant 0 is the identity, so 1.. are the real augmentations.
    identity_at_zero: bool = False

    @abstractmethod
    def apply(self, image: np.ndarray, seed: int, variant: int) -> tuple[np.ndarray, Any]:
        """Augment an HxWx3 uint8 RGB image; returns (image, JSON-safe applied params)."""

    def moved(self, applied: Any, width: int, height: int) -> np.ndarray | None:
        """Where ``applied`` moved the pixels of a ``width`` x ``height`` image: a 3x3 map
        from input to output pixel coordinates, or None when the recipe cannot say."""
        return None

    def replay(self, image: np.ndarray, params: Any) -> np.ndarray:
        """Reproduce an output from its recorded params, where the recipe allows it."""
        raise UserError(
            f"recipe {self.name!r} cannot replay from recorded params; "
            "re-create an output from its seed instead: apply(image, seed, variant)"
        )

    def variant_numbers(self, factor: int, keep_original: bool) -> tuple[int, ...]:
        """The variant numbers of one source's ``factor`` outputs (a number names one image).

        Variant 0 is the source itself with ``keep_original``; a recipe whose variant 0 is
        the identity starts at 1 without it, so that no output is the original.
        """
        first = 0 if keep_original or not self.identity_at_zero else 1
        variants = range(first, first + factor)
        self.check_variants(variants)
        return tuple(variants)

    def check_variants(self, variants: range) -> None:
        """Refuse variant numbers the recipe cannot make distinct images for."""
        if self.max_variants is not None and variants and variants[-1] >= self.max_variants:
            raise UserError(self.too_many_variants(variants[-1]))

    def too_many_variants(self, variant: int) -> str:
        return (
            f"recipe {self.name!r} makes at most {self.max_variants} distinct variants; "
            f"variant {variant} was asked for"
        )


class Classic8(Recipe):
    """The deterministic recipe of the original few-shot face experiments.

    Variant k is bit pattern k over three on/off ops, so the 8 variants are all
    combinations and variant 0 is the unchanged image. Ops apply in bit order. A factor
    below 8 takes the most spread-out combinations (``spread_variants``), not the first
    ones, so ``factor 4`` blurs too. Threshold-to-zero blacks out the pixels darker than
    a percentile of the image's own luminance (recorded as ``threshold``), so a dark
    face keeps most of its pixels (the old fixed 100 per channel blacked out 74% of one).
    """

    name = "classic8"
    max_variants = 8
    identity_at_zero = True
    OPS = ("hflip", "tozero", "blur")  # bit 0, 1, 2
    #: Pixels whose luminance is at most this percentile of the image's become black.
    TOZERO_PERCENTILE = 20
    #: The fixed threshold of manifests written before the percentile (no "threshold").
    LEGACY_TOZERO_THRESHOLD = 100
    BLUR_KERNEL = (5, 5)

    def get_params(self, variant: int) -> dict[str, bool]:
        return {op: bool(variant >> bit & 1) for bit, op in enumerate(self.OPS)}

    def variant_numbers(self, factor: int, keep_original: bool) -> tuple[int, ...]:
        super().variant_numbers(factor, keep_original)  # refuses more than 8
        return spread_variants(factor, keep_original, len(self.OPS))

    def apply(self, image: np.ndarray, seed: int, variant: int) -> tuple[np.ndarray, Any]:
        # The seed is unused on purpose: classic8 must give the same images on any seed.
        params: dict[str, Any] = dict(self.get_params(variant))
        if params["tozero"]:
            params["threshold"] = tozero_threshold(image, self.TOZERO_PERCENTILE)
        return self.replay(image, params), params

    def moved(self, applied: Any, width: int, height: int) -> np.ndarray:
        return mirror(width) if applied["hflip"] else np.eye(3)

    def replay(self, image: np.ndarray, params: Any) -> np.ndarray:
        out = image
        if params["hflip"]:
            out = cv2.flip(out, 1)
        if params["tozero"]:
            out = self._tozero(out, params.get("threshold"))
        if params["blur"]:
            out = cv2.GaussianBlur(out, self.BLUR_KERNEL, 0)
        return np.ascontiguousarray(out)

    def _tozero(self, image: np.ndarray, threshold: int | None) -> np.ndarray:
        """Pixels whose luminance is at most ``threshold`` become black, the rest keep
        their colour; None (a manifest from before the percentile): every channel value
        up to the old fixed threshold becomes 0."""
        if threshold is None:
            return cv2.threshold(image, self.LEGACY_TOZERO_THRESHOLD, 255, cv2.THRESH_TOZERO)[1]
        bright = cv2.threshold(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), threshold, 255, 0)[1]
        return cv2.bitwise_and(image, image, mask=bright)  # luminance <= threshold -> black

    def too_many_variants(self, variant: int) -> str:
        return (
            "classic8 makes at most 8 images per source (the 2^3 on/off combinations of "
            "flip, threshold-to-zero and blur; variant 0 is the original), but variant "
            f"{variant} was asked for: use factor <= 8 with keep_original (<= 7 without), "
            "or a random recipe such as medium"
        )


class AlbumentationsRecipe(Recipe):
    """An albumentations Compose behind the Recipe interface."""

    def __init__(self, name: str, compose: alb.BaseCompose) -> None:
        self.name = name
        self.compose = compose
        # Only the top-level Compose collects params; a loaded file may hold anything.
        compose.save_applied_params = True

    def apply(self, image: np.ndarray, seed: int, variant: int) -> tuple[np.ndarray, Any]:
        # Not Compose.set_random_seed: in albumentations 2.0.8 it gives every transform
        # its own Random(seed), so all transforms draw the same first number and fire
        # together (about a quarter of outputs got no transform at all). One shared
        # stream per output keeps them independent and still deterministic.
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))
        result = self.compose(image=image)
        applied = [[name, json_safe(p)] for name, p in result.get("applied_transforms", [])]
        return np.ascontiguousarray(result["image"]), applied

    def moved(self, applied: Any, width: int, height: int) -> np.ndarray | None:
        """The product of each applied transform's map, from the recorded params; None as
        soon as one moves pixels in a way not known here (a crop, an elastic warp)."""
        alb = import_albumentations()
        total = np.eye(3)
        for name, params in applied:
            step = _pixel_map(alb, name, params, width, height)
            if step is None:
                return None
            total = step @ total
        return total


def _pixel_map(
    alb: ModuleType, name: str, params: Any, width: int, height: int
) -> np.ndarray | None:
    from albumentations.augmentations.dropout.transforms import BaseDropout

    cls = getattr(alb, name, None)
    if not isinstance(cls, type):
        return None
    if issubclass(cls, alb.ImageOnlyTransform | BaseDropout):  # pixels change, not places
        return np.eye(3)
    if issubclass(cls, alb.HorizontalFlip):
        return mirror(width)
    matrix = np.asarray(params.get("matrix", ()), dtype=np.float64)
    affine = matrix.shape == (3, 3) and np.allclose(matrix[2], (0, 0, 1))
    keeps_size = list(params.get("output_shape", [height, width]))[:2] == [height, width]
    if issubclass(cls, alb.Affine) and affine and keeps_size:
        return matrix  # albumentations records it input -> output
    return None


def mirror(width: int) -> np.ndarray:
    """A left-right flip of pixel columns: x -> width - 1 - x."""
    return np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def spread_variants(factor: int, keep_original: bool, n_ops: int) -> tuple[int, ...]:
    """``factor`` of the 2^n_ops on/off combinations, as far apart as they can be.

    Picks the subset with the largest smallest Hamming distance between its members,
    then the one whose ops are each on closest to half the time, then the smallest
    numbers; with ``keep_original`` it holds combination 0 (the original), without it
    never does. Deterministic, so a variant number still names one combination. All
    combinations (factor 2^n_ops) and all but the original give range as before.
    """
    candidates = range(0 if keep_original else 1, 2**n_ops)
    subsets = [
        subset
        for subset in itertools.combinations(candidates, factor)
        if not keep_original or subset[0] == 0
    ]
    return min(subsets, key=lambda subset: _spread_key(subset, n_ops))


def _spread_key(subset: tuple[int, ...], n_ops: int) -> tuple[int, float, tuple[int, ...]]:
    distances = [(a ^ b).bit_count() for a, b in itertools.combinations(subset, 2)]
    closest = min(distances, default=n_ops + 1)
    on = [sum(v >> bit & 1 for v in subset) for bit in range(n_ops)]  # outputs per op
    imbalance = max(abs(count - len(subset) / 2) for count in on)
    return -closest, imbalance, subset


def tozero_threshold(image: np.ndarray, percentile: float) -> int:
    """The ``percentile`` of an RGB image's luminance: a threshold relative to the image."""
    counts = cv2.calcHist([cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)], [0], None, [256], [0, 256])
    cumulative = np.cumsum(counts.ravel())
    # np.percentile's linear rule, read off the histogram instead of sorting every pixel
    rank = (cumulative[-1] - 1) * percentile / 100
    low = int(np.searchsorted(cumulative, np.floor(rank), side="right"))
    high = int(np.searchsorted(cumulative, np.floor(rank) + 1, side="right"))
    return int(low + (high - low) * (rank - np.floor(rank)))


def json_safe(value: Any) -> Any:
    """Applied albumentations params as plain JSON data (numpy scalars and arrays too)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items() if k not in _DROPPED_KEYS}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        if value.size <= _MAX_ARRAY_CELLS:
            return json_safe(value.tolist())
        return {"array_shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


RECIPES: Registry[Callable[[], Recipe]] = Registry("recipe")


@RECIPES.register("classic8", help="deterministic: all 8 combinations of flip, threshold, blur")
def classic8() -> Recipe:
    return Classic8()


@dataclass(frozen=True)
class Strength:
    """How far the transforms every face recipe starts with may go."""

    affine: tuple[float, float, float, float]  # rotate (degrees), scale, shift, probability
    contrast: tuple[float, float]  # brightness / contrast limit, probability
    hsv: tuple[tuple[int, int, int], float]  # hue, saturation, value shifts; probability
    gamma: tuple[tuple[int, int], float]  # gamma range (percent), probability


LIGHT = Strength((5, 0.05, 0.03, 0.5), (0.1, 0.5), ((4, 10, 5), 0.3), ((90, 110), 0.2))
MEDIUM = Strength((10, 0.1, 0.05, 0.7), (0.2, 0.6), ((8, 15, 10), 0.4), ((85, 115), 0.3))
HEAVY = Strength((15, 0.15, 0.08, 0.8), (0.3, 0.7), ((12, 25, 15), 0.5), ((75, 130), 0.4))


def _pose_and_light(alb: ModuleType, strength: Strength) -> list[Any]:
    """Flip, a small turn / zoom / shift, and lighting: what every face recipe begins with."""
    (hue, sat, val), hsv_p = strength.hsv
    limit, contrast_p = strength.contrast
    return [
        alb.HorizontalFlip(p=0.5),
        _affine(*strength.affine),
        alb.RandomBrightnessContrast(brightness_limit=limit, contrast_limit=limit, p=contrast_p),
        alb.HueSaturationValue(
            hue_shift_limit=hue, sat_shift_limit=sat, val_shift_limit=val, p=hsv_p
        ),
        alb.RandomGamma(gamma_limit=strength.gamma[0], p=strength.gamma[1]),
    ]


@RECIPES.register("light", help="flip, small shift/scale/rotate, mild colour")
def light() -> Recipe:
    alb = import_albumentations()
    return AlbumentationsRecipe("light", alb.Compose(_pose_and_light(alb, LIGHT), p=1.0))


@RECIPES.register(
    "medium", help="light + gamma, blur, noise, JPEG artefacts, CLAHE", default_for=("faces",)
)
def medium() -> Recipe:
    alb = import_albumentations()
    transforms = [
        *_pose_and_light(alb, MEDIUM),
        _blur(p=0.25),
        # Luminance noise, as from a phone sensor: a third of the samples of
        # per-channel noise, which costs more than the rest of the recipe at 512 px.
        alb.GaussNoise(std_range=(0.02, 0.05), per_channel=False, p=0.2),
        alb.ImageCompression(quality_range=(60, 95), p=0.3),
        alb.CLAHE(clip_limit=(1.0, 2.0), tile_grid_size=(8, 8), p=0.1),
    ]
    return AlbumentationsRecipe("medium", alb.Compose(transforms, p=1.0))


@RECIPES.register("heavy", help="medium, stronger, plus coarse dropout (occlusions)")
def heavy() -> Recipe:
    alb = import_albumentations()
    transforms = [
        *_pose_and_light(alb, HEAVY),
        _blur(p=0.35, max_kernel=7),
        alb.GaussNoise(std_range=(0.03, 0.08), p=0.3),
        alb.ImageCompression(quality_range=(40, 90), p=0.4),
        alb.CLAHE(clip_limit=(1.0, 3.0), tile_grid_size=(8, 8), p=0.2),
        alb.CoarseDropout(
            num_holes_range=(1, 3), hole_height_range=(0.1, 0.25),
            hole_width_range=(0.1, 0.25), fill=0, p=0.4,
        ),
    ]  # fmt: skip
    return AlbumentationsRecipe("heavy", alb.Compose(transforms, p=1.0))


@RECIPES.register(
    "keras", help="objects: Keras tutorial's turn 40, shift/shear/zoom 0.2, flip",
    default_for=("objects",),
)  # fmt: skip
def keras() -> Recipe:
    """The Keras small-data tutorial's ImageDataGenerator (cats vs dogs, 2016): rotation up
    to 40 degrees, width / height shifts and zoom of 0.2, shear 0.2 and horizontal flips,
    edges filled with the nearest pixel.

    Shear 0.2 is read as radians (~11.5 degrees), as the Keras of that tutorial applied it;
    later Keras reads it as degrees, where 0.2 would be invisible.
    """
    alb = import_albumentations()
    shear = math.degrees(0.2)
    transforms = [
        alb.HorizontalFlip(p=0.5),
        alb.Affine(
            rotate=(-40, 40), translate_percent=(-0.2, 0.2), shear=(-shear, shear),
            scale=(0.8, 1.2), border_mode=cv2.BORDER_REPLICATE, p=1.0,
        ),
    ]  # fmt: skip
    return AlbumentationsRecipe("keras", alb.Compose(transforms, p=1.0))


def _affine(rotate: float, scale: float, shift: float, p: float) -> Any:
    """Small rigid moves only: faces stay upright, no shear, the size is kept.

    Edges are reflected rather than filled black, which would teach the model
    that black corners are part of a face.
    """
    alb = import_albumentations()

    return alb.Affine(
        rotate=(-rotate, rotate),
        scale=(1 - scale, 1 + scale),
        translate_percent=(-shift, shift),
        border_mode=cv2.BORDER_REFLECT_101,
        p=p,
    )


def _blur(p: float, max_kernel: int = 5) -> Any:
    alb = import_albumentations()

    return alb.OneOf(
        [
            alb.GaussianBlur(blur_limit=(3, max_kernel), p=1.0),
            alb.MotionBlur(blur_limit=(3, max_kernel), p=1.0),
        ],
        p=p,
    )


def import_albumentations() -> ModuleType:
    """albumentations, imported without torch unless torch is already loaded.

    Its ``__init__`` imports ``albumentations.pytorch`` (ToTensorV2) inside
    ``suppress(ImportError)``, which pulls in torch: ~4 s and ~600 MiB of RSS in every
    process and pool worker, for tensors a stage that writes JPEGs never makes. A
    ``None`` entry in ``sys.modules`` makes that import fail cleanly; it is removed
    straight after, so code that imports torch later gets it as usual.
    """
    if "albumentations" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]
        try:
            import albumentations
        finally:
            del sys.modules["torch"]
    import albumentations

    return albumentations


def load_recipe(spec: str, domain: str = "faces") -> Recipe:
    """A registered name (``prep list recipes``; ``auto``: the domain's default) or a path
    to an albumentations YAML/JSON."""
    if spec == AUTO:
        spec = RECIPES.resolve(spec, domain)
    if spec in RECIPES:
        return RECIPES.get(spec)()
    path = Path(spec)
    if path.suffix.lower() in RECIPE_FILE_SUFFIXES:
        return _load_recipe_file(path)
    known = ", ".join(RECIPES.names())
    raise UserError(
        f"unknown recipe {spec!r}; known: {known} (or a path to an albumentations .yaml/.json)"
    )


def _load_recipe_file(path: Path) -> Recipe:
    alb = import_albumentations()

    if not path.is_file():
        raise UserError(f"recipe file {path} does not exist")
    try:
        loaded = alb.load(str(path), data_format=RECIPE_FILE_SUFFIXES[path.suffix.lower()])
    except Exception as err:  # albumentations raises many types for a bad file
        detail = f"recipe file {path} is not a valid albumentations pipeline: {err}"
        raise UserError(detail) from err
    if not isinstance(loaded, alb.Compose):
        loaded = alb.Compose([loaded], p=1.0)
    return AlbumentationsRecipe(path.as_posix(), loaded)
