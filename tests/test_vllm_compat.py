"""Fails loudly, naming the symbol, when a vLLM upgrade moves an internal we wrap.

Everything vsteer touches inside vLLM goes through vsteer.plugins.vllm_compat; each
test here pins one of those touch points to the installed vLLM.
"""

from __future__ import annotations

import inspect
import os

import pytest

from vsteer.plugins import vllm_compat as compat
from vsteer.plugins import vllm_server_compat as server_compat
from vsteer.plugins.hook_sites import HOOK_SITES


def test_installed_vllm_is_the_pinned_version():
    assert compat.check_vllm_version().startswith(compat.pinned_vllm_version())


def test_version_mismatch_is_refused(monkeypatch):
    import vllm

    monkeypatch.setattr(vllm, "__version__", "0.0.1")
    with pytest.raises(RuntimeError, match="pinned"):
        compat.check_vllm_version()


# the leading forward parameters of each declared layer shape (plugins/hook_sites.py)
SHAPES = {"pair": ["self", "positions", "hidden_states", "residual"],
          "pair_hidden_first": ["self", "hidden_states", "positions", "residual"],
          "stream": ["self", "positions", "hidden_states"]}


@pytest.mark.parametrize("site", sorted({(s.module, s.layer_class, s.call)
                                         for s in HOOK_SITES.values()}))
def test_hook_site_layers_take_their_declared_arguments(site):
    cls = compat.decoder_layer_class(*site[:2])
    params = list(inspect.signature(cls.forward).parameters)
    want = SHAPES[site[2]]
    assert params[:len(want)] == want, f"{site}: forward signature changed to {params}"
    if site[2] == "stream":  # the layer adds its own residual: nothing else comes in
        assert len(params) == len(want), f"{site}: forward takes {params}"
    assert "prefix" in inspect.signature(cls.__init__).parameters, f"{site}: no prefix kwarg"


def test_an_unknown_layer_shape_is_refused():
    with pytest.raises(ValueError, match="unknown decoder-layer shape"):
        compat.patch_decoder_layer(type("Layer", (), {"forward": lambda self: None}),
                                   lambda *a: None, "sideways")


def test_layer_index_helper():
    from vllm.model_executor.models.utils import extract_layer_index

    assert extract_layer_index("model.layers.7") == 7


def test_model_runner_hooks_exist():
    classes = compat.model_runner_classes()
    base = classes[0]
    assert base.__name__ == "GPUModelRunner"
    fwd = list(inspect.signature(base._model_forward).parameters)
    assert fwd[:3] == ["self", "input_ids", "positions"], fwd
    assert any("load_model" in c.__dict__ for c in classes)
    assert any(c.__name__ == "CPUModelRunner" for c in classes), "CPU runner moved"
    src = inspect.getsource(base.execute_model)
    assert "self._model_forward(" in src, "execute_model no longer calls _model_forward"
    assert "_update_states" in src and "_prepare_inputs" in src


def test_step_state_attributes_exist():
    from vllm.v1.worker.gpu_input_batch import CachedRequestState, InputBatch
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    init_src = inspect.getsource(GPUModelRunner.__init__)
    for attr in ("self.query_start_loc", "self.requests", "self.input_batch",
                 "self.max_num_tokens", "self.max_num_reqs", "self.dtype"):
        assert attr in init_src, f"GPUModelRunner no longer sets {attr}"
    batch_src = inspect.getsource(InputBatch)
    for attr in ("num_computed_tokens_cpu", "num_tokens_no_spec", "def req_ids", "num_reqs"):
        assert attr in batch_src, f"InputBatch lost {attr}"
    assert "num_prompt_tokens" in inspect.getsource(CachedRequestState)
    assert "sampling_params" in CachedRequestState.__dataclass_fields__


