"""The c2f HTTP service (BentoML 1.4): ``/segment``, ``/foreground`` and ``/metadata``.

Run it with ``c2f serve --model model.onnx`` or ``C2F_MODEL=model.onnx bentoml serve
c2f.serving.service:Segmenter``. Configuration comes from ``C2F_*`` environment variables (see
:class:`c2f.serving.settings.Settings` and the README).

Every mask is made by :meth:`c2f.inference.Engine.segment`, the same code ``c2f segment`` runs, so
a served mask equals the CLI's pixel for pixel. Adaptive batching only changes *where* the model
call happens: the engine used by the endpoints has a backend whose ``run`` hands the (already
resized, equal-shape) pixels to BentoML's batch dispatcher through the batchable ``infer`` API and
waits for that image's logits; everything before (``to_batch``) and after (upsampling, softmax, CRF,
GrabCut) is the engine's own code. Only small request keys travel through the dispatcher; the
arrays stay in this worker's memory, so batching costs no serialisation.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import typing as t
import uuid
from pathlib import Path

import anyio
import bentoml
import numpy as np
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from c2f import __version__
from c2f.inference import Cancelled, Engine, ModelInfo
from c2f.inference.render import cutout, foreground_mask, overlay

from .encoders import label_png, png_bytes, segmentation_json
from .middleware import MULTIPART_SLACK, BodyLimit, ErrorEnvelope, HoldTracebacks, UploadGuard
from .options import (
    FOREGROUND_FORMATS,
    SEGMENT_FORMATS,
    RequestError,
    decode_upload,
    first_given,
    parse_bool,
    parse_choice,
    parse_classes,
    selectable_classes,
)
from .settings import Settings

log = logging.getLogger("bentoml.c2f")  # a child of BentoML's logger, so it shows in the server log

# BentoML logs a traceback for each request its form parsing rejects (in log_exception); ErrorEnvelope
# turns those of 4xx answers into one line.
for _name in ("bentoml._internal.server.http_app", "_bentoml_impl.server.app"):
    logging.getLogger(_name).addFilter(HoldTracebacks())

STAGES = ("decode", "model", "crf", "grabcut")


@functools.cache
def _metrics() -> tuple[t.Any, t.Any]:
    """(abandoned-requests counter, requests-in-work gauge), made on first use.

    Not at import: BentoML sets up Prometheus' multiprocess mode in the worker after importing the
    service, and a metric made before that never reaches ``/metrics``.
    """
    import prometheus_client

    abandoned = prometheus_client.Counter(
        "c2f_abandoned_requests",
        "Requests abandoned because their client closed the connection, by the first stage skipped",
        ["stage"],
    )
    in_work = prometheus_client.Gauge(
        "c2f_requests_in_work", "Requests past upload and form parsing whose answer is not ready yet",
        multiprocess_mode="livesum",
    )
    return abandoned, in_work


# Read at import: the batching parameters are arguments of the @bentoml.api decorator below.
SETTINGS = Settings.from_env()
if SETTINGS.model:
    # Fail at import, so `bentoml serve` stops at once with this message; a failure inside
    # __init__ (e.g. C2F_MODEL unset and no bundled model) is retried by BentoML's process manager
    # outside containers, repeating the same message, and /readyz stays unready.
    SETTINGS.resolve_model()

# Not Optional[Path]: bentoml 1.4.40 cannot build an input spec from it; a None default works.
ImageField = t.Annotated[
    Path, Field(description="The image file (multipart form field 'image'): JPEG, PNG, WebP, BMP, TIFF.")
]
BoolOption = t.Annotated[
    t.Any, Field(description="true/false (also 1/0); may also be given as a query parameter.")
]
ClassesOption = t.Annotated[
    t.Any,
    Field(description="The image's known classes, comma-separated names (e.g. cat,dog; see /metadata "
                      "selectable_classes): the mask then holds only background and these classes. "
                      "An unknown name is a 422. May also be given as a query parameter."),
]


class _PostSlots:
    """At most ``n`` requests at a time past the model call (upsampling, softmax, CRF, GrabCut).

    Taken by the backends below in the request's worker thread once its logits exist, released
    when the request's ``Engine.segment`` returns: full-size probabilities (classes x H x W
    float32) are the largest arrays in the service, so this bounds memory as well as CPU.
    """

    def __init__(self, n: int) -> None:
        self._semaphore = threading.BoundedSemaphore(n)
        self._held = threading.local()

    def take(self) -> None:
        if not getattr(self._held, "value", False):
            self._semaphore.acquire()
            self._held.value = True

    def release(self) -> None:
        if getattr(self._held, "value", False):
            self._held.value = False
            self._semaphore.release()


class _LockedBackend:
    """The real backend, one call at a time (a worker runs one model call at a time either way)."""

    def __init__(self, backend: t.Any, lock: threading.Lock, slots: _PostSlots) -> None:
        self._backend = backend
        self._lock = lock
        self._slots = slots
        self.info: ModelInfo = backend.info
        self.device: str = backend.device

    def run(self, pixels: np.ndarray) -> np.ndarray:
        with self._lock:
            logits = self._backend.run(pixels)
        self._slots.take()
        return logits


class _BatchedBackend:
    """A backend whose ``run`` goes through BentoML's adaptive batcher (called from a worker thread)."""

    def __init__(self, service: "Segmenter", slots: _PostSlots) -> None:
        self._service = service
        self._slots = slots
        self.info: ModelInfo = service.engine.info
        self.device: str = service.engine.backend.device

    def run(self, pixels: np.ndarray) -> np.ndarray:
        logits = anyio.from_thread.run(self._service._batched_logits, pixels)
        self._slots.take()
        return logits


