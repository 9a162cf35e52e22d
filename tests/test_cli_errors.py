"""Wrong values on the command line end in one-line errors naming the valid choices, never tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from c2f.cli.main import cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _one_line_error(result: Result, status: int) -> str:
    """The single ``Error:`` line of a command that stopped cleanly with ``status``."""
    assert isinstance(result.exception, SystemExit), result.exc_info  # a traceback is any other exception
    assert result.exit_code == status, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, [str(arg) for arg in args])


@pytest.mark.parametrize("command", ["masks", "train"])
def test_unknown_generator_names_the_generators(tmp_path, demo_data, command) -> None:
    error = _one_line_error(_run(command, "--data", demo_data, "--out", tmp_path / "out", "--generator", "salency"), 2)
    assert "'salency'" in error and "box, cam, folder, saliency, ufs" in error, error
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.parametrize("command", ["masks", "train", "evaluate"])
def test_unknown_layout_names_the_layouts(tmp_path, demo_data, semantic_onnx, command) -> None:
    extra = ["--model", semantic_onnx] if command == "evaluate" else ["--out", tmp_path / "out"]
    error = _one_line_error(_run(command, "--data", demo_data, "--layout", "clas-folder", *extra), 2)
    assert "'clas-folder'" in error and "'class-folder'" in error and "'images-masks'" in error, error


def test_layout_choices_are_the_registered_layouts() -> None:
    from c2f.cli.options import LAYOUT_NAMES
    from c2f.data.layouts import LAYOUTS

    assert LAYOUT_NAMES == tuple(LAYOUTS)


def test_cli_imports_no_torch_opencv_or_numpy() -> None:
    code = "import sys, c2f.cli.main; print(sorted({'torch', 'cv2', 'numpy'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_a_file_that_is_no_model_is_a_one_line_error(tmp_path, demo_data, command) -> None:
    import torch

    not_c2f = tmp_path / "weights.pt"
    torch.save({"state_dict": {}}, not_c2f)
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not a protobuf at all" * 10)
    for model, said in [(README, "is not an ONNX export (.onnx"), (not_c2f, "not a c2f checkpoint (no config"),
                        (garbage, "ONNX Runtime cannot load it")]:
        target = [demo_data / "images", "-o", tmp_path / "out"] if command == "segment" else ["--data", demo_data]
        error = _one_line_error(_run(command, *target, "--model", model), 2)
        assert str(model) in error and said in error and "'--model'" in error, error


def test_evaluate_on_data_with_other_classes_names_both(tmp_path, semantic_onnx) -> None:
    """A 4-class model on VOC-named data (21 classes): the message names the model's classes."""
    data = tmp_path / "voc_named"
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (data / "images" / name).mkdir(parents=True)
        (data / "masks" / name).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(data / "images" / name / "a.png")
        Image.fromarray(np.full((48, 48), 255, np.uint8)).save(data / "masks" / name / "a.png")
    error = _one_line_error(_run("evaluate", "--model", semantic_onnx, "--data", data, "--no-progress"), 1)
    assert "4 classes (background, disc, square, triangle)" in error and "the data has 21" in error, error
    assert "foreground view" not in error


@pytest.mark.parametrize("command,option", [("segment", "--workers"), ("masks", "--workers"),
                                            ("train", "--mask-workers")])
def test_zero_workers_is_refused(tmp_path, demo_data, semantic_onnx, command, option) -> None:
    if command == "segment":
        args = ["segment", demo_data / "images", "-o", tmp_path / "out", "--model", semantic_onnx]
    else:
        args = [command, "--data", demo_data, "--out", tmp_path / "out"]
    error = _one_line_error(_run(*args, option, "0"), 2)
    assert f"'{option}'" in error and "0 is not in the range x>=1" in error, error
    assert not (tmp_path / "out").exists()
