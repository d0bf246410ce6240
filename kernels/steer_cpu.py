"""CPU implementation of `steer_apply`, checked against `steer_apply_reference`.

The reference recomputes everything at every layer. Here the step-invariant work runs
once per step (keyed by the step serial in `step[1]`): which tokens are steered, and,
when every entry of the step is an `add`, each row's summed delta for all layers
(Σ_k c_k V[s_k] as [L, R, H] fp32). Each layer is then one fused add, computed in fp32
and rounded once into hidden's dtype. Steps with `ablate` / `add_normalized` entries
run the reference.

Semantics: identical to steer_reference.py, except that several `add` entries are
summed before being added (fp32 associativity, well inside the bf16 tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vsteer.kernels.steer_reference import OP_ADD, steer_apply_reference


@dataclass
class _StepPlan:
    serial: int
    sel: torch.Tensor  # [n] indices of steered tokens
    span: tuple[int, int] | None  # (a, b) when the steered tokens are exactly a..b-1
    tok_rows: torch.Tensor  # [n] index into row_delta's R axis
    row_delta: torch.Tensor | None  # [L, R, H] fp32; None: the step has non-add entries


_plans: dict[int, _StepPlan] = {}  # token_row buffer address -> plan of its current step


def _plan(token_row, row_slot, row_scale, row_op, vectors, num_tokens, serial) -> _StepPlan:
    key = token_row.data_ptr()
    plan = _plans.get(key)
    if plan is not None and plan.serial == serial:
        return plan
    rows = token_row[:num_tokens]
    sel = torch.nonzero(rows >= 0).squeeze(1)  # [n]
    n = sel.numel()
    first, last = int(sel[0]), int(sel[-1])
    span = (first, first + n) if last - first + 1 == n else None
    uniq, tok_rows = torch.unique(rows[sel].long(), return_inverse=True)  # [R], [n]
    slots = row_slot[uniq].long()  # [R, K]
    used = slots > 0
    kmax = max(int(used.sum(dim=1).max()), 1)  # rows are filled from entry 0
    slots, used = slots[:, :kmax], used[:, :kmax]
    row_delta = None
    if bool((row_op[uniq][:, :kmax][used] == OP_ADD).all()):
        coeff = row_scale[uniq][:, :kmax] * used  # [R, K]
        v = vectors[slots].float()  # [R, K, L, H]; slot 0 and absent layers are zeros
        row_delta = torch.einsum("rk,rklh->lrh", coeff, v).contiguous()  # [L, R, H]
    plan = _StepPlan(serial, sel, span, tok_rows, row_delta)
    _plans[key] = plan
    return plan


def steer_apply_cpu(
    hidden: torch.Tensor,  # [T, H], modified in place
    residual: torch.Tensor | None,
    token_row: torch.Tensor,  # [>=T] int32
    row_slot: torch.Tensor,  # [R, K] int32
    row_scale: torch.Tensor,  # [R, K] float32
    row_op: torch.Tensor,  # [R, K] int32
    vectors: torch.Tensor,  # [S, L, H]
    inv_norms: torch.Tensor,  # [S, L] float32
    step: torch.Tensor,  # [2] int64 CPU: (steered tokens, step serial)
    layer: int,
) -> None:
    if int(step[0]) == 0:
        return
    plan = _plan(token_row, row_slot, row_scale, row_op, vectors, hidden.shape[0],
                 int(step[1]))
    if plan.row_delta is None:
        steer_apply_reference(hidden, residual, token_row, row_slot, row_scale, row_op,
                              vectors, inv_norms, step, layer)
        return
    delta = plan.row_delta[layer]  # [R, H]
    if delta.shape[0] > 1:
        delta = delta.index_select(0, plan.tok_rows)  # [n, H]
    if plan.span is not None:
        a, b = plan.span
        hidden[a:b].add_(delta)  # fp32 math, one rounding into hidden's dtype
    else:
        h = hidden.index_select(0, plan.sel).float().add_(delta)
        hidden.index_copy_(0, plan.sel, h.to(hidden.dtype))
