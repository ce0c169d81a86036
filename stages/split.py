"""split: train / val / test per class, stratified, seeded and stable.

Within a class, groups (rows that must stay together, e.g. near duplicates) are
ordered by a hash of (seed, label, group id) rather than shuffled by a random
generator. Adding an image therefore shifts at most one image across each split
boundary of its own class, and no image of any other class.
Train is filled first, then val; everything else is test. Train gets exactly the requested
count (it is the experiment's variable); when look-alike groups leave no way to give val its
count exactly, val takes the smallest larger count that can be filled (reported), rather than
failing the class or dividing a group.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

from pipeline.core.config import SplitParams
from pipeline.core.errors import StageError, nothing_to_do
from pipeline.core.files import prepare_output_dir
from pipeline.core.manifest import by_label, read_rows, reject, write_rows
from pipeline.core.report import StageReport
from pipeline.core.rows import Reason, Rejected, Split, SplitRow
from pipeline.core.seeds import derive_seed

STAGE = "split"


def run(params: SplitParams, seed: int, clean_manifest: Path, out_dir: Path) -> StageReport:
    """Read clean's manifest, write ``out_dir/manifest.csv`` (with ``split``) and rejects."""
    rows = read_rows(clean_manifest, SplitRow)
    if not rows:
        raise nothing_to_do(STAGE, f"{clean_manifest} lists no images")
    kept: list[SplitRow] = []
    short: dict[str, str] = {}  # label -> why it cannot be split
    widened: dict[str, int] = {}  # label -> val count taken instead of val_per_class
    for label, members in by_label(rows).items():
        n_train, n_val = plan_sizes(params, len(members))
        if n_train + n_val >= len(members):
            short[label] = _short_detail(label, len(members), n_train, n_val)
            continue
        assigned = assign(members, n_train, n_val, seed)
        underfilled = _underfilled(assigned, n_train, n_val)
        if underfilled:
            wider = _wider_val(members, n_train, n_val)
            if wider is not None:
                assigned, underfilled = assign(members, n_train, wider, seed), ""
                widened[label] = wider
        if underfilled:
            short[label] = f"class {label!r}: {underfilled}"
            continue
        kept += assigned
    if short and params.on_short_class == "error":
        raise StageError(_short_error(params, short, len(by_label(rows))))
    rejects: list[Rejected] = [
        reject(row, STAGE, Reason.CLASS_TOO_SMALL, short[row.label])
        for row in rows
        if row.label in short
    ]
    prepare_output_dir(out_dir)
    write_rows(out_dir / "manifest.csv", kept, header=SplitRow)
    write_rows(out_dir / "rejects.csv", rejects)
    if widened:
        print(f"note: {_widened_note(widened, params.val_per_class)}", file=sys.stderr)
    return StageReport.from_rows(STAGE, len(rows), kept, rejects, **_counts(kept),
                                 val_widened=len(widened))  # fmt: skip


def plan_sizes(params: SplitParams, n: int) -> tuple[int, int]:
    """(train, val) image counts for a class of ``n`` images."""
    if params.train_per_class is not None:
        return params.train_per_class, params.val_per_class
    assert params.train_fraction is not None  # the config model guarantees one of the two
    return max(1, round(params.train_fraction * n)), params.val_per_class


def assign(rows: list[SplitRow], n_train: int, n_val: int, seed: int) -> list[SplitRow]:
    """Rows of one class with ``split`` set; groups are never divided."""
    groups: dict[str, list[SplitRow]] = defaultdict(list)
    for row in rows:
        groups[row.group or row.sha256].append(row)
    label = rows[0].label
    order = sorted(groups, key=lambda g: (derive_seed(seed, f"{label}/{g}"), g))
    remaining = {Split.TRAIN: n_train, Split.VAL: n_val}
    reachable = _reachable([len(groups[name]) for name in order], n_train, n_val)
    exact = (n_train, n_val) in reachable[0]
    out: list[SplitRow] = []
    for k, name in enumerate(order):
        size = len(groups[name])
        later = reachable[k + 1] if exact else None
        split = next((s for s in remaining if _fits(remaining, s, size, later)), Split.TEST)
        if split != Split.TEST:
            remaining[split] -= size
        out += [replace(row, split=split) for row in groups[name]]
    return out


