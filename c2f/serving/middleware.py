"""ASGI middlewares in front of the service: body limit, upload guard, JSON error envelope.

They refuse bad requests before BentoML buffers or parses them, and give every error one JSON
shape (``error``, ``reason``, ``status``); :class:`HoldTracebacks` keeps BentoML's tracebacks
for client mistakes out of the server log. Nothing here imports BentoML.
"""

from __future__ import annotations

import codecs
import contextvars
import json
import logging
from typing import Any

from .options import RequestError

MULTIPART_SLACK = 64 * 1024  # room for form fields and part headers around the file itself


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
