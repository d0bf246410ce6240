"""`early_exit`: per-token exit confidence, and layer skipping (issue 5), as a control
on the Control API (plugins/api.py):

    "control": {"early_exit": {"mode": "observe" | "exit" | "off",
                               "predictor": "smol-exit",          # `vsteer exit train`
                               "threshold": 0.9 | "target_agreement": 0.98}}

`observe` records, for every sampled token, the first candidate layer whose exit
confidence reaches the threshold, and whether the logit lens there reads the full
model's token; nothing in the forward changes. `exit` stops a step after that layer
when every row of the step is a decode token of an exit-mode request and all of them
are confident; later layers only fill their K/V (plugins/early_exit.py). `exit` needs
an eager engine whose K/V vsteer can fill (the worker says so in its hello).

The response's `control.early_exit` holds, per token, the layer it left the model at
(`exit_layers`), with the exited share, the layer compute saved and, in observe mode,
the agreement with the full model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vsteer.artifacts import ArtifactError
from vsteer.early_exit.summary import summarize_exits
from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext
from vsteer.server.mode_schema import ModeFields, f


class EarlyExitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    mode: Literal["off", "observe", "exit"] = "observe"
    predictor: str | None = Field(default=None, min_length=1, max_length=128)
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)  # one, every layer
    target_agreement: float | None = Field(default=None, gt=0.0, le=1.0)  # calibrated


# The fields each mode reads (server/mode_schema.py): any other is a 400, and the OpenAPI
# spec shows one closed variant per mode.
EXIT_MODES = ModeFields("mode", "observe", {
    "off": f(), "observe": f("predictor", "threshold", "target_agreement"),
    "exit": f("predictor", "threshold", "target_agreement")})


class EarlyExit(Control):
    name = "early_exit"
    schema = EarlyExitRequest
    modes = EXIT_MODES
    reads_only = True  # its checks read each layer's final stream
    per_token = True  # one [exit layer, agreement] record per sampled token

    def resolve(self, e: EarlyExitRequest, ctx: ResolveContext) -> Resolution:
        EXIT_MODES.check(e.model_fields_set, e.mode, ctx.param)
        if e.mode == "off":
            return Resolution(None, {"mode": "off"})
        if e.predictor is None:
            raise ctx.error("an exit predictor is required (an artifact from `vsteer "
                            "exit train`)", "predictor", code="missing_field")
        if e.threshold is not None and e.target_agreement is not None:
            raise ctx.error(f"give {ctx.param}.threshold or {ctx.param}.target_agreement, "
                            "not both", "threshold", code="conflicting_fields")
        if e.mode == "exit" and not ctx.worker.get("layer_skip"):
            raise ctx.error("'exit' skips layers, which needs the server started with "
                            "--enforce-eager (and a model whose K/V vsteer can fill); "
                            "'observe' works in every mode", "mode", code="not_supported")
        assert ctx.load_artifact is not None
        stored = ctx.load_artifact("exit", e.predictor, f"{ctx.param}.predictor")
        pred = stored.value
        applied: dict[str, Any] = {"mode": e.mode, "predictor": e.predictor,
                                   "layers": list(pred.layers),
                                   "model_layers": ctx.fingerprint.num_layers}
        if e.threshold is not None:
            thresholds = [e.threshold] * len(pred.layers)
            applied["threshold"] = e.threshold
        else:
            target = pred.default_target if e.target_agreement is None else e.target_agreement
            try:
                thresholds = pred.thresholds_for(target)
            except ArtifactError as err:
                raise ctx.error(str(err), "target_agreement",
                                code="target_agreement_unattainable") from None
            applied["target_agreement"] = target
        wire = {"path": str(stored.path), "sha256": stored.sha256, "mode": e.mode,
                "thresholds": thresholds}
        # exit mode writes skipped layers' K/V from exit states, which depend on what else
        # was in each step's batch: its KV blocks are never shared
        return Resolution(wire, applied, private_prefill=e.mode == "exit")

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.exit_worker import ExitWorker

        return ExitWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """{mode, predictor, ..., exit_layers (per token), saved_fraction, agreement}."""
        from vsteer.server import metrics

        rep = {**applied, **summarize_exits(results, applied["model_layers"])}
        mode = rep["mode"]
        exited = rep["exited_tokens"]
        metrics.EXIT_TOKENS.labels(mode, "true").inc(exited)
        metrics.EXIT_TOKENS.labels(mode, "false").inc(rep["tokens"] - exited)
        if results:
            metrics.EXIT_SAVED.labels(mode).observe(rep["saved_fraction"])
        if rep.get("agreement") is not None:
            agreed = sum(1 for _, a in results if a == 1)
            metrics.EXIT_AGREEMENT.labels("true").inc(agreed)
            metrics.EXIT_AGREEMENT.labels("false").inc(exited - agreed)
        return rep


def control() -> EarlyExit:
    """The entry point (`vsteer.controls`: early_exit)."""
    return EarlyExit()
