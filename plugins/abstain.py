"""`abstain`: a vLLM logits processor (entry point group `vllm.logits_processors`) that
lets a request a control ends sample only its end-of-sequence token.

Semantics, per sampling step, for each batch row i held by a request r:
    fired(r) = any(flag[k] > 0 for (flag, k) in installed.ending(r.rid))
               each control of r with `ends` says, this step, which device flag ends r
               (WorkerControl.ends_request): a hallucination probe's job-table row
               (abstain), react's fired slot (stop), or a constant for a verdict the
               host already knows
    if fired(r):  logits[i, :] = -inf;  logits[i, eos(r)] = 0
A probe scores inside the same step's prefill, before sampling, so the request's first
sampled token is its end: nothing is generated past the probe. The verdict is applied
with a device-side select, so deciding needs no read-back (the score reaches the host
later, through the result mailbox). Rows of other requests are untouched. vLLM does
not load plugin logits processors when speculative decoding is on; controls that end
requests then have no effect (the README says so).
"""

from __future__ import annotations

from typing import Any

import torch

from vsteer.plugins import entry
from vsteer.plugins.vllm_compat import logits_processor_api
from vsteer.wire import EXTRA_ARGS_KEY, decode

_Base, _Move = logits_processor_api()


def abstain_target(params: Any) -> tuple[str, int] | None:
    """(rid, eos token id) of a request with a control that may end it, else None."""
    raw = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
    if not raw:
        return None
    spec = decode(raw)
    if not spec.plugins:
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
        if rt is None or not rt.installed.enders:
            return logits
        groups: dict[int, tuple[torch.Tensor, list[tuple[int, int]]]] = {}  # by flag
        eos_of: dict[int, int] = {}  # batch row -> its end token
        for i, (rid, eos) in self.rows.items():
            if i >= logits.shape[0]:
                continue
            for flag, k in rt.installed.ending(rid):
                groups.setdefault(id(flag), (flag, []))[1].append((i, k))
                eos_of[i] = eos
        if groups:
            _end_where_fired(logits, list(groups.values()), eos_of)
        return logits


def _to(device: torch.device, rows: list) -> torch.Tensor:
    idx = torch.tensor(rows, dtype=torch.int64)
    if device.type != "cpu":
        idx = idx.pin_memory().to(device, non_blocking=True)
    return idx


def _end_where_fired(logits: torch.Tensor,
                     groups: list[tuple[torch.Tensor, list[tuple[int, int]]]],
                     eos_of: dict[int, int]) -> None:
    """logits[i] = eos-only where flag[k] > 0 for any (i, k) of any (flag, items) group;
    on the device (a row may read several flags: several controls, or n > 1)."""
    hit = torch.zeros(logits.shape[0], dtype=torch.float32, device=logits.device)  # [B]
    for flag, items in groups:
        idx = _to(logits.device, items)  # [k, 2] (batch row, flag index)
        hit.index_add_(0, idx[:, 0], (flag.index_select(0, idx[:, 1]) > 0).float())
    pairs = _to(logits.device, sorted(eos_of.items()))  # [r, 2] (batch row, eos)
    rows, eos = pairs[:, 0], pairs[:, 1]
    current = logits.index_select(0, rows)  # [r, V]
    only_eos = torch.full_like(current, float("-inf"))
    only_eos.scatter_(1, eos[:, None], 0.0)
    fired = hit.index_select(0, rows) > 0  # [r]
    logits.index_copy_(0, rows, torch.where(fired[:, None], only_eos, current))
