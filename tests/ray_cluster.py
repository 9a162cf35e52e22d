"""A throwaway multi-node Ray cluster on this machine (``ray start`` processes), for tests and benchmarks.

Each node is started in a session of its own with its own temp folder, so :meth:`LocalCluster.stop`
ends exactly the processes this cluster started (by process group, SIGTERM then SIGKILL), never
another cluster's. Token authentication uses a fresh token held in the environment, not ~/.ray.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

STOP_GRACE_S = 10.0


def free_port() -> int:
    """A TCP port free now, outside Ray's default worker port range (10002-19999)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


class LocalCluster:
    """``nodes`` Ray nodes of ``cpus_per_node`` CPUs each; ``address`` for ``ray.init`` / ``--ray``."""

    def __init__(self, root: Path, *, nodes: int = 2, cpus_per_node: int = 1, timeout_s: float = 300,
                 env: dict[str, str] | None = None) -> None:
        self.root, self.port = Path(root), free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Ray's node start waits on its own agents: a busy machine needs far more than the default time.
        self.env = {**os.environ, **(env or {}), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex,
                    "RAY_agent_register_timeout_ms": "600000", "RAY_USAGE_STATS_ENABLED": "0"}
        self.groups: list[int] = []
        try:
            for index in range(nodes):
                self._start(index, cpus_per_node, timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, index: int, cpus: int, timeout_s: float) -> None:
        temp = self.root / f"node{index}"  # one temp folder per node: each is a machine of its own
        temp.mkdir(parents=True, exist_ok=True)
        where = ["--head", "--port", str(self.port), "--include-dashboard", "false"] if index == 0 \
            else ["--address", self.address]
        command = [str(Path(sys.executable).parent / "ray"), "start", *where, "--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1",
                   "--temp-dir", str(temp), "--disable-usage-stats"]
        log = temp / "start.log"
        with log.open("w") as out:
            # A new session: every daemon this node spawns shares its process group, which stop() ends.
            proc = subprocess.Popen(command, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            self.groups.append(proc.pid)
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            raise RuntimeError(f"ray start of node {index} failed ({code}); see {log}")

    def pids(self) -> list[int]:
        """Processes still alive in this cluster's process groups."""
        alive = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.getpgid(int(entry.name)) in self.groups and _state(entry) != "Z":
                        alive.append(int(entry.name))
                except (ProcessLookupError, FileNotFoundError, PermissionError):
                    continue
        return alive

    def stop(self) -> None:
        """End every process the nodes started: SIGTERM, then SIGKILL whatever is left after a grace."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for group in self.groups:
                try:
                    os.killpg(group, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + STOP_GRACE_S
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not self.pids():
                return

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _state(proc_dir: Path) -> str:
    """A process's state letter from /proc (Z: a zombie, already dead)."""
    return (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
