"""Render docs/assets/frontier-bible-en-fr.png, the README's picture, from a committed record only.

The record is the tabular benchmark's table of the default bank (``benchmarks/results/table-bible-en-fr-retrained.csv``:
every one of its 21,025 plans scored once, teacher-forced loss on 100 dev verses, latency predicted by the fitted
profile of ``cpu-1t-b1``). Needs matplotlib (the ``docs`` extra)::

    python docs/tools/frontier_png.py
"""

from __future__ import annotations

import csv
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TABLE = os.path.join(REPO, "benchmarks", "results", "table-bible-en-fr-retrained.csv")
OUT = os.path.join(REPO, "docs", "assets", "frontier-bible-en-fr.png")
MARKED = {"0-1,2-3,4-5/0-1,2-3,4-5": "uniform 2-layer modules (3+3)",
          "0,x1,2,x3,4,x5/0,x1,2,x3,4,x5": "drop every other layer (3+3)",
          "0,1,2,3,4,5/0-2,3-5": "decoder of two 3-layer modules (6+2)"}


def main() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    with open(TABLE, newline="") as f:
        rows = list(csv.DictReader(f))
    teacher = rows[0]
    assert teacher["plan"] == "0,1,2,3,4,5/0,1,2,3,4,5"
    t_lat, t_loss = float(teacher["profile_latency_ms"]), float(teacher["loss"])
    pts = [(t_lat / float(r["profile_latency_ms"]), float(r["loss"]), r["plan"]) for r in rows]
    # The exact front: no other plan is at least as fast with a lower loss.
    front, best = [], float("inf")
    for s, loss, plan in sorted(pts, key=lambda p: (-p[0], p[1])):
        if loss < best:
            front.append((s, loss, plan))
            best = loss
    front.sort()
    fig, ax = plt.subplots(figsize=(7.2, 4.0), dpi=110)
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=3, c="#9aa5b1", alpha=0.25, linewidths=0,
               label=f"every plan of the bank ({len(pts):,})", rasterized=True)
    ax.step([p[0] for p in front], [p[1] for p in front], where="pre", color="#1f77b4", lw=2)
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=22, color="#1f77b4", zorder=3,
               label=f"the frontier ({len(front)} plans)")
    ax.scatter([1.0], [t_loss], marker="*", s=220, color="#111", zorder=4, label="teacher (6+6)")
    by_plan = {p[2]: p for p in pts}
    for (plan, text), colour in zip(MARKED.items(), ("#d62728", "#8c564b", "#ff7f0e")):
        s, loss, _ = by_plan[plan]
        ax.scatter([s], [loss], marker="D", s=40, color=colour, zorder=4, label=f"{text}")
    ax.set_yscale("log")
    ax.set_yticks([2.5, 3, 4, 6, 10, 20])
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("speed-up over the teacher (predicted, cpu-1t-b1: 1 thread, batch 1)")
    ax.set_ylabel("dev loss (nats/token, log scale)")
    ax.set_title("The default bank: 21,025 assemblies and their frontier", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, loc="upper left", framealpha=0.9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    fig.savefig(OUT, dpi=110)
    return OUT


if __name__ == "__main__":
    print(main())