def _fits(
    remaining: dict[Split, int], split: Split, size: int, later: set[tuple[int, int]] | None
) -> bool:
    """Whether a group of ``size`` fits ``split`` and, given what ``later`` groups can fill
    exactly (None: no exact fill exists, first fit alone), train and val can still be
    filled exactly after it."""
    if size > remaining[split]:
        return False
    train = remaining[Split.TRAIN] - (size if split == Split.TRAIN else 0)
    val = remaining[Split.VAL] - (size if split == Split.VAL else 0)
    return later is None or (train, val) in later


def _reachable(sizes: list[int], n_train: int, n_val: int) -> list[set[tuple[int, int]]]:
    """For each k, the (train, val) counts that groups ``sizes[k:]`` can fill exactly.

    ``assign`` takes groups in their seeded order, first fit, as long as what is left can
    still fill train and val exactly: plain first fit can strand a class whose look-alike
    groups (clean's possible copies) would fit another way (ORL: a group of 3 placed in
    train first leaves no single image for val).
    """
    reachable = [{(0, 0)}]
    for size in reversed(sizes):
        last = reachable[-1]
        more = {(t + size, v) for t, v in last if t + size <= n_train}
        more |= {(t, v + size) for t, v in last if v + size <= n_val}
        reachable.append(last | more)
    return reachable[::-1]


def _wider_val(rows: list[SplitRow], n_train: int, n_val: int) -> int | None:
    """The smallest val count above ``n_val`` that groups can fill exactly beside exactly
    ``n_train`` train images, leaving a test image; None if there is none."""
    sizes = list(Counter(row.group or row.sha256 for row in rows).values())
    most = len(rows) - n_train - 1
    if most <= n_val:
        return None
    reachable = _reachable(sizes, n_train, most)[0]
    return next((v for v in range(n_val + 1, most + 1) if (n_train, v) in reachable), None)


def _widened_note(widened: dict[str, int], n_val: int) -> str:
    names = ", ".join(f"{label} ({v})" for label, v in sorted(widened.items())[:8])
    more = f" and {len(widened) - 8} more" if len(widened) > 8 else ""
    return (
        f"{len(widened)} class(es) took more than {n_val} val image(s), as look-alike "
        f"groups allowed no exact count without dividing a group: {names}{more}"
    )


def _underfilled(rows: list[SplitRow], n_train: int, n_val: int) -> str:
    """Why groups of look-alikes left train or val short of the requested count, if so.

    Few-shot results are reported per image count, so a class silently trained on
    fewer images than asked would corrupt the comparison.
    """
    for split, wanted in ((Split.TRAIN, n_train), (Split.VAL, n_val)):
        got = sum(row.split == split for row in rows)
        if got < wanted:
            return (
                f"only {got} of {wanted} {split} images could be assigned without dividing "
                "a group of look-alike images (see the group column of the clean manifest)"
            )
    return ""


def _short_detail(label: str, n: int, n_train: int, n_val: int) -> str:
    return f"class {label!r} has {n} image(s); train {n_train} + val {n_val} leaves no test image"


def _short_error(params: SplitParams, short: dict[str, str], n_classes: int) -> str:
    """Every short class in one message (fixing them one run at a time would be a chore), and
    only advice that applies: val_per_class can go down to 0, not below."""
    lines = "\n".join(f"  {detail}" for detail in short.values())
    train = "train_per_class" if params.train_per_class is not None else "train_fraction"
    lower = f"split.{train}" + (" or split.val_per_class" if params.val_per_class else "")
    return (
        f"{len(short)} of {n_classes} classes cannot be split:\n{lines}\n"
        f"Lower {lower}, add images, raise clean.min_per_class to drop such classes "
        "earlier, or set split.on_short_class: skip"
    )


def _counts(rows: list[SplitRow]) -> dict[str, object]:
    per_split = {s.value: sum(r.split == s for r in rows) for s in Split}
    classes = sorted({r.label for r in rows})
    return {**per_split, "classes": len(classes)}
