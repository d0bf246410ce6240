"""Prometheus metrics for vsteer (vLLM's own `vllm:*` metrics share the registry)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

REQUESTS = Counter("vsteer_requests", "HTTP requests by endpoint and status",
                   ["endpoint", "status"])
TOKENS = Counter("vsteer_tokens", "Tokens served, by kind", ["kind"])
CONTROLLED_REQUESTS = Counter("vsteer_controlled_requests",
                              "Requests that carried at least one active control", ["control"])
REFUSAL_DECISIONS = Counter("vsteer_refusal_decisions", "Refusal controls applied, by mode "
                            "and whether they fired", ["mode", "triggered"])
REFUSAL_SCORE = Histogram("vsteer_refusal_score", "Score of in-prefill refusal decisions "
                          "(guard: cosine with the condition; controller: gate probability)",
                          ["mode"], buckets=(-0.2, -0.1, 0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5,
                                             0.7, 0.9, 1.0))
HALLUCINATION_SCORE = Histogram("vsteer_hallucination_score", "Pre-decoding hallucination "
                                "probe scores (probability the answer is wrong)", ["action"],
                                buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9,
                                         0.95, 1.0))
HALLUCINATION_ACTIONS = Counter("vsteer_hallucination_actions", "Hallucination probes run, by "
                                "action and what was done (abstained, mitigated, none)",
                                ["action", "taken"])
EXIT_TOKENS = Counter("vsteer_early_exit_tokens", "Generated tokens of early-exit requests, "
                      "by mode and whether the token exited (observe: could have)",
                      ["mode", "exited"])
EXIT_AGREEMENT = Counter("vsteer_early_exit_observed_agreement", "Observe mode: tokens that "
                         "could exit, by whether the exit layer's token equals the full "
                         "model's", ["agreed"])
EXIT_SAVED = Histogram("vsteer_early_exit_saved_fraction", "Per request, the fraction of "
                       "decoder-layer compute skipped (exit) or skippable (observe)", ["mode"],
                       buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0))
RATE_LIMITED = Counter("vsteer_rate_limited_requests", "Requests refused with 429 by a "
                       "per-key rate limit, by tenant ('' = untenanted key)", ["tenant"])
DRAINING = Gauge("vsteer_draining", "1 while the server drains for shutdown (new requests "
                 "get 503)")
ADMISSION_WAIT = Histogram("vsteer_slot_admission_wait_seconds",
                           "Time a request waited for free steering slots",
                           buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120))


class WorkerStatsCollector(Collector):
    """Reads the latest runtime stats the worker (rank 0) sent on the channel."""

    def __init__(self, stats: Callable[[], dict[str, Any] | None],
                 admission: Callable[[], tuple[int, int, int]]) -> None:
        self._stats = stats
        self._admission = admission

    def collect(self) -> Iterator[Any]:
        s = self._stats() or {}
        yield CounterMetricFamily("vsteer_steered_tokens", "Tokens that passed through a "
                                  "steering op", value=float(s.get("steered_tokens", 0)))
        yield CounterMetricFamily("vsteer_control_seconds", "Host time the worker spent on "
                                  "controls: step planning plus CPU kernels",
                                  value=float(s.get("control_seconds", 0.0)))
        yield CounterMetricFamily("vsteer_worker_steps", "Forward steps seen by the runtime",
                                  value=float(s.get("steps", 0)))
        yield GaugeMetricFamily("vsteer_steer_slots_in_use", "Device steering slots pinned by "
                                "running requests", value=float(s.get("slots_in_use", 0)))
        yield GaugeMetricFamily("vsteer_steer_slots_total", "Device steering slots",
                                value=float(s.get("slots_total", 0)))
        yield GaugeMetricFamily("vsteer_private_slots_in_use", "Private device slots (a "
                                "decision's force, one engine request's own) pinned by "
                                "running requests",
                                value=float(s.get("private_slots_in_use", 0)))
        yield GaugeMetricFamily("vsteer_private_slots_total", "Private device slots",
                                value=float(s.get("private_slots_total", 0)))
        in_use, private_in_use, waiting = self._admission()
        yield GaugeMetricFamily("vsteer_admitted_slot_keys", "Distinct shared steering slots "
                                "held by requests in flight (server side)",
                                value=float(in_use))
        yield GaugeMetricFamily("vsteer_admitted_private_slots", "Private slots held by "
                                "requests in flight (server side)",
                                value=float(private_in_use))
        yield GaugeMetricFamily("vsteer_requests_waiting_for_slots", "Requests waiting for "
                                "steering slots", value=float(waiting))
        info = GaugeMetricFamily("vsteer_kernel_backend", "Kernel backend in use, per op",
                                 labels=["op", "backend"])
        for op, name in (s.get("backends") or {}).items():
            info.add_metric([str(op), str(name)], 1.0)
        yield info


def register_worker_collector(collector: WorkerStatsCollector) -> Callable[[], None]:
    REGISTRY.register(collector)
    return lambda: REGISTRY.unregister(collector)


class RequestCounter:
    """ASGI middleware: count every HTTP response by path and status (streaming-safe)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # The route template, never the raw path: names in paths would explode labels.
            path = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(path, str(status["code"])).inc()
