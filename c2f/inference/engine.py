"""The one inference path: preprocess, batch, run a backend, upsample, softmax, optional refinement.

Images are resized to the model's square training size (the paper resizes to 321x321), so any batch
of images stacks into one tensor; probabilities are resized back to each image's own size. With
``keep_aspect`` the image is instead scaled to fit that square without distortion and the rest is
padded (edge pixels repeated); the padding's logits are cut off before resizing back.

CRF and GrabCut run at a bounded working resolution (:data:`REFINE_MAX_PIXELS`, see
:func:`working_size`): a larger photo is refined on a downscaled copy and the result upsampled, so
their time and memory stop growing with the photo. Images within the bound are refined at full size.
The dense CRF has a tighter bound of its own (:data:`CRF_MAX_PIXELS`) and skips classes the image
does not hold (:data:`CRF_PRUNE_BELOW`), see :func:`bounded_crf`.

Without refinement or label restriction the label map is the argmax of the bilinearly resized
logits (softmax is monotonic, so it is the same map up to float ties); the full-size probabilities
are then made only if read (:class:`Prediction`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from c2f.data.io import file_digest
from c2f.labelmap import IGNORE

from .backends import Backend, ModelInfo, load_backend


class Prediction:
    """One image's result: the label map at the image's size, its class probabilities and timings.

    ``refined_size`` is the (height, width) at which CRF/GrabCut ran (None when neither ran):
    smaller than the image above :data:`REFINE_MAX_PIXELS`. ``probs`` may be given as a function
    that makes them: they are then made on first access only. A refined big photo's full-size
    probabilities (classes x height x width float32, 1 GB for 21 classes at 12 MP) are not needed
    for its label map, and the service, which sends only the map, never makes them.
    """

    def __init__(
        self,
        label_map: np.ndarray,
        probs: np.ndarray | Callable[[], np.ndarray],
        timings: dict[str, float] | None = None,
        refined_size: tuple[int, int] | None = None,
    ) -> None:
        self.label_map = label_map
        self._probs = probs
        self.timings = {} if timings is None else timings
        self.refined_size = refined_size

    @property
    def probs(self) -> np.ndarray:
        """CxHxW float32 class probabilities at the image's size (after the CRF when it ran)."""
        if callable(self._probs):
            self._probs = self._probs()
        return self._probs

    def __repr__(self) -> str:
        return (f"Prediction(label_map={self.label_map.shape}, timings={self.timings}, "
                f"refined_size={self.refined_size})")

    def class_shares(self, class_names: Sequence[str]) -> dict[str, float]:
        """Share of the image's pixels per class present (for JSON reports)."""
        return {name: share for _, name, _, share in class_pixels(self.label_map, class_names)}


def class_pixels(label_map: np.ndarray, class_names: Sequence[str]) -> list[tuple[int, str, int, float]]:
    """(index, name, pixels, share of the image) of every value present in a label map.

    One definition for the folder reports and the HTTP JSON: values past the class list are named
    too (255 is ``ignore``, which GrabCut post-processing can leave), so shares always sum to 1.
    """
    counts = np.bincount(label_map.ravel(), minlength=256)
    rows = []
    for index in np.flatnonzero(counts):
        if index < len(class_names):
            name = class_names[index]
        else:
            name = "ignore" if index == IGNORE else f"class_{index}"
        rows.append((int(index), name, int(counts[index]), round(float(counts[index]) / label_map.size, 6)))
    return rows


def fit_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image scaled to fit a ``size`` square without distortion."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_batch(images: Sequence[np.ndarray], size: int, keep_aspect: bool = False) -> np.ndarray:
    """Stack RGB uint8 images as float32 NCHW pixels (0..255) at ``size`` x ``size``."""
    batch = np.empty((len(images), 3, size, size), dtype=np.float32)
    for i, image in enumerate(images):
        if keep_aspect:
            height, width = fit_size(image.shape[0], image.shape[1], size)
            resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            resized = cv2.copyMakeBorder(resized, 0, size - height, 0, size - width, cv2.BORDER_REPLICATE)
        else:
            resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        # HWC -> CHW as a 2-D (pixels x channels) transpose: cv2's is ~1.3x numpy's strided copy.
        batch[i] = cv2.transpose(resized.reshape(size * size, 3)).reshape(3, size, size)
    return batch


