"""Label composition and the between-round post-processing."""

from __future__ import annotations

import numpy as np
import pytest

from c2f.data.synthetic import render_demo_image
from c2f.refine.labels import (
    compose_label_map,
    foreground_fraction,
    keep_own_classes,
    postprocess_prediction,
)


def _square(size: int = 20, lo: int = 5, hi: int = 15) -> np.ndarray:
    fg = np.zeros((size, size), bool)
    fg[lo:hi, lo:hi] = True
    return fg


def test_compose_single_label():
    fg = _square()
    label_map = compose_label_map(fg, (7,))
    assert label_map.dtype == np.uint8
    assert set(np.unique(label_map)) == {0, 7}
    np.testing.assert_array_equal(label_map == 7, fg)


def test_compose_ignore_band_on_both_sides_of_the_boundary():
    fg = _square()
    label_map = compose_label_map(fg, (3,), ignore_band=2)
    # Pixels 2 inside and 2 outside the edge are ignored; deeper ones keep their labels.
    assert label_map[10, 5] == 255 and label_map[10, 6] == 255 and label_map[10, 7] == 3
    assert label_map[10, 4] == 255 and label_map[10, 3] == 255 and label_map[10, 2] == 0
    assert label_map[10, 10] == 3 and label_map[0, 0] == 0


def test_compose_multi_label_needs_and_uses_evidence():
    fg = _square()
    with pytest.raises(ValueError, match="class_evidence"):
        compose_label_map(fg, (2, 5))
    evidence = np.zeros((2, 20, 20), np.float32)
    evidence[0, :, :10] = 1.0  # label 2 wins on the left half
    evidence[1, :, 10:] = 1.0  # label 5 on the right
    label_map = compose_label_map(fg, (2, 5), class_evidence=evidence)
    assert label_map[8, 7] == 2 and label_map[8, 12] == 5 and label_map[0, 12] == 0
    with pytest.raises(ValueError, match="one row per label"):
        compose_label_map(fg, (2, 5), class_evidence=evidence[:1])


def test_compose_rejects_bad_labels():
    with pytest.raises(ValueError):
        compose_label_map(_square(), (0,))
    with pytest.raises(ValueError):
        compose_label_map(_square(), ())
    assert not compose_label_map(np.zeros((4, 4), bool), ()).any()


def test_foreground_fraction_excludes_ignore():
    label_map = np.array([[0, 0, 4, 255]], np.uint8)
    assert foreground_fraction(label_map) == pytest.approx(1 / 3)
    assert foreground_fraction(np.full((2, 2), 255, np.uint8)) == 0.0


def test_keep_own_classes_moves_foreign_mass_to_own_classes_not_background():
    probs = np.zeros((4, 1, 4), np.float32)
    probs[:, 0, 0] = [0.1, 0.2, 0.3, 0.4]
    probs[:, 0, 1] = [0.0, 0.0, 0.0, 1.0]  # all mass on a foreign class: still an object
    probs[:, 0, 2] = [0.5, 0.5, 0.0, 0.0]
    probs[:, 0, 3] = [0.6, 0.1, 0.1, 0.2]
    kept = keep_own_classes(probs, (2,))
    np.testing.assert_allclose(kept[:, 0, 0], [0.1, 0, 0.9, 0], rtol=1e-6)
    np.testing.assert_allclose(kept[:, 0, 1], [0, 0, 1, 0])
    np.testing.assert_allclose(kept[:, 0, 2], [0.5, 0, 0.5, 0])
    np.testing.assert_allclose(kept[0], probs[0])  # background keeps its probability
    np.testing.assert_allclose(kept.sum(axis=0), 1.0, rtol=1e-6)
    two = keep_own_classes(probs, (1, 2))  # split in proportion to the own classes' probabilities
    np.testing.assert_allclose(two[:, 0, 0], [0.1, 0.36, 0.54, 0], rtol=1e-5)
    np.testing.assert_allclose(two[:, 0, 1], [0, 0.5, 0.5, 0], rtol=1e-6)
    with pytest.raises(ValueError, match="exceed"):
        keep_own_classes(probs, (9,))


def _probs_from_mask(fg: np.ndarray, label: int, n_classes: int = 4) -> np.ndarray:
    probs = np.full((n_classes, *fg.shape), 0.02, np.float32)
    probs[0][~fg] = 0.9
    probs[label][fg] = 0.9
    probs[3][fg] = 0.95  # a foreign class that would win without keep_own_classes
    return probs / probs.sum(axis=0)


