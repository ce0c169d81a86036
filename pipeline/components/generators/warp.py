"""`warp`: expressions by moving dlib's 68 landmarks and warping (see pipeline/warp.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from pipeline.components import warp
from pipeline.components.generators.base import GENERATORS, Job, Variant, check_expressions
from pipeline.core.config import GenerateParams
from pipeline.core.errors import UserError


@GENERATORS.register(
    "warp",
    help="landmark warp (dlib 68 points + thin-plate spline): smile, frown, surprise; CPU, "
    "no model; params warp_strength, warp_jitter, workers",
)
class WarpGenerator:
    """Fast and identity-preserving by construction: only geometry moves."""

    name: ClassVar[str] = "warp"
    cpu_parallel: ClassVar[bool] = True

    def __init__(self, params: GenerateParams) -> None:
        check_expressions(self.name, params.expressions, list(warp.EXPRESSIONS))
        self.strength = params.warp_strength
        self.jitter = params.warp_jitter
        warp.predictor_path()  # a missing model file fails now, not on the first image
        self._landmarks: dict[str, tuple[np.ndarray, str]] = {}

    def generate(self, jobs: Sequence[Job]) -> list[Variant]:
        return [self._one(job) for job in jobs]

    def _one(self, job: Job) -> Variant:
        # The K variants of an image share its landmarks: find them once.
        if job.key not in self._landmarks:
            self._landmarks = {job.key: warp.find_landmarks(job.image)}
        landmarks, how = self._landmarks[job.key]
        rng = np.random.default_rng(job.seed)
        intensity = self.strength * (1.0 + self.jitter * rng.uniform(-1.0, 1.0))
        try:
            result = warp.warp_expression(job.image, job.expression, intensity, landmarks)
        except UserError as err:
            return Variant(None, error=str(err))
        return Variant(result.image, {**result.applied(), "face_box": how})
