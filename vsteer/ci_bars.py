"""Grouped bar charts with confidence-interval whiskers, one group per source (the
left-one-source-out reports of refusal and probes)."""

from __future__ import annotations

from typing import Any

Bar = tuple[float, float, float] | None  # (value, lo, hi), None: no bar for this source


def grouped_ci_bars(names: list[str], series: list[tuple[str, str, list[Bar]]]
                    ) -> tuple[Any, Any]:
    """A new (figure, axes); series: (label, colour, one Bar per name). The bars of a
    group sit side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(series), 1)
    for k, (label, colour, bars) in enumerate(series):
        xs, ys, err = [], [], [[], []]
        for i, bar in enumerate(bars):
            if bar is None:
                continue
            v, lo, hi = bar
            xs.append(i + (k - (len(series) - 1) / 2) * width)
            ys.append(v)
            err[0].append(v - lo)
            err[1].append(hi - v)
        ax.bar(xs, ys, width, yerr=err, capsize=3, color=colour, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20)
    return fig, ax
