"""`c2f segment` throughput against a bare engine loop, the CRF's cost, and the CRF defaults' mIoU.

Three measurements on real VOC photos with an exported ONNX model (labels only, no --labels-from):

1. ``throughput``: images/s and CPU-seconds per image of the real folder path
   (:func:`c2f.inference.folder.segment_folder`, what ``c2f segment`` runs) against a bare loop
   (read, ``Engine.segment``, write the label PNG), with and without ``--crf``; the variants run
   interleaved (A/B/C/A/B/C...) into fresh output folders and the medians are reported, so a busy
   machine slows every variant alike. ``--full-crf`` adds the CRF at full resolution, all classes
   (the behaviour before :data:`c2f.inference.CRF_MAX_PIXELS`).
2. ``crf_quality``: on the validation photos, mIoU without CRF, with the default CRF (or each
   ``--crf-pixels`` x ``--crf-iterations`` setting) and with the full-resolution 5-iteration CRF
   over all classes (the reference; ``--reference-cache`` keeps its maps), from the same logits;
   interleaved per image, the CPU-seconds per image of each variant and of the labels-only path
   (read, model, argmax, write), and their ratio.

    python benchmarks/segment_speed.py --model voc-full.onnx --data ../shared/data/voc10-coseg --out seg.json
    python benchmarks/segment_speed.py --model voc-full.onnx --data DATA --images 40 --repeats 1 --val 30  # quick
    python benchmarks/segment_speed.py --model voc-full.onnx --data DATA --skip-throughput --threads 1 \
        --crf-pixels 60000 30000 20000 12000 --crf-iterations 5 3 2 --reference-cache ref.npz  # sweep
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from c2f.data.datasets import ground_truth, split
from c2f.data.io import read_image, write_label_png
from c2f.data.layouts import load_dataset
from c2f.inference import Engine, predict_from_logits
from c2f.inference.folder import find_files, segment_folder
from c2f.evaluation.metrics import Scorer

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output


def cpu_seconds() -> float:
    """CPU time of this process and its threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def link_photos(data: Path, count: int, folder: Path) -> int:
    """Symlink ``count`` photos (spread over the class folders of ``data/images``) under ``folder``."""
    root = data / "images" if (data / "images").is_dir() else data
    photos = [p for p in find_files(root) if p.suffix.lower() in (".jpg", ".jpeg")]
    chosen = photos[:: max(1, len(photos) // count)][:count]
    for path in chosen:
        target = folder / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())
    return len(chosen)


def bare_loop(engine: Engine, folder: Path, out: Path, crf: bool) -> None:
    """The least a folder run must do: read each image, segment it, write its label PNG."""
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        prediction = engine.segment([read_image(path)], crf=crf)[0]
        target = out / path.relative_to(folder).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_label_png(target, prediction.label_map)


def throughput(engine: Engine, folder: Path, images: int, repeats: int, full_crf: Engine | None, workers: int) -> dict:
    variants: dict[str, Callable[[Path], object]] = {
        "bare_loop": lambda out: bare_loop(engine, folder, out, crf=False),
        "segment": lambda out: segment_folder(engine, folder, out, ("label",), progress=False, workers=workers),
        "segment_crf": lambda out: segment_folder(engine, folder, out, ("label",), crf=True, progress=False,
                                                  workers=workers),
    }
    if full_crf is not None:
        variants["segment_crf_full_resolution"] = lambda out: segment_folder(
            full_crf, folder, out, ("label",), crf=True, progress=False, workers=workers)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        bare_loop(engine, folder, Path(tmp) / "warmup", crf=False)  # file cache, ORT arenas, lazy imports
        for repeat in range(repeats):
            order = list(variants) if repeat % 2 == 0 else list(variants)[::-1]
            for name in order:
                out = Path(tmp) / f"{name}-{repeat}"
                print(f"repeat {repeat + 1}/{repeats}: {name}", file=sys.stderr)
                began_cpu, began = cpu_seconds(), time.perf_counter()
                variants[name](out)
                wall[name].append(time.perf_counter() - began)
                cpu[name].append(cpu_seconds() - began_cpu)
    rows = {name: {"images_per_s": round(images / float(np.median(wall[name])), 3),
                   "wall_s_per_image": round(float(np.median(wall[name])) / images, 4),
                   "cpu_s_per_image": round(float(np.median(cpu[name])) / images, 4),
                   "wall_s_runs": [round(w, 2) for w in wall[name]]} for name in variants}
    ratios = {"segment_vs_bare_loop": rows["segment"]["images_per_s"] / rows["bare_loop"]["images_per_s"],
              "segment_crf_vs_segment": rows["segment_crf"]["images_per_s"] / rows["segment"]["images_per_s"]}
    if full_crf is not None:
        ratios["segment_crf_full_resolution_vs_segment"] = (
            rows["segment_crf_full_resolution"]["images_per_s"] / rows["segment"]["images_per_s"])
    return {"images": images, "repeats": repeats, "workers": workers, "variants": rows,
            "ratios": {k: round(v, 3) for k, v in ratios.items()}}


def crf_quality(engine: Engine, data: Path, count: int | None, sweep: list[tuple[int | None, int]] | None = None,
                reference_cache: Path | None = None, partial: Callable[[dict], None] | None = None) -> dict:
    """mIoU without CRF, with the CRF at each (working pixels, iterations) of ``sweep`` (default: the
    engine's) and with the full-size all-class 5-iteration CRF (the reference), on the val photos.

    Per photo, interleaved (the order flips every photo): CPU-seconds of reading it and running the
    model (shared by every variant), then of each variant's ``predict_from_logits`` and label PNG
    write. ``labels_only`` is read + model + the no-CRF prediction and write, ``with_crf`` the same with
    the variant's CRF; ``throughput_ratio`` = labels-only / with-CRF CPU-s per image. With
    ``reference_cache`` (an .npz) the reference label maps and CPU-s are read from it when it holds
    these photos, else computed and written there. ``partial`` gets the report so far every 10 photos.
    """
    dataset = load_dataset(data)
    _, val = split(dataset, 0.25, seed=0)
    samples = val.samples[:count] if count else val.samples
    names = dataset.class_names
    keys = [str(sample.image) for sample in samples]
    cached: dict[str, tuple[np.ndarray, float]] = {}
    if reference_cache is not None and reference_cache.exists():
        with np.load(reference_cache, allow_pickle=False) as stored:
            if list(stored["keys"]) == keys:
                cached = {key: (stored[f"map{i}"], float(stored["cpu"][i])) for i, key in enumerate(keys)}
    sweep = sweep or [(engine.crf_max_pixels, engine.crf_iterations)]
    variants: dict[str, dict] = {"no_crf": {"crf": False}}
    for pixels, iterations in sweep:
        variants[f"crf_{pixels or 'full'}px_{iterations}it"] = {
            "crf": True, "crf_max_pixels": pixels, "crf_prune_below": engine.crf_prune_below,
            "crf_iterations": iterations}
    reference = "crf_full_resolution"
    if not cached:
        variants[reference] = {"crf": True, "crf_max_pixels": None, "crf_prune_below": None, "crf_iterations": 5}
    scorers = {name: Scorer(len(names)) for name in [*variants, reference]}
    agree = {name: Scorer(len(names)) for name in variants if name != reference}  # vs the reference maps
    cpu: dict[str, list[float]] = {name: [] for name in [*variants, reference]}
    shared: list[float] = []
    reference_maps: list[np.ndarray] = []
    default = f"crf_{engine.crf_max_pixels or 'full'}px_{engine.crf_iterations}it"

    def summarise(images: int) -> dict:
        return _crf_summary(images, names, scorers, agree, cpu, shared, reference, bool(cached), default)

    with tempfile.TemporaryDirectory() as tmp:
        for index, sample in enumerate(samples):
            truth = ground_truth(sample, dataset)
            began = time.process_time()
            image = read_image(sample.image)
            (logits, _), = list(engine.logits([image]))
            shared.append(time.process_time() - began)
            order = list(variants) if index % 2 == 0 else list(variants)[::-1]
            maps = {}
            for name in order:
                began = time.process_time()
                prediction = predict_from_logits(image, logits, None, max_pixels=engine.refine_max_pixels,
                                                 **variants[name])
                write_label_png(Path(tmp) / f"{name}.png", prediction.label_map)
                cpu[name].append(time.process_time() - began)
                maps[name] = prediction.label_map
            if cached:
                maps[reference], reference_cpu = cached[keys[index]]
                cpu[reference].append(reference_cpu)
            reference_maps.append(maps[reference])
            for name, label_map in maps.items():
                scorers[name].update(truth, label_map)
                if name in agree:
                    agree[name].update(maps[reference], label_map)
            if (index + 1) % 10 == 0:
                print(f"crf quality: {index + 1}/{len(samples)}", file=sys.stderr)
                if partial is not None:
                    partial(summarise(index + 1))
    if reference_cache is not None and not cached:
        np.savez_compressed(reference_cache, keys=np.array(keys), cpu=np.array(cpu[reference]),
                            **{f"map{i}": m for i, m in enumerate(reference_maps)})
    return summarise(len(samples))


def _crf_summary(images: int, names: list[str], scorers: dict, agree: dict, cpu: dict, shared: list[float],
                 reference: str, cached: bool, default: str) -> dict:
    """crf_quality's report from its running scores and CPU times."""
    miou = {name: round(scorer.summary(names)["miou"] * 100, 2) for name, scorer in scorers.items()}
    shared_s = float(np.median(shared))
    labels_only = shared_s + float(np.median(cpu["no_crf"]))
    rows = {}
    for name in scorers:
        row = {"miou": miou[name], "minus_reference": round(miou[name] - miou[reference], 2),
               "cpu_s_per_image_median": round(float(np.median(cpu[name])), 4),
               "cpu_s_per_image_mean": round(float(np.mean(cpu[name])), 4)}
        if name in agree:
            row["pixel_agreement_miou_vs_reference"] = round(agree[name].summary(names)["miou"] * 100, 2)
        if name != "no_crf":
            with_crf = shared_s + float(np.median(cpu[name]))
            row["with_crf_cpu_s_per_image"] = round(with_crf, 4)
            row["throughput_ratio"] = round(labels_only / with_crf, 3)
        rows[name] = row
    report = {"images": images, "reference": reference + (" (cached)" if cached else ""),
              "read_and_model_cpu_s_per_image_median": round(shared_s, 4),
              "labels_only_cpu_s_per_image": round(labels_only, 4), "variants": rows,
              "miou": miou, "crf_cpu_s_per_image_median": {k: v["cpu_s_per_image_median"] for k, v in rows.items()}}
    if default in miou:
        report["crf_default_minus_full_resolution"] = round(miou[default] - miou[reference], 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="ONNX export (c2f export)")
    parser.add_argument("--data", type=Path, required=True, help="VOC co-segmentation folder (class folders)")
    parser.add_argument("--images", type=int, default=200, help="photos in the throughput folder")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each variant")
    parser.add_argument("--val", type=int, default=0, help="val photos for crf_quality (0: all); -1 skips it")
    parser.add_argument("--threads", type=int, default=None, help="model threads (default: the engine's)")
    parser.add_argument("--workers", type=int, default=2, help="segment's --workers (its CLI default)")
    parser.add_argument("--full-crf", action="store_true", help="also time the full-resolution CRF")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--crf-pixels", nargs="+", default=None,
                        help="crf_quality sweep: CRF working sizes in pixels ('none' = full size); "
                             "PIXELS:N runs only N iterations at that size")
    parser.add_argument("--crf-iterations", type=int, nargs="+", default=None,
                        help="crf_quality sweep: mean-field iterations (crossed with --crf-pixels)")
    parser.add_argument("--reference-cache", type=Path, default=None,
                        help="crf_quality: .npz holding the full-resolution CRF's label maps (made if absent)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()
    engine = Engine.open(args.model, device="cpu", threads=args.threads, batch_size=1)
    report: dict = {"benchmark": "segment_speed", "model": args.model.name, "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()}
    if not args.skip_throughput:
        full = (Engine.open(args.model, device="cpu", threads=args.threads, batch_size=1, crf_max_pixels=None,
                            crf_prune_below=None) if args.full_crf else None)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "photos"
            count = link_photos(args.data, args.images, folder)
            report["throughput"] = throughput(engine, folder, count, args.repeats, full, args.workers)
    if args.val >= 0:
        print("crf quality...", file=sys.stderr)
        sweep = None
        if args.crf_pixels or args.crf_iterations:
            sweep = []
            for value in args.crf_pixels or [str(engine.crf_max_pixels)]:
                size, _, steps = value.partition(":")
                pixels = None if size.lower() == "none" else int(size)
                sweep += [(pixels, int(steps))] if steps else [
                    (pixels, i) for i in args.crf_iterations or [engine.crf_iterations]]
        def partial(so_far: dict) -> None:
            if args.out:
                args.out.write_text(json.dumps({**report, "crf_quality": so_far, "partial": True}, indent=2) + "\n")

        report["crf_quality"] = crf_quality(engine, args.data, args.val or None, sweep, args.reference_cache, partial)
    emit(report, args.out)


if __name__ == "__main__":
    main()
