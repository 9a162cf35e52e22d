"""The evaluation package: scoring saved models without training's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys


def test_evaluating_an_onnx_model_imports_no_torch(tmp_path, demo_data, semantic_onnx) -> None:
    out = tmp_path / "eval"
    code = (
        "import sys\n"
        "from c2f.cli.main import cli\n"
        f"cli(['evaluate', '--model', {str(semantic_onnx)!r}, '--data', {str(demo_data)!r}, '--out', {str(out)!r},"
        " '--no-progress'], standalone_mode=False)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
    assert json.loads((out / "semantic.json").read_text())["images"] > 0


def test_round_checkpoints_are_in_round_order(tmp_path) -> None:
    from c2f.evaluation import round_checkpoints

    for n in (10, 2, 1):
        (tmp_path / f"round_{n}").mkdir()
        (tmp_path / f"round_{n}" / "checkpoint.pt").touch()
    (tmp_path / "round_3").mkdir()  # a round without a checkpoint (killed run) is not scored
    assert [p.parent.name for p in round_checkpoints(tmp_path)] == ["round_1", "round_2", "round_10"]


def test_evaluate_run_without_rounds_says_so(tmp_path, demo_data) -> None:
    import pytest

    from c2f.data.layouts import load_dataset
    from c2f.evaluation import NoRoundsError, evaluate_run

    with pytest.raises(NoRoundsError, match="round_"):
        evaluate_run(tmp_path, load_dataset(demo_data, "auto"), tmp_path / "out")