# BentoML 1.4.40's own client (proxy2.SessionManager) replaces its aiohttp session every 100
# requests or 300 s and closes the old one with calls still in flight, which then fail with
# "Server disconnected" (about 1 in 10 requests at 16 concurrent). The key is still pending, so
# such a call is simply made again.
_SELF_CALL_ATTEMPTS = 3


def _is_disconnect(exc: BaseException) -> bool:
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - BentoML depends on aiohttp
        return False
    return isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientConnectionError))


def _error(exc: RequestError, ctx: bentoml.Context) -> JSONResponse:
    ctx.response.status_code = exc.status  # BentoML applies the context's status to the response
    return JSONResponse(exc.to_dict(), status_code=exc.status)


def _client_gone(request: Request) -> t.Callable[[], bool]:
    """A check, for the request's worker thread, of whether its client has closed the connection.

    Starlette's ``is_disconnected`` peeks at the connection without waiting; it runs on the event
    loop (``anyio.from_thread.run``). Engine.segment asks it before the model call, CRF and GrabCut,
    so a request nobody waits for any more stops at the next of those steps.
    """
    return lambda: anyio.from_thread.run(request.is_disconnected)


def _abandoned(exc: Cancelled, crf: bool, grabcut: bool) -> RequestError:
    """Count an abandoned request and the 499 its (gone) client would get; ErrorEnvelope logs it in one line."""
    planned = [stage for stage in STAGES if (stage != "crf" or crf) and (stage != "grabcut" or grabcut)]
    skipped = planned[planned.index(exc.stage):] if exc.stage in planned else [exc.stage]
    _metrics()[0].labels(stage=exc.stage).inc()
    return RequestError(
        499, f"the client closed the connection; its request was abandoned before {exc.stage} "
             f"(skipped: {', '.join(skipped)})", "client_closed",
    )


def _mark_reached(ctx: bentoml.Context) -> None:
    state = ctx.request.scope.get(ErrorEnvelope.STATE_KEY)
    if isinstance(state, dict):
        state["reached"] = True