def test_choices_of_n_are_child_requests_named_by_index():
    """n > 1 runs n engine requests "<index>_<parent>"; the worker reads the index."""
    from vllm import SamplingParams
    from vllm.v1.engine.parallel_sampling import ParentRequest

    parent = ParentRequest.__new__(ParentRequest)
    parent.request_id, parent.child_requests = "chatcmpl-abc_1", set()
    parent.sampling_params, parent.cached_child_sampling_params = SamplingParams(n=3), None
    for i in range(3):
        child_id, params = parent.get_child_info(i)
        assert compat.choice_index(child_id, 3) == i and params.n == 1
    assert compat.choice_index("anything", 1) == 0
    with pytest.raises(RuntimeError, match="vLLM changed"):
        compat.choice_index("abc", 2)


def test_additional_config_is_hashed_into_the_compile_key():
    from vllm.config import VllmConfig

    assert "additional_config" in inspect.getsource(VllmConfig.compute_hash)


def test_server_side_internals():
    chat, completion = server_compat.openai_request_classes()
    for cls in (chat, completion):
        assert {"vllm_xargs", "cache_salt", "stream_options"} <= set(cls.model_fields), cls
    responses = server_compat.responses_request_class()
    assert {"vllm_xargs", "cache_salt", "input", "stream"} <= set(responses.model_fields)
    err = server_compat.error_response_class()
    assert "error" in err.model_fields
    with pytest.raises(server_compat.client_error_class()) as e:  # not wrapped by pydantic
        completion.model_validate({"model": "m", "prompt": ""})
    assert getattr(e.value, "parameter", None) == "prompt"
    parser = server_compat.vllm_arg_parser()
    args = parser.parse_args(["--model", "m", "--dtype", "float32"])
    assert args.model == "m" and args.dtype == "float32"
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    assert list(inspect.signature(init_app_state).parameters)[:4] == [
        "engine_client", "state", "args", "supported_tasks"]
    from vllm.entrypoints.serve.utils.api_utils import listen_for_disconnect

    assert inspect.iscoroutinefunction(listen_for_disconnect)


def test_offline_engine_shutdown_path():
    from vllm.v1.engine.core_client import EngineCoreClient
    from vllm.v1.engine.llm_engine import LLMEngine

    assert "self.engine_core" in inspect.getsource(LLMEngine.__init__)
    assert callable(EngineCoreClient.shutdown)


def test_offline_shutdown_survives_a_child_that_exits_while_being_killed():
    """vLLM's kill_process_tree names each child (psutil) before killing it; one that
    exits in between raises NoSuchProcess out of shutdown(): it is tried again."""
    import psutil
    from vllm.utils import system_utils

    assert "child.name()" in inspect.getsource(system_utils.kill_process_tree)
    calls = []

    class Core:
        def shutdown(self):
            calls.append(1)
            if len(calls) == 1:
                raise psutil.NoSuchProcess(123)

    llm = type("LLM", (), {"llm_engine": type("E", (), {"engine_core": Core()})()})()
    server_compat.shutdown_offline_engine(llm)
    assert len(calls) == 2


def test_a_vsteer_engine_selects_the_v1_runner(monkeypatch):
    import os

    from vsteer.engine_config import vsteer_additional_config

    monkeypatch.setenv(compat.V2_RUNNER_ENV, "1")
    vsteer_additional_config()
    assert os.environ[compat.V2_RUNNER_ENV] == "0"


