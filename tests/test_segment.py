"""`c2f segment`: nested folders, odd sizes, bad files, every output format read back, resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
from click.testing import CliRunner
from PIL import Image

from c2f.cli.main import cli
from c2f.data.io import read_image, read_mask
from c2f.inference import Engine


def _make_tree(root, demo_data):
    images = sorted((demo_data / "images").rglob("*.jpg"))
    (root / "a" / "b").mkdir(parents=True)
    shutil.copy(images[0], root / "top.jpg")
    shutil.copy(images[1], root / "a" / "one.jpg")
    # An odd size, gray, and a 16-bit PNG.
    odd = read_image(images[2])[:77, :51]
    Image.fromarray(odd).save(root / "a" / "b" / "odd.png")
    Image.fromarray(odd[:, :, 0]).save(root / "a" / "gray.png")
    Image.fromarray((odd[:, :, 1].astype(np.uint16) * 257)).save(root / "a" / "b" / "deep16.png")
    (root / "a" / "corrupt.jpg").write_bytes(images[3].read_bytes()[:300])
    (root / "notes.txt").write_text("not an image")
    return {"top.jpg", "a/one.jpg", "a/b/odd.png", "a/gray.png", "a/b/deep16.png"}


def test_segment_folder_all_formats_and_resume(tmp_path, demo_data, semantic_onnx) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    good = _make_tree(src, demo_data)
    args = ["segment", str(src), "-o", str(out), "--model", str(semantic_onnx), "--no-progress",
            "--format", "label", "--format", "mask", "--format", "cutout", "--format", "overlay"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(good)
    assert {f["path"] for f in report["failed"]} == {"a/corrupt.jpg", "notes.txt"}
    assert all(f["reason"] for f in report["failed"])

    engine = Engine.open(semantic_onnx)
    for rel in good:
        image = read_image(src / rel)
        stem = (out / rel).with_suffix("")
        label_img = Image.open(f"{stem}.png")
        assert label_img.mode == "P"
        label = np.asarray(label_img)
        assert label.shape == image.shape[:2]
        assert np.array_equal(label, engine.segment([image])[0].label_map)
        mask = read_mask(f"{stem}_mask.png")
        assert np.array_equal(mask > 0, label > 0) and set(np.unique(mask)) <= {0, 255}
        rgba = np.asarray(Image.open(f"{stem}_cutout.png"))
        assert rgba.shape == (*image.shape[:2], 4) and np.array_equal(rgba[..., 3] > 0, label > 0)
        assert np.array_equal(rgba[..., :3], image)
        assert read_image(f"{stem}_overlay.png").shape == image.shape
    lines = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert {l["path"] for l in lines} == good
    assert all(abs(sum(l["shares"].values()) - 1) < 1e-3 and "model_s" in l["timings"] for l in lines)

    # A second run finds everything done and does no work.
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 0 and report["skipped_already_done"] == len(good)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(good)


def test_include_exclude_globs(tmp_path, demo_data, semantic_onnx) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _make_tree(src, demo_data)
    result = CliRunner().invoke(cli, ["segment", str(src), "-o", str(out), "--model", str(semantic_onnx),
                                      "--no-progress", "--include", "*.png", "--exclude", "a/b/*"])
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a/gray.png"]


def test_every_command_has_help() -> None:
    for name in ("demo", "masks", "train", "evaluate", "export", "segment", "serve"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, name
