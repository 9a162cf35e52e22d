"""``results.jsonl``, a folder job's journal: one record per finished image, and what a rerun may skip.

A record names the image's outputs and says how they were made (``made_with``: the model file's digest
and the options; ``input``: the image file's size and mtime; ``content``: its digest; the labels). A
rerun skips an image only when its last record matches all of that and the outputs exist; when only
the mtime changed (a copied or restored folder), the content digest decides and a record with the new
mtime is appended. Records are appended, never rewritten: the last one of an image counts, and a line
cut short by a kill is ignored.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, TextIO

from tqdm import tqdm

from c2f.data.io import file_digest

if TYPE_CHECKING:
    from .folder import FolderPlan

__all__ = ["ResultsSink", "finished_records", "is_finished", "only_mtime_changed", "open_results"]


def finished_records(out_dir: Path) -> dict[str, dict]:
    """Relative image path -> its last record in results.jsonl; a line cut short by a kill is ignored."""
    finished: dict[str, dict] = {}
    try:
        lines = (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return finished
    for line in lines:
        try:
            record = json.loads(line)
            finished[str(record["path"])] = record
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return finished


def is_finished(record: dict | None, targets: Mapping[str, Path], out_dir: Path, made_of: Mapping) -> bool:
    """An image is done when results.jsonl records it with these outputs, they all exist, and the record
    says it was made as this run would make it (``made_of``: settings digest, file identity, labels).

    Requiring the record as well as the files means an image killed between writing its files and
    its record is redone (so results.jsonl always lists it), and outputs written under another name
    (by a version that let clashing names overwrite each other) do not count. Records written before
    ``made_with`` was recorded never match: the model that made them is unknown.
    """
    if record is None or any(record.get(key) != value for key, value in made_of.items()):
        return False
    outputs = record.get("outputs") or {}
    return all(outputs.get(fmt) == target.relative_to(out_dir).as_posix() and target.exists()
               for fmt, target in targets.items())


def only_mtime_changed(record: dict | None, path: Path, identity: list[int] | None) -> bool:
    """Whether ``path`` is the file ``record`` was made from under a new mtime (copied, restored, touched).

    Same size, then the same :func:`~c2f.data.io.file_digest`; records without a ``content`` digest never
    match, so the file is read only when its size says it may be unchanged.
    """
    if record is None or identity is None or not record.get("content"):
        return False
    before = record.get("input")
    return isinstance(before, list) and before[:1] == identity[:1] and file_digest(path) == record["content"]


def open_results(path: Path) -> TextIO:
    """Open results.jsonl for appending, first ending a line a kill cut short so records stay one per line."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as handle:
            handle.seek(-1, 2)
            cut = handle.read(1) != b"\n"
        if cut:
            with open(path, "a", encoding="utf-8") as handle:
                handle.write("\n")
    return open(path, "a", encoding="utf-8")


class ResultsSink:
    """Where finished images go: results.jsonl (flushed per call), the report, the progress bar.

    Used as a context manager; on a clean exit report.json is written. A kill leaves results.jsonl
    with every finished image recorded, which is what the next run resumes from.
    """

    def __init__(self, plan: FolderPlan, *, total: int, progress: bool) -> None:
        self.plan = plan
        self._jsonl = open_results(plan.out_dir / "results.jsonl")
        self._bar = tqdm(total=total, desc="segment", disable=not progress)

    def __enter__(self) -> "ResultsSink":
        return self

    def fail(self, rel: str, reason: str) -> None:
        self.plan.report.failed.append((rel, reason))
        self._bar.update(1)

    def done(self, records: Iterable[dict]) -> None:
        for record in records:
            record = {**record, "made_with": self.plan.made_with, **self.plan.inputs.get(record["path"], {})}
            self._jsonl.write(json.dumps(record) + "\n")
            self.plan.report.done.append(record["path"])
            self._bar.update(1)
        self._jsonl.flush()

    def __exit__(self, kind: type | None, *_: object) -> None:
        self._jsonl.close()
        self._bar.close()
        if kind is None:
            (self.plan.out_dir / "report.json").write_text(json.dumps(self.plan.report.to_dict(), indent=2))
