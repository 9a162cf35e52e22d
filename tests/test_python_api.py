"""The Python front door: lazy ``import c2f``, ``c2f.Segmenter``, ``c2f.segment`` and the aliases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import c2f


@pytest.fixture(scope="module")
def photo(demo_data) -> Path:
    return sorted((demo_data / "images" / "square").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def segmenter(semantic_onnx):
    return c2f.Segmenter(semantic_onnx)


def test_import_c2f_loads_no_heavy_dependency():
    code = ("import sys, c2f; c2f.__version__; dir(c2f); "
            "print(sorted({'torch', 'cv2', 'onnxruntime', 'bentoml'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_path_array_and_pil_image_give_the_engines_label_map(segmenter, semantic_onnx, photo):
    from PIL import Image

    from c2f.data.io import read_image
    from c2f.inference import Engine

    image = read_image(photo)
    expected = Engine.open(semantic_onnx).segment([image])[0].label_map
    with Image.open(photo) as pil:
        results = [segmenter(photo), segmenter(str(photo)), segmenter(image), segmenter(pil),
                   segmenter(photo.read_bytes())]
    for prediction in results:
        assert isinstance(prediction, c2f.Prediction)
        np.testing.assert_array_equal(prediction.label_map, expected)
        assert prediction.probs.shape == (len(segmenter.class_names), *image.shape[:2])
    many = segmenter.segment_many([photo, image])
    assert [p.label_map.tobytes() for p in many] == [expected.tobytes()] * 2


def test_checkpoint_segmenter_matches_its_engine(semantic_checkpoint, photo):
    from c2f.data.io import read_image
    from c2f.inference import Engine

    expected = Engine.open(semantic_checkpoint, device="cpu").segment([read_image(photo)])[0].label_map
    np.testing.assert_array_equal(c2f.Segmenter(semantic_checkpoint, device="cpu")(photo).label_map, expected)


def test_segmenter_describes_its_model(segmenter, semantic_onnx):
    assert segmenter.class_names == ["background", "disc", "square", "triangle"]
    assert segmenter.task == "semantic"
    text = repr(segmenter)
    assert text.startswith("Segmenter(") and "semantic.onnx" in text and "'triangle'" in text


def test_classes_restrict_the_label_map(segmenter, photo):
    free = segmenter(photo).label_map
    present = set(np.unique(free).tolist()) - {0}
    assert present, "the untrained model must paint some class, or the restriction below proves nothing"
    # A class such that the unrestricted map holds another foreground class outside it.
    chosen = next(c for c in (1, 2, 3) if present - {c})
    name = segmenter.class_names[chosen]
    assert present - {chosen}, "the unrestricted map must hold a class outside the chosen one"
    for classes in (name, [name], [chosen], [name.upper()]):
        restricted = segmenter(photo, classes=classes).label_map
        assert set(np.unique(restricted).tolist()) <= {0, chosen}
    # segment_many: one flat list for every image, or one entry per image.
    shared = segmenter.segment_many([photo, photo], classes=[name])
    per_image = segmenter.segment_many([photo, photo], classes=[[name], None])
    for prediction in shared + per_image[:1]:
        assert set(np.unique(prediction.label_map).tolist()) <= {0, chosen}
    np.testing.assert_array_equal(per_image[1].label_map, free)
    with pytest.raises(ValueError, match="2 images"):
        segmenter.segment_many([photo, photo], classes=[[name]])


def test_unknown_class_name_raises_naming_the_valid_ones(segmenter, photo):
    with pytest.raises(ValueError, match="zebra.*disc, square, triangle"):
        segmenter(photo, classes=["zebra"])
    with pytest.raises(ValueError, match="zebra.*disc, square, triangle"):
        # checked before any image is read: the missing file is never reached
        segmenter.segment_many([photo, photo.with_name("missing.jpg")], classes=[["disc"], ["zebra"]])


def test_bad_inputs_are_refused(segmenter):
    with pytest.raises(ValueError, match="uint8"):
        segmenter(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TypeError, match="segment_many"):
        segmenter([np.zeros((8, 8, 3), np.uint8)])


def test_segment_reuses_one_cached_segmenter(semantic_onnx, photo, monkeypatch):
    from c2f import api
    from c2f.inference import Engine

    monkeypatch.setattr(api, "_CACHE", {})
    opened = []
    original = Engine.open.__func__
    monkeypatch.setattr(Engine, "open", classmethod(lambda cls, *a, **k: opened.append(a) or original(cls, *a, **k)))
    first = c2f.segment(photo, model=semantic_onnx)
    second = c2f.segment(str(photo), model=str(semantic_onnx), classes=["disc"])
    assert len(opened) == 1
    assert api.segmenter_for(semantic_onnx) is api.segmenter_for(str(semantic_onnx))
    assert len(opened) == 1
    np.testing.assert_array_equal(first.label_map, api.segmenter_for(semantic_onnx)(photo).label_map)
    assert set(np.unique(second.label_map).tolist()) <= {0, 1}


def test_aliases_are_the_real_functions():
    from c2f.data.datasets import split
    from c2f.data.layouts import load_dataset
    from c2f.export.onnx_export import export_onnx
    from c2f.masks.stage import run_mask_stage
    from c2f.training import TrainConfig, train_recursive
    from c2f.evaluation import evaluate_engine

    assert c2f.TrainConfig is TrainConfig
    assert c2f.train is train_recursive
    assert c2f.make_masks is run_mask_stage
    assert c2f.evaluate is evaluate_engine
    assert c2f.export_onnx is export_onnx
    assert c2f.load_dataset is load_dataset
    assert c2f.split is split
    for name in c2f.__all__:
        assert getattr(c2f, name) is not None
        assert name in dir(c2f)
    from c2f import Segmenter, segment  # PEP 562 from-imports

    assert Segmenter is c2f.api.Segmenter and segment is c2f.api.segment


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'segmenter'"):
        c2f.segmenter  # noqa: B018
    assert not hasattr(c2f, "nothing_here")


def test_segment_folder_writes_what_c2f_segment_writes_and_resumes(segmenter, semantic_onnx, demo_data, tmp_path):
    from click.testing import CliRunner

    from c2f.cli.main import cli

    src, py, cli_out = demo_data / "images", tmp_path / "py", tmp_path / "cli"
    report = segmenter.segment_folder(src, py, formats=["label", "mask"], labels="folders", progress=False)
    result = CliRunner().invoke(cli, ["segment", str(src), "-o", str(cli_out), "--model", str(semantic_onnx),
                                      "--no-progress", "--format", "label", "--format", "mask", "--labels-from", "folders"])
    assert result.exit_code == 0, result.output
    assert len(report.done) == len(list(src.rglob("*.jpg"))) and not report.failed
    pngs = sorted(p.relative_to(cli_out) for p in cli_out.rglob("*.png"))
    assert pngs == sorted(p.relative_to(py) for p in py.rglob("*.png")) and len(pngs) == 2 * len(report.done)
    assert all((py / rel).read_bytes() == (cli_out / rel).read_bytes() for rel in pngs)

    again = segmenter.segment_folder(src, py, formats=["label", "mask"], labels="folders", progress=False)
    assert again.done == [] and len(again.skipped) == len(report.done)
    with pytest.raises(ValueError, match="unknown class"):
        segmenter.segment_folder(src, tmp_path / "bad", labels={"disc/disc_000.jpg": ["zebra"]}, progress=False)
    assert not list((tmp_path / "bad").rglob("*.png"))
    with pytest.raises(ValueError, match="no images in class folders"):
        segmenter.segment_folder(src / "disc", tmp_path / "flat", labels="folders", progress=False)
