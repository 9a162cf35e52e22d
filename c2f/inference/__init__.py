"""One inference engine over ONNX Runtime or a torch checkpoint, shared by CLI, evaluation and server."""

from .backends import Backend, ModelFileError, ModelInfo, OnnxBackend, TorchBackend, load_backend
from .engine import (
    CRF_ITERATIONS,
    CRF_MAX_PIXELS,
    CRF_PRUNE_BELOW,
    REFINE_MAX_PIXELS,
    Cancelled,
    Engine,
    Prediction,
    argmax_resized,
    bounded_crf,
    class_indices,
    predict_from_logits,
    softmax_resized,
    to_batch,
    upsample_labels,
    working_size,
)

__all__ = [
    "CRF_ITERATIONS",
    "CRF_MAX_PIXELS",
    "CRF_PRUNE_BELOW",
    "REFINE_MAX_PIXELS",
    "Backend",
    "Cancelled",
    "Engine",
    "ModelFileError",
    "ModelInfo",
    "OnnxBackend",
    "Prediction",
    "TorchBackend",
    "argmax_resized",
    "bounded_crf",
    "class_indices",
    "load_backend",
    "predict_from_logits",
    "softmax_resized",
    "to_batch",
    "upsample_labels",
    "working_size",
]
