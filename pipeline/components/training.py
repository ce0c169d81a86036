"""The training loop's parts: epochs with mixup, head warm-up, early stopping, collapse check.

What ``stages/train.py`` runs, kept apart from the stage's files and manifests so each piece
is testable alone: ``fit`` trains a ``Loop`` (the net, its input preparation, optimiser and
randomness) for the epochs, keeps the best validation epoch's weights and logs each epoch to
DVCLive; ``mix_batch`` is label or data mixup; ``imprint_head`` starts a head from class means.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf
from tqdm import tqdm

from pipeline.components.backbones import freeze_layers
from pipeline.components.classifier import Classifier, apply_freeze, set_train_mode
from pipeline.components.optimizers import Ramp, make_schedule
from pipeline.core.config import TrainParams
from pipeline.core.errors import UserError
from pipeline.core.progress import track


@dataclass
class Data:
    """Inputs (uint8 images or float features) and integer labels of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class EpochStats:
    loss: float
    acc: float
    images: int = 0
    seconds: float = 0.0


@dataclass
class EarlyStopping:
    """Best = highest validation accuracy, ties broken by lower validation loss."""

    patience: int
    best_acc: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = 0
    waited: int = 0

    def update(self, epoch: int, acc: float, loss: float) -> bool:
        """Record an epoch; True when it is the new best."""
        if acc > self.best_acc or (acc == self.best_acc and loss < self.best_loss):
            self.best_acc, self.best_loss, self.best_epoch, self.waited = acc, loss, epoch, 0
            return True
        self.waited += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.waited >= self.patience


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    warmup_epochs: int = 0  # epochs that trained the head alone before the trunk
    train_images: int = 0
    train_seconds: float = 0.0


def rise_epoch(curve: Sequence[float], fraction: float = 0.9) -> int | None:
    """First epoch (1-based) whose value reaches ``fraction`` of the curve's best.

    None for an empty curve or one that never rises above zero (nothing to reach).
    """
    if not curve or max(curve) <= 0:
        return None
    target = fraction * max(curve)
    return next(i for i, value in enumerate(curve, start=1) if value >= target)


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    n_classes: int,
    mode: str,
    beta: tuple[float, float],
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mixup one batch: (inputs, soft targets, hard labels for accuracy).

    ``label``: classic mixup, inputs and one-hot labels mixed with the same lambda.
    ``data``: inputs mixed, the target is the label of the dominant input (lambda >= 0.5 keeps
    the batch's own). ``beta`` is (a, b) of the Beta distribution lambda is drawn from (one
    lambda per batch). ``none`` returns the batch with one-hot targets.
    """
    onehot = nnf.one_hot(y, n_classes).to(torch.float32)
    if mode == "none":
        return x, onehot, y
    lam = float(rng.beta(*beta))
    perm = torch.from_numpy(rng.permutation(len(y))).to(y.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    dominant = y if lam >= 0.5 else y[perm]
    if mode == "label":
        return mixed, lam * onehot + (1.0 - lam) * onehot[perm], dominant
    if mode == "data":
        return mixed, nnf.one_hot(dominant, n_classes).to(torch.float32), dominant
    raise UserError(f"unknown mixup {mode!r}; use none, label or data")


def batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Near-equal chunks of at most ``batch_size``: no straggler batch of one (BatchNorm)."""
    count = max(1, math.ceil(len(order) / batch_size))
    return [chunk for chunk in torch.tensor_split(order, count) if len(chunk)]


IMPRINT_SCALE = 10.0  # imprinted logits start at ~10 x cosine similarity: confident, not saturated


def imprint_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, n: int) -> None:
    """Weight imprinting (Qi et al., 2018): class k's weight is the direction of its mean
    unit-length training feature, so the head starts as a nearest-class-centre classifier
    (the embedding baseline) and training refines it. A class without rows keeps its init.
    """
    unit = nnf.normalize(features.float(), dim=1)
    scale = IMPRINT_SCALE / features.float().norm(dim=1).mean().clamp_min(1e-6)
    with torch.no_grad():
        for k in range(n):
            members = unit[labels == k]
            if len(members):
                head.weight[k] = nnf.normalize(members.mean(dim=0), dim=0) * scale
        head.bias.zero_()


@dataclass
class Loop:
    """What one epoch needs: the trainable net, input preparation, optimiser, randomness."""

    net: nn.Module
    prepare: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    n_classes: int
    device: torch.device
    p: TrainParams
    generator: torch.Generator
    rng: np.random.Generator
    ramp: Ramp = field(default_factory=lambda: Ramp(0))
    batchnorm_eval: bool = False  # BatchNorm on its running statistics while training


