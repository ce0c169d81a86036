"""Typed, validated parameters: one model per params.yaml section (read by ``params.py``).

pipeline/defaults.yaml is the single source of defaults: the models here declare types
and allowed ranges but no default values, so a key missing from it is an error rather
than a silent fallback. Each component takes its own section (a
generator its backend's section), never defaults of its own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.core.errors import UserError


class ConfigError(UserError, ValueError):
    """A params value is missing or out of range; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Domain = Literal["faces", "objects"]


class DomainSection(Section):
    """A section whose components depend on the top-level ``domain``.

    ``domain`` is not written in the section: ``Params`` copies the top-level value in, so
    a component builder that gets only its section can resolve ``auto`` through its
    registry (``Registry.resolve(value, params.domain)``).
    """

    domain: Domain = Field(description="copied from the top-level `domain`")


class SampleDataParams(Section):
    classes: int = Field(ge=2, le=64)
    per_class: int = Field(ge=3, le=200)
    photo_size: tuple[int, int] = Field(description="(width, height) of the generated photos")


class DetectParams(DomainSection):
    detector: str = Field(description="`prep list detectors`; auto = the domain's default")
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
    fit: Literal["letterbox", "crop"] = Field(
        description="detector none: the whole image padded to a square, or its centre square"
    )

    @model_validator(mode="after")
    def _presence_below_min_prob(self) -> DetectParams:
        if self.presence_prob > self.min_prob:
            raise ValueError("presence_prob must not exceed min_prob (a sure face is present)")
        return self


class EmbedParams(DomainSection):
    embedder: str = Field(description="`prep list embedders`; auto = the domain's default")
    batch_size: int = Field(ge=1, le=1024)
    workers: int = Field(ge=0, description="0 = one per CPU core (dlib); facenet uses one")
    num_jitters: int = Field(ge=0, le=100, description="dlib: average over N jittered copies")
    face_fraction: float = Field(gt=0.2, le=1.0, description="dlib: share of the crop the face is")
    weights: str | None = Field(default=..., description="facenet: state_dict file; null = cache")
    device: str


