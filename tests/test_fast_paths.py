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

    from c2f.refine import grabcut as grabcut_module

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


def test_mask_stage_relabelling_and_inference_share_the_grabcut_defaults():
    """Working size and iterations: one default each, in c2f.refine.grabcut; the core differs by input."""
    import inspect

    from c2f.masks.config import MaskConfig
    from c2f.refine import grabcut as grabcut_module
    from c2f.refine.labels import postprocess_prediction
    from c2f.training import TrainConfig
    from c2f.training.relabel import relabel

    for field, param, constant in (("grabcut_max_side", "max_side", grabcut_module.GRABCUT_MAX_SIDE),
                                   ("grabcut_iterations", "iterations", grabcut_module.GRABCUT_ITERATIONS)):
        assert getattr(MaskConfig(), field) == getattr(TrainConfig().masks, field) == constant
        assert inspect.signature(relabel).parameters[field].default == constant
        assert inspect.signature(postprocess_prediction).parameters[field].default == constant
        assert inspect.signature(grabcut_module.grabcut_refine).parameters[param].default == constant
    # Coarse masks get the larger core; predictions (relabelling, label-aware inference) GrabCut's own.
    assert MaskConfig().grabcut_core_erosion == grabcut_module.COARSE_CORE_EROSION
    assert inspect.signature(postprocess_prediction).parameters["grabcut_core_erosion"].default \
        == inspect.signature(grabcut_module.grabcut_refine).parameters["core_erosion"].default \
        == grabcut_module.GRABCUT_CORE_EROSION
    assert "grabcut_core_erosion" not in inspect.signature(relabel).parameters


def _sequential_reference(engine: Engine, src, out, formats, crf: bool, labels) -> None:
    """The folder run without any overlap: read a chunk, segment it, write it, in order."""
    from c2f.inference.folder import load_image, output_paths, write_outputs

    paths = sorted(p for p in src.rglob("*.jpg"))
    for start in range(0, len(paths), engine.batch_size):
        chunk = paths[start : start + engine.batch_size]
        loaded = [(p.relative_to(src).as_posix(), *load_image(p)) for p in chunk]
        own = [engine.class_indices(labels[rel]) for rel, _, _ in loaded] if labels else None
        predictions = engine.segment([image for _, image, _ in loaded], crf=crf, labels=own)
        for i, ((rel, image, read_s), prediction) in enumerate(zip(loaded, predictions)):
            write_outputs(targets=output_paths(out, rel, formats), out_dir=out, rel=rel, image=image, read_s=read_s,
                          label_map=prediction.label_map, shares=prediction.class_shares(engine.info.class_names),
                          timings=prediction.timings, class_names=engine.info.class_names,
                          labels=own[i] if own else None)


def test_pipelined_folder_writes_what_a_sequential_run_writes(tmp_path, demo_data, semantic_onnx):
    """Where the fast path does not apply (labels, CRF) outputs are byte-identical, in input order."""
    import json
    import shutil

    from c2f.inference.folder import segment_folder
    from c2f.inference.image_labels import folder_labels

    src = tmp_path / "in"
    shutil.copytree(demo_data / "images", src)
    rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.jpg"))
    labels = folder_labels(rels)
    formats = ("label", "mask", "overlay")
    engine = Engine.open(semantic_onnx, device="cpu", batch_size=4)
    for crf, own in ((False, labels), (True, None)):
        reference, piped = tmp_path / f"ref-{crf}", tmp_path / f"out-{crf}"
        _sequential_reference(engine, src, reference, formats, crf, own)
        report = segment_folder(engine, src, piped, formats, crf=crf, progress=False, workers=3, labels=own)
        assert report.done == rels and not report.failed
        written = sorted(p.relative_to(reference) for p in reference.rglob("*.png"))
        assert written and written == sorted(p.relative_to(piped) for p in piped.rglob("*.png"))
        for rel in written:
            assert (reference / rel).read_bytes() == (piped / rel).read_bytes(), rel
        records = [json.loads(line)["path"] for line in (piped / "results.jsonl").read_text().splitlines()]
        assert records == rels


def test_pipelined_folder_fast_path_matches_the_probabilities(tmp_path, demo_data, semantic_onnx):
    """Without labels or refinement the label PNGs hold the argmax of the probabilities (ties aside)."""
    import shutil

    from c2f.data.io import read_mask
    from c2f.inference.folder import segment_folder

    src = tmp_path / "in"
    shutil.copytree(demo_data / "images", src)
    engine = Engine.open(semantic_onnx, device="cpu", batch_size=3)
    segment_folder(engine, src, tmp_path / "out", ("label",), progress=False, workers=2)
    for path in sorted(src.rglob("*.jpg")):
        image = read_image(path)
        probs, _ = next(iter(engine.probabilities([image])))
        written = read_mask(tmp_path / "out" / path.relative_to(src).with_suffix(".png"))
        assert (written != probs.argmax(axis=0)).mean() <= MAX_DISAGREEING
