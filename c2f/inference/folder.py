"""Batch segmentation of an image folder tree: mirrored outputs, resume, and a report of bad files.

Outputs per image (``formats``), mirrored to the input tree under ``out_dir``:
``label`` indexed PNG with the VOC palette, ``mask`` binary foreground PNG, ``cutout`` RGBA PNG,
``overlay`` colour overlay PNG. ``results.jsonl`` gets one line per image (its output files, classes,
shares, timings, and the labels used); ``report.json`` lists what was done, skipped as already done,
and failed with the reason.

Output names: ``a/x.jpg`` -> ``a/x.png``, ``a/x_mask.png``, ... When two images in one folder would
get the same output names (``x.jpg`` beside ``x.png``, ``x.webp`` or ``x.JPG``; names compared
case-insensitively, as on macOS and Windows), each of them is named after its full file name instead:
``x.jpg.png``, ``x.jpg_mask.png``, ``x.png.png``, ... The choice depends only on which image files the
input folder holds, never on ``include``/``exclude``, so every run names an image's outputs alike.

Resume: an image is skipped when results.jsonl records it with the outputs this run would write, all
present, made from the same file (size and mtime, or, when only the mtime changed, the same content
digest: a copied or restored input folder keeps its masks), with the same model file (content digest),
the same ``crf``/``grabcut`` choice and refinement bounds, and the same labels. Anything else is segmented
again and its outputs replaced, so a rerun with another model or another option never keeps stale masks.

The output folder may lie inside the input folder: it is never read as input. Temporary files left by
a killed run (see :func:`c2f.data.io.remove_stale_temporaries`) are removed when the next run starts.

Label-aware segmentation (co-segmentation of photos whose classes are known): ``labels`` maps each
image's relative path to its classes, from :mod:`c2f.inference.image_labels` (the class folder an image is
in, or a label file); each mask then holds only background and those classes. ``results.jsonl`` and what a
rerun skips: :mod:`c2f.inference.results_log`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

import numpy as np

from c2f.data.io import (
    IMAGE_EXTENSIONS,
    SUPPORTED_TYPES,
    ImageReadError,
    file_digest,
    file_identity,
    read_image,
    remove_stale_temporaries,
    write_label_png,
    write_mask_png,
    write_rgb,
    write_rgba,
)

from .engine import Engine, Label
from .render import cutout, foreground_mask, overlay
from .results_log import ResultsSink, finished_records, is_finished, only_mtime_changed, open_results

FORMATS = ("label", "mask", "cutout", "overlay")
_SUFFIX = {"label": ".png", "mask": "_mask.png", "cutout": "_cutout.png", "overlay": "_overlay.png"}
NO_LABELS = "no labels given for this image"


@dataclass
class FolderReport:
    """What a folder run did; ``failed`` pairs each bad file with its reason."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed_temporaries: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "done": len(self.done),
            "skipped_already_done": len(self.skipped),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "removed_temporary_files": len(self.removed_temporaries),
        }


def check_folders(input_dir: str | Path, out_dir: str | Path) -> None:
    """Refuse an output folder that is the input folder itself (``ValueError``).

    Outputs would then lie among the inputs with nothing to tell them apart. An output folder *inside*
    the input folder is fine: :func:`find_files` leaves it out.
    """
    if Path(input_dir).resolve() == Path(out_dir).resolve():
        raise ValueError("the output folder must not be the input folder (its outputs would be read as "
                         "images); give a new folder or a subfolder, e.g. -o INPUT_DIR/segmented")


def find_files(
    root: Path, include: Sequence[str] = ("*",), exclude: Sequence[str] = (), skip: Path | None = None
) -> list[Path]:
    """Every file under ``root`` matching an include glob and no exclude glob (on the relative path).

    Files are not filtered by extension here: a text file among the images is reported as a failure,
    not silently ignored, unless the user excludes it. Hidden files and folders are left out, and so
    is the folder ``skip`` (the output folder, whose outputs and reports are no input) when it lies
    under ``root``.
    """
    return [path for path in _visible_files(root, skip) if _selected(path, root, include, exclude)]


