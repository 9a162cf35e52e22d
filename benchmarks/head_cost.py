"""Cost of one training step per image: the full DeepLab head against the CPU recipe's lite head.

For each decoder (``deeplab``, ``deeplab-lite``) on EfficientNet-Lite0 at output stride 16, times a
forward + backward + SGD step on a batch of random images, fine-tuning everything and head-only
(backbone frozen, as in the recipe's first epochs). The variants run interleaved, A/B/A/B, so a busy
machine slows them alike; medians of wall and process CPU seconds per image are reported, with the
forward GFLOP per image from ``torch.utils.flop_counter``. Prints JSON.

    python benchmarks/head_cost.py                  # 288 px crops, batch 12, 5 rounds
    python benchmarks/head_cost.py --size 256 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from c2f.models import build_model

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output


def step(model: torch.nn.Module, pixels: torch.Tensor, target: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
    loss = F.cross_entropy(model(pixels), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=288, help="crop size (px)")
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--classes", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant (after one warm-up)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    pixels = torch.rand(args.batch, 3, args.size, args.size) * 255
    target = torch.randint(0, args.classes, (args.batch, args.size, args.size))
    variants = {}
    for arch in ("deeplab", "deeplab-lite"):
        model = build_model(arch, num_classes=args.classes, output_stride=16).train()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(pixels[:1])
        for mode in ("fine-tune", "head-only"):
            trainable = model.parameters() if mode == "fine-tune" else model.head.parameters()
            variants[f"{arch} {mode}"] = {"model": model, "optimizer": torch.optim.SGD(list(trainable), lr=1e-6),
                                          "head_only": mode == "head-only", "wall": [], "cpu": [],
                                          "gflop": counter.get_total_flops() / 1e9}
    for repeat in range(args.repeats + 1):  # repeat 0 warms up every variant
        for variant in variants.values():
            for parameter in variant["model"].backbone.parameters():
                parameter.requires_grad_(not variant["head_only"])
            wall, cpu = time.perf_counter(), time.process_time()
            step(variant["model"], pixels, target, variant["optimizer"])
            if repeat:
                variant["wall"].append((time.perf_counter() - wall) / args.batch)
                variant["cpu"].append((time.process_time() - cpu) / args.batch)
    report = {"size": args.size, "batch": args.batch, "threads": torch.get_num_threads(), "variants": {
        name: {"forward_gflop_per_image": round(v["gflop"], 2),
               "wall_s_per_image": round(statistics.median(v["wall"]), 4),
               "cpu_s_per_image": round(statistics.median(v["cpu"]), 4)}
        for name, v in variants.items()}}
    full = report["variants"]["deeplab fine-tune"]["wall_s_per_image"]
    for values in report["variants"].values():
        values["speed_vs_deeplab_fine_tune"] = round(full / values["wall_s_per_image"], 2)
    emit(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
