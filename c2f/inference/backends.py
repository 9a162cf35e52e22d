"""Runtimes behind one interface: ``run(pixels NCHW float32) -> logits NCHW float32``.

The engine above never knows whether ONNX Runtime or torch is doing the work, which is what lets the
CLI, the evaluation code, the between-round relabelling and the HTTP service share one code path.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

METADATA_KEY = "c2f"
MODEL_KINDS = "an ONNX export (.onnx, from c2f export) or a c2f checkpoint (.pt, from c2f train)"


class ModelFileError(ValueError):
    """A model file that c2f cannot open as a model: not an ONNX export nor a c2f checkpoint.

    Kept apart from other failures (no CUDA, out of memory) so that a command line can answer a
    wrong ``--model`` file with a one-line message instead of a traceback.
    """


@dataclass
class ModelInfo:
    """What a served or exported model is: its task, classes and expected input size."""

    task: str
    class_names: list[str]
    input_size: int = 321
    config: dict = field(default_factory=dict)
    version: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict:
        return {
            "task": self.task,
            "class_names": self.class_names,
            "input_size": self.input_size,
            "config": self.config,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        return cls(
            task=data["task"],
            class_names=list(data["class_names"]),
            input_size=int(data.get("input_size", 321)),
            config=dict(data.get("config", {})),
            version=str(data.get("version", "")),
        )


def _reason(exc: BaseException) -> str:
    """An exception's first line (torch and ONNX Runtime messages run over many lines), or its type."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class Backend(Protocol):
    """A runtime that maps raw RGB pixels (NCHW, 0..255) to per-class logits at the same size."""

    info: ModelInfo
    device: str

    def run(self, pixels: np.ndarray) -> np.ndarray: ...


class TorchBackend:
    """Runs an in-memory ``SegmentationModel`` (from a checkpoint or straight from training)."""

    def __init__(self, model, info: ModelInfo, device: str = "auto", channels_last: bool = True) -> None:
        import torch

        self._torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.info = info
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._memory_format = memory_format
        self.model = model.to(device).eval().to(memory_format=memory_format)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> "TorchBackend":
        import torch  # noqa: F401 - imported outside the try: without torch the install is wrong, not the file

        from c2f.checkpoint import load_checkpoint, missing_keys, model_description, model_from_checkpoint

        try:
            state = load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - unpickling any non-checkpoint fails in many ways
            raise ModelFileError(f"{path} is not {MODEL_KINDS}: {_reason(exc)}") from exc
        missing = missing_keys(state)
        if missing:
            raise ModelFileError(f"{path} is a torch file but not a c2f checkpoint (no {', '.join(missing)}); "
                                 f"expected {MODEL_KINDS}")
        model = model_from_checkpoint(state)
        info = ModelInfo.from_dict(model_description(state))
        return cls(model, info, device)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(pixels).to(self.device).contiguous(memory_format=self._memory_format)
            return self.model(x).float().cpu().numpy()


# ONNX Runtime's intra-op threads when the caller gives none; None leaves ONNX Runtime's own default
# (one per physical core). benchmarks/inference_speed.py runs 1 and 2 threads side by side: on 2 busy
# cores (96 px, --quick) 2 threads were 0.85-1.39x as fast as 1 (batch 2: 1.27-1.30x at 0.70-0.86x the
# CPU-s per image), no case for pinning one thread, so the per-core default stays.
DEFAULT_THREADS: int | None = None


class OnnxBackend:
    """ONNX Runtime session; CUDA when asked for (or ``auto``) and really available, else CPU."""

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None) -> None:
        import onnxruntime as ort

        _warn_on_double_install()
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            raise RuntimeError(
                "CUDA was requested but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {available}); install the 'gpu' extra (onnxruntime-gpu) instead of onnxruntime"
            )
        use_cuda = device in ("cuda", "auto") and "CUDAExecutionProvider" in available
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        threads = DEFAULT_THREADS if threads is None else threads
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
            reason = f"ONNX Runtime cannot load it: {_reason(exc)}"
            raise ModelFileError(f"{path} is not {MODEL_KINDS}: {reason}") from exc
        self.device = "cuda" if use_cuda else "cpu"
        self._input = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ModelFileError(f"{path} is not a c2f export: its metadata has no '{METADATA_KEY}' entry")
        self.info = ModelInfo.from_dict(json.loads(meta[METADATA_KEY]))

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self._input: np.ascontiguousarray(pixels, dtype=np.float32)})[0]


def _warn_on_double_install() -> None:
    """Both onnxruntime wheels in one environment make the GPU build silently run on CPU."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            version(name)
            found.append(name)
        except PackageNotFoundError:
            pass
    if len(found) == 2:
        log.warning("both onnxruntime and onnxruntime-gpu are installed; uninstall both and reinstall one")


def load_backend(path: str | Path, device: str = "auto", threads: int | None = None) -> Backend:
    """Open a model file by its suffix: ``.onnx`` via ONNX Runtime, anything else as a torch checkpoint.

    Raises:
        FileNotFoundError: no such file.
        ModelFileError: the file is neither an ONNX export nor a c2f checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix.lower() == ".onnx":
        return OnnxBackend(path, device, threads)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return TorchBackend.from_checkpoint(path, device)

