"""Tensor-parallel ranks agree on which new requests they could set up, before any of
them runs a step with those requests: a request whose artifacts failed to load on one
rank gets no control on any rank (ranks that steered differently would diverge, and a
host job with collectives on some ranks only would hang), and its error is reported
once, by rank 0, with every rank's reason.

Every rank sees the same scheduled requests in the same order, so each calls the
collectives at the same steps: one all-reduce of a flag per new request (on vLLM's CPU
group of the TP ranks), and, only when a flag is set, one gather of the messages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def agree(errors_here: Sequence[Sequence[str]], group=None) -> list[list[str] | None]:
    """`errors_here[i]`: what this rank could not set up for new request i. Returns, for
    each request, None if every rank set it up, else every rank's messages."""
    if group is None:  # one rank
        return [list(e) if e else None for e in errors_here]
    flags = torch.tensor([1 if e else 0 for e in errors_here], dtype=torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=group)
    failed = flags.tolist()
    if not any(failed):
        return [None] * len(failed)
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, [list(e) for e in errors_here], group=group)
    out: list[list[str] | None] = []
    for i, f in enumerate(failed):
        msgs = [f"rank {r}: {m}" for r, errs in enumerate(everyone) for m in errs[i]]
        out.append(msgs if f else None)
    return out
