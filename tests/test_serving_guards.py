"""The HTTP service against abuse and noise, on a real ``bentoml serve`` subprocess (no mocks).

* a text value where the image file belongs (a URL, a path, ``file://``) is refused with a 4xx and
  never fetched or opened: the server runs with every proxy variable pointing at a local listener,
  so any HTTP request it made, to any host, would arrive there;
* a client that closes its connection has its remaining work skipped (log line and metric);
* a client error logs one line, no traceback.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest


httpx = pytest.importorskip("httpx")
pytest.importorskip("bentoml")

from PIL import Image  # noqa: E402

pytestmark = pytest.mark.slow  # real bentoml servers over HTTP

WAIT_S = 120  # an upper bound for waiting on the server, never a performance threshold


class Listener:
    """A loopback TCP listener in a thread that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections: list[bytes] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.connections.append(conn.recv(4096))
                except OSError:
                    self.connections.append(b"")

    def close(self) -> None:
        self.sock.close()


def _png(height: int, width: int, seed: int = 0) -> bytes:
    """A smooth scene (gradient, disc, box; small as PNG)."""
    import cv2

    y, x = np.mgrid[0:height, 0:width]
    image = np.dstack([x * 200 // width, y * 200 // height, np.full_like(x, 90)]).astype(np.uint8)
    cv2.circle(image, (width // 3, height // 2), min(height, width) // 4, (250, 230, 30), -1)
    cv2.rectangle(image, (width // 2, height // 5), (4 * width // 5, 3 * height // 4), (200, 40, 40), -1)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def listener():
    sink = Listener()
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def server_env(semantic_onnx, listener) -> dict[str, str]:
    """The module's ``server`` (conftest), with every outgoing HTTP(S) request routed to ``listener``."""
    proxies = {name: listener.url for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                                                "http_proxy", "https_proxy", "all_proxy")}
    return {"C2F_MODEL": str(semantic_onnx), "C2F_THREADS": "1", "NO_PROXY": "", "no_proxy": "", **proxies}


@pytest.fixture(scope="module")
def server_side_png(tmp_path_factory) -> Path:
    """A real image on the server's disk: a request that could name it must not get it segmented."""
    path = tmp_path_factory.mktemp("server_files") / "photo.png"
    path.write_bytes(_png(64, 80))
    return path


def _text_values(listener: Listener, server_side_png: Path) -> list[str]:
    return [f"{listener.url}/x.jpg", "http://example.com/x.jpg", "https://example.com/x.jpg", "/etc/passwd",
            "file:///etc/passwd", str(server_side_png), f"file://{server_side_png}"]


def _fetches(listener: Listener) -> list[bytes]:
    """Requests that reached the listener for anything a test sent as the image.

    Other traffic is left out: with uvloop importable, the server process also makes a telemetry
    call (CONNECT mobile.events.data.microsoft.com:443) through the proxy, unrelated to requests.
    """
    named = (b"x.jpg", b"example.com", b"passwd", b"photo.png")
    return [request for request in listener.connections if not request or any(part in request for part in named)]


def _send(client, route: str, how: str, value: str):
    if how == "multipart text field":
        return client.post(route, files={"image": (None, value)})  # a part without a filename: text
    if how == "multipart text field + a file under another name":
        return client.post(route, files={"image": (None, value), "other": ("a.png", _png(20, 20))})
    if how == "urlencoded":
        return client.post(route, data={"image": value})
    if how == "json":
        return client.post(route, json={"image": value})
    return client.post(route, content=value.encode(), headers={"content-type": "application/json"})


# ----------------------------------------------------------------------------- text values are refused


@pytest.mark.parametrize("route", ["/segment", "/foreground"])
@pytest.mark.parametrize("how", ["multipart text field", "multipart text field + a file under another name",
                                 "urlencoded", "json", "raw json string"])
def test_text_image_value_is_refused_and_never_fetched(server, client, listener, server_side_png, route, how):
    start = len(server.log())
    for value in _text_values(listener, server_side_png):
        response = _send(client, route, how, value)
        assert 400 <= response.status_code < 500, (value, response.text)
        body = response.json()
        expected = {"image_not_a_file": "never fetched or opened", "not_multipart": "not accepted"}
        assert body["error"] in expected and expected[body["error"]] in body["reason"], (value, body)
    log = server.log()[start:]
    assert _fetches(listener) == [], f"the server fetched what the client named: {_fetches(listener)}"
    assert "ensure_file" not in log and "make_safe_connect" not in log and "download" not in log.lower(), log[-3000:]


def test_the_refusal_names_the_text_field(client, listener):
    response = client.post("/segment", files={"image": (None, f"{listener.url}/x.jpg")})
    assert response.status_code == 400
    assert response.json()["reason"].startswith("form field 'image' holds a text value, not an uploaded file")


def test_an_uploaded_file_still_works_beside_text_options(client):
    response = client.post("/segment", files={"image": ("a.png", _png(60, 90)), "format": (None, "json"),
                                              "crf": (None, "true")})
    assert response.status_code == 200, response.text
    assert response.json()["width"] == 90


# ----------------------------------------------------------------------------- client errors log one line


def test_client_errors_log_one_line_each_without_traceback(server, client, listener):
    good = _png(40, 50)
    requests = {
        "text image value": dict(files={"image": (None, f"{listener.url}/x.jpg")}),
        "json body naming a path": dict(json={"image": "/etc/passwd"}),
        "multipart without a boundary": dict(content=b"--x\r\n", headers={"content-type": "multipart/form-data"}),
        "truncated multipart body": dict(
            content=b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n' + good[:50],
            headers={"content-type": "multipart/form-data; boundary=b"}),
        "corrupt image": dict(files={"image": ("a.png", good[: len(good) // 2])}),
        "not an image": dict(files={"image": ("a.txt", b"hello " * 30)}),
        "bad option": dict(files={"image": ("a.png", good)}, data={"crf": "maybe"}),
        "no image": dict(data={"format": "png"}, files={"other": ("x.txt", b"x")}),
    }
    start = len(server.log())
    for name, kwargs in requests.items():
        response = client.post("/segment", **kwargs)
        assert 400 <= response.status_code < 500, (name, response.text)
    client.get("/readyz")  # the last request's log lines are written before this one is answered
    log = server.log()[start:]
    assert "Traceback" not in log and "[ERROR]" not in log, log[-4000:]
    lines = [line for line in log.splitlines() if "client error: POST /segment -> 4" in line]
    assert len(lines) == len(requests), "\n".join(lines)
    for line in lines:
        assert re.search(r"-> 4\d\d \w+: \S", line), line


def test_a_server_error_keeps_its_traceback(caplog):
    """Only 4xx answers lose their tracebacks: an exception behind a 500 is logged in full."""
    import asyncio

    from c2f.serving.middleware import ErrorEnvelope, HoldTracebacks

    logger = logging.getLogger("c2f.test.held")
    logger.addFilter(HoldTracebacks())

    async def app(scope, receive, send):
        try:
            raise RuntimeError("a real bug")
        except RuntimeError:
            logger.exception("Exception on %s", scope["path"])
        status = 500 if scope["path"] == "/segment" else 400
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"error": "x", "reason": "y"}).encode()})

    async def run(path: str) -> int:
        transport = httpx.ASGITransport(app=ErrorEnvelope(app, paths=("/segment", "/foreground")))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return (await http.post(path)).status_code

    with caplog.at_level(logging.INFO):
        assert asyncio.run(run("/segment")) == 500
        assert asyncio.run(run("/foreground")) == 400
    errors = [record for record in caplog.records if record.name == "c2f.test.held"]
    assert len(errors) == 1 and errors[0].exc_info and "a real bug" in str(errors[0].exc_info[1])
    assert any("client error: POST /foreground -> 400" in record.getMessage() for record in caplog.records)


# ----------------------------------------------------------------------------- abandoned work


def _metric(client, name: str) -> dict[str, float]:
    values = {}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def _multipart_request(port: int, data: bytes, query: str) -> bytes:
    boundary = "c2fboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /segment?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def test_work_for_a_client_that_has_gone_is_abandoned(server, client):
    """A client sends a big image with CRF and GrabCut, waits until its work has begun, and leaves."""
    image = _png(1400, 1800, seed=3)  # 2.5 MP: refined at 1 MP, seconds of work
    start = len(server.log())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_multipart_request(server.port, image, "crf=true&grabcut=true"))
        deadline = time.monotonic() + WAIT_S
        while _metric(client, "c2f_requests_in_work").get("c2f_requests_in_work", 0) < 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.02)
    # The socket is closed: the client has gone while its request is in work.
    deadline = time.monotonic() + WAIT_S
    while "client_closed" not in server.log()[start:] and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = [line for line in server.log()[start:].splitlines() if "client_closed" in line]
    assert len(lines) == 1, server.log()[start:][-3000:]
    skipped = re.search(r"abandoned before (\w+) \(skipped: ([\w, ]+)\)", lines[0])
    assert skipped and "grabcut" in skipped.group(2).split(", "), lines[0]
    counts = _metric(client, "c2f_abandoned_requests_total")
    assert sum(counts.values()) >= 1 and any(f'stage="{skipped.group(1)}"' in key for key in counts), counts
    assert "Traceback" not in server.log()[start:]
    response = client.post("/segment", files={"image": ("a.png", _png(50, 60))})  # still serving
    assert response.status_code == 200


# ----------------------------------------------------------------------------- the guard alone


def test_upload_guard_reads_part_headers_as_they_stream():
    """Unit level: the refusal comes at the offending part, before the rest of the body is read."""
    import asyncio

    from c2f.serving.middleware import UploadGuard

    seen: list[bytes] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            seen.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    head = b'--b\r\nContent-Disposition: form-data; name="format"\r\n\r\npng\r\n'
    text = b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\nhttp://10.0.0.1/a.jpg\r\n'
    file = b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n\x89PNG\r\n'
    tail = b"--b--\r\n"

    async def post(chunks: list[bytes]) -> httpx.Response:
        async def stream():
            for chunk in chunks:
                yield chunk

        transport = httpx.ASGITransport(app=UploadGuard(app, paths=("/segment",)))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/segment", content=stream(),
                                   headers={"content-type": "multipart/form-data; boundary=b"})

    refused = asyncio.run(post([head, text, b"x" * 100, tail]))
    assert refused.status_code == 400 and refused.json()["error"] == "image_not_a_file"
    assert seen == [head], "the body was passed on past the text part"
    seen.clear()
    accepted = asyncio.run(post([head, file, tail]))
    assert accepted.status_code == 200 and b"".join(seen) == head + file + tail


# ----------------------------------------------------------------------------- the working-resolution setting


def test_refine_bound_setting(client):
    from c2f.inference import REFINE_MAX_PIXELS
    from c2f.serving.settings import Settings

    assert Settings.from_env({}).refine_max_pixels == REFINE_MAX_PIXELS
    assert Settings.from_env({"C2F_REFINE_MAX_PIXELS": "250000"}).refine_max_pixels == 250_000
    assert Settings.from_env({"C2F_REFINE_MAX_PIXELS": "0"}).refine_max_pixels is None  # full size
    with pytest.raises(ValueError, match="C2F_REFINE_MAX_PIXELS"):
        Settings.from_env({"C2F_REFINE_MAX_PIXELS": "-1"})
    assert client.get("/metadata").json()["refine_max_pixels"] == REFINE_MAX_PIXELS


def test_crf_bound_setting(client):
    from c2f.inference import CRF_MAX_PIXELS
    from c2f.serving.settings import Settings

    assert Settings.from_env({}).crf_max_pixels == CRF_MAX_PIXELS
    assert Settings.from_env({"C2F_CRF_MAX_PIXELS": "90000"}).crf_max_pixels == 90_000
    assert Settings.from_env({"C2F_CRF_MAX_PIXELS": "0"}).crf_max_pixels is None  # the refinement bound only
    with pytest.raises(ValueError, match="C2F_CRF_MAX_PIXELS"):
        Settings.from_env({"C2F_CRF_MAX_PIXELS": "-1"})
    assert client.get("/metadata").json()["crf_max_pixels"] == CRF_MAX_PIXELS
