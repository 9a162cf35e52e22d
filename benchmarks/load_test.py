"""Load test of the c2f HTTP service, adaptive batching on versus off (loopback only, bounded).

Starts ``bentoml serve c2f.serving.service:Segmenter`` twice (``C2F_BATCHING=1`` then ``0``) on a
free loopback port, sends N requests with concurrency C from an asyncio httpx client, and prints
one JSON report: throughput, p50/p95/p99 latency, errors, mean batch size (from /metrics) and the
server's RSS (main process + workers, via psutil) before and after each run.

    python benchmarks/load_test.py --model model.onnx                 # 1000 requests x 16, both modes
    python benchmarks/load_test.py --requests 200 --out report.json   # exports a throwaway model
    python benchmarks/load_test.py --url http://127.0.0.1:3000        # an already running server
    python benchmarks/load_test.py --big-refine                       # 20 x 4000x3000 JPEG, CRF + GrabCut

``--big-refine`` is the heavy post-processing case: 20 concurrent uploads of a 4000x3000 JPEG with
``crf=true&grabcut=true`` (batching on, no warm-up); the report gives the answered count, the status
codes and the server's peak RSS (main process + workers, sampled every 0.25 s during the run).

Hard caps: at most 5000 requests and 64 concurrent per run, and a wall-clock budget
(``--max-seconds``, default 900) for the whole script, after which no new request is sent.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's server harness
from servers import LocalServer  # noqa: E402

MAX_REQUESTS = 5000
MAX_CONCURRENCY = 64


def synthetic_jpeg(height: int = 375, width: int = 500, seed: int = 0) -> bytes:
    """A VOC-sized photo stand-in: gradient, a disc, a box and mild noise, as JPEG."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.dstack([x * 255 // width, y * 255 // height, np.full_like(x, 110)]).astype(np.uint8)
    cv2.circle(image, (width // 3, height // 2), height // 4, (240, 220, 40), -1)
    cv2.rectangle(image, (width // 2, height // 5), (4 * width // 5, 3 * height // 4), (190, 40, 50), -1)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def export_model(folder: Path, input_size: int, num_classes: int) -> Path:
    import torch

    from c2f.export import export_onnx
    from c2f.models import build_model
    from c2f.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    classes = ["background"] + [f"class{i}" for i in range(1, num_classes)]
    model = build_model("deeplab", "efficientnet-lite0", num_classes)
    checkpoint = save_checkpoint(make_checkpoint(model, "semantic", classes, input_size), folder / "bench.pt")
    export_onnx(checkpoint, folder / "bench.onnx")
    return folder / "bench.onnx"


def rss_mb(pid: int | None) -> dict[str, float] | None:
    """RSS of the server process and its workers (MB); None when the pid is unknown."""
    if pid is None:
        return None
    try:
        main = psutil.Process(pid)
        children = main.children(recursive=True)
        workers = sum(child.memory_info().rss for child in children)
        return {"main_mb": round(main.memory_info().rss / 2**20, 1), "workers_mb": round(workers / 2**20, 1),
                "total_mb": round((main.memory_info().rss + workers) / 2**20, 1)}
    except psutil.Error:
        return None


class RssPeak:
    """Samples the server's RSS (:func:`rss_mb`) in a thread; ``peak`` is the sample with the largest total."""

    def __init__(self, pid: int | None, every_s: float = 0.25) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak: dict[str, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = rss_mb(self.pid)
            if sample and (self.peak is None or sample["total_mb"] > self.peak["total_mb"]):
                self.peak = sample
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def batch_histogram(url: str) -> dict[str, float] | None:
    """Mean adaptive batch size of the ``infer`` method, from the Prometheus endpoint."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    total = count = 0.0
    for line in text.splitlines():
        if 'method_name="infer"' not in line:
            continue
        match = re.match(r"bentoml_service_adaptive_batch_size_(sum|count)\{.*\} ([0-9.e+]+)", line)
        if match:
            if match.group(1) == "sum":
                total += float(match.group(2))
            else:
                count += float(match.group(2))
    return {"batches": count, "images": total, "mean_batch": round(total / count, 2) if count else None}


async def fire(url: str, route: str, image: bytes, params: dict, requests: int, concurrency: int,
               deadline: float) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    codes: dict[str, int] = {}
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal sent
            while sent < requests and time.monotonic() < deadline:
                sent += 1
                began = time.perf_counter()
                try:
                    response = await client.post(route, params=params, files={"image": ("bench.jpg", image, "image/jpeg")})
                    key = None if response.status_code == 200 else str(response.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                code = key or "200"
                codes[code] = codes.get(code, 0) + 1
                if key is None:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors[key] = errors.get(key, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    done = len(latencies)
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "requests_sent": sent,
        "ok": done,
        "status_codes": codes,
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "truncated_by_time_cap": sent < requests,
        "elapsed_s": round(elapsed, 2),
        "throughput_rps": round(done / elapsed, 2) if elapsed else None,
        "latency_ms": {
            "mean": round(float(np.nanmean(ms)), 1),
            "p50": round(float(np.nanpercentile(ms, 50)), 1),
            "p95": round(float(np.nanpercentile(ms, 95)), 1),
            "p99": round(float(np.nanpercentile(ms, 99)), 1),
            "max": round(float(np.nanmax(ms)), 1),
        },
    }


def run_mode(args, model: Path | None, batching: bool | None, image: bytes, deadline: float, workdir: Path) -> dict:
    server = None
    url, pid = args.url, args.server_pid
    if url is None:
        env = {"C2F_BATCHING": "1" if batching else "0", "C2F_BATCH": str(args.batch)}
        if args.batch_latency_ms:
            env["C2F_BATCH_LATENCY_MS"] = str(args.batch_latency_ms)
        if args.threads:
            env["C2F_THREADS"] = str(args.threads)
        server = LocalServer(workdir / f"server-batching-{'on' if batching else 'off'}.log", {"C2F_MODEL": str(model), **env})
        server.wait_ready()
        url, pid = server.url, server.proc.pid
    try:
        params = {"format": args.format}
        if args.crf:
            params["crf"] = "true"
        if args.grabcut:
            params["grabcut"] = "true"
        rss_before = rss_mb(pid)
        warm = (asyncio.run(fire(url, args.route, image, params, args.warmup, min(args.concurrency, args.warmup), deadline))
                if args.warmup else {"errors": 0})
        rss_warm = rss_mb(pid)
        with RssPeak(pid) as peak:
            result = asyncio.run(fire(url, args.route, image, params, args.requests, args.concurrency, deadline))
        result["rss_peak"] = peak.peak
        result["rss_before"] = rss_before
        result["rss_after_warmup"] = rss_warm
        result["rss_after"] = rss_mb(pid)
        result["warmup_errors"] = warm["errors"]
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        result["batches"] = batch_histogram(url)
        try:
            result["server"] = httpx.get(f"{url}/metadata", timeout=10).json()["batching"]
        except (httpx.HTTPError, KeyError, ValueError):
            result["server"] = None
        return result
    finally:
        if server is not None:
            server.stop()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="ONNX export to serve (default: export a throwaway untrained one)")
    parser.add_argument("--url", help="target a running server instead of starting two (one run, no mode switch)")
    parser.add_argument("--server-pid", type=int, help="with --url: pid of that server, for RSS")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--modes", choices=["both", "on", "off"], default="both")
    parser.add_argument("--route", default="/segment")
    parser.add_argument("--format", default="png")
    parser.add_argument("--crf", action="store_true")
    parser.add_argument("--grabcut", action="store_true")
    parser.add_argument("--image", type=Path, help="image to send (default: a synthetic JPEG of --image-size)")
    parser.add_argument("--image-size", default="375x500", help="HEIGHTxWIDTH of the synthetic JPEG (default 375x500)")
    parser.add_argument("--big-refine", action="store_true",
                        help="the big-photo case: 20 concurrent 4000x3000 JPEGs with CRF and GrabCut, batching on, "
                             "no warm-up (sets --requests, --concurrency, --image-size, --crf, --grabcut, --modes, "
                             "--warmup)")
    parser.add_argument("--input-size", type=int, default=321, help="for the throwaway model")
    parser.add_argument("--classes", type=int, default=21, help="for the throwaway model")
    parser.add_argument("--batch", type=int, default=8, help="C2F_BATCH (max batch size)")
    parser.add_argument("--batch-latency-ms", type=int, help="C2F_BATCH_LATENCY_MS (default: the service's)")
    parser.add_argument("--threads", type=int, help="C2F_THREADS (ONNX Runtime intra-op threads)")
    parser.add_argument("--max-seconds", type=float, default=900, help="wall-clock budget for the whole script")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    if args.big_refine:
        args.requests, args.concurrency, args.image_size, args.warmup = 20, 20, "3000x4000", 0
        args.crf = args.grabcut = True
        args.modes = "on"
    try:
        height, width = (int(side) for side in args.image_size.lower().split("x"))
    except ValueError:
        parser.error(f"--image-size {args.image_size!r} is not HEIGHTxWIDTH")
    if not 1 <= args.requests <= MAX_REQUESTS:
        parser.error(f"--requests must be 1..{MAX_REQUESTS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        parser.error(f"--concurrency must be 1..{MAX_CONCURRENCY}")
    if args.url and not re.match(r"^https?://(127\.0\.0\.1|localhost|\[::1\])(:\d+)?/?$", args.url):
        parser.error("--url must be a loopback address")
    deadline = time.monotonic() + args.max_seconds
    image = args.image.read_bytes() if args.image else synthetic_jpeg(height, width)

    with tempfile.TemporaryDirectory(prefix="c2f-load-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if args.url is None and model is None:
            model = export_model(workdir, args.input_size, args.classes)
        modes = [None] if args.url else {"both": [True, False], "on": [True], "off": [False]}[args.modes]
        results = {}
        for batching in modes:
            name = "target" if batching is None else f"batching_{'on' if batching else 'off'}"
            results[name] = run_mode(args, model, batching, image, deadline, workdir)
            if args.url is None:
                results[name]["server_log_tail"] = (workdir / f"server-{name.replace('_', '-')}.log").read_text(
                    errors="replace")[-300:] if results[name]["errors"] else ""
    report = {
        "config": {
            "requests": args.requests, "concurrency": args.concurrency, "route": args.route, "format": args.format,
            "crf": args.crf, "grabcut": args.grabcut, "image_bytes": len(image),
            "image_size": None if args.image else args.image_size, "model": str(args.model) if args.model else
            f"untrained deeplab/efficientnet-lite0, {args.classes} classes, input {args.input_size}",
            "batch": args.batch, "batch_latency_ms": args.batch_latency_ms, "threads": args.threads,
            "cpu_count": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
    }
    on, off = results.get("batching_on"), results.get("batching_off")
    if on and off and on["throughput_rps"] and off["throughput_rps"]:
        report["batching_speedup"] = round(on["throughput_rps"] / off["throughput_rps"], 3)
    emit(report, args.out)
    return report


if __name__ == "__main__":
    main()
