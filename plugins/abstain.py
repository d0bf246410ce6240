"""`abstain`: a vLLM logits processor (entry point group `vllm.logits_processors`) that
lets a request whose hallucination probe fired sample only its end-of-sequence token.

Semantics, per sampling step, for each batch row i held by a request r:
    fired(r) = r.rid in runtime.abstained                 (known on the host: earlier
                                                            steps, host-side probes)
               or out[runtime.abstain_jobs[r.rid], FIRED]  (this step's table job, read
                                                            on the device)
               or flag[k] > 0 for (flag, k) = installed.enders[r.rid]   (an installed
                   control that ends requests, e.g. react's stop; read on the device)
    if fired(r):  logits[i, :] = -inf;  logits[i, eos(r)] = 0
The probe scores inside the same step's prefill (plugins/runtime.py), before sampling,
so the request's first sampled token is its end: nothing is generated past the probe.
The table job's verdict is applied with a device-side select, so deciding needs no
read-back of the score (it reaches the host later, through the result mailbox).
Rows of other requests are untouched. vLLM does not load plugin logits processors
when speculative decoding is on; abstain then has no effect (the README says so).
"""

from __future__ import annotations

from typing import Any

import torch

from vsteer.plugins import entry
from vsteer.plugins.vllm_compat import logits_processor_api
from vsteer.wire import EXTRA_ARGS_KEY, decode

_Base, _Move = logits_processor_api()


def abstain_target(params: Any) -> tuple[str, int] | None:
    """(rid, eos token id) of a request that asked for `abstain` or has an installed
    control that may end it (WorkerControl.ends_request), else None."""
    raw = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
    if not raw:
        return None
    spec = decode(raw)
    if not spec.plugins and (spec.probe is None or spec.probe.action != "abstain"):
        return None
    eos = params.eos_token_id
    if eos is None and params.all_stop_token_ids:
        eos = min(params.all_stop_token_ids)
    return (spec.rid, int(eos)) if eos is not None else None


class AbstainLogitsProcessor(_Base):
    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.rows: dict[int, tuple[str, int]] = {}  # batch row -> (rid, eos)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes greedy picks

    def update_state(self, batch_update: Any) -> None:
        if batch_update is None:
            return
        for i in batch_update.removed:
            self.rows.pop(i, None)
        for i, params, _prompt, _out in batch_update.added:
            target = abstain_target(params)
            if target is None:
                self.rows.pop(i, None)
            else:
                self.rows[i] = target
        for a, b, kind in batch_update.moved:
            ra, rb = self.rows.pop(a, None), self.rows.pop(b, None)
            if ra is not None:
                self.rows[b] = ra
            if rb is not None and kind == _Move.SWAP:
                self.rows[a] = rb

    def apply(self, logits: torch.Tensor) -> torch.Tensor:  # [B, V]
        if not self.rows:
            return logits
        rt = entry.runtime()
        enders = rt.installed.enders if rt is not None else {}
        if rt is None or not (rt.abstained or rt.abstain_jobs or enders):
            return logits
        pending: list[tuple[int, int, int]] = []  # (batch row, eos, job row)
        ending: dict[int, list[tuple[int, int, int]]] = {}  # flag tensor -> (row, eos, idx)
        flags: dict[int, torch.Tensor] = {}
        for i, (rid, eos) in self.rows.items():
            if i >= logits.shape[0]:
                continue
            if rid in rt.abstained:
                logits[i] = float("-inf")
                logits[i, eos] = 0.0
            elif (j := rt.abstain_jobs.get(rid)) is not None:
                pending.append((i, eos, j))
            if (e := enders.get(rid)) is not None:
                flags[id(e[0])] = e[0]
                ending.setdefault(id(e[0]), []).append((i, eos, e[1]))
        if pending:
            _mask_where_fired(logits, pending, rt.jobs.out[:, 1])
        for key, items in ending.items():
            _mask_where_fired(logits, items, flags[key])
        return logits


def _mask_where_fired(logits: torch.Tensor, pending: list[tuple[int, int, int]],
                      flag: torch.Tensor) -> None:
    """logits[i] = eos-only where flag[j] > 0 for each (i, eos, j); on the device."""
    idx = torch.tensor(pending, dtype=torch.int64)  # [k, 3]
    if logits.device.type != "cpu":
        idx = idx.pin_memory().to(logits.device, non_blocking=True)
    rows, eos, jobs = idx[:, 0], idx[:, 1], idx[:, 2]
    fired = flag.index_select(0, jobs) > 0  # [k]
    current = logits.index_select(0, rows)  # [k, V]
    only_eos = torch.full_like(current, float("-inf"))
    only_eos.scatter_(1, eos[:, None], 0.0)
    logits.index_copy_(0, rows, torch.where(fired[:, None], only_eos, current))
