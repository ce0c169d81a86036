"""How the training loop's parameters move: optimiser groups, schedules, the unfreeze ramp.

Kept apart from the loop (``training``): a pretrained trunk and a new head need different
steps (``param_groups``), and a trunk that starts training mid-run needs its rate eased in
(``Ramp``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.core.config import TrainParams


def param_groups(
    net: nn.Module, head: nn.Module, p: TrainParams, trunk_lr_factor: float | None = None
) -> list[dict[str, Any]]:
    """Optimiser groups: the head at ``lr``, the trunk at ``lr * trunk_lr_factor``; no weight
    decay on vectors (biases, BatchNorm / dlib affine scales and shifts).

    A pretrained trunk needs a far smaller step than a new head: Adam moves every weight by
    about ``lr`` per step whatever its size, and dlib's ResNet has no BatchNorm to absorb that,
    so at the head's rate its activations blow up the moment it unfreezes. Decaying a
    scale towards zero only shrinks a layer's output, never regularises it. Empty groups are
    left out (a head trained on cached features has no trunk). Frozen parameters are in the
    groups too: they get no gradient, so the optimiser skips them until they unfreeze.
    ``trunk_lr_factor`` overrides ``p.trunk_lr_factor`` (1.0 for a trunk trained from scratch).
    """
    head_ids = {id(q) for q in head.parameters()}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for q in net.parameters():
        part = "head" if id(q) in head_ids else "trunk"
        groups.setdefault((part, q.ndim > 1), []).append(q)
    factor = p.trunk_lr_factor if trunk_lr_factor is None else trunk_lr_factor
    rate = {"head": p.lr, "trunk": p.lr * factor}
    return [
        {"params": qs, "name": part, "lr": rate[part], "weight_decay": p.weight_decay * decay}
        for (part, decay), qs in sorted(groups.items())
    ]


def make_optimizer(groups: Sequence[dict[str, Any]], p: TrainParams) -> torch.optim.Optimizer:
    """``groups`` as ``param_groups`` makes them (each with its lr and weight decay)."""
    if p.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum)
    if p.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=p.lr, momentum=p.momentum)
    return torch.optim.Adam(groups, lr=p.lr)


def make_schedule(
    optimizer: torch.optim.Optimizer, p: TrainParams
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch: constant, cosine to zero at the last epoch, or steps."""
    if p.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=p.epochs)
    if p.schedule == "step":
        milestones = sorted({max(1, round(f * p.epochs)) for f in p.step_at})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=p.step_gamma)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@dataclass
class Ramp:
    """The trunk's learning rate rises linearly from ~0 over ``steps`` optimiser steps from
    the moment it first trains: Adam's first steps after an unfreeze move every weight by the
    full rate whatever its gradient (its moments are still empty)."""

    steps: int
    done: int = 0

    def factor(self) -> float:
        return 1.0 if self.steps <= 0 else min(1.0, (self.done + 1) / self.steps)
