"""The c2f checkpoint format, written and read here only.

A checkpoint rebuilds itself: the model's config, task, class names and input size sit beside the
weights, and everything needed to resume training (optimizer, round, epoch, the full training
config) can be added to it, following torchvision's references. Files are written atomically so a
run killed while saving never leaves a checkpoint that cannot be read.

torch is imported inside the functions: inference imports this module to open a ``.pt`` file
without importing it (or the training package) for ONNX exports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from c2f import __version__

if TYPE_CHECKING:
    import torch

REQUIRED_KEYS = ("config", "model", "task", "class_names")
"""What a file must hold to be a c2f checkpoint (rather than any torch file)."""


def make_checkpoint(
    model: "torch.nn.Module",
    task: str,
    class_names: list[str],
    input_size: int,
    **state: Any,
) -> dict[str, Any]:
    """Assemble a checkpoint dict; ``state`` adds optimizer, round, epoch, train config, metrics..."""
    module = getattr(model, "module", model)  # unwrap DistributedDataParallel
    return {
        "model": module.state_dict(),
        "config": module.config.to_dict(),
        "task": task,
        "class_names": list(class_names),
        "input_size": int(input_size),
        "c2f_version": __version__,
        **state,
    }


def save_checkpoint(checkpoint: dict[str, Any], path: str | Path) -> Path:
    """Write atomically: a temp file in the same folder, then an os.replace."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint saved by :func:`save_checkpoint` (it holds plain Python config objects)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def missing_keys(state: Any) -> list[str]:
    """The :data:`REQUIRED_KEYS` a loaded file lacks (all of them when it is no dict)."""
    return [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]


def model_description(state: dict[str, Any]) -> dict[str, Any]:
    """The model's task, classes, input size, config and c2f version, as ``ModelInfo.from_dict`` reads them."""
    return {
        "task": state["task"],
        "class_names": list(state["class_names"]),
        "input_size": int(state.get("input_size", 321)),
        "config": dict(state["config"]),
        "version": str(state.get("c2f_version", "")),
    }


def model_from_checkpoint(state: dict[str, Any]) -> "torch.nn.Module":
    """The model a checkpoint describes, with its weights loaded."""
    from c2f.models import model_from_config

    model = model_from_config(state["config"])
    model.load_state_dict(state["model"])
    return model
