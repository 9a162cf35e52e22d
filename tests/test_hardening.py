"""Bad data and resumed runs end to end: unreadable files are skipped and listed, never fatal; a resumed
run keeps its train/val split; a layout reports the class folders and images it leaves out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from c2f.cli.main import cli
from c2f.data import load_dataset, split

TINY = ["--rounds", "1", "--epochs", "1", "--batch-size", "4", "--lr", "0.01", "--resize", "64", "--crop", "48",
        "--no-progress", "--device", "cpu"]


def _c2f(*args: object) -> subprocess.CompletedProcess:
    """``c2f ARGS`` in a child process, as a user runs it (logging set up by the CLI itself)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "c2f.cli.main", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=900)


def _truncate(path: Path) -> Path:
    """Cut a file in half: the header still names the format, the decoder runs out of data."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _image(path: Path, value: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((24, 32, 3), value, np.uint8)
    pixels[6:18, 8:24] = 255 - value  # an object to find
    Image.fromarray(pixels).save(path)
    return path


# --- 1. unreadable images and ground-truth masks in training and evaluation ---


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, demo_data) -> tuple[Path, dict[str, str]]:
    """The demo set with an unreadable val image, val mask and train mask (of the 0.25 split, seed 0).

    Returns the folder and {corrupt image's path: split} for the three images that must be skipped.
    """
    root = tmp_path_factory.mktemp("bad") / "data"
    shutil.copytree(demo_data, root)
    train, val = split(load_dataset(root), 0.25, seed=0)
    val_image, val_mask, train_mask = val.samples[0], val.samples[1], train.samples[0]
    _truncate(val_image.image)
    _truncate(val_mask.mask)
    _truncate(train_mask.mask)
    return root, {str(val_image.image): "val", str(val_mask.image): "val", str(train_mask.image): "train"}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory, bad_data) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("runs") / "bad"
    return out, _c2f("train", "--data", bad_data[0], "--out", out, "--val-fraction", "0.25", *TINY)


def test_train_skips_and_lists_unreadable_images_and_masks_of_both_splits(bad_data, bad_run) -> None:
    out, proc = bad_run
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "val mIoU" in proc.stdout
    skipped = json.loads((out / "skipped_images.json").read_text())
    assert {entry["path"]: entry["split"] for entry in skipped} == bad_data[1]
    mask_reasons = [entry["reason"] for entry in skipped if "mask" in entry["reason"]]
    assert len(mask_reasons) == 2 and all("truncated" in reason for reason in mask_reasons)
    metrics = json.loads((out / "round_1" / "metrics.json").read_text())
    assert metrics["val"]["images"] == len(split(load_dataset(bad_data[0]), 0.25)[1]) - 2


def test_evaluate_skips_and_lists_unreadable_images_and_masks(tmp_path, bad_data, semantic_checkpoint) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(semantic_checkpoint), "--data", str(bad_data[0]),
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "semantic.json").read_text())
    assert metrics["skipped"] == 3 and metrics["images"] == len(load_dataset(bad_data[0])) - 3
    assert {entry["path"] for entry in metrics["skipped_images"]} == set(bad_data[1])
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped")]
    assert "3 " in warning and str(out / "semantic.json") in warning


# --- 2. --resume keeps the run's train/val split ---


@pytest.fixture(scope="module")
def split_run(tmp_path_factory, demo_data) -> Path:
    out = tmp_path_factory.mktemp("runs") / "split"
    proc = _c2f("train", "--data", demo_data, "--out", out, "--val-fraction", "0.25", *TINY)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _mask_stage_images(run: Path) -> int:
    return json.loads((run / "mask_stage" / "summary.json").read_text())["counts"]["total"]


@pytest.mark.slow  # trains a run and resumes it
def test_resume_without_the_split_options_keeps_the_stored_split(tmp_path, demo_data, split_run) -> None:
    run = shutil.copytree(split_run, tmp_path / "run")
    trained_on = _mask_stage_images(run)
    assert trained_on == len(split(load_dataset(demo_data), 0.25)[0])
    for same in ([], ["--val-fraction", "0.25"], ["--seed", "0"]):
        proc = _c2f("train", "--data", demo_data, "--out", run, "--resume", *TINY, *same)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "resuming with the run's split: --val-fraction 0.25 (seed 0)" in proc.stdout
        assert _mask_stage_images(run) == trained_on, same  # the val images never reached the mask stage


@pytest.mark.parametrize(("option", "value", "stored"), [
    ("--val-fraction", "0.5", "0.25"),
    ("--val-data", "DEMO", "none"),
    ("--seed", "3", "0"),
])
def test_resume_with_a_conflicting_split_option_is_refused(tmp_path, demo_data, split_run, option, value,
                                                            stored) -> None:
    run = shutil.copytree(split_run, tmp_path / "run")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    value = str(demo_data) if value == "DEMO" else value
    result = CliRunner().invoke(cli, ["train", "--data", str(demo_data), "--out", str(run), "--resume", *TINY,
                                      option, value])
    assert isinstance(result.exception, SystemExit) and result.exit_code != 0, result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert option in error and stored in error, error
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before  # refused before any work


# --- 3. and 4. what a layout leaves out: empty class folders, images where the layout does not look ---


def test_masks_warns_of_an_empty_class_folder(tmp_path) -> None:
    for index in range(2):
        _image(tmp_path / "data" / "cat" / f"c{index}.jpg")
        _image(tmp_path / "data" / "dog" / f"d{index}.jpg", 120)
    (tmp_path / "data" / "horse").mkdir()
    proc = _c2f("masks", "--data", tmp_path / "data", "--out", tmp_path / "out", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if "horse" in line]
    assert "WARNING" in warning and "no images" in warning
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["data_warnings"]
    assert len(notes) == 1 and "horse" in notes[0]


def test_masks_warns_of_images_the_detected_layout_ignores(tmp_path) -> None:
    _image(tmp_path / "data" / "cat" / "c.jpg")
    _image(tmp_path / "data" / "dog" / "d.jpg", 120)
    for index in range(6):  # loose images beside the class folders: no label, the layout never reads them
        _image(tmp_path / "data" / f"loose{index}.jpg", 40 * index)
    proc = _c2f("masks", "--data", tmp_path / "data", "--out", tmp_path / "out", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (warning,) = [line for line in proc.stderr.splitlines() if "ignores" in line]
    assert "WARNING" in warning and "6 of 8" in warning and "loose0.jpg" in warning
    notes = json.loads((tmp_path / "out" / "summary.json").read_text())["data_warnings"]
    assert len(notes) == 1 and "6 of 8" in notes[0]
