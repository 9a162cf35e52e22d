"""The Python front door: ``c2f.Segmenter`` and ``c2f.segment`` over the one inference engine.

Everything here is a thin layer over :class:`c2f.inference.Engine`: images go in as arrays, files,
bytes or PIL images, and the engine's :class:`~c2f.inference.Prediction` comes back, exactly what
``c2f segment`` and the HTTP service compute for the same image.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from PIL import Image, ImageOps

from c2f.data.io import _to_rgb, decode_image, file_identity, read_image
from c2f.inference.engine import Engine, Label, Prediction

if TYPE_CHECKING:
    from c2f.inference.folder import FolderReport

ImageInput = Union[np.ndarray, str, os.PathLike, Image.Image, bytes]
"""One image: an RGB uint8 array (HxWx3; HxW gray and HxWx4 RGBA are taken too, alpha dropped),
a file path, a PIL image, or the bytes of an image file."""

Classes = Union[Label, Sequence[Label], None]

FolderLabels = Union[str, os.PathLike, Mapping[str, Sequence[Label]], None]
"""Known classes of a folder's images: ``"folders"``, a label file, or {relative path: classes}."""


def to_rgb_array(image: ImageInput) -> np.ndarray:
    """Any accepted image input -> HxWx3 uint8 RGB, read the way every c2f command reads files.

    Paths and bytes go through :func:`c2f.data.io.read_image` / ``decode_image`` (EXIF orientation
    applied); a PIL image is EXIF-oriented and converted like a file; an array must be uint8 RGB
    (OpenCV's BGR arrays need ``image[..., ::-1]`` first).
    """
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    if isinstance(image, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(image))  # a copy: the caller's image is untouched
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"an image array must be uint8 RGB, got dtype {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4) and image.shape[0] and image.shape[1]:
            return np.ascontiguousarray(image[:, :, :3])
        raise ValueError(f"an image array must be HxWx3 RGB (or HxW gray, HxWx4 RGBA), got shape {image.shape}")
    raise TypeError(
        f"expected an image (RGB uint8 array, file path, PIL image or bytes), got {type(image).__name__}"
        + ("; use segment_many for several images" if isinstance(image, (list, tuple)) else "")
    )


def _is_label(value: Any) -> bool:
    return isinstance(value, (str, int, np.integer)) and not isinstance(value, bool)


def per_image_classes(classes: Any, count: int) -> list[Any] | None:
    """``segment_many``'s ``classes`` -> one entry per image (``None``: no restriction).

    - ``None``: no image is restricted;
    - a name or index, or a flat list of them (``["cat", "dog"]``): the same classes for every image;
    - a list with one entry per image, as soon as any entry is a list or ``None``
      (``[["cat"], ["dog", "person"], None]``); its length must be the number of images.
    """
    if classes is None:
        return None
    if _is_label(classes):
        return [(classes,)] * count
    classes = list(classes)
    if all(_is_label(entry) for entry in classes):
        return [tuple(classes)] * count
    if len(classes) != count:
        raise ValueError(f"{len(classes)} classes entries for {count} images: give one entry per image "
                         "(a list of names or None), or one flat list of names for all images")
    return [entry if entry is None or _is_label(entry) else tuple(entry) for entry in classes]


