"""`hallucination`: a preemptive hallucination probe on the Control API (plugins/api.py).

    "control": {"hallucination": {"probe": NAME,
                                  "action": "annotate" | "abstain" | "mitigate",
                                  "threshold": t | "max_error": e, "per_token": bool,
                                  "scale": s}}

The probe scores the prompt inside prefill, before the first token is sampled
(plugins/hallucination_worker.py). annotate: report the score; abstain: when it fires,
the reply is ABSTAIN_TEXT with finish_reason `content_filter` (the model samples only
its end token); mitigate: when it fires, the probe's truth direction times `scale` is
added from the next layers on. `max_error` picks the threshold from the probe's
split-conformal risk calibration. `per_token` adds a score per generated token (in
streams, on each chunk).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import msgspec
from pydantic import BaseModel, ConfigDict, Field

from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext
from vsteer.server.mode_schema import ModeFields, f
from vsteer.wire import WireProbe, slot_key

NEVER = math.nextafter(1.0, 2.0)  # a threshold no probe score (<= 1) reaches
ABSTAIN_TEXT = ("I am not sure I know the answer to this, so I would rather not guess. "
                "(vsteer: a hallucination probe flagged this question.)")
ABSTAIN_FINISH = "content_filter"


class HallucinationControl(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    probe: str = Field(min_length=1, max_length=128)
    action: Literal["annotate", "abstain", "mitigate"] = "annotate"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # default: calibrated
    # abstain so that the error among answered questions stays near this (conformal)
    max_error: float | None = Field(default=None, gt=0.0, lt=1.0)
    per_token: bool = False
    scale: float | None = None  # mitigate: coefficient of the truth direction (default 1)


HALLUCINATION_ACTIONS = ModeFields("action", "annotate", {
    "annotate": f(), "abstain": f("max_error"), "mitigate": f("scale")},
    always=f("probe", "threshold", "per_token"))


class Hallucination(Control):
    name = "hallucination"
    schema = HallucinationControl
    modes = HALLUCINATION_ACTIONS
    per_token = True  # one result per sampled token with per_token (the prefill's first)
    finishes = True  # abstain

    def resolve(self, h: HallucinationControl, ctx: ResolveContext) -> Resolution:
        from vsteer.server.artifact_access import check_scale

        P = ctx.param
        HALLUCINATION_ACTIONS.check(h.model_fields_set, h.action, P)
        _check_delivery(h, ctx)
        assert ctx.load_artifact is not None
        stored = ctx.load_artifact("probe", h.probe, f"{P}.probe")
        p = stored.value
        if h.per_token and not p.has_token_probe:
            raise ctx.error(f"probe {h.probe!r} has no per-token probe (retrain it with "
                            "`vsteer probe train`)", "per_token", code="field_not_applicable")
        scale = check_scale(1.0 if h.scale is None else h.scale, ctx.max_abs_scale,
                            f"{P}.scale")
        threshold = p.threshold if h.threshold is None else h.threshold
        risk = _risk_threshold(h, p, ctx) if h.max_error is not None else None
        if risk is not None:
            threshold = min(risk.threshold, NEVER)  # +inf: the whole set meets max_error
        source = ""
        layers: list[int] = []
        if h.action == "mitigate":
            layers = list(p.mitigate_layers)
            if not layers:
                raise ctx.error(f"probe {h.probe!r} has no layer after its probe layer to "
                                "mitigate at", "action", code="field_not_applicable")
            source = slot_key(f"{h.probe}#truth", stored.sha256, layers)
        wire = WireProbe(path=str(stored.path), sha256=stored.sha256, action=h.action,
                         threshold=threshold, per_token=h.per_token, source_key=source,
                         mitigate_layers=layers, scale=scale)
        applied: dict[str, Any] = {"probe": h.probe, "action": h.action,
                                   "threshold": threshold, "per_token": h.per_token,
                                   "layer": p.layer, "pooling": p.pooling}
        if h.action == "mitigate":
            applied["scale"] = scale
        if risk is not None:
            applied["max_error"] = h.max_error
            applied["risk_calibration"] = {"questions": risk.calibration_size,
                                           "bound": risk.bound, "coverage": risk.coverage}
        # a mean-pooled probe must see every prompt token computed, and a mitigating one
        # steers the prompt's later layers from inside the prefill: neither shares KV
        private = p.pooling == "mean" or h.action == "mitigate"
        return Resolution(msgspec.to_builtins(wire), applied, private_prefill=private,
                          shared_slots=[source] if source else [],
                          private_slots=int(h.action == "mitigate"), streams=h.per_token)

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.hallucination_worker import HallucinationWorker

        return HallucinationWorker(ctx)

    def missing(self, applied: dict[str, Any], results: list[Any]) -> list[str]:
        return [] if _probe(results) is not None else ["hallucination probe score"]

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """{probe, action, threshold, score, triggered, action_taken, [token_scores]}."""
        from vsteer.server import metrics

        rep: dict[str, Any] = {**applied, "score": None, "triggered": None,
                               "action_taken": "none"}
        action = rep["action"]
        probe = _probe(results)
        if probe is not None:
            rep["score"], rep["triggered"] = float(probe["score"]), bool(probe["fired"])
            metrics.HALLUCINATION_SCORE.labels(action).observe(rep["score"])
            if rep["triggered"] and action in ("abstain", "mitigate"):
                rep["action_taken"] = "abstained" if action == "abstain" else "mitigated"
        metrics.HALLUCINATION_ACTIONS.labels(action, rep["action_taken"]).inc()
        if rep["per_token"]:
            rep["token_scores"] = _tokens(results)
        return rep

    def stream_part(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        return {"token_scores": _tokens(results)}

    def finish_reason(self, report: dict[str, Any]) -> str | None:
        return ABSTAIN_FINISH if report.get("action_taken") == "abstained" else None

    def replacement(self, report: dict[str, Any]) -> str | None:
        """An abstaining reply generated nothing (its only token was its end): it says
        so instead, as OpenAI marks withheld content."""
        return ABSTAIN_TEXT if report.get("action_taken") == "abstained" else None


def _probe(results: list[Any]) -> dict[str, Any] | None:
    return next((v["probe"] for v in results if isinstance(v, dict) and "probe" in v), None)


def _tokens(results: list[Any]) -> list[float | None]:
    return [v["token"] for v in results if isinstance(v, dict) and "token" in v]


def _check_delivery(h: HallucinationControl, ctx: ResolveContext) -> None:
    """What this reply's sampling or stream cannot carry is a 400 before the engine."""
    if h.action == "abstain" and not ctx.stops_at_eos:
        # abstaining means sampling the end token first; vLLM would not stop there
        raise ctx.error("'abstain' cannot be combined with ignore_eos or min_tokens > 0",
                        "action", code="conflicting_fields")
    if not ctx.stream:
        return
    if h.per_token and ctx.route == "responses":
        raise ctx.error("per-token scores need stream=false on /v1/responses (chat and "
                        "completions stream them per chunk)", "per_token",
                        code="unsupported_combination")
    if h.action == "abstain" and ctx.route == "responses":
        raise ctx.error("'abstain' needs stream=false on /v1/responses", "action",
                        code="unsupported_combination")
    if h.per_token and ctx.n > 1:
        raise ctx.error("per-token scores in a stream need n = 1 (without a stream they "
                        "are reported per choice)", "per_token",
                        code="unsupported_combination")


def _risk_threshold(h: HallucinationControl, p: Any, ctx: ResolveContext) -> Any:
    """The threshold for `max_error` from the probe's risk calibration."""
    from vsteer.probe.conformal import UnattainableRisk, risk_threshold

    if h.threshold is not None:
        raise ctx.error(f"give {ctx.param}.threshold or {ctx.param}.max_error, not both",
                        "max_error", code="conflicting_fields")
    if not p.has_risk_calibration:
        raise ctx.error(f"probe {h.probe!r} has no risk calibration (retrain it with "
                        "`vsteer probe train`)", "max_error", code="probe_not_calibrated")
    try:
        return risk_threshold(p.conformal_scores, p.conformal_wrong, float(h.max_error or 0))
    except UnattainableRisk as e:
        raise ctx.error(f"probe {h.probe!r}: {e}", "max_error",
                        code="max_error_unattainable") from None


def control() -> Hallucination:
    """The entry point (`vsteer.controls`: hallucination)."""
    return Hallucination()