def resize_planes(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize CxHxW float planes (logits or probabilities) to float32 C x height x width.

    cv2 resizes channels-last images, so the planes go CHW -> HWC -> CHW; both layout changes are
    2-D (channels x pixels) transposes, which cv2 does several times faster than a strided numpy
    copy, and what follows runs on contiguous class planes.
    """
    channels, in_height, in_width = planes.shape
    flat = np.ascontiguousarray(planes, dtype=np.float32).reshape(channels, in_height * in_width)
    hwc = cv2.transpose(flat).reshape(in_height, in_width, channels)
    resized = cv2.resize(hwc, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.transpose(resized.reshape(height * width, channels)).reshape(channels, height, width)


def softmax_resized(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize CxHxW logits to the image size, then softmax over classes (float32 CxHxW)."""
    probs = resize_planes(logits, height, width)
    probs -= probs.max(axis=0)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=0)
    return probs


# Pixels CRF and GrabCut may work on. Both cost time and memory in proportion to the pixels they see
# (a dense CRF and GrabCut on a 12-megapixel photo take gigabytes and minutes), and a photo's extra
# pixels add little to a mask made from a model that saw the image at ~321 px. One megapixel keeps
# every size up to 1280x720 (and VOC's 500x375) exactly as before and refines a 4000x3000 photo at
# 1154x866, near the ~500 px images DeepLab's CRF settings were tuned on.
REFINE_MAX_PIXELS = 1_000_000


def working_size(height: int, width: int, max_pixels: int | None = REFINE_MAX_PIXELS) -> tuple[int, int]:
    """(height, width) at which CRF and GrabCut run for a ``height`` x ``width`` image.

    The image's own size when it has at most ``max_pixels`` pixels (or ``max_pixels`` is None),
    else the same aspect ratio scaled down to at most ``max_pixels`` pixels.
    """
    if max_pixels is None or height * width <= max_pixels:
        return height, width
    scale = (max_pixels / (height * width)) ** 0.5
    return max(1, int(height * scale)), max(1, int(width * scale))


# Pixels the dense CRF works on. Full-size CRF is most of `c2f segment --crf`'s time; at 12 000
# pixels (about 126x94 for VOC's 500x375) with the kernel widths scaled to the working size and the
# pruning below, the 179 VOC val photos (21-class voc-full model, benchmarks/segment_speed.py sweep,
# benchmarks/README.md "Dense CRF") keep their mIoU within 0.32 of the full-size CRF (41.46 vs 41.78)
# at 0.035 instead of 0.36 CPU-s per image (60 000 px: 41.79 at 0.14), so `--crf` keeps 0.64 of the
# labels-only throughput in CPU-s (60 000 px: 0.26).
CRF_MAX_PIXELS = 12_000

# Classes whose probability stays at or below this everywhere in the image are left out of the CRF
# (background never is); the CRF's cost grows with the classes it carries and such a class cannot
# win a pixel after 5 mean-field steps anyway. VOC val: 0.30 s vs 0.44 s per image, mIoU -0.01.
CRF_PRUNE_BELOW = 0.05

# Mean-field steps of the engine's dense CRF (DeepLab's count; benchmarks/README.md, "Dense CRF").
CRF_ITERATIONS = 5


def _tighter(first: int | None, second: int | None) -> int | None:
    """The smaller of two pixel bounds, None meaning unbounded."""
    bounds = [bound for bound in (first, second) if bound is not None]
    return min(bounds) if bounds else None


def bounded_crf(
    image: np.ndarray, probs: np.ndarray, *, sxy_scale: float = 1.0, prune_below: float | None = CRF_PRUNE_BELOW,
    iterations: int = CRF_ITERATIONS,
) -> np.ndarray:
    """Dense CRF marginals (CxHxW float32) of ``probs`` over the classes present in the image.

    Classes whose probability never exceeds ``prune_below`` (None: keep all) are left out and get
    zero probability; the rest are renormalised. The kernel widths are DeepLab's multiplied by
    ``sxy_scale`` (the working size's linear scale against the image as refined without the CRF's
    own bound), so a kernel covers the same part of the picture at any working size. ``iterations``
    is the number of mean-field steps.
    """
    from c2f.refine.crf import SXY_BILATERAL, SXY_GAUSSIAN, dense_crf

    classes = probs.shape[0]
    if prune_below is None:
        keep = np.arange(classes)
    else:
        keep = np.union1d(np.flatnonzero(probs.reshape(classes, -1).max(axis=1) > prune_below), [0])
    out = np.zeros_like(probs, dtype=np.float32)
    if len(keep) == 1:  # only background is present: nothing for the CRF to decide
        out[keep[0]] = 1.0
        return out
    kept = probs[keep] if len(keep) < classes else probs
    if len(keep) < classes:
        kept = kept / kept.sum(axis=0, keepdims=True)
    out[keep] = dense_crf(image, np.ascontiguousarray(kept, dtype=np.float32), iterations=iterations,
                          sxy_gauss=SXY_GAUSSIAN * sxy_scale, sxy_bilateral=SXY_BILATERAL * sxy_scale)
    return out


