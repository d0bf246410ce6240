"""The Control API: how a control plugs into vsteer (docs/control-api.md).

A control is one installable unit registered in the entry-point group
`vsteer.controls`; the entry point names a zero-argument factory returning a
`Control`. vsteer loads every registered control in the server process and in every
vLLM worker, and routes `control.<name>` to it:

    server  (HTTP thread)      Control.resolve(request, ResolveContext) -> Resolution
                               every 4xx raised here, before anything is enqueued;
                               Resolution.steer: entries for the shared token plan
    worker  (model load)       Control.worker(WorkerContext) -> WorkerControl
                               WorkerControl.attach(model): hooks of its own (optional)
                               WorkerControl.describe() -> what resolve sees as ctx.worker
            (first schedule)   WorkerControl.setup(wire, prompt_tokens) -> state
            (every step)       WorkerControl.plan([RequestRows ...])   host side
            (every layer)      WorkerControl.on_layer(layer, hidden, residual)
                               inside the forward: traced once by torch.compile, so
                               device tensors and custom ops only, no read-back
            (after the step)   WorkerControl.collect(rows) -> result, per request
            (sampling)         WorkerControl.ends_request(state): a device flag that
                               makes the request's next token its end token
            (request gone)     WorkerControl.release(state)
    server  (each chunk)       Control.stream_part(applied, results): per-token parts
            (reply done)       Control.report(applied, results) -> control.<name>
                               Control.finish_reason(report): the reply's, if it ended it
                               Control.replacement(report): the text shown instead

Shared step tables (`WorkerContext.tables`, plugins/shared_tables.py): a control may
steer with its own private slot (written by a decision inside the forward), score the
stream with rows of the device job table (guards, linear probes, per-token scores; no
read-back), or run a host job between two layers (eager engines), instead of bringing
an op of its own. `refusal` and `hallucination` are written this way.

`collect`'s results travel in the step's single report message
(plugins/step_report.py); the server waits for the steps of every token the reply holds
before `report` runs, so a report is never partial. `WorkerContext.step` tells `plan`
about the whole batch; `WorkerContext.layer_skip` lets `on_layer` stop the step after a
layer (early exit, plugins/exit_control.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel

from vsteer.artifacts import ModelFingerprint

ENTRY_POINT_GROUP = "vsteer.controls"


class ControlSetupError(Exception):
    """The worker cannot set up this request's control: none of the request's controls
    is applied and its reply says why (`control.errors`, code control_not_applied)."""


@dataclass(frozen=True)
class Resolution:
    wire: dict[str, Any] | None  # JSON values the worker's setup gets (None: nothing
    # runs in the worker for this request, e.g. a mode "off"; `applied` is still echoed)
    applied: Any  # JSON echoed in the response (control.<name>) with the report
    # The control must see every prompt token of its own request computed (not read
    # from vLLM's prefix cache): the request's KV blocks are then never shared.
    private_prefill: bool = False
    # Entries for the shared token plan (vsteer.wire.steer_entry): every worker loads
    # each into the slot table and the `steer_apply` op adds, ablates or normalizes it at
    # the request's tokens in its positions, after the entries of controls named before
    # it in the request. A control needs no worker half to steer (plugins/steer_control).
    steer: list[Any] = field(default_factory=list)
    # Steering slots the worker half takes through `WorkerContext.tables`: shared ones by
    # key (`slot(key, ...)`), and private ones per engine request (`private_slot()`; with
    # n choices, n times this). The server's admission counts them with the entries'.
    shared_slots: list[str] = field(default_factory=list)
    private_slots: int = 0
    # Streams carry `Control.stream_part` on every chunk (the server asks vLLM for the
    # running token count, and waits for each chunk's tokens' steps).
    streams: bool = False


@dataclass(frozen=True)
class StoredVector:
    """A steering vector from the artifact store, as the request may use it."""

    name: str
    path: str  # the worker reads it from the shared artifact directory
    sha256: str  # ... and checks its content (vsteer.artifacts.read_verified)
    layers: list[int]
    directions: dict[int, Any]  # layer -> [H] float32 numpy


@dataclass(frozen=True)
class ResolveContext:
    fingerprint: ModelFingerprint
    param: str  # the request's JSON path of this control, "control.<name>"
    max_abs_scale: float  # the operator's (and tenant's) bound on any scale
    load_vector: Callable[[str, str], StoredVector]  # (name, param): tenant policy applied
    max_model_len: int = 0  # the engine's context length (prompt + generated tokens)
    max_tokens: int | None = None  # the request's own generation limit, if it set one
    # (kind, name, param) -> the stored artifact (.path, .sha256, .value), with the
    # tenant's policy and the model's fingerprint checked (4xx otherwise)
    load_artifact: Callable[[str, str, str], Any] | None = None
    n: int = 1  # choices the request asks for
    stops_at_eos: bool = True  # False with ignore_eos or min_tokens > 0
    # what this control's worker half described at start (WorkerControl.describe)
    worker: dict[str, Any] = field(default_factory=dict)
    stream: bool = False  # the reply is streamed
    route: str = "chat"  # chat | completions | responses
    principal: Any = None  # who asks (server/auth.Principal: .admin, .tenant.policy)

    def error(self, message: str, field: str | None = None, code: str = "invalid_value"):
        """The 400 to raise for this control's `field` (OpenAI error shape)."""
        from vsteer.server.errors import APIError

        sep = "" if field and field.startswith("[") else "."
        param = f"{self.param}{sep}{field}" if field else self.param
        return APIError(400, f"{param}: {message}", param=param, code=code)


