"""The generated demo set: reproducible to the byte, well-formed, loadable and balanced."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from c2f.data import (
    DEMO_CLASSES,
    detect_layout,
    generate_demo_dataset,
    ground_truth,
    load_dataset,
    read_image,
    read_mask,
)

N_PER_CLASS = 4
SIZE = 72


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demo_dataset(
        tmp_path_factory.mktemp("demo"), n_per_class=N_PER_CLASS, size=SIZE, seed=7
    )


def test_same_seed_gives_identical_bytes(demo: Path, tmp_path: Path) -> None:
    again = generate_demo_dataset(tmp_path / "again", n_per_class=N_PER_CLASS, size=SIZE, seed=7)
    assert _files(demo) == _files(again)
    assert len(_files(demo)) == 2 * N_PER_CLASS * len(DEMO_CLASSES)
    other = _files(
        generate_demo_dataset(tmp_path / "other", n_per_class=N_PER_CLASS, size=SIZE, seed=8)
    )
    assert other.keys() == _files(demo).keys()
    assert all(other[name] != data for name, data in _files(demo).items())


def test_images_do_not_depend_on_class_selection_or_count(demo: Path, tmp_path: Path) -> None:
    partial = generate_demo_dataset(
        tmp_path / "part", n_per_class=2, size=SIZE, seed=7, classes=("triangle",)
    )
    for name, data in _files(partial).items():
        assert (demo / name).read_bytes() == data


def test_masks_are_binary_non_empty_and_image_sized(demo: Path) -> None:
    shapes = set()
    for image_path in sorted((demo / "images").rglob("*.jpg")):
        mask_path = demo / "masks" / image_path.parent.name / f"{image_path.stem}.png"
        image, mask = read_image(image_path), read_mask(mask_path)
        assert mask.shape == image.shape[:2]
        assert set(np.unique(mask)) == {0, 255}
        assert 0.01 < (mask == 255).mean() < 0.5
        assert min(mask.shape) >= 0.8 * SIZE - 1 and max(mask.shape) <= 1.2 * SIZE + 1
        shapes.add(mask.shape)
    assert len(shapes) > 1 and any(h != w for h, w in shapes)


def test_object_differs_from_background(demo: Path) -> None:
    # Colour contrast is the saliency stage's assumption: on average the object must stand out.
    contrasts = []
    for image_path in sorted((demo / "images").rglob("*.jpg")):
        image = read_image(image_path).astype(np.float32)
        mask = read_mask(demo / "masks" / image_path.parent.name / f"{image_path.stem}.png") == 255
        contrasts.append(np.linalg.norm(image[mask].mean(0) - image[~mask].mean(0)))
    assert np.median(contrasts) > 40


def test_loads_with_auto_layout_and_is_balanced(demo: Path) -> None:
    assert detect_layout(demo) == "images-masks"
    dataset = load_dataset(demo)
    assert dataset.class_names == ["background", *DEMO_CLASSES] and dataset.has_ground_truth
    assert Counter(s.labels for s in dataset.samples) == {(i,): N_PER_CLASS for i in range(1, 4)}
    sample = dataset.samples[-1]
    assert set(np.unique(ground_truth(sample, dataset))) == {0, sample.labels[0]}


def test_unknown_class_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="hexagon"):
        generate_demo_dataset(tmp_path, n_per_class=1, classes=("disc", "hexagon"))
