"""`torch.ops.vsteer.react_apply`: conditions checked at every token a request samples
from, and the action they trigger, inside the forward (the `react` control; no
read-back: the host reads the state after the step).

A request that reacts owns a react slot r with a condition (cond_w[r] [H], cond_b[r],
cond_kind[r], cond_thr[r], cond_layer[r], min_tokens[r]), an action (action[r]; a vector
slot vec_of[r] and scale[r] for steer / release) and device state kept across steps:
streak[r], fired[r] (latched), fired_pos[r] (the position of the row it fired at).
Per step the host writes eval_row[r] (the token row that samples the request's next
token, or -1), token_slot[t] (react slot of token t, or -1) and token_pos[t].

Semantics at layer `layer` (x[t] = hidden[t] + residual[t], fp32):
    if active[0] == 0: return                             # CPU only: host-side count
    for r with eval_row[r] >= 0, cond_layer[r] == layer, fired[r] == 0:
        x = x[eval_row[r]]
        score = sigmoid(x · w + b)          if kind == SIGMOID   (a linear probe)
              | x · w / max(|x|, 1e-12)     if kind == COSINE    (a direction)
              | (x · w + b) if > b2 else 0  if kind == FEATURE   (an SAE feature; b2 = its
                                                                   JumpReLU threshold)
        score_out[r] = score
        streak[r] = streak[r] + 1 if score >= cond_thr[r] else 0
        if streak[r] >= min_tokens[r]: fired[r] = 1; fired_pos[r] = token_pos[eval_row[r]]
    for t with r = token_slot[t] >= 0:
        after = fired[r] and (token_pos[t] > fired_pos[r]
                              or (token_pos[t] == fired_pos[r] and layer > cond_layer[r]))
        on = after if action[r] == STEER else (not after) if action[r] == RELEASE else False
        if on: hidden[t] += scale[r] * vectors[vec_of[r], layer]   (fp32, rounded once)
So the action covers the firing row's layers after the condition's layer and every
later token; STOP changes nothing here (the sampler ends the request where fired).
"""

from __future__ import annotations

import torch

from vsteer.kernels.library import LIB

KIND_SIGMOID, KIND_COSINE, KIND_FEATURE = 0, 1, 2
MODE_STOP, MODE_STEER, MODE_RELEASE = 0, 1, 2
MODES = {"stop": MODE_STOP, "steer": MODE_STEER, "release": MODE_RELEASE}

LIB.define(
    "react_apply(Tensor(a!) hidden, Tensor? residual, Tensor eval_row, Tensor token_slot, "
    "Tensor token_pos, Tensor cond_w, Tensor cond_b, Tensor cond_b2, Tensor cond_kind, "
    "Tensor cond_thr, Tensor cond_layer, Tensor min_tokens, Tensor(b!) streak, "
    "Tensor(c!) fired, Tensor(d!) fired_pos, Tensor(e!) score_out, Tensor action, "
    "Tensor vec_of, Tensor scale, Tensor vectors, Tensor active, int layer) -> ()")


def _score(x, w, b, b2, kind):
    dot = x @ w
    if kind == KIND_SIGMOID:
        return torch.sigmoid(dot + b)
    if kind == KIND_COSINE:
        return dot / x.norm().clamp_min(1e-12)
    pre = dot + b
    return pre if pre > b2 else torch.zeros_like(pre)


def react_apply_reference(hidden, residual, eval_row, token_slot, token_pos, cond_w, cond_b,
                          cond_b2, cond_kind, cond_thr, cond_layer, min_tokens, streak, fired,
                          fired_pos, score_out, action, vec_of, scale, vectors, active,
                          layer: int) -> None:
    """The semantics above, slot by slot and token by token (the oracle)."""
    if int(active[0]) == 0:
        return

    def stream(t):
        x = hidden[t].float()
        return x + residual[t].float() if residual is not None else x

    for r in range(eval_row.shape[0]):
        t = int(eval_row[r])
        if t < 0 or int(cond_layer[r]) != layer or int(fired[r]):
            continue
        s = _score(stream(t), cond_w[r], cond_b[r], cond_b2[r], int(cond_kind[r]))
        score_out[r] = s
        streak[r] = streak[r] + 1 if s >= cond_thr[r] else 0
        if streak[r] >= min_tokens[r]:
            fired[r] = 1
            fired_pos[r] = token_pos[t]
    for t in range(hidden.shape[0]):
        r = int(token_slot[t])
        if r < 0:
            continue
        pos, fp = int(token_pos[t]), int(fired_pos[r])
        after = bool(fired[r]) and (pos > fp or (pos == fp and layer > int(cond_layer[r])))
        m = int(action[r])
        on = after if m == MODE_STEER else (not after) if m == MODE_RELEASE else False
        if on:
            v = vectors[int(vec_of[r]), layer].float()
            hidden[t] = (hidden[t].float() + scale[r] * v).to(hidden.dtype)