def _visible_files(root: Path, skip: Path | None) -> list[Path]:
    """Every file under ``root``, sorted, less hidden ones and those in the folder ``skip``."""
    skipped = _relative_parts(root, skip) if skip is not None else None
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        parts = path.relative_to(root).parts
        if not any(part.startswith(".") for part in parts) and not (skipped and parts[: len(skipped)] == skipped):
            found.append(path)
    return found


def _selected(path: Path, root: Path, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether an include glob and no exclude glob matches the file's relative path or its name."""
    rel = path.relative_to(root).as_posix()
    return any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(path.name, g) for g in include) and not any(
        fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(path.name, g) for g in exclude
    )


def _relative_parts(root: Path, folder: Path) -> tuple[str, ...] | None:
    """``folder``'s path components below ``root`` (links resolved), or None when it is not below it."""
    try:
        return folder.resolve().relative_to(root.resolve()).parts or None
    except ValueError:
        return None


def _base(rel: str, full_name: bool) -> str:
    """The output name of ``rel`` before the format suffix: ``a/x`` (plain) or ``a/x.jpg`` (full name)."""
    path = PurePosixPath(rel)
    return (path if full_name else path.with_suffix("")).as_posix()


def output_bases(rels: Iterable[str]) -> dict[str, str]:
    """Each image's output name before the format suffix; images whose outputs would clash get full names.

    ``rels`` are the relative POSIX paths of every image in the input folder. Outputs of all formats
    are compared case-insensitively, so ``x.jpg`` and ``X.png`` clash too, and so do ``x.jpg`` and
    ``x_mask.jpg`` (the mask of one is the label of the other). Clashing images switch to their full
    file names, repeatedly until nothing clashes; full names never clash with each other, because an
    image name ends in an image extension and never in ``_mask``, ``_cutout`` or ``_overlay``.
    Files without an image extension write nothing and take no part.
    """
    images = sorted({rel for rel in rels if PurePosixPath(rel).suffix.lower() in IMAGE_EXTENSIONS})
    full: set[str] = set()
    while True:
        owners: dict[str, set[str]] = defaultdict(set)
        for rel in images:
            base = _base(rel, rel in full)
            for suffix in _SUFFIX.values():
                owners[(base + suffix).casefold()].add(rel)
        clashing = {rel for group in owners.values() if len(group) > 1 for rel in group} - full
        if not clashing:
            return {rel: _base(rel, rel in full) for rel in images}
        full |= clashing


def output_paths(out_dir: Path, rel: Path | str, formats: Sequence[str], base: str | None = None) -> dict[str, Path]:
    """Each format's output file for image ``rel``; ``base`` from :func:`output_bases` (default: plain)."""
    base = base if base is not None else _base(PurePosixPath(rel).as_posix(), full_name=False)
    return {fmt: out_dir / f"{base}{_SUFFIX[fmt]}" for fmt in formats}


@dataclass
class FolderPlan:
    """What a folder run has to do, worked out before any image is read (shared by local and Ray runs).

    ``pending`` are the relative paths still to segment, in input order; ``bases`` each image's output
    name (:func:`output_bases`); ``own`` each image's class indices when labels were given; ``report``
    already holds the images skipped as done and the temporaries removed. ``made_with`` digests what
    decides the masks (model file, options) and ``inputs`` holds each pending file's ``input`` (size
    and mtime) and ``content`` (:func:`~c2f.data.io.file_digest`): all go into every record, and a later
    run skips an image when they still match, or when only its mtime changed and its content did not.
    """

    input_dir: Path
    out_dir: Path
    formats: tuple[str, ...]
    pending: list[str]
    bases: dict[str, str]
    own: dict[str, tuple[int, ...]] | None
    report: FolderReport
    made_with: str
    inputs: dict[str, dict[str, Any]]

    def targets(self, rel: str) -> dict[str, Path]:
        """Each format's output file for image ``rel``."""
        return output_paths(self.out_dir, rel, self.formats, self.bases[rel])


