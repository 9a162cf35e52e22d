"""``c2f segment --ray``: the folder job of :func:`c2f.inference.folder.segment_folder` as a Ray Data pipeline.

The driver plans the run exactly as the local path does (:func:`plan_folder`: naming, resume, stale
temporaries) and records every finished image in results.jsonl and report.json (:class:`ResultsSink`);
the cluster does the per-image work with the same functions as the local path, in three stages:

    read     tasks         :func:`load_image` + :func:`unusable` (a bad file becomes a failure row)
    segment  actor pool    one :class:`Engine` per CPU slot (or per GPU), ``batch_size`` images a call
    write    tasks         :func:`write_outputs` onto the shared output folder

So the output files are byte-identical to a local run's, and a killed driver leaves results.jsonl
listing exactly the images whose outputs are complete: the rerun skips those and redoes the rest.

Rows carry one pickled ``payload`` column: images and label maps differ in size from row to row, and
a pickled dict passes them between stages without an Arrow tensor type per shape.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from c2f.inference.engine import Engine
from c2f.inference.folder import FolderPlan, FolderReport, load_image, unusable, write_outputs
from c2f.inference.results_log import ResultsSink

from . import connected, cpu_slots, gpu_count

Batch = dict[str, np.ndarray]


def _rows(batch: Batch) -> list[dict[str, Any]]:
    return [pickle.loads(payload) for payload in batch["payload"]]


def _batch(rows: list[dict[str, Any]]) -> Batch:
    payloads = np.empty(len(rows), dtype=object)
    payloads[:] = [pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL) for row in rows]
    return {"payload": payloads}


def read_stage(batch: Batch, *, input_dir: str, shown_dir: str, own: Mapping[str, tuple[int, ...]] | None) -> Batch:
    """Decode each file; a file that cannot be segmented becomes a row with its ``reason``.

    Files are read at ``input_dir`` (absolute: workers have their own working folders) and named in
    reasons as at ``shown_dir`` (as the user gave it), so the report reads as a local run's.
    """
    rows = []
    for rel in batch["rel"]:
        rel = str(rel)
        outcome = load_image(Path(input_dir) / rel)
        reason = unusable(rel, outcome, own)
        if reason is not None:
            rows.append({"rel": rel, "reason": reason.replace(str(Path(input_dir) / rel), str(Path(shown_dir) / rel))})
        else:
            image, read_s = outcome
            rows.append({"rel": rel, "image": image, "read_s": read_s, "labels": own[rel] if own else None})
    return _batch(rows)


class SegmentStage:
    """One model per actor: segments a batch's readable images; failure rows pass through."""

    def __init__(self, *, model: str, device: str, threads: int | None, batch_size: int, keep_aspect: bool,
                 crf: bool, grabcut: bool) -> None:
        self.engine = Engine.open(model, device=device, threads=threads, batch_size=batch_size,
                                  keep_aspect=keep_aspect)
        self.crf, self.grabcut = crf, grabcut

    def __call__(self, batch: Batch) -> Batch:
        rows = _rows(batch)
        ready = [row for row in rows if "image" in row]
        labels = [row["labels"] for row in ready] if ready and ready[0]["labels"] is not None else None
        predictions = self.engine.segment([row["image"] for row in ready], crf=self.crf, grabcut=self.grabcut,
                                          labels=labels)
        names = self.engine.info.class_names
        for row, prediction in zip(ready, predictions):
            row.update(label_map=prediction.label_map, shares=prediction.class_shares(names),
                       timings=prediction.timings)
        return _batch(rows)


def write_stage(batch: Batch, *, out_dir: str, targets: Mapping[str, Mapping[str, Path]],
                class_names: Sequence[str]) -> Batch:
    """Write each segmented image's outputs; a row becomes its results.jsonl ``record`` (or stays a failure)."""
    rows = []
    for row in _rows(batch):
        if "image" not in row:
            rows.append(row)
            continue
        rows.append({"rel": row["rel"], "record": write_outputs(
            targets=targets[row["rel"]], out_dir=Path(out_dir), rel=row["rel"], image=row["image"],
            read_s=row["read_s"], label_map=row["label_map"], shares=row["shares"], timings=row["timings"],
            class_names=class_names, labels=row["labels"])})
    return _batch(rows)


def segment_folder_on_ray(
    engine: Engine, plan: FolderPlan, *, address: str, model: str | Path, crf: bool = False, grabcut: bool = False,
    progress: bool = True, device: str = "auto", threads: int | None = None,
) -> FolderReport:
    """:func:`segment_folder` of ``plan`` (:func:`plan_folder`) on the Ray cluster at ``address``
    (``"local"``: a local one); the same outputs.

    ``engine`` (opened on the driver) planned the run and names the classes; each actor opens its own
    from ``model`` with ``device``, ``threads`` (default: one per actor on CPUs), ``engine.batch_size``
    and ``engine.keep_aspect``. Every path must be the same on every node (a shared filesystem).
    """
    if not plan.pending:  # nothing to do: no cluster needed
        with ResultsSink(plan, total=0, progress=False):
            return plan.report
    with connected(address, progress=progress) as ray, \
            ResultsSink(plan, total=len(plan.pending), progress=progress) as sink:
        batch_size = engine.batch_size
        gpus = gpu_count(ray) if device in ("auto", "cuda") else 0
        # One model per GPU, else per CPU slot. The model holds the slot's CPU; read and write are light
        # and I/O-bound, so they ask for none and run beside it (else a full pool would starve them).
        pool = ray.data.ActorPoolStrategy(size=gpus or cpu_slots(ray))
        model_resources = {"num_gpus": 1, "compute": pool} if gpus else {"num_cpus": 1, "compute": pool}
        absolute = {rel: {fmt: path.absolute() for fmt, path in plan.targets(rel).items()}
                    for rel in plan.pending if rel in plan.bases}  # non-images write nothing
        dataset = (
            ray.data.from_items([{"rel": rel} for rel in plan.pending],
                                override_num_blocks=math.ceil(len(plan.pending) / batch_size))
            .map_batches(read_stage, batch_size=batch_size, num_cpus=0,
                         fn_kwargs={"input_dir": str(plan.input_dir.absolute()), "shown_dir": str(plan.input_dir),
                                    "own": plan.own})
            .map_batches(SegmentStage, batch_size=batch_size, **model_resources, fn_constructor_kwargs={
                "model": str(Path(model).absolute()), "device": "cuda" if gpus else device,
                "threads": threads if threads is not None or gpus else 1, "batch_size": batch_size,
                "keep_aspect": engine.keep_aspect, "crf": crf, "grabcut": grabcut})
            .map_batches(write_stage, batch_size=batch_size, num_cpus=0, fn_kwargs={
                "out_dir": str(plan.out_dir.absolute()), "targets": absolute,
                "class_names": list(engine.info.class_names)})
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for row in _rows(batch):
                if "record" in row:
                    sink.done([row["record"]])
                else:
                    sink.fail(row["rel"], row["reason"])
        # Rows arrive as the cluster finishes them; the report lists them in input order, as a local run's.
        order = {rel: index for index, rel in enumerate(plan.pending)}
        plan.report.done.sort(key=order.__getitem__)
        plan.report.failed.sort(key=lambda failure: order[failure[0]])
    return plan.report
