"""Typed, validated parameters, one model per params.yaml section.

params.yaml is the single source of defaults: the models here declare types and
allowed ranges but no default values, so a key missing from params.yaml is an
error rather than a silent fallback. Values are layered in this order:

1. the project's params.yaml (the repo root, or the copy installed with the package),
2. a params.yaml in the working directory, when it is a different file,
3. ``--set section.key=value`` / typed CLI flags.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.core.errors import UserError

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
    presence_prob: float = Field(
        ge=0.0, le=1.0, description="faces this sure count as people for multi_face"
    )
    max_outside: float = Field(
        ge=0.0, le=1.0, description="largest share of the face outside the photo: truncated_face"
    )
    padding: Literal["constant", "reflect", "replicate"] = Field(
        description="fill where the crop square leaves the photo (constant = black)"
    )
    shift_inside: bool = Field(description="move the crop square (up to the margin) into the photo")
    batch_size: int = Field(ge=1, le=512)
    max_side: int = Field(ge=64, description="photos are downscaled to this for detection")
    max_pixels: int = Field(ge=1, description="larger images are refused (decompression bombs)")
    jpeg_quality: int = Field(ge=50, le=100)

    @model_validator(mode="after")
    def _presence_below_min_prob(self) -> DetectParams:
        if self.presence_prob > self.min_prob:
            raise ValueError("presence_prob must not exceed min_prob (a sure face is present)")
        return self


class EmbedParams(Section):
    embedder: str = Field(description="`prep list embedders`")
    batch_size: int = Field(ge=1, le=1024)
    workers: int = Field(ge=0, description="0 = one per CPU core (dlib); facenet uses one")
    num_jitters: int = Field(ge=0, le=100, description="dlib: average over N jittered copies")
    face_fraction: float = Field(gt=0.2, le=1.0, description="dlib: share of the crop the face is")
    weights: str | None = Field(default=..., description="facenet: state_dict file; null = cache")
    device: str


class CleanParams(Section):
    near_duplicate_hamming: int = Field(ge=0, le=64)
    blur_relative: float = Field(ge=0.0, le=1.0)
    min_face_px: int = Field(ge=1)
    min_per_class: int = Field(ge=1)
    max_per_class: int | None = Field(default=..., ge=1)
    label_conflict_distance: float = Field(ge=0.0, description="same face in 2 classes below this")
    label_conflict_policy: Literal["reject_both", "keep_majority"]
    wrong_identity: Literal["off", "absolute", "relative"]
    wrong_identity_distance: float = Field(gt=0.0, description="absolute limit / relative floor")
    wrong_identity_relative: float = Field(gt=0.0, description="limit = this x the class spread")
    wrong_identity_nearer_ratio: float | None = Field(
        default=..., gt=0.0, description="reject when own-centre distance > this x another's"
    )
    duplicate_distance: float = Field(
        ge=0.0, description="embeddings closer: checked pixel by pixel for the same photo"
    )
    same_photo_correlation: float = Field(
        gt=0.0, le=1.0, description="registered crops correlating this much: the same photo"
    )


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


class GenerateParams(Section):
    enabled: bool
    backend: str = Field(description="`prep list generators`")
    expressions: list[str] = Field(min_length=1)
    variants_per_image: int = Field(ge=1, le=64, description="cycling through `expressions`")
    identity_threshold: float = Field(gt=0.0, description="max embedding distance to the source")
    embedder: str = Field(description="identity embedder for the gate (`prep list embedders`)")
    device: str
    dtype: Literal["auto", "float32", "float16", "bfloat16"]
    batch_size: int = Field(ge=1, le=256)
    workers: int = Field(ge=0, description="CPU backends (warp): processes; 0 = one per core")
    jpeg_quality: int = Field(ge=50, le=100)
    warp_strength: float = Field(gt=0.0, le=3.0, description="1 = the default displacement")
    warp_jitter: float = Field(ge=0.0, lt=1.0, description="strength varies by +- this share")
    checkpoint: str | None = Field(default=..., description="StarGAN generator state dict")
    stargan_domains: list[str] = Field(min_length=2, description="checkpoint's domain order")
    stargan_size: int = Field(ge=32, le=1024, multiple_of=4)
    model: str | None = Field(default=..., description="hub id or local path; null = default")
    steps: int = Field(ge=1, le=1000)
    guidance_scale: float = Field(ge=0.0, le=50.0)
    image_guidance_scale: float = Field(ge=0.0, le=50.0)
    strength: float = Field(gt=0.0, le=1.0, description="img2img noise level; 0.3-0.6 typical")
    prompt: str = Field(description="img2img template; {expression} = phrases[expression]")
    negative_prompt: str
    phrases: dict[str, str]
    instructions: dict[str, str] = Field(description="instruct-pix2pix, one per expression")
    diffusion_size: int = Field(ge=32, le=2048, multiple_of=8)
    attention_slicing: bool
    vae_tiling: bool
    cpu_offload: bool

    @field_validator("expressions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("expressions must not repeat")
        return value

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(expression="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"prompt may only use the {{expression}} field ({err})") from None
        return value


class TrainParams(Section):
    backbone: str = Field(description="`prep backbones` lists them")
    weights: str | None = Field(default=..., description="state_dict file; null = standard")
    image_size: int | None = Field(default=..., ge=32, le=1024, description="null = native")
    source: Literal["augmented", "split"]
    freeze: Literal["all"] | Annotated[int, Field(ge=0)] | Annotated[float, Field(gt=0, le=1)] = (
        Field(description="'all', a count of leading layers, or a fraction of them")
    )
    cache_features: bool
    head_warmup_epochs: int = Field(ge=0)
    head_init: Literal["imprint", "random"] = Field(
        description="imprint: the head starts from the class means of the training features"
    )
    optimizer: Literal["sgd", "adam", "rmsprop"]
    lr: float = Field(gt=0.0, le=10.0)
    momentum: float = Field(ge=0.0, lt=1.0)
    weight_decay: float = Field(ge=0.0)
    schedule: Literal["constant", "cosine", "step"]
    step_at: list[Annotated[float, Field(gt=0.0, lt=1.0)]] = Field(
        description="fractions of the epochs where `step` multiplies lr by step_gamma"
    )
    step_gamma: float = Field(gt=0.0, le=1.0)
    epochs: int = Field(ge=1, le=10000)
    batch_size: int = Field(ge=1, le=4096)
    label_smoothing: float = Field(ge=0.0, lt=1.0)
    early_stopping_patience: int = Field(ge=0, description="0 = off")
    mixup: Literal["none", "label", "data"]
    mixup_alpha: float = Field(gt=0.0, description="label mixup: lambda ~ Beta(a, a)")
    data_mixup_beta: tuple[float, float] = Field(description="data mixup: lambda ~ Beta(a, b)")
    device: str
    amp: bool
    max_memory_gb: float = Field(gt=0.0, description="decoded training images held in memory")

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze_not_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML `yes` / `true` would otherwise become layer count 1
            raise ValueError("freeze must be 'all', a layer count or a fraction, not a boolean")
        return value

    @field_validator("data_mixup_beta")
    @classmethod
    def _beta_positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if min(value) <= 0:
            raise ValueError("both Beta parameters must be > 0")
        return value


class EvaluateParams(Section):
    batch_size: int = Field(ge=1, le=4096)
    device: str
    top_k: int = Field(ge=1, description="also report top-k accuracy")
    mistakes: int = Field(ge=0, description="worst mistakes on the contact sheet")
    thumb: int = Field(ge=32, le=512, description="contact-sheet thumbnail size, pixels")


class BaselineParams(Section):
    normalize: bool
    logreg_c: float = Field(gt=0.0, description="inverse L2 regularisation strength")
    max_iter: int = Field(ge=10, le=100000)


class Params(Section):
    seed: int = Field(ge=0)
    sample_data: SampleDataParams
    detect: DetectParams
    embed: EmbedParams
    clean: CleanParams
    split: SplitParams
    baseline: BaselineParams
    generate: GenerateParams
    augment: AugmentParams
    train: TrainParams
    evaluate: EvaluateParams


def default_params_file() -> Path:
    """The params.yaml shipped with the project: repo root, else the installed copy."""
    candidates = [
        Path(__file__).resolve().parents[2] / PARAMS_FILE,
        Path(sys.prefix) / "share" / "fewshot-prep" / PARAMS_FILE,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no default {PARAMS_FILE} found (looked in {candidates})")


@dataclass(frozen=True)
class KeyDoc:
    """One key of params.yaml as its file shows it: the default as written, and its comment."""

    key: str
    default: str
    comment: str


_SECTION = re.compile(r"^(\w+):\s*(?:#.*)?$")
_KEY = re.compile(r"^  (\w+):\s*(.*?)\s*(?:#\s?(.*))?$")
_MORE = re.compile(r"^\s{3,}#\s?(.*)$")  # a comment continued on the next lines


@cache
def params_doc() -> dict[str, list[KeyDoc]]:
    """Each section's keys with the defaults and comments of the default params.yaml.

    The file's comments are the documentation of every param, so `--help` shows them as
    written rather than a second copy that could drift.
    """
    sections: dict[str, list[KeyDoc]] = {"": []}  # "": top-level keys (seed)
    keys: list[KeyDoc] | None = None
    for line in default_params_file().read_text(encoding="utf-8").splitlines():
        if section := _SECTION.match(line):
            keys = sections.setdefault(section.group(1), [])
        elif top := _KEY.match(f"  {line}") if line[:1].isalpha() else None:
            keys = None
            sections[""].append(KeyDoc(top.group(1), top.group(2), top.group(3) or ""))
        elif keys is not None and (key := _KEY.match(line)):
            keys.append(KeyDoc(key.group(1), key.group(2), key.group(3) or ""))
        elif keys and (more := _MORE.match(line)):
            last = keys[-1]
            keys[-1] = KeyDoc(last.key, last.default, f"{last.comment} {more.group(1)}".strip())
    return sections


def default_of(section: str, key: str) -> str:
    """``key``'s default in params.yaml as written, or "" when it is not there."""
    return next((k.default for k in params_doc().get(section, []) if k.key == key), "")


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
            sections = [k for k, v in node.items() if isinstance(v, dict)]
            raise ConfigError(
                f"unknown params key {dotted!r}: {part!r} is not a section"
                f"{_did_you_mean(part, sections)}"
            )
        node = child
    node[leaf] = value


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _describe(err: ValidationError, raw: dict[str, Any]) -> str:
    lines = [f"invalid parameters ({err.error_count()} problem(s)):"]
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"])
        if problem["type"] == "missing":
            lines.append(f"  {key}: missing from {PARAMS_FILE}")
            continue
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key{_suggest_key(problem['loc'])}")
            continue
        got = problem.get("input")
        shown = "" if isinstance(got, dict) else f" = {got!r}"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}{shown}: {message}{_allowed(problem['loc'])}")
    return "\n".join(lines)


def _suggest_key(loc: tuple[Any, ...]) -> str:
    """A close, valid key of the same section, for a key the models do not know."""
    model: type[BaseModel] = Params
    for part in loc[:-1]:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    return _did_you_mean(str(loc[-1]), list(model.model_fields))


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