class Segmenter:
    """A loaded segmentation model (``.onnx`` export or ``.pt`` checkpoint), ready to call.

    >>> seg = c2f.Segmenter("photos.onnx")
    >>> seg("cat.jpg").label_map                      # HxW uint8 class indices
    >>> seg("cat.jpg", classes=["cat"]).label_map     # only background and cat (label-aware)

    ``device`` is ``auto``, ``cpu`` or ``cuda``; ``threads`` sets the runtime's intra-op threads;
    ``batch_size`` is the largest model call of :meth:`segment_many`; ``keep_aspect`` pads each
    image into the model's square input instead of resizing it (``c2f segment --keep-aspect``).
    The underlying :class:`~c2f.inference.Engine` is ``self.engine``.
    """

    def __init__(
        self, model_path: str | os.PathLike, *, device: str = "auto", threads: int | None = None,
        batch_size: int = 8, keep_aspect: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.engine = Engine.open(self.model_path, device=device, threads=threads, batch_size=batch_size,
                                  keep_aspect=keep_aspect)

    @property
    def class_names(self) -> list[str]:
        """The model's classes, index 0 being background."""
        return list(self.engine.info.class_names)

    @property
    def task(self) -> str:
        """``semantic`` (one class per pixel) or ``foreground`` (class-agnostic, takes no classes)."""
        return self.engine.info.task

    @property
    def device(self) -> str:
        """Where the model runs: ``cpu`` or ``cuda``."""
        return self.engine.backend.device

    def __call__(self, image: ImageInput, *, classes: Classes = None, crf: bool = False,
                 grabcut: bool = False) -> Prediction:
        """Segment one image; ``classes`` (names or indices) are the classes it is known to contain.

        With ``classes`` the label map holds only background and those classes (the between-round
        relabelling rule, as ``c2f segment --labels-from``); an unknown name raises ``ValueError``
        naming the model's classes. ``crf`` sharpens with a dense CRF, ``grabcut`` re-cuts the
        foreground with GrabCut.
        """
        labels = None if classes is None else [self.engine.class_indices(classes)]
        return self.engine.segment([to_rgb_array(image)], crf=crf, grabcut=grabcut, labels=labels)[0]

    def segment_many(self, images: Iterable[ImageInput], *, classes: Any = None, crf: bool = False,
                     grabcut: bool = False) -> list[Prediction]:
        """Segment several images in batches of ``batch_size``; one Prediction per image, in order.

        ``classes``: ``None``; one name/index or one flat list of them for every image
        (``["cat", "dog"]``); or one entry per image, each a list of names/indices or ``None``
        (``[["cat"], ["dog", "person"], None]``). Classes are checked before any image is read.
        """
        images = list(images)
        labels = per_image_classes(classes, len(images))
        if labels is not None:
            labels = [None if entry is None else self.engine.class_indices(entry) for entry in labels]
        arrays = [to_rgb_array(image) for image in images]
        return self.engine.segment(arrays, crf=crf, grabcut=grabcut, labels=labels)

    def segment_folder(
        self, input_dir: str | os.PathLike, out_dir: str | os.PathLike, *, formats: Sequence[str] = ("label",),
        labels: FolderLabels = None, crf: bool = False, grabcut: bool = False, include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (), workers: int = 2, progress: bool = True,
    ) -> FolderReport:
        """Segment every image under ``input_dir`` into ``out_dir``, as ``c2f segment`` does.

        The same outputs (``formats``: label, mask, cutout, overlay), ``results.jsonl`` and
        ``report.json``; a rerun skips what it would make the same way. ``labels``: ``None``,
        ``"folders"`` (each image's class is its folder under ``input_dir``), a label file
        (``relative/path.jpg<TAB>class[,class...]``) or ``{relative path: classes}``; every class is
        checked against the model before any image is read (``ValueError``). Unreadable files are
        reported in the returned :class:`~c2f.inference.folder.FolderReport`, never raised.
        """
        from c2f.inference.folder import find_files, segment_folder
        from c2f.inference.image_labels import label_names

        input_dir, out_dir = Path(input_dir), Path(out_dir)
        if isinstance(labels, (str, os.PathLike)):  # "folders" or a label file, read as c2f segment reads them
            files = find_files(input_dir, include, exclude, skip=out_dir)
            labels = label_names(labels, [path.relative_to(input_dir).as_posix() for path in files])
        return segment_folder(self.engine, input_dir, out_dir, tuple(formats), include=tuple(include),
                              exclude=tuple(exclude), crf=crf, grabcut=grabcut, progress=progress, workers=workers,
                              labels=labels)

    def __repr__(self) -> str:
        names = self.class_names
        shown = names if len(names) <= 8 else names[:7] + [f"... ({len(names)} in all)"]
        return (f"Segmenter({str(self.model_path)!r}, task={self.task!r}, classes={shown}, "
                f"device={self.device!r}, input_size={self.engine.info.input_size}, "
                f"batch_size={self.engine.batch_size}, keep_aspect={self.engine.keep_aspect})")


_CACHE: dict[tuple[str, str, bool], tuple[Any, Segmenter]] = {}
_CACHE_LOCK = threading.Lock()


def segmenter_for(model: str | os.PathLike, *, device: str = "auto", keep_aspect: bool = False) -> Segmenter:
    """The cached :class:`Segmenter` of a model file, loaded on first use.

    One per (resolved path, device, keep_aspect); a file rewritten since (another export to the same
    path) is loaded afresh.
    """
    path = Path(model).resolve()
    key = (str(path), device, keep_aspect)
    identity = file_identity(path)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None and cached[0] == identity:
            return cached[1]
        segmenter = Segmenter(path, device=device, keep_aspect=keep_aspect)
        _CACHE[key] = (identity, segmenter)
        return segmenter


def segment(image: ImageInput, *, model: str | os.PathLike | Segmenter, device: str = "auto",
            keep_aspect: bool = False, classes: Classes = None, crf: bool = False,
            grabcut: bool = False) -> Prediction:
    """Segment one image with a model file: ``c2f.segment("cat.jpg", model="photos.onnx")``.

    The model is loaded once and kept (see :func:`segmenter_for`), so repeated calls are cheap.
    ``model`` may also be a :class:`Segmenter`. The other options are :class:`Segmenter`'s.
    """
    segmenter = model if isinstance(model, Segmenter) else segmenter_for(model, device=device, keep_aspect=keep_aspect)
    return segmenter(image, classes=classes, crf=crf, grabcut=grabcut)
