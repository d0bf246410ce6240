"""The picture of `vsteer experts find`: per (layer, expert), routing share on the
positive minus the negative prompts, with the chosen pairs ringed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vsteer.experts.find import RankedExpert, RoutingShares


def plot_contrast(pos: RoutingShares, neg: RoutingShares, chosen: list[RankedExpert],
                  out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diff = pos.share - neg.share  # [L, E]
    rows = np.flatnonzero((pos.counts + neg.counts).sum(1))  # the MoE layers
    lim = max(float(np.abs(diff).max()), 1e-9)
    fig, ax = plt.subplots(figsize=(min(16, max(7, 2 + 0.25 * diff.shape[1])),
                                    min(12, max(3.5, 1.5 + 0.3 * len(rows)))))
    im = ax.imshow(diff[rows], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto",
                   interpolation="nearest")
    where = {int(la): i for i, la in enumerate(rows)}
    ax.scatter([r.expert for r in chosen], [where[r.layer] for r in chosen], s=80,
               facecolors="none", edgecolors="black", linewidths=1.5)
    ax.set_yticks(range(len(rows)), [str(int(r)) for r in rows])
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title("routing share, positive minus negative prompts\n"
                 f"({pos.tokens} vs {neg.tokens} token rows; ringed: the set)", fontsize=10)
    fig.colorbar(im, ax=ax, label="share difference")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
