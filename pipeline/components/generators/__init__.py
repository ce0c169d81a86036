"""Generative expression backends, by name (`prep list generators`).

Importing this package registers every backend; heavy libraries (torch, dlib,
diffusers) load only when a backend is built.
"""

from pipeline.components.generators import diffusion, stargan, warp  # noqa: F401 - registers the backends
from pipeline.components.generators.base import (
    GENERATORS,
    Generator,
    Job,
    SlowDeviceWarning,
    Variant,
)

__all__ = ["GENERATORS", "Generator", "Job", "SlowDeviceWarning", "Variant"]
