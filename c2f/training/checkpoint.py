"""Checkpoints that rebuild themselves: model config, class names and training state in one file.

Following torchvision's references, everything needed to resume (optimizer, round, epoch, the full
training config) is stored beside the weights, and files are written atomically so a run killed
while saving never leaves a checkpoint that cannot be read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from c2f import __version__


def make_checkpoint(
    model: torch.nn.Module,
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint saved by :func:`save_checkpoint` (it holds plain Python config objects)."""
    return torch.load(path, map_location="cpu", weights_only=False)