def test_postprocess_keeps_own_class_and_refines_with_grabcut():
    image, truth = render_demo_image(np.random.default_rng([3, 0, 0]), "disc", 120)
    coarse = np.roll(truth, 6, axis=1)  # a shifted prediction
    result = postprocess_prediction(image, _probs_from_mask(coarse, 1), (1,), seed=1)
    assert result.dropped is None and not result.grabcut_fallback
    assert set(np.unique(result.label_map)) <= {0, 1}
    refined = result.label_map == 1
    iou = (refined & truth).sum() / (refined | truth).sum()
    coarse_iou = (coarse & truth).sum() / (coarse | truth).sum()
    assert iou > coarse_iou
    assert result.fg_fraction == pytest.approx(refined.mean())


def test_postprocess_multi_label_splits_by_own_class_probabilities():
    image = np.zeros((40, 40, 3), np.uint8)
    fg = _square(40, 10, 30)
    probs = np.full((3, 40, 40), 0.05, np.float32)
    probs[0][~fg] = 0.9
    probs[1][fg] = 0.5
    probs[2][fg] = 0.4
    probs[2][:, 20:][fg[:, 20:]] = 0.6
    result = postprocess_prediction(image, probs, (1, 2), grabcut=False)
    assert result.label_map[15, 12] == 1 and result.label_map[15, 25] == 2
    assert result.label_map[2, 2] == 0


def test_postprocess_foreign_classes_count_only_when_the_own_class_is_not_found():
    image = np.zeros((40, 40, 3), np.uint8)
    own_object, patch = _square(40, 5, 15), _square(40, 25, 35)
    probs = np.full((4, 40, 40), 0.02, np.float32)
    probs[0] = 0.9
    probs[0][own_object] = 0.1
    probs[1][own_object] = 0.85
    probs[0][patch] = 0.3
    probs[3][patch] = 0.65  # background the model gives to another class
    found = postprocess_prediction(image, probs, (1,), grabcut=False)
    assert not found.objectness_fallback
    np.testing.assert_array_equal(found.label_map == 1, own_object)  # the patch stays background

    lost = probs.copy()
    lost[3][own_object], lost[1][own_object] = 0.85, 0.02  # the object found under a wrong name
    rescued = postprocess_prediction(image, lost, (1,), grabcut=False)
    assert rescued.objectness_fallback and rescued.dropped is None
    np.testing.assert_array_equal(rescued.label_map == 1, own_object | patch)


def test_postprocess_objectness_threshold_is_separate_from_the_drop_filter():
    """Inference keeps every image (min_fg=0) but still rescues an object found under a wrong class."""
    image = np.zeros((40, 40, 3), np.uint8)
    own_object = _square(40, 5, 15)
    probs = np.full((4, 40, 40), 0.02, np.float32)
    probs[0] = 0.9
    probs[0][own_object], probs[3][own_object] = 0.1, 0.85  # the object, under another class's name
    today = postprocess_prediction(image, probs, (1,), grabcut=False, min_fg=0.0, max_fg=1.0)
    assert not today.objectness_fallback and not (today.label_map > 0).any()  # None: the threshold is min_fg
    kept = postprocess_prediction(image, probs, (1,), grabcut=False, min_fg=0.0, max_fg=1.0, objectness_below=0.01)
    assert kept.objectness_fallback and kept.dropped is None
    np.testing.assert_array_equal(kept.label_map == 1, own_object)
    assert set(np.unique(kept.label_map)) == {0, 1}


def test_postprocess_drops_too_small_and_too_large_foregrounds():
    image = np.zeros((50, 50, 3), np.uint8)
    tiny = np.zeros((50, 50), bool)
    tiny[0:2, 0:5] = True  # 0.4 %
    small = postprocess_prediction(image, _probs_from_mask(tiny, 1), (1,), grabcut=False)
    assert small.label_map is None and small.dropped == "foreground<1%"
    assert small.fg_fraction == pytest.approx(10 / 2500)

    huge = np.ones((50, 50), bool)
    huge[:5] = False  # 90 %
    large = postprocess_prediction(image, _probs_from_mask(huge, 1), (1,), grabcut=False)
    assert large.label_map is None and large.dropped == "foreground>80%"

    nothing = postprocess_prediction(image, _probs_from_mask(np.zeros((50, 50), bool), 1), (1,))
    assert nothing.dropped == "foreground<1%" and nothing.grabcut_fallback

    kept = postprocess_prediction(image, _probs_from_mask(_square(50, 10, 30), 1), (1,),
                                  grabcut=False)
    assert kept.dropped is None and kept.label_map is not None


def test_postprocess_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="match"):
        postprocess_prediction(np.zeros((10, 10, 3), np.uint8), np.ones((2, 5, 5)), (1,))
