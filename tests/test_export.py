"""ONNX export: parity with torch for both heads and backbones, metadata, dynamic shapes."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from c2f.data.io import read_image
from c2f.export import check_parity, export_onnx
from c2f.inference import Engine, OnnxBackend, TorchBackend, to_batch


@pytest.mark.parametrize("arch,backbone", [
    ("deeplab", "efficientnet-lite0"), ("deeplab-lite", "efficientnet-lite0"), ("fpn", "efficientnet-lite0"),
    ("deeplab", "resnet50"), ("fpn", "resnet50"),
])
def test_export_parity(tmp_path, demo_data, checkpoint_factory, arch, backbone) -> None:
    task = "foreground" if arch == "fpn" else "semantic"
    classes = ("background", "disc", "square", "triangle") if task == "semantic" else ("background", "foreground")
    checkpoint = checkpoint_factory(tmp_path / "m.pt", arch, backbone, task, classes, input_size=96)
    images = [read_image(p) for p in sorted((demo_data / "images").rglob("*.jpg"))[:3]]
    parity = export_onnx(checkpoint, tmp_path / "m.onnx", images)
    assert parity.argmax_agreement >= 0.999
    assert parity.max_abs_logit_diff < 1e-2
    # Re-measured independently through the public backends, at a size the export never saw.
    again = check_parity(TorchBackend.from_checkpoint(checkpoint, "cpu"), OnnxBackend(tmp_path / "m.onnx", "cpu"), images)
    assert again.argmax_agreement >= 0.999


def test_metadata_and_checker(semantic_onnx) -> None:
    proto = onnx.load(str(semantic_onnx))
    onnx.checker.check_model(proto)
    meta = json.loads({p.key: p.value for p in proto.metadata_props}["c2f"])
    assert meta["task"] == "semantic"
    assert meta["class_names"] == ["background", "disc", "square", "triangle"]
    assert meta["input_size"] == 96
    assert meta["config"]["mean"] == [127.5, 127.5, 127.5]
    assert meta["version"] and meta["opset"] == 17


def test_dynamic_batch_height_width(semantic_onnx) -> None:
    backend = OnnxBackend(semantic_onnx, "cpu")
    rng = np.random.default_rng(0)
    for batch, size in ((1, 96), (3, 75), (2, 130)):
        images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8) for _ in range(batch)]
        logits = backend.run(to_batch(images, size))
        assert logits.shape == (batch, 4, size, size)


def test_engine_results_do_not_depend_on_batching(semantic_onnx, demo_data) -> None:
    images = [read_image(p) for p in sorted((demo_data / "images").rglob("*.jpg"))[:5]]
    one = [p.label_map for p in Engine.open(semantic_onnx, batch_size=1).segment(images)]
    many = [p.label_map for p in Engine.open(semantic_onnx, batch_size=4).segment(images)]
    for a, b, image in zip(one, many, images):
        assert a.shape == image.shape[:2]
        assert np.mean(a == b) > 0.999


def test_not_a_c2f_model_is_refused(tmp_path, semantic_onnx) -> None:
    proto = onnx.load(str(semantic_onnx))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not a c2f export"):
        OnnxBackend(tmp_path / "plain.onnx", "cpu")


def test_fp16_variant_and_cli(tmp_path, semantic_checkpoint) -> None:
    from click.testing import CliRunner

    from c2f.cli.main import cli

    result = CliRunner().invoke(cli, ["export", str(semantic_checkpoint), "-o", str(tmp_path / "m.onnx"), "--fp16"])
    assert result.exit_code == 0, result.output
    assert "parity vs torch" in result.output and "parity vs fp32 export" in result.output
    half = onnx.load(str(tmp_path / "m-fp16.onnx"))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    backend = OnnxBackend(tmp_path / "m-fp16.onnx", "cpu")
    assert backend.info.class_names == ["background", "disc", "square", "triangle"]
    assert len(json.loads({p.key: p.value for p in half.metadata_props}["c2f"])["palette"]) == 4


def test_keep_aspect_preprocessing(semantic_onnx, demo_data) -> None:
    """Letterboxed inputs: right output sizes, batch-independent, and equal to the square path for square images."""
    from c2f.inference.engine import fit_size

    rng = np.random.default_rng(3)
    wide = read_image(sorted((demo_data / "images").rglob("*.jpg"))[0])
    wide = np.ascontiguousarray(np.hstack([wide, wide[:, ::-1]]))  # about 1:2, far from square
    square = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    aspect = Engine.open(semantic_onnx, batch_size=1, keep_aspect=True)
    batched = Engine.open(semantic_onnx, batch_size=2, keep_aspect=True)
    plain = Engine.open(semantic_onnx, batch_size=1)
    one = aspect.segment([wide, square])
    two = batched.segment([wide, square])
    assert one[0].label_map.shape == wide.shape[:2]
    assert np.mean(one[0].label_map == two[0].label_map) > 0.999
    assert np.allclose(one[0].probs.sum(axis=0), 1, atol=1e-4)
    # A square image needs no padding: both preprocessing modes give the same probabilities.
    assert np.allclose(one[1].probs, plain.segment([square])[0].probs, atol=1e-5)
    # The padded batch holds the image undistorted in its top-left corner.
    height, width = fit_size(*wide.shape[:2], 96)
    batch = to_batch([wide], 96, keep_aspect=True)
    assert max(height, width) == 96 and abs(height / width - wide.shape[0] / wide.shape[1]) < 0.05
    assert np.array_equal(batch[0, :, height:, :width], np.repeat(batch[0, :, height - 1 : height, :width], 96 - height, axis=1))
