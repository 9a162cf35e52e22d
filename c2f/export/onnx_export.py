"""Export a c2f checkpoint to ONNX with its metadata, then prove the export against torch.

Exporter choice: torch's TorchScript-based exporter (``dynamo=False``) at opset 17. It takes
``dynamic_axes`` for batch, height and width, needs no ``onnxscript`` dependency, and converts
``AdaptiveAvgPool2d(1)`` to GlobalAveragePool and the final upsampling to a Resize on the input's
runtime shape. The parity check below is what makes that choice safe: an export that runs but is
wrong fails it.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2f import __version__
from c2f.inference.backends import METADATA_KEY, ModelInfo, OnnxBackend, TorchBackend

log = logging.getLogger(__name__)

OPSET = 17


@dataclass
class Parity:
    """How closely the ONNX model reproduces torch on the same inputs."""

    max_abs_logit_diff: float
    argmax_agreement: float

    def __str__(self) -> str:
        return f"max |logit diff| {self.max_abs_logit_diff:.2e}, argmax agreement {self.argmax_agreement:.4%}"


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    sample_images: list[np.ndarray] | None = None,
) -> Parity:
    """Write ``output`` from ``checkpoint`` and return the parity measured on ``sample_images``.

    Without sample images, parity is measured on smooth random images at two odd sizes, which
    exercises the dynamic height/width path that real photographs take.
    """
    import onnx
    import torch

    source = TorchBackend.from_checkpoint(checkpoint, device="cpu")
    model = source.model.to(memory_format=torch.contiguous_format)
    size = source.info.input_size
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(1, 3, size, size) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(output),
            dynamo=False,
            opset_version=OPSET,
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
        )
    proto = onnx.load(str(output))
    _set_metadata(proto, source.info)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    parity = check_parity(source, OnnxBackend(output, device="cpu"), sample_images)
    log.info("exported %s: %s", output, parity)
    return parity


def export_fp16(fp32_model: str | Path, output: str | Path, sample_images: list[np.ndarray] | None = None) -> Parity:
    """Write a float16 copy of an fp32 export (inputs and outputs stay float32) and measure it.

    Meant for GPUs: on this kind of CPU ONNX Runtime runs fp16 graphs no faster than fp32. The
    converter is ONNX Runtime's own (``onnxruntime.transformers.float16``, in both the CPU and GPU
    wheels), so no extra dependency is needed; parity is measured against the fp32 export.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = convert_float_to_float16(onnx.load(str(fp32_model)), keep_io_types=True)
    _sort_nodes(proto.graph)  # the converter appends its input casts at the end of the node list
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    parity = check_parity(OnnxBackend(fp32_model, device="cpu"), OnnxBackend(output, device="cpu"), sample_images)
    log.info("exported %s: %s", output, parity)
    return parity


def _sort_nodes(graph) -> None:
    """Reorder ``graph.node`` topologically (stable), as the ONNX checker requires."""
    available = {t.name for t in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ValueError("graph has a cycle or an undefined input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def _set_metadata(proto, info: ModelInfo) -> None:
    from c2f.data.io import voc_palette

    palette = voc_palette()[: info.num_classes].tolist()
    info_dict = {**info.to_dict(), "version": __version__, "opset": OPSET, "palette": palette}
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info_dict)
    proto.producer_name, proto.producer_version = "c2f", __version__
    proto.doc_string = f"c2f {info.task} model, {info.num_classes} classes: {', '.join(info.class_names)}"


def check_parity(reference, candidate, images: list[np.ndarray] | None = None) -> Parity:
    """Compare two backends' logits at the model's input size and at odd sizes."""
    from c2f.inference.engine import to_batch

    if images is None:
        rng = np.random.default_rng(0)
        images = [_smooth_noise(rng, h, w) for h, w in ((187, 243), (321, 321))]
    worst, agree, total = 0.0, 0, 0
    for image in images:
        for size in (reference.info.input_size, image.shape[0] | 1):
            batch = to_batch([image], size)
            ref, cand = reference.run(batch), candidate.run(batch)
            worst = max(worst, float(np.abs(ref - cand).max()))
            agree += int((ref.argmax(1) == cand.argmax(1)).sum())
            total += ref.shape[0] * ref.shape[2] * ref.shape[3]
    return Parity(worst, agree / total)


def _smooth_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Blurred colour noise with structure, closer to a photograph than white noise."""
    import cv2

    small = rng.integers(0, 256, size=(max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(image.astype(np.int16) + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
