"""Inference speed of c2f's DeepLab and FPN on EfficientNet-Lite0, against this machine's own ceiling.

What one run measures, on the CPU and in one process (memory excepted: each of those gets a fresh one):

* the practical fp32 peak: a large square matmul in torch (MKL), numpy (OpenBLAS) and ONNX Runtime
  (MLAS), GFLOP/s; the best of the three is the ceiling the models are compared with;
* per model (DeepLab output stride 16 with 21 classes, FPN with 2 classes), per input size and batch:
  images/s for ONNX Runtime fp32 (c2f's ``OnnxBackend`` on c2f's own export), torch eager NCHW,
  torch eager channels_last and torch.compile (skipped, with the reason, when it cannot run), the
  model's FLOPs (``torch.utils.flop_counter``) and the share of the peak each backend reaches;
* the cost per image of the refinements: dense CRF (21 classes) and GrabCut;
* the engine's own overhead: ``Engine.segment`` on a backend that hands back the model's stored output
  (resizing in, upsampling and argmax out), timed directly next to ``Engine.segment`` and
  ``backend.run``, with ``to_batch``, ``softmax_resized`` and ``argmax_resized`` timed alone;
* peak resident memory of a fresh process serving the model with ONNX Runtime or torch eager.

Timings are interleaved: per model, size and batch, the matmul peak and every backend run in one loop,
one call each per round (A/B/C/A/B/C..., the order reversed every other round), after warm-up rounds.
Each timed call waits until the previous call's thread pools stopped spinning (:func:`settle`). Each
figure is a median over the rounds, wall time and CPU-seconds (all threads of this process) side
by side; the share of the peak divides by the peak measured in the same loop, so a load change during
the run slows the peak and the model alike instead of skewing their ratio. The peak is the best of
torch, numpy and ONNX Runtime (at 1 and 2 threads) in that loop; ``share_of_peak_per_cpu_s`` compares
GFLOP per CPU-second instead (what a core delivers while it runs; waiting for a busy core costs none). ONNX Runtime runs at 1 and
at 2 intra-op threads in the same loop (``onnxruntime_fp32_1thread``, ``..._2threads``), which is how
the engine's default thread count (:data:`c2f.inference.backends.DEFAULT_THREADS`) was chosen.
One JSON document goes to stdout (progress to stderr). Typical use::

    python benchmarks/inference_speed.py --out bench.json     # full run, a few minutes on 2 cores
    python benchmarks/inference_speed.py --quick              # seconds-long smoke run
"""

from __future__ import annotations

import argparse
import copy
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

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output

# Before torch loads its OpenMP runtime: idle OpenMP threads sleep instead of spinning. In the
# interleaved loop torch's threads otherwise spin for a while after each torch call and take the cores
# from the ONNX Runtime call that follows: the FPN's 2-thread figure then varied 20-23 % over three
# runs, and 2 % with passive waiting (benchmarks/README.md, "Repeatability").
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

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
    # Share of the peak is left out of --quick: at 96 px DeepLab's feature map is 6x6, so its dilated
    # ASPP convolutions (rates 6-18) read mostly padding, which the FLOP counter still counts, and the
    # "share" can pass 100 % without any timing error.
    shares: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Settings":
        if args.quick:
            # Small inputs, but as many rounds as a full run: a median of 2 on a shared machine is noise.
            return cls((96,), (1, 2), 1024, 3, 9, 20.0, 0.0, ((96, 96), (94, 125)), False, args.threads, False)
        return cls(
            tuple(args.sizes), tuple(args.batches), args.matmul_n, args.warmup, args.repeats, args.budget,
            args.min_seconds, ((321, 321), (375, 500)), not args.no_compile, args.threads, True,
        )


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays one JSON document."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


SETTLE_STEP_S = 0.005  # how often settle() looks at this process's CPU time
SETTLE_MAX_S = 0.5     # settle() gives up waiting after this long


def settle(step_s: float = SETTLE_STEP_S, max_s: float = SETTLE_MAX_S) -> float:
    """Sleep until this process is idle: two ``step_s`` in a row with under 10 % of one core used.

    Thread pools keep spinning after a call returns: ONNX Runtime's about 50 ms after a 2-thread run,
    OpenMP's (torch) about 10 ms unless it waits passively. On a 2-core machine a call timed inside
    that window shares its cores with the previous backend's spinning, and this process's CPU-seconds
    count that spinning too. Two quiet steps, not one, because a busy thread the host did not schedule
    for one step also looks quiet. Returns the seconds waited (at most about ``max_s``).
    """
    began, quiet = time.perf_counter(), 0
    while quiet < 2 and time.perf_counter() - began < max_s:
        cpu = time.process_time()
        time.sleep(step_s)
        quiet = quiet + 1 if time.process_time() - cpu < 0.1 * step_s else 0
    return time.perf_counter() - began


