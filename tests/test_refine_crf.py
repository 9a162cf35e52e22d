"""Dense CRF wrapper: valid marginals, and it cleans a noisy mask."""

from __future__ import annotations

import numpy as np
import pytest

from c2f.data.synthetic import render_demo_image
from c2f.refine.crf import crf_refine_mask, dense_crf


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_dense_crf_returns_marginals():
    image, _ = render_demo_image(np.random.default_rng([5, 0, 0]), "disc", 96)
    rng = np.random.default_rng(0)
    probs = rng.random((3, *image.shape[:2])).astype(np.float32)
    probs /= probs.sum(axis=0)
    out = dense_crf(image, probs, iterations=3)
    assert out.shape == probs.shape and out.dtype == np.float32
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-4)
    assert out.min() >= 0.0
    # Non-contiguous inputs (e.g. a transposed view) are handled, not misread.
    view = np.ascontiguousarray(probs.transpose(0, 2, 1)).transpose(0, 2, 1)
    np.testing.assert_allclose(dense_crf(image, view, iterations=3), out, atol=1e-5)


def test_dense_crf_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="CxHxW"):
        dense_crf(np.zeros((10, 10, 3), np.uint8), np.ones((2, 10, 12), np.float32))


@pytest.mark.parametrize("index", range(3))
def test_crf_cleans_a_noisy_mask(index):
    shape = ("disc", "square", "triangle")[index]
    image, truth = render_demo_image(np.random.default_rng([4, index, index]), shape, 120)
    noisy = truth ^ (np.random.default_rng(index).random(truth.shape) < 0.15)
    refined = crf_refine_mask(image, noisy)
    assert refined.dtype == bool and refined.shape == truth.shape
    assert _iou(refined, truth) > _iou(noisy, truth) + 0.1
