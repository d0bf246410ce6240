"""CPU implementation of `steer_apply`, checked against `steer_apply_reference`.

The reference recomputes everything at every layer. Here:
  - once per step (keyed by the step serial `step[1]`): which tokens are steered and
    by which rows;
  - once per row (kept while the rows epoch `step[2]` is unchanged): the row's summed
    delta for every layer, Σ_k c_k V[s_k] as [L, H] fp32, for rows of `add` entries;
  - when the step is small (decode): every steered token's delta for every layer,
    gathered as [L, n, H] and kept while the token → row map and the epoch stay the
    same (steady decode keeps the batch order, so this is rarely redone);
  - per layer: one fused add, computed in fp32 and rounded once into hidden's dtype.
Steps with `ablate` / `add_normalized` entries run the reference.

Semantics: identical to steer_reference.py, except that several `add` entries are
summed before being added (fp32 associativity, well inside the bf16 tolerance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from vsteer.kernels.steer_reference import OP_ADD, steer_apply_reference


@dataclass
class _State:
    serial: int = -1  # step the token selection below belongs to
    sel: torch.Tensor | None = None  # [n] steered token indices
    span: tuple[int, int] | None = None  # (a, b) when the steered tokens are exactly a..b-1
    rows: torch.Tensor | None = None  # [n] row of each steered token
    single_row: int = -1  # the row, when every steered token uses the same one
    add_only: bool = False
    epoch: int = -1  # rows epoch the cached deltas belong to
    delta: torch.Tensor | None = None  # [L, R, H] fp32 row deltas
    token_delta: torch.Tensor | None = None  # [L, n, H] this step's per-token deltas
    ready: set[int] = field(default_factory=set)  # rows with a valid delta
    non_add: set[int] = field(default_factory=set)  # rows that need the reference


_seconds = [0.0]  # time spent inside steer_apply_cpu (this process), for metrics


def kernel_seconds() -> float:
    return _seconds[0]


_states: dict[tuple[int, int, int], _State] = {}  # (token_row, row_slot, vectors) addresses
GATHER_ALL_LAYERS_MAX_TOKENS = 512  # above this (long prefills), gather per layer


def _prepare(st: _State, token_row, row_slot, row_scale, row_op, vectors, num_tokens,
             serial: int, epoch: int) -> None:
    shape = (vectors.shape[1], row_slot.shape[0], vectors.shape[2])  # [L, R, H]
    if st.delta is not None and tuple(st.delta.shape) != shape:
        st.delta, st.token_delta, st.rows, st.epoch = None, None, None, -1  # other tables
    same_epoch = st.epoch == epoch
    if not same_epoch:
        st.epoch, st.ready, st.non_add = epoch, set(), set()
    rows = token_row[:num_tokens]
    sel = torch.nonzero(rows >= 0).squeeze(1)  # [n]
    n = sel.numel()
    first, last = int(sel[0]), int(sel[-1])
    new_rows = rows[sel].long()
    st.serial, st.sel = serial, sel
    st.span = (first, first + n) if last - first + 1 == n else None
    if (same_epoch and st.token_delta is not None and st.rows is not None
            and torch.equal(new_rows, st.rows)):
        return  # same rows for the same tokens as the previous step: keep everything
    st.rows = new_rows
    uniq = torch.unique(st.rows).tolist()
    st.single_row = uniq[0] if len(uniq) == 1 else -1
    missing = [r for r in uniq if r not in st.ready and r not in st.non_add]
    if missing:
        idx = torch.tensor(missing)
        slots = row_slot[idx].long()  # [m, K]
        used = slots > 0
        is_add = ((row_op[idx] == OP_ADD) | ~used).all(dim=1)  # [m]
        for r, ok in zip(missing, is_add.tolist(), strict=True):
            (st.ready if ok else st.non_add).add(r)
        add_idx = idx[is_add]
        if add_idx.numel():
            if st.delta is None:
                st.delta = torch.zeros(shape)
            coeff = row_scale[add_idx] * used[is_add]  # [m', K]
            v = vectors[slots[is_add]].float()  # [m', K, L, H]; slot 0 / absent layers: 0
            st.delta[:, add_idx] = torch.einsum("rk,rklh->lrh", coeff, v)
    st.add_only = not any(r in st.non_add for r in uniq)
    st.token_delta = None
    if st.add_only and st.single_row < 0 and n <= GATHER_ALL_LAYERS_MAX_TOKENS:
        st.token_delta = st.delta.index_select(1, st.rows)  # [L, n, H]


def steer_apply_cpu(
    hidden: torch.Tensor,  # [T, H], modified in place
    residual: torch.Tensor | None,
    token_row: torch.Tensor,  # [>=T] int32
    row_slot: torch.Tensor,  # [R, K] int32
    row_scale: torch.Tensor,  # [R, K] float32
    row_op: torch.Tensor,  # [R, K] int32
    vectors: torch.Tensor,  # [S, L, H]
    inv_norms: torch.Tensor,  # [S, L] float32
    step: torch.Tensor,  # [3] int64 CPU: (steered tokens, step serial, rows epoch)
    layer: int,
) -> None:
    active, serial, epoch = step.tolist()[:3]
    if active == 0:
        return
    t0 = time.perf_counter()
    try:
        _apply(hidden, residual, token_row, row_slot, row_scale, row_op, vectors, inv_norms,
               step, layer, serial, epoch)
    finally:
        _seconds[0] += time.perf_counter() - t0


def _apply(hidden, residual, token_row, row_slot, row_scale, row_op, vectors, inv_norms, step,
           layer, serial, epoch) -> None:
    key = (token_row.data_ptr(), row_slot.data_ptr(), vectors.data_ptr())
    st = _states.get(key)
    if st is None:
        st = _states[key] = _State()
    if st.serial != serial:
        _prepare(st, token_row, row_slot, row_scale, row_op, vectors, hidden.shape[0],
                 serial, epoch)
    if not st.add_only:
        steer_apply_reference(hidden, residual, token_row, row_slot, row_scale, row_op,
                              vectors, inv_norms, step, layer)
        return
    if st.token_delta is not None:
        d = st.token_delta[layer]  # [n, H]
    elif st.single_row >= 0:
        d = st.delta[layer, st.single_row]  # [H], broadcast over the tokens
    else:
        d = st.delta[layer].index_select(0, st.rows)  # [n, H]
    if st.span is not None:
        a, b = st.span
        hidden[a:b].add_(d)  # fp32 math, one rounding into hidden's dtype
    else:
        h = hidden.index_select(0, st.sel).float().add_(d)
        hidden.index_copy_(0, st.sel, h.to(hidden.dtype))
