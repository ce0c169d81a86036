"""The identity gate: a variant that no longer looks like the person is worse than none.

Source and variant are embedded with the identity embedder: the one the ``embed``
section configures, which clean judges identities with too (dlib's ResNet by default).
The variant is kept only when the Euclidean distance between the two is below the
threshold; a variant in which the embedder finds no face has an infinite distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from pipeline.components.identity import distances as pairwise
from pipeline.core.crops import Box

if TYPE_CHECKING:
    from pipeline.components.embedders import Embedder


class IdentityGate:
    """Keeps a variant only while its embedding stays within ``threshold`` of the source."""

    def __init__(self, embedder: Embedder, threshold: float) -> None:
        self.embedder = embedder
        self.threshold = threshold

    def distances(
        self, source: np.ndarray, variants: Sequence[np.ndarray], box: Box | None = None
    ) -> np.ndarray:
        """Distance of each variant to ``source``; inf when either has no embedding.

        ``box``: the face in the source crop; variants keep their source's geometry.
        """
        if not variants:
            return np.zeros(0)
        images = [source, *variants]
        boxes = [box] * len(images) if box is not None else None
        vectors = np.asarray(self.embedder.embed(images, boxes), dtype=np.float64)
        found = pairwise(vectors[1:], vectors[:1])[:, 0]
        return np.where(np.isfinite(found), found, np.inf)  # NaN rows: no face

    def keeps(self, distance: float) -> bool:
        return bool(distance < self.threshold)

    def detail(self, distance: float) -> str:
        if not np.isfinite(distance):
            return "no face found in the variant (or its source) by the identity embedder"
        return f"identity distance {distance:.4f} >= threshold {self.threshold}"
