"""Segmentation models: a backbone registry and DeepLab/FPN heads behind ``build_model``."""

from .registry import (
    ARCHS,
    BACKBONES,
    TASK_DEFAULTS,
    ModelConfig,
    SegmentationModel,
    build_model,
    load_backbone_weights,
    model_from_config,
    state_checksum,
)

__all__ = [
    "ARCHS",
    "BACKBONES",
    "TASK_DEFAULTS",
    "ModelConfig",
    "SegmentationModel",
    "build_model",
    "load_backbone_weights",
    "model_from_config",
    "state_checksum",
]