@dataclass
class LayerSkip:
    """The worker's layer skipping (eager engines whose K/V vsteer can fill): a control
    that finds, inside the forward, that the whole step may stop after layer l calls
    `stop_after(l)`; each later decoder layer then only writes its K/V, and the stream
    after the last layer is the stream after l. The runtime clears it after each step."""

    available: bool = False  # installed on this worker's model (known after attach)
    after: int | None = None  # this step stops after this layer

    def stop_after(self, layer: int) -> None:
        if not self.available:
            raise RuntimeError("layer skipping is not installed on this worker")
        self.after = layer


@dataclass
class StepCounts:
    """The current step's batch, controlled requests or not (updated before `plan`)."""

    tokens: int = 0  # token rows the step schedules


@dataclass(frozen=True)
class WorkerContext:
    fingerprint: ModelFingerprint
    hidden_size: int
    num_layers: int
    max_num_tokens: int  # token rows a step can hold
    max_num_reqs: int  # requests a step can hold
    device: torch.device
    dtype: torch.dtype
    eager: bool  # False: on_layer is traced into compiled graphs
    tp_rank: int
    layer_skip: LayerSkip = field(default_factory=LayerSkip)
    step: StepCounts = field(default_factory=StepCounts)
    # the runtime's shared step tables, as this control sees them (plugins/shared_tables
    # .ControlTables): private slots, job-table rows, host jobs; None outside a runtime
    tables: Any = None


@dataclass(frozen=True)
class RequestRows:
    """One request's rows in this step, with the state its setup returned."""

    state: Any
    rid: str
    choice: int  # which of the reply's n choices
    start: int  # token rows start..end of the step's hidden states
    end: int
    position: int  # position of row `start` in the request's sequence
    prompt_end: int  # rows start..prompt_end are prompt tokens, the rest generated
    samples: bool  # row end - 1 samples the request's next token


