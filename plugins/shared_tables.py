"""The step tables every control may share (`WorkerContext.tables`, plugins/api.py):

    slots    SlotTable: steering vectors [S+1, L, H] by key (plugins/slot_table.py); the
             shared token plan applies a request's entries (WorkerControl.steering) from
             here with the `steer_apply` op
    jobs     JobTable: per-step scoring jobs on token rows (plugins/job_table.py), run by
             the `score_jobs` op at their layer with no read-back; a job that fires may
             write a force into a slot on the device
    host     jobs due after a layer that run on the host between two layers (they read
             back, so eager engines only on CUDA: `require_host_jobs`)

A key a request's setup acquires (a slot, a weight row) stays loaded while the request
lives: the runtime pins it for the request being set up (`begin`) and every live one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vsteer.artifacts import ArtifactError
from vsteer.plugins import vllm_compat as compat
from vsteer.plugins.decision import write_force
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.slot_table import SlotTable
from vsteer.plugins.step_jobs import Job, StepJobs


class SharedTables:
    def __init__(self, slots: SlotTable, jobs: JobTable, step_jobs: StepJobs,
                 mode: compat.ForwardMode) -> None:
        self.slots, self.jobs, self._host, self._mode = slots, jobs, step_jobs, mode
        self._keys: list[str] | None = None  # the request being set up: keys it holds
        self._pinned: set[str] = set()  # ... and every key no setup may evict now

    # -- setup (per request, host side) --------------------------------------------------
    def begin(self, keys: list[str], pinned: set[str]) -> None:
        """The runtime: the next acquisitions are held by the request owning `keys`
        (appended to it); `pinned` (updated) holds every live request's keys."""
        self._keys, self._pinned = keys, pinned

    def _hold(self, key: str) -> None:
        if self._keys is None:
            raise RuntimeError("shared-table keys are acquired in WorkerControl.setup only")
        self._pinned.add(key)
        self._keys.append(key)

    def acquire(self, key: str, load: Callable[[], dict[int, np.ndarray]]) -> int:
        """The slot holding `key`'s vectors (layer -> [H]), loaded on first use."""
        slot = self.slots.acquire(key, load, self._pinned)
        self._hold(key)
        return slot

    def weight_row(self, key: str, load: Callable[[], np.ndarray]) -> int:
        """The job table's weight row holding `key`'s [H] vector, loaded on first use."""
        row = self.jobs.weight_row(key, load, self._pinned)
        self._hold(key)
        return row

    def require_host_jobs(self, what: str) -> None:
        """Host-side jobs run between two layers through the `decide` op, which calls
        back into Python: torch.compile keeps calling it every step, CUDA graphs do
        not. Raises ArtifactError (the request's control is not applied) there."""
        if self._mode.graphs:
            raise ArtifactError(f"{what} runs on the host between two layers, which CUDA "
                                "graphs do not replay: serve with --enforce-eager to use it")

    # -- plan (per step) -----------------------------------------------------------------
    def add_job(self, on_result: Callable[[float, bool], None] | None, **job) -> int:
        """A job-table row this step (JobTable.add keywords); `on_result(score, fired)`
        runs after the forward, on the result reader, before the step's report is sent.
        Returns the job's row: `jobs.out[row, 1]` is its fired flag on the device until
        the next forward (what the sampler reads through WorkerControl.ends_request)."""
        return self.jobs.add(**job, on_result=on_result)

    def host_job(self, layer: int, job: Job) -> None:
        """`job(hidden, residual) -> wrote a slot` runs after `layer` in this step."""
        self._host.due(layer, job)

    def write_force(self, source: int, target: int, coeff: dict[int, float]) -> None:
        """slot[target, l] = coeff[l] * slot[source, l] (a host job's fired force)."""
        write_force(source, target, coeff, self.slots.vectors, self.slots.inv_norms)


def zeros_for(layers: list[int], hidden_size: int) -> Callable[[], dict[int, np.ndarray]]:
    """A private slot's initial contents: zeros at `layers` (a no-op until written)."""
    def load() -> dict[int, np.ndarray]:
        z = np.zeros(hidden_size, np.float32)
        return dict.fromkeys(layers, z)
    return load

