"""Input checks, limits, settings and response encoding for the HTTP service.

Nothing here imports BentoML, so every rule the service applies to a request (size limits, option
parsing, image decoding, the JSON mask encoding) is unit-testable without starting a server. The
service turns a :class:`RequestError` into an HTTP response whose JSON body carries ``reason``.
"""

from __future__ import annotations

import codecs
import contextvars
import io
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from c2f.data.io import IMAGE_FORMATS, SUPPORTED_TYPES, ImageReadError, decode_image, voc_palette
from c2f.inference.backends import ModelInfo
from c2f.inference.engine import REFINE_MAX_PIXELS, class_indices, class_pixels

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # 20 MiB per uploaded file
DEFAULT_MAX_PIXELS = 25_000_000  # 25 megapixels per decoded image
DEFAULT_BATCH = 8
DEFAULT_BATCH_LATENCY_MS = 60_000  # BentoML max_latency_ms (its default): a latency budget, not a wait window
DEFAULT_TIMEOUT_S = 300
MULTIPART_SLACK = 64 * 1024  # room for form fields and part headers around the file itself

SEGMENT_FORMATS = ("png", "json", "overlay")
FOREGROUND_FORMATS = ("png", "cutout")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class RequestError(Exception):
    """A request the service refuses: HTTP ``status`` and a human ``reason`` for the JSON body."""

    def __init__(self, status: int, reason: str, error: str = "bad_request") -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.error = error

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error, "reason": self.reason, "status": self.status}


# ----------------------------------------------------------------------------- settings


def _env_int(environ: Mapping[str, str], name: str, default: int | None, minimum: int) -> int | None:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def _env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean (use 1/0, true/false)")


def bundled_model_path() -> Path:
    """Where a Bento carries its model: ``model/model.onnx`` beside the ``c2f`` package."""
    import c2f

    return Path(c2f.__file__).resolve().parent.parent / "model" / "model.onnx"


