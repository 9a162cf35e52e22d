"""Segmentation metrics shared by the mask stage, training and evaluation.

Everything is derived from one confusion matrix (rows = ground truth, columns = prediction),
accumulated with ``np.bincount`` so a whole dataset costs one pass and no per-class loops.
Pixels whose ground truth *or* prediction is the ignore value are left out: ground-truth 255
marks unlabelled borders (VOC), predicted 255 marks pixels a pseudo-label deliberately abstains
on (ignore bands), and neither is a right or wrong answer.
"""

from __future__ import annotations

import numpy as np

from c2f.labelmap import IGNORE

__all__ = [
    "ConfusionMatrix",
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
    "foreground_jaccard",
    "Scorer",
]


def confusion_matrix(
    gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int = IGNORE
) -> np.ndarray:
    """int64 (num_classes x num_classes) counts of (gt class, predicted class) pixel pairs.

    Raises ValueError for mismatched shapes or labels outside 0..num_classes-1 (other than
    `ignore_index`): a silently dropped class would inflate every score.
    """
    gt = np.asarray(gt).ravel().astype(np.int64)
    pred = np.asarray(pred).ravel().astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has {gt.size} pixels, prediction {pred.size}")
    valid = (gt != ignore_index) & (pred != ignore_index)
    gt, pred = gt[valid], pred[valid]
    for name, values in (("ground truth", gt), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}: "
                             f"{sorted(set(np.unique(values)) - set(range(num_classes)))}")
    counts = np.bincount(gt * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class; NaN for classes absent from both ground truth and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over classes present in ground truth or prediction (NaN if there are none)."""
    ious = iou_per_class(cm)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Fraction of counted pixels predicted correctly (NaN for an empty matrix)."""
    total = float(np.asarray(cm).sum())
    return float(np.trace(cm)) / total if total else float("nan")


def foreground_jaccard(
    gt_fg: np.ndarray, pred_fg: np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Class-agnostic Jaccard |gt & pred| / |gt | pred| over `valid` pixels (1.0 when both empty).

    The object-discovery metric: it scores where the object is, whatever class it was given.
    """
    gt_fg, pred_fg = np.asarray(gt_fg, bool), np.asarray(pred_fg, bool)
    if gt_fg.shape != pred_fg.shape:
        raise ValueError(f"ground truth {gt_fg.shape} and prediction {pred_fg.shape} differ")
    if valid is not None:
        gt_fg, pred_fg = gt_fg & valid, pred_fg & valid
    union = int((gt_fg | pred_fg).sum())
    return float((gt_fg & pred_fg).sum()) / union if union else 1.0


class ConfusionMatrix:
    """Accumulates a confusion matrix over many images and reports the scores above."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, gt: np.ndarray, pred: np.ndarray) -> None:
        self.matrix += confusion_matrix(gt, pred, self.num_classes, self.ignore_index)

    def iou_per_class(self) -> np.ndarray:
        return iou_per_class(self.matrix)

    def mean_iou(self) -> float:
        return mean_iou(self.matrix)

    def pixel_accuracy(self) -> float:
        return pixel_accuracy(self.matrix)


class Scorer:
    """A dataset's confusion matrix plus the mean per-image foreground Jaccard, as one report.

    The per-image mean is the MIT Object Discovery protocol; mIoU is VOC's dataset-level measure.
    ``update(..., confusion=False)`` counts an image towards the Jaccard only (e.g. a class-agnostic
    mask of a multi-label image, whose classes are unknown).
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE) -> None:
        self.matrix = ConfusionMatrix(num_classes, ignore_index)
        self.ignore_index = ignore_index
        self.jaccards: list[float] = []

    def update(self, gt: np.ndarray, pred: np.ndarray, confusion: bool = True) -> None:
        valid = (gt != self.ignore_index) & (pred != self.ignore_index)
        self.jaccards.append(foreground_jaccard(gt != 0, (pred != 0) & (pred != self.ignore_index), valid))
        if confusion:
            self.matrix.update(gt, pred)

    def summary(self, class_names: list[str]) -> dict:
        """JSON-ready scores; classes absent from truth and prediction have IoU ``None``."""
        ious = self.matrix.iou_per_class()
        return {
            "images": len(self.jaccards),
            "miou": self.matrix.mean_iou(),
            "iou_per_class": {n: None if np.isnan(v) else float(v) for n, v in zip(class_names, ious)},
            "pixel_accuracy": self.matrix.pixel_accuracy(),
            "fg_jaccard": float(np.mean(self.jaccards)) if self.jaccards else float("nan"),
            "confusion": self.matrix.matrix.tolist(),
        }
