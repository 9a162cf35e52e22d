"""The service's settings: ``C2F_*`` environment variables and the model file they name.

Nothing here imports BentoML, so the settings parse and fail (naming the variable) in tests and
before a server starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from c2f.inference.engine import CRF_MAX_PIXELS, REFINE_MAX_PIXELS

DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # 20 MiB per uploaded file
DEFAULT_MAX_PIXELS = 25_000_000  # 25 megapixels per decoded image
DEFAULT_BATCH = 8
DEFAULT_BATCH_LATENCY_MS = 60_000  # BentoML max_latency_ms (its default): a latency budget, not a wait window
DEFAULT_TIMEOUT_S = 300
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


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
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
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
    crf_max_pixels: int | None = CRF_MAX_PIXELS  # the dense CRF's own, tighter bound; None = refine_max_pixels

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
            crf_max_pixels=_env_int(env, "C2F_CRF_MAX_PIXELS", CRF_MAX_PIXELS, 0) or None,
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
