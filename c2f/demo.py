"""``c2f demo``: the whole method, end to end, on a generated data set (nothing downloaded).

Generated labelled images -> saliency coarse masks -> GrabCut -> two rounds of DeepLab training ->
evaluation -> ONNX export with parity -> batch segmentation of a folder, all under one folder, with a
table of mIoU per stage. The settings are scaled for two CPU cores (160px images, few epochs) and
use a higher learning rate than the paper's 2.5e-4 because the demo trains for minutes, not hours.
Not too high, though: at lr 0.01 (head 0.1) the ~90-image rounds trained erratically and round 1
often ended below the coarse masks it learnt from; 0.005 for 10 epochs per round trains steadily.
Round 2 starts from round 1's weights (``warm_start``), so the short rounds add up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from c2f.data.datasets import split
from c2f.data.io import read_image
from c2f.data.layouts import load_dataset
from c2f.data.synthetic import generate_demo_dataset
from c2f.export import export_onnx
from c2f.inference import Engine
from c2f.inference.folder import segment_folder
from c2f.masks import MaskConfig, run_mask_stage
from c2f.training import TrainConfig, train_recursive
from c2f.evaluation import evaluate_engine

DEMO_CONFIG = TrainConfig(
    task="semantic",
    rounds=2,
    epochs=10,
    batch_size=8,
    lr=0.005,
    resize=160,
    crop=128,
    warm_start=True,
    masks=MaskConfig(workers=2),
)


def run_demo(out_dir: str | Path, seed: int = 0, images_per_class: int = 40, epochs: int | None = None,
             progress: bool = True) -> dict:
    """Run the demo and return (and write to ``OUT/demo_results.json``) the table's figures."""
    out = Path(out_dir)
    began = time.perf_counter()
    data_dir = generate_demo_dataset(out / "data", n_per_class=images_per_class, size=160, seed=seed)
    train_set, val_set = split(load_dataset(data_dir, "images-masks"), 0.25, seed=seed)
    cfg = DEMO_CONFIG.updated(seed=seed, epochs=epochs)
    run = train_recursive(cfg, train_set, out / "run", val_set, resume=True, progress=progress)
    # The mask stage on the validation images too, so every row of the table is scored on the same images.
    val_masks = run_mask_stage(val_set, out / "val_masks", cfg.masks, progress=progress)
    from c2f.masks import mask_quality

    rows = [
        {"stage": "coarse masks (saliency)", **_scores(mask_quality(val_set, val_masks, "coarse"))},
        {"stage": "GrabCut masks", **_scores(mask_quality(val_set, val_masks, "refined"))},
    ]
    rows += [{"stage": f"round {r['round']} DeepLab", **_scores(r["val"])} for r in run.rounds]
    sample_images = [read_image(s.image) for s in val_set.samples[:4]]
    parity = export_onnx(run.final_checkpoint, out / "model.onnx", sample_images)
    engine = Engine.open(out / "model.onnx")
    rows.append({"stage": f"round {cfg.rounds} ONNX Runtime", **_scores(evaluate_engine(engine, val_set, progress=progress))})
    report = segment_folder(engine, data_dir / "images", out / "segmented", ("label", "overlay"), progress=progress)
    results = {
        "table": rows,
        "val_images": len(val_set.samples),
        "train_images": len(train_set.samples),
        "onnx_parity": {"max_abs_logit_diff": parity.max_abs_logit_diff, "argmax_agreement": parity.argmax_agreement},
        "segmented": report.to_dict(),
        "seconds": round(time.perf_counter() - began, 1),
        "config": cfg.to_dict(),
    }
    (out / "demo_results.json").write_text(json.dumps(results, indent=2))
    return results


def _scores(metrics: dict) -> dict:
    return {"miou": round(metrics["miou"], 4), "fg_jaccard": round(metrics["fg_jaccard"], 4)}


def format_demo_table(results: dict) -> str:
    lines = [f"{'stage (scored on ' + str(results['val_images']) + ' held-out images)':<44}{'mIoU':>8}{'fg Jacc.':>10}"]
    lines += [f"{row['stage']:<44}{row['miou']:>8.3f}{row['fg_jaccard']:>10.3f}" for row in results["table"]]
    return "\n".join(lines)
