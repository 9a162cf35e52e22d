"""Evaluation: metrics, scoring a model against ground truth, reports and plots, scoring saved runs.

Nothing here imports torch: scoring an ONNX export needs only ONNX Runtime (a ``.pt`` checkpoint
loads torch when the engine opens it).
"""

from .metrics import (
    ConfusionMatrix,
    Scorer,
    confusion_matrix,
    foreground_jaccard,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)
from .plots import plot_rounds, write_overlays, write_report
from .runs import (
    ClassMismatchError,
    KnownLabelsError,
    NoRoundsError,
    default_out,
    evaluate_models,
    evaluate_run,
    round_checkpoints,
)
from .scoring import evaluate_engine, format_table, label_statistics, score_label_maps

__all__ = [
    "ClassMismatchError",
    "ConfusionMatrix",
    "KnownLabelsError",
    "NoRoundsError",
    "Scorer",
    "confusion_matrix",
    "default_out",
    "evaluate_engine",
    "evaluate_models",
    "evaluate_run",
    "foreground_jaccard",
    "format_table",
    "iou_per_class",
    "label_statistics",
    "mean_iou",
    "pixel_accuracy",
    "plot_rounds",
    "round_checkpoints",
    "score_label_maps",
    "write_overlays",
    "write_report",
]
