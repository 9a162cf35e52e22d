"""Inference speed of c2f's DeepLab and FPN on EfficientNet-Lite0, against this machine's own ceiling.

What one run measures, on the CPU and in one process (memory excepted: each of those gets a fresh one):

* the practical fp32 peak: a large square matmul in torch (MKL), numpy (OpenBLAS) and ONNX Runtime
  (MLAS), GFLOP/s; the best of the three is the ceiling the models are compared with;
* per model (DeepLab output stride 16 with 21 classes, FPN with 2 classes), per input size and batch:
  images/s for ONNX Runtime fp32 (c2f's ``OnnxBackend`` on c2f's own export), torch eager NCHW,
  torch eager channels_last and torch.compile (skipped, with the reason, when it cannot run), the
  model's FLOPs (``torch.utils.flop_counter``) and the share of the peak each backend reaches;
* the cost per image of the refinements: dense CRF (21 classes) and GrabCut (5 iterations);
* the engine's own overhead: ``Engine.segment`` minus ``backend.run`` (resizing in, upsampling and
  softmax out, argmax), with ``to_batch`` and ``softmax_resized`` timed alone;
* peak resident memory of a fresh process serving the model with ONNX Runtime or torch eager.

Every timing is a median over a bounded number of repeats after warm-up runs. One JSON document goes
to stdout (progress to stderr). Typical use::

    python benchmarks/inference_speed.py --out bench.json     # full run, a few minutes on 2 cores
    python benchmarks/inference_speed.py --quick              # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

# The ONNX model's issue-level targets (DeepLab, 321 px, batch 1): speed-up over torch eager
# channels_last, and share of the measured practical peak.
TARGET_SPEEDUP = 1.5
TARGET_PEAK_SHARE = 0.70


@dataclass(frozen=True)
class Settings:
    """How much work one run does; ``--quick`` shrinks everything to a smoke test."""

    sizes: tuple[int, ...]
    batches: tuple[int, ...]
    matmul_n: int
    warmup: int
    repeats: int
    budget_s: float
    min_s: float
    refine_shapes: tuple[tuple[int, int], ...]  # (height, width) of the CRF/GrabCut test images
    compile: bool
    threads: int | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        if args.quick:
            return cls((96,), (1, 2), 1024, 1, 2, 2.0, 0.0, ((96, 96), (94, 125)), False, args.threads)
        return cls(
            tuple(args.sizes), tuple(args.batches), 4096, args.warmup, args.repeats, args.budget, args.min_seconds,
            ((321, 321), (375, 500)), not args.no_compile, args.threads,
        )

    def timed(self, fn: Callable[[], object], warmup: int | None = None) -> dict[str, float]:
        """:func:`time_call` with this run's repeats, budget and minimum time."""
        return time_call(fn, self.warmup if warmup is None else warmup, self.repeats, self.budget_s, self.min_s)


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays one JSON document."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def time_call(fn: Callable[[], object], warmup: int, repeats: int, budget_s: float,
              min_s: float = 1.0) -> dict[str, float]:
    """Median and best wall time of ``fn`` after ``warmup`` untimed runs.

    Timed runs continue until ``repeats`` runs have taken at least ``min_s`` seconds (so a fast model
    gets enough samples for a stable median on a shared machine), and stop early once ``budget_s``
    seconds have passed, but never before 3 runs (or ``repeats`` when smaller). At most
    10 x ``repeats`` runs are made.
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < 10 * repeats:
        count, elapsed = len(samples), time.perf_counter() - started
        if (count >= repeats and elapsed >= min_s) or (count >= min(3, repeats) and elapsed >= budget_s):
            break
        began = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - began)
    return {"median_s": float(np.median(samples)), "min_s": float(min(samples)), "repeats": len(samples)}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB.

    Linux's ``VmHWM`` is read first: ``ru_maxrss`` survives ``exec``, so a freshly spawned child would
    report its parent's peak. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS) is the fallback.
    """
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024