@bentoml.service(
    name="c2f-segmenter",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s},
)
class Segmenter:
    """Semantic and foreground segmentation of uploaded images with a c2f ONNX export."""

    def __init__(self) -> None:
        settings = Settings.from_env()
        path = settings.resolve_model()  # clear error when C2F_MODEL is unset or wrong
        self.settings = settings
        self.model_name = path.name
        self.engine = Engine.open(path, device=settings.device, threads=settings.threads, batch_size=settings.batch_size,
                                  refine_max_pixels=settings.refine_max_pixels, crf_max_pixels=settings.crf_max_pixels)
        self._model_lock = threading.Lock()
        self._post_slots = _PostSlots(os.cpu_count() or 1)
        self._direct = Engine(_LockedBackend(self.engine.backend, self._model_lock, self._post_slots), batch_size=1,
                              keep_aspect=settings.keep_aspect, refine_max_pixels=settings.refine_max_pixels,
                              crf_max_pixels=settings.crf_max_pixels)
        self._batched = Engine(_BatchedBackend(self, self._post_slots), batch_size=1, keep_aspect=settings.keep_aspect,
                               refine_max_pixels=settings.refine_max_pixels, crf_max_pixels=settings.crf_max_pixels)
        self._pending: dict[str, np.ndarray] = {}
        self._results: dict[str, np.ndarray] = {}
        self._request_limiter: anyio.CapacityLimiter | None = None
        self._model_limiter: anyio.CapacityLimiter | None = None
        info = self.engine.info
        log.info(
            "c2f model %s loaded: task=%s classes=%d input=%d device=%s batching=%s",
            path, info.task, info.num_classes, info.input_size, self.engine.backend.device,
            f"max {settings.batch_size} / {settings.batch_latency_ms} ms" if settings.batching else "off",
        )

    def __is_ready__(self) -> bool:
        return getattr(self, "engine", None) is not None

    # ------------------------------------------------------------------ batching

    @bentoml.api(
        batchable=True,
        max_batch_size=SETTINGS.batch_size,
        max_latency_ms=SETTINGS.batch_latency_ms,
        route="/internal/batch",
    )
    async def infer(self, keys: list[str]) -> list[str]:
        """Internal: one model call for the images of a batch of concurrent requests (by key).

        Not for clients: keys name arrays held in this worker's memory; unknown keys are skipped.
        """
        # A retried call can share a batch with its first attempt: compute each key once.
        known = [key for key in dict.fromkeys(keys) if key in self._pending and key not in self._results]
        if known:
            parts = [self._pending[key] for key in known]
            logits = await anyio.to_thread.run_sync(
                self._run_model, np.concatenate(parts), limiter=self._limiters()[1]
            )
            start = 0
            for key, part in zip(known, parts):
                if key in self._pending:  # its request may have gone away meanwhile
                    self._results[key] = logits[start : start + len(part)]
                start += len(part)
        return ["done" if key in self._results else "unknown" for key in keys]

    def _run_model(self, pixels: np.ndarray) -> np.ndarray:
        with self._model_lock:
            return self.engine.backend.run(pixels)

    async def _batched_logits(self, pixels: np.ndarray) -> np.ndarray:
        key = uuid.uuid4().hex
        self._pending[key] = pixels
        try:
            for attempt in range(1, _SELF_CALL_ATTEMPTS + 1):
                try:
                    # Through the service's own client, so that BentoML's dispatcher batches it.
                    await self.infer([key])
                    break
                except Exception as exc:  # noqa: BLE001
                    if key in self._results:  # computed; only the answer to the call was lost
                        break
                    if attempt < _SELF_CALL_ATTEMPTS and _is_disconnect(exc):
                        continue
                    log.warning("batched model call failed: %s", exc)
                    raise RequestError(
                        503, "the server is overloaded or the model call failed; retry later", "unavailable"
                    ) from exc
            return self._results[key]
        finally:
            self._pending.pop(key, None)
            self._results.pop(key, None)

    def _limiters(self) -> tuple[anyio.CapacityLimiter, anyio.CapacityLimiter]:
        if self._request_limiter is None:
            # Requests wait for their batch inside a thread; the model call gets its own limiter so
            # that waiting requests can never take the thread the batch needs.
            self._request_limiter = anyio.CapacityLimiter(max(32, 4 * self.settings.batch_size))
            self._model_limiter = anyio.CapacityLimiter(1)
        return self._request_limiter, self._model_limiter  # type: ignore[return-value]

    # ------------------------------------------------------------------ request handling

    async def _predict(
        self, image: Path | None, crf: t.Any, grabcut: t.Any, classes: t.Any, ctx: bentoml.Context
    ) -> tuple[np.ndarray, np.ndarray]:
        query = ctx.request.query_params
        do_crf = parse_bool(first_given(crf, query.get("crf")), "crf")
        do_grabcut = parse_bool(first_given(grabcut, query.get("grabcut")), "grabcut")
        own = parse_classes(first_given(classes, query.getlist("classes") or None), self.engine.info)
        media = ctx.request.headers.get("content-type", "").split(";")[0].strip()
        if image is not None and media != "multipart/form-data":  # UploadGuard refuses these first
            raise RequestError(400, "the image must be uploaded as a multipart/form-data file", "not_multipart")
        data = await anyio.Path(image).read_bytes() if image is not None else None
        settings = self.settings
        engine = self._batched if settings.batching else self._direct
        gone = _client_gone(ctx.request)
        await ctx.request.is_disconnected()  # resumes reading the connection, so that a close is seen

        def work() -> tuple[np.ndarray, np.ndarray]:
            if gone():
                raise Cancelled("decode")
            pixels = decode_upload(data, settings.max_bytes, settings.max_pixels, name="image")
            try:
                prediction = engine.segment([pixels], crf=do_crf, grabcut=do_grabcut,
                                            labels=[own] if own is not None else None, stop=gone)[0]
            finally:
                self._post_slots.release()
            return pixels, prediction.label_map

        in_work = _metrics()[1]
        in_work.inc()
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._limiters()[0])
        except Cancelled as exc:
            raise _abandoned(exc, do_crf, do_grabcut) from None
        finally:
            in_work.dec()

    @bentoml.api(route="/segment")
    async def segment(
        self,
        ctx: bentoml.Context,
        image: ImageField = None,
        format: t.Annotated[
            t.Any, Field(description="png (indexed label PNG, default), json (shares + RLE masks) or overlay.")
        ] = None,
        crf: BoolOption = None,
        grabcut: BoolOption = None,
        classes: ClassesOption = None,
    ) -> t.Annotated[Path, bentoml.validators.ContentType("image/png")]:
        """Semantic label map of the image: indexed PNG (VOC palette), JSON, or a colour overlay.

        With ``classes`` (the image's known classes) the map holds only background and those classes.
        """
        _mark_reached(ctx)
        try:
            fmt = parse_choice(first_given(format, ctx.request.query_params.get("format")), "format", SEGMENT_FORMATS, "png")
            pixels, label_map = await self._predict(image, crf, grabcut, classes, ctx)
            if fmt == "json":
                body = await anyio.to_thread.run_sync(segmentation_json, label_map, self.engine.info.class_names)
                body["task"] = self.engine.info.task
                return JSONResponse(body)  # type: ignore[return-value]
            if fmt == "overlay":
                encoded = await anyio.to_thread.run_sync(lambda: png_bytes(overlay(pixels, label_map)))
            else:
                encoded = await anyio.to_thread.run_sync(label_png, label_map)
            return Response(encoded, media_type="image/png")  # type: ignore[return-value]
        except RequestError as exc:
            return _error(exc, ctx)  # type: ignore[return-value]

    @bentoml.api(route="/foreground")
    async def foreground(
        self,
        ctx: bentoml.Context,
        image: ImageField = None,
        format: t.Annotated[
            t.Any, Field(description="png (0/255 mask, default) or cutout (RGBA, alpha = mask).")
        ] = None,
        crf: BoolOption = None,
        grabcut: BoolOption = None,
        classes: ClassesOption = None,
    ) -> t.Annotated[Path, bentoml.validators.ContentType("image/png")]:
        """Binary foreground mask (every class but background) as a PNG, or an RGBA cut-out.

        With ``classes`` the mask covers only those classes' objects (e.g. the cat of a cat photo).
        """
        _mark_reached(ctx)
        try:
            fmt = parse_choice(first_given(format, ctx.request.query_params.get("format")), "format", FOREGROUND_FORMATS, "png")
            pixels, label_map = await self._predict(image, crf, grabcut, classes, ctx)
            fg = foreground_mask(label_map)
            if fmt == "cutout":
                encoded = await anyio.to_thread.run_sync(lambda: png_bytes(cutout(pixels, fg)))
            else:
                encoded = await anyio.to_thread.run_sync(png_bytes, fg.astype(np.uint8) * 255)
            return Response(encoded, media_type="image/png")  # type: ignore[return-value]
        except RequestError as exc:
            return _error(exc, ctx)  # type: ignore[return-value]

    @bentoml.api(route="/metadata")
    def metadata(self) -> dict[str, t.Any]:
        """What is served: task, classes, input size, versions, device, batching and limits (also GET)."""
        info = self.engine.info
        settings = self.settings
        return {
            "task": info.task,
            "class_names": info.class_names,
            "num_classes": info.num_classes,
            "input_size": info.input_size,
            "model_version": info.version,
            "model_file": self.model_name,
            "model_config": info.config,
            "c2f_version": __version__,
            "bentoml_version": bentoml.__version__,
            "device": self.engine.backend.device,
            "batching": {
                "enabled": settings.batching,
                "max_batch_size": settings.batch_size,
                "max_latency_ms": settings.batch_latency_ms,
            },
            "workers": settings.workers,
            "threads": settings.threads,
            "limits": {"max_bytes": settings.max_bytes, "max_pixels": settings.max_pixels},
            "keep_aspect": settings.keep_aspect,
            "refine_max_pixels": settings.refine_max_pixels,
            "crf_max_pixels": settings.crf_max_pixels,
            "formats": {"segment": list(SEGMENT_FORMATS), "foreground": list(FOREGROUND_FORMATS)},
            "selectable_classes": selectable_classes(info),
        }


async def _get_metadata(_: Request) -> Response:
    service = bentoml.get_current_service()
    return JSONResponse(service.metadata.local())


# GET /metadata beside the POST API route (BentoML API routes accept POST only).
Segmenter.mount_asgi_app(Starlette(routes=[Route("/metadata", _get_metadata, methods=["GET"])]), path="/")
# Outermost first: the envelope sees (and logs) every answer of the image routes, the body limit's
# included; the upload guard reads the form's part headers before BentoML parses the form.
Segmenter.add_asgi_middleware(ErrorEnvelope, paths=("/segment", "/foreground"))
Segmenter.add_asgi_middleware(BodyLimit, max_body=SETTINGS.max_bytes + MULTIPART_SLACK)
Segmenter.add_asgi_middleware(UploadGuard, paths=("/segment", "/foreground"))
