"""Plain-torch reference of `score_jobs` (the oracle for the Triton kernel): in-forward
decisions read from a fixed-capacity device table, so a layer launches the same work
every step whatever the batch holds (CUDA-graph safe).

A job is one row of `jobs_i` [J, NI] int32 / `jobs_f` [J, NF] float32 / `coeff` [J, L].
Semantics, at layer `layer`, for every job j with jobs_i[j, LAYER] == layer
(x[t] = hidden[t] + residual[t], fp32; w = weights[WEIGHT_ROW]):
    if POOL == MEAN:
        s = Σ_{t in [START, END)} x[t]
        if ACC_ROW >= 0:  acc[ACC_ROW] = s if FIRST else acc[ACC_ROW] + s;  s = acc[ACC_ROW]
        if not FINAL:  continue                      # more prompt chunks to come
        v = s / COUNT
    else:  v = x[END - 1]                            # POOL_LAST (also one token)
    score = v·w / max(‖v‖, 1e-12)   if KIND == COS   (refusal guard: cosine)
            sigmoid(v·w + BIAS)      if KIND == SIGMOID   (linear probe)
    fired = score >= THRESHOLD
    out[j] = (score, fired)
    if fired and TARGET >= 0:  for each l with c = coeff[j, l] != 0:
        vectors[TARGET, l] = c · vectors[SOURCE, l]           (rounded once)
        inv_norms[TARGET, l] = inv_norms[SOURCE, l] / |c|
Jobs at other layers, and rows with LAYER = -1, are untouched (out included).
`layer_index` [L + 1 + J] int32 lists the same jobs by layer (build_layer_index): the
jobs at layer l are layer_index[L + 1 + k] for k in [layer_index[l], layer_index[l + 1]).
It changes nothing in the semantics; the GPU kernel reads it so that a layer costs
O(jobs at that layer). The reference and the CPU kernel scan LAYER instead.
The force acts at layers after `layer` in this very forward pass: the caller must put
every force layer above the job's layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# jobs_i columns
LAYER, START, END, KIND, POOL, WEIGHT_ROW, ACC_ROW, FIRST, FINAL, SOURCE, TARGET = range(11)
NUM_INT_COLUMNS = 11
# jobs_f columns
BIAS, THRESHOLD, COUNT = range(3)
NUM_FLOAT_COLUMNS = 3

KIND_COS = 0
KIND_SIGMOID = 1
POOL_LAST = 0
POOL_MEAN = 1


def build_layer_index(layers: Sequence[int], num_layers: int, capacity: int) -> np.ndarray:
    """`layers[j]` = job row j's layer (-1: inactive, not indexed) -> the
    [L + 1 + capacity] int32 index: segment starts by layer, then job rows by layer."""
    index = np.zeros(num_layers + 1 + capacity, np.int32)
    la = np.asarray(layers, np.int64)
    rows = np.flatnonzero(la >= 0)  # active job rows
    if rows.size:
        active = la[rows]
        if active.max() >= num_layers:
            raise ValueError(f"job layers must lie in [0, {num_layers})")
        counts = np.bincount(active, minlength=num_layers)  # [L]
        np.cumsum(counts, out=index[1:num_layers + 1])
        index[num_layers + 1:num_layers + 1 + rows.size] = rows[np.argsort(active,
                                                                           kind="stable")]
    return index


def score_jobs_reference(
    hidden: torch.Tensor,  # [T, H]
    residual: torch.Tensor | None,  # [T, H] or None
    jobs_i: torch.Tensor,  # [J, NUM_INT_COLUMNS] int32
    jobs_f: torch.Tensor,  # [J, NUM_FLOAT_COLUMNS] float32
    coeff: torch.Tensor,  # [J, L] float32
    layer_index: torch.Tensor,  # [L + 1 + J] int32 (not read: see the module docstring)
    weights: torch.Tensor,  # [W, H] float32
    acc: torch.Tensor,  # [A, H] float32, written
    vectors: torch.Tensor,  # [S, L, H] slot table, written
    inv_norms: torch.Tensor,  # [S, L] float32, written
    out: torch.Tensor,  # [J, 2] float32 (score, fired), written
    layer: int,
) -> bool:
    """Returns whether any force was written (host-side callers use it to drop caches
    derived from the slot table)."""
    forced = False
    table = jobs_i.tolist()
    for j, row in enumerate(table):
        if row[LAYER] != layer:
            continue
        a, b = row[START], row[END]
        x = hidden[a:b].float()  # [n, H]
        if residual is not None:
            x = x + residual[a:b].float()
        if row[POOL] == POOL_MEAN:
            s = x.sum(dim=0)  # [H]
            if row[ACC_ROW] >= 0:
                r = row[ACC_ROW]
                acc[r] = s if row[FIRST] else acc[r] + s
                s = acc[r]
            if not row[FINAL]:
                continue
            v = s / jobs_f[j, COUNT]
        else:
            v = x[-1]
        dot = torch.dot(v, weights[row[WEIGHT_ROW]].float())
        if row[KIND] == KIND_COS:
            score = dot / v.norm().clamp_min(1e-12)
        else:
            score = torch.sigmoid(dot + jobs_f[j, BIAS])
        fired = bool(score >= jobs_f[j, THRESHOLD])
        out[j, 0] = score
        out[j, 1] = float(fired)
        if fired and row[TARGET] >= 0:
            src, dst = row[SOURCE], row[TARGET]
            for la, c in enumerate(coeff[j].tolist()):
                if c != 0.0:
                    vectors[dst, la] = (vectors[src, la].float() * c).to(vectors.dtype)
                    inv_norms[dst, la] = inv_norms[src, la] / abs(c)
                    forced = True
    return forced
