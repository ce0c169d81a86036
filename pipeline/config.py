"""Typed, validated parameters, one model per params.yaml section.

params.yaml is the single source of defaults: the models here declare types and
allowed ranges but no default values, so a key missing from params.yaml is an
error rather than a silent fallback. Values are layered in this order:

1. the project's params.yaml (the repo root, or the copy installed with the package),
2. a params.yaml in the working directory, when it is a different file,
3. ``--set section.key=value`` / typed CLI flags.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import UserError

PARAMS_FILE = "params.yaml"


class ConfigError(UserError, ValueError):
    """A params value is missing or out of range; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SampleDataParams(Section):
    classes: int = Field(ge=2, le=64)
    per_class: int = Field(ge=3, le=200)
    photo_size: tuple[int, int] = Field(description="(width, height) of the generated photos")


class DetectParams(Section):
    detector: str
    device: str
    min_prob: float = Field(ge=0.0, le=1.0)
    min_face_px: int = Field(ge=1, description="shorter side of the face box, source pixels")
    margin: float = Field(ge=0.0, le=1.0, description="added on every side, fraction of box")
    size: int = Field(ge=16, le=1024)
    align: bool
    multi_face: Literal["largest", "all", "reject"]
    ambiguity_ratio: float = Field(
        ge=0.0, le=1.0, description="'largest' rejects when face #2 has this share of #1's area"
    )
    batch_size: int = Field(ge=1, le=512)
    max_side: int = Field(ge=64, description="photos are downscaled to this for detection")
    max_pixels: int = Field(ge=1, description="larger images are refused (decompression bombs)")
    jpeg_quality: int = Field(ge=50, le=100)


class CleanParams(Section):
    near_duplicate_hamming: int = Field(ge=0, le=64)
    blur_relative: float = Field(ge=0.0, le=1.0)
    min_face_px: int = Field(ge=1)
    min_per_class: int = Field(ge=1)
    max_per_class: int | None = Field(default=..., ge=1)


class SplitParams(Section):
    train_per_class: int | None = Field(default=..., ge=1)
    train_fraction: float | None = Field(default=..., gt=0.0, lt=1.0)
    val_per_class: int = Field(ge=0)
    on_short_class: Literal["error", "skip"]

    @model_validator(mode="after")
    def _one_train_size(self) -> SplitParams:
        if (self.train_per_class is None) == (self.train_fraction is None):
            raise ValueError("set exactly one of train_per_class and train_fraction (other: null)")
        return self


class AugmentParams(Section):
    factor: int = Field(ge=1, le=1000)
    recipe: str = Field(description="a registered recipe name or a path to an albumentations YAML")
    keep_original: bool
    workers: int = Field(ge=0, description="0 = one per CPU core")
    jpeg_quality: int = Field(ge=50, le=100)
    include_generated: bool


class Params(Section):
    seed: int = Field(ge=0)
    sample_data: SampleDataParams
    detect: DetectParams
    clean: CleanParams
    split: SplitParams
    augment: AugmentParams


def default_params_file() -> Path:
    """The params.yaml shipped with the project: repo root, else the installed copy."""
    candidates = [
        Path(__file__).resolve().parents[1] / PARAMS_FILE,
        Path(sys.prefix) / "share" / "fewshot-prep" / PARAMS_FILE,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no default {PARAMS_FILE} found (looked in {candidates})")


def load_params(
    path: Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> Params:
    """Load and validate params: defaults, then ``path`` (or ./params.yaml), then overrides."""
    raw = _read_yaml(default_params_file())
    local = path if path is not None else Path(PARAMS_FILE)
    if local.is_file() and local.resolve() != default_params_file().resolve():
        raw = _deep_merge(raw, _read_yaml(local))
    elif path is not None and not local.is_file():
        raise ConfigError(f"params file {path} does not exist")
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    return validate(raw)


def validate(raw: dict[str, Any]) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_describe(err, raw)) from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["augment.factor=4", "split.train_fraction=null"]`` -> typed dict (YAML scalars)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return parsed


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a mapping of sections, got {type(data).__name__}")
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            raise ConfigError(f"unknown params key {dotted!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def _describe(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = [f"invalid parameters ({err.error_count()} problem(s)):"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "missing":
            lines.append(f"  {key}: missing from {PARAMS_FILE}")
            continue
        got = problem.get("input")
        shown = "" if isinstance(got, dict) else f" = {got!r}"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}{shown}: {message}{_allowed(problem['loc'])}")
    return "\n".join(lines)


def _allowed(loc: tuple[Any, ...]) -> str:
    """Describe the allowed range of a field from its declared constraints."""
    model: type[BaseModel] = Params
    field = None
    for part in loc:
        if not isinstance(part, str) or part not in model.model_fields:
            break
        field = model.model_fields[part]
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    if field is None:
        return ""
    bounds = []
    for meta in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(meta, name, None) is not None:
                bounds.append(f"{symbol} {getattr(meta, name)}")
    hint = f" (allowed: {', '.join(bounds)})" if bounds else ""
    if field.description:
        hint += f" [{field.description}]"
    return hint
