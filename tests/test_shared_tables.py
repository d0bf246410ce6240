"""The shared step tables as a control sees them (plugins/shared_tables.py): what setup
takes is pinned to the request, a private slot is zero and steers only its request,
job results land in the step's report under the control's name, host jobs run at
their layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsteer.kernels.jobs_reference import KIND_SIGMOID
from vsteer.plugins.api import ControlSetupError, RequestRows
from vsteer.plugins.job_table import JobTable
from vsteer.plugins.request_controls import RequestControls
from vsteer.plugins.result_mailbox import ResultMailbox
from vsteer.plugins.shared_tables import SharedTables
from vsteer.plugins.slot_table import SlotTable
from vsteer.plugins.step_report import StepReport
from vsteer.wire import WireSpec

L, H = 4, 8
CPU = torch.device("cpu")


def _tables(slots: int = 4, weight_rows: int = 4, private: int = 4) -> SharedTables:
    step = torch.zeros(4, dtype=torch.int64)
    return SharedTables(SlotTable(slots, L, H, torch.float32, CPU, num_private=private),
                        JobTable(6, L, H, weight_rows, 2, CPU, step), False, CPU)


def _rc(rid: str = "r", choice: int = 0) -> RequestControls:
    rc = RequestControls(WireSpec(rid=rid), 5)
    rc.choice = choice
    return rc


def _rows(rid: str = "r", choice: int = 0) -> RequestRows:
    return RequestRows(None, rid, choice, 0, 3, 0, 3, True)


def test_setup_pins_what_it_takes_to_the_request():
    t = _tables()
    rc, pinned = _rc(), set()
    view = t.view("refusal")
    with t.setting_up(rc, pinned):
        a = view.slot("dir", lambda: {1: np.ones(H, np.float32)})
        w = view.weight_row("guard", lambda: np.full(H, 2.0, np.float32))
        p = view.private_slot()
    assert a != p and {"dir", "guard"} <= pinned and {"dir", "guard"} <= set(rc.keys)
    assert float(t.jobs.weights[w, 0]) == 2.0
    # the private slot is zero, steers this request at every position, after the others
    assert float(t.slots.vectors[p].abs().sum()) == 0.0
    assert rc.spans[-1][0] == (p, 1.0, 0) and rc.segments
    assert any(k.startswith("private:r:0:refusal") for k in pinned)
    with pytest.raises(RuntimeError, match="in setup"):
        view.slot("x", dict)  # outside setup: no request to pin to


def test_each_choice_gets_its_own_private_slot_and_a_full_table_is_a_setup_error():
    t = _tables(slots=2, private=2)
    pinned: set[str] = set()
    got = []
    for choice in (0, 1):
        with t.setting_up(_rc(choice=choice), pinned):
            got.append(t.view("hallucination").private_slot())
    assert got[0] != got[1]
    with t.setting_up(_rc(rid="s"), pinned), pytest.raises(ControlSetupError, match="slots"):
        t.view("hallucination").private_slot()  # both private slots are pinned


def test_job_results_land_in_the_steps_report_under_the_controls_name():
    t = _tables()
    report = StepReport(7)
    t.begin_step(report)
    report.entry("r", 1)["hallucination"] = {"from_collect": 1}
    seen = []

    def done(score, fired, out):
        seen.append((round(score, 3), fired))
        out.value["probe"] = {"score": score}
        out.error("not_scored", "m")

    view = t.view("hallucination")
    j = view.add_job(_rows(choice=1), done, layer=1, start=0, end=1, kind=KIND_SIGMOID,
                     weight_row=0, threshold=0.5)
    assert view.fired_flag(j)[1] == j and view.fired_flag(j)[0] is view.fired_flag(0)[0]
    t.jobs.commit()
    t.jobs.out[j] = torch.tensor([0.75, 1.0])  # what score_jobs would write
    mailbox = ResultMailbox(6, CPU, __import__("threading").RLock())
    t.jobs.finish(mailbox)
    mailbox.drain()
    assert seen == [(0.75, True)]
    entry = report.requests["r:1"]
    assert entry["hallucination"] == {"from_collect": 1, "probe": {"score": 0.75}}
    assert entry["errors"] == [{"code": "not_scored", "message": "m"}]


def test_host_jobs_run_at_their_layer_and_say_when_they_wrote_a_slot():
    t = _tables()
    t.begin_step(StepReport(1))
    calls = []
    view = t.view("refusal")
    view.host_job(_rows(), 2, lambda h, r, out: calls.append(("a", out.value)) or True)
    view.host_job(_rows(), 2, lambda h, r, out: calls.append(("b", None)) or False)
    x = torch.zeros(3, H)
    assert not t.run_due(1, x, None)
    assert t.run_due(2, x, None) and [c[0] for c in calls] == ["a", "b"]
    assert not t.run_due(2, x, None)  # once
    view.host_job(_rows(), 3, lambda h, r, out: True)
    t.end_step()
    assert not t.pending


def test_host_jobs_are_refused_where_cuda_graphs_replay():
    t = _tables()
    t.graphs = True
    with pytest.raises(ControlSetupError, match="CUDA graphs"):
        t.view("refusal").require_host_jobs("a refusal controller")
