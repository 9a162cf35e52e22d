"""Run a server's whole process tree in the foreground and stop all of it on a stop signal.

Used by ``c2f serve``. Why a supervising wrapper rather than ``os.execvp`` into ``bentoml serve``
(which would make this PID the server's): BentoML 1.4's server process is a circus arbiter that
starts each worker with ``os.setsid()`` (its own session and process group) and stops workers with
a graceful timeout of 86400 s. On SIGTERM an idle server does stop, but a worker with a request in
flight waits for that request (uvicorn's graceful shutdown) and the arbiter waits for the worker, for
as long as the request takes; and a signal to a process group never reaches the workers. So neither
exec nor a process-group kill can promise "everything gone within seconds". This wrapper knows
every process below it (it is the parent of the server and, on Linux, the child subreaper of the
tree, so orphans stay below it), forwards the stop to the server, lets it shut down gracefully for
``grace_s`` seconds and then SIGKILLs whatever is left, by PID.

The tree gets a temporary folder of its own as ``TMPDIR``, removed once the tree is gone: BentoML
keeps each upload in a temporary file while the request runs, and a worker stopped mid-request
would otherwise leave the user's image behind in the system's temporary folder.

Only ``psutil`` (a BentoML dependency) is needed; this module imports no BentoML.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import typing as t
from contextlib import suppress

GRACE_S = 5.0
"""Seconds a stopping server gets to finish on its own before it is killed."""

KILL_WAIT_S = 3.0
_POLL_S = 0.1
_PR_SET_CHILD_SUBREAPER = 36


def _become_subreaper() -> None:
    """Linux: adopt orphaned descendants (a worker whose server died) instead of init adopting them."""
    if not sys.platform.startswith("linux"):
        return
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _stop_signals() -> list[int]:
    """SIGTERM always; SIGINT and SIGHUP unless ignored (``nohup``, ``cmd &`` in a script)."""
    wanted = [signal.SIGTERM]
    for name in ("SIGINT", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
            wanted.append(signum)
    return wanted


def run_supervised(args: t.Sequence[str], *, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None,
                   grace_s: float = GRACE_S, name: str = "server") -> int:
    """Run ``args`` until it exits or this process gets SIGTERM, SIGINT or SIGHUP; then stop its tree.

    On a stop signal the server's process gets SIGTERM; after ``grace_s`` seconds (or at once on a
    second stop signal) every process still left in the tree gets SIGKILL. Returns the server's exit
    status when it exited on its own, 0 when it was stopped by a signal. The tree's ``TMPDIR`` is a
    fresh folder inside this process's temporary folder, deleted after the tree has stopped.
    """
    import psutil

    _become_subreaper()
    received: list[int] = []

    def on_signal(signum: int, frame: t.Any) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in _stop_signals()}
    proc: subprocess.Popen | None = None
    scratch = tempfile.mkdtemp(prefix=f"c2f-{name}-")
    env = {**(os.environ if env is None else env), "TMPDIR": scratch}
    try:
        # Its own session: a terminal's Ctrl+C reaches only this process, which decides what to do.
        proc = subprocess.Popen(list(args), env=env, cwd=cwd, start_new_session=True)
        while not received:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.25)
                break
        return 0 if received else int(proc.returncode)
    finally:
        if proc is not None:
            _stop_tree(proc, received, grace_s, name, psutil)
        shutil.rmtree(scratch, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_tree(proc: subprocess.Popen, received: list[int], grace_s: float, name: str, psutil: t.Any) -> None:
    me = psutil.Process()
    tracked: set = set()
    with suppress(psutil.Error):
        tracked.update(me.children(recursive=True))
    if proc.poll() is None:
        # The server stops its own workers; signalling them too could make it respawn one.
        with suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
    else:  # it exited on its own: whatever it left behind gets the SIGTERM directly
        for process in tracked:
            with suppress(psutil.Error):
                process.terminate()
    signals_seen = len(received)
    deadline = time.monotonic() + grace_s
    while True:
        with suppress(psutil.Error):
            tracked.update(me.children(recursive=True))  # anything started meanwhile
        alive = [process for process in tracked if not _gone(process, proc, psutil)]
        if not alive:
            return
        if time.monotonic() >= deadline or len(received) > signals_seen:
            break
        time.sleep(_POLL_S)
    print(f"c2f: the {name} did not stop within {grace_s:g} s; killing {len(alive)} process(es)",
          file=sys.stderr, flush=True)
    # The server first, so that it cannot start a replacement worker.
    for process in sorted(alive, key=lambda p: p.pid != proc.pid):
        with suppress(psutil.Error):
            process.kill()
    deadline = time.monotonic() + KILL_WAIT_S
    while time.monotonic() < deadline and any(not _gone(p, proc, psutil) for p in alive):
        time.sleep(_POLL_S)


def _gone(process: t.Any, proc: subprocess.Popen, psutil: t.Any) -> bool:
    """Exited (reaped here when it is this process's child, so that no zombie stays behind)."""
    if process.pid == proc.pid:
        return proc.poll() is not None
    try:
        if not process.is_running():  # exited, or its PID now belongs to another process
            return True
        if process.status() != psutil.STATUS_ZOMBIE:
            return False
        if process.ppid() == os.getpid():
            with suppress(ChildProcessError):
                os.waitpid(process.pid, os.WNOHANG)
        return True
    except psutil.NoSuchProcess:
        return True
