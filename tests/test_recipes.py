"""Recipes: registry, determinism, audit params, replay, file recipes, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from pipeline.components.recipes import (
    RECIPES,
    AlbumentationsRecipe,
    Classic8,
    import_albumentations,
    json_safe,
    load_recipe,
)
from pipeline.core.errors import UserError
from pipeline.core.rows import dumps

RANDOM_RECIPES = ["light", "medium", "heavy", "keras"]


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A smooth picture (a gradient with a disc) so every transform visibly changes it."""
    yy, xx = np.mgrid[0:64, 0:48]
    disc = ((yy - 32) ** 2 + (xx - 24) ** 2 < 300) * 120
    return np.stack([xx * 4, yy * 3, 60 + disc], axis=2).clip(0, 255).astype(np.uint8)


def test_registered_names() -> None:
    assert RECIPES.names() == ["classic8", "heavy", "keras", "light", "medium"]
    assert all(entry.help for entry in RECIPES.entries())


@pytest.mark.parametrize("name", RANDOM_RECIPES)
def test_random_recipe_is_seeded_and_keeps_size_without_warnings(
    name: str, face: np.ndarray
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. albumentations' "invalid argument" warnings
        recipe = load_recipe(name)
        outputs = [recipe.apply(face, seed, 1) for seed in range(12)]
    for image, applied in outputs:
        assert image.shape == face.shape and image.dtype == np.uint8
        assert json.loads(dumps(applied)) == applied
    again, applied_again = recipe.apply(face, 3, 1)
    assert np.array_equal(again, outputs[3][0]) and applied_again == outputs[3][1]
    assert len({image.tobytes() for image, _ in outputs}) > 8


def test_transforms_fire_independently(face: np.ndarray) -> None:
    """One shared random stream per output: Compose.set_random_seed would make every
    transform draw the same number, leaving ~1 in 4 outputs unaugmented."""
    recipe = load_recipe("medium")
    counts = [len(recipe.apply(face, seed, 1)[1]) for seed in range(100)]
    assert sum(count == 0 for count in counts) <= 5
    assert max(counts) < 9


def test_classic8_is_all_combinations(face: np.ndarray) -> None:
    recipe = Classic8()
    results = [recipe.apply(face, seed=variant * 7, variant=variant) for variant in range(8)]
    assert np.array_equal(results[0][0], face)
    assert results[0][1] == {"hflip": False, "tozero": False, "blur": False}
    assert results[5][1] == {"hflip": True, "tozero": False, "blur": True}
    assert len({image.tobytes() for image, _ in results}) == 8
    assert np.array_equal(results[1][0], face[:, ::-1])
    for image, params in results:
        assert np.array_equal(recipe.replay(face, json.loads(dumps(params))), image)


def test_classic8_below_factor_8_spreads_over_the_combinations() -> None:
    """factor 4 used to be variants 0..3, none of them blurred: now every op is on in half
    of the outputs; factor 8 (and 7 without the original) are all combinations as before."""
    recipe = Classic8()
    for keep_original, first in ((True, 0), (False, 1)):
        variants = recipe.variant_numbers(4, keep_original)
        assert len(set(variants)) == 4 and (variants[0] == 0) == keep_original
        for op in Classic8.OPS:
            assert sum(recipe.get_params(v)[op] for v in variants) == 2, (variants, op)
        assert recipe.variant_numbers(8 - first, keep_original) == tuple(range(first, 8))
    assert recipe.variant_numbers(2, True) == (0, 7)  # the one augmented output does all three
    with pytest.raises(UserError, match="at most 8 images per source"):
        recipe.variant_numbers(8, keep_original=False)


def test_classic8_tozero_is_relative_to_the_image() -> None:
    """A dark face (luminance 30..90, every value under the old fixed threshold of 100)
    keeps most of its pixels: only those at or under its 20th percentile turn black."""
    rng = np.random.default_rng(0)
    dark = rng.integers(30, 90, size=(40, 40, 3), dtype=np.uint8)
    out, applied = Classic8().apply(dark, seed=0, variant=2)  # tozero alone
    blacked = (out.max(axis=2) == 0).mean()
    assert 0.1 < blacked < 0.3, blacked
    kept = out.max(axis=2) > 0
    assert np.array_equal(out[kept], dark[kept])  # the rest keeps its colour
    assert np.array_equal(Classic8().replay(dark, json.loads(dumps(applied))), out)
    legacy = Classic8().replay(dark, {"hflip": False, "tozero": True, "blur": False})
    assert (legacy.max(axis=2) == 0).mean() == 1.0  # an old manifest replays as it was made


def test_classic8_refuses_a_ninth_variant() -> None:
    Classic8().check_variants(range(8))
    with pytest.raises(UserError, match="at most 8 images per source"):
        Classic8().check_variants(range(9))


@pytest.mark.parametrize("suffix, data_format", [(".yaml", "yaml"), (".json", "json")])
def test_recipe_from_file(tmp_path: Path, face: np.ndarray, suffix: str, data_format: str) -> None:
    alb = import_albumentations()
    path = tmp_path / f"mine{suffix}"
    compose = alb.Compose([alb.HorizontalFlip(p=1.0), alb.RandomGamma(p=1.0)], p=1.0)
    alb.save(compose, str(path), data_format=data_format)
    recipe = load_recipe(str(path))
    assert isinstance(recipe, AlbumentationsRecipe)
    image, applied = recipe.apply(face, 0, 1)
    assert np.array_equal(recipe.apply(face, 0, 1)[0], image)
    assert [name for name, _ in applied] == ["HorizontalFlip", "RandomGamma"]
    assert set(applied[1][1]) == {"gamma"}


def test_unknown_recipe_lists_the_known_names() -> None:
    with pytest.raises(UserError, match="known: classic8, heavy, keras, light, medium"):
        load_recipe("mediun")


def test_missing_or_bad_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(str(tmp_path / "absent.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("transform: {__class_fullname__: NoSuchTransform, p: 1.0}\n")
    with pytest.raises(UserError, match="not a valid albumentations pipeline"):
        load_recipe(str(bad))


def test_json_safe_makes_numpy_plain() -> None:
    params = {
        "shape": (4, 4, 3),
        "matrix": np.eye(3),
        "noise_map": np.zeros((32, 32, 3), np.float32),
        "quality": np.int64(70),
        "scale": {"x": np.float32(0.5)},
        "holes": (np.array([[1, 2, 3, 4]]),),
    }
    assert json_safe(params) == {
        "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "noise_map": {"array_shape": [32, 32, 3], "dtype": "float32"},
        "quality": 70,
        "scale": {"x": 0.5},
        "holes": [[[1, 2, 3, 4]]],
    }


def test_albumentations_is_imported_without_torch() -> None:
    """Workers stay small (no torch: ~600 MiB less each), and torch still imports later."""
    code = (
        "import sys, importlib.util\n"
        "from pipeline.components.recipes import load_recipe\n"
        "load_recipe('light')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert importlib.util.find_spec('torch') is not None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _marked(seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A dark 160 px square with one bright 3x3 dot, placed by ``seed``."""
    image = np.full((160, 160, 3), 10, dtype=np.uint8)
    x, y = 40 + seed * 7 % 80, 50 + seed * 11 % 60
    image[y - 1 : y + 2, x - 1 : x + 2] = 255
    return image, (x, y)


def _dot(image: np.ndarray) -> tuple[float, float]:
    weights = np.clip(image[..., 0].astype(float) - 128, 0, None)
    ys, xs = np.indices(weights.shape)
    return (xs * weights).sum() / weights.sum(), (ys * weights).sum() / weights.sum()


@pytest.mark.parametrize("name", ["classic8", "light", "keras"])  # medium: blur, noise hide the dot
def test_moved_says_where_the_pixels_went(name: str) -> None:
    """Flips and turns recorded in the params map a point to where it lands (the face box
    of an augmented crop follows the face)."""
    recipe = load_recipe(name)
    misses, flips = [], 0
    for seed in range(24):
        image, (x, y) = _marked(seed)
        out, applied = recipe.apply(image, seed, seed % 8 if name == "classic8" else 1)
        moved = recipe.moved(applied, 160, 160)
        assert moved is not None, applied
        landed_x, landed_y = _dot(out)
        expected_x, expected_y, _ = moved @ (x, y, 1)
        misses.append(np.hypot(landed_x - expected_x, landed_y - expected_y))
        flips += moved[0, 0] < 0
    assert np.median(misses) < 0.5 and max(misses) < 4  # px; JPEG-free, interpolation only
    assert 0 < flips < 24  # both flipped and unflipped variants were checked


def test_moved_is_unknown_for_a_transform_it_cannot_follow() -> None:
    alb = import_albumentations()
    recipe = AlbumentationsRecipe("elastic", alb.Compose([alb.ElasticTransform(p=1.0)], p=1.0))
    image, _ = _marked(0)
    _, applied = recipe.apply(image, 0, 1)
    assert recipe.moved(applied, 160, 160) is None
