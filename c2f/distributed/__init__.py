"""Running c2f's batch jobs on a Ray cluster (optional extra ``c2f[ray]``).

Only the modules of this package import Ray, and only when a ``--ray`` run starts, so the rest of c2f
neither needs nor loads it. Every node must have c2f installed (same version) and see the model file and
the input and output folders at the same paths (a shared filesystem).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

LOCAL = "local"
"""The ``--ray`` value for "start a local Ray cluster for this run" (no address given)."""

RAY_MISSING = 'Ray is not installed; install the extra: pip install "c2f[ray]"'


class RayMissingError(RuntimeError):
    """Ray (``ray[data]``) is not installed; the message names the extra to install."""


def require_ray() -> ModuleType:
    """Import Ray (with Ray Data), or raise :class:`RayMissingError` with a one-line message."""
    try:
        import ray
        import ray.data  # noqa: F401  (the segment job needs Ray Data; fail here, not mid-run)
    except ImportError:
        raise RayMissingError(RAY_MISSING) from None
    return ray


@contextmanager
def connected(address: str, *, progress: bool = True) -> Iterator[ModuleType]:
    """Connect this process (the driver) to the cluster at ``address``, or start a local one for ``LOCAL``.

    Disconnects on exit: a local cluster stops with it, a remote one keeps running. Ray Data's own
    progress bars follow ``progress``.
    """
    ray = require_ray()
    if address == LOCAL:  # a cluster of this machine only, for this run: no dashboard to serve
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = progress
        yield ray
    finally:
        ray.shutdown()


def cpu_slots(ray: ModuleType) -> int:
    """Whole CPUs of the cluster (at least one): how many one-CPU workers it runs at once."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def gpu_count(ray: ModuleType) -> int:
    """Whole GPUs of the cluster."""
    return int(ray.cluster_resources().get("GPU", 0))
