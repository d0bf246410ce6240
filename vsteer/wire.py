"""What the server sends to the worker inside `SamplingParams.extra_args["vsteer"]`.

vLLM's `vllm_xargs` only carries flat values, so the resolved, validated control spec
travels as one JSON string. Only the server builds these; the worker trusts them.
"""

from __future__ import annotations

import msgspec

EXTRA_ARGS_KEY = "vsteer"
MAX_STEER_ENTRIES = 8  # entries per request (K in the kernel's row tables)


class WireSteer(msgspec.Struct, frozen=True):
    key: str  # slot key: same key == same slot contents
    path: str  # safetensors file in the shared artifact directory
    sha256: str  # content the server validated; the worker checks it on load
    layers: list[int]
    scale: float
    op: str  # add | ablate | add_normalized
    positions: str  # all | prompt | generated | last (plugins/position_window.py)
    # "" = a steering vector file; "refusal" = a direction's per-layer refusal tensors;
    # "refusal@<l>" = its layer-l tensor, placed at every layer in `layers`.
    part: str = ""
    # prompt / generated only: tokens [a, b) of that part (b None: to its end; a prompt
    # window's negative bounds count from the prompt's end)
    window: tuple[int, int | None] | None = None


class WireDecide(msgspec.Struct, frozen=True):
    """A decision made inside prefill (guard or controller), at the last prompt token:
    the `refusal` control's wire in guard and controller modes."""

    kind: str  # guard | controller
    layer: int  # decide on the stream after this layer
    direction_path: str
    direction_sha256: str
    force_layers: list[int]  # layers the decision may steer (all after `layer`)
    source_key: str  # shared slot: the direction's refusal tensors at force_layers
    threshold: float
    scale: float = 1.0  # guard: coefficient of the force when it fires
    controller_path: str = ""
    controller_sha256: str = ""


class WireProbe(msgspec.Struct, frozen=True):
    """A hallucination probe run inside prefill (and per generated token): the
    `hallucination` control's wire."""

    path: str
    sha256: str
    action: str  # annotate | abstain | mitigate
    threshold: float
    per_token: bool = False
    # mitigate: the probe's truth tensors (shared slot) copied, times `scale`, into this
    # request's private slot when the probe fires
    source_key: str = ""
    mitigate_layers: list[int] = []
    scale: float = 1.0


class WireExit(msgspec.Struct, frozen=True):
    """Early exit, decided at the row that samples each token (the `early_exit` control's
    wire, plugins/exit_control.py)."""

    path: str  # exit predictor artifact
    sha256: str
    mode: str  # observe | exit
    thresholds: list[float]  # confidence threshold per candidate layer (> 1: never)


class WireCapture(msgspec.Struct, frozen=True):
    layers: list[int]  # residual stream after these layers, every prompt token


class WireSpec(msgspec.Struct, frozen=True):
    rid: str  # correlation id for results sent back to the server
    n: int = 1  # choices in the reply: engine requests sharing this rid
    steer: list[WireSteer] = []
    capture: WireCapture | None = None  # offline tools' capture (plugins/capture.py)
    plugins: dict[str, str] = {}  # installed controls: name -> their wire (JSON text)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireSpec)


def encode(spec: WireSpec) -> str:
    return _encoder.encode(spec).decode()


def decode(text: str) -> WireSpec:
    return _decoder.decode(text)


def slot_key(name: str, sha256: str, layers: list[int]) -> str:
    return f"{name}@{sha256[:16]}:{','.join(map(str, layers))}"


def steer_entry(name: str, sha256: str, path: str, layers: list[int], scale: float,
                op: str = "add", positions: str = "all", part: str = "",
                window: tuple[int, int | None] | None = None) -> WireSteer:
    """The wire form of one steering entry for the artifact `name` at `path`."""
    key = slot_key(f"{name}#{part}" if part else name, sha256, layers)
    return WireSteer(key=key, path=str(path), sha256=sha256, layers=list(layers), scale=scale,
                     op=op, positions=positions, part=part, window=window)
