"""Coarse mask generators: registry, saliency, folder maps and boxes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from c2f.data.datasets import Sample
from c2f.data.io import write_mask_png
from c2f.data.synthetic import render_demo_image
from c2f.masks.generators import (
    GENERATORS,
    BoxGenerator,
    CoarseGenerator,
    CoarseInputError,
    FolderGenerator,
    SaliencyGenerator,
    make_generator,
    register_generator,
)

IMAGE = np.zeros((40, 60, 3), np.uint8)


def _sample(key: str = "cls/img_01", saliency: Path | None = None) -> Sample:
    return Sample(key=key, image=Path(f"/nowhere/{key}.jpg"), labels=(1,), saliency=saliency)


def test_registry_and_unknown_names():
    assert {"saliency", "folder", "box"} <= set(GENERATORS)
    assert isinstance(make_generator("box", fraction=0.5), BoxGenerator)
    with pytest.raises(ValueError, match="box, cam, folder, saliency, ufs"):
        make_generator("sam")
    with pytest.raises(ValueError, match="bad options"):
        make_generator("box", colour="red")


def test_register_rejects_a_second_class_under_a_taken_name():
    class Impostor(CoarseGenerator):
        name = "box"

        def __call__(self, image, sample):
            return np.ones(image.shape[:2], bool)

        def settings(self):
            return {}

    with pytest.raises(ValueError, match="already registered"):
        register_generator(Impostor)
    assert GENERATORS["box"] is BoxGenerator


def test_saliency_generator_finds_the_object_and_pickles():
    image, truth = render_demo_image(np.random.default_rng([8, 0, 0]), "disc", 128)
    gen = pickle.loads(pickle.dumps(make_generator("saliency")))
    mask = gen(image, _sample())
    assert mask.dtype == bool and mask.shape == truth.shape
    assert (mask & truth).sum() / (mask | truth).sum() > 0.5
    assert gen.settings() != SaliencyGenerator(method="adaptive").settings()


def test_folder_generator_by_key_then_by_stem(tmp_path):
    by_key = np.zeros((40, 60), bool)
    by_key[10:30, 10:30] = True
    write_mask_png(tmp_path / "cls" / "img_01.png", by_key)  # <root>/<key>.png
    by_stem = np.zeros((40, 60), bool)
    by_stem[:, 40:] = True
    write_mask_png(tmp_path / "img_02.png", by_stem)  # <root>/<stem>.png
    gen = FolderGenerator(root=tmp_path)
    np.testing.assert_array_equal(gen(IMAGE, _sample("cls/img_01")), by_key)
    np.testing.assert_array_equal(gen(IMAGE, _sample("other/img_02")), by_stem)
    assert gen.source_files(_sample("cls/img_01")) == ((tmp_path / "cls" / "img_01.png").resolve(),)
    with pytest.raises(FileNotFoundError, match="img_03"):
        gen(IMAGE, _sample("cls/img_03"))
    assert gen.source_files(_sample("cls/img_03")) == ()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FolderGenerator(root=tmp_path / "missing")


def test_folder_generator_soft_maps_thresholds_and_resizing(tmp_path):
    soft = np.zeros((20, 30), np.uint8)  # half the image's size
    soft[5:15, 5:15] = 100  # a soft, dim object: below 127.5, above Otsu's threshold
    soft[0, 0] = 20
    path = tmp_path / "sal.png"
    Image.fromarray(soft).save(path)
    sample = _sample(saliency=path)
    assert not FolderGenerator()(IMAGE, sample).any()  # default 127.5 suits 0/255 masks only
    mask = FolderGenerator(threshold="otsu")(IMAGE, sample)
    assert mask.shape == (40, 60) and mask[20, 20] and not mask[35, 55]
    assert FolderGenerator(threshold=50)(IMAGE, sample)[20, 20]
    with pytest.raises(FileNotFoundError, match="no saliency map"):
        FolderGenerator()(IMAGE, _sample())
    with pytest.raises(ValueError, match="threshold"):
        FolderGenerator(threshold="mean")


def test_box_generator_centred_box():
    mask = BoxGenerator(fraction=0.5)(IMAGE, _sample())
    assert mask.sum() == 20 * 30
    assert mask[20, 30] and not mask[5, 5] and mask[10, 15] and not mask[9, 15]
    assert BoxGenerator()(IMAGE, _sample()).mean() == pytest.approx(0.8 * 0.8, abs=0.02)
    with pytest.raises(ValueError, match="fraction"):
        BoxGenerator(fraction=0)


def test_box_generator_from_json_and_csv(tmp_path):
    json_file = tmp_path / "boxes.json"
    json_file.write_text(json.dumps({"cls/img_01": [0, 0, 10, 5],
                                     "cls/img_02": [[0, 0, 2, 2], [50, 30, 80, 50]]}))
    gen = BoxGenerator(boxes=json_file)
    assert gen(IMAGE, _sample("cls/img_01")).sum() == 50
    two = gen(IMAGE, _sample("cls/img_02"))
    assert two.sum() == 4 + 10 * 10  # the second box is clipped to the image
    with pytest.raises(CoarseInputError, match="img_09"):
        gen(IMAGE, _sample("cls/img_09"))

    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text("key,x0,y0,x1,y1\ncls/img_01,0,0,10,5\ncls/img_01,20,20,22,22\n")
    assert BoxGenerator(boxes=csv_file)(IMAGE, _sample("cls/img_01")).sum() == 54
    settings = BoxGenerator(boxes=csv_file).settings()
    csv_file.write_text("key,x0,y0,x1,y1\ncls/img_01,0,0,10,6\n")
    assert BoxGenerator(boxes=csv_file).settings() != settings  # content is part of the cache key
    (tmp_path / "boxes.txt").write_text("")
    with pytest.raises(ValueError, match="json or .csv"):
        BoxGenerator(boxes=tmp_path / "boxes.txt")
