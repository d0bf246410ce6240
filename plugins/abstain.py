"""`abstain`: a vLLM logits processor (entry point group `vllm.logits_processors`) that
lets a request whose hallucination probe fired sample only its end-of-sequence token.

Semantics, per sampling step, for each batch row i held by a request r:
    if r.rid in runtime.abstained:  logits[i, :] = -inf;  logits[i, eos(r)] = 0
The probe fires inside the same step's prefill (plugins/runtime.py), before sampling,
so the request's first sampled token is its end: nothing is generated past the probe.
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
    """(rid, eos token id) of a request that asked for `abstain`, else None."""
    raw = (params.extra_args or {}).get(EXTRA_ARGS_KEY)
    if not raw or '"abstain"' not in raw:
        return None
    spec = decode(raw)
    if spec.probe is None or spec.probe.action != "abstain":
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
        if rt is None or not rt.abstained:
            return logits
        for i, (rid, eos) in self.rows.items():
            if rid in rt.abstained and i < logits.shape[0]:
                logits[i] = float("-inf")
                logits[i, eos] = 0.0
        return logits
