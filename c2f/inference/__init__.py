"""One inference engine over ONNX Runtime or a torch checkpoint, shared by CLI, evaluation and server."""

from .backends import Backend, ModelFileError, ModelInfo, OnnxBackend, TorchBackend, load_backend
from .engine import Engine, Prediction, class_indices, softmax_resized, to_batch

__all__ = [
    "Backend",
    "Engine",
    "ModelFileError",
    "ModelInfo",
    "OnnxBackend",
    "Prediction",
    "TorchBackend",
    "class_indices",
    "load_backend",
    "softmax_resized",
    "to_batch",
]
