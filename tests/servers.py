"""A c2f service on a loopback port in a child process: for the serving tests and the load test.

Starts ``python -m bentoml serve c2f.serving.service:Segmenter``, logs to a file, and waits for
BentoML's ``/readyz``, which turns ready only once the model has loaded. Stopping it SIGTERMs the
server and then SIGKILLs, by PID, every process of its tree still alive: BentoML starts each worker
in its own session, so a signal to the server's process group would never reach the workers (the
same reason :mod:`c2f.serving.process` stops ``c2f serve`` by PID).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable, Iterator

import httpx
import psutil

from c2f.serving.process import _gone

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
STOP_GRACE_S = 20.0
"""Seconds a stopping server gets to stop its workers before the tree is killed."""


def free_port() -> int:
    """A loopback port that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(proc: subprocess.Popen, url: str, timeout: float, log: Callable[[], str]) -> None:
    """Poll ``url/readyz`` until it answers 200; RuntimeError with the log's tail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log()[-3000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log()[-3000:]}")


class LocalServer:
    """The service with the given ``C2F_*`` settings; inherited ``C2F_*`` variables are dropped."""

    def __init__(self, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.log_when_ready = ""
        self._log = open(self.log_path, "wb")
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("C2F_")}
        scratch = self.log_path.parent / f"tmp-{self.port}"  # BentoML's upload files: not in the system /tmp
        scratch.mkdir(exist_ok=True)
        full_env.update({"BENTOML_DO_NOT_TRACK": "True", "PYTHONUNBUFFERED": "1", "TMPDIR": str(scratch), **env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", "c2f.serving.service:Segmenter",
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=_PACKAGE_ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._tree: set[psutil.Process] = set()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _track(self) -> None:
        """Remember the server's descendants: once it has exited, its orphans are no longer below it."""
        with suppress(psutil.Error):
            self._tree.update(psutil.Process(self.proc.pid).children(recursive=True))

    def wait_ready(self, timeout: float = 180) -> None:
        """Block until ``/readyz`` answers 200; stop the server and raise with its log otherwise."""
        try:
            wait_until_ready(self.proc, self.url, timeout, self.log)
        except RuntimeError:
            self.stop()
            raise
        self.log_when_ready = self.log()
        self._track()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the server; after ``grace_s`` SIGKILL every process of its tree still alive, by PID."""
        self._track()
        if self.proc.poll() is None:
            # The server stops its own workers; signalling them too could make it respawn one.
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while True:
            self._track()  # workers started meanwhile
            alive = [p for p in self._tree if not _gone(p, self.proc, psutil)]
            if self.proc.poll() is not None and not alive:
                break
            if time.monotonic() >= deadline:
                # The server first, so that it cannot start a replacement worker.
                with suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGKILL)
                for process in alive:
                    with suppress(psutil.Error):
                        process.kill()
                break
            time.sleep(0.1)
        self.proc.wait(timeout=10)
        self._log.close()


@contextmanager
def serving(log_path: Path, env: dict[str, str]) -> Iterator[LocalServer]:
    """A ready :class:`LocalServer`, stopped (its whole tree) on the way out."""
    server = LocalServer(log_path, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
