"""train: fine-tune a backbone on the training manifest, validate every epoch, log with DVCLive.

Inputs are manifests (paths relative to the working directory): the augment manifest (all of its
rows are training images) or, with ``source: split``, the split's ``train`` rows; validation is
always the split's ``val`` rows. Images are decoded once into memory; no random augmentation
happens here (that is the augment stage's job, and it keeps runs reproducible).

With ``freeze: all`` and ``cache_features`` the backbone runs once per unique image (keyed by
sha256) and only the linear head trains, on the cached features: the fast path on a CPU. Mixup
then mixes the cached feature vectors instead of pixels (the head is linear, so this is mixup of
its inputs).

Outputs: ``<out>/model.pt`` + ``model.json`` (the best validation epoch) and DVCLive's per-epoch
curves and summary under ``<live>/``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.components.backbones import (
    Aligner,
    Backbone,
    build_trunk,
    freeze_layers,
    get_backbone,
)
from pipeline.components.calibration import fit_temperature
from pipeline.components.classifier import (
    Classifier,
    Normalize,
    apply_freeze,
    count_trainable,
    frozen_count,
    load_images,
    load_trunk,
    own_trunk_state,
    save_model,
)
from pipeline.components.optimizers import make_optimizer, param_groups
from pipeline.components.training import (
    Data,
    History,
    Loop,
    autocast,
    batches,
    collapse_warning,
    fit,
    imprint_head,
    n_layers,
    predict_logits,
    progress,
    summarize,
)
from pipeline.core.config import TrainParams
from pipeline.core.devices import resolve_device
from pipeline.core.errors import StageError, UserError
from pipeline.core.files import prepare_output_dir
from pipeline.core.manifest import read_rows
from pipeline.core.report import StageReport
from pipeline.core.rows import AugmentedRow, Split, SplitRow, rows_of, train_rows

STAGE = "train"


def training_rows(
    source: str, train_manifest: Path, split_manifest: Path
) -> tuple[list[SplitRow], list[SplitRow]]:
    """(training rows, validation rows) according to ``train.source``."""
    split_rows = read_rows(split_manifest, SplitRow)
    if source == "augmented":
        chosen = train_rows(read_rows(train_manifest, AugmentedRow))
    else:
        chosen = train_rows(split_rows)
    if not chosen:
        raise StageError(f"no training rows (source={source}) in {train_manifest}")
    return chosen, rows_of(split_rows, Split.VAL)


def encode_labels(rows: Sequence[SplitRow], classes: Sequence[str], what: str) -> torch.Tensor:
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted({r.label for r in rows} - index.keys())
    if unknown:
        raise StageError(f"{what} rows have classes absent from training: {unknown[:5]}")
    return torch.tensor([index[r.label] for r in rows], dtype=torch.long)


def check_memory(n_images: int, size: int, limit_gb: float) -> None:
    need = n_images * 3 * size * size / 1e9
    if need > limit_gb:
        raise UserError(
            f"{n_images} images at {size}px need {need:.1f} GB decoded; raise "
            f"train.max_memory_gb (now {limit_gb}) or lower train.image_size"
        )


def extract_features(
    trunk: nn.Module, normalize: nn.Module, rows: Sequence[SplitRow], size: int, p: TrainParams,
    device: torch.device, align: Aligner | None = None,
) -> torch.Tensor:  # fmt: skip
    """Backbone features for ``rows``, computed once per unique image (sha256 or path)."""
    if not rows:
        return torch.empty((0, 0))
    keys = [r.sha256 or r.path for r in rows]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    unique = list(first.values())
    trunk.eval()
    feats = []
    with torch.inference_mode():
        for chunk in progress(batches(torch.tensor(unique), p.batch_size), "features"):
            images = load_images([rows[i] for i in chunk.tolist()], size, align).to(device)
            with autocast(device, p.amp):
                feats.append(trunk(normalize(images)).float().cpu())
    table = torch.cat(feats)
    slot = {key: j for j, key in enumerate(first)}
    return table[[slot[k] for k in keys]].clone()


def build_model(
    p: TrainParams, backbone: Backbone, size: int, n_classes: int
) -> tuple[Classifier, int]:
    """The classifier with the trunk's first layers fixed; returns (model, layers fixed).

    ``train.weights`` is a backbone state dict, or a model this project trained: then its
    trunk starts this one and the head is new (another class set may follow).
    """
    weights = Path(p.weights) if p.weights else None
    if not backbone.pretrained and weights is None and p.freeze != 0:
        raise UserError(
            f"backbone {backbone.name!r} has no pretrained weights: use freeze: 0, or give "
            "train.weights to fine-tune from a file"
        )
    own = own_trunk_state(weights, backbone) if weights else None
    if own is None:
        trunk, dim = build_trunk(backbone, size, weights)
    else:
        trunk, dim = build_trunk(backbone, size, pretrained=False)
        load_trunk(trunk, own, weights)  # type: ignore[arg-type]
    n_frozen = frozen_count(p.freeze, len(freeze_layers(trunk)))
    apply_freeze(trunk, n_frozen)
    return Classifier(trunk, dim, n_classes), n_frozen


def _trunk_features(model: Classifier, loop: Loop, data: Data) -> torch.Tensor:
    """The trunk's features of every training image, for imprinting (no gradients)."""
    model.trunk.eval()
    feats = []
    with torch.inference_mode():
        for idx in batches(torch.arange(len(data)), loop.p.batch_size):
            x = loop.prepare(data.x[idx].to(loop.device))
            with autocast(loop.device, loop.p.amp):
                feats.append(model.trunk(x).float())
    return torch.cat(feats)


