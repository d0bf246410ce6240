"""`experts`: switch experts of a mixture-of-experts model off, or force them on, for
one request's tokens (MoTE-style expert control, issue 19):

    "control": {"experts": [
        {"layers": [3, 4], "experts": [5, 17], "op": "off"},      # never routed there
        {"experts": [2], "op": "force", "weight": 0.5},           # every MoE layer
        {"set": "refusal-experts", "op": "off"}]}                 # `vsteer experts find`

or `{"rules": [...], "routing": true}` to also get where every token went. `off`: the
router picks each token's k experts from the rest (the expert's logit is -inf before
the pick). `force`: the expert is among each token's k choices with routing weight
`weight`, in place of the weakest choice not forced; the other choices keep the
router's weights (kernels/expert_route_reference.py: Semantics). Per layer at most k
experts may be forced and at least k must stay on. Other requests' tokens in the same
batch are untouched.

The response says what each rule did, from the router itself: `control.experts.rules[i]
.routed` is how many (token, layer) routings went to the rule's experts (0 for `off`;
tokens x layers for `force`), over `tokens` token rows the model ran for the request
(its prompt, without prefix-cache hits: the request's prompt is computed privately,
and every generated token but the last), each position once: a recompute after
preemption is routed the same way and not counted again.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from vsteer.kernels.expert_route_reference import OFF
from vsteer.plugins.api import Control, Resolution, ResolveContext, WorkerContext

MAX_RULES = 64


class ExpertRule(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    layers: list[int] | None = Field(default=None, max_length=512)  # None: every MoE layer
    experts: list[int] | None = Field(default=None, min_length=1, max_length=4096)
    set: str | None = Field(default=None, min_length=1, max_length=128)  # an expert set
    op: Literal["off", "force"] = "off"
    weight: float | None = Field(default=None, gt=0.0, le=1.0)  # force only


class ExpertsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[ExpertRule] = Field(default_factory=list, max_length=MAX_RULES)
    routing: bool = False  # also report every (layer, expert) the tokens went to
    _listed: bool = PrivateAttr(default=False)  # given as a bare list of rules

    @model_validator(mode="wrap")
    @classmethod
    def _bare_list(cls, value: Any, handler: Any) -> ExpertsRequest:
        if not isinstance(value, list):
            return handler(value)
        try:
            m = handler({"rules": value})
        except ValidationError as e:  # report paths as the client wrote them: [i]...
            raise ValidationError.from_exception_data(cls.__name__, [
                {k: err[k] for k in ("type", "input", "ctx") if k in err}
                | {"loc": err["loc"][1:]} for err in e.errors()]) from None
        m._listed = True
        return m


def _rule_pairs(rule: ExpertRule, field: str, ctx: ResolveContext, moe_layers: list[int],
                num_experts: int) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """The (layer, expert) pairs a rule names, and how the response echoes it."""
    if rule.set is not None:
        if rule.experts is not None or rule.layers is not None:
            raise ctx.error("a set names its own layers and experts", f"{field}.set",
                            code="conflicting_fields")
        sep = "" if field.startswith("[") else "."
        stored = ctx.load_artifact("experts", rule.set, f"{ctx.param}{sep}{field}.set")
        pairs = list(stored.value.pairs)
        applied: dict[str, Any] = {"set": rule.set, "layers": sorted({la for la, _ in pairs})}
    else:
        if rule.experts is None:
            raise ctx.error("name experts (or a set)", f"{field}.experts",
                            code="missing_field")
        layers = sorted(set(rule.layers)) if rule.layers is not None else moe_layers
        experts = sorted(set(rule.experts))
        pairs = [(la, e) for la in layers for e in experts]
        applied = {"layers": layers, "experts": experts}
    for la, e in pairs:
        if la not in moe_layers:
            raise ctx.error(f"layer {la} has no controllable mixture-of-experts block "
                            f"(these do: {moe_layers})", f"{field}.layers", code="layer_not_moe")
        if not 0 <= e < num_experts:
            raise ctx.error(f"expert {e} is out of range: the router has {num_experts}",
                            f"{field}.experts", code="expert_out_of_range")
    return pairs, applied


class Experts(Control):
    name = "experts"
    schema = ExpertsRequest

    def resolve(self, request: ExpertsRequest, ctx: ResolveContext) -> Resolution:
        info = ctx.worker
        moe_layers = [int(la) for la in info.get("layers", [])]
        if not moe_layers:
            why = info.get("why_not") or "the model has no mixture-of-experts layers"
            raise ctx.error(f"this model's experts cannot be controlled: {why}",
                            code="not_supported")
        E, K = int(info["num_experts"]), int(info["top_k"])
        route: dict[int, dict[int, float]] = {}  # layer -> expert -> OFF | weight
        rules_wire, rules_applied = [], []
        for i, rule in enumerate(request.rules):
            field = f"[{i}]" if request._listed else f"rules[{i}]"
            if rule.op == "force" and rule.weight is None:
                raise ctx.error("force needs a weight in (0, 1]", f"{field}.weight",
                                code="missing_field")
            if rule.op == "off" and rule.weight is not None:
                raise ctx.error("only force takes a weight", f"{field}.weight",
                                code="field_not_applicable")
            pairs, applied = _rule_pairs(rule, field, ctx, moe_layers, E)
            value = OFF if rule.op == "off" else float(rule.weight)
            for la, e in pairs:
                had = route.setdefault(la, {}).get(e)
                if had is not None and had != value:
                    raise ctx.error(f"expert {e} at layer {la} is given two ways ("
                                    f"{'off' if had == OFF else f'force {had:g}'} and "
                                    f"{rule.op}{'' if value == OFF else f' {value:g}'})",
                                    field, code="conflicting_fields")
                route[la][e] = value
            rules_wire.append(pairs)
            rules_applied.append({**applied, "op": rule.op,
                                  **({"weight": value} if rule.op == "force" else {})})
        for la, es in sorted(route.items()):
            off = sum(1 for v in es.values() if v == OFF)
            forced = len(es) - off
            if forced > K or E - off < K:
                raise ctx.error(f"layer {la} would have {forced} experts forced and "
                                f"{E - off} left on; a token picks {K} of {E}",
                                code="too_many_experts")
        wire = {"route": [[la, e, v] for la, es in sorted(route.items())
                          for e, v in sorted(es.items())],
                "rules": rules_wire, "routing": request.routing}
        applied_all: dict[str, Any] = {"rules": rules_applied}
        if request.routing:
            applied_all["routing"] = True
        # routing evidence covers every prompt token, and edited routing changes the
        # prompt's KV: the prompt must be computed for this request alone
        return Resolution(wire, applied_all, private_prefill=True)

    def worker(self, ctx: WorkerContext):
        from vsteer.plugins.experts_worker import ExpertsWorker

        return ExpertsWorker(ctx)

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """Per-step counts summed: rules[i].routed, tokens, and (routing) layer ->
        expert -> routings."""
        routed = [0] * len(applied["rules"])
        tokens = 0
        where: dict[str, dict[str, int]] = {}
        for r in results:
            tokens += r["tokens"]
            routed = [a + b for a, b in zip(routed, r["rules"], strict=True)]
            for la, e, n in r.get("routing", []):
                d = where.setdefault(str(la), {})
                d[str(e)] = d.get(str(e), 0) + n
        out: dict[str, Any] = {"rules": [{**a, "routed": n} for a, n in
                                         zip(applied["rules"], routed, strict=True)],
                               "tokens": tokens}
        if applied.get("routing"):
            out["routing"] = {la: dict(sorted(d.items(), key=lambda kv: int(kv[0])))
                              for la, d in sorted(where.items(), key=lambda kv: int(kv[0]))}
        return out


def control() -> Experts:
    return Experts()