def plan_folder(
    engine: Engine,
    input_dir: str | Path,
    out_dir: str | Path,
    *,
    formats: Sequence[str],
    include: Sequence[str],
    exclude: Sequence[str],
    labels: Mapping[str, Sequence[Label]] | None,
    crf: bool = False,
    grabcut: bool = False,
) -> FolderPlan:
    """Check the arguments, prepare ``out_dir`` and find the images not yet done (see :func:`segment_folder`)."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; valid: {list(FORMATS)}")
    check_folders(input_dir, out_dir)
    own = {rel: engine.class_indices(names) for rel, names in labels.items()} if labels is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    report = FolderReport()
    report.removed_temporaries = [p.relative_to(out_dir).as_posix() for p in remove_stale_temporaries(out_dir)]
    files = _visible_files(input_dir, skip=out_dir)
    bases = output_bases(p.relative_to(input_dir).as_posix() for p in files)  # from all files: filter-proof
    made_with = made_with_digest(engine, crf=crf, grabcut=grabcut)
    class_names = engine.info.class_names
    finished = finished_records(out_dir)
    pending, inputs, touched = [], {}, []
    for path in (p for p in files if _selected(p, input_dir, include, exclude)):
        rel = path.relative_to(input_dir).as_posix()
        identity, record = file_identity(path), finished.get(rel)
        made_of = {"made_with": made_with, "input": identity,
                   "labels": None if own is None or rel not in own else [class_names[i] for i in own[rel]]}
        targets = output_paths(out_dir, rel, formats, bases[rel]) if rel in bases else None
        if targets is not None and is_finished(record, targets, out_dir, made_of):
            report.skipped.append(rel)
        elif targets is not None and record is not None and is_finished(
                record, targets, out_dir, {**made_of, "input": record.get("input")}
        ) and only_mtime_changed(record, path, identity):  # reads the file only when all else matches
            report.skipped.append(rel)
            touched.append({**record, "input": identity})  # the next run compares sizes and mtimes only
        else:
            pending.append(rel)
            inputs[rel] = {"input": identity, "content": file_digest(path)}  # before any image is read
    if touched:
        with open_results(out_dir / "results.jsonl") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in touched)
    return FolderPlan(input_dir, out_dir, tuple(formats), pending, bases, own, report, made_with, inputs)


def made_with_digest(engine: Engine, *, crf: bool, grabcut: bool) -> str:
    """A short digest of what decides a folder run's masks: the engine's model and bounds, CRF, GrabCut."""
    settings = {**engine.output_settings(), "crf": crf, "grabcut": grabcut}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def segment_folder(
    engine: Engine,
    input_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = ("label",),
    *,
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    crf: bool = False,
    grabcut: bool = False,
    progress: bool = True,
    workers: int = 1,
    labels: Mapping[str, Sequence[Label]] | None = None,
) -> FolderReport:
    """Segment every image under ``input_dir``; images already done are skipped (resume).

    Done means results.jsonl records the image with exactly the outputs this run would write, all
    present, made from the same file with the same model, options and labels; anything else (new,
    edited, failed, killed part-way, another model or option) is segmented again. The output folder
    is left out of the input scan, and temporary files a killed run left in it are removed first.

    Images go to the model ``engine.batch_size`` at a time; ``workers`` threads decode the next
    chunks and encode the previous ones while the model runs (PIL, OpenCV and ONNX Runtime release
    the GIL), a bounded number of chunks ahead and behind, so memory does not grow with the folder.
    Results are recorded in input order.

    ``labels`` (relative POSIX path -> class names or indices) restricts each image's mask to
    background and its own classes; every label is checked against the model before any image is
    read (``ValueError``), and an image without an entry is reported as failed, not segmented
    (and retried by the next run, like any failure).
    """
    plan = plan_folder(engine, input_dir, out_dir, formats=formats, include=include, exclude=exclude, labels=labels,
                       crf=crf, grabcut=grabcut)
    class_names = engine.info.class_names
    pending = plan.pending
    chunks = iter([pending[start : start + engine.batch_size] for start in range(0, len(pending), engine.batch_size)])
    # Chunks decoded ahead of the model and chunks whose outputs may still be being written: enough
    # to keep every worker busy while the model runs, few enough that memory stays flat however
    # large the folder.
    ahead = max(2, workers)
    with ResultsSink(plan, total=len(pending), progress=progress) as sink, ThreadPoolExecutor(workers) as pool:
        reads: deque[tuple[list[str], list[Future]]] = deque()
        writes: deque[list[Future]] = deque()

        def read_next() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                reads.append((chunk, [pool.submit(load_image, plan.input_dir / rel) for rel in chunk]))

        def finish_writes(keep: int) -> None:
            """Record written images, oldest chunk first, until at most ``keep`` chunks are in flight."""
            while len(writes) > keep:
                sink.done(future.result() for future in writes.popleft())

        for _ in range(ahead):
            read_next()
        while reads:
            chunk, futures = reads.popleft()
            read_next()
            loaded = []
            for rel, future in zip(chunk, futures):
                outcome = future.result()
                reason = unusable(rel, outcome, plan.own)
                if reason is not None:
                    sink.fail(rel, reason)
                else:
                    loaded.append((rel, *outcome))
            chunk_labels = [plan.own[rel] for rel, _, _ in loaded] if plan.own is not None else None
            predictions = engine.segment([image for _, image, _ in loaded], crf=crf, grabcut=grabcut,
                                         labels=chunk_labels)
            jobs = [dict(targets=plan.targets(rel), out_dir=plan.out_dir, rel=rel, image=image, read_s=read_s,
                         label_map=prediction.label_map, shares=prediction.class_shares(class_names),
                         timings=prediction.timings, class_names=class_names,
                         labels=chunk_labels[i] if chunk_labels is not None else None)
                    for i, ((rel, image, read_s), prediction) in enumerate(zip(loaded, predictions))]
            writes.append([pool.submit(write_outputs, **job) for job in jobs])
            finish_writes(keep=ahead)
        finish_writes(keep=0)
    return plan.report


def load_image(path: Path) -> tuple[np.ndarray, float] | ImageReadError:
    """Decode one file, or return (not raise) why it cannot be used, so one bad file skips alone."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return ImageReadError(
            str(path), f"not an image file type ({path.suffix or 'no suffix'}); readable: {SUPPORTED_TYPES}"
        )
    began = time.perf_counter()
    try:
        return read_image(path), time.perf_counter() - began
    except ImageReadError as error:
        return error


