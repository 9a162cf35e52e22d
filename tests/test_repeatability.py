"""`benchmarks/repeatability.py`: which figures of a benchmark report count as speeds, and their spread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _report(images_per_s: float, cpu_s_ratio: float, peak: float) -> dict:
    return {
        "settings": {"repeats": 11, "min_seconds": 4.0},
        "machine": {"cpus": 2},
        "models": {"deeplab": {
            "gflop_per_image": 22.4,
            "runs": {"321px": {"batch1": {
                "peak_gflops": {"peak_numpy": peak},
                "onnxruntime": {"images_per_s": images_per_s, "ms_per_image": 1000 / images_per_s},
                "onnxruntime_2_vs_1_thread": {"speedup": 1.8, "cpu_s_ratio": cpu_s_ratio},
            }}},
        }},
        "refinement": {"crf_iterations": 5, "grabcut_iterations": 3, "crf_default_ms_500x375": 33.0},
    }


def _spread(tmp_path: Path, reports: list[dict]) -> dict:
    paths = []
    for index, report in enumerate(reports):
        paths.append(tmp_path / f"run{index}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "spread.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "repeatability.py"), *map(str, paths), "--out", str(out)],
                   check=True, capture_output=True)
    return json.loads(out.read_text())


def test_counts_speed_figures_only(tmp_path):
    result = _spread(tmp_path, [_report(10.0, 0.8, 200.0), _report(8.0, 0.8, 201.0), _report(9.5, 0.84, 199.0)])
    # images/s, ms/image, the peak, speed-up, CPU-s ratio, CRF ms; not settings, FLOP counts or iteration counts
    assert result["figures"] == 6
    assert result["figures_within"] == 4
    widest = {row["figure"]: row["spread"] for row in result["widest"]}
    assert set(widest) == {"/models/deeplab/runs/321px/batch1/onnxruntime/images_per_s",
                           "/models/deeplab/runs/321px/batch1/onnxruntime/ms_per_image"}
    assert widest["/models/deeplab/runs/321px/batch1/onnxruntime/images_per_s"] == 0.2


def _run_benchmark_code(code: str) -> str:
    """Run ``code`` in a fresh interpreter with benchmarks/ importable (inference_speed sets OMP variables)."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "benchmarks", capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


SPINNER = """
import threading, time
from inference_speed import settle
stop = threading.Event()
def spin(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end and not stop.is_set():
        pass
"""


def test_settle_waits_until_a_busy_thread_of_this_process_stops() -> None:
    """The interleaved loop times a call only after the previous call's spinning threads went quiet."""
    out = _run_benchmark_code(SPINNER + """
busy = threading.Thread(target=spin, args=(0.3,))
busy.start()
settle()
print(busy.is_alive())
""")
    assert out == "False"


def test_settle_gives_up_after_max_s_when_the_process_never_goes_quiet() -> None:
    out = _run_benchmark_code(SPINNER + """
busy = threading.Thread(target=spin, args=(60,))
busy.start()
settle(max_s=0.05)
print(busy.is_alive())
stop.set()
""")
    assert out == "True"
