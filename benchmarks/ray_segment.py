"""``c2f segment`` on a two-node Ray cluster against the local single-process path, on real photographs.

The model is an untrained (ImageNet-initialised) DeepLab-lite on EfficientNet-Lite0 with the 21 VOC
outputs at 321 px, exported to ONNX: the architecture and cost of ``configs/cpu.yaml``'s model, whose
speed does not depend on its weights. ``--images`` photos are taken evenly from the class folders of
``--data`` (linked into a temporary folder, never copied) and segmented twice, into fresh folders:

* local: :func:`c2f.inference.folder.segment_folder` in this process (ONNX Runtime's own threads,
  ``c2f segment``'s default two I/O threads), model loaded beforehand;
* ray: :func:`c2f.distributed.ray_segment.segment_folder_on_ray` on a two-node cluster started here
  (one CPU per node, so two one-thread model actors), including connecting and starting the actors.

The label maps of both runs are compared byte for byte. Printed JSON: images/s of both, their ratio,
and Ray's overhead per image in CPU-slot seconds, ``(ray_s * slots - local_s) / images``: what the
cluster spends per image beyond what the local path spends on the same machine. Typical use::

    python benchmarks/ray_segment.py --out ray.json            # 200 photographs
    python benchmarks/ray_segment.py --images 20               # smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

from json_report import emit  # benchmarks/json_report.py: the scripts' shared output

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "voc10-coseg"
REPO = Path(__file__).resolve().parents[1]
CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
           "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def pick_photos(data: Path, count: int, into: Path) -> int:
    """Link ``count`` photographs, taken evenly from ``data/images/<class>/``, into ``into/<class>/``."""
    photos = sorted((data / "images").rglob("*.jpg"))
    if len(photos) < count:
        raise SystemExit(f"{data} holds {len(photos)} photographs, fewer than --images {count}")
    for photo in photos[:: len(photos) // count][:count]:
        link = into / photo.relative_to(data / "images")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(photo)
    return count


def export_model(folder: Path, size: int) -> Path:
    """The untrained DeepLab-lite / EfficientNet-Lite0 of the CPU recipe, exported to ONNX."""
    import torch

    from c2f.export import export_onnx
    from c2f.models import build_model
    from c2f.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("deeplab-lite", "efficientnet-lite0", len(CLASSES), pretrained=True)
    checkpoint = save_checkpoint(make_checkpoint(model, "semantic", list(CLASSES), size), folder / "model.pt")
    export_onnx(checkpoint, folder / "model.onnx")
    return folder / "model.onnx"


def labels_of(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.png"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=321, help="model input size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a bounding `timeout` still stops the cluster

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test suite's cluster harness
    from ray_cluster import LocalCluster
    from c2f.distributed.ray_segment import segment_folder_on_ray
    from c2f.inference import Engine
    from c2f.inference.folder import plan_folder, segment_folder

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        count = pick_photos(args.data, args.images, tmp / "photos")
        model = export_model(tmp, args.size)
        engine = Engine.open(model, batch_size=args.batch_size)
        print(f"local run, {count} photographs", file=sys.stderr)
        began = time.perf_counter()
        local = segment_folder(engine, tmp / "photos", tmp / "local", progress=False, workers=2)
        local_s = time.perf_counter() - began

        print("starting a two-node Ray cluster", file=sys.stderr)
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        with LocalCluster(tmp / "ray-nodes", nodes=2, cpus_per_node=1, env={"PYTHONPATH": path}) as cluster:
            os.environ.update({k: cluster.env[k] for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")})
            print(f"ray run on {cluster.address}", file=sys.stderr)
            began = time.perf_counter()
            plan = plan_folder(engine, tmp / "photos", tmp / "ray", formats=("label",), include=("*",), exclude=(),
                               labels=None)
            ray = segment_folder_on_ray(engine, plan, address=cluster.address, model=model, progress=False)
            ray_s = time.perf_counter() - began
        slots = 2
        result = {
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
            "model": f"untrained deeplab-lite / efficientnet-lite0, {len(CLASSES)} classes, {args.size} px, ONNX",
            "images": count,
            "batch_size": args.batch_size,
            "local": {"seconds": round(local_s, 2), "images_per_s": round(count / local_s, 3),
                      "done": len(local.done), "failed": len(local.failed)},
            "ray": {"nodes": 2, "cpu_slots": slots, "seconds": round(ray_s, 2),
                    "images_per_s": round(count / ray_s, 3), "done": len(ray.done), "failed": len(ray.failed)},
            "ratio_ray_over_local": round(local_s / ray_s, 3),
            "ray_overhead_slot_s_per_image": round((ray_s * slots - local_s) / count, 4),
            "identical_outputs": labels_of(tmp / "ray") == labels_of(tmp / "local"),
        }
    emit(result, args.out)


if __name__ == "__main__":
    main()
