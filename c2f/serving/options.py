"""A request's options and upload, checked against the service's limits before any model work.

Nothing here imports BentoML, so every rule the service applies to a request (option parsing,
size and pixel limits, image decoding) is unit-testable without starting a server. The service
turns a :class:`RequestError` into an HTTP response whose JSON body carries ``reason``.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from c2f.data.io import IMAGE_FORMATS, SUPPORTED_TYPES, ImageReadError, decode_image
from c2f.inference.backends import ModelInfo
from c2f.inference.engine import class_indices

from .settings import FALSE_WORDS, TRUE_WORDS

SEGMENT_FORMATS = ("png", "json", "overlay")
FOREGROUND_FORMATS = ("png", "cutout")


class RequestError(Exception):
    """A request the service refuses: HTTP ``status`` and a human ``reason`` for the JSON body."""

    def __init__(self, status: int, reason: str, error: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error = error

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "reason": self.reason, "status": self.status}


def first_given(*values: Any) -> Any:
    """The first value that was actually sent (form field before query parameter)."""
    for value in values:
        if value is not None:
            return value
    return None


def parse_bool(value: Any, name: str, default: bool = False) -> bool:
    """Accept true/false, 1/0, yes/no, on/off (any case) or a JSON boolean; else a 422."""
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE_WORDS:
            return True
        if text in FALSE_WORDS:
            return False
    raise RequestError(422, f"option {name}={value!r} is not a boolean (use true/false or 1/0)", "bad_option")


def parse_choice(value: Any, name: str, choices: tuple[str, ...], default: str) -> str:
    """One of ``choices`` (case-insensitive), ``default`` when absent; else a 422."""
    if value is None:
        return default
    text = value.strip().lower() if isinstance(value, str) else None
    if text in choices:
        return text
    if text == "":
        return default
    raise RequestError(422, f"option {name}={value!r} is not one of {', '.join(choices)}", "bad_option")


def parse_classes(value: Any, info: ModelInfo) -> tuple[int, ...] | None:
    """The ``classes`` option: comma-separated class names -> the model's indices; absent/empty -> None.

    The image's known classes: its mask then holds only background and these (the paper's own-class
    rule, :func:`c2f.inference.engine.label_map_from_probs`). A repeated field counts as one list.
    Unknown names, ``background`` and any class for a foreground model are a 422 naming the valid
    classes, checked before the upload is decoded.
    """
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple)) else [value]
    if not all(isinstance(item, str) for item in values):
        raise RequestError(422, f"option classes={value!r} must be comma-separated class names", "bad_option")
    names = [name.strip() for item in values for name in item.split(",") if name.strip()]
    if not names:
        return None
    try:
        return class_indices(names, info)
    except ValueError as exc:
        raise RequestError(422, f"option classes: {exc}", "bad_option") from None


def selectable_classes(info: ModelInfo) -> list[str]:
    """The names the ``classes`` option accepts (none for a class-agnostic foreground model)."""
    return [] if info.task == "foreground" else list(info.class_names[1:])


def check_upload(data: bytes | None, max_bytes: int) -> bytes:
    """Presence and size of the uploaded file, before any decoding."""
    if data is None:
        raise RequestError(400, "no image: send the file as multipart form field 'image'", "no_image")
    if len(data) == 0:
        raise RequestError(400, "the uploaded image is an empty file", "empty_image")
    if len(data) > max_bytes:
        raise RequestError(
            413, f"the uploaded file has {len(data)} bytes; the limit is {max_bytes} bytes", "too_large"
        )
    return data


def decode_upload(data: bytes | None, max_bytes: int, max_pixels: int, name: str = "upload") -> np.ndarray:
    """Uploaded bytes -> HxWx3 uint8 RGB through :func:`c2f.data.io.decode_image`.

    Status codes: 400 missing or empty file, 413 over the byte or pixel limit, 415 not one of the
    readable types (:data:`c2f.data.io.IMAGE_FORMATS`, the same as ``c2f segment`` and the data
    sets), 422 a readable type that fails to decode (truncated, corrupt). The header is probed first
    so that an oversized image is refused before it is decoded.
    """
    data = check_upload(data, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height, image_format = *probe.size, probe.format
    except Image.UnidentifiedImageError:
        raise RequestError(415, "the uploaded file is not an image in a supported format", "not_an_image") from None
    except Image.DecompressionBombError as exc:
        raise RequestError(413, f"the image has too many pixels ({exc})", "too_many_pixels") from None
    except Exception as exc:  # noqa: BLE001 - any header failure is the upload's fault
        raise RequestError(422, f"the image header cannot be read: {exc}", "corrupt_image") from None
    if image_format not in IMAGE_FORMATS:
        raise RequestError(
            415, f"the uploaded file is a {image_format} image; supported: {SUPPORTED_TYPES}", "not_an_image"
        )
    if width * height > max_pixels:
        raise RequestError(
            413, f"the image has {width}x{height} pixels; the limit is {max_pixels} pixels", "too_many_pixels"
        )
    try:
        return decode_image(data, name, max_pixels=max_pixels)
    except ImageReadError as exc:
        raise RequestError(422, f"the image cannot be decoded: {exc.reason}", "corrupt_image") from None