def interleaved(candidates: dict[str, Callable[[], object]], warmup: int, rounds: int, budget_s: float,
                min_s: float = 0.0) -> dict[str, dict[str, float]]:
    """Median wall and CPU seconds per call of each candidate, all timed in the same rounds.

    Every round calls each candidate once (order reversed every other round, so none always follows
    the same neighbour), so a load change on a shared machine hits every candidate alike. Each timed
    call starts once the previous one's thread pools stopped spinning (:func:`settle`), so no call
    competes with another backend's idle threads. ``warmup`` untimed rounds come first. Rounds
    continue until ``rounds`` are done and the loop has run ``min_s`` seconds, and stop once
    ``budget_s`` has passed, but never before 5 rounds (or ``rounds`` when smaller); at most
    10 x ``rounds``. A candidate that raises is dropped and its error returned under ``error``.
    """
    names = list(candidates)
    errors: dict[str, str] = {}

    def call(name: str) -> tuple[float, float] | None:
        settle()
        began_cpu, began = time.process_time(), time.perf_counter()
        try:
            candidates[name]()
        except Exception as exc:  # e.g. torch.compile failing on its first call
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
            names.remove(name)
            return None
        return time.perf_counter() - began, time.process_time() - began_cpu

    for _ in range(warmup):
        for name in list(names):
            call(name)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    started, done = time.perf_counter(), 0
    while done < 10 * rounds:
        elapsed = time.perf_counter() - started
        if (done >= rounds and elapsed >= min_s) or (done >= min(5, rounds) and elapsed >= budget_s):
            break
        for name in (list(names) if done % 2 == 0 else list(names)[::-1]):
            timing = call(name)
            if timing is not None:
                wall[name].append(timing[0])
                cpu[name].append(timing[1])
        done += 1
    result: dict[str, dict[str, float]] = {
        name: {"median_s": float(np.median(wall[name])), "cpu_median_s": float(np.median(cpu[name])),
               "min_s": float(min(wall[name])), "cpu_min_s": float(min(cpu[name])), "repeats": len(wall[name])}
        for name in names if wall[name]
    }
    for name, error in errors.items():
        result[name] = {"error": error}  # type: ignore[dict-item]
    return result


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


def peak_candidates(settings: Settings, workdir: Path) -> tuple[dict[str, Callable[[], object]], float]:
    """Calls of an n x n fp32 matmul in torch, numpy and ONNX Runtime, and its FLOPs.

    They are timed in the same interleaved loop as the models (:func:`bench_model`); the best of the
    three is the ceiling the models' share of the peak divides by.
    """
    import onnxruntime as ort
    import torch

    n = settings.matmul_n
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    graph = _onnx_matmul(n, workdir / "matmul.onnx")
    sessions = {}
    for threads in (1, 2):  # the thread counts the ONNX Runtime backends run at
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        sessions[threads] = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return {
        "peak_torch": lambda: torch.mm(ta, tb),
        "peak_numpy": lambda: a @ b,
        "peak_onnxruntime_1thread": lambda: sessions[1].run(None, {"a": a, "b": b}),
        "peak_onnxruntime_2threads": lambda: sessions[2].run(None, {"a": a, "b": b}),
    }, 2.0 * n**3


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