def test_plain_vllm_keeps_its_runner_choice_with_vsteer_installed():
    """vLLM loads every general plugin in every process; vsteer's must not change the
    runner of an engine it did not configure."""
    import subprocess
    import sys

    code = ("import os, vllm.envs as envs\n"
            "from vllm.plugins import load_general_plugins\n"
            "load_general_plugins()\n"
            f"print(repr(os.environ.get({compat.V2_RUNNER_ENV!r})), "
            f"repr(envs.{compat.V2_RUNNER_ENV}))\n")
    env = {k: v for k, v in os.environ.items() if k != compat.V2_RUNNER_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip().splitlines()[-1]
    assert out == "None None"


def test_v2_runners_refuse_a_vsteer_engine():
    from types import SimpleNamespace

    classes = compat.v2_model_runner_classes()
    assert {c.__module__ for c in classes} == {"vllm.v1.worker.gpu.model_runner",
                                               "vllm.v1.worker.cpu.model_runner"}
    compat.refuse_vsteer_on_v2_runners()
    for cls in classes:
        runner = SimpleNamespace(vllm_config=SimpleNamespace(
            additional_config={"vsteer": {}}))
        with pytest.raises(RuntimeError, match="V1 model runner"):
            cls.load_model(runner)


@pytest.mark.parametrize("site", sorted({(s.module, s.layer_class)
                                         for s in HOOK_SITES.values() if s.kv_fill}))
def test_kv_fill_internals(site):
    """fill_kv_from_stream: the layer's norm and Llama-style attention parts, and vLLM's
    standalone K/V cache write."""
    layer_src = inspect.getsource(compat.decoder_layer_class(*site).__init__)
    for attr in ("self.self_attn", "self.input_layernorm"):
        assert attr in layer_src, f"{site} lost {attr}"
    module = __import__(site[0], fromlist=["_"])
    attn_cls = next(v for k, v in vars(module).items()
                    if k.endswith("Attention") and isinstance(v, type)
                    and "qkv_proj" in inspect.getsource(v.__init__))
    src = inspect.getsource(attn_cls)
    for attr in ("self.qkv_proj", "self.q_size", "self.kv_size", "self.rotary_emb",
                 "self.attn"):
        assert attr in src, f"{attn_cls.__name__} lost {attr}"
    from vllm.model_executor.layers.attention.attention import (
        Attention,
        unified_kv_cache_update,
    )

    assert list(inspect.signature(unified_kv_cache_update).parameters) == [
        "key", "value", "layer_name"]
    init = inspect.getsource(Attention.__init__)
    for attr in ("self.num_kv_heads", "self.head_size", "self.head_size_v",
                 "self.layer_name", "self.attn_backend"):
        assert attr in init, f"Attention lost {attr}"
    from vllm.v1.attention.backend import AttentionBackend

    assert hasattr(AttentionBackend, "forward_includes_kv_cache_update")


def test_lens_head_internals():
    from vllm.model_executor.models.llama import LlamaForCausalLM, LlamaModel

    assert "self.norm = RMSNorm" in inspect.getsource(LlamaModel)
    assert "self.lm_head" in inspect.getsource(LlamaForCausalLM.__init__)
    assert list(inspect.signature(LlamaForCausalLM.compute_logits).parameters)[:2] == [
        "self", "hidden_states"]


def test_ray_workers_inherit_the_channel_environment(monkeypatch):
    """Workers that vLLM's Ray executor starts on other nodes get the driver's
    environment: vsteer's channel address and key reach them without a change to vLLM."""
    from vllm.v1.executor.ray_env_utils import get_driver_env_vars

    from vsteer.plugins.channel import ENV_ADDRESS, ENV_KEY

    monkeypatch.setenv(ENV_ADDRESS, "tcp://10.0.0.1:5555")
    monkeypatch.setenv(ENV_KEY, "k")
    env = get_driver_env_vars(worker_specific_vars=set())
    assert env[ENV_ADDRESS] == "tcp://10.0.0.1:5555" and env[ENV_KEY] == "k"


def test_tp_cpu_group_internals():
    from vllm.distributed import parallel_state

    assert callable(parallel_state.get_tp_group)
    src = inspect.getsource(parallel_state.GroupCoordinator.__init__)
    assert "self.cpu_group" in src and "self.world_size" in src


def test_vllm_cpu_has_no_ray_executor():
    """Why the two-node Ray test cannot run here: vLLM's Ray executor needs a platform
    `ray_device_key`, and the CPU platform has none ("current platform cpu does not
    support ray"). When this fails, vllm-cpu can run Ray: add the two-node test."""
    from vllm.platforms.cpu import CpuPlatform

    assert CpuPlatform.ray_device_key == ""


def test_an_architecture_without_a_hook_site_is_refused_naming_the_supported():
    from vsteer.plugins.hook_sites import site_for

    with pytest.raises(ValueError, match="no hook site for Olmo2ForCausalLM") as e:
        site_for("Olmo2ForCausalLM")
    assert "MixtralForCausalLM" in str(e.value) and "Gemma3ForCausalLM" in str(e.value)
