"""Evaluation reports as files: JSON with a confusion-matrix PNG, the per-round mIoU plot, overlays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from c2f.data.datasets import LabelledDataset, ground_truth
from c2f.data.io import read_image, write_rgb
from c2f.inference import Engine
from c2f.inference.render import overlay


def write_report(metrics: dict, out_dir: Path, name: str = "evaluation") -> None:
    """JSON plus a confusion-matrix PNG (rows: truth, columns: prediction, row-normalised)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(metrics, indent=2))
    matrix = np.asarray(metrics["confusion"], dtype=np.float64)
    matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = list(metrics["iou_per_class"])
    fig, ax = plt.subplots(figsize=(1 + 0.45 * len(names), 1 + 0.45 * len(names)))
    ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"mIoU {metrics['miou']:.3f}")
    fig.tight_layout()
    fig.savefig(out_dir / f"{name}_confusion.png", dpi=100)
    plt.close(fig)


def plot_rounds(summary: dict, path: Path) -> None:
    """mIoU per round: training-label quality and val predictions, with the mask stage as reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = summary["rounds"]
    xs = [r["round"] for r in rounds]
    fig, ax = plt.subplots(figsize=(6, 4))
    series = {
        "val prediction": [r.get("val", {}).get("miou") for r in rounds],
        "training labels": [r.get("train_labels_quality", {}).get("miou") for r in rounds],
    }
    for label, ys in series.items():
        if any(y is not None for y in ys):
            ax.plot(xs, ys, marker="o", label=label)
    for stage, style in (("coarse", ":"), ("refined", "--")):
        score = summary.get("mask_stage", {}).get(stage, {}).get("miou")
        if score is not None:
            ax.axhline(score, linestyle=style, color="grey", label=f"{stage} masks")
    ax.set_xlabel("round")
    ax.set_ylabel("mIoU")
    ax.set_xticks(xs)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_overlays(engine: Engine, dataset: LabelledDataset, out_dir: Path, count: int = 4) -> None:
    """Side-by-side PNGs (image | prediction overlay | ground truth overlay) for a few samples."""
    for sample in dataset.samples[:count]:
        image = read_image(sample.image)
        prediction = engine.segment([image])[0].label_map
        panels = [image, overlay(image, prediction)]
        if sample.mask is not None:
            panels.append(overlay(image, ground_truth(sample, dataset)))
        write_rgb(out_dir / f"{sample.key.replace('/', '_')}.png", np.hstack(panels))
