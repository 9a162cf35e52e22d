"""``c2f masks --ray``: the mask stage's images as Ray tasks; journal, resume and summary stay on the driver.

:func:`c2f.masks.stage.run_mask_stage` plans the run (settings hash, cached images), fits a learned
generator, and appends each record to its journal as it arrives; this module only supplies the
:data:`~c2f.masks.stage.Runner` that runs :func:`~c2f.masks.stage.process_sample` on the cluster. GrabCut
is seeded per image key, so the outputs are byte-identical to a local run's wherever an image runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

from c2f.data.datasets import Sample
from c2f.masks.stage import Runner, init_worker, process_sample

from . import cpu_slots

IN_FLIGHT_PER_SLOT = 2
"""Tasks submitted ahead per CPU slot: enough to keep every slot busy, few enough to stop quickly."""


def _process_remote(config: Any, sample: Sample) -> dict[str, Any]:
    init_worker()  # one OpenCV thread: each task holds one CPU slot
    return process_sample(config, sample)


def ray_runner(ray: ModuleType) -> Runner:
    """A runner for ``run_mask_stage(..., runner=...)`` on the cluster ``ray`` is connected to."""
    task = ray.remote(num_cpus=1)(_process_remote)

    def run(config: Any, samples: list[Sample]) -> Iterator[dict[str, Any]]:
        config_ref = ray.put(config)  # shipped once, not with every task
        window = IN_FLIGHT_PER_SLOT * cpu_slots(ray)
        queue, running = list(reversed(samples)), []
        try:
            while queue or running:
                while queue and len(running) < window:
                    running.append(task.remote(config_ref, queue.pop()))
                done, running = ray.wait(running, num_returns=1)
                yield ray.get(done[0])
        finally:
            for ref in running:  # the driver stopped early (error, interrupt): drop the rest
                ray.cancel(ref)

    return run