class CleanParams(DomainSection):
    checks: str = Field(description="identity | labels | auto (the domain's): `prep list checks`")
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
        gt=0.0, le=1.0, description="registered crops correlating this much: a possible copy"
    )
    same_photo_region: float = Field(
        gt=0.0, description="... a verified copy (rejected) if no face region differs more"
    )
    same_photo_keypoints: int = Field(
        ge=3, description="or a verified copy by keypoints: at least this many exact matches"
    )
    same_photo_keypoint_share: float = Field(
        gt=0.0, le=1.0, description="... making at least this share of all keypoint matches"
    )
    same_photo_marked_region: float = Field(
        ge=0.0, description="under a mark, keypoints outside it decide if no region differs more"
    )
    wrong_label_folds: int = Field(ge=2, le=20, description="cross-validation folds")
    wrong_label_prob: float = Field(
        gt=0.0, le=1.0, description="out-of-sample probability of another class at least this"
    )
    wrong_label_ratio: float = Field(
        ge=1.0, description="... and at least this many times the given class's probability"
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


class AugmentParams(DomainSection):
    factor: int = Field(ge=1, le=1000)
    recipe: str = Field(description="a registered recipe name or a path to an albumentations YAML")
    keep_original: bool
    workers: int = Field(ge=0, description="0 = one per CPU core")
    jpeg_quality: int = Field(ge=50, le=100)
    include_generated: bool
    min_side: int = Field(ge=1, description="shorter side below this: too_small, not augmented")


class WarpParams(Section):
    """generate.backends.warp: landmark displacement and a thin-plate-spline warp."""

    strength: float = Field(gt=0.0, le=3.0, description="1 = the default displacement")
    jitter: float = Field(ge=0.0, lt=1.0, description="strength varies by +- this share")
    workers: int = Field(ge=0, description="processes; 0 = one per core")


class ModelParams(Section):
    """What every backend with a network shares: where it runs and how big its batches are."""

    device: str
    dtype: Literal["auto", "float32", "float16", "bfloat16"]
    batch_size: int = Field(ge=1, le=256, description="images per generator call")


class StarGANParams(ModelParams):
    checkpoint: str | None = Field(default=..., description="a generator state dict")
    domains: list[str] = Field(min_length=2, description="the checkpoint's domain order")
    size: int = Field(ge=32, le=1024, multiple_of=4, description="the network's input size")


class DiffusionParams(ModelParams):
    model: str = Field(min_length=1, description="hub id or a folder written by save_pretrained")
    steps: int = Field(ge=1, le=1000)
    guidance_scale: float = Field(ge=0.0, le=50.0)
    negative_prompt: str
    size: int = Field(ge=32, le=2048, multiple_of=8, description="crops are resized to this")
    attention_slicing: bool
    vae_tiling: bool
    cpu_offload: bool


class Pix2PixParams(DiffusionParams):
    instructions: dict[str, str] = Field(description="one edit instruction per expression")
    image_guidance_scale: float = Field(ge=0.0, le=50.0)


class Img2ImgParams(DiffusionParams):
    prompt: str = Field(description="template; {expression} = phrases[expression]")
    phrases: dict[str, str]
    strength: float = Field(gt=0.0, le=1.0, description="noise level; 0.3-0.6 typical")

    @field_validator("prompt")
    @classmethod
    def _template(cls, value: str) -> str:
        try:
            value.format(expression="x")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(f"prompt may only use the {{expression}} field ({err})") from None
        return value


BackendParams = WarpParams | StarGANParams | Pix2PixParams | Img2ImgParams


class BackendsParams(Section):
    """One section per backend: only the chosen one counts (and only it reruns DVC)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    warp: WarpParams
    stargan: StarGANParams
    instruct_pix2pix: Pix2PixParams = Field(alias="instruct-pix2pix")
    img2img: Img2ImgParams


class GenerateParams(Section):
    enabled: bool
    backend: str = Field(description="`prep list generators`; its section: backends.<name>")
    expressions: list[str] = Field(min_length=1)
    variants_per_image: int = Field(ge=1, le=64, description="cycling through `expressions`")
    identity_threshold: float = Field(gt=0.0, description="max embedding distance to the source")
    jpeg_quality: int = Field(ge=50, le=100)
    backends: BackendsParams

    @property
    def active(self) -> BackendParams:
        """The chosen backend's own section (the registry has already checked the name)."""
        section = getattr(self.backends, self.backend.replace("-", "_"), None)
        if section is None:
            raise ConfigError(f"generate.backend {self.backend!r} has no generate.backends section")
        return section

    @field_validator("expressions")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("expressions must not repeat")
        return value


class TrainParams(DomainSection):
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
    trunk_lr_factor: float = Field(
        gt=0.0, le=1.0, description="the trunk's learning rate = lr x this (the head's = lr)"
    )
    unfreeze_ramp_epochs: float = Field(
        ge=0.0, description="the trunk's rate rises linearly from 0 over this many epochs"
    )
    grad_clip: float = Field(ge=0.0, description="max gradient norm per step; 0 = off")
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
    calibrate: bool = Field(description="fit a softmax temperature on the validation rows")
    batchnorm_stats: Literal["batch", "frozen"] = Field(
        description="batch: BatchNorm normalises with each batch's statistics while training; "
        "frozen: with the pretrained running statistics"
    )

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
    domain: Domain = Field(description="faces | objects: picks each stage's `auto` components")
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

    @model_validator(mode="before")
    @classmethod
    def _share_domain(cls, raw: Any) -> Any:
        """Copy the top-level domain into each section that resolves components by it."""
        if not isinstance(raw, dict) or not isinstance(raw.get("domain"), str):
            return raw  # a missing or wrong domain is reported by its own field
        raw = dict(raw)
        for name, field in cls.model_fields.items():
            section = raw.get(name)
            kind = field.annotation
            if not (isinstance(section, dict) and isinstance(kind, type)):
                continue
            if issubclass(kind, DomainSection):
                if section.get("domain", raw["domain"]) != raw["domain"]:
                    raise ValueError(f"{name}.domain: set the top-level `domain`, not a section's")
                raw[name] = {**section, "domain": raw["domain"]}
        return raw
