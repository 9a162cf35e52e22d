"""Does recursive refinement pay off? Three rounds on generated data, scored on unseen test images.

Generates a training set (``--per-class`` images per demo class, seed 0; a quarter held out for
per-round validation) and a disjoint test set (``--test-per-class``, seed 7), runs the mask stage
and ``--rounds`` warm-started rounds with the demo's settings (160 px, 128 crops, 10 epochs of
batch 8 at lr 0.005 per round), and scores the test set's coarse and GrabCut masks and every
round's model on it. Prints JSON and writes ``demo_rounds.json`` and ``demo_rounds.md`` to --out.
Every step is cached: a rerun or a killed run continues where it stopped.

    python benchmarks/demo_rounds.py --out runs/demo_rounds                   # 600 images, ~19 min on 2 CPU cores
    python benchmarks/demo_rounds.py --out runs/demo_rounds --per-class 100   # 300 images, ~10 min, much noisier
    python benchmarks/demo_rounds.py --out runs/folds --set relabel_folds=2  # any TrainConfig field
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from c2f.cli.options import parse_key_values
from c2f.data.datasets import split
from c2f.data.layouts import load_dataset
from c2f.data.synthetic import generate_demo_dataset
from c2f.demo import DEMO_CONFIG
from c2f.inference import Engine
from c2f.masks import mask_quality, run_mask_stage
from c2f.training import train_recursive
from c2f.evaluation import evaluate_engine


def _row(stage: str, metrics: dict) -> dict:
    return {"stage": stage, "miou": round(metrics["miou"], 4), "fg_jaccard": round(metrics["fg_jaccard"], 4),
            "iou_per_class": {name: round(value, 4) for name, value in metrics["iou_per_class"].items()}}


def run(out: Path, per_class: int, test_per_class: int, rounds: int, seed: int, workers: int, device: str,
        overrides: dict | None = None) -> dict:
    began = time.perf_counter()
    data = load_dataset(generate_demo_dataset(out / "train_data", n_per_class=per_class, size=160, seed=0),
                        "images-masks")
    test = load_dataset(generate_demo_dataset(out / "test_data", n_per_class=test_per_class, size=160, seed=7),
                        "images-masks")
    cfg = DEMO_CONFIG.updated(rounds=rounds, seed=seed, device=device, masks={"workers": workers})
    cfg = cfg.updated(**(overrides or {}))  # --set masks={...} merges over the demo's mask settings
    train_set, val_set = split(data, 0.25, seed=cfg.seed)
    result = train_recursive(cfg, train_set, out / "run", val_set, resume=True, progress=False)
    test_masks = run_mask_stage(test, out / "test_masks", cfg.masks, progress=False)
    table = [_row("coarse masks (saliency)", mask_quality(test, test_masks, "coarse")),
             _row("GrabCut masks", mask_quality(test, test_masks, "refined"))]
    for metrics in result.rounds:
        engine = Engine.open(out / "run" / f"round_{metrics['round']}" / "checkpoint.pt", device)
        row = _row(f"round {metrics['round']}", evaluate_engine(engine, test, progress=False))
        row["val_miou"] = round(metrics["val"]["miou"], 4)
        row["train_labels_miou"] = round(metrics["train_labels_quality"]["miou"], 4)
        row["train_images"] = metrics["train_images"]
        table.append(row)
    return {"train_images": len(train_set.samples), "val_images": len(val_set.samples),
            "test_images": len(test.samples), "config": cfg.to_dict(), "table": table,
            "seconds": round(time.perf_counter() - began, 1)}


def markdown(results: dict) -> str:
    lines = [f"Test set: {results['test_images']} generated images unseen in training "
             f"({results['train_images']} training, {results['val_images']} validation images).", "",
             "| stage | test mIoU | test fg Jaccard | val mIoU | training-label mIoU | training images |",
             "|---|---|---|---|---|---|"]
    for row in results["table"]:
        extra = [f"{row['val_miou']:.3f}", f"{row['train_labels_miou']:.3f}", str(row["train_images"])] \
            if "val_miou" in row else ["", "", ""]
        lines.append("| " + " | ".join([row["stage"], f"{row['miou']:.3f}", f"{row['fg_jaccard']:.3f}", *extra]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (caches every step)")
    parser.add_argument("--per-class", type=int, default=200,
                        help="training images per class (at 100 the rounds after the first are a lottery)")
    parser.add_argument("--test-per-class", type=int, default=60, help="test images per class")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="training seed (and validation split)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="mask-stage processes")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a TrainConfig field of the demo's settings, repeatable (VALUE as JSON)")
    args = parser.parse_args(argv)
    try:
        overrides = parse_key_values(args.overrides)
    except ValueError as error:
        parser.error(str(error))
    results = run(args.out, args.per_class, args.test_per_class, args.rounds, args.seed, args.workers,
                  args.device, overrides)
    (args.out / "demo_rounds.json").write_text(json.dumps(results, indent=2))
    (args.out / "demo_rounds.md").write_text(markdown(results))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
