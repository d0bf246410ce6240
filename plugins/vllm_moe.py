"""vLLM's mixture-of-experts internals, in one place (the MoE half of vllm_compat.py;
tests/test_vllm_moe.py fails loudly when vLLM changes under it).

vLLM 0.32 builds every MoE block as a `MoERunner` (fused_moe/runner/moe_runner.py)
holding a router (`FusedMoERouter`); `router.select_experts` calls
`router._compute_routing(hidden_states, router_logits, indices_type, input_ids=...)`
-> (topk_weights [T, K] fp32, topk_ids [T, K]) and then maps logical ids for EPLB. The
`experts` control wraps `_compute_routing` of each router instance: its edits see the
logits before the pick and the logical ids after it. CPU calls the MoE forward
directly (Dynamo traces the wrapper, which calls vsteer's ops); CUDA calls it through
the opaque `vllm.moe_forward` op, inside which the wrapper runs as Python (captured
by CUDA graphs as the kernels it launches). Monolithic MoE kernels take the logits
themselves and never call the router: they are reported as not controllable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

# Routers whose pick is top-k of softmax(logits) (renormalized over the pick or not):
# an expert whose logit is -inf is then never picked and leaves the normaliser.
SOFTMAX_ROUTERS = ("CPURouter", "FusedTopKRouter")

Routing = Callable[..., tuple[torch.Tensor, torch.Tensor]]
# (layer, original routing, hidden_states, router_logits, indices_type, input_ids)
RoutingEdit = Callable[[int, Routing, torch.Tensor, torch.Tensor, Any, Any],
                       tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class MoELayer:
    layer: int  # the decoder layer the block is in
    num_experts: int  # logical experts of the router
    top_k: int
    renormalize: bool
    controllable: bool
    why_not: str  # "" when controllable
    router: Any


def _why_not(runner: Any, router: Any) -> str:
    if runner.is_monolithic:
        return "its MoE kernel is monolithic (routes inside the kernel)"
    name = type(router).__name__
    if name not in SOFTMAX_ROUTERS:
        return f"its router is {name}, not a softmax top-k router"
    if getattr(router, "scoring_func", "softmax") != "softmax":
        return f"its router scores with {router.scoring_func}, not softmax"
    groups = getattr(router, "num_expert_group", None) or 1
    if getattr(router, "use_grouped_topk", False) and groups > 1:
        # one group is a plain top-k; with more, a picked group may hold fewer than k
        # experts still on, and the pick would then land on one switched off
        return f"its router picks in {groups} groups (grouped top-k)"
    if getattr(router, "e_score_correction_bias", None) is not None:
        return "its router adds a score-correction bias before the pick"
    if getattr(router, "custom_routing_function", None) is not None:
        return "its router uses a model-specific routing function"
    return ""


def moe_layers(model: torch.nn.Module) -> list[MoELayer]:
    """The model's MoE blocks, by decoder layer."""
    from vllm.model_executor.layers.fused_moe.runner.moe_runner import MoERunner

    out = []
    for m in model.modules():
        if isinstance(m, MoERunner):
            router = m.router
            why = _why_not(m, router)
            out.append(MoELayer(int(m.layer_id), int(router.global_num_experts),
                                int(router.top_k), bool(getattr(router, "renormalize", True)),
                                not why, why, router))
    return sorted(out, key=lambda x: x.layer)


def wrap_routing(moe: MoELayer, edit: RoutingEdit) -> None:
    """Route this block's tokens through `edit(layer, original, ...)` from now on."""
    router = moe.router
    original = router._compute_routing  # the bound method of vLLM's class
    layer = moe.layer

    def routed(hidden_states, router_logits, indices_type, *, input_ids=None):
        return edit(layer, original, hidden_states, router_logits, indices_type, input_ids)

    router._compute_routing = routed
