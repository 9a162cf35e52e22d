"""ONNX export with metadata and a parity check against the torch model."""

from .onnx_export import OPSET, Parity, check_parity, export_fp16, export_onnx

__all__ = ["OPSET", "Parity", "check_parity", "export_fp16", "export_onnx"]
