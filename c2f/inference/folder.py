"""Batch segmentation of an image folder tree: mirrored outputs, resume, and a report of bad files.

Outputs per image (``formats``), mirrored to the input tree under ``out_dir``:
``label`` indexed PNG with the VOC palette, ``mask`` binary foreground PNG, ``cutout`` RGBA PNG,
``overlay`` colour overlay PNG. ``results.jsonl`` gets one line per image (classes, shares, timings,
and the labels used); ``report.json`` lists what was done, skipped as already done, and failed with the
reason.

Label-aware segmentation (co-segmentation of photos whose classes are known): ``labels`` maps each
image's relative path to its classes, from :func:`folder_labels` (the class folder an image is in) or
:func:`read_label_file`; each mask then holds only background and those classes.
"""

from __future__ import annotations

import fnmatch
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from tqdm import tqdm

from c2f.data.io import IMAGE_EXTENSIONS, ImageReadError, read_image, write_label_png, write_mask_png, write_rgb, write_rgba

from .engine import Engine, Label, Prediction
from .render import cutout, foreground_mask, overlay

FORMATS = ("label", "mask", "cutout", "overlay")
_SUFFIX = {"label": ".png", "mask": "_mask.png", "cutout": "_cutout.png", "overlay": "_overlay.png"}
NO_LABELS = "no labels given for this image"
LABEL_LINE = "relative/path.jpg<TAB>class[,class...]"


@dataclass
class FolderReport:
    """What a folder run did; ``failed`` pairs each bad file with its reason."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "done": len(self.done),
            "skipped_already_done": len(self.skipped),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
        }


def find_files(root: Path, include: Sequence[str] = ("*",), exclude: Sequence[str] = ()) -> list[Path]:
    """Every file under ``root`` matching an include glob and no exclude glob (on the relative path).

    Files are not filtered by extension here: a text file among the images is reported as a failure,
    not silently ignored, unless the user excludes it.
    """
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        if any(fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(path.name, g) for g in include) and not any(
            fnmatch.fnmatch(rel, g) or fnmatch.fnmatch(path.name, g) for g in exclude
        ):
            found.append(path)
    return found


def output_paths(out_dir: Path, rel: Path, formats: Sequence[str]) -> dict[str, Path]:
    stem = out_dir / rel.parent / rel.stem
    return {fmt: stem.with_name(stem.name + _SUFFIX[fmt]) for fmt in formats}


def folder_labels(rels: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each relative image path's class: the folder directly under the input folder that holds it.

    ``cat/a.jpg`` and ``cat/2021/b.jpg`` are both ``cat``, so a class folder may keep its own
    subfolders. Images directly in the input folder have no class and get no entry; files that
    are not images get none either (they fail as such, and a ``docs/`` folder is not a class).
    """
    return {
        rel: (rel.split("/", 1)[0],)
        for rel in rels
        if "/" in rel and Path(rel).suffix.lower() in IMAGE_EXTENSIONS
    }


def read_label_file(path: str | Path) -> dict[str, tuple[str, ...]]:
    """A label file -> {relative image path: class names}; ``ValueError`` naming the bad line.

    One image per line: its path relative to the input folder, a TAB, its classes separated by
    commas (``dogs/rex.jpg<TAB>dog`` or ``park.jpg<TAB>dog,person``). A third column (the mask of a
    training list file) is ignored, so the list file of a training set can be reused.
    """
    path = Path(path)
    labels: dict[str, tuple[str, ...]] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}, line {number}"
        columns = [column.strip() for column in line.split("\t")]
        names = tuple(name.strip() for name in columns[1].split(",")) if len(columns) > 1 else ()
        if len(columns) > 3 or not columns[0] or not names or not all(names):
            raise ValueError(f"{where}: expected '{LABEL_LINE}', got {line!r}")
        rel = Path(columns[0])
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"{where}: {columns[0]!r} must be a path relative to the input folder")
        if rel.as_posix() in labels:
            raise ValueError(f"{where}: {rel.as_posix()!r} is listed twice")
        labels[rel.as_posix()] = names
    return labels


