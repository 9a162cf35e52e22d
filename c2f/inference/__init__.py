"""One inference engine over ONNX Runtime or a torch checkpoint, shared by CLI, evaluation and server."""

from .backends import Backend, ModelFileError, ModelInfo, OnnxBackend, TorchBackend, load_backend
from .engine import (
    REFINE_MAX_PIXELS,
    Cancelled,
    Engine,
    Prediction,
    class_indices,
    predict_from_logits,
    softmax_resized,
    to_batch,
    upsample_labels,
    working_size,
)

__all__ = [
    "REFINE_MAX_PIXELS",
    "Backend",
    "Cancelled",
    "Engine",
    "ModelFileError",
    "ModelInfo",
    "OnnxBackend",
    "Prediction",
    "TorchBackend",
    "class_indices",
    "load_backend",
    "predict_from_logits",
    "softmax_resized",
    "to_batch",
    "upsample_labels",
    "working_size",
]
