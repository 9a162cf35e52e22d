"""`c2f segment`: nested folders, odd sizes, bad files, every output format read back, resume."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
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
    assert result.exit_code == 1, result.output  # two files failed
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
    assert again.exit_code == 1  # the bad files fail again
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 0 and report["skipped_already_done"] == len(good)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(good)



def test_resume_redoes_images_made_with_another_model_option_or_file(
    tmp_path, demo_data, semantic_onnx, semantic_checkpoint
) -> None:
    """A rerun into the same folder skips only what it would make the same way; the rest is replaced."""
    src, out = tmp_path / "in", tmp_path / "out"
    good = _make_tree(src, demo_data)

    def run(*extra: str, model: Path = semantic_onnx) -> dict:
        CliRunner().invoke(cli, ["segment", str(src), "-o", str(out), "--model", str(model), "--no-progress", *extra])
        return json.loads((out / "report.json").read_text())

    assert run()["done"] == len(good)
    same_bytes = tmp_path / "copy.onnx"
    shutil.copy(semantic_onnx, same_bytes)
    assert run(model=same_bytes)["skipped_already_done"] == len(good)  # the model is its content, not its path

    assert run("--crf")["done"] == len(good)  # another option: every mask made again
    image = read_image(src / "top.jpg")
    crf_label = Engine.open(semantic_onnx).segment([image], crf=True)[0].label_map
    assert np.array_equal(np.asarray(Image.open(out / "top.png")), crf_label)
    assert run("--crf")["skipped_already_done"] == len(good)
    assert run("--crf", model=semantic_checkpoint)["done"] == len(good)  # another model file

    edited = src / "a" / "one.jpg"
    Image.fromarray(read_image(edited)[:, ::-1]).save(edited, format="JPEG")
    again = run("--crf", model=semantic_checkpoint)
    assert again["done"] == 1 and again["skipped_already_done"] == len(good) - 1  # only the edited image
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert records[-1]["path"] == "a/one.jpg" and records[-1]["input"][0] == edited.stat().st_size


def test_copied_input_folder_keeps_its_masks_and_same_size_edits_are_redone(
    tmp_path, demo_data, semantic_onnx, monkeypatch
) -> None:
    """New mtimes with the same bytes (a copy, a restore) skip by content; the journal takes the new mtimes."""
    import c2f.inference.folder as folder
    import c2f.inference.results_log as results_log

    src, out = tmp_path / "in", tmp_path / "out"
    good = _make_tree(src, demo_data)
    raw = read_image(src / "top.jpg")
    Image.fromarray(raw).save(src / "raw.png", compress_level=0)  # its size depends only on the pixel count
    good.add("raw.png")

    def run(folder_in: Path) -> dict:
        CliRunner().invoke(cli, ["segment", str(folder_in), "-o", str(out), "--model", str(semantic_onnx),
                                 "--no-progress"])
        return json.loads((out / "report.json").read_text())

    assert run(src)["done"] == len(good)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy, copy_function=shutil.copy)  # new mtimes, same bytes
    for path in copy.rglob("*"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    report = run(copy)
    assert report["done"] == 0 and report["skipped_already_done"] == len(good)

    def no_reading(path):
        raise AssertionError(f"{path} was read although its size and mtime are recorded")

    with monkeypatch.context() as patch:  # the journal now holds the copy's mtimes: nothing is read again
        patch.setattr(folder, "file_digest", no_reading)
        patch.setattr(results_log, "file_digest", no_reading)
        assert run(copy)["skipped_already_done"] == len(good)

    edited = copy / "raw.png"
    size = edited.stat().st_size
    Image.fromarray(raw[::-1]).save(edited, compress_level=0)  # other pixels, the same number of bytes
    assert edited.stat().st_size == size
    again = run(copy)
    assert again["done"] == 1 and again["skipped_already_done"] == len(good) - 1
    label = np.asarray(Image.open(out / "raw.png"))
    assert np.array_equal(label, Engine.open(semantic_onnx).segment([raw[::-1]])[0].label_map)


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


# ----------------------------------------------------------------------------- label-aware segmentation

DEMO = ("disc", "square", "triangle")  # the classes of ``semantic_onnx`` after background


def _allowed(names) -> set[int]:
    return {0} | {DEMO.index(name) + 1 for name in names}


def _class_folders(root, demo_data) -> dict[str, tuple[str, ...]]:
    """The demo images in their class folders (one nested deeper), plus one image with no folder."""
    shutil.copytree(demo_data / "images", root)
    (root / "disc" / "2021").mkdir()
    shutil.move(root / "disc" / "disc_005.jpg", root / "disc" / "2021" / "disc_005.jpg")
    shutil.copy(root / "square" / "square_000.jpg", root / "loose.jpg")
    return {p.relative_to(root).as_posix(): (p.relative_to(root).parts[0],)
            for p in root.rglob("*.jpg") if p.parent != root}


def _check_restricted(src, out, expected: dict[str, tuple[str, ...]], engine: Engine) -> None:
    """Every mask holds only background and its image's labels, equals the engine's, and the labels
    matter: without them the model puts other classes into at least half of the images."""
    records = {r["path"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    changed = 0
    for rel, names in expected.items():
        image = read_image(src / rel)
        label = np.asarray(Image.open((out / rel).with_suffix(".png")))
        assert set(np.unique(label)) <= _allowed(names), (rel, np.unique(label))
        assert (label > 0).any(), rel
        assert np.array_equal(label, engine.segment([image], labels=[names])[0].label_map), rel
        assert records[rel]["labels"] == list(names) and set(records[rel]["classes"]) <= set(names)
        free = engine.segment([image])[0].label_map
        changed += not set(np.unique(free)) <= _allowed(names)
    assert changed >= len(expected) / 2, "the unrestricted model already keeps to the labels: test is vacuous"


def test_labels_from_folders_restricts_each_mask_to_its_folder_class(tmp_path, demo_data, semantic_onnx) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    expected = _class_folders(src, demo_data)
    assert expected["disc/2021/disc_005.jpg"] == ("disc",)  # a subfolder keeps its class folder's class
    args = ["segment", str(src), "-o", str(out), "--model", str(semantic_onnx), "--no-progress",
            "--labels-from", "folders", "--format", "label", "--format", "mask"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output  # loose.jpg failed
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(expected)
    assert report["failed"] == [{"path": "loose.jpg", "reason": "no labels given for this image"}]
    assert not (out / "loose.png").exists()
    _check_restricted(src, out, expected, Engine.open(semantic_onnx))
    for rel in expected:  # the mask is the labelled object, nothing else
        stem = (out / rel).with_suffix("")
        assert np.array_equal(read_mask(f"{stem}_mask.png") > 0, np.asarray(Image.open(f"{stem}.png")) > 0)

    again = CliRunner().invoke(cli, args)  # resume: nothing redone, the unlabelled image still reported
    assert again.exit_code == 1, again.output
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 0 and report["skipped_already_done"] == len(expected)
    assert [f["path"] for f in report["failed"]] == ["loose.jpg"]

    unrestricted = CliRunner().invoke(cli, [a for a in args if a not in ("--labels-from", "folders")])
    assert unrestricted.exit_code == 0, unrestricted.output  # other labels (none): every mask made again
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(expected) + 1 and report["skipped_already_done"] == 0


def test_labels_from_file_with_several_classes_per_image(tmp_path, demo_data, semantic_onnx) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _class_folders(src, demo_data)
    expected = {"disc/disc_000.jpg": ("disc",), "square/square_001.jpg": ("square", "triangle"),
                "triangle/triangle_002.jpg": ("triangle",), "loose.jpg": ("disc", "square")}
    listing = tmp_path / "labels.txt"
    listing.write_text("# image<TAB>classes\n\n" + "".join(f"{rel}\t{','.join(names)}\n" for rel, names in expected.items())
                       + "gone/missing.jpg\tdisc\n")
    result = CliRunner().invoke(
        cli, ["segment", str(src), "-o", str(out), "--model", str(semantic_onnx), "--no-progress", "--labels-from",
              str(listing), "--include", "disc/disc_000.jpg", "--include", "square/*", "--include", "triangle/*",
              "--include", "loose.jpg"])
    assert result.exit_code == 1, result.output  # the unlisted images failed
    assert "1 images in" in result.stderr and "gone/missing.jpg" in result.stderr  # a listed image not found
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(expected)
    unlisted = {f["path"] for f in report["failed"]}
    included = [p.relative_to(src).as_posix() for folder in ("square", "triangle") for p in (src / folder).glob("*.jpg")]
    assert unlisted == set(included) - set(expected)  # reported, not segmented unrestricted
    _check_restricted(src, out, expected, Engine.open(semantic_onnx))


@pytest.mark.parametrize("source", ["folders", "file", "file with background"])
def test_labels_from_unknown_class_is_a_one_line_error_before_any_work(tmp_path, demo_data, semantic_onnx,
                                                                       source) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    _class_folders(src, demo_data)
    bad = "background" if source == "file with background" else "zebra"
    if source == "folders":
        shutil.copytree(src / "disc", src / bad)
        labels_from = "folders"
    else:
        labels_from = str(tmp_path / "labels.txt")
        (tmp_path / "labels.txt").write_text(f"disc/disc_000.jpg\tdisc\nsquare/square_000.jpg\tsquare,{bad}\n")
    result = CliRunner().invoke(cli, ["segment", str(src), "-o", str(out), "--model", str(semantic_onnx),
                                      "--no-progress", "--labels-from", labels_from])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert f"'{bad}'" in errors[0] and "this model's classes: disc, square, triangle" in errors[0], errors[0]
    assert not out.exists()  # stopped before any work


def test_label_file_format_errors_name_the_line(tmp_path, demo_data, semantic_onnx) -> None:
    src = tmp_path / "in"
    _class_folders(src, demo_data)
    listing = tmp_path / "labels.txt"
    listing.write_text("disc/disc_000.jpg\tdisc\ndisc/disc_001.jpg disc\n")  # a space, not a TAB
    result = CliRunner().invoke(cli, ["segment", str(src), "-o", str(tmp_path / "out"), "--model",
                                      str(semantic_onnx), "--labels-from", str(listing)])
    assert result.exit_code == 2 and "line 2" in result.output and "<TAB>" in result.output, result.output
    result = CliRunner().invoke(cli, ["segment", str(src), "-o", str(tmp_path / "out"), "--model",
                                      str(semantic_onnx), "--labels-from", str(tmp_path / "nope.txt")])
    assert result.exit_code == 2 and "neither 'folders' nor a label file" in result.output, result.output


@pytest.mark.parametrize("crf,grabcut", [(False, False), (True, False), (False, True)])
def test_engine_labels_by_name_or_index_never_give_another_class(demo_data, semantic_onnx, crf, grabcut) -> None:
    engine = Engine.open(semantic_onnx)
    paths = sorted((demo_data / "images").rglob("*.jpg"))[::2]
    images = [read_image(p) for p in paths]
    names = [(p.parent.name,) if i % 3 else (p.parent.name, DEMO[(DEMO.index(p.parent.name) + 1) % 3])
             for i, p in enumerate(paths)]
    by_name = engine.segment(images, crf=crf, grabcut=grabcut, labels=names)
    by_index = engine.segment(images, crf=crf, grabcut=grabcut, labels=[engine.class_indices(n) for n in names])
    free = engine.segment(images, crf=crf, grabcut=grabcut)
    changed = 0
    for own, named, indexed, unrestricted in zip(names, by_name, by_index, free):
        assert set(np.unique(named.label_map)) <= _allowed(own)
        assert np.array_equal(named.label_map, indexed.label_map)
        changed += not set(np.unique(unrestricted.label_map)) <= _allowed(own)
    assert changed >= len(images) / 2
    mixed = engine.segment(images[:2], crf=crf, grabcut=grabcut, labels=[None, names[1]])  # None: unrestricted
    assert np.array_equal(mixed[0].label_map, free[0].label_map)
    assert np.array_equal(mixed[1].label_map, by_name[1].label_map)


def test_class_indices_errors_name_the_valid_classes(semantic_onnx) -> None:
    from c2f.inference import ModelInfo, class_indices

    engine = Engine.open(semantic_onnx)
    assert engine.class_indices(["square", "Disc", 2]) == (2, 1)  # case-insensitive, duplicates dropped
    assert engine.class_indices("triangle") == (3,)
    for bad, message in [(["zebra"], "unknown class 'zebra'; this model's classes: disc, square, triangle"),
                         (["background"], "'background' is not a label"), ([0], "'background' is not a label"),
                         ([4], "out of range; this model's classes: 1=disc, 2=square, 3=triangle"),
                         ([], "no labels given"), ([1.5], "class name or index")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            engine.class_indices(bad)
    with pytest.raises(ValueError, match="unknown class 'zebra'"):  # checked before the model runs
        engine.segment([np.zeros((8, 8, 3), np.uint8)], labels=[("zebra",)])
    with pytest.raises(ValueError, match="2 label entries for 1 images"):
        engine.segment([np.zeros((8, 8, 3), np.uint8)], labels=[("disc",), ("disc",)])
    foreground = ModelInfo("foreground", ["background", "foreground"])
    with pytest.raises(ValueError, match="do not apply to a foreground model"):
        class_indices(["foreground"], foreground)


@pytest.mark.parametrize("grabcut", [False, True])
def test_objectness_fallback_at_inference_finds_an_object_held_by_another_class(grabcut) -> None:
    """The model found the disc but called it a triangle: restricted to ``disc``, the disc is kept."""
    from c2f.data.synthetic import render_demo_image
    from c2f.inference.engine import label_map_from_probs
    from c2f.refine.labels import postprocess_prediction

    image, truth = render_demo_image(np.random.default_rng([3, 0, 0]), "disc", 120)
    probs = np.full((4, *truth.shape), 0.02, np.float32)
    probs[0][~truth] = 0.94
    probs[3][truth] = 0.94  # the object is the triangle class's
    probs /= probs.sum(axis=0)
    assert (probs.argmax(axis=0)[truth] == 3).all()

    label = label_map_from_probs(image, probs, (1,), grabcut)
    assert set(np.unique(label)) == {0, 1}
    found = label == 1
    assert (found & truth).sum() / (found | truth).sum() > 0.8
    # Without the fallback the own class finds nothing: what the map above found is the fallback's.
    off = postprocess_prediction(image, probs, (1,), grabcut=False, min_fg=0.0, max_fg=1.0, objectness_below=0.0)
    assert not (off.label_map > 0).any() and not off.objectness_fallback


# ----------------------------------------------------------------------------- hardening: names, exit status, folders


def _segment(src, out, model, *extra):
    return CliRunner().invoke(cli, ["segment", str(src), "-o", str(out), "--model", str(model), "--no-progress",
                                    *extra])


def _records(out) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def _distinct_images(demo_data, count: int) -> list[np.ndarray]:
    """``count`` different demo photographs, cropped to one size."""
    images = [read_image(p)[:64, :64] for p in sorted((demo_data / "images").rglob("*.jpg"))[:count]]
    assert all(image.shape == (64, 64, 3) for image in images)
    return images


def test_clashing_names_each_get_their_own_outputs_and_resume_skips_exactly_the_done(
        tmp_path, demo_data, semantic_onnx) -> None:
    """x.jpg, x.png, x.webp and x.JPG in one folder: four images, four sets of outputs, none overwritten."""
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "a").mkdir(parents=True)
    photos = _distinct_images(demo_data, 6)
    names = ["a/x.jpg", "a/x.png", "a/x.webp", "a/x.JPG", "a/y.png", "x.png"]
    for name, photo in zip(names, photos):
        Image.fromarray(photo).save(src / name)
    expected = {"a/x.jpg": "a/x.jpg", "a/x.png": "a/x.png", "a/x.webp": "a/x.webp", "a/x.JPG": "a/x.JPG",
                "a/y.png": "a/y", "x.png": "x"}  # no clash (y, and x one folder up): the plain names
    args = ["--format", "label", "--format", "mask"]
    result = _segment(src, out, semantic_onnx, *args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == len(names) and report["failed"] == []

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(written) == 2 * len(names), written  # nothing overwritten
    engine = Engine.open(semantic_onnx)
    records = _records(out)
    assert set(records) == set(names)
    for rel, base in expected.items():
        label = np.asarray(Image.open(out / f"{base}.png"))
        assert np.array_equal(label, engine.segment([read_image(src / rel)])[0].label_map), rel
        assert np.array_equal(read_mask(out / f"{base}_mask.png") > 0, label > 0), rel
        assert records[rel]["outputs"] == {"label": f"{base}.png", "mask": f"{base}_mask.png"}, rel

    again = _segment(src, out, semantic_onnx, *args)  # resume: everything done
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text())["skipped_already_done"] == len(names)
    (out / "a" / "x.webp_mask.png").unlink()  # one output lost: exactly that image is redone
    again = _segment(src, out, semantic_onnx, *args)
    report = json.loads((out / "report.json").read_text())
    assert report["done"] == 1 and report["skipped_already_done"] == len(names) - 1
    assert _records(out)["a/x.webp"]["outputs"]["mask"] == "a/x.webp_mask.png"

    # The names depend on the folder's images, not on --include: one image alone is named the same.
    alone = _segment(src, tmp_path / "alone", semantic_onnx, "--include", "a/x.png")
    assert alone.exit_code == 0, alone.output
    alone_out = tmp_path / "alone"
    assert [p.relative_to(alone_out).as_posix() for p in alone_out.rglob("*.png")] == ["a/x.png.png"]


def test_output_names_never_clash() -> None:
    from c2f.inference.folder import FORMATS, output_bases, output_paths

    rels = ["x.jpg", "x_mask.jpg", "X.png", "y.jpg", "z.gif", "z.txt", "d/x.jpg", "e/x.jpg", "e/x.png", "e/x.jpg.png"]
    bases = output_bases(rels)
    assert bases == {
        "x.jpg": "x.jpg", "x_mask.jpg": "x_mask.jpg", "X.png": "X.png",  # x_mask.png, x.png / X.png (case)
        "y.jpg": "y", "z.gif": "z", "d/x.jpg": "d/x",  # no clash; z.txt writes nothing
        "e/x.jpg": "e/x.jpg", "e/x.png": "e/x.png", "e/x.jpg.png": "e/x.jpg.png",  # x.jpg.png: 2 rounds
    }
    outputs = [str(path).casefold() for rel, base in bases.items()
               for path in output_paths(Path("o"), rel, FORMATS, base).values()]
    assert len(outputs) == len(set(outputs)) == 4 * len(bases)


def test_gif_is_one_readable_type_for_segment_datasets_and_http(tmp_path, demo_data, semantic_onnx) -> None:
    """GIF (first frame) is read alike by c2f segment, the data sets and the service; PPM by none."""
    from c2f.data.io import IMAGE_EXTENSIONS, ImageReadError
    from c2f.data.layouts import load_dataset
    from c2f.serving.options import RequestError, decode_upload

    first, second = _distinct_images(demo_data, 2)
    src = tmp_path / "in"
    (src / "disc").mkdir(parents=True)
    Image.fromarray(first).save(src / "disc" / "anim.gif", save_all=True, append_images=[Image.fromarray(second)])
    Image.fromarray(first).save(src / "disc" / "still.ppm")
    gif = read_image(src / "disc" / "anim.gif")  # the first frame, in GIF's 256 colours
    assert gif.shape == first.shape and np.abs(gif.astype(int) - first).mean() < 12

    result = _segment(src, tmp_path / "out", semantic_onnx)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["done"] == 1, result.output
    assert ".gif" in IMAGE_EXTENSIONS
    label = np.asarray(Image.open(tmp_path / "out" / "disc" / "anim.png"))
    assert np.array_equal(label, Engine.open(semantic_onnx).segment([gif])[0].label_map)
    [failed] = report["failed"]
    assert failed["path"] == "disc/still.ppm" and "JPEG, PNG, BMP, TIFF, WebP, GIF" in failed["reason"]

    assert [s.image.name for s in load_dataset(src, "class-folder").samples] == ["anim.gif"]
    assert np.array_equal(decode_upload((src / "disc" / "anim.gif").read_bytes(), 10**6, 10**6), gif)
    with pytest.raises(RequestError) as refused:
        decode_upload((src / "disc" / "still.ppm").read_bytes(), 10**6, 10**6)
    assert refused.value.status == 415 and "GIF" in refused.value.reason
    (src / "disc" / "ppm.jpg").write_bytes((src / "disc" / "still.ppm").read_bytes())  # the name lies
    with pytest.raises(ImageReadError, match="PPM is not a supported image type"):
        read_image(src / "disc" / "ppm.jpg")


def test_exit_status_is_0_only_when_every_input_succeeded(tmp_path, demo_data, semantic_onnx) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i, photo in enumerate(_distinct_images(demo_data, 2)):
        Image.fromarray(photo).save(src / f"{i}.png")
    ok = _segment(src, out, semantic_onnx)
    assert ok.exit_code == 0, ok.output
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    failed = _segment(src, out, semantic_onnx)
    assert failed.exit_code == 1, failed.output

    assert json.loads(ok.stdout) == {"done": 2, "skipped_already_done": 0, "failed": 0, "removed_temporary_files": 0}
    assert json.loads(failed.stdout) == {"done": 0, "skipped_already_done": 2, "failed": 1,
                                         "removed_temporary_files": 0}
    assert "failed broken.jpg:" in failed.stderr and "exit status 1" in failed.stderr
    assert "Traceback" not in failed.output and isinstance(failed.exception, SystemExit)
    help_text = CliRunner().invoke(cli, ["segment", "--help"]).output
    assert "Exit status: 0 when every image is done" in " ".join(help_text.split())


def test_output_folder_inside_the_input_folder_is_never_read(tmp_path, demo_data, semantic_onnx) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for i, photo in enumerate(_distinct_images(demo_data, 2)):
        Image.fromarray(photo).save(src / f"{i}.png")
    out = src / "segmented"
    args = ["--format", "label", "--format", "overlay"]
    for run in range(2):
        result = _segment(src, out, semantic_onnx, *args)
        assert result.exit_code == 0, result.output
        report = json.loads((out / "report.json").read_text())
        assert report["failed"] == [] and report["done"] + report["skipped_already_done"] == 2, report
    assert report["skipped_already_done"] == 2
    assert not (out / "segmented").exists()

    itself = _segment(src, src, semantic_onnx)  # outputs among the inputs: refused before any work
    assert itself.exit_code == 2 and "must not be the input folder" in itself.output, itself.output
    assert sorted(p.name for p in src.iterdir()) == ["0.png", "1.png", "segmented"]


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(tmp_path, demo_data, semantic_onnx) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "a").mkdir(parents=True)
    for i, photo in enumerate(_distinct_images(demo_data, 2)):
        Image.fromarray(photo).save(src / "a" / f"{i}.png")
    assert _segment(src, out, semantic_onnx).exit_code == 0
    # What a write killed between creating its temporary file and renaming it leaves behind
    # (c2f.data.io._save_atomic's names), and a hidden file of the user's that must stay.
    stale = [out / "a" / f".1.png.{'0' * 31}f.tmp", out / f".x_overlay.png.{'ab' * 16}.tmp"]
    for path in stale:
        path.write_bytes(b"half a PNG")
    keep = out / ".notes.tmp"
    keep.write_text("mine")
    with open(out / "results.jsonl", "a") as jsonl:  # and a record cut short
        jsonl.write('{"path": "a/1.png", "outp')
    (out / "a" / "1.png").unlink()
    result = _segment(src, out, semantic_onnx)
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in stale) and keep.read_text() == "mine"
    assert json.loads(result.stdout)["removed_temporary_files"] == 2 and json.loads(result.stdout)["done"] == 1
    assert "removed 2 temporary files" in result.stderr
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[-2] == '{"path": "a/1.png", "outp' and json.loads(lines[-1])["path"] == "a/1.png"