# --- practical peak -------------------------------------------------------------------------------


def _onnx_matmul(n: int, path: Path) -> Path:
    """A one-node ONNX graph ``C = A @ B`` on n x n fp32 inputs."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, n]) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def measure_peak(settings: Settings, workdir: Path) -> dict[str, Any]:
    """GFLOP/s of an n x n fp32 matmul in torch, numpy and ONNX Runtime; the best is the ceiling."""
    import onnxruntime as ort
    import torch

    n = settings.matmul_n
    flops = 2.0 * n**3
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    options = ort.SessionOptions()
    if settings.threads:
        options.intra_op_num_threads = settings.threads
    session = ort.InferenceSession(str(_onnx_matmul(n, workdir / "matmul.onnx")), options,
                                   providers=["CPUExecutionProvider"])
    candidates: dict[str, Callable[[], object]] = {
        "torch": lambda: torch.mm(ta, tb),
        "numpy": lambda: a @ b,
        "onnxruntime": lambda: session.run(None, {"a": a, "b": b}),
    }
    result: dict[str, Any] = {"matmul_n": n}
    for name, fn in candidates.items():
        timing = time_call(fn, 2, max(settings.repeats // 2, 3), settings.budget_s, settings.min_s)
        result[f"{name}_gflops"] = round(flops / timing["median_s"] / 1e9, 1)
        log(f"peak: {name} {result[f'{name}_gflops']} GFLOP/s")
    result["practical_peak_gflops"] = max(result[f"{name}_gflops"] for name in candidates)
    return result


# --- models ---------------------------------------------------------------------------------------


MODELS = {
    # name: (arch, num_classes, output stride, task)
    "deeplab": ("deeplab", 21, 16, "semantic"),
    "fpn": ("fpn", 2, 32, "foreground"),
}


def build_and_export(name: str, input_size: int, workdir: Path) -> tuple[Any, Path, Path, dict[str, float]]:
    """An ImageNet-initialised model, its c2f checkpoint and its c2f ONNX export (with parity)."""
    import torch

    from c2f.export import export_onnx
    from c2f.models import build_model
    from c2f.checkpoint import make_checkpoint, save_checkpoint

    arch, num_classes, stride, task = MODELS[name]
    torch.manual_seed(0)
    model = build_model(arch, "efficientnet-lite0", num_classes, output_stride=stride, pretrained=True).eval()
    classes = [f"class{i}" for i in range(num_classes)]
    checkpoint = save_checkpoint(make_checkpoint(model, task, classes, input_size), workdir / f"{name}.pt")
    began = time.perf_counter()
    parity = export_onnx(checkpoint, workdir / f"{name}.onnx")
    log(f"{name}: exported in {time.perf_counter() - began:.1f} s ({parity})")
    return model, checkpoint, workdir / f"{name}.onnx", {
        "max_abs_logit_diff": parity.max_abs_logit_diff, "argmax_agreement": parity.argmax_agreement,
    }


def count_flops(model: Any, size: int) -> float:
    """FLOPs of one forward pass on one size x size image (multiply-add = 2 FLOPs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, size, size))
    return float(counter.get_total_flops())


def make_backends(model: Any, info: Any, onnx_path: Path, settings: Settings) -> tuple[dict[str, Any], dict[str, str]]:
    """The backends to time, by name, and the ones skipped with their reason."""
    import torch

    from c2f.inference import OnnxBackend, TorchBackend

    backends: dict[str, Any] = {
        "onnxruntime_fp32": OnnxBackend(onnx_path, "cpu", settings.threads),
        "torch_eager_nchw": TorchBackend(copy.deepcopy(model), info, "cpu", channels_last=False),
        "torch_eager_channels_last": TorchBackend(copy.deepcopy(model), info, "cpu", channels_last=True),
    }
    skipped: dict[str, str] = {}
    if not settings.compile:
        skipped["torch_compile"] = "disabled (--quick or --no-compile)"
    else:
        compiled = TorchBackend(copy.deepcopy(model), info, "cpu", channels_last=True)
        try:
            compiled.model = torch.compile(compiled.model, dynamic=False)
        except Exception as exc:  # any failure means: not available here
            skipped["torch_compile"] = f"torch.compile failed: {type(exc).__name__}: {exc}"
        else:
            backends["torch_compile"] = compiled
    return backends, skipped


