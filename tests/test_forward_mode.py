"""Whether Python between two layers runs per step is read from vLLM's resolved config:
CUDA graphs replay even when torch.compile is off (`-cc.mode=none`,
TORCH_COMPILE_DISABLE=1, VLLM_USE_BREAKABLE_CUDAGRAPH=1, VLLM_BATCH_INVARIANT=1 all
leave a cudagraph mode set), and a runtime that keyed on the compilation mode would
capture its host-gated branches with an idle plan and never steer on replay."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from vllm.config import CompilationConfig, CompilationMode, CUDAGraphMode

from vsteer.plugins.vllm_compat import forward_mode

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")


def _config(mode: CompilationMode, graphs: CUDAGraphMode | None,
            enforce_eager: bool = False) -> SimpleNamespace:
    return SimpleNamespace(compilation_config=CompilationConfig(mode=mode, cudagraph_mode=graphs),
                           model_config=SimpleNamespace(enforce_eager=enforce_eager))


GRAPH_MODES = [CUDAGraphMode.PIECEWISE, CUDAGraphMode.FULL, CUDAGraphMode.FULL_DECODE_ONLY,
               CUDAGraphMode.FULL_AND_PIECEWISE]


@pytest.mark.parametrize("graphs", GRAPH_MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("mode", [CompilationMode.NONE, CompilationMode.VLLM_COMPILE],
                         ids=lambda m: m.name)
def test_cuda_graphs_replay_whatever_the_compilation_mode(mode, graphs):
    fm = forward_mode(_config(mode, graphs), CUDA)
    assert fm.graphs and not fm.python_per_step
    assert fm.traced == (mode != CompilationMode.NONE)


def test_mode_none_with_graphs_is_not_eager():
    """The case that was served wrongly: torch.compile off, graphs on (vLLM 0.32's
    breakable CUDA graphs)."""
    fm = forward_mode(_config(CompilationMode.NONE, CUDAGraphMode.FULL_AND_PIECEWISE), CUDA)
    assert not fm.python_per_step


@pytest.mark.parametrize("graphs", GRAPH_MODES + [None], ids=str)
def test_enforce_eager_means_python_per_step(graphs):
    fm = forward_mode(_config(CompilationMode.NONE, graphs, enforce_eager=True), CUDA)
    assert fm.python_per_step and not fm.graphs


def test_cudagraph_mode_none_on_cuda_is_eager_when_not_traced():
    assert forward_mode(_config(CompilationMode.NONE, CUDAGraphMode.NONE), CUDA).python_per_step
    fm = forward_mode(_config(CompilationMode.VLLM_COMPILE, CUDAGraphMode.NONE), CUDA)
    assert fm.traced and not fm.graphs


@pytest.mark.parametrize("graphs", GRAPH_MODES, ids=lambda m: m.name)
def test_cpu_never_replays_graphs(graphs):
    fm = forward_mode(_config(CompilationMode.NONE, graphs), CPU)
    assert not fm.graphs and fm.python_per_step
    assert forward_mode(_config(CompilationMode.VLLM_COMPILE, graphs), CPU).traced


@pytest.mark.parametrize("graphs", GRAPH_MODES + [CUDAGraphMode.NONE], ids=lambda m: m.name)
@pytest.mark.parametrize("mode", [CompilationMode.NONE, CompilationMode.VLLM_COMPILE],
                         ids=lambda m: m.name)
def test_host_jobs_are_refused_exactly_when_graphs_replay(mode, graphs):
    """Controllers, MLP probes and early exit run host-side through the `decide` op:
    torch.compile alone still calls it every step, graph replay does not."""
    from vsteer.plugins.api import ControlSetupError
    from vsteer.plugins.shared_tables import require_host_jobs

    fm = forward_mode(_config(mode, graphs), CUDA)
    if graphs == CUDAGraphMode.NONE:
        require_host_jobs(fm.graphs, "early exit")
    else:
        with pytest.raises(ControlSetupError, match="CUDA graphs"):
            require_host_jobs(fm.graphs, "early exit")
