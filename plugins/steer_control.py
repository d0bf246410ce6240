"""`steer`: activation steering with stored vectors, as a control on the Control API
(plugins/api.py):

    "control": {"steer": [{"vector": "formal", "scale": 4.0 | "kl": 0.5,
                           "layers": [10, 12], "positions": "all" | {"prompt": [0, 4]},
                           "op": "add" | "ablate" | "add_normalized"}, ...]}

It has no worker half of its own: each entry becomes one entry of the shared token plan
(`Resolution.steer`), which every worker's runtime loads into the slot table and the
`steer_apply` op applies to the request's tokens at the entry's positions
(plugins/request_setup.py, plugins/step_planner.py: `RowWrite`). Refusal's force and
ablate modes use the same table. The response echoes each entry as applied (the scale a
`kl` dose resolved to, the layers used).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, RootModel

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext
from vsteer.server.control_protocol import SteerEntry
from vsteer.wire import MAX_STEER_ENTRIES, WireSteer, steer_entry


class SteerRequest(RootModel[Annotated[list[SteerEntry],
                                       Field(max_length=MAX_STEER_ENTRIES)]]):
    """control.steer: a list of entries, applied in order."""


class Steer(Control):
    name = "steer"
    schema = SteerRequest

    def resolve(self, request: SteerRequest, ctx: ResolveContext) -> Resolution:
        from vsteer.server.artifact_access import check_scale
        from vsteer.server.dose_resolver import scale_for_kl

        assert ctx.load_artifact is not None
        entries: list[WireSteer] = []
        applied: list[dict[str, Any]] = []
        windowed = False
        for i, entry in enumerate(request.root):
            param = f"{ctx.param}[{i}]"
            stored = ctx.load_artifact("vector", entry.vector, f"{param}.vector")
            layers = self._layers(entry.layers, stored.value.layers, entry.vector,
                                  f"[{i}].layers", ctx)
            scale = entry.scale if entry.kl is None else scale_for_kl(
                entry, stored.value, layers, param)
            check_scale(scale, ctx.max_abs_scale, f"{param}.scale")
            applied.append({"vector": entry.vector, "scale": scale, "layers": layers,
                            "positions": entry.positions_json(), "op": entry.op})
            if entry.kl is not None:
                applied[-1]["kl"] = entry.kl
            if scale == 0.0:
                continue  # scale 0 is no steering, bit for bit: nothing reaches the kernel
            positions, window = entry.wire_positions()
            windowed |= positions != "all"
            entries.append(steer_entry(entry.vector, stored.sha256, str(stored.path), layers,
                                       scale, entry.op, positions, window=window))
        # Steering on anything but `all` positions: whether a position was steered depends
        # on where that request's prompt ended (a later prompt may extend it with the
        # reply, whose positions were `generated` there), so its KV is never shared.
        return Resolution(None, applied, private_prefill=windowed, steer=entries)

    @staticmethod
    def _layers(requested: list[int] | None, own: list[int], name: str, field: str,
                ctx: ResolveContext) -> list[int]:
        """The entry's layers (`field`: their path under control.steer), checked."""
        if requested is None:
            return list(own)
        n = ctx.fingerprint.num_layers
        for la in requested:
            if not 0 <= la < n:
                raise ctx.error(f"layer {la} is out of range (model has {n} layers, "
                                f"0..{n - 1})", field, "layer_out_of_range")
            if la not in own:
                raise ctx.error(f"vector {name!r} has no direction at layer {la} (it has "
                                f"{own})", field, "layer_not_in_artifact")
        return sorted(set(requested))

    def worker(self, ctx: WorkerContext) -> None:
        return None  # the shared token plan applies its entries (no worker half)


def control() -> Steer:
    return Steer()
