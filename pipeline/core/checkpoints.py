"""Reading weights files safely: safetensors, or torch files without unpickling code.

Every weights file a user points us to (a backbone's ``train.weights``, the facenet
embedder's ``embed.weights``, a StarGAN ``generate.checkpoint``) and every model we saved
ourselves is read here, with ``torch.load(weights_only=True)``: tensors and plain
containers only, never arbitrary objects. A file that needs more is refused with torch's
reason, but never with torch's advice to retry with ``weights_only=False``, which would
run whatever code the file carries.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import UserError

_WRAPPERS = ("state_dict", "model")  # {"state_dict": {...}} as many training scripts save


def load_state_dict(path: Path, what: str = "weights file") -> dict[str, Any]:
    """The state dict in ``path`` (``.safetensors`` or a torch file); a clear error otherwise."""
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise UserError(f"{path}: `pip install safetensors` to read .safetensors") from None
        return load_file(str(path))
    state = load_torch_file(path, what)
    for wrapper in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise UserError(f"{what} {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_torch_file(path: Path, what: str = "weights file") -> Any:
    """``torch.load(weights_only=True)`` on the CPU, with a one-line reason on failure."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; all mean "not plain weights"
        raise UserError(
            f"cannot read {what} {path}: {refusal_reason(err)}. prep reads only plain weights "
            "(a state dict saved with torch.save, or .safetensors): re-save the weights as such"
        ) from None


def refusal_reason(err: BaseException) -> str:
    """Why torch refused a file, without its advice to load it unsafely."""
    text = str(err)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\.\s+Please use|\n\n|$)", text, re.S)
    if found:
        return "it is not plain weights (" + " ".join(found.group(1).split()).rstrip(".") + ")"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if "weights_only" in first:
        return "it is not plain weights"
    return first.rstrip(".")
