"""The refusal and hallucination workers (plugins/refusal_worker.py,
plugins/hallucination_worker.py) over the runtime's real shared tables and the
`score_jobs` op on CPU, without vLLM: what a step's plan writes, what the forward does
with it, and what lands in the step's report."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vsteer.kernels  # noqa: F401  (registers the ops)
from vsteer.plugins.api import RequestRows
from vsteer.plugins.decision import Decision
from vsteer.plugins.hallucination_worker import NOT_SCORED, HallucinationWorker
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.refusal_worker import RefusalState, RefusalWorker
from vsteer.plugins.shared_tables import SharedTables
from vsteer.plugins.slot_table import SlotTable, is_private
from vsteer.plugins.step_report import StepReport
from vsteer.wire import WireDecide

from job_results import finish_step

L, H = 6, 16
CPU = torch.device("cpu")


def _tables() -> SharedTables:
    step = torch.zeros(4, dtype=torch.int64)
    return SharedTables(SlotTable(4, L, H, torch.float32, CPU, num_private=4),
                        JobTable(6, L, H, 4, 2, CPU, step), False, CPU)


def _forward(t: SharedTables, hidden: torch.Tensor, residual: torch.Tensor, upto: int = L
             ) -> None:
    """The job op at every layer the step reaches (`upto` < L: the step stopped early)."""
    j = t.jobs
    j.commit()
    for la in range(upto):
        torch.ops.vsteer.score_jobs(hidden, residual, j.jobs_i.device, j.jobs_f.device,
                                    j.coeff.device, j.layer_index.device, j.weights, j.acc,
                                    t.slots.vectors, t.slots.inv_norms, j.out, j.step, la)
        t.run_due(la, hidden, residual)


def _step(t: SharedTables, n: int) -> StepReport:
    report = StepReport(n)
    t.begin_step(report)
    return report


def _rows(state, a: int, b: int, position: int, prompt_end: int, samples: bool
          ) -> RequestRows:
    return RequestRows(state, "r", 0, a, b, position, prompt_end, samples)


def test_a_guard_that_fires_forces_its_private_slot_inside_the_forward():
    t = _tables()
    cond = np.random.default_rng(0).standard_normal(H).astype(np.float32)
    cond /= np.linalg.norm(cond)  # a cosine guard's condition is a unit vector
    t.slots.vectors[1, 4:] = torch.randn(2, H)  # the direction's refusal tensors
    t.slots.inv_norms[1, 4:] = 1.0 / t.slots.vectors[1, 4:].norm(dim=-1)
    wire = WireDecide(kind="guard", layer=2, direction_path="", direction_sha256="",
                      force_layers=[4, 5], source_key="s", threshold=-2.0, scale=3.0)
    d = Decision(wire, 1, 2, condition=cond,
                 weight_row=t.jobs.weight_row("g", lambda: cond, set()))
    worker = RefusalWorker(SimpleNamespace(tables=t.view("refusal")))
    report = _step(t, 1)
    # a 4-token prompt in one chunk: the guard scores its last token at layer 2
    worker.plan([_rows(RefusalState(d, 4), 0, 4, 0, 4, True)])
    assert d.done  # decided in this step; never again
    h, r = torch.randn(4, H), torch.randn(4, H)
    _forward(t, h, r)
    torch.testing.assert_close(t.slots.vectors[2, 4:], 3.0 * t.slots.vectors[1, 4:])
    finish_step(t.jobs)
    decision = report.requests["r:0"]["refusal"]["decision"]
    assert decision["fired"] and decision["kind"] == "guard"
    x = (h[3] + r[3]).numpy()
    assert decision["score"] == pytest.approx(float(x @ cond / np.linalg.norm(x)), abs=1e-5)
    report = _step(t, 2)
    worker.plan([_rows(RefusalState(d, 4), 0, 1, 4, 0, True)])  # decode: nothing to do
    assert t.jobs.num_jobs == 0 and not t.pending


def test_a_controller_runs_as_a_host_job_and_reports_its_decision():
    t = _tables()
    wire = WireDecide(kind="controller", layer=1, direction_path="", direction_sha256="",
                      force_layers=[2, 3], source_key="s", threshold=0.0)
    zeros = {k: torch.zeros(s) for k, s in (("w1", (H, 2)), ("b1", (2,)), ("w2", (2, 1 + L)),
                                            ("mu", (H,)))}
    d = Decision(wire, 1, 2, controller={**zeros, "b2": torch.ones(1 + L),
                                         "sigma": torch.ones(H)}, w_max=2.0)
    t.slots.vectors[1, 2:4] = 1.0
    worker = RefusalWorker(SimpleNamespace(tables=t.view("refusal")))
    report = _step(t, 1)
    worker.plan([_rows(RefusalState(d, 3), 0, 3, 0, 3, True)])
    assert set(t.pending) == {1}
    _forward(t, torch.randn(3, H), torch.randn(3, H))
    w = 2.0 * float(torch.sigmoid(torch.tensor(1.0)))  # w_max * sigmoid(b2)
    torch.testing.assert_close(t.slots.vectors[2, 2:4], torch.full((2, H), w))
    assert report.requests["r:0"]["refusal"]["decision"]["fired"]


def _probe_run(token_row: int, action: str = "annotate"):
    probe = SimpleNamespace(layer=1, token_layer=4, pooling="last", bias=0.0,
                            token_bias=0.0)
    wire = SimpleNamespace(action=action, threshold=0.5, mitigate_layers=[], scale=1.0)
    return SimpleNamespace(probe=probe, wire=wire, layer=1, token_layer=4, weight_row=0,
                           token_row=token_row, acc_row=-1, acc_n=0, done=False,
                           source_slot=-1, target_slot=-1, prompt_tokens=3, job=-1,
                           told_unscored=False, score=None, fired=False)


def test_per_token_scores_of_a_step_that_exits_before_the_token_layer_are_coded_nulls():
    """exit with per_token: a decode step that stopped after layer 2 never ran the token
    layer (4): the token's score is null and the reply says why, once."""
    t = _tables()
    t.jobs.weight_row("p", lambda: np.ones(H, np.float32), set())
    t.jobs.weight_row("t", lambda: np.ones(H, np.float32), set())
    run = _probe_run(token_row=1)
    worker = HallucinationWorker(SimpleNamespace(tables=t.view("hallucination")))
    h, r = torch.zeros(3, H), torch.zeros(3, H)
    values = []
    for n, (a, b, pos, end, upto) in enumerate([(0, 3, 0, 3, L), (0, 1, 3, 0, 2),
                                                (0, 1, 4, 0, 2), (0, 1, 5, 0, L)]):
        report = _step(t, n)
        worker.plan([_rows(run, a, b, pos, end, True)])
        _forward(t, h[: b - a], r[: b - a], upto)
        finish_step(t.jobs)
        values.append(report.requests["r:0"])
    assert values[0]["hallucination"]["probe"]["score"] == pytest.approx(0.5)
    assert [v["hallucination"]["token"] for v in values] == [
        pytest.approx(0.5), None, None, pytest.approx(0.5)]
    errors = [e for v in values for e in v.get("errors", [])]
    assert [e["code"] for e in errors] == [NOT_SCORED]  # said once, not per token


