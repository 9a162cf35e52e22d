"""The HTTP service: a real ``bentoml serve`` subprocess on loopback, a real httpx client, no mocks.

Every served mask is compared pixel for pixel with ``Engine.segment`` (what ``c2f segment`` runs).
The request, encoding and middleware helpers are unit-tested without BentoML at the end of the file.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest


httpx = pytest.importorskip("httpx")
pytest.importorskip("bentoml")

from PIL import Image  # noqa: E402

from c2f.inference.render import foreground_mask  # noqa: E402
from c2f.serving.encoders import label_png, png_bytes, rle_decode, rle_encode, segmentation_json  # noqa: E402
from c2f.serving.middleware import BodyLimit, ErrorEnvelope  # noqa: E402
from c2f.serving.options import RequestError, decode_upload, parse_bool, parse_choice, parse_classes  # noqa: E402
from c2f.serving.settings import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, Settings  # noqa: E402
from servers import LocalServer  # noqa: E402

pytestmark = pytest.mark.slow  # real bentoml servers over HTTP, and bentoml build

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["background", "disc", "square"]
INPUT_SIZE = 160
MAX_BYTES = 150_000  # small limits so the over-limit cases need only small files
MAX_PIXELS = 1_000_000
STARTUP_S = 120


# ----------------------------------------------------------------------------- helpers


def _scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth synthetic RGB scene (a disc and a square on a gradient): small as PNG."""
    import cv2

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.dstack([x * 200 // max(width, 1), y * 200 // max(height, 1), np.full_like(x, 90)]).astype(np.uint8)
    cx, cy = int(rng.integers(width // 4, width // 2)), int(rng.integers(height // 4, 3 * height // 4))
    cv2.circle(image, (cx, cy), max(4, min(height, width) // 5), (250, 230, 30), -1)
    x0, y0 = int(rng.integers(width // 2, 3 * width // 4)), int(rng.integers(0, height // 2))
    cv2.rectangle(image, (x0, y0), (x0 + width // 5, y0 + height // 3), (200, 40, 40), -1)
    return image


def _encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def Server(log_path: Path, **env: str) -> LocalServer:
    return LocalServer(log_path, env)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    import torch

    from c2f.export import export_onnx
    from c2f.models import build_model
    from c2f.checkpoint import make_checkpoint, save_checkpoint

    folder = tmp_path_factory.mktemp("serving_model")
    torch.manual_seed(0)
    model = build_model("deeplab", "efficientnet-lite0", len(CLASSES))
    checkpoint = save_checkpoint(make_checkpoint(model, "semantic", CLASSES, INPUT_SIZE), folder / "ck.pt")
    export_onnx(checkpoint, folder / "model.onnx")
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def engine(model_path):
    from c2f.inference import Engine

    return Engine.open(model_path, device="cpu")


@pytest.fixture(scope="module")
def server_env(model_path) -> dict[str, str]:
    """The module's ``server`` (conftest): small limits, batches of 4, one thread."""
    return {"C2F_MODEL": str(model_path), "C2F_MAX_BYTES": str(MAX_BYTES), "C2F_MAX_PIXELS": str(MAX_PIXELS),
            "C2F_BATCH": "4", "C2F_THREADS": "1"}


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    return {
        "scene.png": _encode(_scene(240, 320, 0)),
        "odd.png": _encode(_scene(97, 131, 1)),
        "scene.jpg": _encode(_scene(180, 200, 2), "JPEG"),
    }


def _reference(engine, data: bytes, crf: bool = False, grabcut: bool = False, labels=None) -> np.ndarray:
    from c2f.data.io import decode_image

    return engine.segment([decode_image(data)], crf=crf, grabcut=grabcut, labels=labels)[0].label_map


def _png(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content))


def _post(client, route: str, data: bytes, name: str = "image.png", **fields):
    return client.post(route, files={"image": (name, data, "application/octet-stream")}, data=fields)


# ----------------------------------------------------------------------------- health and metadata


def test_ready_only_after_model_loaded(server, client):
    assert "c2f model" in server.log_when_ready and "loaded" in server.log_when_ready
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_metadata(client, method, model_path):
    response = client.request(method, "/metadata")
    assert response.status_code == 200
    meta = response.json()
    assert meta["task"] == "semantic"
    assert meta["class_names"] == CLASSES and meta["num_classes"] == 3
    assert meta["input_size"] == INPUT_SIZE
    assert meta["model_version"] and meta["model_file"] == model_path.name
    import c2f

    assert meta["c2f_version"] == c2f.__version__
    assert meta["device"] == "cpu"
    assert meta["batching"] == {"enabled": True, "max_batch_size": 4, "max_latency_ms": 60_000}
    assert meta["limits"] == {"max_bytes": MAX_BYTES, "max_pixels": MAX_PIXELS}
    assert meta["selectable_classes"] == ["disc", "square"]


# ----------------------------------------------------------------------------- results equal the engine's


@pytest.mark.parametrize("name", ["scene.png", "odd.png", "scene.jpg"])
@pytest.mark.parametrize("crf", [False, True])
def test_segment_png_equals_engine(client, engine, images, name, crf):
    data = images[name]
    mask = _png(_post(client, "/segment", data, name, crf=str(crf).lower()))
    assert mask.mode == "P"
    from c2f.data.io import voc_palette

    assert np.array_equal(np.array(mask.getpalette()[:12]).reshape(4, 3), voc_palette()[:4])
    assert np.array_equal(np.array(mask), _reference(engine, data, crf=crf))


def test_segment_grabcut_equals_engine(client, engine, images):
    data = images["odd.png"]
    mask = _png(client.post("/segment?grabcut=true", files={"image": ("odd.png", data)}))
    assert np.array_equal(np.array(mask), _reference(engine, data, grabcut=True))


def test_segment_json_rle_decodes_to_the_mask(client, engine, images):
    data = images["scene.png"]
    response = _post(client, "/segment", data, format="json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    expected = _reference(engine, data)
    assert (body["height"], body["width"]) == expected.shape
    assert body["class_names"] == CLASSES and body["task"] == "semantic"
    rebuilt = np.full(expected.shape, 254, dtype=np.uint8)
    for entry in body["masks"]:
        assert entry["rle"]["size"] == list(expected.shape)
        part = rle_decode(entry["rle"])
        assert not (rebuilt[part] != 254).any(), "RLE masks overlap"
        rebuilt[part] = entry["class_id"]
        assert entry["class_name"] == CLASSES[entry["class_id"]]
        assert entry["pixels"] == int(part.sum())
    assert np.array_equal(rebuilt, expected)
    assert sum(body["shares"].values()) == pytest.approx(1.0, abs=1e-4)


def test_segment_overlay(client, engine, images):
    from c2f.data.io import decode_image
    from c2f.inference.render import overlay

    data = images["scene.png"]
    picture = _png(_post(client, "/segment", data, format="overlay"))
    assert picture.mode == "RGB"
    image = decode_image(data)
    assert np.array_equal(np.array(picture), overlay(image, _reference(engine, data)))


def test_foreground_mask_and_cutout(client, engine, images):
    from c2f.data.io import decode_image

    data = images["odd.png"]
    expected = foreground_mask(_reference(engine, data))
    mask = _png(_post(client, "/foreground", data))
    assert mask.mode == "L"
    values = np.array(mask)
    assert set(np.unique(values)) <= {0, 255}
    assert np.array_equal(values == 255, expected)
    cut = _png(client.post("/foreground?format=cutout", files={"image": ("odd.png", data)}))
    assert cut.mode == "RGBA"
    rgba = np.array(cut)
    assert np.array_equal(rgba[..., :3], decode_image(data))
    assert np.array_equal(rgba[..., 3] == 255, expected)


@pytest.mark.parametrize("own,grabcut", [("disc", False), ("square", True)])
def test_segment_with_classes_never_outputs_another_class(client, engine, images, own, grabcut):
    """classes=<name>: only background and that class, where the unrestricted model also gives the other."""
    own_id = CLASSES.index(own)
    for name in ("scene.png", "odd.png"):
        data = images[name]
        free = _reference(engine, data, grabcut=grabcut)
        assert set(np.unique(free)) - {0, own_id}, "the unrestricted mask already keeps to the class: vacuous"
        mask = np.array(_png(_post(client, "/segment", data, name, classes=own, grabcut=str(grabcut).lower())))
        assert set(np.unique(mask)) <= {0, own_id} and (mask == own_id).any()
        assert np.array_equal(mask, _reference(engine, data, grabcut=grabcut, labels=[(own,)]))
        as_query = client.post(f"/segment?classes={own}&format=json", files={"image": (name, data)})
        assert as_query.status_code == 200, as_query.text
        assert {m["class_name"] for m in as_query.json()["masks"]} <= {"background", own}
        foreground = np.array(_png(_post(client, "/foreground", data, name, classes=own, grabcut=str(grabcut).lower())))
        assert np.array_equal(foreground == 255, mask == own_id)


def test_segment_with_several_classes(client, engine, images):
    data = images["scene.png"]
    mask = np.array(_png(_post(client, "/segment", data, classes=" square , disc")))
    assert np.array_equal(mask, _reference(engine, data, labels=[("disc", "square")]))


@pytest.mark.parametrize("route", ["/segment", "/foreground"])
@pytest.mark.parametrize("classes,said", [("zebra", "unknown class 'zebra'"), ("disc,Zebra", "unknown class 'Zebra'"),
                                          ("background", "'background' is not a label")])
def test_unknown_class_is_a_422_naming_the_valid_classes(client, images, route, classes, said):
    response = _post(client, route, images["odd.png"], classes=classes)
    assert response.status_code == 422, response.text
    reason = response.json()["reason"]
    assert said in reason and "this model's classes: disc, square" in reason, reason


def test_options_as_query_parameters(client, images):
    response = client.post("/segment?format=json&crf=0", files={"image": ("a.png", images["odd.png"])})
    assert response.status_code == 200 and "masks" in response.json()


def test_concurrent_requests_are_batched_and_each_gets_its_own_mask(client, engine, server):
    """Different images sent together share model calls; each answer is still its own image's."""
    scenes = [_encode(_scene(60 + 13 * i, 90 + 7 * i, 10 + i)) for i in range(10)]

    def send(data: bytes) -> np.ndarray:
        with httpx.Client(base_url=server.url, timeout=120) as own:
            return np.array(_png(_post(own, "/segment", data)))

    with ThreadPoolExecutor(len(scenes)) as pool:
        masks = list(pool.map(send, scenes))
    for data, mask in zip(scenes, masks):
        assert np.array_equal(mask, _reference(engine, data))
    metrics = client.get("/metrics").text
    assert 'bentoml_service_adaptive_batch_size_count{method_name="infer"' in metrics


def test_no_request_lost_when_bentoml_renews_its_client_session(server):
    """BentoML's in-process client renews its session every 100 calls, cutting calls in flight."""
    data = _encode(_scene(48, 64, 3))

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
            semaphore = asyncio.Semaphore(12)

            async def one() -> int:
                async with semaphore:
                    response = await http.post("/segment", files={"image": ("s.png", data)})
                    return response.status_code

            return await asyncio.gather(*(one() for _ in range(130)))

    assert set(asyncio.run(run())) == {200}


def test_internal_batch_route_ignores_unknown_keys(client):
    response = client.post("/internal/batch", json={"keys": ["not-a-request"]})
    assert response.status_code == 200 and response.json() == ["unknown"]


# ----------------------------------------------------------------------------- bad input


def _noise_png(size: int) -> bytes:
    return _encode(np.random.default_rng(5).integers(0, 255, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def bad_requests(images: dict[str, bytes]) -> dict[str, tuple[dict, int]]:
    """Request arguments for httpx and the status each must get."""
    good = images["odd.png"]
    truncated = images["scene.png"][: len(images["scene.png"]) // 2]
    just_over = _noise_png(230)  # 158 KB: over MAX_BYTES, under the body guard's slack
    assert MAX_BYTES < len(just_over) < MAX_BYTES + 64 * 1024
    far_over = _noise_png(400)  # ~480 KB: refused from Content-Length before the body is read
    many_pixels = _encode(np.zeros((1100, 1000, 3), np.uint8))  # 1.1 MP, a few KB
    return {
        "no file": ({"data": {"format": "png"}, "files": {"other": ("x.txt", b"x")}}, 400),
        "empty body": ({}, 400),
        "empty file": ({"files": {"image": ("empty.png", b"")}}, 400),
        "corrupt image": ({"files": {"image": ("broken.png", truncated)}}, 422),
        "text file": ({"files": {"image": ("notes.txt", b"hello, this is not an image\n" * 20)}}, 415),
        "over byte limit": ({"files": {"image": ("big.png", just_over)}}, 413),
        "far over byte limit": ({"files": {"image": ("huge.png", far_over)}}, 413),
        "over pixel limit": ({"files": {"image": ("wide.png", many_pixels)}}, 413),
        "format=gif": ({"files": {"image": ("a.png", good)}, "data": {"format": "gif"}}, 422),
        "crf=maybe": ({"files": {"image": ("a.png", good)}, "data": {"crf": "maybe"}}, 422),
        "grabcut=2 in query": ({"files": {"image": ("a.png", good)}, "params": {"grabcut": "2"}}, 422),
        "classes=zebra": ({"files": {"image": ("a.png", good)}, "data": {"classes": "zebra"}}, 422),
        "raw body, not multipart": ({"content": good, "headers": {"content-type": "image/png"}}, 400),
        "text where the file belongs": ({"data": {"image": "hello"}, "files": {"other": ("x", b"\x89\xff")}}, 400),
    }


BAD_CASES = [
    "no file", "empty body", "empty file", "corrupt image", "text file", "over byte limit",
    "far over byte limit", "over pixel limit", "format=gif", "crf=maybe", "grabcut=2 in query", "classes=zebra",
    "raw body, not multipart", "text where the file belongs",
]


@pytest.mark.parametrize("route", ["/segment", "/foreground"])
@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_a_4xx_with_a_reason(client, bad_requests, route, case):
    kwargs, status = bad_requests[case]
    response = client.post(route, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body.get("reason"), str) and body["reason"]


def test_foreground_rejects_a_segment_only_format(client, images):
    response = _post(client, "/foreground", images["odd.png"], format="overlay")
    assert response.status_code == 422 and "format" in response.json()["reason"]


def test_chunked_upload_over_the_limit_is_cut_off(client):
    head = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'

    def chunks():  # a well-formed multipart body of ~640 KB, streamed without a Content-Length
        yield head
        for _ in range(40):
            yield b"\0" * 16384
        yield b"\r\n--x--\r\n"

    response = client.post("/segment", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413 and "limit" in response.json()["reason"]


def test_still_serving_after_bad_inputs(client, engine, images, bad_requests, server):
    for case in BAD_CASES:
        kwargs, _ = bad_requests[case]
        client.post("/segment", **kwargs)
    assert server.proc.poll() is None
    assert client.get("/readyz").status_code == 200
    data = images["scene.png"]
    assert np.array_equal(np.array(_png(_post(client, "/segment", data))), _reference(engine, data))


# ----------------------------------------------------------------------------- other server modes


def test_batching_off_gives_the_same_masks(model_path, engine, images, tmp_path):
    srv = Server(tmp_path / "server.log", C2F_MODEL=str(model_path), C2F_BATCHING="0")
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            assert http.get("/metadata").json()["batching"]["enabled"] is False
            for name in ("scene.png", "scene.jpg"):
                mask = _png(_post(http, "/segment", images[name], name, crf="true"))
                assert np.array_equal(np.array(mask), _reference(engine, images[name], crf=True))
    finally:
        srv.stop()


def test_keep_aspect_server_pads_like_the_engine(model_path, engine, images, tmp_path):
    from c2f.inference import Engine

    padded = Engine.open(model_path, device="cpu", keep_aspect=True)
    data = images["odd.png"]  # 97 x 131: padding and stretching give different masks
    assert not np.array_equal(_reference(padded, data), _reference(engine, data))
    srv = Server(tmp_path / "server.log", C2F_MODEL=str(model_path), C2F_KEEP_ASPECT="1")
    try:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, timeout=120) as http:
            assert http.get("/metadata").json()["keep_aspect"] is True
            mask = np.array(_png(_post(http, "/segment", data, "odd.png")))
            assert np.array_equal(mask, _reference(padded, data))
    finally:
        srv.stop()


def test_missing_model_is_a_clear_startup_error(tmp_path):
    missing = tmp_path / "nope.onnx"
    srv = Server(tmp_path / "server.log", C2F_MODEL=str(missing))
    try:
        srv.proc.wait(timeout=STARTUP_S)
    finally:
        srv.stop()
    assert srv.proc.returncode != 0
    assert "no such model file" in srv.log() and str(missing) in srv.log()


def test_unset_model_never_becomes_ready(tmp_path):
    from c2f.serving.settings import bundled_model_path

    if bundled_model_path().exists():
        pytest.skip("a bundled model/model.onnx exists in this checkout")
    srv = Server(tmp_path / "server.log")
    try:
        deadline = time.monotonic() + STARTUP_S
        while "no model to serve" not in srv.log() and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "no model to serve: set C2F_MODEL" in srv.log()
        try:
            status = httpx.get(f"{srv.url}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            status = None
        assert status != 200
    finally:
        srv.stop()


def test_bentoml_build_bundles_the_model(model_path, tmp_path):
    """`bentoml build` with the repository's bentofile.yaml, in a copy of the build context."""
    context = tmp_path / "context"
    shutil.copytree(REPO / "c2f", context / "c2f", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "bentofile.yaml", context / "bentofile.yaml")
    (context / "model").mkdir()
    shutil.copy(model_path, context / "model" / "model.onnx")
    (context / "tests").mkdir()
    (context / "tests" / "test_x.py").write_text("")
    home = tmp_path / "bentoml_home"
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "bentoml", "build", ".", "--output", "tag"],
        cwd=context, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    bentos = list((home / "bentos" / "c2f-segmenter").glob("*/bento.yaml"))
    assert len(bentos) == 1
    src = bentos[0].parent / "src"
    assert (src / "model" / "model.onnx").read_bytes() == model_path.read_bytes()
    assert (src / "c2f" / "serving" / "service.py").exists()
    assert not (src / "tests").exists()
    requirements = (bentos[0].parent / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "onnxruntime-gpu" not in requirements
    assert "torch" not in requirements


# ----------------------------------------------------------------------------- helper unit tests (no server)


def test_settings_from_env_defaults_and_errors():
    settings = Settings.from_env({})
    assert settings.max_bytes == DEFAULT_MAX_BYTES and settings.max_pixels == DEFAULT_MAX_PIXELS
    assert settings.batching and settings.workers == 1 and settings.threads is None
    custom = Settings.from_env({"C2F_BATCH": "16", "C2F_BATCHING": "off", "C2F_THREADS": "2", "C2F_WORKERS": "3"})
    assert (custom.batch_size, custom.batching, custom.threads, custom.workers) == (16, False, 2, 3)
    assert not settings.keep_aspect and Settings.from_env({"C2F_KEEP_ASPECT": "1"}).keep_aspect
    for bad in ({"C2F_BATCH": "1"}, {"C2F_MAX_BYTES": "lots"}, {"C2F_BATCHING": "maybe"}, {"C2F_DEVICE": "tpu"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings.from_env(bad)


def test_settings_resolve_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="C2F_MODEL"):
        Settings(model=str(tmp_path / "missing.onnx")).resolve_model()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    assert Settings(model=str(path)).resolve_model() == path


@pytest.mark.parametrize("value,expected", [(None, False), (True, True), (0, False), (1, True), ("TRUE", True),
                                            ("no", False), ("on", True), ("", False)])
def test_parse_bool(value, expected):
    assert parse_bool(value, "crf") is expected


@pytest.mark.parametrize("value", ["maybe", 2, 1.5, [True]])
def test_parse_bool_rejects(value):
    with pytest.raises(RequestError) as info:
        parse_bool(value, "crf")
    assert info.value.status == 422 and "crf" in info.value.reason


def test_parse_choice():
    assert parse_choice(None, "format", ("png", "json"), "png") == "png"
    assert parse_choice("JSON", "format", ("png", "json"), "png") == "json"
    with pytest.raises(RequestError, match="gif"):
        parse_choice("gif", "format", ("png", "json"), "png")


def test_parse_classes():
    from c2f.inference import ModelInfo

    info = ModelInfo("semantic", CLASSES)
    assert parse_classes(None, info) is None and parse_classes(" , ", info) is None
    assert parse_classes("square, disc", info) == (2, 1)
    assert parse_classes(["disc", "square,disc"], info) == (1, 2)  # a repeated field
    for bad, said in [("zebra", "unknown class 'zebra'"), (3, "comma-separated"),
                      ("disc", "foreground model")]:
        target = ModelInfo("foreground", ["background", "foreground"]) if said == "foreground model" else info
        with pytest.raises(RequestError) as error:
            parse_classes(bad, target)
        assert error.value.status == 422 and said in error.value.reason


def test_decode_upload_statuses():
    good = _encode(_scene(40, 50, 0))
    assert decode_upload(good, 10**6, 10**6).shape == (40, 50, 3)
    cases = [
        (None, 400), (b"", 400), (b"not an image at all", 415), (good[: len(good) // 2], 422),
        (good, 413, {"max_bytes": 100}), (good, 413, {"max_pixels": 1999}),
    ]
    for data, status, *limits in cases:
        kwargs = {"max_bytes": 10**6, "max_pixels": 10**6, **(limits[0] if limits else {})}
        with pytest.raises(RequestError) as info:
            decode_upload(data, **kwargs)
        assert info.value.status == status, (data[:10] if data else data, info.value.reason)
        assert info.value.to_dict()["reason"]


def test_rle_is_coco_style():
    mask = np.array([[0, 1, 1], [0, 1, 0]], dtype=bool)  # column-major: 0 0 1 1 1 0
    assert rle_encode(mask) == {"size": [2, 3], "counts": [2, 3, 1]}
    starts_with_one = np.array([[1, 0]], dtype=bool)
    assert rle_encode(starts_with_one)["counts"] == [0, 1, 1]
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (64, 48)]:
        for fill in (0.0, 0.3, 1.0):
            random_mask = rng.random(shape) < fill
            rle = rle_encode(random_mask)
            assert sum(rle["counts"]) == random_mask.size
            assert np.array_equal(rle_decode(rle), random_mask)


def test_segmentation_json_covers_every_pixel_once():
    label_map = np.zeros((6, 5), np.uint8)
    label_map[1:3, 1:4] = 2
    label_map[5, 4] = 255
    body = segmentation_json(label_map, CLASSES)
    assert [m["class_name"] for m in body["masks"]] == ["background", "square", "ignore"]
    total = sum(rle_decode(m["rle"]).astype(int) for m in body["masks"])
    assert (total == 1).all()
    assert body["shares"]["square"] == pytest.approx(6 / 30, abs=1e-6)
    json.dumps(body)


def test_png_encoders_round_trip():
    label_map = (np.arange(30).reshape(5, 6) % 4).astype(np.uint8)
    indexed = Image.open(io.BytesIO(label_png(label_map)))
    assert indexed.mode == "P" and np.array_equal(np.array(indexed), label_map)
    rgba = np.random.default_rng(1).integers(0, 255, (4, 3, 4), dtype=np.uint8)
    assert np.array_equal(np.array(Image.open(io.BytesIO(png_bytes(rgba)))), rgba)
    with pytest.raises(ValueError):
        png_bytes(np.zeros((2, 2, 2), np.uint8))


def test_foreground_mask_excludes_background_and_ignore():
    assert foreground_mask(np.array([[0, 1, 2, 255]], np.uint8)).tolist() == [[False, True, True, False]]


async def _echo_app(scope, receive, send):
    """A tiny ASGI app that reads the body and answers like BentoML does for a parse error."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            break
    if scope["path"] == "/crash":
        status, payload = 500, {"error": "An unexpected error has occurred, please check the server log."}
    elif scope["path"] == "/wrapped":
        status, payload = 400, [{"error": "bad thing"}]
    else:
        status, payload = 200, {"size": len(body)}
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def test_asgi_guards():
    app = ErrorEnvelope(BodyLimit(_echo_app, max_body=1000), paths=("/crash", "/wrapped"))

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            ok = await http.post("/ok", content=b"x" * 1000)
            too_big = await http.post("/ok", content=b"x" * 1001)

            async def stream():
                for _ in range(5):
                    yield b"y" * 300

            streamed = await http.post("/ok", content=stream())
            crash = await http.post("/crash", content=b"")
            wrapped = await http.post("/wrapped", content=b"")
            return ok, too_big, streamed, crash, wrapped

    ok, too_big, streamed, crash, wrapped = asyncio.run(run())
    assert ok.status_code == 200 and ok.json() == {"size": 1000}
    assert too_big.status_code == 413 and "1000" in too_big.json()["reason"]
    assert streamed.status_code == 413
    assert crash.status_code == 400 and "multipart" in crash.json()["reason"]  # endpoint never reached
    assert wrapped.status_code == 400 and "bad thing" in wrapped.json()["reason"]
