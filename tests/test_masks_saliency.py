"""Weight-free saliency: objects outscore background, binarised maps overlap the truth."""

from __future__ import annotations

import numpy as np
import pytest

from c2f.data.synthetic import DEMO_CLASSES, render_demo_image
from c2f.masks.saliency import binarize, saliency_map

FIXTURES = [(c, i) for c in range(3) for i in range(8)]


def _fixture(c: int, i: int) -> tuple[np.ndarray, np.ndarray]:
    return render_demo_image(np.random.default_rng([6, c, i]), DEMO_CLASSES[c], 128)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def maps():
    return [(*_fixture(c, i), saliency_map(_fixture(c, i)[0])) for c, i in FIXTURES]


def test_saliency_map_format(maps):
    image, _, sal = maps[0]
    assert sal.dtype == np.float32 and sal.shape == image.shape[:2]
    assert sal.min() >= 0.0 and sal.max() <= 1.0 and sal.max() > 0.5


def test_saliency_is_deterministic_and_size_independent_of_max_side():
    image, _ = _fixture(0, 0)
    np.testing.assert_array_equal(saliency_map(image), saliency_map(image))
    assert saliency_map(image, max_side=64).shape == image.shape[:2]


def test_foreground_more_salient_than_background(maps):
    wins = [sal[truth].mean() > sal[~truth].mean() for _, truth, sal in maps]
    # Low-contrast fixtures may lose; the method must win clearly overall.
    assert sum(wins) >= 0.75 * len(wins)
    assert np.mean([sal[t].mean() - sal[~t].mean() for _, t, sal in maps]) > 0.2


@pytest.mark.parametrize("method", ["otsu", "adaptive"])
def test_binarized_masks_overlap_the_truth(maps, method):
    ious = [_iou(binarize(sal, method), truth) for _, truth, sal in maps]
    assert np.mean(ious) > 0.5
    assert np.median(ious) > 0.55


def test_binarize_accepts_uint8_and_removes_specks():
    sal = np.zeros((100, 100), np.float32)
    sal[30:70, 30:70] = 1.0
    sal[5, 5] = 1.0  # a speck
    sal[90:93, 90:93] = 1.0  # a small fragment
    mask = binarize(sal)
    assert mask[50, 50] and not mask[5, 5] and not mask[91, 91]
    np.testing.assert_array_equal(binarize((sal * 255).astype(np.uint8)), mask)
    assert binarize(sal, clean=False)[5, 5]
    assert not binarize(np.zeros((10, 10), np.float32)).any()
    with pytest.raises(ValueError, match="method"):
        binarize(sal, "mean")


def test_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB"):
        saliency_map(np.zeros((10, 10), np.uint8))