def runtime(
    history: History, wall: float, feature_s: float, device: torch.device, cached: bool
) -> dict[str, Any]:
    """What this run took: wall time, training rows per second, feature caching, device.

    A linear probe on cached features (``cached``) trains on feature vectors, the trunk
    having run once per image while caching (``feature_cache_s``): its rate is
    ``feature_rows_per_s``, head steps only, tens of thousands a second on a CPU and not
    comparable with the ``images_per_s`` of a run whose trunk sees every image.
    """
    rate = round(history.train_images / max(history.train_seconds, 1e-9), 1)
    return {
        "wall_time_s": round(wall, 3),
        "feature_rows_per_s" if cached else "images_per_s": rate,
        "feature_cache_s": round(feature_s, 3),
        "device": str(device),
    }


def run(
    params: TrainParams, seed: int, train_manifest: Path, split_manifest: Path, out: Path,
    live_dir: Path = Path("dvclive"),
) -> StageReport:  # fmt: skip
    """Train, keep the best validation epoch, write the model and DVCLive metrics."""
    from dvclive import Live

    start = time.perf_counter()
    torch.manual_seed(seed)
    device = resolve_device(params.device)
    train_rows, val_rows = training_rows(params.source, train_manifest, split_manifest)
    classes = sorted({r.label for r in train_rows})
    backbone = get_backbone(params.backbone, params.domain)
    size = params.image_size or backbone.input_size
    model, n_frozen = build_model(params, backbone, size, len(classes))
    model.to(device)
    cached = _use_cache(params, model, n_frozen)
    train, val, feature_s = _prepare_data(params, model, backbone, size, (train_rows, val_rows),
                                          classes, device, cached)  # fmt: skip
    loop = _make_loop(params, model, cached, backbone, len(classes), device, seed)
    if params.head_init == "imprint":
        features = train.x if cached else _trunk_features(model, loop, train)
        imprint_head(model.head, features.to(device), train.y.to(device), len(classes))
    prepare_output_dir(out, marker="model.json")
    with Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=False) as live:
        history = fit(loop, model, n_frozen, train, val, live)
        temperature = _temperature(params, loop, val)
        extra = {"trainable_params": count_trainable(model), "frozen_layers": n_frozen,
                 "n_train": len(train), "n_val": len(val), "temperature": temperature}  # fmt: skip
        summary = summarize(history, extra)
        for name, value in summary.items():
            live.log_metric(name, value, plot=False)
    warning = collapse_warning(history, len(val))
    if warning:
        tqdm.write(f"warning: {warning}", file=sys.stderr)
    meta = {"backbone": backbone.name, "image_size": size, "classes": classes,
            "mean": backbone.mean, "std": backbone.std, "freeze": params.freeze,
            "frozen_layers": n_frozen, "best_epoch": summary["best_epoch"],
            "temperature": temperature}  # fmt: skip
    save_model(out, model.cpu(), meta)
    spent = runtime(history, time.perf_counter() - start, feature_s, device, cached)
    return StageReport.from_rows(STAGE, len(train_rows), train_rows, [], runtime=spent, **summary)


def _temperature(p: TrainParams, loop: Loop, val: Data) -> float:
    """Softmax temperature fitted on the validation rows (the kept epoch's weights); 1.0 when
    calibration is off or there are no validation rows."""
    if not p.calibrate or len(val) == 0:
        return 1.0
    logits = predict_logits(loop, val).cpu().numpy()
    return round(fit_temperature(logits, val.y.numpy()), 4)


def _use_cache(p: TrainParams, model: Classifier, n_frozen: int) -> bool:
    return p.cache_features and n_frozen == n_layers(model)


def _prepare_data(
    p: TrainParams, model: Classifier, backbone: Backbone, size: int,
    rows: tuple[list[SplitRow], list[SplitRow]], classes: list[str], device: torch.device,
    cached: bool,
) -> tuple[Data, Data, float]:  # fmt: skip
    """Decoded images, or cached features when only the head trains; + seconds spent caching."""
    train_rows, val_rows = rows
    labels = (encode_labels(train_rows, classes, "train"), encode_labels(val_rows, classes, "val"))
    align = backbone.aligner() if backbone.aligner else None
    if not cached:
        check_memory(len(train_rows) + len(val_rows), size, p.max_memory_gb)
        images = [load_images(part, size, align) for part in rows]
        return Data(images[0], labels[0]), Data(images[1], labels[1]), 0.0
    start = time.perf_counter()
    normalize = Normalize(backbone.mean, backbone.std).to(device)
    feats = [
        extract_features(model.trunk, normalize, part, size, p, device, align) for part in rows
    ]
    return Data(feats[0], labels[0]), Data(feats[1], labels[1]), time.perf_counter() - start


def _make_loop(
    p: TrainParams, model: Classifier, cached: bool, backbone: Backbone, n_classes: int,
    device: torch.device, seed: int,
) -> Loop:  # fmt: skip
    net: nn.Module = model.head if cached else model
    prepare = nn.Identity() if cached else Normalize(backbone.mean, backbone.std).to(device)
    # Every parameter, frozen ones too: they get no gradient and the optimiser skips them, so
    # warm-up only has to toggle requires_grad.
    scratch = not backbone.pretrained and not p.weights  # a random trunk is as new as the head
    groups = param_groups(net, model.head, p, 1.0 if scratch else None)
    return Loop(
        net=net, prepare=prepare, optimizer=make_optimizer(groups, p),
        scaler=torch.amp.GradScaler("cuda" if device.type == "cuda" else "cpu", enabled=p.amp),
        n_classes=n_classes, device=device, p=p,
        generator=torch.Generator().manual_seed(seed), rng=np.random.default_rng(seed),
        batchnorm_eval=p.batchnorm_stats == "frozen" and not scratch,
    )  # fmt: skip
