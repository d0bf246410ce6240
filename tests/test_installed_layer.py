"""How the runtime calls installed controls at each layer (plugins/installed_controls.py):
controls that only read the stream run after the ones that edit it, and on CPU engines
in compiled mode one op (`vsteer::installed_layer`) stands for all of them, skipping
idle steps on a host count."""

from __future__ import annotations

import torch

from vsteer.artifacts import ModelFingerprint
from vsteer.kernels.installed_op import register_runner
from vsteer.plugins.api import WorkerContext
from vsteer.plugins.control_registry import installed_controls
from vsteer.plugins.installed_controls import InstalledControls


def ctx(eager: bool) -> WorkerContext:
    return WorkerContext(ModelFingerprint("LlamaForCausalLM", 16, 4), 16, 4, 64, 4,
                         torch.device("cpu"), torch.float32, eager, 0)


def test_readers_run_after_editors():
    ic = InstalledControls(ctx(eager=True))
    controls = installed_controls()
    by_worker = {id(w): n for n, w in ic.workers.items()}
    order = [by_worker[id(w)] for w in ic.layer_hooks]
    readers = [n for n in order if controls[n].reads_only]
    assert {"capture", "monitor"} <= set(readers)
    assert order[-len(readers):] == readers  # all readers last
    assert "features" in order and "react" in order


def test_the_cpu_compiled_op_calls_the_runner_only_when_a_control_has_rows():
    calls = []
    handle = register_runner(lambda layer, h, r: calls.append(layer))
    hidden = torch.zeros(3, 16)
    rows = torch.zeros(1, dtype=torch.int64)
    torch.ops.vsteer.installed_layer(hidden, None, rows, 2, handle)
    assert calls == []
    rows[0] = 1
    torch.ops.vsteer.installed_layer(hidden, None, rows, 2, handle)
    assert calls == [2]


def test_compiled_cpu_engines_use_the_op_and_eager_ones_do_not():
    assert InstalledControls(ctx(eager=False))._handle > 0
    assert InstalledControls(ctx(eager=True))._handle == 0


def test_every_installed_control_op_traces_under_torch_compile():
    """The CUDA path calls each control's own op inside the traced graph (no host
    branch): every op must go through torch.compile's functionalization (an argument
    named like one of its own keywords, e.g. `mode`, breaks it). aot_eager on CPU runs
    the same tracing, with fullgraph so that a graph break fails too."""
    ic = InstalledControls(ctx(eager=False))
    ic._handle = 0  # the per-control path, as on CUDA
    for wc in ic.workers.values():
        wc.plan([])

    def layer_step(hidden, residual):
        ic.run_layer(1, hidden, residual)
        return hidden

    compiled = torch.compile(layer_step, backend="aot_eager", fullgraph=True)
    hidden, residual = torch.randn(8, 16), torch.randn(8, 16)
    out = compiled(hidden.clone(), residual)
    assert torch.equal(out, hidden)  # no control has rows: the stream is untouched
