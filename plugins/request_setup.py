"""Setting up a request's controls in the worker, once, when it is first scheduled:
artifacts loaded into slots and weight rows (verified against the model), decisions,
probes prepared. What cannot be set up is collected in
`RequestControls.errors` (the runtime makes every tensor-parallel rank agree on it
before anything runs: plugins/rank_agreement.py)."""

from __future__ import annotations

import numpy as np

from vsteer.artifacts import (
    ArtifactError,
    HallucinationProbe,
    ModelFingerprint,
    RefusalDirection,
    SteeringVector,
    read_verified,
)
from vsteer.plugins import faults
from vsteer.plugins import vllm_compat as compat
from vsteer.plugins.decision import load_decision
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.lru_index import TableFull
from vsteer.plugins.probe_control import load_probe_run
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.slot_table import SlotTable
from vsteer.wire import WireDecide, WireProbe, WireSpec


class RequestSetup:
    def __init__(self, shape: compat.RunnerShape, fingerprint: ModelFingerprint,
                 slots: SlotTable, jobs: JobTable) -> None:
        self.shape, self.fingerprint, self.slots, self.jobs = shape, fingerprint, slots, jobs

    def setup(self, spec: WireSpec, num_prompt: int, pinned: set[str]) -> RequestControls:
        """`pinned`: keys held by other live requests (never evicted for this one)."""
        rc = RequestControls(spec, num_prompt)
        pinned = set(pinned)
        for e in spec.steer:
            try:
                slot = self.slots.acquire(e.key, lambda e=e: self._load(e), pinned)
            except (ArtifactError, OSError) as err:
                rc.errors.append(f"steering vector {e.key} not applied: {err}")
                continue
            pinned.add(e.key)
            rc.add_entry(e.key, slot, e.scale, e.op, e.positions, e.window)
        if spec.decide is not None:
            self._setup_decision(rc, spec.decide, pinned)
        if spec.probe is not None:
            self._setup_probe(rc, spec.probe, pinned)
        return rc

    def release(self, rc: RequestControls) -> None:
        """Give back what setup took beyond pins (those end with the request)."""
        if rc.probe is not None:
            self.jobs.free_acc(rc.probe.acc_row)
        if rc.decision is not None:
            self.jobs.free_acc(rc.decision.acc_row)

    def _setup_decision(self, rc: RequestControls, w: WireDecide, pinned: set[str]) -> None:
        try:
            src = self.slots.acquire(w.source_key, lambda: self._load_artifact(
                w.direction_path, w.direction_sha256, "refusal", w.force_layers), pinned)
            pinned.add(w.source_key)
            zeros = np.zeros(self.shape.hidden_size, np.float32)
            dst = self.slots.acquire(w.target_key, lambda: dict.fromkeys(w.force_layers, zeros),
                                     pinned)
            pinned.add(w.target_key)
            d = load_decision(w, src, dst, self.shape.device)
            if d.condition is not None:
                d.weight_row = self._pin_weight(f"guard:{w.direction_sha256}@{w.layer}",
                                                d.condition, rc.keys, pinned)
                if d.window > 1:
                    d.acc_row = self.jobs.alloc_acc()
            else:
                self._need_host_jobs("a refusal controller")
            rc.decision = d
        except (ArtifactError, OSError, TableFull) as err:
            msg = f"refusal {w.kind} not applied: {err}"
            rc.errors.append(msg)
            return
        rc.keys.append(w.source_key)
        rc.add_entry(w.target_key, dst, 1.0, "add", "all")

    def _setup_probe(self, rc: RequestControls, w: WireProbe, pinned: set[str]) -> None:
        run = None
        try:
            run = load_probe_run(w, self.shape.device)
            if (why := run.probe.fingerprint.mismatch(self.fingerprint)) is not None:
                raise ArtifactError(why)
            self._place_probe(run, w, rc.keys, pinned)
            if w.action == "mitigate":
                run.source_slot = self.slots.acquire(w.source_key, lambda: self._load_artifact(
                    w.path, w.sha256, "truth", w.mitigate_layers), pinned)
                pinned.add(w.source_key)
                zeros = np.zeros(self.shape.hidden_size, np.float32)
                run.target_slot = self.slots.acquire(
                    w.target_key, lambda: dict.fromkeys(w.mitigate_layers, zeros), pinned)
                pinned.add(w.target_key)
        except (ArtifactError, OSError, TableFull) as err:
            if run is not None:
                self.jobs.free_acc(run.acc_row)
            msg = f"hallucination probe not applied: {err}"
            rc.errors.append(msg)
            return
        rc.probe = run
        if w.action == "mitigate":
            rc.keys.append(w.source_key)
            rc.add_entry(w.target_key, run.target_slot, 1.0, "add", "all")

    def _place_probe(self, run, w: WireProbe, keys: list[str], pinned: set[str]) -> None:
        """A linear probe's weights go into the job table (an MLP probe runs host-side)."""
        p = run.probe
        if p.probe_type == "linear":
            run.weight_row = self._pin_weight(f"probe:{w.sha256}", p.tensors["weight"], keys,
                                              pinned)
            if p.pooling == "mean":
                run.acc_row = self.jobs.alloc_acc()
        else:
            self._need_host_jobs("an MLP hallucination probe")
        if w.per_token and p.token_weight is not None:
            run.token_row = self._pin_weight(f"probe-token:{w.sha256}", p.token_weight, keys,
                                             pinned)

    def _pin_weight(self, key: str, vector: np.ndarray, keys: list[str],
                    pinned: set[str]) -> int:
        """`vector`'s row in the job table's weights, held by the request owning `keys`."""
        row = self.jobs.weight_row(key, lambda: vector, pinned)
        pinned.add(key)
        keys.append(key)
        return row

    def _need_host_jobs(self, what: str) -> None:
        require_host_jobs(self.shape.mode, what)

    def _load(self, e) -> dict[int, np.ndarray]:
        return self._load_artifact(e.path, e.sha256, e.part, e.layers)

    def _load_artifact(self, path: str, sha256: str, part: str, layers: list[int]
                       ) -> dict[int, np.ndarray]:
        """Slot contents, layer -> [H]: a vector file (part ""), a probe's truth tensors
        ("truth"), a direction's per-layer refusal tensors ("refusal"), or its layer-l
        tensor at every layer ("refusal@l")."""
        faults.maybe_fail_load(path, self.shape.tp_rank)
        data = read_verified(path, sha256)
        if not part:
            value = SteeringVector.from_safetensors_bytes(data)
            src = value.directions
        elif part == "truth":
            value = HallucinationProbe.from_safetensors_bytes(data)
            src = dict(enumerate(value.truth))
        else:
            value = RefusalDirection.from_safetensors_bytes(data)
            if part == "refusal":
                src = value.refusal
            else:
                fixed = value.refusal[int(part.split("@", 1)[1])]
                src = dict.fromkeys(range(self.shape.num_layers), fixed)
        if (why := value.fingerprint.mismatch(self.fingerprint)) is not None:
            raise ArtifactError(why)
        return {la: src[la] for la in layers if la in src}


def require_host_jobs(mode: compat.ForwardMode, what: str) -> None:
    """Host-side jobs run between two layers through the `decide` op, which calls back
    into Python: torch.compile keeps calling it every step, CUDA graphs do not."""
    if mode.graphs:
        raise ArtifactError(f"{what} runs on the host between two layers, which CUDA "
                            "graphs do not replay: serve with --enforce-eager to use it")