def test_abstain_reads_this_steps_final_job_and_then_the_hosts_verdict():
    t = _tables()
    t.jobs.weight_row("p", lambda: np.ones(H, np.float32), set())
    run = _probe_run(token_row=-1, action="abstain")
    worker = HallucinationWorker(SimpleNamespace(tables=t.view("hallucination")))
    _step(t, 1)
    worker.plan([_rows(run, 0, 2, 0, 2, False)])  # a first chunk: no final job yet
    assert worker.ends_request(run) is None
    _step(t, 2)
    worker.plan([_rows(run, 0, 1, 2, 1, True)])
    flag, k = worker.ends_request(run)
    assert flag is t.fired and k == run.job >= 0
    _forward(t, torch.ones(1, H), torch.ones(1, H))
    assert float(flag[k]) > 0  # sigmoid(2H) >= 0.5: read on the device, before sampling
    finish_step(t.jobs)
    assert run.fired and worker.ends_request(run)[0] is t.always


def test_admission_counts_exactly_the_slots_the_workers_take(tmp_path):
    """The server admits a request when its slot keys fit (server/admission.py); the
    workers then take shared slots (a guard's refusal tensors, a probe's truth tensors)
    and one private slot per choice. Both counts must agree, or a full server runs out of
    slots in the worker ("all N steering slots are held")."""
    import json

    from vsteer.artifacts import (
        ArtifactStore,
        GuardCalibration,
        HallucinationProbe,
        ModelFingerprint,
        RefusalDirection,
    )
    from vsteer.plugins.request_controls import RequestControls
    from vsteer.server.control_resolver import ControlResolver

    fp = ModelFingerprint("LlamaForCausalLM", H, L)
    rng = np.random.default_rng(0)
    vecs = lambda: {la: rng.normal(size=H).astype(np.float32) for la in range(L)}  # noqa: E731
    store = ArtifactStore(tmp_path)
    store.save("direction", "d", RefusalDirection(vecs(), vecs(), 3, fp, {}, GuardCalibration(
        1, 0.0, 0.9)))
    store.save("probe", "p", HallucinationProbe(
        2, "last", "linear", {"weight": np.ones(H, np.float32)}, 0.0, 0.5,
        np.ones((L, H), np.float32), [3, 4], fp))
    resolver = ControlResolver(store, fp, max_abs_scale=8.0)
    makers = {"refusal": RefusalWorker, "hallucination": HallucinationWorker}
    for control in ({"refusal": {"mode": "guard", "direction": "d"}},
                    {"hallucination": {"probe": "p", "action": "mitigate"}},
                    {"refusal": {"mode": "guard", "direction": "d"},
                     "hallucination": {"probe": "p", "action": "mitigate"},
                     "steer": []}):
        resolved = resolver.resolve(control, n=2)
        t, pinned = _tables(), set()
        t.slots = SlotTable(8, L, H, torch.float32, CPU, num_private=8)
        for choice in (0, 1):
            rc = RequestControls(resolved.wire, 5)
            rc.choice = choice
            for name, wire in resolved.wire.plugins.items():
                ctx = SimpleNamespace(tables=t.view(name), fingerprint=fp, tp_rank=0,
                                      device=CPU)
                with t.setting_up(rc, pinned):
                    makers[name](ctx).setup(json.loads(wire), 5)
        keys = resolved.slot_keys
        private = {k for k in keys if is_private(k)}
        assert t.slots.in_use(pinned) == len(keys - private), control
        assert t.slots.private_in_use(pinned) == len(private) > 0, control
