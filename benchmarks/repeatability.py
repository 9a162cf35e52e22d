"""How well several runs of a benchmark agree: the spread of every speed figure across their JSON reports.

Spread = (max - min) / max over the runs, for each speed figure (images/s, ms and CPU-seconds per image,
GFLOP/s, shares of the peak, speed-ups: :func:`is_speed`) found at the same place in every report.
Settings, machine facts, FLOP counts, memory, parity and loop bookkeeping are left out. Typical use::

    python benchmarks/repeatability.py inf1.json inf2.json inf3.json --within 0.10
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output

# What names a speed figure in c2f's benchmark reports (last key of its path), and what does not.
SPEED_MARKS = ("per_s", "per_image", "_ms_", "gflops", "gflop_per_cpu_s", "share_of_peak", "speedup", "_ratio")
NOT_SPEED = ("gflop_per_image", "target")  # FLOP counts per image; the target values
PEAK_GROUPS = ("peak_gflops", "peak_gflop_per_cpu_s")  # {backend: GFLOP/s} of the matmul peak
FACT_SECTIONS = ("settings", "machine", "memory", "targets")  # settings and facts; targets repeat figures


def is_speed(path: str) -> bool:
    """Whether the figure at ``path`` (``/models/fpn/runs/.../images_per_s``) is a measured speed."""
    parts = path.split("/")
    if len(parts) < 3 or parts[1] in FACT_SECTIONS or any(mark in parts[-1] for mark in NOT_SPEED):
        return False
    return parts[-2] in PEAK_GROUPS or any(mark in parts[-1] for mark in SPEED_MARKS)


def figures(report: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """(slash path, value) of every number in a JSON report, booleans excepted."""
    if isinstance(report, dict):
        for key, value in report.items():
            yield from figures(value, f"{path}/{key}")
    elif isinstance(report, (int, float)) and not isinstance(report, bool):
        yield path, float(report)


def spread(reports: list[Any], within: float) -> dict[str, Any]:
    """The spread of every speed figure present in all reports, widest first, and how many are within."""
    values: dict[str, list[float]] = {}
    for report in reports:
        for path, value in figures(report):
            if is_speed(path):
                values.setdefault(path, []).append(value)
    rows = sorted(((round((max(v) - min(v)) / max(v), 3), path, v) for path, v in values.items()
                   if len(v) == len(reports) and max(v) > 0), reverse=True)
    return {"runs": len(reports), "figures": len(rows), "within": within,
            "figures_within": sum(1 for s, _, _ in rows if s <= within),
            "widest": [{"figure": path, "spread": s, "values": v} for s, path, v in rows if s > within]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="JSON reports of the same benchmark and settings")
    parser.add_argument("--within", type=float, default=0.10, help="the spread counted as repeating")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if len(args.reports) < 2:
        parser.error("give at least two reports")
    emit(spread([json.loads(path.read_text()) for path in args.reports], args.within), args.out)


if __name__ == "__main__":
    main()
