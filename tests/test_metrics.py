"""Hand-computed cases for the shared segmentation metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from c2f.evaluation.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    foreground_jaccard,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

GT = np.array([[0, 0, 1, 1],
               [0, 255, 1, 1],
               [2, 2, 0, 0]], np.uint8)
PRED = np.array([[0, 1, 1, 1],
                 [0, 1, 1, 0],
                 [2, 0, 255, 0]], np.uint8)


def test_confusion_matrix_by_hand_ignores_255_on_either_side():
    cm = confusion_matrix(GT, PRED, num_classes=3)
    # Counted pixels: all but GT=255 at (1,1) and PRED=255 at (2,2) -> 10.
    expected = np.array([[3, 1, 0],   # gt 0: (0,0),(1,0),(2,3) -> 0 ; (0,1) -> 1
                         [1, 3, 0],   # gt 1: (1,3) -> 0 ; three -> 1
                         [1, 0, 1]])  # gt 2: (2,0) -> 2 ; (2,1) -> 0
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == 10


def test_iou_miou_and_accuracy_by_hand():
    cm = confusion_matrix(GT, PRED, num_classes=3)
    ious = iou_per_class(cm)
    np.testing.assert_allclose(ious, [3 / (4 + 5 - 3), 3 / (4 + 4 - 3), 1 / (2 + 1 - 1)])
    assert mean_iou(cm) == pytest.approx(np.mean([3 / 6, 3 / 5, 1 / 2]))
    assert pixel_accuracy(cm) == pytest.approx(7 / 10)


def test_absent_classes_are_nan_and_left_out_of_the_mean():
    gt = np.array([[0, 0, 3, 3]], np.uint8)
    pred = np.array([[0, 1, 3, 3]], np.uint8)
    ious = iou_per_class(confusion_matrix(gt, pred, num_classes=5))
    # Class 1: predicted only (IoU 0, counted); class 2 and 4: absent everywhere (NaN).
    assert ious[0] == pytest.approx(0.5) and ious[1] == 0.0 and ious[3] == 1.0
    assert math.isnan(ious[2]) and math.isnan(ious[4])
    assert mean_iou(confusion_matrix(gt, pred, 5)) == pytest.approx((0.5 + 0 + 1) / 3)


def test_empty_and_invalid_inputs():
    everything_ignored = np.full((2, 2), 255, np.uint8)
    cm = confusion_matrix(everything_ignored, np.zeros((2, 2), np.uint8), 2)
    assert cm.sum() == 0
    assert math.isnan(mean_iou(cm)) and math.isnan(pixel_accuracy(cm))
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), 7, np.uint8), 3)
    with pytest.raises(ValueError, match="pixels"):
        confusion_matrix(np.zeros((2, 2)), np.zeros((3, 2)), 3)


def test_accumulator_equals_one_big_matrix():
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(0, 4, (5, 7)), rng.integers(0, 4, (5, 7))) for _ in range(3)]
    acc = ConfusionMatrix(4)
    for gt, pred in pairs:
        acc.update(gt, pred)
    whole = confusion_matrix(np.concatenate([g for g, _ in pairs]),
                             np.concatenate([p for _, p in pairs]), 4)
    np.testing.assert_array_equal(acc.matrix, whole)
    assert acc.mean_iou() == pytest.approx(mean_iou(whole))
    assert acc.pixel_accuracy() == pytest.approx(pixel_accuracy(whole))


def test_foreground_jaccard():
    gt = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[0, 1, 1, 0]], bool)
    assert foreground_jaccard(gt, pred) == pytest.approx(1 / 3)
    assert foreground_jaccard(gt, pred, valid=np.array([[0, 1, 1, 1]], bool)) == pytest.approx(0.5)
    assert foreground_jaccard(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert foreground_jaccard(gt, np.zeros_like(gt)) == 0.0
