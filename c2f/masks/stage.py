"""The mask stage: coarse mask -> GrabCut -> optional CRF -> first-round label map, per image.

Built for large, messy folders: per-image failures (unreadable image, missing coarse map) are
recorded, never fatal; work runs in parallel processes; and every finished image is appended
to a JSON-lines journal (flushed and fsynced), so a killed run resumes where it stopped.

Layout of `out_dir`::

    coarse/<key>.png    0/255 coarse mask             refined/<key>.png  0/255 after GrabCut/CRF
    labels/<key>.png    indexed label PNG (0 bg, class ids, 255 ignore) - absent when dropped
    manifest-<hash>.jsonl  the journal; <hash> digests the settings, so new settings never
                           reuse stale masks          summary.json  counts, fallbacks, timings,
                                                      data_warnings (what loading the data left out)
    manifest-<hash>.rank<k>-of-<n>.jsonl  shard k's journal when n processes share the work

Resume: an image is reused when its journal record's inputs (each file's size and mtime, and its
labels) are unchanged. When only mtimes changed (a copied, restored or touched data folder), the
files' content digests, recorded with each result, decide; reused records are rewritten with the
new mtimes, so the next run needs no digests.

Reproducibility: GrabCut is seeded from each image's key, so outputs do not depend on the
processing order or the number of workers, and a resumed run is byte-identical to an unbroken one.

Image labels: a single-label image gets its class on the foreground. A multi-label image gets
its foreground split by the generator's class evidence (e.g. CAMs) when it has any, else 255
(ignore) on the foreground - a class-agnostic mask cannot say which object is which, but its
background is still valid supervision. An unlabelled image fails (nothing to learn from it).

Learned generators are fitted on the whole dataset first (:meth:`CoarseGenerator.fit`, weights
cached under ``out_dir/generators/``), so the settings hash names the trained weights too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal

import cv2
import numpy as np
from tqdm import tqdm

from c2f.data.datasets import IGNORE, LabelledDataset, Sample, ground_truth
from c2f.data.io import (
    ImageReadError,
    file_digest,
    file_identity,
    read_image,
    read_mask,
    write_label_png,
    write_mask_png,
)
from c2f.evaluation.metrics import Scorer
from c2f.masks.config import MaskConfig
from c2f.masks.generators import CoarseGenerator, CoarseInputError, make_generator
from c2f.refine.crf import crf_refine_mask
from c2f.refine.grabcut import grabcut_refine
from c2f.refine.labels import compose_label_map

logger = logging.getLogger(__name__)

__all__ = ["FORMAT_VERSION", "MaskStageResult", "Runner", "init_worker", "key_seed", "mask_quality", "process_sample",
           "run_mask_stage", "stage_output_path"]

# Bump whenever the outputs for identical settings would change (invalidates every cache).
FORMAT_VERSION = 1
# GrabCut's core erosion before it was a setting: journals of that value keep the name they had.
CORE_EROSION_BEFORE_SETTING = 0.3

_STEPS = ("read", "coarse", "grabcut", "crf", "write")
_INPUT_ERRORS = (ImageReadError, FileNotFoundError, CoarseInputError)


@dataclass
class MaskStageResult:
    """Where the stage wrote, which images got labels, which failed, and summary.json's content."""

    out_dir: Path
    label_paths: dict[str, Path] = field(default_factory=dict)
    failed: list[tuple[str, str]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def key_seed(key: str) -> int:
    """A 31-bit RNG seed derived from an image key: same key, same GrabCut result, anywhere."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") & 0x7FFFFFFF


def stage_output_path(stage: str, key: str) -> str:
    """Where a stage (coarse, refined, labels) keeps a key's PNG, relative to the stage folder.

    Public because other scorers (e.g. the box baseline) lay their masks out the same way so
    :func:`mask_quality` can read them; unsafe keys (absolute, ``..``) are refused.
    """
    parts = PurePosixPath(key).parts
    if not parts or PurePosixPath(key).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ValueError(f"sample key {key!r} cannot be used as an output path")
    return str(PurePosixPath(stage, *parts[:-1], parts[-1] + ".png"))


@dataclass(frozen=True)
class _Config:
    """Everything a worker needs besides the sample; picklable.

    ``mask`` holds the settings; the coarse generator comes built (and fitted) as ``generator``, so
    ``mask.generator``/``mask.generator_options`` are not read here.
    """

    out_dir: Path
    generator: CoarseGenerator
    mask: MaskConfig

    def settings(self) -> dict[str, Any]:
        """The journal's settings (their hash names it): keys and values fixed, so caches stay valid."""
        mask = self.mask
        settings: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "generator": self.generator.name,
            "generator_settings": self.generator.settings(),
            "grabcut": mask.grabcut,
            "grabcut_iterations": mask.grabcut_iterations,
            "grabcut_max_side": mask.grabcut_max_side,
            "crf": mask.crf,
            "ignore_band": mask.ignore_band,
            "min_fg": mask.min_fg,
            "max_fg": mask.max_fg,
        }
        if mask.grabcut_core_erosion != CORE_EROSION_BEFORE_SETTING:
            settings["grabcut_core_erosion"] = mask.grabcut_core_erosion
        return settings

    def input_state(self, sample: Sample) -> dict[str, Any]:
        """What a cached result depends on besides the settings: input files and labels."""
        return {
            "image": file_identity(sample.image),
            "sources": {str(p): file_identity(p) for p in self.generator.source_files(sample)},
            "labels": list(sample.labels),
        }

    def input_content(self, sample: Sample) -> dict[str, Any]:
        """The input files' content digests: a result stays valid when only their mtimes change."""
        return {
            "image": file_digest(sample.image),
            "sources": {str(p): file_digest(p) for p in self.generator.source_files(sample)},
        }


