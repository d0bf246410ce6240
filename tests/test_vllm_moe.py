"""vLLM's MoE internals the `experts` control relies on (plugins/vllm_moe.py), checked
on vLLM's own classes without an engine, so that a vLLM change breaks here, loudly,
before it breaks a request: MoE blocks are MoERunner modules with a router, a
layer_id and is_monolithic; the router's select_experts calls the instance's
_compute_routing(hidden_states, router_logits, indices_type, input_ids=...) and
returns its (weights, ids); the routers of Mixtral / Qwen-MoE are softmax top-k."""

from __future__ import annotations

import inspect

import torch

from vsteer.plugins.vllm_moe import SOFTMAX_ROUTERS, MoELayer, _why_not, wrap_routing


def test_moe_blocks_are_runners_with_a_router_and_a_layer():
    from vllm.model_executor.layers.fused_moe.runner.moe_runner import MoERunner

    for attr in ("router", "layer_id", "is_monolithic"):
        assert hasattr(MoERunner, attr) or attr in inspect.getsource(MoERunner.__init__), attr
    assert "self.router.select_experts(" in inspect.getsource(MoERunner)


def test_select_experts_goes_through_the_wrapped_compute_routing():
    from vllm.model_executor.layers.fused_moe.router.cpu_router import CPURouter

    router = CPURouter(top_k=2, global_num_experts=8)
    assert type(router).__name__ in SOFTMAX_ROUTERS
    h, logits = torch.randn(3, 16), torch.randn(3, 8)
    w0, ids0 = router.select_experts(hidden_states=h, router_logits=logits)
    assert ids0.dtype == torch.int32 and w0.dtype == torch.float32  # what the ops expect
    seen = []

    def edit(layer, original, hidden_states, router_logits, indices_type, input_ids):
        seen.append(layer)
        masked = router_logits.masked_fill(torch.arange(8) < 6, float("-inf"))
        return original(hidden_states, masked, indices_type, input_ids=input_ids)

    wrap_routing(MoELayer(5, 8, 2, True, True, "", router), edit)
    w, ids = router.select_experts(hidden_states=h, router_logits=logits)
    assert seen == [5]
    assert set(ids.flatten().tolist()) <= {6, 7}  # the edit decided the pick
    assert torch.allclose(w.sum(-1), torch.ones(3))


class _Runner:
    is_monolithic = False


def test_routers_the_control_cannot_edit_soundly_are_named():
    from vllm.model_executor.layers.fused_moe.router.cpu_router import CPURouter

    assert _why_not(_Runner(), CPURouter(top_k=2, global_num_experts=8)) == ""
    grouped = CPURouter(top_k=2, global_num_experts=8, use_grouped_topk=True,
                        num_expert_group=2, topk_group=1)
    assert "2 groups" in _why_not(_Runner(), grouped)
    one_group = CPURouter(top_k=2, global_num_experts=8, use_grouped_topk=True,
                          num_expert_group=1, topk_group=1)  # DeepSeek-V2-Lite's
    assert _why_not(_Runner(), one_group) == ""
    sigmoid = CPURouter(top_k=2, global_num_experts=8, scoring_func="sigmoid")
    assert "sigmoid" in _why_not(_Runner(), sigmoid)
    biased = CPURouter(top_k=2, global_num_experts=8, e_score_correction_bias=torch.zeros(8))
    assert "bias" in _why_not(_Runner(), biased)
    mono = _Runner()
    mono.is_monolithic = True
    assert "monolithic" in _why_not(mono, CPURouter(top_k=2, global_num_experts=8))
