"""How well clean's label checks find flipped labels on real object photos (Fashion-MNIST).

Takes ``--per-class`` images of each Fashion-MNIST class (Debian's dataset-fashion-mnist,
test split, first images of each class; fetched like demo/fashion_mnist.py does), embeds
them with the objects domain's embedder (EfficientNet-Lite0, unit length; the images as
``prep fashion-mnist`` writes them, 112 px, which the ``none`` detector passes through
unchanged), moves ``--noise`` of them into a random other class, and reports for a grid of
(wrong_label_prob, wrong_label_ratio) the precision and recall of ``wrong_label`` against
the moved images, mean and range over ``--seeds`` noise draws. It also reports the
embedding distances that matter to ``label_conflict_distance``: the same image under two
labels (0) against the closest distinct images of two classes.

    python benchmarks/label_noise.py --per-class 30 --noise 0.05 0.10 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scipy.spatial.distance import cdist  # noqa: E402

from demo.fashion_mnist import CLASSES, fashion_mnist_dir, load_split, pick, to_rgb  # noqa: E402
from pipeline.components.embedders import ImagenetEmbedder  # noqa: E402
from pipeline.components.label_checks import (  # noqa: E402
    flag_wrong_labels,
    out_of_sample_probs,
)

PROBS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
RATIOS = (2.0, 3.0, 4.0, 5.0)


def flip(labels: list[str], share: float, rng: np.random.Generator) -> tuple[list[str], set[int]]:
    """``labels`` with ``share`` of them (rounded) moved to a random other class."""
    classes = sorted(set(labels))
    moved = rng.choice(len(labels), size=round(share * len(labels)), replace=False)
    noisy = list(labels)
    for i in moved:
        noisy[i] = str(rng.choice([c for c in classes if c != labels[i]]))
    return noisy, {int(i) for i in moved}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.05, 0.10])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=REPO / ".cache/fashion-mnist")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args()

    images, labels = load_split(fashion_mnist_dir(args.cache), "t10k")
    chosen = pick(labels, list(range(len(CLASSES))), args.per_class)
    truth = [CLASSES[int(labels[i])] for i in chosen]
    matrix = ImagenetEmbedder("efficientnet_lite0").embed([to_rgb(images[i], 112) for i in chosen])
    matrix = matrix.astype(np.float64)
    results = {
        "images": len(chosen),
        "classes": len(CLASSES),
        "distances": distances(matrix, truth),
    }
    for share in args.noise:
        results[f"noise_{share:g}"] = grid(matrix, truth, share, args.seeds, args.folds)
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


def distances(matrix: np.ndarray, truth: list[str]) -> dict[str, float]:
    """Closest distinct images of two different classes, and within one class."""
    d = cdist(matrix, matrix)
    same = np.equal.outer(np.array(truth), np.array(truth))
    np.fill_diagonal(d, np.inf)
    return {
        "closest_across_classes": round(float(d[~same].min()), 3),
        "closest_within_class": round(float(d[same].min()), 3),
        "median_within_class": round(float(np.median(d[same & np.isfinite(d)])), 3),
    }


def grid(
    matrix: np.ndarray, truth: list[str], share: float, seeds: int, folds: int
) -> dict[str, dict[str, float]]:
    """Per (prob, ratio): precision and recall pooled over the noise draws, and the worst
    draw's (a draw that flags nothing has no precision and is left out of its minimum)."""
    counts: dict[str, list[tuple[int, int, int]]] = {}  # (flagged, correct, moved) per draw
    for seed in range(seeds):
        noisy, moved = flip(truth, share, np.random.default_rng(seed))
        classes, probs = out_of_sample_probs(noisy, matrix, folds) or ([], np.zeros(0))
        for prob in PROBS:
            for ratio in RATIOS:
                flagged = flag_wrong_labels(noisy, classes, probs, prob, ratio)
                found = {w.index for w in flagged}
                key = f"prob={prob} ratio={ratio}"
                counts.setdefault(key, []).append((len(found), len(found & moved), len(moved)))
    table = {}
    for key, draws in counts.items():
        flagged, correct, moved = (sum(column) for column in zip(*draws, strict=True))
        table[key] = {
            "precision": round(correct / flagged, 3) if flagged else float("nan"),
            "recall": round(correct / moved, 3),
            "worst_precision": round(min((c / f for f, c, _ in draws if f), default=1.0), 3),
            "worst_recall": round(min(c / m for _, c, m in draws), 3),
            "flagged": flagged, "moved": moved,
        }  # fmt: skip
    return table


if __name__ == "__main__":
    main()
