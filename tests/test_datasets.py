"""The dataset model and every on-disk layout, on tiny fixtures written into tmp_path."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from c2f.data import (
    LAYOUTS,
    VOC_CLASSES,
    LabelledDataset,
    Sample,
    check_images,
    class_index,
    detect_layout,
    ground_truth,
    load_dataset,
    load_voc2012,
    split,
    write_label_png,
)
from c2f.data.layouts import load_object_discovery, load_oxford_pet

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
H, W = 12, 16
SQUARE = np.zeros((H, W), np.uint8)
SQUARE[3:9, 4:12] = 1


def _image(path: Path, shape: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*shape, 3), 90, np.uint8)).save(path)
    return path


def _mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def _corrupt_jpeg(path: Path) -> Path:
    _image(path)
    buffer = path.with_suffix(".full.jpg")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), np.uint8)).save(buffer)
    path.write_bytes(buffer.read_bytes()[:300])
    buffer.unlink()
    return path


def _by_key(dataset: LabelledDataset) -> dict[str, Sample]:
    return {sample.key: sample for sample in dataset.samples}


# --- the dataset model ---


def test_sample_normalises_labels_and_rejects_background() -> None:
    sample = Sample("k", "a.jpg", labels=(15, 13, 15))
    assert sample.labels == (13, 15) and isinstance(sample.image, Path)
    with pytest.raises(ValueError):
        Sample("k", Path("a.jpg"), labels=(0, 3))
    with pytest.raises(ValueError, match="class_names"):
        LabelledDataset(Path("."), ["horse"], [])
    with pytest.raises(ValueError, match="outside"):
        LabelledDataset(Path("."), ["background", "a"], [Sample("k", Path("a.jpg"), (2,))])


def _synthetic_model(n: int = 60) -> LabelledDataset:
    samples = [
        Sample(f"img{i:03d}", Path(f"img{i:03d}.jpg"), labels=(1 + i % 3,)) for i in range(n)
    ]
    samples += [Sample("only_a", Path("a.jpg"), (4,)), Sample("only_b", Path("b.jpg"), (4, 5))]
    samples += [Sample("pair_x", Path("x.jpg"), (5,))]
    return LabelledDataset(Path("."), ["background", "a", "b", "c", "d", "e"], samples)


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    dataset = _synthetic_model()
    train, val = split(dataset, val_fraction=0.2, seed=3)
    again_train, again_val = split(dataset, val_fraction=0.2, seed=3)
    assert [s.key for s in train.samples] == [s.key for s in again_train.samples]
    assert [s.key for s in val.samples] == [s.key for s in again_val.samples]
    train_keys, val_keys = {s.key for s in train.samples}, {s.key for s in val.samples}
    assert not train_keys & val_keys
    assert train_keys | val_keys == {s.key for s in dataset.samples}
    for label in (1, 2, 3):  # 20 images each: exactly 4 in val
        assert sum(label in s.labels for s in val.samples) == 4
    for label in range(1, 6):
        assert any(label in s.labels for s in train.samples)
    other_val = {s.key for s in split(dataset, val_fraction=0.2, seed=4)[1].samples}
    assert other_val != val_keys
    reversed_order = LabelledDataset(Path("."), dataset.class_names, dataset.samples[::-1])
    assert {s.key for s in split(reversed_order, 0.2, seed=3)[1].samples} == val_keys


def test_split_keeps_every_class_with_two_images_in_train() -> None:
    # Class 1 has two images, each alone in its label group: rounding alone puts both in val.
    samples = [Sample("a", Path("a.jpg"), (1,)), Sample("b", Path("b.jpg"), (1, 2))]
    dataset = LabelledDataset(Path("."), ["background", "x", "y"], samples)
    train, val = split(dataset, val_fraction=0.6)
    assert any(1 in s.labels for s in train.samples)
    assert len(val) == 1
    with pytest.raises(ValueError):
        split(dataset, val_fraction=1.0)


def test_subset_to_foreground_and_class_index() -> None:
    dataset = _synthetic_model(6)
    assert [s.key for s in dataset.subset(["img005", "img001"]).samples] == ["img001", "img005"]
    assert len(dataset.subset(lambda s: 4 in s.labels)) == 2
    with pytest.raises(KeyError, match="nope"):
        dataset.subset(["nope"])
    foreground = dataset.to_foreground()
    assert (
        foreground.class_names == ["background", "foreground"] and foreground.task == "foreground"
    )
    assert {s.labels for s in foreground.samples} == {(1,)}
    assert dataset.class_names[1] == "a"  # the original is untouched
    assert class_index(dataset, "c") == 3
    with pytest.raises(KeyError, match="valid names: background, a, b"):
        class_index(dataset, "horse")


# --- images-masks ---


def test_images_masks_maps_voc_names_to_voc_indices(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "horse" / "h1.jpg")
    _image(tmp_path / "images" / "horse" / "h2.png")
    _image(tmp_path / "images" / "dog" / "d1.jpg")
    (tmp_path / "images" / "dog" / "README.txt").write_text("not an image")
    _mask(tmp_path / "masks" / "horse" / "h1.png", SQUARE * 255)
    _mask(tmp_path / "saliency" / "horse" / "h1.png", SQUARE * 200)
    assert detect_layout(tmp_path) == "images-masks"
    dataset = load_dataset(tmp_path)
    assert dataset.class_names == list(VOC_CLASSES) and dataset.mask_format == "binary"
    samples = _by_key(dataset)
    assert list(samples) == ["dog/d1", "horse/h1", "horse/h2"]
    assert samples["horse/h1"].labels == (13,) and samples["dog/d1"].labels == (12,)
    assert samples["horse/h1"].saliency is not None and samples["horse/h2"].mask is None
    assert not dataset.has_ground_truth
    np.testing.assert_array_equal(ground_truth(samples["horse/h1"], dataset), SQUARE * 13)
    with pytest.raises(ValueError, match="no ground-truth"):
        ground_truth(samples["horse/h2"], dataset)


def test_images_masks_other_names_and_fixed_class_space(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "zebra" / "z.jpg")
    _image(tmp_path / "images" / "horse" / "h.jpg")
    assert load_dataset(tmp_path).class_names == ["background", "horse", "zebra"]
    fixed = load_dataset(tmp_path, class_names=["cat", "horse", "zebra"])
    assert fixed.class_names == ["background", "cat", "horse", "zebra"]
    assert _by_key(fixed)["horse/h"].labels == (2,)
    with pytest.raises(ValueError, match="zebra"):
        load_dataset(tmp_path, class_names=["horse"])


# --- images-masks-flat ---


def test_flat_layout_is_single_class_foreground(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "weizmann-horse"
    for stem in ("a", "b"):
        _image(root / "images" / f"{stem}.jpg")
        _mask(
            root / "masks" / f"{stem}.png", np.kron(SQUARE, np.ones((2, 2), np.uint8)) * 255
        )  # 2x too big
    assert detect_layout(root) == "images-masks-flat"
    dataset = load_dataset(root)
    assert dataset.task == "foreground" and dataset.class_names == ["background", "horse"]
    assert [s.labels for s in dataset.samples] == [(1,), (1,)] and dataset.has_ground_truth
    with caplog.at_level(logging.DEBUG, logger="c2f.data.datasets"):
        for sample in dataset.samples:
            np.testing.assert_array_equal(ground_truth(sample, dataset), SQUARE)
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "resizing" in r.message
    ]
    assert len(warnings) == 1
    other = tmp_path / "shapes"
    _image(other / "images" / "x.jpg")
    assert load_dataset(other).class_names == ["background", "foreground"]
    assert load_dataset(other, class_names=["blob"]).class_names == ["background", "blob"]


# --- class-folder + check_images ---


def test_class_folder_with_corrupt_image_and_clutter(tmp_path: Path) -> None:
    _image(tmp_path / "cat" / "c1.jpg")
    corrupt = _corrupt_jpeg(tmp_path / "cat" / "c2.jpg")
    (tmp_path / "cat" / "labels.txt").write_text("cat\n")
    _image(tmp_path / "dog" / "d1.PNG")
    _image(tmp_path / ".cache" / "x.jpg")
    assert detect_layout(tmp_path) == "class-folder"
    dataset = load_dataset(tmp_path)
    assert dataset.class_names == list(VOC_CLASSES)
    assert [(s.key, s.labels) for s in dataset.samples] == [
        ("cat/c1", (8,)),
        ("cat/c2", (8,)),
        ("dog/d1", (12,)),
    ]
    assert all(s.mask is None for s in dataset.samples)
    for workers in (1, 2):
        clean, bad = check_images(dataset, workers=workers)
        assert [s.key for s in clean.samples] == ["cat/c1", "dog/d1"]
        assert len(bad) == 1 and bad[0][0] == str(corrupt) and "truncated" in bad[0][1].lower()
    assert len(dataset) == 3  # the input is not modified


# --- what a layout leaves out: empty class folders, images it does not read ---


@pytest.mark.parametrize("images", ["", "images"])
def test_empty_class_folder_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, images: str
) -> None:
    _image(tmp_path / images / "lynx" / "l1.jpg")
    (tmp_path / images / "otter").mkdir()
    (tmp_path / images / "otter" / "notes.txt").write_text("no images here")
    with caplog.at_level(logging.WARNING, logger="c2f.data.layouts"):
        dataset = load_dataset(tmp_path)
    assert [s.key for s in dataset.samples] == ["lynx/l1"] and dataset.class_names == ["background", "lynx"]
    (note,) = dataset.notes
    assert "'otter'" in note and "no images" in note and "\n" not in note
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [note]


def test_images_the_layout_does_not_read_are_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _image(tmp_path / "images" / "cat" / "c1.jpg")
    _mask(tmp_path / "masks" / "cat" / "c1.png", SQUARE * 255)  # masks and coarse maps are not inputs
    _mask(tmp_path / "saliency" / "cat" / "orphan.png", SQUARE * 255)
    _image(tmp_path / "images" / "loose.jpg")  # not in a class folder
    _image(tmp_path / "images" / "cat" / "nested" / "n.jpg")  # below a class folder
    _image(tmp_path / "dog" / "d.jpg")  # a class folder of the other layout
    _image(tmp_path / ".cache" / "hidden.jpg")
    with caplog.at_level(logging.WARNING, logger="c2f.data.layouts"):
        dataset = load_dataset(tmp_path)
    assert [s.key for s in dataset.samples] == ["cat/c1"]
    (note,) = dataset.notes
    assert "layout images-masks ignores 3 of 4 images" in note
    assert "dog/d.jpg, images/cat/nested/n.jpg, images/loose.jpg" in note and "--layout" in note
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [note]
    assert split(dataset, 0.5)[0].notes == dataset.notes == dataset.to_foreground().notes


def test_a_dataset_that_fits_its_layout_has_no_notes(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "cat" / "c1.jpg")
    _mask(tmp_path / "masks" / "cat" / "c1.png", SQUARE * 255)
    _mask(tmp_path / "saliency" / "cat" / "c1.png", SQUARE * 255)
    assert load_dataset(tmp_path).notes == []
    _image(tmp_path / "flat" / "images" / "a.jpg")
    _mask(tmp_path / "flat" / "masks" / "a.png", SQUARE * 255)
    assert load_dataset(tmp_path / "flat").notes == []


# --- list-file ---


def test_list_file_multi_label_masks_and_comments(tmp_path: Path) -> None:
    _image(tmp_path / "img" / "a.jpg")
    _image(tmp_path / "img" / "b.jpg")
    outside = _image(tmp_path / "elsewhere" / "c.png")
    _mask(tmp_path / "gt" / "b.png", SQUARE * 255)
    listing = tmp_path / "lists" / "train.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# image<TAB>labels<TAB>mask\n\n"
        "../img/a.jpg\tperson, horse\n"
        f"../img/b.jpg\thorse\t../gt/b.png\n"
        f"{outside}\tdog\n"
        "../img/a.jpg\n"  # duplicate key: skipped with a warning
    )
    assert detect_layout(listing) == "list-file"
    dataset = load_dataset(listing)
    assert dataset.class_names == list(VOC_CLASSES)
    samples = dataset.samples
    assert [s.labels for s in samples] == [(13, 15), (13,), (12,)]
    assert (
        samples[1].mask is not None
        and samples[1].mask.resolve() == (tmp_path / "gt" / "b.png").resolve()
    )
    assert len({s.key for s in samples}) == 3
    np.testing.assert_array_equal(ground_truth(samples[1], dataset), SQUARE * 13)
    _mask(tmp_path / "gt" / "a.png", SQUARE * 255)
    multi = Sample(
        samples[0].key, samples[0].image, samples[0].labels, mask=tmp_path / "gt" / "a.png"
    )
    with pytest.raises(ValueError, match="exactly one label"):
        ground_truth(multi, dataset)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("a.jpg horse", "TAB"),
        ("a.jpg\thorse,,dog", "empty label"),
        ("a.jpg\thorse\tm.png\textra", "expected"),
        ("a.jpg\tbackground", "background"),
    ],
)
def test_list_file_malformed_line_names_file_and_line(
    tmp_path: Path, line: str, match: str
) -> None:
    listing = tmp_path / "list.tsv"
    listing.write_text(f"# header\nok.jpg\thorse\n{line}\n")
    with pytest.raises(ValueError, match=match) as info:
        load_dataset(listing, "list-file")
    if match != "background":
        assert f"{listing}, line 3" in str(info.value)


# --- voc2012 ---


def _voc_tree(root: Path) -> Path:
    base = root / "VOCdevkit" / "VOC2012"
    masks = {
        "2007_000001": np.where(SQUARE == 1, 13, 0),
        "2007_000002": np.where(SQUARE == 1, 15, 12),
        "2007_000003": np.where(SQUARE == 1, 7, 0),
    }
    for image_id, label in masks.items():
        label = label.astype(np.uint8)
        label[0, :] = 255
        _image(base / "JPEGImages" / f"{image_id}.jpg")
        write_label_png(base / "SegmentationClass" / f"{image_id}.png", label)
    sets = base / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000002\n2007_000001\n")
    (sets / "val.txt").write_text("2007_000003\n")
    return base


def test_voc2012_labels_from_masks_and_split(tmp_path: Path) -> None:
    base = _voc_tree(tmp_path)
    for root in (tmp_path, base.parent, base):
        assert detect_layout(root) == "voc2012"
    train = load_dataset(base.parent)
    assert train.mask_format == "semantic" and train.class_names == list(VOC_CLASSES)
    assert [(s.key, s.labels) for s in train.samples] == [
        ("2007_000001", (13,)),
        ("2007_000002", (12, 15)),
    ]
    gt = ground_truth(train.samples[1], train)
    assert gt[0, 0] == 255 and gt[5, 6] == 15 and gt[10, 1] == 12
    foreground = ground_truth(train.samples[1], train.to_foreground())
    assert set(np.unique(foreground)) == {1, 255}
    val = load_dataset(tmp_path, "voc2012", split="val")
    assert [s.labels for s in val.samples] == [(7,)]
    assert [s.key for s in load_voc2012(base, "val").samples] == ["2007_000003"]
    with pytest.raises(ValueError, match="available"):
        load_voc2012(base, "test")


# --- oxford-pet ---


def _pet_tree(root: Path) -> Path:
    rows = {
        "Abyssinian_1": (1, 1, 1),
        "beagle_3": (5, 2, 4),
        "Bengal_4": (6, 1, 2),
        "yorkshire_terrier_5": (37, 2, 25),
    }
    trimap = np.where(SQUARE == 1, 1, 2).astype(np.uint8)
    trimap[3, 4:12] = 3
    for name in rows:
        _image(root / "images" / f"{name}.jpg")
        _mask(root / "annotations" / "trimaps" / f"{name}.png", trimap)
    _image(root / "images" / "pug_9.jpg")
    (root / "images" / "pug_9.mat").write_text("matlab")
    lines = [f"{name} {' '.join(map(str, row))}" for name, row in rows.items()]
    (root / "annotations" / "trainval.txt").write_text(
        "#Image CLASS-ID SPECIES BREED ID\n" + "\n".join(lines)
    )
    (root / "annotations" / "test.txt").write_text("pug_9 26 2 16\n")
    return root


def test_oxford_pet_species_breed_and_trimaps(tmp_path: Path) -> None:
    root = _pet_tree(tmp_path)
    assert detect_layout(root) == "oxford-pet"
    species = load_dataset(root)
    assert species.class_names == ["background", "cat", "dog"] and species.mask_format == "trimap"
    samples = _by_key(species)
    assert (
        len(samples) == 4
        and samples["Abyssinian_1"].labels == (1,)
        and samples["beagle_3"].labels == (2,)
    )
    gt = ground_truth(samples["beagle_3"], species)
    assert gt[5, 6] == 2 and gt[0, 0] == 0 and gt[3, 6] == 255
    breeds = load_oxford_pet(root, "breed")
    assert breeds.class_names == [
        "background",
        "Abyssinian",
        "beagle",
        "Bengal",
        "yorkshire_terrier",
    ]
    assert ground_truth(_by_key(breeds)["Bengal_4"], breeds)[5, 6] == 3
    assert [s.key for s in load_dataset(root, split="test").samples] == ["pug_9"]
    assert len(load_oxford_pet(root, split="all")) == 5
    with pytest.raises(ValueError, match="breed"):
        load_oxford_pet(root, "color")  # type: ignore[arg-type]


# --- object-discovery ---


def test_object_discovery_classes_subsets_and_binary_01_masks(tmp_path: Path) -> None:
    data = tmp_path / "Data"
    for folder, stem in (("Horse", "h1"), ("Horse", "h2"), ("Horse100", "h1"), ("Car100", "c1")):
        _image(data / folder / f"{stem}.jpg")
        _mask(data / folder / "GroundTruth" / f"{stem}.png", SQUARE)  # 0/1 masks
    assert detect_layout(tmp_path) == "object-discovery" == detect_layout(data)
    dataset = load_dataset(tmp_path)
    assert dataset.task == "foreground" and dataset.class_names == ["background", "Car", "Horse"]
    assert [(s.key, s.labels) for s in dataset.samples] == [
        ("Car100/c1", (1,)),
        ("Horse/h1", (2,)),
        ("Horse/h2", (2,)),
    ]
    np.testing.assert_array_equal(ground_truth(dataset.samples[1], dataset), SQUARE)
    hundred = load_object_discovery(tmp_path, subset="100")
    assert [s.key for s in hundred.samples] == ["Car100/c1", "Horse100/h1"]


# --- registry and errors ---


def test_layout_registry_and_errors(tmp_path: Path) -> None:
    assert set(LAYOUTS) == {
        "images-masks",
        "images-masks-flat",
        "class-folder",
        "list-file",
        "voc2012",
        "oxford-pet",
        "object-discovery",
    }
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="looked for: list-file, voc2012"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(ValueError, match="valid layouts: auto, images-masks"):
        load_dataset(tmp_path / "empty", "coco")
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing")
    (tmp_path / "empty" / "images").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        load_dataset(tmp_path / "empty", "images-masks")


# --- optional: the real shared data ---


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data {path} is not available")
    return path


def test_shared_voc10_coseg() -> None:
    dataset = load_dataset(_shared("voc10-coseg"))
    assert len(dataset) == 699 and dataset.class_names == list(VOC_CLASSES)
    assert {s.labels for s in dataset.samples} == {(i,) for i in range(1, 21)}
    assert dataset.has_ground_truth and all(s.saliency is not None for s in dataset.samples)
    horse = next(s for s in dataset.samples if s.key.startswith("horse/"))
    assert horse.labels == (13,)
    assert set(np.unique(ground_truth(horse, dataset))) == {0, 13}


def test_shared_weizmann_horse() -> None:
    dataset = load_dataset(_shared("weizmann-horse"))
    assert len(dataset) == 219 and dataset.task == "foreground" and dataset.has_ground_truth
    assert set(np.unique(ground_truth(dataset.samples[0], dataset))) == {0, 1}