class WorkerControl(ABC):
    def attach(self, model: torch.nn.Module) -> None:  # noqa: B027  (optional hook)
        """The model is loaded, before vLLM compiles or captures it: install hooks of
        this control's own on its modules (the `experts` control edits each MoE
        router's pick). Touch vLLM internals only through vllm_compat modules."""

    def describe(self) -> dict[str, Any]:
        """JSON facts the worker found at attach (e.g. the model's MoE layers), sent
        to the server once and given to resolve as ResolveContext.worker."""
        return {}

    @abstractmethod
    def setup(self, wire: dict[str, Any], prompt_tokens: int) -> Any:
        """Per request, once, on the host; raise ControlSetupError if it cannot run."""

    def release(self, state: Any) -> None:  # noqa: B027  (optional hook)
        """The request is gone: give back what setup took."""

    @abstractmethod
    def plan(self, rows: list[RequestRows]) -> None:
        """Every step (rows may be empty): write this control's tables for the step."""

    def on_layer(self, layer: int, hidden: torch.Tensor,  # noqa: B027  (optional hook)
                 residual: torch.Tensor | None) -> None:
        """Every decoder layer: hidden [T, H] (modified in place), residual [T, H]. A
        control that works only through the shared tables does not override it."""

    def collect(self, rows: RequestRows) -> Any:
        """After the step, per request: a JSON value for `report` (None: nothing)."""
        return None

    def after_step(self) -> None:  # noqa: B027  (optional hook)
        """After the step's collect: make the device tables idle, if a forward vLLM
        runs between steps (a warm-up or dummy batch) must not change the control's
        device state."""

    ends: bool = False  # True: ends_request may end a request (asked every sampling)

    def ends_request(self, state: Any) -> tuple[torch.Tensor, int] | None:
        """Asked at every sampling step of a request (for controls with `ends = True`):
        a device flag, (tensor, index), that the sampler reads after this step's forward:
        above 0, the request's next token is its end token. None: not this step."""
        return None


class Control(ABC):
    name: str  # its key under `control`
    schema: type[BaseModel]  # validates control.<name> (extra fields: 400)
    # True for controls that only read the stream (capture, monitor): their on_layer
    # runs after every control that edits it, so they see the layer's final stream
    reads_only: bool = False
    # True: `collect` gives one result per sampled token (and None otherwise); the
    # reply's report gets exactly the results of the tokens the reply holds
    per_token: bool = False
    # a control whose fields depend on a mode: its server/mode_schema.ModeFields table
    # (the 400 for a field the mode does not read; one OpenAPI variant per mode)
    modes: Any = None

    @abstractmethod
    def resolve(self, request: BaseModel, ctx: ResolveContext) -> Resolution:
        """Validate against artifacts, model and policy; raise ctx.error(...) on 4xx."""

    @abstractmethod
    def worker(self, ctx: WorkerContext) -> WorkerControl | None:
        """This control's worker half, once per worker process (None: it has none, e.g.
        it only writes shared-table entries through `Resolution.steer`)."""

    def report(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """control.<name> of the response: `applied`, and the collected `results` of
        every step of the reply (in step order)."""
        return applied

    def missing(self, applied: dict[str, Any], results: list[Any]) -> list[str]:
        """What `report` needs that `results` (every step of the reply so far) lacks, in
        words ([]: complete). The server waits while it is not; after the deadline each
        item becomes part of a coded `report_incomplete` error."""
        return []

    def stream_part(self, applied: dict[str, Any], results: list[Any]) -> dict[str, Any]:
        """For a Resolution with `streams`: what a stream chunk carries under
        control.<name>, given the results of the tokens the chunk added (per_token)."""
        return {}

    finishes = False  # True: finish_reason below may change the reply's finish_reason

    def finish_reason(self, report: dict[str, Any]) -> str | None:
        """The reply's finish_reason when this control ended it (None: vLLM's stays).
        Streams hold the chunk carrying finish_reason until the report is in."""
        return None

    def replacement(self, report: dict[str, Any]) -> str | None:
        """With finish_reason: the text the reply shows instead of what the model wrote
        (a hallucination probe that abstained), or None to keep it."""
        return None
