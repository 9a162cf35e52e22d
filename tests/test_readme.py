"""The README's Python example runs as written, on the demo data and models.

Only names are swapped: the README's files and classes (``photos.onnx``, ``cat.jpg``, ``cat``) for the
test's demo model, images and shape classes. The first half (segmenting) is in the fast tier; the
second (the paper's steps: mask stage, two rounds of the CPU recipe, export, evaluation) is slow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SPLIT = "# The paper's steps"


def python_example() -> tuple[str, str]:
    """The README's "Use from Python" code block, as (segmenting part, pipeline part)."""
    section = README.read_text().split("## Use from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    segmenting, pipeline = code.split(SPLIT, 1)
    return segmenting, "import c2f\n" + SPLIT + pipeline


def swap(code: str, names: dict[str, str]) -> str:
    for old, new in names.items():
        code = code.replace(old, new)
    return code


def test_readme_segmenting_example_runs(demo_data, semantic_onnx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = sorted((demo_data / "images").rglob("*.jpg"))
    code = swap(python_example()[0], {
        '"photos.onnx"': repr(str(semantic_onnx)), '"cat.jpg"': repr(str(images[0])),
        '"photos/"': repr(str(demo_data / "images")),
        '"a.jpg"': repr(str(images[1])), '"b.jpg"': repr(str(images[2])),
        '"cat"': '"disc"', '"dog"': '"square"', '"person"': '"triangle"'})
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    seg = scope["seg"]
    restricted = seg(str(images[0]), classes=["disc"]).label_map
    assert set(restricted.ravel().tolist()) <= {0, seg.class_names.index("disc")}
    assert len(list((tmp_path / "masks").rglob("*_mask.png"))) == len(images)  # the folder example


@pytest.mark.slow
def test_readme_pipeline_example_runs(demo_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = swap(python_example()[1], {'"photos/"': repr(str(demo_data))})
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert (tmp_path / "photos.onnx").is_file()
    assert (tmp_path / "runs" / "photos" / "masks" / "summary.json").is_file()
    assert scope["run"].final_checkpoint.resolve() == tmp_path / "runs" / "photos" / "round_2" / "checkpoint.pt"