def optimizer_step(loop: Loop, loss: torch.Tensor, trunk_trains: bool) -> None:
    """Backward, clip the gradient norm, step with the trunk's rate scaled by the ramp."""
    loop.optimizer.zero_grad(set_to_none=True)
    loop.scaler.scale(loss).backward()
    if loop.p.grad_clip > 0:
        loop.scaler.unscale_(loop.optimizer)
        nn.utils.clip_grad_norm_(loop.net.parameters(), loop.p.grad_clip)
    trunk = [g for g in loop.optimizer.param_groups if g.get("name") == "trunk"]
    rates = [g["lr"] for g in trunk]
    factor = loop.ramp.factor() if trunk_trains else 1.0
    for group in trunk:
        group["lr"] *= factor
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    for group, rate in zip(trunk, rates, strict=True):
        group["lr"] = rate  # the schedule owns the rate; the ramp only scales this step
    loop.ramp.done += int(trunk_trains)


def train_epoch(loop: Loop, data: Data, desc: str, trunk_trains: bool = False) -> EpochStats:
    p, start = loop.p, time.perf_counter()
    set_train_mode(loop.net, loop.batchnorm_eval)
    order = torch.randperm(len(data), generator=loop.generator)
    total_loss, correct = 0.0, 0
    beta = (p.mixup_alpha, p.mixup_alpha) if p.mixup == "label" else p.data_mixup_beta
    # off a terminal the epoch's own line (_log_epoch) ends it: one line per epoch
    for idx in progress(batches(order, p.batch_size), desc, row_unit(data), end_line=False):
        x = loop.prepare(data.x[idx].to(loop.device, non_blocking=True))
        y = data.y[idx].to(loop.device, non_blocking=True)
        x, target, hard = mix_batch(x, y, loop.n_classes, p.mixup, beta, loop.rng)
        with autocast(loop.device, p.amp):
            logits = loop.net(x)
            loss = nnf.cross_entropy(logits.float(), target, label_smoothing=p.label_smoothing)
        optimizer_step(loop, loss, trunk_trains)
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == hard).sum())
    n = len(data)
    return EpochStats(total_loss / n, correct / n, n, time.perf_counter() - start)


def validate(loop: Loop, data: Data) -> EpochStats:
    """Mean loss (no smoothing, no mixup) and accuracy; NaN when there is no validation set."""
    if len(data) == 0:
        return EpochStats(math.nan, math.nan)
    logits, y = predict_logits(loop, data), data.y.to(loop.device)
    loss = nnf.cross_entropy(logits, y).item()
    return EpochStats(loss, int((logits.argmax(1) == y).sum()) / len(data), len(data))


def predict_logits(loop: Loop, data: Data) -> torch.Tensor:
    """The net's float logits for every input of ``data``, in eval mode, without gradients."""
    loop.net.eval()
    out = []
    with torch.inference_mode():
        for idx in batches(torch.arange(len(data)), loop.p.batch_size):
            x = loop.prepare(data.x[idx].to(loop.device))
            with autocast(loop.device, loop.p.amp):
                out.append(loop.net(x).float())
    return torch.cat(out) if out else torch.empty((0, loop.n_classes), device=loop.device)


def fit(loop: Loop, model: Classifier, n_frozen: int, train: Data, val: Data, live: Any) -> History:
    """Epochs with head warm-up, schedule, early stopping; the best epoch's weights kept."""
    p, history = loop.p, History()
    schedule = make_schedule(loop.optimizer, p)
    stopper = EarlyStopping(p.early_stopping_patience if len(val) else 0)
    best_state = _snapshot(loop.net)  # only what trains: the head alone on cached features
    trunk_trains = loop.net is model and n_frozen < n_layers(model)
    history.warmup_epochs = warmup = p.head_warmup_epochs if trunk_trains else 0
    steps_per_epoch = len(batches(torch.arange(len(train)), p.batch_size))
    loop.ramp = Ramp(round(p.unfreeze_ramp_epochs * steps_per_epoch))
    for epoch in range(1, p.epochs + 1):
        apply_freeze(model.trunk, n_layers(model) if epoch <= warmup else n_frozen)
        lr = loop.optimizer.param_groups[0]["lr"]  # the head's (groups sort it first)
        desc = f"epoch {epoch}/{p.epochs}"
        stats = train_epoch(loop, train, desc, trunk_trains and epoch > warmup)
        schedule.step()
        checked = validate(loop, val)
        history.train_images += stats.images
        history.train_seconds += stats.seconds
        row = {"train/loss": stats.loss, "train/acc": stats.acc, "val/loss": checked.loss,
               "val/acc": checked.acc, "lr": lr}  # fmt: skip
        history.epochs.append(row)
        _log_epoch(live, row, epoch, p.epochs)
        if not len(val) or stopper.update(epoch, checked.acc, checked.loss):
            best_state = _snapshot(loop.net)
        if stopper.should_stop:
            break
    loop.net.load_state_dict(best_state)
    apply_freeze(model.trunk, n_frozen)
    history.best_epoch = stopper.best_epoch or len(history.epochs)
    return history


