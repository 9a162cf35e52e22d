"""The mask stage: failures recorded, resumable, byte-identical across resumes and workers."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from c2f.data.datasets import LabelledDataset, ground_truth
from c2f.data.io import file_identity, read_mask, write_label_png, write_mask_png
from c2f.data.layouts import load_images_masks
from c2f.masks.config import MaskConfig
from c2f.masks.stage import MaskStageResult, mask_quality, run_mask_stage

N_PER_CLASS = 3  # 9 demo images (96 px), one made multi-label, plus one corrupt file
MULTI_KEY = "square/square_002"


def _build(root: Path) -> LabelledDataset:
    dataset = load_images_masks(root)
    samples = [dataclasses.replace(s, labels=(1, 2), mask=None) if s.key == MULTI_KEY else s
               for s in dataset.samples]
    return dataclasses.replace(dataset, samples=samples)


@pytest.fixture(scope="module")
def data_root(demo_data, tmp_path_factory) -> Path:
    """A private copy of a few demo images (tests may modify it) plus a corrupt JPEG."""
    root = tmp_path_factory.mktemp("stage") / "data"
    for sub in ("images", "masks"):
        for cls_dir in sorted((demo_data / sub).iterdir()):
            for path in sorted(cls_dir.iterdir())[:N_PER_CLASS]:
                target = root / sub / cls_dir.name / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    (root / "images" / "disc" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


@pytest.fixture(scope="module")
def dataset(data_root) -> LabelledDataset:
    return _build(data_root)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> MaskStageResult:
    """One unbroken, single-process run: what every other run must reproduce byte for byte."""
    return run_mask_stage(dataset, tmp_path_factory.mktemp("ref"), progress=False)


def _outputs(out_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out_dir)): p.read_bytes()
            for stage in ("coarse", "refined", "labels")
            for p in sorted((out_dir / stage).rglob("*.png"))}


def _journal(out_dir: Path) -> Path:
    (journal,) = out_dir.glob("manifest-*.jsonl")
    return journal


def test_corrupt_image_is_recorded_and_the_rest_labelled(dataset, reference):
    assert [key for key, _ in reference.failed] == ["disc/broken"]
    assert "cannot read image" in reference.failed[0][1]
    keys = {s.key for s in dataset.samples} - {"disc/broken"}
    dropped = {d["key"] for d in reference.summary["dropped"]}
    assert set(reference.label_paths) == keys - dropped
    assert len(reference.label_paths) >= 7
    for sample in dataset.samples:
        if sample.key in reference.label_paths:
            values = set(np.unique(read_mask(reference.label_paths[sample.key])))
            allowed = {0, 255} if sample.key == MULTI_KEY else {0, sample.labels[0]}
            assert values <= allowed and len(values) == 2
            assert (reference.out_dir / "coarse" / f"{sample.key}.png").is_file()
            assert (reference.out_dir / "refined" / f"{sample.key}.png").is_file()


def test_summary_json_fields(dataset, reference):
    summary = json.loads((reference.out_dir / "summary.json").read_text())
    assert summary == reference.summary
    counts = summary["counts"]
    assert counts["total"] == len(dataset) == 10
    assert counts["done"] == 9 and counts["skipped_cached"] == 0 and counts["failed"] == 1
    assert counts["labelled"] + counts["dropped"] == 9 and counts["multi_label_ignored"] == 1
    assert summary["failed"][0]["key"] == "disc/broken"
    assert set(summary["grabcut_fallbacks"]) == {"count", "reasons"}
    assert {"coarse", "grabcut", "crf", "total"} <= set(summary["mean_seconds"])
    assert summary["mean_seconds"]["grabcut"] > 0 and summary["mean_seconds"]["crf"] == 0
    assert summary["settings"]["generator"] == "saliency" and summary["settings"]["grabcut"]


def test_rerun_skips_cached_images_without_rewriting(reference, dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference.out_dir, out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    again = run_mask_stage(dataset, out, progress=False)
    assert again.summary["counts"]["skipped_cached"] == 9  # the corrupt image is retried
    assert again.summary["counts"]["done"] == 0 and again.summary["counts"]["failed"] == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before
    assert set(again.label_paths) == set(reference.label_paths)


def test_resume_after_a_partial_run_is_byte_identical(reference, dataset, tmp_path):
    first_half = dataset.subset([s.key for s in dataset.samples if s.key != "disc/broken"][:4])
    run_mask_stage(first_half, tmp_path, progress=False)
    resumed = run_mask_stage(dataset, tmp_path, progress=False)
    assert resumed.summary["counts"]["skipped_cached"] == 4
    assert _outputs(tmp_path) == _outputs(reference.out_dir)


@pytest.mark.slow  # kills a subprocess mid-stage
def test_killed_run_resumes_byte_identical(reference, dataset, tmp_path):
    """SIGKILL a real run mid-way (plus a torn journal line), then resume it."""
    pickled = tmp_path / "dataset.pkl"
    pickled.write_bytes(pickle.dumps(dataset))
    out = tmp_path / "out"
    script = (
        "import pickle, sys, time\n"
        "from c2f.masks.generators import SaliencyGenerator\n"
        "from c2f.masks.stage import run_mask_stage\n"
        "class Slow(SaliencyGenerator):  # same name and settings: same cache as 'saliency'\n"
        "    def __call__(self, image, sample):\n"
        "        time.sleep(0.3)\n"
        "        return super().__call__(image, sample)\n"
        "dataset = pickle.load(open(sys.argv[1], 'rb'))\n"
        "run_mask_stage(dataset, sys.argv[2], generator=Slow(), progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(pickled), str(out)])
    try:
        deadline = time.monotonic() + 60
        lines = 0
        while lines < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            journals = list(out.glob("manifest-*.jsonl")) if out.exists() else []
            lines = journals[0].read_text().count("\n") if journals else 0
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    journal = _journal(out)
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    assert 3 <= len(records) < len(dataset)
    with journal.open("a") as handle:
        handle.write('{"key": "triangle/triangle_000", "sta')  # died mid-write

    resumed = run_mask_stage(dataset, out, progress=False)
    finished = sum(r["status"] != "failed" for r in records)
    assert resumed.summary["counts"]["skipped_cached"] == finished
    assert _outputs(out) == _outputs(reference.out_dir)
    assert run_mask_stage(dataset, out, progress=False).summary["counts"]["done"] == 0


def test_two_workers_give_identical_outputs(reference, dataset, tmp_path):
    result = run_mask_stage(dataset, tmp_path, MaskConfig(workers=2), progress=False)
    assert result.failed == reference.failed
    assert _outputs(tmp_path) == _outputs(reference.out_dir)


def test_sharded_runs_merge_into_the_single_process_result(reference, dataset, tmp_path):
    """Two shards (as two DDP ranks run them) write their own journals into one folder."""
    (tmp_path / "manifest-0123456789abcdef.rank1-of-2.jsonl").write_text("{}\n")  # other settings
    first = run_mask_stage(dataset, tmp_path, shard=(0, 2), progress=False)
    assert not (tmp_path / "manifest-0123456789abcdef.rank1-of-2.jsonl").exists()
    shard_0 = {s.key for s in dataset.samples[0::2]}
    assert set(first.label_paths) == set(reference.label_paths) & shard_0
    assert first.summary["counts"]["done"] + first.summary["counts"]["failed"] == len(shard_0)
    merged = run_mask_stage(dataset, tmp_path, shard=(1, 2), progress=False)
    hash_ = reference.summary["settings_hash"]
    assert sorted(p.name for p in tmp_path.glob("manifest-*.jsonl")) == [
        f"manifest-{hash_}.rank0-of-2.jsonl", f"manifest-{hash_}.rank1-of-2.jsonl"]  # rank 1 kept rank 0's
    assert set(merged.label_paths) == set(reference.label_paths) and merged.failed == reference.failed
    assert merged.summary["counts"]["skipped_cached"] == len(shard_0) - 1  # all of shard 0 but the corrupt image
    assert _outputs(tmp_path) == _outputs(reference.out_dir)
    # A single-process rerun reads both shards' journals: nothing is redone.
    again = run_mask_stage(dataset, tmp_path, progress=False)
    assert again.summary["counts"]["done"] == 0 and again.summary["counts"]["skipped_cached"] == 9
    assert set(again.label_paths) == set(reference.label_paths)
    with pytest.raises(ValueError, match="shard"):
        run_mask_stage(dataset, tmp_path, shard=(2, 2), progress=False)


def test_changed_settings_or_inputs_are_recomputed(data_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    dataset = _build(root)
    out = tmp_path / "out"
    run_mask_stage(dataset, out, MaskConfig(grabcut=False), progress=False)
    old_journal = _journal(out)

    other = run_mask_stage(dataset, out, MaskConfig(grabcut=False, ignore_band=2), progress=False)
    assert other.summary["counts"]["skipped_cached"] == 0
    assert not old_journal.exists()  # stale journal of the overwritten masks is gone
    label = read_mask(other.label_paths["disc/disc_000"])
    assert 255 in label  # the ignore band made it to the label maps

    image = root / "images" / "disc" / "disc_000.jpg"
    shutil.copy2(root / "images" / "disc" / "disc_001.jpg", image)
    changed = run_mask_stage(dataset, out, MaskConfig(grabcut=False, ignore_band=2), progress=False)
    assert changed.summary["counts"]["done"] == 1
    assert changed.summary["counts"]["skipped_cached"] == 8

    (root / "images" / "disc" / "disc_001.jpg").write_bytes(b"no longer an image")
    broken = run_mask_stage(dataset, out, MaskConfig(grabcut=False, ignore_band=2), progress=False)
    assert "disc/disc_001" in dict(broken.failed)
    assert not list(out.rglob("disc_001.png"))  # stale masks of the old image are removed


def test_generator_by_name_with_options_and_unsafe_keys(dataset, tmp_path):
    box = MaskConfig(generator="box", generator_options={"fraction": 0.5}, grabcut=False)
    result = run_mask_stage(dataset.subset(["disc/disc_000"]), tmp_path, box, progress=False)
    assert result.summary["settings"]["generator_settings"] == {"fraction": 0.5}
    mask = read_mask(tmp_path / "coarse" / "disc" / "disc_000.png") > 0
    assert mask.mean() == pytest.approx(0.25, abs=0.03)
    unsafe = dataclasses.replace(dataset, samples=[
        dataclasses.replace(dataset.samples[0], key="../escape")])
    with pytest.raises(ValueError, match="output path"):
        run_mask_stage(unsafe, tmp_path / "x", progress=False)


def test_mask_quality_scores_perfect_outputs_as_one(dataset, tmp_path):
    scored = [s for s in dataset.samples if s.mask is not None]
    for sample in scored:
        gt = ground_truth(sample, dataset)
        write_label_png(tmp_path / "labels" / f"{sample.key}.png", gt)
        write_mask_png(tmp_path / "refined" / f"{sample.key}.png", gt > 0)
    for stage in ("labels", "refined"):
        quality = mask_quality(dataset, tmp_path, stage)
        assert quality["images"] == len(scored) and quality["missing"] == 0
        assert quality["miou"] == pytest.approx(1.0) and quality["fg_jaccard"] == pytest.approx(1.0)
    quality = mask_quality(dataset, tmp_path, "coarse")
    assert quality["images"] == 0 and quality["missing"] == len(scored)


def test_mask_quality_of_a_real_run(dataset, reference):
    coarse = mask_quality(dataset, reference, "coarse")
    labels = mask_quality(dataset, reference, "labels")
    assert 0.3 < coarse["fg_jaccard"] <= 1.0 and 0.3 < labels["miou"] <= 1.0
    assert set(labels["iou_per_class"]) == set(dataset.class_names)
    with pytest.raises(ValueError, match="stage"):
        mask_quality(dataset, reference, "final")



def test_touched_inputs_with_the_same_content_are_reused(data_root, tmp_path, monkeypatch):
    """A copied or restored data folder has new mtimes but the same bytes: nothing is redone."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    out = tmp_path / "out"
    run_mask_stage(_build(root), out, MaskConfig(grabcut=False), progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}

    later = time.time() + 3600
    for image in (root / "images").rglob("*.*"):
        os.utime(image, (later, later))
    edited = root / "images" / "disc" / "disc_002.jpg"
    data = bytearray(edited.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, other content
    edited.write_bytes(bytes(data))

    again = run_mask_stage(_build(root), out, MaskConfig(grabcut=False), progress=False)
    counts = again.summary["counts"]
    assert counts["skipped_cached"] == 8  # all but the edited image and the unreadable one
    assert counts["done"] + counts["failed"] == 2
    assert {p: t for p, t in before.items() if "disc_002" not in p.name} == \
        {p: p.stat().st_mtime_ns for p in before if "disc_002" not in p.name}

    latest = {}
    for line in _journal(out).read_text().splitlines():
        record = json.loads(line)
        latest[record["key"]] = record
    sample_paths = {s.key: s.image for s in _build(root).samples}
    for key, record in latest.items():  # reused records now carry the new mtimes
        assert record["input"]["image"] == file_identity(sample_paths[key])

    def must_not_run(*args):
        raise AssertionError("content compared although the journal has the current mtimes")

    monkeypatch.setattr("c2f.masks.stage._same_content", must_not_run)
    third = run_mask_stage(_build(root), out, MaskConfig(grabcut=False), progress=False)
    assert third.summary["counts"]["skipped_cached"] == 10 - third.summary["counts"]["failed"]


def test_sharded_runs_reuse_touched_inputs_each_recording_its_own(data_root, tmp_path, monkeypatch):
    """After a touch, two shards each reuse every cached image and refresh only their own records."""
    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    out = tmp_path / "out"
    run_mask_stage(_build(root), out, MaskConfig(grabcut=False), progress=False)
    later = time.time() + 3600
    for image in (root / "images").rglob("*.*"):
        os.utime(image, (later, later))

    dataset = _build(root)
    first = run_mask_stage(dataset, out, MaskConfig(grabcut=False), shard=(0, 2), progress=False)
    merged = run_mask_stage(dataset, out, MaskConfig(grabcut=False), shard=(1, 2), progress=False)
    for result in (first, merged):
        assert result.summary["counts"]["done"] == 0 and result.summary["counts"]["skipped_cached"] == 9
    for rank in (0, 1):
        (journal,) = out.glob(f"manifest-*.rank{rank}-of-2.jsonl")
        keys = {json.loads(line)["key"] for line in journal.read_text().splitlines()}
        assert keys == {s.key for s in dataset.samples[rank::2]}  # its own images (the corrupt one: failed)

    def must_not_run(*args):
        raise AssertionError("content compared although the journals have the current mtimes")

    monkeypatch.setattr("c2f.masks.stage._same_content", must_not_run)
    assert run_mask_stage(dataset, out, MaskConfig(grabcut=False), progress=False).summary["counts"]["skipped_cached"] == 9
