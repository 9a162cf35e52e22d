"""`benchmarks/real_results.py --quick`: the real-photograph experiment runs end to end.

On ../shared/data when it exists (the real photographs); otherwise on generated images written in
the same two layouts, so a fresh clone still checks the pipeline. It asserts that every table,
plot and overlay is produced with well-formed figures, never a score threshold.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from c2f.data.io import read_image, read_mask, write_mask_png, write_rgb
from c2f.data.synthetic import DEMO_CLASSES, generate_demo_dataset

from conftest import SHARED_DATA

pytestmark = pytest.mark.slow  # the quick real-results run trains several models

ROOT = Path(__file__).resolve().parents[1]


def _layouts_like_shared(root: Path) -> Path:
    """Generated stand-ins: voc10-coseg (VOC class folders + saliency) and weizmann-horse (flat)."""
    demo = generate_demo_dataset(root / "demo", n_per_class=6, size=96, seed=3)
    voc_names = dict(zip(DEMO_CLASSES, ("aeroplane", "cat", "horse"), strict=True))
    for image in sorted((demo / "images").rglob("*.jpg")):
        shape, stem = image.parent.name, image.stem
        mask = read_mask(demo / "masks" / shape / f"{stem}.png") > 127
        rgb = read_image(image)
        voc = root / "voc10-coseg"
        write_rgb(voc / "images" / voc_names[shape] / f"{stem}.jpg", rgb)
        write_mask_png(voc / "masks" / voc_names[shape] / f"{stem}.png", mask)
        write_mask_png(voc / "saliency" / voc_names[shape] / f"{stem}.png", np.roll(mask, 6, axis=1))
        if shape == "disc":
            write_rgb(root / "weizmann-horse" / "images" / f"{stem}.jpg", rgb)
            write_mask_png(root / "weizmann-horse" / "masks" / f"{stem}.png", mask)
    return root


def _in_unit(scores: dict) -> bool:
    return all(0.0 <= scores[k] <= 1.0 for k in ("miou", "fg_jaccard"))


def _quick(data: Path, out: Path) -> dict:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_results.py"), "--quick", "--data", str(data),
         "--out", str(out), "--workers", "2", "--device", "cpu"],
        capture_output=True, text=True, cwd=ROOT, start_new_session=True,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads((out / "results.json").read_text())


def test_quick_mode_produces_every_table(tmp_path: Path) -> None:
    data = SHARED_DATA if (SHARED_DATA / "voc10-coseg").is_dir() else _layouts_like_shared(tmp_path / "data")
    out = tmp_path / "work"
    results = _quick(data, out)

    generators = {row["generator"] for row in results["voc_table1"]}
    assert {"folder", "saliency", "box"} <= generators
    for row in results["voc_table1"] + results["horse_table1"]:
        assert _in_unit(row["coarse"]) and _in_unit(row["grabcut"])
    trained_on = next(row for row in results["voc_table1"] if row["generator"] == "saliency")
    assert "grabcut_crf" in trained_on  # the source the weak runs train from also gets a CRF row
    for run_name, rounds in (("voc_weak", 2), ("voc_weak_no_grabcut", 2), ("voc_full", 1),
                             ("horse_weak", 2), ("horse_full", 1)):
        got = results[run_name]["rounds"]
        assert [r["round"] for r in got] == list(range(1, rounds + 1)), run_name
        assert all(_in_unit(r["val"]) for r in got)
        assert (out / results[run_name]["checkpoint"]).is_file()
    assert _in_unit(results["voc_weak"]["rounds"][-1]["val_crf"])
    final_masks = results["voc_weak"]["final_masks"]  # a quick-mode model may keep no mask at all
    assert final_masks["masks"] + final_masks["dropped"] == results["voc_split"]["train"]
    assert _in_unit(final_masks) if final_masks["masks"] else "miou" not in final_masks
    assert all(_in_unit(v) for v in results["voc_weak_label_aware"].values())
    assert set(results["headline"]) == {
        "voc_full_miou", "voc_weak_miou", "voc_weak_label_aware_miou", "voc_val_masks_miou",
        "voc_refined_labels_miou", "horse_weak_jaccard", "horse_full_jaccard", "minutes"}
    assert all(v is None or 0 <= v <= 100 for k, v in results["headline"].items() if k != "minutes")
    text = (out / "results.json").read_text() + (out / "results.md").read_text()
    assert str(out) not in text and str(data.resolve()) not in text, "machine paths in the report"
    # The fully supervised run trains on the ground truth itself.
    assert results["voc_full"]["rounds"][0]["train_labels"]["miou"] == pytest.approx(1.0)

    report = (out / "results.md").read_text()
    for heading in ("Table I", "Recursion curve", "Fully supervised reference", "Weizmann Horse", "Targets"):
        assert heading in report
    for row in ("| VOC val mIoU + CRF |", "| Horse val Jaccard + CRF |"):  # weak / full with CRF on both sides
        assert row in report
    for png in ("results_rounds.png", "results_overlays.png"):
        assert read_image(out / png).shape[0] > 100

    # Every step is cached: a second run redoes no work and reports the same figures.
    rerun = _quick(data, out)
    for key in ("voc_table1", "voc_weak", "voc_full", "horse_weak"):
        assert rerun[key] == results[key]