def react_apply_graph_safe(hidden, residual, eval_row, token_slot, token_pos, cond_w, cond_b,
                           cond_b2, cond_kind, cond_thr, cond_layer, min_tokens, streak,
                           fired, fired_pos, score_out, action, vec_of, scale, vectors,
                           layer: int) -> None:
    """No host branch, no data-dependent shape, no read-back (CUDA graphs replay it)."""
    T = hidden.shape[0]
    x = hidden.float() if residual is None else hidden.float() + residual.float()  # [T, H]
    # conditions, one per react slot
    rows = eval_row.long()  # [R]
    due = (rows >= 0) & (cond_layer == layer) & (fired == 0)  # [R]
    xr = x[rows.clamp(0, T - 1)]  # [R, H]
    dot = (xr * cond_w).sum(-1)  # [R]
    pre = dot + cond_b
    score = torch.where(cond_kind == KIND_SIGMOID, torch.sigmoid(pre),
                        torch.where(cond_kind == KIND_COSINE,
                                    dot / xr.norm(dim=-1).clamp_min(1e-12),
                                    torch.where(pre > cond_b2, pre, torch.zeros_like(pre))))
    score_out.copy_(torch.where(due, score, score_out))
    new_streak = torch.where(score >= cond_thr, streak + 1, torch.zeros_like(streak))
    streak.copy_(torch.where(due, new_streak, streak))
    fires = due & (streak >= min_tokens)
    pos_r = token_pos.long()[rows.clamp(0, T - 1)].to(fired_pos.dtype)
    fired_pos.copy_(torch.where(fires, pos_r, fired_pos))
    fired.copy_(torch.where(fires, torch.ones_like(fired), fired))
    # actions, per token
    slots = token_slot[:T].long()  # [T]
    on_t = slots >= 0
    r = slots.clamp_min(0)
    pos = token_pos[:T].long()
    fp = fired_pos.long()[r]
    after = (fired[r] > 0) & ((pos > fp) | ((pos == fp) & (layer > cond_layer[r])))
    m = action[r]
    on = on_t & torch.where(m == MODE_STEER, after,
                            torch.where(m == MODE_RELEASE, ~after, torch.zeros_like(after)))
    v = vectors[vec_of.long()[r], layer].float()  # [T, H]
    new = (hidden.float() + scale[r][:, None] * v).to(hidden.dtype)
    hidden.copy_(torch.where(on[:, None], new, hidden))


def _react_cpu(hidden, residual, eval_row, token_slot, token_pos, cond_w, cond_b, cond_b2,
               cond_kind, cond_thr, cond_layer, min_tokens, streak, fired, fired_pos,
               score_out, action, vec_of, scale, vectors, active, layer):
    if int(active[0]):
        react_apply_graph_safe(hidden, residual, eval_row, token_slot, token_pos, cond_w,
                               cond_b, cond_b2, cond_kind, cond_thr, cond_layer, min_tokens,
                               streak, fired, fired_pos, score_out, action, vec_of, scale,
                               vectors, layer)


def _react_cuda(hidden, residual, eval_row, token_slot, token_pos, cond_w, cond_b, cond_b2,
                cond_kind, cond_thr, cond_layer, min_tokens, streak, fired, fired_pos,
                score_out, action, vec_of, scale, vectors, active, layer):
    react_apply_graph_safe(hidden, residual, eval_row, token_slot, token_pos, cond_w, cond_b,
                           cond_b2, cond_kind, cond_thr, cond_layer, min_tokens, streak,
                           fired, fired_pos, score_out, action, vec_of, scale, vectors, layer)


def _react_fake(*args):
    return None


LIB.impl("react_apply", _react_cpu, "CPU")
LIB.impl("react_apply", _react_cuda, "CUDA")  # not run here: no GPU was lent
torch.library.register_fake("vsteer::react_apply", _react_fake, lib=LIB)
