"""Fast paths of inference: the label map from resized logits equals the argmax of the probabilities."""

from __future__ import annotations

import numpy as np

from c2f.data.io import read_image
from c2f.inference import Engine, argmax_resized, softmax_resized

# Softmax is monotonic, so only float ties between two classes' logits can make the maps differ.
MAX_DISAGREEING = 1e-4


def _demo_images(demo_data) -> list[np.ndarray]:
    return [read_image(path) for path in sorted((demo_data / "images").rglob("*.jpg"))[:6]]


def test_argmax_of_resized_logits_is_the_argmax_of_the_probabilities(demo_data, semantic_onnx):
    engine = Engine.open(semantic_onnx, device="cpu")
    images = _demo_images(demo_data)
    for image, (logits, _) in zip(images, engine.logits(images)):
        for height, width in (image.shape[:2], (375, 500), (31, 17)):
            fast = argmax_resized(logits, height, width)
            slow = softmax_resized(logits, height, width).argmax(axis=0)
            assert fast.shape == (height, width) and fast.dtype == np.uint8
            assert (fast != slow).mean() <= MAX_DISAGREEING


def test_unrefined_prediction_makes_probabilities_only_when_read(demo_data, semantic_onnx):
    engine = Engine.open(semantic_onnx, device="cpu")
    images = _demo_images(demo_data)
    for image, prediction in zip(images, engine.segment(images)):
        assert callable(prediction._probs)  # not made yet
        probs = prediction.probs
        assert probs.shape == (engine.info.num_classes, *image.shape[:2])
        assert np.allclose(probs.sum(axis=0), 1, atol=1e-4)
        assert (prediction.label_map != probs.argmax(axis=0)).mean() <= MAX_DISAGREEING


def test_grabcut_works_at_its_bounded_size_by_default(monkeypatch):
    """A 640x480 photo is cut at GRABCUT_MAX_SIDE on its longest side (None: at full size)."""
    import cv2

    from c2f.masks import grabcut as grabcut_module

    seen = []
    real = cv2.grabCut

    def spy(image, *args, **kwargs):
        seen.append(image.shape[:2])
        return real(image, *args, **kwargs)

    monkeypatch.setattr(grabcut_module.cv2, "grabCut", spy)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 80, (480, 640, 3), dtype=np.uint8)
    image[120:360, 160:480] += 150
    coarse = np.zeros((480, 640), bool)
    coarse[100:380, 140:500] = True
    result = grabcut_module.grabcut_refine(image, coarse)
    full = grabcut_module.grabcut_refine(image, coarse, max_side=None)
    side = grabcut_module.GRABCUT_MAX_SIDE
    assert seen == [(round(480 * side / 640), side), (480, 640)]
    assert result.mask.shape == full.mask.shape == (480, 640)
    assert (result.mask != full.mask).mean() < 0.02


def test_mask_stage_and_relabelling_default_to_the_bounded_grabcut():
    import inspect

    from c2f.masks.grabcut import GRABCUT_MAX_SIDE, grabcut_refine
    from c2f.masks.stage import run_mask_stage

    assert inspect.signature(run_mask_stage).parameters["grabcut_max_side"].default == GRABCUT_MAX_SIDE
    assert inspect.signature(grabcut_refine).parameters["max_side"].default == GRABCUT_MAX_SIDE