def segment_folder(
    engine: Engine,
    input_dir: str | Path,
    out_dir: str | Path,
    formats: Sequence[str] = ("label",),
    include: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    crf: bool = False,
    grabcut: bool = False,
    progress: bool = True,
    workers: int = 1,
    *,
    labels: Mapping[str, Sequence[Label]] | None = None,
) -> FolderReport:
    """Segment every image under ``input_dir``; images whose outputs all exist are skipped (resume).

    Images go to the model ``engine.batch_size`` at a time; ``workers`` threads decode and encode
    images around it (PIL and OpenCV release the GIL while they do).

    ``labels`` (relative POSIX path -> class names or indices) restricts each image's mask to
    background and its own classes; every label is checked against the model before any image is
    read (``ValueError``), and an image without an entry is reported as failed, not segmented
    (and retried by the next run, like any failure).
    """
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown formats {unknown}; valid: {list(FORMATS)}")
    own = {rel: engine.class_indices(names) for rel, names in labels.items()} if labels is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)
    report = FolderReport()
    pending = []
    for path in find_files(input_dir, include, exclude):
        rel = path.relative_to(input_dir)
        if all(p.exists() for p in output_paths(out_dir, rel, formats).values()):
            report.skipped.append(rel.as_posix())
        else:
            pending.append(path)
    with open(out_dir / "results.jsonl", "a", encoding="utf-8") as jsonl, ThreadPoolExecutor(workers) as pool, \
            tqdm(total=len(pending), desc="segment", disable=not progress) as bar:
        for start in range(0, len(pending), engine.batch_size):
            chunk = pending[start : start + engine.batch_size]
            loaded = []
            for path, outcome in zip(chunk, pool.map(_load, chunk)):
                rel = path.relative_to(input_dir).as_posix()
                if isinstance(outcome, ImageReadError):
                    report.failed.append((rel, str(outcome)))
                elif own is not None and rel not in own:
                    report.failed.append((rel, NO_LABELS))
                else:
                    loaded.append((rel, *outcome))
            chunk_labels = [own[rel] for rel, _, _ in loaded] if own is not None else None
            predictions = engine.segment([image for _, image, _ in loaded], crf=crf, grabcut=grabcut,
                                         labels=chunk_labels)
            jobs = [(out_dir, rel, image, read_s, prediction, formats, engine.info.class_names,
                     chunk_labels[i] if chunk_labels is not None else None)
                    for i, ((rel, image, read_s), prediction) in enumerate(zip(loaded, predictions))]
            for record in pool.map(lambda job: _write(*job), jobs):
                jsonl.write(json.dumps(record) + "\n")
                report.done.append(record["path"])
            jsonl.flush()
            bar.update(len(chunk))
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    return report


def _load(path: Path) -> tuple[np.ndarray, float] | ImageReadError:
    """Decode one file, or return (not raise) why it cannot be used, so one bad file skips alone."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return ImageReadError(str(path), f"not an image file type ({path.suffix or 'no suffix'})")
    began = time.perf_counter()
    try:
        return read_image(path), time.perf_counter() - began
    except ImageReadError as error:
        return error


def _write(
    out_dir: Path, rel: str, image: np.ndarray, read_s: float, prediction: Prediction,
    formats: Sequence[str], class_names: Sequence[str], labels: tuple[int, ...] | None,
) -> dict:
    """Write one image's outputs and return its JSON-lines record (``labels``: null when unrestricted)."""
    label = prediction.label_map
    foreground = foreground_mask(label)
    writers = {
        "label": lambda p: write_label_png(p, label),
        "mask": lambda p: write_mask_png(p, foreground),
        "cutout": lambda p: write_rgba(p, cutout(image, foreground)),
        "overlay": lambda p: write_rgb(p, overlay(image, label)),
    }
    for fmt, target in output_paths(out_dir, Path(rel), formats).items():
        writers[fmt](target)
    return {
        "path": rel,
        "size": [int(image.shape[1]), int(image.shape[0])],
        "labels": [class_names[i] for i in labels] if labels is not None else None,
        "classes": sorted({class_names[i] for i in np.unique(label) if 0 < i < len(class_names)}),
        "shares": prediction.class_shares(class_names),
        "timings": {"read_s": round(read_s, 4), **{k: round(v, 4) for k, v in prediction.timings.items()}},
    }