@dataclass(frozen=True)
class Settings:
    """Service configuration, read from ``C2F_*`` environment variables (see the README)."""

    model: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    threads: int | None = None
    batch_size: int = DEFAULT_BATCH
    batch_latency_ms: int = DEFAULT_BATCH_LATENCY_MS
    batching: bool = True
    workers: int = 1
    device: str = "auto"
    timeout_s: int = DEFAULT_TIMEOUT_S
    keep_aspect: bool = False  # pad to the model's square input instead of stretching (as c2f segment --keep-aspect)
    refine_max_pixels: int | None = REFINE_MAX_PIXELS  # CRF/GrabCut working resolution; None = full size

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        """Parse the environment; a malformed value raises ``ValueError`` naming the variable."""
        env = os.environ if environ is None else environ
        device = env.get("C2F_DEVICE", "auto").strip() or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"C2F_DEVICE={device!r} must be auto, cpu or cuda")
        return cls(
            model=env.get("C2F_MODEL", "").strip() or None,
            max_bytes=_env_int(env, "C2F_MAX_BYTES", DEFAULT_MAX_BYTES, 1),
            max_pixels=_env_int(env, "C2F_MAX_PIXELS", DEFAULT_MAX_PIXELS, 1),
            threads=_env_int(env, "C2F_THREADS", None, 1),
            # BentoML requires max_batch_size > 1; batching off is C2F_BATCHING=0, not C2F_BATCH=1.
            batch_size=_env_int(env, "C2F_BATCH", DEFAULT_BATCH, 2),
            batch_latency_ms=_env_int(env, "C2F_BATCH_LATENCY_MS", DEFAULT_BATCH_LATENCY_MS, 1),
            batching=_env_bool(env, "C2F_BATCHING", True),
            workers=_env_int(env, "C2F_WORKERS", 1, 1),
            device=device,
            timeout_s=_env_int(env, "C2F_TIMEOUT", DEFAULT_TIMEOUT_S, 1),
            keep_aspect=_env_bool(env, "C2F_KEEP_ASPECT", False),
            # 0 = no bound: CRF and GrabCut at every image's full size (memory and time grow with it).
            refine_max_pixels=_env_int(env, "C2F_REFINE_MAX_PIXELS", REFINE_MAX_PIXELS, 0) or None,
        )

    def resolve_model(self) -> Path:
        """The model file to serve: ``C2F_MODEL``, else the one bundled in a Bento; clear errors."""
        if self.model:
            path = Path(self.model).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"C2F_MODEL={self.model!r}: no such model file")
            return path
        bundled = bundled_model_path()
        if bundled.is_file():
            return bundled
        raise RuntimeError(
            "no model to serve: set C2F_MODEL to an ONNX export (c2f export ...), "
            f"or build a Bento with the model at {bundled.parent.name}/{bundled.name}"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- options


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
        if text in _TRUE:
            return True
        if text in _FALSE:
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


# ----------------------------------------------------------------------------- images


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


# ----------------------------------------------------------------------------- outputs


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    """Encode HxW (gray, or palette indices when ``palette`` is given), HxWx3 or HxWx4 uint8 as PNG."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    if array.ndim == 2 and palette is not None:
        image = Image.frombytes("P", (array.shape[1], array.shape[0]), array.tobytes())
        image.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    elif array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        image = Image.fromarray(array)  # L, RGB or RGBA from the shape
    else:
        raise ValueError(f"cannot encode an array of shape {array.shape} as PNG")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def label_png(label_map: np.ndarray) -> bytes:
    """Label map as an indexed PNG with the VOC palette (pixel values are the class ids)."""
    return png_bytes(label_map, voc_palette())


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """COCO-style uncompressed RLE of a binary HxW mask.

    The mask is read in column-major (Fortran) order; ``counts`` alternates runs of 0 and 1 and
    always starts with a run of 0 (possibly of length 0). ``size`` is ``[height, width]``. This is
    the form ``pycocotools.mask.frPyObjects`` accepts for uncompressed RLE.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    flat = mask.ravel(order="F")
    if flat.size == 0:
        return {"size": [int(height), int(width)], "counts": []}
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return {"size": [int(height), int(width)], "counts": [int(c) for c in counts]}


def rle_decode(rle: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: a bool HxW mask."""
    height, width = (int(v) for v in rle["size"])
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != height * width:
        raise ValueError(f"RLE counts sum to {counts.sum()}, expected {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def segmentation_json(label_map: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """The ``format=json`` body: image size, class names, pixel shares and one RLE per class present."""
    height, width = label_map.shape
    present = class_pixels(label_map, class_names)
    masks = [
        {"class_id": index, "class_name": name, "pixels": pixels, "share": share,
         "rle": rle_encode(label_map == index)}
        for index, name, pixels, share in present
    ]
    return {
        "width": int(width),
        "height": int(height),
        "class_names": list(class_names),
        "shares": {name: share for _, name, _, share in present},
        "masks": masks,
        "rle_format": "coco-uncompressed: column-major, counts alternate 0-runs and 1-runs starting with 0",
    }


def error_body(status: int, reason: str, error: str = "bad_request") -> bytes:
    return json.dumps({"error": error, "reason": reason, "status": status}).encode()


async def send_error(send: Any, error: RequestError) -> None:
    """Send ``error`` as a complete JSON response through an ASGI ``send``."""
    body = error_body(error.status, error.reason, error.error)
    await send({
        "type": "http.response.start",
        "status": error.status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> bytes | None:
    """The first value of a request header (as Starlette's ``Headers.get`` reads it)."""
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value
    return None


# ----------------------------------------------------------------------------- logging


# The service's log: a child of BentoML's logger, so it shows in the server log.
log = logging.getLogger("bentoml.c2f")

# Exception records logged while ErrorEnvelope handles a request (see HoldTracebacks).
_HELD_RECORDS: contextvars.ContextVar[list[logging.LogRecord] | None] = contextvars.ContextVar(
    "c2f_held_records", default=None
)


class HoldTracebacks(logging.Filter):
    """Hold back exception records of a request in progress until its answer's status is known.

    BentoML logs a full ERROR traceback for every request its form parsing rejects, though the
    client gets a 4xx: the client's mistake reads like a server fault. Installed on BentoML's
    loggers, this filter holds such records while :class:`ErrorEnvelope` handles the request;
    the envelope logs one line for a 4xx and releases the records (tracebacks and all) for
    anything else. Records outside a request, without an exception or released pass unchanged.
    """

    RELEASED = "c2f_released"

    def filter(self, record: logging.LogRecord) -> bool:
        held = _HELD_RECORDS.get()
        if held is None or not record.exc_info or getattr(record, self.RELEASED, False):
            return True
        held.append(record)
        return False


def _release(records: list[logging.LogRecord]) -> None:
    for record in records:
        setattr(record, HoldTracebacks.RELEASED, True)
        logging.getLogger(record.name).handle(record)


def _cause(records: list[logging.LogRecord]) -> str:
    """``Type: first line`` of the first held exception: what BentoML objected to, in one line."""
    for record in records:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = str(exc).strip().splitlines()
            return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return ""


def log_client_error(scope: dict, status: int, body: bytes, cause: str = "") -> None:
    """One INFO line for a request answered with a 4xx: method, path, status, error, reason (and cause)."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        data = None
    data = data if isinstance(data, dict) else {}
    log.info(
        "client error: %s %s -> %d %s: %s%s", scope.get("method"), scope.get("path"), status,
        data.get("error", "error"), data.get("reason", "(no reason)"), f" [{cause}]" if cause else "",
    )


# ----------------------------------------------------------------------------- ASGI guard


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over ``max_body`` bytes with a 413 + JSON reason.

    A declared ``Content-Length`` over the limit is refused before a byte of the body is read; a
    chunked body is counted as it streams and cut off at the limit. BentoML would otherwise buffer
    the whole upload (in memory and a temporary file) before the service could look at its size.
    """

    def __init__(self, app: Any, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = None
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
        if declared is not None and declared > self.max_body:
            await self._refuse(send, declared)
            return

        seen = 0
        exceeded = False
        started = False

        async def limited_receive() -> dict:
            nonlocal seen, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if exceeded:
                if not started:
                    started = True
                    await self._refuse(send, seen)
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _refuse(self, send: Any, size: int) -> None:
        body = error_body(413, f"request body of {size}+ bytes exceeds the limit of {self.max_body} bytes", "too_large")
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class ErrorEnvelope:
    """Pure ASGI middleware: every error response of the ``paths`` carries a JSON ``reason``, and
    every 4xx of theirs logs one line (no traceback; see :class:`HoldTracebacks`).

    The service's own refusals already do. This catches the ones BentoML produces while parsing
    the form *before* the endpoint runs (a raw non-multipart body, a text value where the image
    file belongs, an undecodable extra form field), which otherwise come back as a 400 without a
    reason or as a 500. An error raised before the endpoint was reached is the request's fault
    and becomes a 400; the endpoint marks itself reached through ``scope[STATE_KEY]``.
    """

    STATE_KEY = "c2f.state"

    def __init__(self, app: Any, paths: tuple[str, ...]) -> None:
        self.app = app
        self.paths = frozenset(paths)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        state = {"reached": False}
        scope[self.STATE_KEY] = state
        held: dict | None = None
        parts: list[bytes] = []
        records: list[logging.LogRecord] = []
        final: dict[str, Any] = {"status": None, "logged": False}

        async def wrapped_send(message: dict) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                final["status"] = message["status"]
                content_type = dict(message.get("headers", [])).get(b"content-type", b"")
                if message["status"] >= 400 and (not state["reached"] or content_type.startswith(b"application/json")):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                parts.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                raw = b"".join(parts)
                status, body = self._rewrite(held["status"], raw, state["reached"])
                final["status"] = status
                if status < 500:  # what BentoML objected to, unless the answer already says it
                    log_client_error(scope, status, body, "" if self._reason_of(raw) else _cause(records))
                    final["logged"] = True
                headers = [(k, v) for k, v in held.get("headers", []) if k not in (b"content-length", b"content-type")]
                headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({**held, "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        token = _HELD_RECORDS.set(records)
        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            _HELD_RECORDS.reset(token)
            status = final["status"]
            if status is not None and 400 <= status < 500:
                if not final["logged"]:  # a 4xx passed through as it was (not JSON)
                    log_client_error(scope, status, b"", _cause(records))
            elif records:
                _release(records)  # a server fault (or no answer): its tracebacks belong in the log

    @staticmethod
    def _body(raw: bytes) -> Any:
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return None
        if isinstance(data, list) and len(data) == 1:  # BentoML 1.4 wraps exception bodies in a list
            data = data[0]
        return data

    @classmethod
    def _reason_of(cls, raw: bytes) -> str | None:
        data = cls._body(raw)
        return data.get("reason") if isinstance(data, dict) else None

    @classmethod
    def _rewrite(cls, status: int, raw: bytes, reached: bool) -> tuple[int, bytes]:
        data = cls._body(raw)
        if isinstance(data, dict) and "reason" in data:
            return status, json.dumps(data).encode()
        said = ""
        if isinstance(data, dict):
            said = str(data.get("error", ""))
            details = [d.get("msg", "") for d in data.get("detail", []) if isinstance(d, dict)]
            if details:
                said = f"{said}: {'; '.join(details)}"
        if not reached:
            reason = (
                "malformed request: send the image as a multipart/form-data file field named 'image' "
                "(options format, crf, grabcut, classes as form fields or query parameters)"
            )
            if said and status < 500:
                reason += f" ({said})"
            return 400, error_body(400, reason, "malformed_request")
        return status, error_body(status, said or "internal error; see the server log", "server_error" if status >= 500 else "bad_request")


class _MultipartInspector:
    """Streams a multipart body through the parser Starlette (hence BentoML) uses, reading part headers only.

    Finds a part named ``field`` without a filename - a text value where a file belongs - as soon
    as that part's headers are complete, before BentoML has seen the rest of the body. Part names
    are decoded as Starlette decodes them (the body's charset, else Latin-1) and also as Latin-1,
    so no spelling that Starlette reads as ``field`` escapes. A body the parser cannot read is
    refused too: Starlette would fail on it the same way.
    """

    def __init__(self, content_type: bytes, field: str) -> None:
        from starlette.formparsers import multipart, parse_options_header

        self._parse_options = parse_options_header
        self.field = field
        self.refusal: RequestError | None = None
        self._disposition = b""
        self._name = self._value = b""
        _, params = parse_options_header(content_type)
        charset = params.get(b"charset", b"utf-8")
        try:
            self._charset = codecs.lookup(charset.decode("latin-1")).name
        except LookupError:
            self._charset = "latin-1"
        boundary = params.get(b"boundary")
        if not boundary:
            self.refusal = RequestError(400, "malformed multipart request: no boundary in its Content-Type",
                                        "malformed_request")
            return
        self._parser = multipart.MultipartParser(boundary, {
            "on_part_begin": self._on_part_begin,
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
        })

    def feed(self, chunk: bytes) -> RequestError | None:
        """Parse the next piece of the body; the refusal, once one is due."""
        if self.refusal is None and chunk:
            try:
                self._parser.write(chunk)
            except Exception as exc:  # noqa: BLE001 - any parse failure is the body's fault
                self.refusal = RequestError(400, f"malformed multipart body: {exc}", "malformed_request")
        return self.refusal

    def _on_part_begin(self) -> None:
        self._disposition = b""

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        if self._name.lower() == b"content-disposition":
            self._disposition = self._value
        self._name = self._value = b""

    def _on_headers_finished(self) -> None:
        _, options = self._parse_options(self._disposition)
        name = options.get(b"name")
        if name is None or b"filename" in options:
            return  # a file part, or one Starlette itself refuses (no name)
        try:
            decoded = name.decode(self._charset)
        except (UnicodeDecodeError, LookupError):
            decoded = name.decode("latin-1")
        if self.field in (decoded, name.decode("latin-1")) and self.refusal is None:
            self.refusal = text_image_refusal(self.field)


def text_image_refusal(field: str) -> RequestError:
    return RequestError(
        400,
        f"form field '{field}' holds a text value, not an uploaded file: send the image itself as a file "
        "(a multipart part with a filename, e.g. curl -F image=@photo.jpg); URLs and paths are never "
        "fetched or opened",
        "image_not_a_file",
    )


class UploadGuard:
    """Pure ASGI middleware: on the ``paths`` the image arrives as an uploaded file, or not at all.

    BentoML turns a *text* value of a file field into a file by downloading it as a URL, a request
    from the server to wherever the client says (whether it gets through depends on optional
    packages: without uvloop its own address check fails to import, with uvloop only private
    addresses are blocked), and a JSON body could name one. So a request on these paths must be
    ``multipart/form-data`` (a bodiless request is let through: it gets "no image"), and each part
    named ``field`` must be a file part; anything else is a 400 with a reason before BentoML parses
    the form. Multipart bodies are inspected as they stream (:class:`_MultipartInspector`), never
    buffered, and a refused request's body is cut off at the offending part.
    """

    def __init__(self, app: Any, paths: tuple[str, ...], field: str = "image") -> None:
        self.app = app
        self.paths = frozenset(paths)
        self.field = field

    def _classify(self, scope: dict) -> tuple[_MultipartInspector | None, RequestError]:
        """The body inspector of a multipart request (else None), and the refusal of any other body."""
        content_type = _header(scope, b"content-type")
        # BentoML picks its parser from exactly this (case-sensitive; JSON when absent).
        media = (content_type or b"application/json").decode("latin-1").split(";")[0].strip()
        not_multipart = RequestError(
            400,
            f"the request body is {media}, not multipart/form-data: send the image as a file in the multipart form "
            f"field '{self.field}' (options as form fields or query parameters); URLs, paths and JSON bodies are "
            "not accepted",
            "not_multipart",
        )
        inspector = _MultipartInspector(content_type or b"", self.field) if media == "multipart/form-data" else None
        return inspector, not_multipart

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        inspector, not_multipart = self._classify(scope)
        length = (_header(scope, b"content-length") or b"").strip()
        declared_body = length not in (b"", b"0")
        early = inspector.refusal if inspector is not None else (not_multipart if declared_body else None)
        if early is not None:
            await send_error(send, early)
            return
        refused: RequestError | None = None
        started = False

        async def guarded_receive() -> dict:
            nonlocal refused
            if refused is not None:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                body = message.get("body", b"")
                if inspector is not None:
                    refused = inspector.feed(body)
                elif body:  # a body without a Content-Length (chunked) that is not multipart
                    refused = not_multipart
                if refused is not None:
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the app's answer to the cut-off body; ours is sent below
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, guarded_receive, guarded_send)
        if refused is not None and not started:
            await send_error(send, refused)
