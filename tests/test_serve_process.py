"""``c2f serve`` as a process: it stops completely on SIGTERM/SIGINT and starts from any directory.

Each test starts the real ``c2f serve`` command (the console script) on a free loopback port with a
small ONNX model, waits for ``/readyz``, and then signals only the ``c2f serve`` PID, as a
supervisor (systemd, Docker, Kubernetes) does. Every process the command started must be gone
within 10 s and the port must be closed. The descendants are collected before the signal, so
processes orphaned by it are still found; whatever is left is killed by PID in ``finally``.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip("httpx")
psutil = pytest.importorskip("psutil")
pytest.importorskip("bentoml")

from PIL import Image  # noqa: E402

from servers import free_port, wait_until_ready  # noqa: E402

pytestmark = pytest.mark.slow  # real servers stopped by signals

STARTUP_S = 180
STOP_S = 10


def _c2f_command() -> list[str]:
    """The installed ``c2f`` script; never ``python -m``, which would put the cwd on sys.path."""
    script = Path(sys.executable).with_name("c2f")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; del sys.path[0]; from c2f.cli.main import cli; cli(prog_name='c2f')"]


class Serve:
    """One ``c2f serve`` subprocess and the processes it started."""

    def __init__(self, model: Path, cwd: Path, log_path: Path, extra_env: dict[str, str] | None = None,
                 sigint_ignored: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("C2F_")}
        env.update(BENTOML_DO_NOT_TRACK="True", PYTHONUNBUFFERED="1", C2F_THREADS="1", OMP_NUM_THREADS="1")
        env.update(extra_env or {})
        # Its own session, so that nothing but the test's own signals reach it. SIGINT is set as a
        # terminal user's shell leaves it, or ignored as `nohup` and `cmd &` in a script leave it,
        # whatever the test run itself inherited.
        disposition = signal.SIG_IGN if sigint_ignored else signal.SIG_DFL
        self.proc = subprocess.Popen(
            [*_c2f_command(), "serve", "--model", str(model), "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
        )
        self.seen: set[psutil.Process] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def collect(self) -> list[psutil.Process]:
        """The c2f serve process and all its descendants now, added to those seen before."""
        try:
            root = psutil.Process(self.proc.pid)
            self.seen |= {root, *root.children(recursive=True)}
        except psutil.NoSuchProcess:
            pass
        return sorted(self.seen, key=lambda p: p.pid)

    def wait_ready(self) -> None:
        wait_until_ready(self.proc, self.url, STARTUP_S, self.log)
        self.collect()

    def signal_and_check_gone(self, signum: int) -> None:
        """Send ``signum`` to the c2f serve PID only; all processes must be gone within STOP_S."""
        processes = self.collect()
        assert len(processes) >= 3, processes  # c2f serve, BentoML's server, its worker
        sent = time.monotonic()
        os.kill(self.proc.pid, signum)
        try:
            self.proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            pass
        _, alive = psutil.wait_procs(processes, timeout=max(0.1, STOP_S - (time.monotonic() - sent)))
        alive = [p for p in alive if not _zombie(p)]
        took = time.monotonic() - sent
        described = [_describe(p) for p in alive]
        name = signal.Signals(signum).name
        assert not alive, f"still running {took:.1f} s after {name}: {described}\n{self.log()[-3000:]}"
        assert self.proc.poll() is not None
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(2)
            assert sock.connect_ex(("127.0.0.1", self.port)) != 0, f"port {self.port} still accepts connections"

    def kill_all(self) -> None:
        """Cleanup: SIGKILL every process seen, by PID (psutil checks it is still the same process)."""
        for process in self.collect():
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(list(self.seen), timeout=10)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()


def _zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _describe(process: psutil.Process) -> str:
    try:
        return f"{process.pid} {' '.join(process.cmdline())[:120]}"
    except psutil.Error:
        return str(process.pid)


def _png(height: int, width: int) -> bytes:
    """A smooth scene with a disc: small as PNG however large it is."""
    import cv2

    y, x = np.mgrid[0:height, 0:width]
    image = np.dstack([x * 200 // width, y * 200 // height, np.full_like(x, 90)]).astype(np.uint8)
    cv2.circle(image, (width // 2, height // 2), min(height, width) // 4, (250, 230, 30), -1)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def serve(semantic_onnx, tmp_path):
    started: list[Serve] = []

    def start(cwd: Path | None = None, sigint_ignored: bool = False, **env: str) -> Serve:
        server = Serve(semantic_onnx, cwd or tmp_path, tmp_path / f"serve{len(started)}.log", env, sigint_ignored)
        started.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.kill_all()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_stops_completely_on_signal(serve, signum):
    server = serve()
    server.signal_and_check_gone(signum)


def test_server_started_with_sigint_ignored_keeps_serving_on_sigint(serve):
    """Started as `nohup c2f serve` or `c2f serve &` in a script, it ignores SIGINT, as its shell
    asked; SIGTERM still stops everything."""
    server = serve(sigint_ignored=True)
    os.kill(server.proc.pid, signal.SIGINT)
    time.sleep(2)
    assert server.proc.poll() is None, server.log()[-3000:]
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200
    server.signal_and_check_gone(signal.SIGTERM)


def test_busy_server_stops_completely_on_sigterm(serve, tmp_path):
    """A request in flight (CRF and GrabCut on a large image) does not keep anything running."""
    # At full size (no working-resolution bound) CRF and GrabCut on 12 MP take minutes: the request
    # is surely still in flight when the signal comes, and long after c2f serve's 5 s of grace.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    server = serve(C2F_REFINE_MAX_PIXELS="0", C2F_CRF_MAX_PIXELS="0", TMPDIR=str(scratch))
    data = _png(3000, 4000)
    outcome: dict[str, object] = {}

    def request() -> None:
        try:
            outcome["response"] = httpx.post(f"{server.url}/segment?crf=true&grabcut=true",
                                             files={"image": ("big.png", data)}, timeout=300)
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    time.sleep(3)  # upload, decode and the model call; CRF and GrabCut take far longer
    assert thread.is_alive(), f"the request finished before the signal: {outcome}"
    uploads = [p for p in scratch.rglob("*") if p.is_file()]
    assert uploads, "the upload in flight is kept in a temporary file inside c2f serve's own TMPDIR"
    server.signal_and_check_gone(signal.SIGTERM)
    thread.join(timeout=30)
    assert "response" not in outcome or outcome["response"].status_code != 200  # type: ignore[union-attr]
    assert not list(scratch.iterdir()), "the killed worker's temporary files are removed with the tree"


def test_starts_from_a_directory_holding_another_c2f_package(serve, tmp_path):
    """BentoML puts its working directory first on sys.path; a folder named c2f there must not matter."""
    shadow = tmp_path / "parent_of_a_clone"
    (shadow / "c2f").mkdir(parents=True)
    (shadow / "c2f" / "__init__.py").write_text("# not the c2f package\n")
    server = serve(cwd=shadow)
    with httpx.Client(base_url=server.url, timeout=120) as http:
        assert http.get("/readyz").status_code == 200
        response = http.post("/segment", files={"image": ("scene.png", _png(120, 160))})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        mask = np.array(Image.open(io.BytesIO(response.content)))
        assert mask.shape == (120, 160)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        meta = http.get("/metadata").json()
        import c2f

        assert meta["c2f_version"] == c2f.__version__
    server.signal_and_check_gone(signal.SIGTERM)
