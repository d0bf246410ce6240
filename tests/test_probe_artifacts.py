"""Hallucination probes without an engine: the answer match, the QA set, AUROC, the
probe artifact, in-prefill scoring (whole vs chunked prompt), and the abstain logits
processor's row bookkeeping."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import vsteer.kernels  # noqa: F401  (registers torch.ops.vsteer.*)
from vsteer.artifacts import (
    ArtifactError,
    HallucinationProbe,
    ModelFingerprint,
    SteeringVector,
)
from vsteer.probe.match import is_correct
from vsteer.probe.metrics import auroc, youden_threshold
from vsteer.probe.questions import build_questions
from vsteer.wire import WireProbe, WireSpec, encode

from job_results import finish_step

FP = ModelFingerprint("LlamaForCausalLM", 8, 4)


def test_match_is_alias_aware_and_whole_word():
    assert is_correct("The capital is Bogotá.", ["Bogota"])
    assert is_correct("They pay in euros", ["Euro"])  # plural allowed
    assert is_correct("Côte d'Ivoire", ["Ivory Coast", "Cote d Ivoire"])
    assert not is_correct("Parisian food", ["Paris"])  # whole words only
    assert not is_correct("Lyon", ["Paris"])
    assert not is_correct("x" * 130 + " Paris", ["Paris"])  # only the answer's start counts


def test_question_set_is_large_and_split_by_entity():
    qs = build_questions()
    assert len(qs) >= 1000
    assert qs == build_questions()  # deterministic
    train = {q["entity"] for q in qs if q["split"] == "train"}
    test = {q["entity"] for q in qs if q["split"] == "test"}
    assert train and test and not train & test
    assert len({q["question"] for q in qs}) == len(qs)
    assert all(q["answers"] for q in qs)


def test_auroc_matches_pairwise_count():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.random(60) < 0.4
    pairs = [(a, b) for a, b in itertools.product(s[y], s[~y])]
    want = np.mean([1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs])
    assert auroc(s, y) == pytest.approx(want)
    assert auroc(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 1.0
    assert youden_threshold(np.arange(4.0), np.array([0, 0, 1, 1], bool)) == 2.0


def _probe(kind: str = "linear", pooling: str = "mean", seed: int = 0) -> HallucinationProbe:
    rng = np.random.default_rng(seed)
    h, n = FP.hidden_size, FP.num_layers
    if kind == "linear":
        tensors = {"weight": rng.standard_normal(h).astype(np.float32)}
    else:
        tensors = {"w1": rng.standard_normal((h, 5)).astype(np.float32),
                   "b1": rng.standard_normal(5).astype(np.float32),
                   "w2": rng.standard_normal(5).astype(np.float32),
                   "mu": rng.standard_normal(h).astype(np.float32),
                   "sigma": rng.random(h).astype(np.float32) + 0.5}
    return HallucinationProbe(
        layer=1, pooling=pooling, probe_type=kind, tensors=tensors, bias=0.3, threshold=0.5,
        truth=rng.standard_normal((n, h)).astype(np.float32), mitigate_layers=[2, 3],
        fingerprint=FP, token_layer=2, token_weight=rng.standard_normal(h).astype(np.float32),
        token_bias=-0.1)


def test_probe_round_trips_and_rejects_bad_files():
    p = _probe("mlp", "last")
    q = HallucinationProbe.from_safetensors_bytes(p.to_safetensors_bytes())
    v = np.arange(8, dtype=np.float32) / 8
    assert q.score(v) == pytest.approx(p.score(v)) and q.probe_type == "mlp"
    assert q.mitigate_layers == [2, 3] and q.has_token_probe
    with pytest.raises(ArtifactError, match="after the probe layer"):
        HallucinationProbe(**{**p.__dict__, "mitigate_layers": [1]})
    with pytest.raises(ArtifactError, match="out of range"):
        HallucinationProbe(**{**p.__dict__, "layer": 4})
    vector = SteeringVector({0: np.ones(8, np.float32)}, FP, method="test")
    with pytest.raises(ArtifactError, match="kind is 'vector'"):
        HallucinationProbe.from_safetensors_bytes(vector.to_safetensors_bytes())


@pytest.mark.parametrize(("kind", "pooling"), [("linear", "mean"), ("linear", "last"),
                                               ("mlp", "mean"), ("mlp", "last")])
def test_prefill_score_is_the_same_whole_or_chunked(kind, pooling):
    """The runtime's score equals the artifact's numpy twin on the pooled stream, for a
    prompt seen in one step or split over three: linear probes through the job table
    and `score_jobs` (one step per chunk), MLP probes on the host."""
    from vsteer.plugins.job_table import JobTable
    from vsteer.plugins.probe_run import ProbeRun, mlp_prefill, table_job

    p = _probe(kind, pooling, seed=3)
    weight = {k: torch.from_numpy(v) for k, v in p.tensors.items()}
    wire = WireProbe(path="", sha256="", action="annotate", threshold=0.5)
    g = torch.Generator().manual_seed(0)
    hidden, residual = torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g)
    a, b = 4, 15  # this request's prompt rows in the step
    x = (hidden + residual)[a:b].numpy()
    want = p.score(x.mean(0) if pooling == "mean" else x[-1])
    table = JobTable(4, p.layer + 1, 8, 2, 2, torch.device("cpu"),
                     torch.zeros(4, dtype=torch.int64))
    slots = torch.zeros(1, p.layer + 1, 8), torch.zeros(1, p.layer + 1)

    def feed(run: ProbeRun, lo: int, hi: int, final: bool) -> bool:
        """One step holding rows lo..hi; True when the probe scored in it."""
        if kind == "mlp":
            return mlp_prefill(run, hidden, residual, lo, hi, final)
        scored = []
        job, run.acc_n = table_job(run, lo, hi, final)
        run.done = final  # what the runtime stores from the planner's Progress
        if job is not None:
            table.add(**job, on_result=lambda s, f: scored.append((s, f)))
        table.commit()
        torch.ops.vsteer.score_jobs(hidden, residual, table.jobs_i.device, table.jobs_f.device,
                                    table.coeff.device, table.layer_index.device, table.weights,
                                    table.acc, *slots,
                                    table.out, table.step, p.layer)
        finish_step(table)
        if scored:
            run.score, run.fired = scored[0][0], scored[0][1]
        return bool(scored)

    def new_run() -> ProbeRun:
        run = ProbeRun(wire, p, weight, None)
        if kind == "linear":
            run.weight_row = table.weight_row("w", lambda: p.tensors["weight"], set())
            run.acc_row = table.alloc_acc() if pooling == "mean" else -1
        return run

    whole = new_run()
    assert feed(whole, a, b, final=True)
    chunked = new_run()
    assert not feed(chunked, a, 7, final=False)
    assert not feed(chunked, 7, 12, final=False)
    assert feed(chunked, 12, b, final=True)
    assert whole.score == pytest.approx(want, abs=1e-5)
    assert chunked.score == pytest.approx(want, abs=1e-5)
    assert whole.done and whole.fired == (whole.score >= 0.5)


def _params(action: str | None, rid: str, eos: int = 7):
    extra = None
    if action is not None:
        spec = WireSpec(rid=rid, plugins={"hallucination": encode(WireProbe(
            path="p", sha256="s", action=action, threshold=0.5))})
        extra = {"vsteer": encode(spec)}
    return SimpleNamespace(extra_args=extra, eos_token_id=eos, all_stop_token_ids={eos})


def _installed(enders: dict):
    """The runtime's InstalledControls as the sampler reads it: its `ending`, over
    these (worker, state) pairs per rid."""
    from vsteer.plugins.installed_controls import InstalledControls

    fake = SimpleNamespace(enders=enders)
    return SimpleNamespace(enders=enders, ending=lambda rid: InstalledControls.ending(fake,
                                                                                      rid))


def _probe_worker(out: torch.Tensor):
    """A hallucination worker over a job table whose results are `out` [J, 2]."""
    from vsteer.plugins.hallucination_worker import HallucinationWorker
    from vsteer.plugins.shared_tables import SharedTables

    shared = SharedTables(None, SimpleNamespace(out=out), False, torch.device("cpu"))
    return HallucinationWorker(SimpleNamespace(tables=shared.view("hallucination")))


def _run(action: str, fired: bool = False, job: int = -1):
    return SimpleNamespace(wire=SimpleNamespace(action=action), fired=fired, job=job)


def test_abstain_processor_masks_only_abstained_rows(monkeypatch):
    from vsteer.plugins import abstain, entry

    proc = abstain.AbstainLogitsProcessor(None, torch.device("cpu"), False)
    assert not proc.is_argmax_invariant()
    Move = abstain._Move
    batch = SimpleNamespace(removed=[], moved=[], added=[
        (0, _params("abstain", "r0"), None, []), (1, _params(None, "plain"), None, []),
        (2, _params("annotate", "r2"), None, []), (3, _params("abstain", "r3", eos=5), None, [])])
    proc.update_state(batch)
    # every request with a control is tracked; only flags decide what ends
    assert proc.rows == {0: ("r0", 7), 2: ("r2", 7), 3: ("r3", 5)}
    proc.update_state(SimpleNamespace(removed=[1, 2], added=[], moved=[
        (3, 1, Move.UNIDIRECTIONAL), (0, 2, Move.SWAP)]))
    assert proc.rows == {1: ("r3", 5), 2: ("r0", 7)}
    logits = torch.randn(4, 10)
    before = logits.clone()
    table = torch.zeros(2, 2)  # this step's job results (score, fired)
    w = _probe_worker(table)
    # r3's probe fired on the host (an MLP probe); r0 has no final job this step
    monkeypatch.setattr(entry, "_RUNTIME", SimpleNamespace(installed=_installed(
        {"r3": [(w, _run("abstain", fired=True))], "r0": [(w, _run("abstain"))]})))
    out = proc.apply(logits)
    assert int(out[1].argmax()) == 5 and torch.isinf(out[1]).sum() == 9  # only eos left
    torch.testing.assert_close(out[[0, 2, 3]], before[[0, 2, 3]])  # r0 did not fire
    # this step's table job decides on the device: r0's job (row 1) fired, then did not
    for fired in (1.0, 0.0):
        table[1] = torch.tensor([0.9, fired])
        monkeypatch.setattr(entry, "_RUNTIME", SimpleNamespace(installed=_installed(
            {"r0": [(w, _run("abstain", job=1))],
             "r3": [(w, _run("annotate", fired=True, job=0))]})))  # annotate never ends
        out = proc.apply(before.clone())
        if fired:
            assert int(out[2].argmax()) == 7 and torch.isinf(out[2]).sum() == 9
        else:
            torch.testing.assert_close(out[2], before[2])
        torch.testing.assert_close(out[[0, 1, 3]], before[[0, 1, 3]])
    monkeypatch.setattr(entry, "_RUNTIME", None)
    torch.testing.assert_close(proc.apply(before.clone()), before)


def test_a_row_reading_several_flags_ends_if_any_is_set(monkeypatch):
    """n > 1: the choices of a reply share its rid, so a row reads every choice's flag
    (and a request may carry two controls that end it). One set flag ends the row,
    whichever order the flags come in (no racing writes to the row)."""
    from vsteer.plugins import abstain, entry

    proc = abstain.AbstainLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(SimpleNamespace(removed=[], moved=[], added=[
        (0, _params("abstain", "r"), None, []), (1, _params("abstain", "r"), None, [])]))
    table = torch.tensor([[0.9, 1.0], [0.2, 0.0]])
    w = _probe_worker(table)
    for order in ([0, 1], [1, 0]):
        runs = [(w, _run("abstain", job=j)) for j in order]
        monkeypatch.setattr(entry, "_RUNTIME", SimpleNamespace(installed=_installed(
            {"r": runs})))
        out = proc.apply(torch.randn(2, 10))
        assert [int(out[i].argmax()) for i in (0, 1)] == [7, 7]
        assert all(torch.isinf(out[i]).sum() == 9 for i in (0, 1))


def test_an_installed_control_ends_its_request_through_a_device_flag(monkeypatch):
    """WorkerControl.ends_request (react's stop): the processor tracks requests with
    installed controls and masks a row to its end token where the control's flag is
    set, read on the device; other rows are untouched."""
    from vsteer.plugins import abstain, entry

    def plugin_params(rid: str, eos: int):
        spec = WireSpec(rid=rid, plugins={"react": "{}"})
        return SimpleNamespace(extra_args={"vsteer": encode(spec)}, eos_token_id=eos,
                               all_stop_token_ids={eos})

    proc = abstain.AbstainLogitsProcessor(None, torch.device("cpu"), False)
    proc.update_state(SimpleNamespace(removed=[], moved=[], added=[
        (0, plugin_params("a", 3), None, []), (1, plugin_params("b", 4), None, []),
        (2, _params(None, "plain"), None, [])]))
    assert proc.rows == {0: ("a", 3), 1: ("b", 4)}
    fired = torch.tensor([0, 1, 0], dtype=torch.int32)  # a react worker's latch per slot
    react = SimpleNamespace(ends_request=lambda slot: (fired, slot))
    monkeypatch.setattr(entry, "_RUNTIME", SimpleNamespace(installed=_installed(
        {"a": [(react, 0)], "b": [(react, 1)]})))
    logits = torch.randn(3, 8)
    out = proc.apply(logits.clone())
    assert int(out[1].argmax()) == 4 and torch.isinf(out[1]).sum() == 7  # b: only its end
    torch.testing.assert_close(out[[0, 2]], logits[[0, 2]])
    fired[0] = 1
    assert int(proc.apply(logits.clone())[0].argmax()) == 3
