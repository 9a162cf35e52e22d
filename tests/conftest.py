"""Shared fixtures: a small generated data set and small (untrained) exported models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """A few generated images per class with hidden ground truth (images-masks layout)."""
    from c2f.data.synthetic import generate_demo_dataset

    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "data", n_per_class=6, size=96, seed=1)


def make_checkpoint_file(path: Path, arch: str = "deeplab", backbone: str = "efficientnet-lite0",
                         task: str = "semantic", classes: tuple[str, ...] = ("background", "disc", "square", "triangle"),
                         input_size: int = 96) -> Path:
    """An untrained but ImageNet-initialised model saved as a c2f checkpoint."""
    import torch

    from c2f.models import build_model
    from c2f.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model(arch, backbone, len(classes), pretrained=backbone == "efficientnet-lite0")
    return save_checkpoint(make_checkpoint(model, task, list(classes), input_size), path)


@pytest.fixture(scope="session")
def semantic_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "semantic.pt")


@pytest.fixture(scope="session")
def semantic_onnx(tmp_path_factory, semantic_checkpoint) -> Path:
    from c2f.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "semantic.onnx"
    export_onnx(semantic_checkpoint, path)
    return path


@pytest.fixture(scope="session")
def checkpoint_factory():
    """``make_checkpoint_file`` for tests that need their own arch/backbone/task."""
    return make_checkpoint_file


CLIENT_TIMEOUT_S = 120  # an upper bound for waiting on the server, never a performance threshold


@pytest.fixture(scope="module")
def server(server_env, tmp_path_factory):
    """A ready service for the module, with the ``C2F_*`` (and other) variables of its ``server_env``."""
    from servers import serving

    with serving(tmp_path_factory.mktemp("server") / "server.log", server_env) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    """An httpx client of the module's ``server``."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as http:
        yield http