def bench_model(name: str, settings: Settings, peak_gflops: float, workdir: Path) -> tuple[dict[str, Any], Path, Path]:
    """Images/s and share of peak for every backend, size and batch of one model.

    Returns the results and the model's ONNX file and checkpoint, for the measurements that follow.
    """
    import torch

    from c2f.inference import ModelInfo

    model, checkpoint, onnx_path, parity = build_and_export(name, settings.sizes[0], workdir)
    arch, num_classes, stride, task = MODELS[name]
    info = ModelInfo(task, [f"class{i}" for i in range(num_classes)], settings.sizes[0], model.config.to_dict())
    backends, skipped = make_backends(model, info, onnx_path, settings)
    result: dict[str, Any] = {
        "arch": arch, "backbone": "efficientnet-lite0", "num_classes": num_classes, "output_stride": stride,
        "onnx_parity": parity, "gflop_per_image": {}, "runs": {}, "skipped": skipped,
    }
    rng = np.random.default_rng(0)
    for size in settings.sizes:
        flops = count_flops(model, size)
        result["gflop_per_image"][f"{size}px"] = round(flops / 1e9, 3)
        for batch in settings.batches:
            pixels = rng.uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
            runs: dict[str, Any] = {}
            # One backend after the other, never interleaved: ONNX Runtime's and OpenMP's worker threads
            # spin after each call and would slow the next call of the other runtime in this process.
            for backend_name, backend in list(backends.items()):
                began = time.perf_counter()
                try:
                    timing = settings.timed(lambda: backend.run(pixels))
                except Exception as exc:  # torch.compile fails on its first call
                    if backend_name != "torch_compile":
                        raise
                    skipped[backend_name] = f"torch.compile failed: {type(exc).__name__}: {str(exc)[:300]}"
                    del backends[backend_name]
                    log(f"{name}: {skipped[backend_name]}")
                    continue
                per_image = timing["median_s"] / batch
                gflops = flops / per_image / 1e9
                runs[backend_name] = {
                    "images_per_s": round(1 / per_image, 2),
                    "ms_per_image": round(per_image * 1000, 2),
                    "gflops": round(gflops, 1),
                    "share_of_peak": round(gflops / peak_gflops, 3),
                    "repeats": timing["repeats"],
                    "wall_s_incl_warmup": round(time.perf_counter() - began, 1),
                    "load_average_1min": round(os.getloadavg()[0], 2),
                }
                log(f"{name} {size}px batch {batch} {backend_name}: {runs[backend_name]['images_per_s']} img/s")
            result["runs"][f"{size}px"] = result["runs"].get(f"{size}px", {})
            result["runs"][f"{size}px"][f"batch{batch}"] = runs
    torch.compiler.reset()
    return result, onnx_path, checkpoint


# --- refinement and engine overhead -------------------------------------------------------------


