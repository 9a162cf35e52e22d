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
