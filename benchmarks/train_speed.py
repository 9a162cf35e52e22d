"""Training throughput of one round (images/s per device), with and without mixed precision.

Generates labelled images at the paper's size (321 px, random 256 crops), trains DeepLab on their
ground-truth label maps with the paper's batch of 12, and times every epoch after the first (the
first pays for data decoding, which is then cached, and for cuDNN autotuning). Prints JSON.

    python benchmarks/train_speed.py --images 300 --epochs 3            # GPU: AMP on and off
    python benchmarks/train_speed.py --images 24 --epochs 2 --no-fp32   # a CPU figure in a minute
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from c2f.data.io import read_mask, write_label_png
from c2f.data.layouts import load_dataset
from c2f.data.synthetic import generate_demo_dataset
from c2f.refine.labels import compose_label_map
from c2f.training import TrainConfig
from c2f.training.distributed import DistInfo
from c2f.training.samples import LabelMapDataset, Pair
from c2f.training.trainer import train_round

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output


def label_pairs(root: Path, images: int, size: int) -> tuple[list[Pair], int]:
    """Generated images and label maps (class on the object, 0 elsewhere); returns pairs and class count."""
    classes = 3
    data = load_dataset(generate_demo_dataset(root / "data", n_per_class=-(-images // classes), size=size, seed=0))
    pairs = []
    for sample in data.samples[:images]:
        label = compose_label_map(read_mask(sample.mask) > 127, sample.labels)
        pairs.append(Pair(sample.key, sample.image, write_label_png(root / "labels" / f"{sample.key}.png", label)))
    return pairs, data.num_classes


def measure(pairs: list[Pair], num_classes: int, cfg: TrainConfig, device: str, work: Path) -> dict:
    """Seconds of each epoch of one round; images/s over the epochs after the first."""
    stamps = [time.perf_counter()]

    def tick(_epoch: int) -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    dataset = LabelMapDataset(pairs, cfg.resize, cfg.crop, cfg.flip, cfg.seed, 1)
    last = work / f"last-{cfg.amp}.pt"
    last.unlink(missing_ok=True)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    train_round(dataset, cfg, num_classes, 1, "semantic", [str(i) for i in range(num_classes)], last, device,
                DistInfo(), progress=False, on_epoch_end=tick)
    epochs = [b - a for a, b in zip(stamps, stamps[1:])]
    steady = epochs[1:] or epochs
    result = {"amp": cfg.amp and device.startswith("cuda"), "epoch_seconds": [round(e, 2) for e in epochs],
              "images_per_s": round(len(pairs) * len(steady) / sum(steady), 1)}
    if device.startswith("cuda"):
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=321)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--loader-workers", type=int, default=4)
    parser.add_argument("--no-fp32", action="store_true", help="skip the full-precision comparison run")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
              "images": args.images, "size": args.size, "crop": args.crop, "batch_size": args.batch_size,
              "torch": torch.__version__, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs, num_classes = label_pairs(work, args.images, args.size)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, resize=args.size, crop=args.crop,
                          lr=0.01, loader_workers=args.loader_workers if device == "cuda" else 0)
        for amp in ([True] if args.no_fp32 or device == "cpu" else [True, False]):
            report["runs"].append(measure(pairs, num_classes, cfg.updated(amp=amp), device, work))
    emit(report)


if __name__ == "__main__":
    main()
