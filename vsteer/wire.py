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
    positions: str  # all | prompt | generated


class WireCapture(msgspec.Struct, frozen=True):
    layers: list[int]  # residual stream after these layers, every prompt token


class WireSpec(msgspec.Struct, frozen=True):
    rid: str  # correlation id for results sent back to the server
    steer: list[WireSteer] = []
    capture: WireCapture | None = None


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireSpec)


def encode(spec: WireSpec) -> str:
    return _encoder.encode(spec).decode()


def decode(text: str) -> WireSpec:
    return _decoder.decode(text)


def slot_key(name: str, sha256: str, layers: list[int]) -> str:
    return f"{name}@{sha256[:16]}:{','.join(map(str, layers))}"


def steer_entry(name: str, sha256: str, path: str, layers: list[int], scale: float,
                op: str = "add", positions: str = "all") -> WireSteer:
    """The wire form of one steering entry for the vector `name` at `path`."""
    return WireSteer(key=slot_key(name, sha256, layers), path=str(path), sha256=sha256,
                     layers=list(layers), scale=scale, op=op, positions=positions)
