"""How much of a face classic8's threshold-to-zero blacks out, on dlib's 55 real headshots.

Each headshot's face box comes from dlib's HOG detector (the largest face); inside it, the
share of pixels that the old op (every channel value up to a fixed 100 set to 0) and the
current one (pixels at or under the 20th percentile of the whole photo's luminance set to
black) change, and the share they turn fully black. Prints mean, median and max over the
faces, and the three darkest faces. Results in README ("Recipes").

    python benchmarks/tozero_faces.py    # a few seconds; needs the dlib 19.5.0 sdist
                                         # (`make test` fetches it into .cache/test-photos)
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import dlib
import numpy as np
from PIL import Image

from demo.real_faces import HEADSHOTS, read_members, sdist
from pipeline.components.recipes import Classic8

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "test-photos"
TOZERO_ALONE = 2  # classic8's variant with threshold-to-zero and nothing else


def face_shares(rgb: np.ndarray, box: dlib.rectangle) -> dict[str, float]:
    """Shares of the face's pixels changed / blacked out by the old and the current op."""
    inside = (slice(max(box.top(), 0), box.bottom()), slice(max(box.left(), 0), box.right()))
    face = rgb[inside]
    old = Classic8().replay(rgb, {"hflip": False, "tozero": True, "blur": False})[inside]
    new = Classic8().apply(rgb, 0, TOZERO_ALONE)[0][inside]
    return {
        "luminance": float(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY).mean()),
        "old changed": float((old != face).any(axis=2).mean()),
        "old black": float((old.max(axis=2) == 0).mean()),
        "new changed": float((new != face).any(axis=2).mean()),
        "new black": float((new.max(axis=2) == 0).mean()),
    }


def main() -> None:
    detector = dlib.get_frontal_face_detector()
    results = []
    for name, data in sorted(read_members(sdist("dlib", CACHE), HEADSHOTS).items()):
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        boxes = detector(rgb, 1)
        if boxes:
            results.append((name, face_shares(rgb, max(boxes, key=lambda b: b.area()))))
    print(f"{len(results)} faces (dlib HOG boxes)")
    for key in ("old changed", "old black", "new changed", "new black"):
        values = np.array([shares[key] for _, shares in results])
        print(f"{key:<12} mean {values.mean():.1%}  median {np.median(values):.1%}  "
              f"max {values.max():.1%}")  # fmt: skip
    for name, shares in sorted(results, key=lambda r: r[1]["luminance"])[:3]:
        print(f"darkest: {name} (luminance {shares['luminance']:.0f}): old black "
              f"{shares['old black']:.1%}, old changed {shares['old changed']:.1%}, "
              f"new black {shares['new black']:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
