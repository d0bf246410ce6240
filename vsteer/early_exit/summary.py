"""Per-token early-exit records -> the statistics a response (and the benchmark)
reports."""

from __future__ import annotations

from typing import Any


def summarize_exits(records: list[list[int]], num_layers: int) -> dict[str, Any]:
    """Per-token [exit layer, agreement] records -> the response's exit statistics.
    A token exiting after layer l skips layers l+1..L-1; `agreement` (observe only) is
    over the tokens that could exit."""
    last = num_layers - 1
    layers = [la for la, _ in records]
    known = [a for la, a in records if la < last and a >= 0]
    hist: dict[str, int] = {}
    for la in layers:
        hist[str(la)] = hist.get(str(la), 0) + 1
    return {
        "tokens": len(records), "exit_layers": layers,
        "exited_tokens": sum(1 for la in layers if la < last),
        "histogram": dict(sorted(hist.items(), key=lambda kv: int(kv[0]))),
        "saved_fraction": (sum(last - la for la in layers) / (num_layers * len(layers))
                           if layers else 0.0),
        "agreement": sum(known) / len(known) if known else None,
    }
