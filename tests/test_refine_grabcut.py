"""GrabCut refinement: it improves imperfect coarse masks and falls back on degenerate ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from c2f.data.synthetic import DEMO_CLASSES, render_demo_image
from c2f.refine import grabcut as grabcut_module
from c2f.refine.grabcut import grabcut_refine

_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (13, 13))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _fixture(c: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    return render_demo_image(np.random.default_rng([7, c, i]), DEMO_CLASSES[c], 128)


def _dilated(truth: np.ndarray) -> np.ndarray:
    return cv2.dilate(truth.astype(np.uint8), _KERNEL) > 0


def _eroded(truth: np.ndarray) -> np.ndarray:
    return cv2.erode(truth.astype(np.uint8), _KERNEL) > 0


def _shifted(truth: np.ndarray) -> np.ndarray:
    return np.roll(np.roll(truth, 6, axis=0), 5, axis=1)


def _box(truth: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(truth)
    box = np.zeros_like(truth)
    box[max(0, ys.min() - 8):ys.max() + 8, max(0, xs.min() - 8):xs.max() + 8] = True
    return box


@pytest.mark.parametrize("corrupt", [_dilated, _eroded, _shifted, _box])
def test_grabcut_improves_imperfect_coarse_masks(corrupt):
    coarse_ious, refined_ious = [], []
    for c in range(3):
        image, truth = _fixture(c, 0)
        coarse = corrupt(truth)
        result = grabcut_refine(image, coarse, seed=1)
        assert result.used_grabcut and result.fallback is None
        assert result.mask.dtype == bool and result.mask.shape == truth.shape
        coarse_ious.append(_iou(coarse, truth))
        refined_ious.append(_iou(result.mask, truth))
    assert np.mean(refined_ious) > np.mean(coarse_ious) + 0.1


def test_downscaled_grabcut_returns_full_size_and_still_helps():
    image, truth = _fixture(1, 1)
    coarse = _dilated(truth)
    result = grabcut_refine(image, coarse, max_side=64, seed=1)
    assert result.mask.shape == truth.shape and result.used_grabcut
    assert _iou(result.mask, truth) > _iou(coarse, truth)


@pytest.mark.parametrize(("coarse_value", "reason"),
                         [(False, "coarse mask empty"), (True, "covers the whole image")])
def test_degenerate_coarse_masks_fall_back(coarse_value, reason):
    image, truth = _fixture(0, 1)
    coarse = np.full(truth.shape, coarse_value)
    result = grabcut_refine(image, coarse)
    assert not result.used_grabcut and reason in result.fallback
    np.testing.assert_array_equal(result.mask, coarse)
    assert result.mask is not coarse  # a copy: callers may modify it


def test_collapsed_result_falls_back_to_the_coarse_mask():
    image, truth = _fixture(0, 2)
    speck = np.zeros_like(truth)
    speck[0, :3] = True  # three border pixels: GrabCut cannot keep them
    result = grabcut_refine(image, speck)
    assert result.fallback is not None
    np.testing.assert_array_equal(result.mask, speck)


def test_opencv_errors_fall_back(monkeypatch):
    image, truth = _fixture(2, 0)

    def broken(*args, **kwargs):
        raise cv2.error("OpenCV(5.0) grabcut.cpp: error: (-215) !bgdSamples.empty()")

    monkeypatch.setattr(grabcut_module.cv2, "grabCut", broken)
    result = grabcut_refine(image, _dilated(truth))
    assert result.fallback.startswith("grabCut raised")
    np.testing.assert_array_equal(result.mask, _dilated(truth))


def test_seeded_results_are_reproducible():
    image, truth = _fixture(1, 2)
    coarse = _shifted(truth)
    first = grabcut_refine(image, coarse, seed=7).mask
    cv2.randu(np.zeros((4, 4), np.float32), 0, 1)  # advance OpenCV's global RNG in between
    np.testing.assert_array_equal(grabcut_refine(image, coarse, seed=7).mask, first)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="sizes differ"):
        grabcut_refine(np.zeros((10, 10, 3), np.uint8), np.zeros((10, 11), bool))
