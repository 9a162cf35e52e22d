"""CRF and GrabCut at a bounded working resolution (``REFINE_MAX_PIXELS``).

Within the bound nothing changes (pixel for pixel, probabilities bit for bit); above it the
refinement runs on a downscaled copy and its masks are at least as good against the ground truth as
full-size refinement, while the arrays CRF and GrabCut see stay bounded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from c2f.data.io import read_image
from c2f.data.synthetic import DEMO_CLASSES
from c2f.inference import (
    CRF_ITERATIONS, CRF_MAX_PIXELS, REFINE_MAX_PIXELS, Engine, predict_from_logits, upsample_labels, working_size,
)
from c2f.inference.engine import label_map_from_probs
from c2f.refine.crf import dense_crf

CLASSES = ("background", "disc", "square", "triangle")  # conftest's checkpoint classes


def _demo(demo_data: Path, name: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """A demo image (RGB) and its ground-truth foreground."""
    image = read_image(demo_data / "images" / name / f"{name}_{index:03d}.jpg")
    mask = cv2.imread(str(demo_data / "masks" / name / f"{name}_{index:03d}.png"), cv2.IMREAD_GRAYSCALE) > 127
    return image, mask


def _upscaled(image: np.ndarray, mask: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape[0] * factor, image.shape[1] * factor
    big = cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC)
    return big, cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0


def _network_like_logits(mask: np.ndarray, class_id: int) -> np.ndarray:
    """Coarse 4-class logits as a network gives them: the truth at 12x12 (stride 8 of 96 px), blurred."""
    coarse = cv2.GaussianBlur(cv2.resize(mask.astype(np.float32), (12, 12), interpolation=cv2.INTER_AREA), (3, 3), 0)
    logits = np.zeros((len(CLASSES), 12, 12), np.float32)
    logits[class_id] = 6 * (coarse - 0.5)
    return logits


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _old_segment(engine: Engine, image: np.ndarray, crf: bool, grabcut: bool, own) -> tuple[np.ndarray, np.ndarray]:
    """Engine.segment's refinement as it was before the bound: everything at the image's size."""
    probs, _ = next(iter(engine.probabilities([image])))
    if crf:
        probs = dense_crf(image, probs)
    return label_map_from_probs(image, probs, own, grabcut), probs


# ----------------------------------------------------------------------------- the working size


@pytest.mark.parametrize("height,width", [(96, 96), (375, 500), (720, 1280), (1000, 1000)])
def test_working_size_keeps_images_within_the_bound(height, width):
    assert working_size(height, width) == (height, width)


@pytest.mark.parametrize("height,width", [(3000, 4000), (1001, 1000), (6000, 400), (20000, 1)])
def test_working_size_bounds_larger_images_and_keeps_their_shape(height, width):
    work_height, work_width = working_size(height, width)
    assert work_height * work_width <= REFINE_MAX_PIXELS
    assert work_height * work_width > 0.99 * REFINE_MAX_PIXELS or min(work_height, work_width) == 1
    assert abs(work_width / work_height - width / height) <= width / height / min(work_height, work_width)
    assert working_size(height, width, None) == (height, width)
    assert working_size(3000, 4000) == (866, 1154)


def test_upsample_labels_keeps_values_and_smooths_edges():
    label_map = np.zeros((20, 20), np.uint8)
    label_map[5:15, 5:15] = 2
    label_map[0, :] = 255
    big = upsample_labels(label_map, 80, 80)
    assert big.shape == (80, 80) and set(np.unique(big)) == {0, 2, 255}
    assert np.array_equal(upsample_labels(label_map, 20, 20), label_map)
    # A disc upsampled smoothly stays a disc: no staircase of 4-pixel steps along its edge.
    disc = np.zeros((50, 50), np.uint8)
    cv2.circle(disc, (25, 25), 15, 1, -1)
    up = upsample_labels(disc, 200, 200)
    truth = np.zeros((200, 200), np.uint8)
    cv2.circle(truth, (100, 100), 60, 1, -1)
    nearest = cv2.resize(disc, (200, 200), interpolation=cv2.INTER_NEAREST)
    assert (up != truth).sum() < (nearest != truth).sum()


# ----------------------------------------------------------------------------- within the bound: unchanged


@pytest.mark.parametrize("crf,grabcut,labels", [(True, False, None), (False, True, None), (True, True, None),
                                                (True, True, ("square",))])
def test_demo_images_refine_exactly_as_before(demo_data, semantic_onnx, crf, grabcut, labels):
    """Small images (and a VOC-sized one) give the same masks and probabilities as full-size refinement.

    The CRF's own bound and class pruning are off here (they are tested below): this is the promise
    that REFINE_MAX_PIXELS changes nothing within it.
    """
    full_crf = {"crf_max_pixels": None, "crf_prune_below": None}
    engine = Engine.open(semantic_onnx, device="cpu", **full_crf)
    unbounded = Engine.open(semantic_onnx, device="cpu", refine_max_pixels=None, **full_crf)
    images = [_demo(demo_data, name, 0)[0] for name in ("disc", "square", "triangle")]
    images.append(cv2.resize(images[0], (500, 375), interpolation=cv2.INTER_CUBIC))  # VOC's size
    own = None if labels is None else engine.class_indices(labels)
    entries = None if labels is None else [labels] * len(images)
    bounded = engine.segment(images, crf=crf, grabcut=grabcut, labels=entries)
    full = unbounded.segment(images, crf=crf, grabcut=grabcut, labels=entries)
    for image, mine, theirs in zip(images, bounded, full):
        old_map, old_probs = _old_segment(engine, image, crf, grabcut, own)
        assert mine.refined_size == image.shape[:2] == theirs.refined_size
        assert np.array_equal(mine.label_map, old_map) and np.array_equal(theirs.label_map, old_map)
        assert np.array_equal(mine.probs, old_probs)


# ----------------------------------------------------------------------------- above the bound


def _compare_on_upscaled_demo(demo_data, factor: int, max_pixels: int) -> None:
    """Per class: CRF + GrabCut bounded vs at full size, scored against the upscaled ground truth."""
    for name in ("disc", "square", "triangle"):
        image, mask = _demo(demo_data, name, 0)
        big, truth = _upscaled(image, mask, factor)
        assert big.shape[0] * big.shape[1] > max_pixels
        class_id = DEMO_CLASSES.index(name) + 1
        logits = _network_like_logits(mask, class_id)
        full_crf = {"crf_max_pixels": None, "crf_prune_below": None}  # the CRF's own bound is tested below
        bounded = predict_from_logits(big, logits, None, crf=True, grabcut=True, max_pixels=max_pixels, **full_crf)
        full = predict_from_logits(big, logits, None, crf=True, grabcut=True, max_pixels=None, **full_crf)
        plain = predict_from_logits(big, logits)
        assert bounded.refined_size == working_size(*big.shape[:2], max_pixels)
        assert bounded.refined_size[0] * bounded.refined_size[1] <= max_pixels
        assert full.refined_size == big.shape[:2] and plain.refined_size is None
        assert bounded.label_map.shape == big.shape[:2] and bounded.probs.shape == (len(CLASSES), *big.shape[:2])
        assert np.allclose(bounded.probs.sum(axis=0), 1, atol=1e-4)
        scores = {kind: _iou(result.label_map == class_id, truth)
                  for kind, result in (("bounded", bounded), ("full", full), ("plain", plain))}
        assert scores["bounded"] >= scores["full"] - 0.01, (name, scores)
        assert scores["bounded"] > scores["plain"], (name, scores)  # the refinement still refines


def test_upscaled_demo_images_refine_as_well_within_a_small_bound(demo_data):
    """8x demo images (about 0.6 MP) against a 150 000-pixel bound: the same ratio as 4 MP photos at 1 MP."""
    _compare_on_upscaled_demo(demo_data, factor=8, max_pixels=150_000)


@pytest.mark.slow
def test_upscaled_demo_images_refine_as_well_within_the_default_bound(demo_data):
    """16x demo images (about 2.4 MP) against REFINE_MAX_PIXELS itself (~45 s: full-size refinement is slow)."""
    _compare_on_upscaled_demo(demo_data, factor=16, max_pixels=REFINE_MAX_PIXELS)


def test_engine_refines_a_big_image_at_the_working_size(demo_data, semantic_onnx):
    engine = Engine.open(semantic_onnx, device="cpu")
    image = cv2.resize(_demo(demo_data, "disc", 0)[0], (1500, 1000), interpolation=cv2.INTER_CUBIC)  # 1.5 MP
    crf_only, both, grabcut_only, plain = (engine.segment([image], crf=crf, grabcut=grabcut)[0]
                                           for crf, grabcut in ((True, False), (True, True), (False, True),
                                                                (False, False)))
    work = working_size(1000, 1500)
    assert work[0] * work[1] <= REFINE_MAX_PIXELS < 1000 * 1500
    assert grabcut_only.refined_size == work and plain.refined_size is None
    assert crf_only.refined_size == both.refined_size == working_size(1000, 1500, CRF_MAX_PIXELS)
    for prediction in (crf_only, both, grabcut_only, plain):
        assert prediction.label_map.shape == (1000, 1500) and prediction.probs.shape == (4, 1000, 1500)
    assert {"model_s", "crf_s", "grabcut_s"} <= set(both.timings)


# ----------------------------------------------------------------------------- the CRF's own bound and pruning


def test_crf_runs_at_its_own_bound_with_kernels_scaled_to_it(demo_data, semantic_onnx, monkeypatch):
    """A VOC-sized photo is CRF-refined at CRF_MAX_PIXELS with CRF_ITERATIONS mean-field steps, the kernel
    widths scaled by the same factor; the engine's ``crf_iterations`` overrides the steps."""
    import c2f.refine.crf as crf_module

    seen = []
    real = crf_module.dense_crf

    def spy(image, probs, **kwargs):
        seen.append((image.shape[:2], probs.shape, kwargs))
        return real(image, probs, **kwargs)

    monkeypatch.setattr(crf_module, "dense_crf", spy)
    engine = Engine.open(semantic_onnx, device="cpu")
    image = cv2.resize(_demo(demo_data, "disc", 0)[0], (500, 375), interpolation=cv2.INTER_CUBIC)
    prediction = engine.segment([image], crf=True)[0]
    work = working_size(375, 500, CRF_MAX_PIXELS)
    assert prediction.refined_size == work and work[0] * work[1] <= CRF_MAX_PIXELS
    assert prediction.label_map.shape == (375, 500) and prediction.probs.shape == (4, 375, 500)
    assert np.allclose(prediction.probs.sum(axis=0), 1, atol=1e-4)
    (shape, probs_shape, kwargs), = seen
    scale = (work[0] * work[1] / (375 * 500)) ** 0.5
    assert shape == work and probs_shape[1:] == work
    assert kwargs["sxy_bilateral"] == pytest.approx(67 * scale) and kwargs["sxy_gauss"] == pytest.approx(3 * scale)
    assert kwargs["iterations"] == CRF_ITERATIONS
    Engine(engine.backend, crf_iterations=2).segment([image], crf=True)
    assert seen[-1][2]["iterations"] == 2


def test_crf_leaves_out_classes_absent_from_the_image():
    """Classes at or below the pruning threshold everywhere get no probability; the CRF sees the rest."""
    from c2f.inference import bounded_crf

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    probs = np.full((4, 40, 50), 0.01, np.float32)
    probs[1, :, :25] = 0.97
    probs[0] = 1 - probs[1:].sum(axis=0)
    out = bounded_crf(image, probs, prune_below=0.05)
    assert np.all(out[2:] == 0) and np.allclose(out.sum(axis=0), 1, atol=1e-4)
    assert (out.argmax(axis=0)[:, :20] == 1).all() and (out.argmax(axis=0)[:, 30:] == 0).all()
    kept_all = bounded_crf(image, probs, prune_below=None)
    assert np.all(kept_all[2:] > 0)
    only_background = bounded_crf(image, np.stack([np.ones((40, 50), np.float32)] + [np.zeros((40, 50), np.float32)] * 3))
    assert (only_background[0] == 1).all() and (only_background[1:] == 0).all()
