"""Mask-stage throughput: images/s of each step and the speed-up of 2 worker processes over 1.

Runs the real stage (saliency -> GrabCut -> label maps) on the generated demo images, in fresh
output folders so nothing comes from the cache. Prints one JSON document.

    python benchmarks/mask_stage.py --images 60 --workers 1 2

With ``--data`` it instead compares GrabCut settings on real photos (the VOC training split of
:func:`c2f.data.datasets.split`, seed 0, 25 % val): one worker, coarse masks from ``--generator``
(c2f's ``saliency``, what ``c2f train`` uses, or ``folder``: the dataset's own saliency maps), one
stage run per ``--max-sides`` value ``SIDE[:N[:CORE]]``: GrabCut at SIDE px (``none``: full size)
with N iterations and a sure-foreground core eroded by CORE (defaults: the mask stage's). The runs are
interleaved chunk by chunk (``--chunk`` images of A, then of B, ...), so load changes on a shared
machine hit every setting alike; reported are images/s, CPU-seconds per image, the stage's per-step
seconds and the Table I label mIoU (:func:`c2f.masks.mask_quality` of the label maps)::

    python benchmarks/mask_stage.py --data ../shared/data/voc10-coseg --max-sides none:5:0.3 320:5:0.3 256:3:0.5
    python benchmarks/mask_stage.py --data ../shared/data/voc10-coseg --generator folder --max-sides none 320 --limit 120
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from c2f.data.layouts import load_dataset
from c2f.data.synthetic import generate_demo_dataset
from c2f.masks import MaskConfig, run_mask_stage

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output

Setting = tuple[int | None, int, float]  # GrabCut max side (None: full size), iterations, core erosion


def measure(data: Path, workers: int, out: Path, crf: bool) -> dict:
    """One uncached run of the stage; per-step seconds come from the stage's own summary."""
    dataset = load_dataset(data, "images-masks")
    began = time.perf_counter()
    result = run_mask_stage(dataset, out, MaskConfig(workers=workers, crf=crf, min_fg=0.0, max_fg=1.0), progress=False)
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


def parse_setting(value: str) -> Setting:
    """``SIDE[:N[:CORE]]`` -> (max side, iterations, core erosion); ``none`` is full size, and N and CORE
    default to the mask stage's own (:class:`MaskConfig`)."""
    default = MaskConfig()
    side, _, rest = value.partition(":")
    its, _, core = rest.partition(":")
    return (None if side.lower() == "none" else int(side), int(its) if its else default.grabcut_iterations,
            float(core) if core else default.grabcut_core_erosion)


def compare_max_sides(data: Path, max_sides: list[Setting], chunk: int, limit: int | None,
                      out: Path, generator: str = "saliency") -> dict:
    """Interleaved one-worker stage runs per (GrabCut max side, iterations, core) on the VOC training photos."""
    import dataclasses
    import resource

    import numpy as np

    from c2f.data.datasets import split
    from c2f.masks import mask_quality

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    train, _ = split(load_dataset(data), 0.25, seed=0)
    if limit:
        train = dataclasses.replace(train, samples=train.samples[:limit])
    names = {setting: f"max_side_{setting[0] or 'full'}_{setting[1]}it_core{setting[2]:g}" for setting in max_sides}
    wall = dict.fromkeys(names.values(), 0.0)
    cpu_s = dict.fromkeys(names.values(), 0.0)
    per_chunk: dict[str, list[float]] = {name: [] for name in names.values()}
    configs = {(side, its, core): MaskConfig(generator=generator, workers=1, grabcut_max_side=side,
                                             grabcut_iterations=its, grabcut_core_erosion=core)
               for side, its, core in max_sides}
    for index, start in enumerate(range(0, len(train.samples), chunk)):
        part = dataclasses.replace(train, samples=train.samples[start:start + chunk])
        order = max_sides if index % 2 == 0 else max_sides[::-1]
        for setting in order:
            began_cpu, began = cpu(), time.perf_counter()
            run_mask_stage(part, out / names[setting], configs[setting], progress=False)
            wall[names[setting]] += time.perf_counter() - began
            cpu_s[names[setting]] += cpu() - began_cpu
            per_chunk[names[setting]].append((cpu() - began_cpu) / len(part.samples))
        print(f"{start + len(part.samples)}/{len(train.samples)} images", file=sys.stderr)
    images = len(train.samples)
    runs = {}
    for setting, name in names.items():
        result = run_mask_stage(train, out / name, configs[setting], progress=False)  # all cached: the summary
        quality = mask_quality(train, result, "labels")
        runs[name] = {
            "grabcut_max_side": setting[0],
            "grabcut_iterations": setting[1],
            "grabcut_core_erosion": setting[2],
            "images_per_s": round(images / wall[name], 3),
            "cpu_s_per_image": round(cpu_s[name] / images, 4),
            "cpu_s_per_image_median_of_chunks": round(float(np.median(per_chunk[name])), 4),
            "per_step_ms": {k: round(v * 1000, 1) for k, v in result.summary["mean_seconds"].items() if v},
            "label_miou": round(quality["miou"] * 100, 2),
            "labelled": result.summary["counts"]["labelled"],
            "grabcut_fallbacks": result.summary["grabcut_fallbacks"]["count"],
        }
    base = runs[names[max_sides[0]]]
    for run in runs.values():
        run["speedup_images_per_s"] = round(run["images_per_s"] / base["images_per_s"], 3)
        run["speedup_cpu"] = round(base["cpu_s_per_image"] / run["cpu_s_per_image"], 3)
        run["label_miou_change"] = round(run["label_miou"] - base["label_miou"], 2)
    return {"benchmark": "mask_stage_max_side", "images": images, "chunk": chunk, "generator": generator,
            "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60, help="total generated images (3 classes)")
    parser.add_argument("--size", type=int, default=200, help="image side before the +-20%% jitter")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--crf", action="store_true", help="include the dense CRF step")
    parser.add_argument("--data", type=Path, default=None, help="real photos: compare GrabCut settings")
    parser.add_argument("--generator", choices=("saliency", "folder"), default="saliency",
                        help="coarse masks with --data: c2f's saliency or the dataset's saliency maps")
    parser.add_argument("--max-sides", nargs="+", default=["none", "320"],
                        help="GrabCut settings SIDE[:N[:CORE]] to compare (SIDE 'none' = full size; N iterations and "
                             "CORE erosion default to MaskConfig's); the first is the baseline")
    parser.add_argument("--chunk", type=int, default=40, help="images per interleaved chunk")
    parser.add_argument("--limit", type=int, default=None, help="only the first N training images")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    if args.data is not None:
        settings = [parse_setting(value) for value in args.max_sides]
        with tempfile.TemporaryDirectory() as tmp:
            report = compare_max_sides(args.data, settings, args.chunk, args.limit, Path(tmp), args.generator)
        emit(report, args.out)
        return
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
    emit(report, args.out)


if __name__ == "__main__":
    main()