def demo_image(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A demo-dataset photograph-like image at exactly height x width, and its object mask."""
    from c2f.data.synthetic import render_demo_image

    image, mask = render_demo_image(np.random.default_rng(seed), "disc", size=max(height, width))
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return image, mask


def bench_refinement(onnx_path: Path, settings: Settings) -> dict[str, Any]:
    """ms per image of dense CRF (on the model's own probabilities) and of GrabCut (5 iterations)."""
    from c2f.inference import Engine, OnnxBackend
    from c2f.refine.crf import dense_crf
    from c2f.refine.grabcut import grabcut_refine

    engine = Engine(OnnxBackend(onnx_path, "cpu", settings.threads), batch_size=1)
    result: dict[str, Any] = {"crf_classes": engine.info.num_classes, "crf_iterations": 5, "grabcut_iterations": 5}
    for height, width in settings.refine_shapes:
        image, mask = demo_image(height, width)
        probs, _ = next(iter(engine.probabilities([image])))
        # GrabCut starts from a coarse mask: the object grown by a few pixels, as a saliency map would be.
        coarse = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        crf = settings.timed(lambda: dense_crf(image, probs), warmup=1)
        cut = settings.timed(lambda: grabcut_refine(image, coarse, iterations=5), warmup=1)
        key = f"{width}x{height}"
        result[f"crf_ms_{key}"] = round(crf["median_s"] * 1000, 1)
        result[f"grabcut_ms_{key}"] = round(cut["median_s"] * 1000, 1)
        log(f"refinement {key}: CRF {result[f'crf_ms_{key}']} ms, GrabCut {result[f'grabcut_ms_{key}']} ms")
    return result


def bench_engine_overhead(onnx_path: Path, settings: Settings) -> dict[str, Any]:
    """``Engine.segment`` minus ``backend.run`` per image, for photo-sized inputs at the model size."""
    from c2f.inference import Engine, OnnxBackend, softmax_resized, to_batch

    backend = OnnxBackend(onnx_path, "cpu", settings.threads)
    size = backend.info.input_size
    height, width = settings.refine_shapes[-1]
    result: dict[str, Any] = {"image": f"{width}x{height}", "model_input": f"{size}x{size}"}
    for batch in settings.batches:
        images = [demo_image(height, width, seed)[0] for seed in range(batch)]
        engine = Engine(backend, batch_size=batch)
        pixels = to_batch(images, size)
        logits = backend.run(pixels)
        segment = settings.timed(lambda: engine.segment(images))
        run = settings.timed(lambda: backend.run(pixels))
        prep = settings.timed(lambda: to_batch(images, size), warmup=1)
        post = settings.timed(lambda: [softmax_resized(logit, height, width) for logit in logits], warmup=1)
        result[f"batch{batch}"] = {
            "segment_ms_per_image": round(segment["median_s"] / batch * 1000, 2),
            "backend_run_ms_per_image": round(run["median_s"] / batch * 1000, 2),
            "overhead_ms_per_image": round((segment["median_s"] - run["median_s"]) / batch * 1000, 2),
            "to_batch_ms_per_image": round(prep["median_s"] / batch * 1000, 2),
            "softmax_resized_ms_per_image": round(post["median_s"] / batch * 1000, 2),
        }
        log(f"engine overhead batch {batch}: {result[f'batch{batch}']}")
    return result


# --- memory ---------------------------------------------------------------------------------------


def _serve_and_measure(path: str, size: int, batch: int, threads: int | None) -> dict[str, float]:
    """Run in a fresh process: load one model file as c2f does, run it a few times, report peak RSS.

    ``load_backend`` picks ONNX Runtime for a ``.onnx`` file and torch eager (channels_last) for a
    checkpoint, so the ONNX child never imports torch.
    """
    from c2f.inference import load_backend

    backend = load_backend(path, "cpu", threads)
    loaded = peak_rss_mib()
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
    for _ in range(3):
        backend.run(pixels)
    return {"rss_after_load_mib": round(loaded, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}


def bench_memory(onnx_path: Path, checkpoint: Path, settings: Settings) -> dict[str, Any]:
    """Peak RSS of a fresh serving process per backend, at the smallest and largest configuration."""
    result: dict[str, Any] = {}
    configs = {(settings.sizes[0], settings.batches[0]), (settings.sizes[-1], settings.batches[-1])}
    for size, batch in sorted(configs):
        for kind, path in (("onnxruntime", onnx_path), ("torch_eager_channels_last", checkpoint)):
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                measured = pool.submit(_serve_and_measure, str(path), size, batch, settings.threads).result()
            result[f"{kind}_{size}px_batch{batch}"] = measured
            log(f"memory {kind} {size}px batch {batch}: {measured}")
    return result


# --- driver ---------------------------------------------------------------------------------------


def machine_info(settings: Settings) -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime as ort
    import torch

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": ort.__version__, "torch_threads": torch.get_num_threads(),
        "onnxruntime_threads": settings.threads or "default (physical cores)",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def targets(deeplab: dict[str, Any], size: int) -> dict[str, Any]:
    """The issue's targets for the exported DeepLab at batch 1: speed-up and share of the peak."""
    runs = deeplab["runs"][f"{size}px"]["batch1"]
    onnx, eager = runs["onnxruntime_fp32"], runs["torch_eager_channels_last"]
    speedup = onnx["images_per_s"] / eager["images_per_s"]
    return {
        "config": f"deeplab {size}px batch 1",
        "onnx_images_per_s": onnx["images_per_s"],
        "eager_channels_last_images_per_s": eager["images_per_s"],
        "speedup_over_eager_channels_last": round(speedup, 2),
        "speedup_target": TARGET_SPEEDUP,
        "speedup_met": speedup >= TARGET_SPEEDUP,
        "share_of_peak": onnx["share_of_peak"],
        "share_of_peak_target": TARGET_PEAK_SHARE,
        "share_of_peak_met": onnx["share_of_peak"] >= TARGET_PEAK_SHARE,
    }


def run(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Every measurement, in one JSON-ready dict."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    report: dict[str, Any] = {"machine": machine_info(settings), "settings": asdict(settings)}
    report["peak"] = measure_peak(settings, workdir)
    peak = report["peak"]["practical_peak_gflops"]
    report["models"] = {}
    for name in MODELS:
        report["models"][name], model_onnx, model_checkpoint = bench_model(name, settings, peak, workdir)
        if name == "deeplab":
            onnx_path, checkpoint = model_onnx, model_checkpoint
    report["targets"] = targets(report["models"]["deeplab"], settings.sizes[0])
    report["refinement"] = bench_refinement(onnx_path, settings)
    report["engine_overhead"] = bench_engine_overhead(onnx_path, settings)
    report["memory"] = bench_memory(onnx_path, checkpoint, settings)
    report["memory"]["benchmark_process_peak_rss_mib"] = round(peak_rss_mib(), 1)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` overrides the size, batch and repeat settings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run (96 px, no compile)")
    parser.add_argument("--out", type=Path, help="also write the JSON report to this file")
    parser.add_argument("--sizes", type=int, nargs="+", default=[321, 512],
                        help="square input sizes; the first is the model's input size and the target's")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="batch sizes (1 must be first)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before each measurement")
    parser.add_argument("--repeats", type=int, default=10,
                        help="timed runs per measurement (more, up to 10x, while under --min-seconds)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="keep repeating a fast measurement until it has run this long")
    parser.add_argument("--budget", type=float, default=6.0,
                        help="seconds after which a measurement stops repeating (after at least 3 runs)")
    parser.add_argument("--threads", type=int, help="threads for torch and ONNX Runtime (default: theirs)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile)")
    parser.add_argument("--workdir", type=Path, help="keep the checkpoints and ONNX files here")
    args = parser.parse_args(argv)
    if args.batches[0] != 1:
        parser.error("--batches must start with 1 (the targets are measured at batch 1)")
    return args


def main(argv: list[str] | None = None) -> None:
    """Run every measurement and print the JSON report (and write it to ``--out``)."""
    args = parse_args(argv)
    settings = Settings.from_args(args)
    with tempfile.TemporaryDirectory(prefix="c2f-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        report = run(settings, workdir)
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        log(f"wrote {args.out}")
    print(text)


if __name__ == "__main__":
    main()