def argmax_resized(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 label map: argmax over classes of the CxHxW logits bilinearly resized to height x width.

    The same map as the argmax of :func:`softmax_resized` (up to float ties) without the full-size
    exp, division and the layout change back to class planes: the argmax runs over the last axis of
    cv2's channels-last output (22.8 -> 9.0 ms for 21 classes at 500x375 on one core).
    """
    channels, in_height, in_width = logits.shape
    flat = np.ascontiguousarray(logits, dtype=np.float32).reshape(channels, in_height * in_width)
    hwc = cv2.transpose(flat).reshape(in_height, in_width, channels)
    resized = cv2.resize(hwc, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)
    return resized.argmax(axis=2).astype(np.uint8)


def upsample_labels(label_map: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a uint8 label map with smooth edges: bilinear planes per value present, then argmax.

    Nearest-neighbour resizing would turn a refined edge into a staircase of the scale factor's
    step; this is the multi-class form of resizing a binary mask linearly and thresholding at 0.5.
    One value's plane at a time (a running maximum; ties go to the lower value), so memory stays
    at two float planes of the output size however many classes the map holds.
    """
    if label_map.shape == (height, width):
        return label_map.copy()
    values = np.unique(label_map)
    if len(values) == 1:
        return np.full((height, width), values[0], np.uint8)
    out = np.empty((height, width), np.uint8)
    best = np.full((height, width), -1.0, np.float32)
    for value in values:
        plane = cv2.resize((label_map == value).astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
        better = plane > best
        out[better] = value
        np.maximum(best, plane, out=best)
    return out


class Cancelled(Exception):
    """Raised by :meth:`Engine.segment` when its ``stop`` callback says the result is no longer wanted."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"cancelled before {stage}")
        self.stage = stage


StopCheck = Callable[[], bool]


def _check(stop: StopCheck | None, stage: str) -> None:
    if stop is not None and stop():
        raise Cancelled(stage)


# At inference an image is never dropped, but the objectness fallback of the between-round rule
# stays: own classes finding under 1 % of the image means the model found the object under another
# class's name (see c2f.refine.labels.postprocess_prediction).
OBJECTNESS_BELOW = 0.01

Label = int | str


def class_indices(labels: Iterable[Label], info: ModelInfo) -> tuple[int, ...]:
    """Class names or indices -> the model's class indices (duplicates dropped, order kept).

    An image's labels name the classes it contains; background is always allowed, so it is not a
    label. A name matches exactly, else case-insensitively. Unknown names, indices out of range,
    background, an empty list and any label for a foreground (class-agnostic) model raise a
    ``ValueError`` naming the valid classes: a mistyped class must never silently change a mask.
    A single name or index stands for a list of one.
    """
    if isinstance(labels, (str, int, np.integer)):
        labels = (labels,)
    if info.task == "foreground":
        raise ValueError(
            "labels do not apply to a foreground model: it segments the object of any class "
            f"(its classes are {', '.join(info.class_names)}); leave the labels out"
        )
    valid = ", ".join(info.class_names[1:])
    exact = {name: index for index, name in enumerate(info.class_names)}
    folded = {name.lower(): index for index, name in enumerate(info.class_names)}
    indices = []
    for label in labels:
        if isinstance(label, str):
            index = exact.get(label.strip(), folded.get(label.strip().lower()))
            if index is None:
                raise ValueError(f"unknown class {label!r}; this model's classes: {valid}")
        elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            index = int(label)
            if not 0 <= index < info.num_classes:
                raise ValueError(f"class index {index} out of range; this model's classes: "
                                 f"{_numbered(info.class_names)}")
        else:
            raise ValueError(f"a label must be a class name or index, got {label!r}")
        if index == 0:
            raise ValueError(f"{info.class_names[0]!r} is not a label (it is always allowed); "
                             f"this model's classes: {valid}")
        indices.append(index)
    if not indices:
        raise ValueError(f"no labels given; name at least one of this model's classes: {valid}")
    return tuple(dict.fromkeys(indices))


def _numbered(class_names: Sequence[str]) -> str:
    return ", ".join(f"{index}={name}" for index, name in enumerate(class_names) if index)


def label_map_from_probs(
    image: np.ndarray, probs: np.ndarray, labels: tuple[int, ...] | None, grabcut: bool
) -> np.ndarray:
    """Argmax, optionally over the image's own classes and with the foreground re-cut by GrabCut.

    Uses the same post-processing as the between-round relabelling (own classes only, the
    objectness fallback when they find almost nothing, optional GrabCut), with no foreground
    filter: at inference an image is never dropped. With ``labels`` the map holds only background
    and those classes.
    """
    if labels is None and not grabcut:
        return probs.argmax(axis=0).astype(np.uint8)
    from c2f.refine.labels import postprocess_prediction

    own = tuple(labels) if labels is not None else tuple(range(1, probs.shape[0]))
    return postprocess_prediction(
        image, probs, own, grabcut=grabcut, min_fg=0.0, max_fg=1.0, objectness_below=OBJECTNESS_BELOW
    ).label_map


def predict_from_logits(
    image: np.ndarray,
    logits: np.ndarray,
    labels: tuple[int, ...] | None = None,
    crf: bool = False,
    grabcut: bool = False,
    max_pixels: int | None = REFINE_MAX_PIXELS,
    stop: StopCheck | None = None,
    *,
    crf_max_pixels: int | None = CRF_MAX_PIXELS,
    crf_prune_below: float | None = CRF_PRUNE_BELOW,
    crf_iterations: int = CRF_ITERATIONS,
) -> Prediction:
    """One image's prediction from the model's CxhxW logits for it (padding already cut off).

    Probabilities at the image's size, then the optional dense CRF and own-class/GrabCut
    post-processing (:func:`label_map_from_probs`). CRF and GrabCut run at
    :func:`working_size` (``max_pixels``; None = always full size): above the bound the image is
    downscaled (area averaging), the probabilities are made at that size, the refined label map is
    upsampled (:func:`upsample_labels`) and the probabilities resized to the image's size when first
    read (:class:`Prediction`). With ``crf`` the working size is bounded by ``crf_max_pixels`` too
    (GrabCut and the own-class rule then run at that size as well) and the CRF leaves out classes
    below ``crf_prune_below``, with ``crf_iterations`` mean-field steps (:func:`bounded_crf`).
    ``stop`` is asked before each refinement step; :class:`Cancelled` ends the work when it says so.

    With no refinement and no ``labels`` the label map is :func:`argmax_resized` of the logits and
    the probabilities are made only when read.
    """
    height, width = image.shape[:2]
    refine = crf or grabcut
    if not refine and labels is None:
        return Prediction(argmax_resized(logits, height, width), lambda: softmax_resized(logits, height, width))
    bound = _tighter(max_pixels, crf_max_pixels) if crf else max_pixels
    work = working_size(height, width, bound) if refine else (height, width)
    reduced = work != (height, width)
    work_image = cv2.resize(image, (work[1], work[0]), interpolation=cv2.INTER_AREA) if reduced else image
    probs = softmax_resized(logits, *work)
    timings: dict[str, float] = {}
    if crf:
        _check(stop, "crf")
        began = time.perf_counter()
        kernels_for = working_size(height, width, max_pixels)  # the size DeepLab's widths apply to
        scale = ((work[0] * work[1]) / (kernels_for[0] * kernels_for[1])) ** 0.5
        probs = bounded_crf(work_image, probs, sxy_scale=scale, prune_below=crf_prune_below,
                            iterations=crf_iterations)
        timings["crf_s"] = time.perf_counter() - began
    if grabcut:
        _check(stop, "grabcut")
    began = time.perf_counter()
    label_map = label_map_from_probs(work_image, probs, labels, grabcut)
    if grabcut:
        timings["grabcut_s"] = time.perf_counter() - began
    if not reduced:
        return Prediction(label_map, probs, timings, work if refine else None)
    refined = probs
    full_size = ((lambda: resize_planes(refined, height, width)) if crf
                 else (lambda: softmax_resized(logits, height, width)))
    return Prediction(upsample_labels(label_map, height, width), full_size, timings, work)


class Engine:
    """Segment images with any backend; refinement (CRF, GrabCut) is opt-in per call.

    ``refine_max_pixels`` bounds the working resolution of CRF and GrabCut (see
    :func:`working_size`); None refines every image at full size. ``crf_max_pixels`` and
    ``crf_prune_below`` are the CRF's own bound and class pruning (:func:`predict_from_logits`;
    None turns each off), ``crf_iterations`` its mean-field steps.
    """

    def __init__(
        self, backend: Backend, batch_size: int = 8, keep_aspect: bool = False,
        refine_max_pixels: int | None = REFINE_MAX_PIXELS, *,
        crf_max_pixels: int | None = CRF_MAX_PIXELS, crf_prune_below: float | None = CRF_PRUNE_BELOW,
        crf_iterations: int = CRF_ITERATIONS, model_digest: str | None = None,
    ) -> None:
        self.backend = backend
        self.model_digest = model_digest  # the model file's content digest (Engine.open); None: unknown
        self.batch_size = batch_size
        self.keep_aspect = keep_aspect
        self.refine_max_pixels = refine_max_pixels
        self.crf_max_pixels = crf_max_pixels
        self.crf_prune_below = crf_prune_below
        self.crf_iterations = crf_iterations

    @classmethod
    def open(
        cls, path: str | Path, device: str = "auto", threads: int | None = None, batch_size: int = 8,
        keep_aspect: bool = False, refine_max_pixels: int | None = REFINE_MAX_PIXELS, *,
        crf_max_pixels: int | None = CRF_MAX_PIXELS, crf_prune_below: float | None = CRF_PRUNE_BELOW,
        crf_iterations: int = CRF_ITERATIONS,
    ) -> "Engine":
        return cls(load_backend(path, device, threads), batch_size, keep_aspect, refine_max_pixels,
                   crf_max_pixels=crf_max_pixels, crf_prune_below=crf_prune_below, crf_iterations=crf_iterations,
                   model_digest=file_digest(path))

    def output_settings(self) -> dict[str, Any]:
        """What decides this engine's masks besides the image and each call's options: the model file
        (its digest; None for an engine built on an in-memory backend) and the refinement bounds."""
        return {"model": self.model_digest, "keep_aspect": self.keep_aspect,
                "refine_max_pixels": self.refine_max_pixels, "crf_max_pixels": self.crf_max_pixels,
                "crf_prune_below": self.crf_prune_below, "crf_iterations": self.crf_iterations}

    @property
    def info(self) -> ModelInfo:
        return self.backend.info

    def class_indices(self, labels: Iterable[Label]) -> tuple[int, ...]:
        """This model's indices of class names (or checked indices); see :func:`class_indices`."""
        return class_indices(labels, self.info)

    def logits(self, images: Sequence[np.ndarray], stop: StopCheck | None = None) -> Iterator[tuple[np.ndarray, float]]:
        """Yield (each image's CxhxW logits, padding cut off; model seconds per image), in order.

        ``stop`` is asked before each model call (:class:`Cancelled` when it says so).
        """
        size = self.info.input_size
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            _check(stop, "model")
            began = time.perf_counter()
            logits = self.backend.run(to_batch(chunk, size, self.keep_aspect))
            per_image = (time.perf_counter() - began) / len(chunk)
            for image, logit in zip(chunk, logits):
                if self.keep_aspect:
                    fitted_height, fitted_width = fit_size(image.shape[0], image.shape[1], size)
                    logit = logit[:, :fitted_height, :fitted_width]
                yield logit, per_image

    def probabilities(self, images: Sequence[np.ndarray]) -> Iterable[tuple[np.ndarray, float]]:
        """Yield (CxHxW probabilities at each image's size, model seconds per image), in order."""
        for image, (logit, per_image) in zip(images, self.logits(images)):
            yield softmax_resized(logit, image.shape[0], image.shape[1]), per_image

    def segment(
        self,
        images: Sequence[np.ndarray],
        crf: bool = False,
        grabcut: bool = False,
        labels: Sequence[Sequence[Label] | None] | None = None,
        stop: StopCheck | None = None,
    ) -> list[Prediction]:
        """Segment a list of RGB images.

        ``labels`` (one entry per image: class names or indices, or ``None`` for no restriction)
        restricts each prediction to background and the image's own classes, as the paper's
        between-round post-processing does; a class outside them never appears. ``crf`` runs a
        dense CRF on the probabilities and ``grabcut`` re-cuts the predicted foreground with GrabCut,
        both at most at ``refine_max_pixels`` (:func:`predict_from_logits`). Labels are checked
        (:meth:`class_indices`) before any image is run. ``stop`` (e.g. "has the client gone?") is
        asked before every model call, CRF and GrabCut; when it returns True the call raises
        :class:`Cancelled` and the remaining work is skipped.
        """
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"{len(labels)} label entries for {len(images)} images")
        resolved = [None if own is None else self.class_indices(own) for own in labels or [None] * len(images)]
        results = []
        for index, (logit, model_s) in enumerate(self.logits(images, stop)):
            prediction = predict_from_logits(images[index], logit, resolved[index], crf, grabcut,
                                             self.refine_max_pixels, stop, crf_max_pixels=self.crf_max_pixels,
                                             crf_prune_below=self.crf_prune_below,
                                             crf_iterations=self.crf_iterations)
            prediction.timings = {"model_s": model_s, **prediction.timings}
            results.append(prediction)
        return results