def _remove_outputs(out_dir: Path, key: str, stages: tuple[str, ...]) -> None:
    """Delete a key's outputs from earlier runs that this run's result no longer backs."""
    for stage in stages:
        (out_dir / stage_output_path(stage, key)).unlink(missing_ok=True)


def process_sample(config: _Config, sample: Sample) -> dict[str, Any]:
    """Run one image through the stage and write its PNGs; returns its journal record."""
    times = dict.fromkeys(_STEPS, 0.0)
    record: dict[str, Any] = {"key": sample.key}
    start = time.perf_counter()
    try:
        image = read_image(sample.image)
        times["read"] = time.perf_counter() - start
        if not sample.labels:
            raise CoarseInputError(f"sample {sample.key!r} has no image-level label")
        tick = time.perf_counter()
        coarse = np.asarray(config.generator(image, sample), dtype=bool)
        times["coarse"] = time.perf_counter() - tick
    except _INPUT_ERRORS as exc:
        _remove_outputs(config.out_dir, sample.key, ("coarse", "refined", "labels"))
        return {**record, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    if coarse.shape != image.shape[:2]:
        raise ValueError(f"generator {config.generator.name!r} returned a {coarse.shape} mask "
                         f"for a {image.shape[:2]} image ({sample.key})")

    refined, fallback = coarse, None
    if config.mask.grabcut:
        tick = time.perf_counter()
        result = grabcut_refine(image, coarse, config.mask.grabcut_iterations,
                                core_erosion=config.mask.grabcut_core_erosion,
                                max_side=config.mask.grabcut_max_side, seed=key_seed(sample.key))
        refined, fallback = result.mask, result.fallback
        times["grabcut"] = time.perf_counter() - tick
    if config.mask.crf:
        tick = time.perf_counter()
        refined = crf_refine_mask(image, refined)
        times["crf"] = time.perf_counter() - tick

    evidence = config.generator.class_evidence(image, sample) if len(sample.labels) > 1 else None
    if evidence is not None:
        label_map = compose_label_map(refined, sample.labels, config.mask.ignore_band, evidence)
    else:  # multi-label: compose with any one label (for the band), then hide which one it was
        label_map = compose_label_map(refined, sample.labels[:1], config.mask.ignore_band)
        if len(sample.labels) > 1:
            label_map[label_map != 0] = IGNORE
    fraction = float(refined.mean())  # not of the label map: multi-label maps have no class fg
    dropped = None
    if fraction < config.mask.min_fg:
        dropped = f"foreground<{config.mask.min_fg:.0%}"
    elif fraction > config.mask.max_fg:
        dropped = f"foreground>{config.mask.max_fg:.0%}"

    tick = time.perf_counter()
    outputs = {stage: stage_output_path(stage, sample.key) for stage in ("coarse", "refined")}
    write_mask_png(config.out_dir / outputs["coarse"], coarse)
    write_mask_png(config.out_dir / outputs["refined"], refined)
    if dropped is None:
        outputs["labels"] = stage_output_path("labels", sample.key)
        write_label_png(config.out_dir / outputs["labels"], label_map)
    else:
        _remove_outputs(config.out_dir, sample.key, ("labels",))
    times["write"] = time.perf_counter() - tick
    times["total"] = time.perf_counter() - start
    return {
        **record,
        "status": "dropped" if dropped else "done",
        "reason": dropped,
        "outputs": outputs,
        "fg_fraction": fraction,
        "multi_label": len(sample.labels) > 1,
        "class_evidence": evidence is not None,
        "grabcut_fallback": fallback,
        "seconds": {k: round(v, 6) for k, v in times.items()},
    }


Runner = Callable[[_Config, list[Sample]], Iterator[dict[str, Any]]]
"""Runs :func:`process_sample` on each sample somewhere and yields the records as they finish."""


def init_worker() -> None:
    # One OpenCV thread per process: workers already use every core, oversubscription only hurts.
    cv2.setNumThreads(1)


def _read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """Latest record per key; a torn last line (killed mid-write) is ignored."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("ignoring unreadable journal line %d of %s", line_no, path)
                continue
            if isinstance(record, dict) and "key" in record:
                records[record["key"]] = record
    return records


def _journal_name(settings_hash: str, shard: tuple[int, int]) -> str:
    rank, world = shard
    return f"manifest-{settings_hash}.jsonl" if world == 1 else \
        f"manifest-{settings_hash}.rank{rank}-of-{world}.jsonl"


def _read_journals(out_dir: Path, settings_hash: str,
                   states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One record per key over every journal of these settings (any sharding): the newest file's,
    unless only an older one matches the key's current inputs."""
    journals = [p for p in out_dir.glob(f"manifest-{settings_hash}.*jsonl") if p.is_file()]
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(journals, key=lambda p: (p.stat().st_mtime_ns, p.name)):
        for key, record in _read_journal(path).items():
            old = records.get(key)
            if old is None or record.get("input") == states.get(key) or old.get("input") != states.get(key):
                records[key] = record
    return records


def _terminate_torn_line(path: Path) -> None:
    """End a journal whose last write was cut off with a newline, so new records stay parseable."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def _finished(record: dict[str, Any] | None, out_dir: Path) -> bool:
    """The record is a result (labelled or dropped) whose files are all still there."""
    if record is None or record.get("status") not in ("done", "dropped"):
        return False
    return all((out_dir / rel).is_file() for rel in record["outputs"].values())


def _size(identity: list[int] | None) -> int | None:
    return None if identity is None else identity[0]


def _same_content(record: dict[str, Any], state: dict[str, Any], content: Callable[[], dict[str, Any]]) -> bool:
    """Whether only the input files' mtimes changed since `record` (a copy, a restore, a touch).

    Same labels, same files, same sizes, and then the same content digests; ``content`` reads the
    files, so it runs only when everything cheaper agrees. Records written before digests were kept
    have no ``content`` and never match.
    """
    before = record.get("input") or {}
    sources = before.get("sources") or {}
    if "content" not in record or before.get("labels") != state["labels"] or set(sources) != set(state["sources"]):
        return False
    if _size(before.get("image")) != _size(state["image"]):
        return False
    if any(_size(sources[path]) != _size(identity) for path, identity in state["sources"].items()):
        return False
    return content() == record["content"]


def _run(config: _Config, samples: list[Sample], workers: int) -> Iterator[dict[str, Any]]:
    """Yield records as images finish, in-process or from a process pool."""
    if workers <= 1:
        for sample in samples:
            yield process_sample(config, sample)
        return
    # spawn, not fork: forking a parent that holds torch/OpenCV threads can deadlock.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=init_worker)
    try:
        futures = [pool.submit(process_sample, config, sample) for sample in samples]
        for future in as_completed(futures):
            yield future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _summarise(config: _Config, settings_hash: str, dataset: LabelledDataset,
               records: dict[str, dict[str, Any]], n_done: int, n_skipped: int,
               elapsed: float) -> dict[str, Any]:
    current = [records[s.key] for s in dataset.samples if s.key in records]
    ok = [r for r in current if r["status"] in ("done", "dropped")]
    failed = [{"key": r["key"], "reason": r["reason"]} for r in current if r["status"] == "failed"]
    dropped = [{"key": r["key"], "reason": r["reason"]} for r in ok if r["status"] == "dropped"]
    fallbacks = Counter(r["grabcut_fallback"] for r in ok if r["grabcut_fallback"])
    steps = (*_STEPS, "total")
    return {
        "settings_hash": settings_hash,
        "settings": config.settings(),
        "counts": {
            "total": len(dataset.samples),
            "done": n_done,
            "skipped_cached": n_skipped,
            "failed": len(failed),
            "dropped": len(dropped),
            "labelled": len(ok) - len(dropped),
            "multi_label_ignored": sum(bool(r["multi_label"]) and not r.get("class_evidence")
                                       for r in ok),
        },
        "failed": failed,
        "dropped": dropped,
        "grabcut_fallbacks": {"count": sum(fallbacks.values()), "reasons": dict(fallbacks)},
        "mean_seconds": {s: float(np.mean([r["seconds"][s] for r in ok])) if ok else None
                         for s in steps},
        "mean_fg_fraction": float(np.mean([r["fg_fraction"] for r in ok])) if ok else None,
        "elapsed_seconds": round(elapsed, 3),
        "data_warnings": list(dataset.notes),  # what loading left out: empty class folders, unread images
    }


def run_mask_stage(
    dataset: LabelledDataset,
    out_dir: str | Path,
    config: MaskConfig | None = None,
    *,
    generator: CoarseGenerator | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    barrier: Callable[[], None] | None = None,
    runner: Runner | None = None,
) -> MaskStageResult:
    """Produce first-round label maps for every sample of `dataset` under `out_dir`.

    Every setting comes from `config` (:class:`~c2f.masks.config.MaskConfig`, default: the
    paper's): the generator named ``config.generator`` is built with ``config.generator_options``,
    unless `generator` passes a :class:`CoarseGenerator` object (then those two are not used).
    Images already in the journal with unchanged inputs are skipped.
    ``min_fg``/``max_fg`` drop images whose refined foreground share is outside that range (masks
    still written, no label map), the same filter as between training rounds.
    ``grabcut_max_side`` bounds the longest side GrabCut works at (None: full size); larger images
    are cut on a downscaled copy (:data:`c2f.refine.grabcut.GRABCUT_MAX_SIDE`).

    Returns the labelled images, the failures and the summary also written to
    ``out_dir/summary.json``: ``counts`` (total; done = processed now, dropped included;
    skipped_cached; failed; dropped; labelled; multi_label_ignored),
    ``failed`` / ``dropped`` (key and reason), ``grabcut_fallbacks`` (count, reasons),
    ``mean_seconds`` per step over all finished images, and the ``settings`` and their hash.

    With ``config.workers > 1`` the pool uses the ``spawn`` start method, so a calling script needs
    the usual ``if __name__ == "__main__":`` guard.

    ``shard=(k, n)`` (one of n processes, e.g. DDP ranks) processes ``samples[k::n]`` into the
    same `out_dir` with a journal of its own; ``barrier`` (required when the n calls run
    concurrently) is called once every process has read the caches and once its share is
    written. Then every call returns the merged result of all journals and shard 0 writes
    summary.json. Called one after another without a barrier, the last call sees every shard.

    ``runner`` (default: this process or ``config.workers`` local processes) runs the pending images
    elsewhere, e.g. on a Ray cluster (:mod:`c2f.distributed.ray_masks`); the journal, resume and
    summary stay here, so the outputs are the same wherever the images ran.
    """
    if config is None:
        config = MaskConfig()
    elif not isinstance(config, MaskConfig):
        raise TypeError(f"run_mask_stage's third argument is a MaskConfig, got {type(config).__name__}; "
                        "pass a generator name as MaskConfig(generator=...), a generator object as generator=")
    if isinstance(generator, str):
        raise TypeError(f"generator= takes a CoarseGenerator object; name one with MaskConfig(generator={generator!r})")
    if generator is None:
        generator = make_generator(config.generator, **config.generator_options)
    elif config.generator_options:
        raise ValueError("generator options are only accepted with a generator name, not with a generator object")
    out_dir = Path(out_dir)
    for sample in dataset.samples:
        stage_output_path("labels", sample.key)  # reject unsafe keys before any work
    rank, world = shard
    if not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    # Fitted before settings() names the weights. Shard 0 fits (and caches) alone; the others
    # then load its cached weights instead of training the same model concurrently.
    if rank == 0:
        generator.fit(dataset, out_dir / "generators", progress)
    if barrier is not None:
        barrier()
    if rank != 0:
        generator.fit(dataset, out_dir / "generators", progress=False)
    job = _Config(out_dir, generator, config)  # what each worker gets
    settings_hash = hashlib.sha256(
        json.dumps(job.settings(), sort_keys=True).encode()).hexdigest()[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    journal = out_dir / _journal_name(settings_hash, shard)
    for stale in out_dir.glob("manifest-*.jsonl"):
        if not stale.name.startswith(f"manifest-{settings_hash}."):
            # Its masks are about to be overwritten with other settings: it must not be trusted.
            # (Journals of these settings, every shard's included, stay: they are valid caches.)
            logger.warning("settings changed: discarding stale journal %s", stale.name)
            stale.unlink(missing_ok=True)  # another shard may have removed it first

    started = time.perf_counter()
    states = {s.key: job.input_state(s) for s in dataset.samples}
    records = _read_journals(out_dir, settings_hash, states)
    all_pending: set[str] = set()
    refreshed: list[dict[str, Any]] = []  # cached results whose files were only touched
    for sample in dataset.samples:
        record, state = records.get(sample.key), states[sample.key]
        if not _finished(record, out_dir):
            all_pending.add(sample.key)
        elif record.get("input") != state:
            if _same_content(record, state, lambda: job.input_content(sample)):
                records[sample.key] = {**record, "input": state}
                refreshed.append(records[sample.key])
            else:
                all_pending.add(sample.key)
    pending = [s for s in dataset.samples[rank::world] if s.key in all_pending]
    content = {s.key: job.input_content(s) for s in pending}  # before any work: what the result is of
    n_skipped = len(dataset.samples) - len(all_pending)
    if n_skipped:
        logger.info("mask stage: %d of %d images cached in %s (%d with new mtimes, same content)",
                    n_skipped, len(dataset), out_dir, len(refreshed))
    if barrier is not None:
        barrier()  # every shard has read the caches before any writes: the counts agree

    _terminate_torn_line(journal)
    n_done = 0
    with journal.open("a", encoding="utf-8") as handle, \
            tqdm(total=len(pending), desc="masks", unit="img", disable=not progress) as bar:
        mine = {s.key for s in dataset.samples[rank::world]}
        for record in refreshed:  # the next run then trusts the new mtimes without reading the files
            if record["key"] in mine:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        records_in = runner(job, pending) if runner is not None else _run(job, pending, config.workers)
        for record in records_in:
            record["input"] = states[record["key"]]
            if record["status"] != "failed":
                record["content"] = content[record["key"]]
            handle.write(json.dumps(record, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            records[record["key"]] = record
            if record["status"] == "failed":
                logger.warning("mask stage: %s failed: %s", record["key"], record["reason"])
            else:
                n_done += 1
            bar.update()

    if world > 1:
        if barrier is not None:
            barrier()  # every shard's journal is complete
        records = _read_journals(out_dir, settings_hash, states)
        n_done = sum(records.get(key, {}).get("status") in ("done", "dropped") for key in all_pending)
    summary = _summarise(job, settings_hash, dataset, records, n_done, n_skipped,
                         time.perf_counter() - started)
    if rank == 0:
        tmp = out_dir / f".summary.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True))
        os.replace(tmp, out_dir / "summary.json")
    label_paths = {s.key: out_dir / records[s.key]["outputs"]["labels"] for s in dataset.samples
                   if records.get(s.key, {}).get("status") == "done"}
    failed = [(f["key"], f["reason"]) for f in summary["failed"]]
    logger.info("mask stage: %d labelled, %d dropped, %d failed, %d GrabCut fallbacks -> %s",
                len(label_paths), summary["counts"]["dropped"], len(failed),
                summary["grabcut_fallbacks"]["count"], out_dir)
    return MaskStageResult(out_dir, label_paths, failed, summary)


def mask_quality(
    dataset: LabelledDataset,
    result_or_dir: MaskStageResult | str | Path,
    stage: Literal["coarse", "refined", "labels"] = "labels",
) -> dict[str, Any]:
    """Score one stage's outputs against the dataset's ground truth.

    Returns mIoU / per-class IoU / pixel accuracy over the dataset's classes and the mean
    class-agnostic foreground Jaccard. Binary stages (coarse, refined) are given the image's
    label; multi-label images then only count towards the Jaccard. Samples without ground
    truth are skipped and samples without an output (failed, dropped) counted as `missing`.
    """
    if stage not in ("coarse", "refined", "labels"):
        raise ValueError(f"stage must be 'coarse', 'refined' or 'labels', got {stage!r}")
    out_dir = result_or_dir.out_dir if isinstance(result_or_dir, MaskStageResult) \
        else Path(result_or_dir)
    scorer = Scorer(dataset.num_classes)
    missing = 0
    for sample in dataset.samples:
        if sample.mask is None:
            continue
        path = out_dir / stage_output_path(stage, sample.key)
        if not path.is_file():
            missing += 1
            continue
        gt = ground_truth(sample, dataset)
        pred = read_mask(path)
        if stage != "labels":  # 0/255 masks: 255 is foreground there, not ignore
            pred = np.where(pred != 0, 1, 0).astype(np.uint8)
        fg = (pred != 0) & (pred != IGNORE)
        if dataset.task == "foreground":
            scorer.update(gt, np.where(pred == IGNORE, IGNORE, fg).astype(np.uint8))
        elif stage == "labels":
            scorer.update(gt, pred)
        elif len(sample.labels) == 1:
            scorer.update(gt, compose_label_map(fg, sample.labels))
        else:  # a class-agnostic mask of a multi-label image: its classes are unknown
            scorer.update(gt, fg.astype(np.uint8), confusion=False)
    return {"stage": stage, "missing": missing, **scorer.summary(dataset.class_names)}