def unusable(rel: str, outcome: tuple[np.ndarray, float] | ImageReadError,
             own: Mapping[str, tuple[int, ...]] | None) -> str | None:
    """Why a loaded file (:func:`load_image`'s outcome) cannot be segmented, or None when it can."""
    if isinstance(outcome, ImageReadError):
        return str(outcome)
    if own is not None and rel not in own:
        return NO_LABELS
    return None


def write_outputs(
    *, targets: Mapping[str, Path], out_dir: Path, rel: str, image: np.ndarray, read_s: float,
    label_map: np.ndarray, shares: dict[str, float], timings: Mapping[str, float], class_names: Sequence[str],
    labels: tuple[int, ...] | None,
) -> dict:
    """Write one image's outputs (format -> file) and return its JSON-lines record.

    ``label_map``, ``shares`` and ``timings`` are the prediction's. The record names the output files
    relative to ``out_dir`` (``outputs``) and the labels used (``labels``: null when unrestricted).
    """
    label = label_map
    foreground = foreground_mask(label)
    writers = {
        "label": lambda p: write_label_png(p, label),
        "mask": lambda p: write_mask_png(p, foreground),
        "cutout": lambda p: write_rgba(p, cutout(image, foreground)),
        "overlay": lambda p: write_rgb(p, overlay(image, label)),
    }
    for fmt, target in targets.items():
        writers[fmt](target)
    return {
        "path": rel,
        "outputs": {fmt: target.relative_to(out_dir).as_posix() for fmt, target in targets.items()},
        "size": [int(image.shape[1]), int(image.shape[0])],
        "labels": [class_names[i] for i in labels] if labels is not None else None,
        "classes": sorted({class_names[i] for i in np.unique(label) if 0 < i < len(class_names)}),
        "shares": shares,
        "timings": {"read_s": round(read_s, 4), **{k: round(v, 4) for k, v in timings.items()}},
    }