def _taps_on_input(size_in: int, size_out: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """Of a convolution's kernel taps along one axis, summed over output positions: those that read the
    input rather than its zero padding."""
    return sum(1 for y in range(size_out) for k in range(kernel) if 0 <= y * stride - padding + k * dilation < size_in)


def count_flops(model: Any, size: int) -> tuple[float, float]:
    """FLOPs of one forward pass on one size x size image (multiply-add = 2 FLOPs): all of them, as
    ``torch.utils.flop_counter`` counts, and the effective ones, without the multiply-adds of
    convolution taps that fall on zero padding. A dilated ASPP branch on a small feature map has most
    of its taps there; counting them would credit a backend with work it may skip, and its share of
    the peak could exceed 100 %."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    on_padding = 0.0

    def tally(conv: torch.nn.Conv2d, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal on_padding
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            return
        (h, w), (ho, wo) = inputs[0].shape[-2:], output.shape[-2:]
        per_tap = 2 * inputs[0].shape[0] * conv.out_channels * conv.in_channels // conv.groups
        axes = [_taps_on_input(n_in, n_out, k, s, p, d) for n_in, n_out, k, s, p, d in
                zip((h, w), (ho, wo), conv.kernel_size, conv.stride, conv.padding, conv.dilation)]
        all_taps = conv.kernel_size[0] * conv.kernel_size[1] * ho * wo
        on_padding += per_tap * (all_taps - axes[0] * axes[1])

    hooks = [m.register_forward_hook(tally) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    counter = FlopCounterMode(display=False)
    try:
        with torch.inference_mode(), counter:
            model(torch.zeros(1, 3, size, size))
    finally:
        for hook in hooks:
            hook.remove()
    total = float(counter.get_total_flops())
    return total, total - on_padding


def make_backends(model: Any, info: Any, onnx_path: Path, settings: Settings) -> tuple[dict[str, Any], dict[str, str]]:
    """The backends to time, by name, and the ones skipped with their reason."""
    import torch

    from c2f.inference import OnnxBackend, TorchBackend

    backends: dict[str, Any] = {
        "onnxruntime_fp32_1thread": OnnxBackend(onnx_path, "cpu", 1),
        "onnxruntime_fp32_2threads": OnnxBackend(onnx_path, "cpu", 2),
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


def bench_model(name: str, settings: Settings, workdir: Path) -> tuple[dict[str, Any], Path, Path]:
    """Images/s, CPU-s per image and share of peak of every backend, size and batch of one model.

    Per size and batch, the backends and the matmul peak run in one interleaved loop
    (:func:`interleaved`). Returns the results and the model's ONNX file and checkpoint.
    """
    from c2f.inference import ModelInfo

    model, checkpoint, onnx_path, parity = build_and_export(name, settings.sizes[0], workdir)
    arch, num_classes, stride, task = MODELS[name]
    info = ModelInfo(task, [f"class{i}" for i in range(num_classes)], settings.sizes[0], model.config.to_dict())
    backends, skipped = make_backends(model, info, onnx_path, settings)
    peaks, matmul_flops = peak_candidates(settings, workdir)
    result: dict[str, Any] = {
        "arch": arch, "backbone": "efficientnet-lite0", "num_classes": num_classes, "output_stride": stride,
        "onnx_parity": parity, "gflop_per_image": {}, "runs": {}, "skipped": skipped,
    }
    rng = np.random.default_rng(0)
    for size in settings.sizes:
        all_flops, flops = count_flops(model, size)  # shares and GFLOP/s use the effective count
        result["gflop_per_image"][f"{size}px"] = round(flops / 1e9, 3)
        result.setdefault("gflop_per_image_with_padding_taps", {})[f"{size}px"] = round(all_flops / 1e9, 3)
        for batch in settings.batches:
            pixels = rng.uniform(0, 255, (batch, 3, size, size)).astype(np.float32)
            calls = {**peaks, **{key: (lambda backend=backend: backend.run(pixels)) for key, backend in backends.items()}}
            began = time.perf_counter()
            timings = interleaved(calls, settings.warmup, settings.repeats, settings.budget_s, settings.min_s)
            # The ceiling is each matmul's best round, not its median: what this machine has been seen
            # to deliver, against which a backend's median round is measured.
            peak = {key: round(matmul_flops / t["min_s"] / 1e9, 1) for key, t in timings.items()
                    if key in peaks and "min_s" in t}
            peak_cpu = {key: round(matmul_flops / t["cpu_min_s"] / 1e9, 1) for key, t in timings.items()
                        if key in peaks and "min_s" in t}
            peak_gflops, peak_cpu_gflops = max(peak.values()), max(peak_cpu.values())
            runs: dict[str, Any] = {"peak_gflops": peak, "practical_peak_gflops": peak_gflops,
                                    "peak_gflop_per_cpu_s": peak_cpu, "practical_peak_gflop_per_cpu_s": peak_cpu_gflops,
                                    "loop_wall_s": round(time.perf_counter() - began, 1),
                                    "load_average_1min": round(os.getloadavg()[0], 2)}
            for key in backends:
                timing = timings[key]
                if "error" in timing:
                    skipped[key] = f"failed: {timing['error']}"
                    del backends[key]
                    log(f"{name}: {key} {skipped[key]}")
                    continue
                per_image = timing["median_s"] / batch
                gflops = flops / per_image / 1e9
                runs[key] = {
                    "images_per_s": round(1 / per_image, 2),
                    "ms_per_image": round(per_image * 1000, 2),
                    "cpu_s_per_image": round(timing["cpu_median_s"] / batch, 4),
                    "gflops": round(gflops, 1),
                    "repeats": timing["repeats"],
                }
                if settings.shares:
                    runs[key]["share_of_peak"] = round(gflops / peak_gflops, 3)
                    # per CPU-second: what one busy core delivers, immune to waiting for a shared core
                    runs[key]["share_of_peak_per_cpu_s"] = round(
                        flops * batch / timing["cpu_median_s"] / 1e9 / peak_cpu_gflops, 3)
                log(f"{name} {size}px batch {batch} {key}: {runs[key]['images_per_s']} img/s, "
                    f"{runs[key]['cpu_s_per_image']} CPU-s/img")
            one, two = runs.get("onnxruntime_fp32_1thread"), runs.get("onnxruntime_fp32_2threads")
            if one and two:
                runs["onnxruntime_2_vs_1_thread"] = {
                    "speedup": round(two["images_per_s"] / one["images_per_s"], 3),
                    "cpu_s_ratio": round(two["cpu_s_per_image"] / one["cpu_s_per_image"], 3)}
            result["runs"].setdefault(f"{size}px", {})[f"batch{batch}"] = runs
    _reset_compiler()
    return result, onnx_path, checkpoint


def _reset_compiler() -> None:
    import torch

    torch.compiler.reset()


# --- refinement and engine overhead -------------------------------------------------------------


def demo_image(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A demo-dataset photograph-like image at exactly height x width, and its object mask."""
    from c2f.data.synthetic import render_demo_image

    image, mask = render_demo_image(np.random.default_rng(seed), "disc", size=max(height, width))
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    mask = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    return image, mask


def bench_refinement(onnx_path: Path, settings: Settings) -> dict[str, Any]:
    """ms (wall) and CPU-ms per image of the dense CRF and GrabCut, full size against c2f's defaults.

    CRF on the model's own probabilities: all classes at full size, and :func:`c2f.inference.bounded_crf`
    at :data:`c2f.inference.CRF_MAX_PIXELS` with classes pruned, as ``Engine.segment(crf=True)`` runs it.
    GrabCut at full size with OpenCV's usual 5 iterations, and at c2f's defaults
    (:data:`c2f.refine.grabcut.GRABCUT_MAX_SIDE`, :data:`~c2f.refine.grabcut.GRABCUT_ITERATIONS`).
    """
    from c2f.inference import CRF_MAX_PIXELS, Engine, OnnxBackend, predict_from_logits
    from c2f.refine.crf import dense_crf
    from c2f.refine.grabcut import GRABCUT_ITERATIONS, GRABCUT_MAX_SIDE, grabcut_refine

    engine = Engine(OnnxBackend(onnx_path, "cpu", settings.threads), batch_size=1)
    result: dict[str, Any] = {"crf_classes": engine.info.num_classes, "crf_iterations": 5,
                              "grabcut_full_iterations": 5, "grabcut_iterations": GRABCUT_ITERATIONS,
                              "crf_max_pixels": CRF_MAX_PIXELS, "grabcut_max_side": GRABCUT_MAX_SIDE}
    for height, width in settings.refine_shapes:
        image, mask = demo_image(height, width)
        (logits, _), = list(engine.logits([image]))
        probs, _ = next(iter(engine.probabilities([image])))
        # GrabCut starts from a coarse mask: the object grown by a few pixels, as a saliency map would be.
        coarse = cv2.dilate(mask.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        timings = interleaved({
            "crf_full": lambda: dense_crf(image, probs),
            "crf_default": lambda: predict_from_logits(image, logits, crf=True),
            "grabcut_full": lambda: grabcut_refine(image, coarse, iterations=5, max_side=None),
            "grabcut_default": lambda: grabcut_refine(image, coarse),
        }, 1, settings.repeats, settings.budget_s, settings.min_s)
        key = f"{width}x{height}"
        for name, timing in timings.items():
            result[f"{name}_ms_{key}"] = round(timing["median_s"] * 1000, 1)
            result[f"{name}_cpu_ms_{key}"] = round(timing["cpu_median_s"] * 1000, 1)
        log(f"refinement {key}: {timings}")
    return result


class StoredOutput:
    """A :class:`c2f.inference.Backend` that returns one stored model output at once.

    ``Engine.segment`` over it costs exactly the engine's own work around the model call, timed
    directly: the difference of two ~100 ms timings (segment minus run) would bury a ~10 ms figure
    in their noise.
    """

    def __init__(self, backend: Any, logits: np.ndarray) -> None:
        self.info, self.device, self.logits = backend.info, backend.device, logits

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return self.logits


def bench_engine_overhead(onnx_path: Path, settings: Settings) -> dict[str, Any]:
    """The engine's own work per image around the model call, for photo-sized inputs at the model size."""
    from c2f.inference import Engine, OnnxBackend, argmax_resized, softmax_resized, to_batch

    backend = OnnxBackend(onnx_path, "cpu", settings.threads)
    size = backend.info.input_size
    height, width = settings.refine_shapes[-1]
    result: dict[str, Any] = {"image": f"{width}x{height}", "model_input": f"{size}x{size}"}
    for batch in settings.batches:
        images = [demo_image(height, width, seed)[0] for seed in range(batch)]
        engine = Engine(backend, batch_size=batch)
        pixels = to_batch(images, size)
        logits = backend.run(pixels)
        engine_alone = Engine(StoredOutput(backend, logits), batch_size=batch)
        timings = interleaved({
            "segment": lambda: engine.segment(images),
            "run": lambda: backend.run(pixels),
            "overhead": lambda: engine_alone.segment(images),
            "to_batch": lambda: to_batch(images, size),
            "softmax_resized": lambda: [softmax_resized(logit, height, width) for logit in logits],
            "argmax_resized": lambda: [argmax_resized(logit, height, width) for logit in logits],
        }, settings.warmup, settings.repeats, settings.budget_s, settings.min_s)
        per_image = {name: t["median_s"] / batch * 1000 for name, t in timings.items()}
        result[f"batch{batch}"] = {
            "segment_ms_per_image": round(per_image["segment"], 2),
            "backend_run_ms_per_image": round(per_image["run"], 2),
            "overhead_ms_per_image": round(per_image["overhead"], 2),
            "overhead_cpu_ms_per_image": round(timings["overhead"]["cpu_median_s"] / batch * 1000, 2),
            "to_batch_ms_per_image": round(per_image["to_batch"], 2),
            "softmax_resized_ms_per_image": round(per_image["softmax_resized"], 2),
            "argmax_resized_ms_per_image": round(per_image["argmax_resized"], 2),
            "segment_cpu_s_per_image": round(timings["segment"]["cpu_median_s"] / batch, 4),
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
    from c2f.inference.backends import DEFAULT_THREADS

    runs = deeplab["runs"][f"{size}px"]["batch1"]
    onnx = runs["onnxruntime_fp32_1thread" if DEFAULT_THREADS == 1 else "onnxruntime_fp32_2threads"]
    eager = runs["torch_eager_channels_last"]
    speedup = onnx["images_per_s"] / eager["images_per_s"]
    share = onnx.get("share_of_peak")
    return {
        "config": f"deeplab {size}px batch 1, ONNX Runtime at the engine's default {DEFAULT_THREADS} thread(s)",
        "onnx_images_per_s": onnx["images_per_s"],
        "eager_channels_last_images_per_s": eager["images_per_s"],
        "speedup_over_eager_channels_last": round(speedup, 2),
        "speedup_target": TARGET_SPEEDUP,
        "speedup_met": speedup >= TARGET_SPEEDUP,
        "share_of_peak": share,
        "share_of_peak_target": TARGET_PEAK_SHARE,
        "share_of_peak_met": None if share is None else share >= TARGET_PEAK_SHARE,
    }


def run(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Every measurement, in one JSON-ready dict."""
    import torch

    if settings.threads:
        torch.set_num_threads(settings.threads)
    report: dict[str, Any] = {"machine": machine_info(settings), "settings": asdict(settings)}
    report["models"] = {}
    for name in MODELS:
        report["models"][name], model_onnx, model_checkpoint = bench_model(name, settings, workdir)
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
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds before each interleaved loop")
    parser.add_argument("--repeats", type=int, default=11,
                        help="timed rounds per loop (more, up to 10x, while under --min-seconds)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="keep repeating a fast loop until it has run this long")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds after which a loop stops repeating (after at least 5 rounds)")
    parser.add_argument("--matmul-n", type=int, default=2048,
                        help="side of the peak's matmul (2048: near the ceiling yet short enough to interleave)")
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
    emit(report, args.out)


if __name__ == "__main__":
    main()
