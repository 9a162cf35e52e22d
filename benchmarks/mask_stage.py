"""Mask-stage throughput: images/s of each step and the speed-up of 2 worker processes over 1.

Runs the real stage (saliency -> GrabCut -> label maps) on the generated demo images, in fresh
output folders so nothing comes from the cache. Prints one JSON document.

    python benchmarks/mask_stage.py --images 60 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from c2f.data.layouts import load_dataset
from c2f.data.synthetic import generate_demo_dataset
from c2f.masks import run_mask_stage


def measure(data: Path, workers: int, out: Path, crf: bool) -> dict:
    """One uncached run of the stage; per-step seconds come from the stage's own summary."""
    dataset = load_dataset(data, "images-masks")
    began = time.perf_counter()
    result = run_mask_stage(dataset, out, workers=workers, crf=crf, progress=False, min_fg=0.0, max_fg=1.0)
    wall = time.perf_counter() - began
    steps = {k: v for k, v in result.summary["mean_seconds"].items() if v > 0}
    return {
        "workers": workers,
        "images": len(dataset.samples),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(dataset.samples) / wall, 2),
        "per_step_images_per_s": {k: round(1 / v, 1) for k, v in steps.items()},
        "per_step_ms": {k: round(v * 1000, 1) for k, v in steps.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="total generated images (3 classes)")
    parser.add_argument("--size", type=int, default=200, help="image side before the +-20%% jitter")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crf", action="store_true", help="include the dense CRF step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = generate_demo_dataset(Path(tmp) / "data", n_per_class=max(args.images // 3, 1), size=args.size)
        runs = []
        for workers in args.workers:
            print(f"running with {workers} worker(s)...", file=sys.stderr)
            runs.append(measure(data, workers, Path(tmp) / f"out{workers}", args.crf))
    report = {"benchmark": "mask_stage", "image_size": args.size, "crf": args.crf, "runs": runs}
    base = next((r for r in runs if r["workers"] == 1), None)
    if base:
        report["speedup_over_1_worker"] = {r["workers"]: round(base["wall_s"] / r["wall_s"], 2) for r in runs}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
