"""Which classes each image of a folder job has: its class folder, or a label file.

``c2f segment --labels-from folders|FILE`` and :meth:`c2f.Segmenter.segment_folder` read labels here, so
both accept and refuse the same inputs; a mask of a labelled image then holds only background and its
classes (label-aware segmentation).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from c2f.data.io import IMAGE_EXTENSIONS

__all__ = ["LABEL_LINE", "folder_labels", "label_names", "read_label_file"]

LABEL_LINE = "relative/path.jpg<TAB>class[,class...]"


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


def label_names(source: str | os.PathLike[str], rels: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Class names per relative image path, from ``"folders"`` (:func:`folder_labels` of ``rels``, the
    input folder's files) or a label file (:func:`read_label_file`).

    ``ValueError`` when no image is in a class folder, when ``source`` is neither, or naming a label
    file's bad line (an undecodable file included), so the CLI and the Python API refuse alike.
    """
    if source == "folders":
        names = folder_labels(rels)
        if not names:
            raise ValueError("no images in class folders under the input folder")
        return names
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{str(source)!r} is neither 'folders' nor a label file")
    return read_label_file(path)


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
