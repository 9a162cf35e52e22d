r"""Should c2f get an OpenVINO backend? bf16 vs fp32 agreement and speed on a trained model (issue #17).

The issue's rule: add an optional OpenVINO backend only if, on a model trained on the real
photographs, OpenVINO bf16 keeps at least 99.5 % per-pixel argmax agreement with fp32 on the VOC val
images and is at least 1.5x faster; otherwise report the figures and add nothing.

What one run does, in one process on the CPU:

* exports the checkpoint with c2f's own exporter (:func:`c2f.export.export_onnx`, parity measured on
  val photos), or takes an existing export (``--onnx``);
* preprocesses the val photos of the project's split (``split(load_dataset(DATA), 0.25, seed=0)``)
  with the engine's own :func:`c2f.inference.engine.to_batch` at the model's input size, so every
  backend sees exactly what ``c2f segment`` feeds the model;
* three backends on the same tensors, at the same thread count (the engine's
  :data:`~c2f.inference.backends.DEFAULT_THREADS`, i.e. one per physical core when None): ONNX Runtime
  fp32 (c2f's ``OnnxBackend``), OpenVINO CPU fp32 (``INFERENCE_PRECISION_HINT=f32``) and OpenVINO CPU
  bf16 (``INFERENCE_PRECISION_HINT=bf16``), each OpenVINO model compiled at a static shape per batch
  size (its best case), one stream, ``INFERENCE_NUM_THREADS`` = that thread count;
* quality: per-pixel argmax agreement (bf16 vs OpenVINO fp32, OpenVINO fp32 vs ONNX Runtime, bf16 vs
  ONNX Runtime) at the model's output resolution and after the engine's resize to each photo's size
  (:func:`~c2f.inference.engine.argmax_resized`, what ``c2f segment`` writes), and each backend's val
  mIoU against the ground truth (:class:`c2f.evaluation.metrics.Scorer`);
* speed: interleaved rounds (A/B/C, order reversed every other round, after warm-up rounds), each
  backend running ``--images`` preprocessed photos per round at batch 1 and at batch 8; medians of
  images/s and CPU-seconds per image (``time.process_time``, every thread of the process), and the
  bf16/fp32 and OpenVINO/ONNX Runtime ratios of those medians.

The JSON ends with ``decision``: ``add_backend = bf16_agreement >= 0.995 and bf16_speedup >= 1.5``,
the agreement being bf16 vs OpenVINO fp32 at the output resolution and the speed-up the batch-1
images/s ratio bf16 / OpenVINO fp32 (the batch-8 ratio and the ratio against ONNX Runtime, which is
what the backend would replace, are given beside it). One JSON document goes to stdout, progress to
stderr::

    python benchmarks/openvino_bf16.py --checkpoint model.pt --onnx model.onnx --data ../shared/data/voc10-coseg \
        --rounds 21 --warmup 3 --out ov.json
    python benchmarks/openvino_bf16.py --onnx model.onnx --data DATA --quick     # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from c2f.data.datasets import ground_truth, split
from c2f.data.io import read_image
from c2f.data.layouts import load_dataset
from c2f.evaluation.metrics import Scorer
from c2f.inference import OnnxBackend
from c2f.inference.backends import DEFAULT_THREADS
from c2f.inference.engine import argmax_resized, to_batch

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference_speed import interleaved  # noqa: E402  the interleaved timing loop, shared

# The rule for adding the backend.
MIN_AGREEMENT = 0.995
MIN_SPEEDUP = 1.5
BATCHES = (1, 8)


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays one JSON document."""
    print(f"[openvino {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def engine_threads() -> int:
    """The engine's thread count as a number: DEFAULT_THREADS, or ONNX Runtime's default (physical cores)."""
    if DEFAULT_THREADS:
        return DEFAULT_THREADS
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return set(next(line for line in handle if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime as ort
    import openvino as ov

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    core = ov.Core()
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
        "onnxruntime": ort.__version__, "openvino": ov.__version__,
        "cpu_bf16_flags": {flag: flag in flags for flag in ("avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16")},
        "openvino_cpu_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
        "threads": threads, "engine_default_threads": DEFAULT_THREADS,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- backends -------------------------------------------------------------------------------------


class OpenVinoRunner:
    """An ONNX export compiled by OpenVINO for the CPU at one precision, one static shape per batch size."""

    def __init__(self, onnx_path: Path, precision: str, size: int, batches: tuple[int, ...], threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        self.precision = precision
        self.compiled: dict[int, Any] = {}
        self.requests: dict[int, Any] = {}
        config = {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
                  "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        for batch in batches:
            model = core.read_model(str(onnx_path))
            model.reshape({model.inputs[0].get_any_name(): ov.PartialShape([batch, 3, size, size])})
            began = time.perf_counter()
            self.compiled[batch] = core.compile_model(model, "CPU", config)
            self.requests[batch] = self.compiled[batch].create_infer_request()
            log(f"openvino {precision} batch {batch}: compiled in {time.perf_counter() - began:.1f} s")

    def run(self, pixels: np.ndarray) -> np.ndarray:
        request = self.requests[len(pixels)]
        request.infer({0: np.ascontiguousarray(pixels, dtype=np.float32)})
        return request.get_output_tensor(0).data.copy()

    def properties(self) -> dict[str, Any]:
        """What OpenVINO says it compiled: the precision hint read back and the runtime precisions of its nodes."""
        compiled = self.compiled[min(self.compiled)]
        runtime: dict[str, int] = {}
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "runtimePrecision" in info:
                name = str(info["runtimePrecision"].astype(str) if hasattr(info["runtimePrecision"], "astype")
                           else info["runtimePrecision"])
                runtime[name] = runtime.get(name, 0) + 1
        return {
            "inference_precision_hint": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "inference_num_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
            "num_streams": str(compiled.get_property("NUM_STREAMS")),
            "runtime_node_precisions": runtime,
        }


def make_backends(onnx_path: Path, size: int, threads: int) -> dict[str, Any]:
    """The three backends by name; each has ``run(pixels) -> logits``."""
    return {
        "onnxruntime_fp32": OnnxBackend(onnx_path, "cpu", threads),
        "openvino_fp32": OpenVinoRunner(onnx_path, "f32", size, BATCHES, threads),
        "openvino_bf16": OpenVinoRunner(onnx_path, "bf16", size, BATCHES, threads),
    }


def run_batched(run: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray, batch: int) -> np.ndarray:
    """Logits of every image, ``batch`` at a time; a short last chunk is padded to the full batch."""
    out = []
    for start in range(0, len(pixels), batch):
        chunk = pixels[start : start + batch]
        short = batch - len(chunk)
        if short:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
        out.append(run(chunk)[: batch - short])
    return np.concatenate(out)


# --- quality --------------------------------------------------------------------------------------


PAIRS = (("openvino_bf16", "openvino_fp32"), ("openvino_fp32", "onnxruntime_fp32"), ("openvino_bf16", "onnxruntime_fp32"))


def quality(backends: dict[str, Any], images: list[np.ndarray], truths: list[np.ndarray], pixels: np.ndarray,
            class_names: list[str]) -> dict[str, Any]:
    """Argmax agreement between backends (model and image resolution) and each backend's val mIoU."""
    runs = {name: backend.run for name, backend in backends.items()}
    same_model = {pair: 0 for pair in PAIRS}
    same_image = {pair: 0 for pair in PAIRS}
    max_diff = {pair: 0.0 for pair in PAIRS}
    model_pixels = image_pixels = 0
    scorers = {name: Scorer(len(class_names)) for name in runs}
    chunk = 8
    for start in range(0, len(images), chunk):
        block = pixels[start : start + chunk]
        logits = {name: run_batched(run, block, 8) for name, run in runs.items()}
        labels = {name: value.argmax(axis=1) for name, value in logits.items()}
        model_pixels += labels["onnxruntime_fp32"].size
        for pair in PAIRS:
            same_model[pair] += int((labels[pair[0]] == labels[pair[1]]).sum())
            max_diff[pair] = max(max_diff[pair], float(np.abs(logits[pair[0]] - logits[pair[1]]).max()))
        for offset, (image, truth) in enumerate(zip(images[start : start + chunk], truths[start : start + chunk])):
            height, width = image.shape[:2]
            maps = {name: argmax_resized(value[offset], height, width) for name, value in logits.items()}
            image_pixels += height * width
            for pair in PAIRS:
                same_image[pair] += int((maps[pair[0]] == maps[pair[1]]).sum())
            for name, label_map in maps.items():
                scorers[name].update(truth, label_map)
        log(f"quality: {min(start + chunk, len(images))}/{len(images)} images")
    key = lambda pair: f"{pair[0]}_vs_{pair[1]}"  # noqa: E731
    summaries = {name: scorer.summary(class_names) for name, scorer in scorers.items()}
    return {
        "images": len(images),
        "argmax_agreement_model_resolution": {key(p): round(same_model[p] / model_pixels, 6) for p in PAIRS},
        "argmax_agreement_image_resolution": {key(p): round(same_image[p] / image_pixels, 6) for p in PAIRS},
        "max_abs_logit_diff": {key(p): round(max_diff[p], 5) for p in PAIRS},
        "miou": {name: round(s["miou"] * 100, 2) for name, s in summaries.items()},
        "pixel_accuracy": {name: round(s["pixel_accuracy"] * 100, 2) for name, s in summaries.items()},
    }


# --- speed ----------------------------------------------------------------------------------------


def speed(backends: dict[str, Any], pixels: np.ndarray, warmup: int, rounds: int) -> dict[str, Any]:
    """Images/s and CPU-s per image of each backend at each batch size: inference_speed's interleaved
    rounds (order reversed every other round), exactly ``rounds`` of them after ``warmup``, medians."""
    runs = {name: backend.run for name, backend in backends.items()}
    count = len(pixels)
    result: dict[str, Any] = {"images_per_round": count, "warmup_rounds": warmup, "rounds": rounds}
    for batch in BATCHES:
        began_loop = time.perf_counter()
        candidates = {name: (lambda run=run: run_batched(run, pixels, batch)) for name, run in runs.items()}
        timed = interleaved(candidates, warmup, rounds, budget_s=float("inf"))
        failed = {name: row["error"] for name, row in timed.items() if "error" in row}
        if failed:
            raise RuntimeError(f"batch {batch}: {failed}")
        rows = {}
        for name, row in timed.items():
            rows[name] = {"images_per_s": round(count / row["median_s"], 2),
                          "ms_per_image": round(1000 * row["median_s"] / count, 2),
                          "cpu_s_per_image": round(row["cpu_median_s"] / count, 4),
                          "best_images_per_s": round(count / row["min_s"], 2)}
        log(f"batch {batch}: " + ", ".join(f"{name} {rows[name]['images_per_s']:.1f} img/s" for name in timed))
        ratio = lambda a, b, k: round(rows[a][k] / rows[b][k], 3)  # noqa: E731
        rows["ratios"] = {
            "bf16_vs_fp32_images_per_s": ratio("openvino_bf16", "openvino_fp32", "images_per_s"),
            "bf16_vs_fp32_cpu_s_per_image": ratio("openvino_bf16", "openvino_fp32", "cpu_s_per_image"),
            "openvino_fp32_vs_onnxruntime_images_per_s": ratio("openvino_fp32", "onnxruntime_fp32", "images_per_s"),
            "openvino_fp32_vs_onnxruntime_cpu_s_per_image": ratio("openvino_fp32", "onnxruntime_fp32", "cpu_s_per_image"),
            "openvino_bf16_vs_onnxruntime_images_per_s": ratio("openvino_bf16", "onnxruntime_fp32", "images_per_s"),
            "openvino_bf16_vs_onnxruntime_cpu_s_per_image": ratio("openvino_bf16", "onnxruntime_fp32", "cpu_s_per_image"),
        }
        rows["loop_wall_s"] = round(time.perf_counter() - began_loop, 1)
        rows["load_average_1min"] = round(os.getloadavg()[0], 2)
        result[f"batch{batch}"] = rows
    return result


# --- run ------------------------------------------------------------------------------------------


def export(checkpoint: Path, onnx_path: Path, samples: list[np.ndarray]) -> dict[str, Any]:
    from c2f.export import export_onnx

    began = time.perf_counter()
    parity = export_onnx(checkpoint, onnx_path, samples)
    log(f"exported {onnx_path} in {time.perf_counter() - began:.1f} s ({parity})")
    return {"max_abs_logit_diff": parity.max_abs_logit_diff, "argmax_agreement": parity.argmax_agreement}


def decision(quality_report: dict[str, Any], speed_report: dict[str, Any]) -> dict[str, Any]:
    agreement = quality_report["argmax_agreement_model_resolution"]["openvino_bf16_vs_openvino_fp32"]
    speedup = speed_report["batch1"]["ratios"]["bf16_vs_fp32_images_per_s"]
    return {
        "rule": f"add_backend = bf16_agreement >= {MIN_AGREEMENT} and bf16_speedup >= {MIN_SPEEDUP}",
        "bf16_agreement": agreement,
        "bf16_agreement_image_resolution":
            quality_report["argmax_agreement_image_resolution"]["openvino_bf16_vs_openvino_fp32"],
        "bf16_speedup": speedup,
        "bf16_speedup_batch8": speed_report["batch8"]["ratios"]["bf16_vs_fp32_images_per_s"],
        "bf16_vs_onnxruntime_speedup_batch1": speed_report["batch1"]["ratios"]["openvino_bf16_vs_onnxruntime_images_per_s"],
        "bf16_vs_onnxruntime_speedup_batch8": speed_report["batch8"]["ratios"]["openvino_bf16_vs_onnxruntime_images_per_s"],
        "agreement_met": agreement >= MIN_AGREEMENT,
        "speedup_met": speedup >= MIN_SPEEDUP,
        "add_backend": agreement >= MIN_AGREEMENT and speedup >= MIN_SPEEDUP,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or engine_threads()
    report: dict[str, Any] = {"benchmark": "openvino_bf16", "machine": machine_info(threads)}
    dataset = load_dataset(args.data)
    _, val = split(dataset, 0.25, seed=0)
    samples = val.samples[: args.val] if args.val else val.samples
    log(f"reading {len(samples)} val photos")
    images = [read_image(sample.image) for sample in samples]
    truths = [ground_truth(sample, dataset) for sample in samples]
    onnx_path = args.onnx
    if args.checkpoint is not None and not onnx_path.exists():
        report["export_parity"] = export(args.checkpoint, onnx_path, images[:8])
    info = OnnxBackend(onnx_path, "cpu", threads).info
    size = info.input_size
    report["model"] = {"onnx": str(onnx_path), "checkpoint": str(args.checkpoint) if args.checkpoint else None,
                       "task": info.task, "classes": info.num_classes, "input_size": size, "config": info.config}
    if info.class_names != dataset.class_names:
        raise SystemExit(f"the model's classes {info.class_names} are not the dataset's {dataset.class_names}")
    backends = make_backends(onnx_path, size, threads)
    report["openvino_compiled"] = {name: backend.properties() for name, backend in backends.items()
                                   if isinstance(backend, OpenVinoRunner)}
    log(f"preprocessing with the engine's to_batch at {size} px")
    pixels = to_batch(images, size)
    report["quality"] = quality(backends, images, truths, pixels, dataset.class_names)
    log(f"quality: {json.dumps(report['quality']['argmax_agreement_model_resolution'])}")
    report["speed"] = speed(backends, pixels[: args.images], args.warmup, args.rounds)
    report["decision"] = decision(report["quality"], report["speed"])
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="c2f checkpoint; exported to --onnx when that file is missing")
    parser.add_argument("--onnx", type=Path, required=True, help="c2f ONNX export (written from --checkpoint if missing)")
    parser.add_argument("--data", type=Path, required=True, help="VOC co-segmentation folder (the val split is used)")
    parser.add_argument("--val", type=int, default=0, help="val photos for the quality pass (0: all)")
    parser.add_argument("--images", type=int, default=16, help="preprocessed val photos each backend runs per timed round")
    parser.add_argument("--rounds", type=int, default=9, help="timed interleaved rounds per batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before each batch size's loop")
    parser.add_argument("--threads", type=int, help="threads for every backend (default: the engine's)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 16 val photos, 8 per round, 2 rounds")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = parser.parse_args(argv)
    if args.onnx is not None and not args.onnx.exists() and args.checkpoint is None:
        parser.error(f"{args.onnx} does not exist; give --checkpoint to export it")
    if args.quick:
        args.val, args.images, args.rounds, args.warmup = 16, 8, 2, 1
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    emit(report, args.out)


if __name__ == "__main__":
    main()