COLLAPSE_DROP = 0.05  # a final epoch this far below the best one is a collapse, not noise


def collapse_warning(history: History, n_val: int) -> str | None:
    """Why the run's last epoch is suspect: far below its best, or below the head warm-up.

    Early stopping keeps the best epoch, so a run that diverged later still reports a good
    best accuracy; this says so instead of hiding it. The drop is also given in validation
    rows: on a few val rows one row is many points, and the reader should see how few.
    """
    val_acc = [e["val/acc"] for e in history.epochs if not math.isnan(e["val/acc"])]
    if not val_acc:
        return None
    best, final = max(val_acc), val_acc[-1]
    warm = val_acc[: history.warmup_epochs]
    if warm and final < max(warm) - 1e-9:
        return (
            f"final val acc {final:.3f} is below the head warm-up's {max(warm):.3f} "
            f"({_rows(max(warm) - final, n_val)}): "
            "fine-tuning the trunk made it worse (lower train.lr or train.trunk_lr_factor)"
        )
    if final < best - COLLAPSE_DROP:
        return (
            f"final val acc {final:.3f} is far below the best {best:.3f} "
            f"({_rows(best - final, n_val)}; epoch {history.best_epoch}, the model kept): "
            "training diverged or overfitted"
        )
    return None


def _rows(drop: float, n_val: int) -> str:
    return f"{round(drop * n_val)} of {n_val} val rows"


def summarize(history: History, extra: dict[str, Any]) -> dict[str, Any]:
    """DVCLive summary metrics: best / final validation accuracy, rise epoch, epochs run.

    Only what the data, params and seed decide: speed and times differ on every run, so they
    are in ``runtime`` instead, or `dvc metrics diff` would never be empty.
    """
    val_acc = [e["val/acc"] for e in history.epochs if not math.isnan(e["val/acc"])]
    summary: dict[str, Any] = {
        "best_val_acc": max(val_acc) if val_acc else None,
        "final_val_acc": val_acc[-1] if val_acc else None,
        "warmup_val_acc": max(val_acc[: history.warmup_epochs], default=None),
        "best_epoch": history.best_epoch,
        "rise_epoch": rise_epoch(val_acc),
        "epochs_run": len(history.epochs),
        **extra,
    }
    return {k: v for k, v in summary.items() if v is not None}


def n_layers(model: Classifier) -> int:
    return len(freeze_layers(model.trunk))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def autocast(device: torch.device, amp: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.float16, enabled=amp and device.type == "cuda")


def progress(
    items: list[torch.Tensor], desc: str, unit: str = "images", end_line: bool = True
) -> Iterator[torch.Tensor]:
    """Batches of row indices, counted as ``unit``: a bar, or log lines off a terminal
    (without ``end_line``, only while a slow piece runs: its caller prints the last)."""
    total = sum(len(batch) for batch in items)
    return track(items, total, desc, unit, weight=len, end_line=end_line)


def row_unit(data: Data) -> str:
    """What a training row is: an image, or a trunk feature vector cached from one."""
    return "images" if data.x.dtype == torch.uint8 else "feature rows"


def _log_epoch(live: Any, row: dict[str, float], epoch: int, epochs: int) -> None:
    for name, value in row.items():
        if not math.isnan(value):
            live.log_metric(name, value)
    live.next_step()
    tqdm.write(
        f"epoch {epoch}/{epochs}: train loss {row['train/loss']:.3f} acc {row['train/acc']:.3f}"
        f" | val loss {row['val/loss']:.3f} acc {row['val/acc']:.3f}",
        file=sys.stderr,
    )
