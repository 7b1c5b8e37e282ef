"""Accuracy against effective MACs of the committed full runs (`results*.json`).

Usage (needs matplotlib, e.g. ``pip install matplotlib``)::

    python packages/supertickets/benchmarks/plot.py   # writes accuracy-vs-macs.png here
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
SHOWN = (
    "supertickets",
    "supertickets + IR",
    "supertickets, equal c_i",
    "NAS-then-prune",
    "scratch (ticket arch + mask)",
    "random mask (ticket arch, matched counts)",
)


def main() -> None:
    """Plot one point per variant and sparsity (mean ± std over seeds)."""
    fig = Figure(figsize=(9.5, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    runs = [("0.9", HERE / "results.json", "o"), ("0.7", HERE / "results-sparsity-0.7.json", "s")]
    colors = dict(zip(SHOWN, ("C0", "C1", "C2", "C3", "C4", "C5"), strict=True))
    for label, path, marker in runs:
        rows = {r["variant"]: r for r in json.loads(path.read_text())["rows"]}
        for variant in SHOWN:
            r = rows[variant]
            ax.errorbar(
                r["flops_ratio"], r["mean"], yerr=r["std"], fmt=marker, color=colors[variant],
                label=f"{variant} (sparsity {label})", ms=5, capsize=2,
            )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("effective MACs / dense supernet (log)")
    ax.set_ylabel("test accuracy (digits)")
    ax.set_title("SuperTickets at CPU scale: accuracy vs effective MACs, 3 seeds")
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(HERE / "accuracy-vs-macs.png", dpi=110)


if __name__ == "__main__":
    main()
