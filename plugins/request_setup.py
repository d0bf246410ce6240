"""Setting up a request's shared token plan in the worker, once, when it is first
scheduled: each steering entry's vectors loaded into a slot (verified against the
model). What cannot be set up is collected in `RequestControls.errors` (the runtime
makes every tensor-parallel rank agree on it before anything runs:
plugins/rank_agreement.py). The controls' own setup follows (installed_controls.py)."""

from __future__ import annotations

from vsteer.artifacts import ArtifactError, ModelFingerprint
from vsteer.plugins.artifact_slots import slot_contents
from vsteer.plugins.lru_index import TableFull
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.slot_table import SlotTable
from vsteer.wire import WireSpec


class RequestSetup:
    def __init__(self, fingerprint: ModelFingerprint, slots: SlotTable, tp_rank: int) -> None:
        self.fingerprint, self.slots, self.tp_rank = fingerprint, slots, tp_rank

    def setup(self, spec: WireSpec, num_prompt: int, pinned: set[str]) -> RequestControls:
        """`pinned`: keys held by other live requests (never evicted for this one); the
        request's own keys are added to it."""
        rc = RequestControls(spec, num_prompt)
        for e in spec.steer:
            try:
                slot = self.slots.acquire(e.key, lambda e=e: slot_contents(
                    e.path, e.sha256, e.part, e.layers, self.fingerprint, self.tp_rank),
                    pinned)
            except (ArtifactError, OSError, TableFull) as err:
                rc.errors.append(f"steering vector {e.key} not applied: {err}")
                continue
            pinned.add(e.key)
            rc.add_entry(e.key, slot, e.scale, e.op, e.positions, e.window)
        return rc
