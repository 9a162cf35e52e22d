"""Learned coarse generators (ufs, cam): fitting, caching, mask quality, class evidence, CLI."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from c2f.cli.main import cli
from c2f.data.datasets import LabelledDataset, Sample, ground_truth
from c2f.data.io import file_identity, read_image, read_mask, write_rgb
from c2f.data.layouts import load_images_masks
from c2f.data.synthetic import generate_demo_dataset
from c2f.masks.cam import CamGenerator
from c2f.masks.config import MaskConfig
from c2f.masks.generators import make_generator
from c2f.masks.stage import MaskStageResult, mask_quality, run_mask_stage
from c2f.masks.ufs import UfsGenerator

UFS_OPTIONS = {"epochs": 25, "generations": 2, "size": 96, "seed": 0}
CAM_OPTIONS = {"epochs": 75, "size": 160, "seed": 0}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The test machine's 2 cores are shared: multithreaded torch then waits more than it works."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def ufs_data(tmp_path_factory) -> LabelledDataset:
    root = generate_demo_dataset(tmp_path_factory.mktemp("ufs") / "data", n_per_class=8, size=96, seed=2)
    return load_images_masks(root)


@pytest.fixture(scope="module")
def ufs_run(ufs_data, tmp_path_factory) -> tuple[UfsGenerator, MaskStageResult]:
    generator = UfsGenerator(**UFS_OPTIONS)
    return generator, run_mask_stage(ufs_data, tmp_path_factory.mktemp("ufs_out"), generator=generator, progress=False)


def test_ufs_masks_beat_chance_and_approach_their_teacher(ufs_data, ufs_run):
    generator, _ = ufs_run
    student, teacher, chance = [], [], []
    for sample in ufs_data.samples:
        image = read_image(sample.image)
        truth = ground_truth(sample, ufs_data) > 0
        mask = generator(image, sample)
        assert mask.dtype == bool and mask.shape == truth.shape
        student.append(_iou(mask, truth))
        teacher.append(_iou(generator.teacher(image, sample), truth))
        chance.append(truth.mean())  # IoU of an all-foreground guess
    assert np.mean(student) > 4 * np.mean(chance)
    assert np.mean(student) > 0.75 * np.mean(teacher)


def _outputs(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes()
            for stage in ("coarse", "refined", "labels") for p in sorted((out_dir / stage).rglob("*.png"))}


def test_ufs_rerun_reuses_weights_and_masks(ufs_data, ufs_run, tmp_path):
    generator, first = ufs_run
    (weights,) = (first.out_dir / "generators" / "ufs").glob("*.pt")
    stamp = weights.stat().st_mtime_ns
    before = _outputs(first.out_dir)
    again = run_mask_stage(ufs_data, first.out_dir, generator=UfsGenerator(**UFS_OPTIONS), progress=False)
    assert weights.stat().st_mtime_ns == stamp  # loaded, not retrained
    assert again.summary["settings_hash"] == first.summary["settings_hash"]
    assert again.summary["counts"]["skipped_cached"] == len(ufs_data)
    assert again.summary["counts"]["done"] == 0
    assert _outputs(first.out_dir) == before
    # What a spawn worker gets: the weights path, the model reloaded lazily, the same masks.
    clone = pickle.loads(pickle.dumps(generator))
    assert clone._model is None
    sample = ufs_data.samples[0]
    image = read_image(sample.image)
    np.testing.assert_array_equal(clone(image, sample), generator(image, sample))
    # Other options -> another weights file and another cache.
    other = UfsGenerator(**{**UFS_OPTIONS, "epochs": 1, "generations": 1})
    other.fit(ufs_data, first.out_dir / "generators", progress=False)
    assert other.settings()["weights_sha256"] != generator.settings()["weights_sha256"]
    assert len(list((first.out_dir / "generators" / "ufs").glob("*.pt"))) == 2



def test_copied_data_folder_reuses_weights_and_masks(ufs_data, ufs_run, tmp_path):
    """Copies get new mtimes: the content digests still find the weights and the masks."""
    _, first = ufs_run
    data = tmp_path / "data"
    shutil.copytree(ufs_data.root, data, copy_function=shutil.copy)  # copy, not copy2: new mtimes
    out = tmp_path / "out"
    shutil.copytree(first.out_dir, out)
    weights = sorted((out / "generators" / "ufs").glob("*.pt"))
    aliases = len(list((out / "generators" / "ufs").glob("*.alias")))
    copied = load_images_masks(data)
    assert file_identity(copied.samples[0].image) != file_identity(ufs_data.samples[0].image)

    again = run_mask_stage(copied, out, generator=UfsGenerator(**UFS_OPTIONS), progress=False)
    assert sorted((out / "generators" / "ufs").glob("*.pt")) == weights  # nothing retrained
    assert again.summary["settings_hash"] == first.summary["settings_hash"]
    assert again.summary["counts"]["skipped_cached"] == len(ufs_data)
    assert _outputs(out) == _outputs(first.out_dir)
    assert len(list((out / "generators" / "ufs").glob("*.alias"))) == aliases + 1  # the copies' mtimes


def test_grabcut_improves_ufs_masks(ufs_data, ufs_run):
    _, result = ufs_run
    coarse = mask_quality(ufs_data, result, "coarse")["fg_jaccard"]
    refined = mask_quality(ufs_data, result, "refined")["fg_jaccard"]
    assert refined > coarse + 0.02


def test_learned_generators_need_fitting_and_a_weight_free_teacher():
    with pytest.raises(RuntimeError, match="not fitted"):
        make_generator("cam").settings()
    with pytest.raises(ValueError, match="weight-free"):
        make_generator("ufs", teacher="cam")


def _side_by_side(left: Sample, right: Sample, dataset: LabelledDataset, out: Path) -> tuple[Sample, np.ndarray]:
    """A two-label image (left object + right object) and its class map (0, left's, right's)."""
    a, b = read_image(left.image), read_image(right.image)
    height = min(a.shape[0], b.shape[0])
    truth = np.concatenate([ground_truth(left, dataset)[:height], ground_truth(right, dataset)[:height]], 1)
    write_rgb(out, np.concatenate([a[:height], b[:height]], 1))
    key = f"pairs/{out.stem}"
    return Sample(key, out, labels=(*left.labels, *right.labels)), truth


@pytest.fixture(scope="module")
def cam_run(tmp_path_factory) -> tuple[LabelledDataset, dict[str, np.ndarray], MaskStageResult]:
    """Two classes (disc, square) plus disc|square composites with both labels and no mask."""
    root = generate_demo_dataset(tmp_path_factory.mktemp("cam") / "data", n_per_class=20, size=96, seed=3,
                                 classes=("disc", "square"))
    dataset = load_images_masks(root)
    discs = [s for s in dataset.samples if s.labels == (1,)]
    squares = [s for s in dataset.samples if s.labels == (2,)]
    pairs, truths = [], {}
    for index, (disc, square) in enumerate(zip(discs[:6], squares[:6])):
        left, right = (disc, square) if index % 2 == 0 else (square, disc)
        sample, truth = _side_by_side(left, right, dataset, root / "pairs" / f"pair_{index}.jpg")
        pairs.append(sample)
        truths[sample.key] = truth
    dataset = dataclasses.replace(dataset, samples=[*dataset.samples, *pairs])
    result = run_mask_stage(dataset, tmp_path_factory.mktemp("cam_out"),
                            MaskConfig(generator="cam", generator_options=CAM_OPTIONS), progress=False)
    return dataset, truths, result


def test_cam_evidence_assigns_the_right_class_to_two_label_images(cam_run):
    dataset, truths, result = cam_run
    generator = make_generator("cam", **CAM_OPTIONS)
    generator.fit(dataset, result.out_dir / "generators", progress=False)  # cached: loads
    right, stage_right = [], []
    for sample in dataset.samples:
        if sample.key not in truths:
            continue
        truth = truths[sample.key]
        evidence = generator.class_evidence(read_image(sample.image), sample)
        assert evidence.shape == (2, *truth.shape)
        winner = np.asarray(sample.labels)[np.argmax(evidence, axis=0)]
        right.append((winner == truth)[truth > 0].mean())
        if sample.key in result.label_paths:  # the stage split the foreground the same way
            labels = read_mask(result.label_paths[sample.key])
            on_object = (truth > 0) & (labels != 0)
            assert set(np.unique(labels)) <= {0, 1, 2}
            stage_right.append((labels == truth)[on_object].mean())
    assert np.mean(right) > 0.72  # chance: 0.5; one training epoch gives 0.62
    assert stage_right and np.mean(stage_right) > 0.72
    assert result.summary["counts"]["multi_label_ignored"] == 0


def test_grabcut_improves_cam_masks(cam_run):
    dataset, _, result = cam_run
    coarse = mask_quality(dataset, result, "coarse")["fg_jaccard"]
    refined = mask_quality(dataset, result, "refined")["fg_jaccard"]
    assert refined > coarse + 0.02


def test_masks_cli_generator_options_and_quality_table(demo_data, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["masks", "--data", str(demo_data), "--out", str(out), "--generator", "box",
                                      "--generator-option", "fraction=0.6", "--crf", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "whole box" in result.output and "GrabCut+CRF" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["settings"]["generator_settings"] == {"fraction": 0.6}
    assert report["quality"]["refined_name"] == "GrabCut+CRF"
    assert {"box_baseline", "coarse", "refined", "labels"} <= set(report["quality"])
    # The whole-box baseline is the box generator at its default fraction, without GrabCut.
    assert report["quality"]["box_baseline"]["fg_jaccard"] > 0
    counts = report["summary"]["counts"]
    assert f"{counts['total']} images: {counts['done']} processed now, 0 reused" in result.output
    again = CliRunner().invoke(cli, ["masks", "--data", str(demo_data), "--out", str(out), "--generator", "box",
                                     "--generator-option", "fraction=0.6", "--crf", "--no-progress"])
    assert f"{counts['total']} images: 0 processed now, {counts['total']} reused" in again.output
    bad = CliRunner().invoke(cli, ["masks", "--data", str(demo_data), "--out", str(out),
                                   "--generator-option", "fraction"])
    assert bad.exit_code != 0 and "key=value" in bad.output
