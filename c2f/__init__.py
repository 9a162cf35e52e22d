"""c2f: coarse-to-fine semantic segmentation from image-level labels.

The names below load on first use (PEP 562), so ``import c2f`` stays fast and imports neither
torch, OpenCV nor ONNX Runtime::

    import c2f
    seg = c2f.Segmenter("photos.onnx")
    prediction = seg("cat.jpg", classes=["cat"])      # .label_map, .probs
    mask = c2f.segment("cat.jpg", model="photos.onnx").label_map

The paper's pipeline, step by step: ``TrainConfig`` (its mask-stage settings: ``MaskConfig``),
``load_dataset``, ``split``, ``make_masks`` (the mask stage), ``train`` (mask stage + recursive
rounds), ``relabel`` (a model's cleaned relabelling of a data set), ``evaluate``, ``export_onnx``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute): each is the real object, not a wrapper.
_LAZY: dict[str, tuple[str, str]] = {
    "Segmenter": ("c2f.api", "Segmenter"),
    "segment": ("c2f.api", "segment"),
    "Engine": ("c2f.inference.engine", "Engine"),
    "Prediction": ("c2f.inference.engine", "Prediction"),
    "TrainConfig": ("c2f.training.config", "TrainConfig"),
    "train": ("c2f.training.recursive", "train_recursive"),
    "MaskConfig": ("c2f.masks.config", "MaskConfig"),
    "make_masks": ("c2f.masks.stage", "run_mask_stage"),
    "relabel": ("c2f.training.relabel", "relabel"),
    "evaluate": ("c2f.evaluation.scoring", "evaluate_engine"),
    "export_onnx": ("c2f.export.onnx_export", "export_onnx"),
    "load_dataset": ("c2f.data.layouts", "load_dataset"),
    "split": ("c2f.data.datasets", "split"),
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from c2f.api import Segmenter, segment
    from c2f.data.datasets import split
    from c2f.data.layouts import load_dataset
    from c2f.export.onnx_export import export_onnx
    from c2f.inference.engine import Engine, Prediction
    from c2f.masks.config import MaskConfig
    from c2f.masks.stage import run_mask_stage as make_masks
    from c2f.training.config import TrainConfig
    from c2f.evaluation.scoring import evaluate_engine as evaluate
    from c2f.training.recursive import train_recursive as train
    from c2f.training.relabel import relabel


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'c2f' has no attribute {name!r}") from None
    value = getattr(import_module(module), attribute)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
