"""Pareto fronts and hypervolume: the one implementation that the search's progress bar and printed frontier,
the results API, the report and the benchmarks all use, so that they never disagree on ties.

Everything is minimised. Quality is turned into a loss by negation when it is maximised, and, for hypervolume,
every objective is divided by the teacher's (so a study's hypervolume is comparable across runs), with the
reference point at quality 0 (or 10x the teacher's when lower is better) and costs 1.1x the teacher's.

>>> pareto_front([[0, 1], [1, 0], [1, 1], [0, 1]])
[0, 1]
>>> hypervolume([[0.0, 1.0], [1.0, 0.0]], [2.0, 2.0])
3.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def pareto_front(losses: Sequence[Sequence[float]]) -> list[int]:
    """Indices (ascending) of the non-dominated points. Of several identical points only the first is kept.

    Sorted lexicographically, a point can only be dominated by one before it, and then by a front member:
    O(n · front); in 2-D a sweep, O(n log n)."""
    order = sorted(range(len(losses)), key=lambda i: (tuple(losses[i]), i))
    front: list[int] = []
    if losses and len(losses[0]) == 2:
        best = math.inf
        for i in order:
            if losses[i][1] < best:
                front.append(i)
                best = losses[i][1]
        return sorted(front)
    import numpy as np

    a = np.asarray(losses, dtype=float)
    for i in order:  # each point against the front so far at once: the whole-space fronts hold thousands
        if not front or not (a[front] <= a[i]).all(axis=1).any():
            front.append(i)
    return sorted(front)


def hypervolume(losses: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Hypervolume dominated by ``losses`` up to ``reference``; points beyond it count nothing.

    Exact in 2-D here; in more dimensions through Optuna's WFG implementation (a private module, so this is the
    only place that touches it)."""
    pts = [tuple(p) for p in losses if all(x < r for x, r in zip(p, reference))]
    if not pts:
        return 0.0
    pts = [pts[i] for i in pareto_front(pts)]
    if len(reference) == 2:
        hv, prev_y = 0.0, reference[1]
        for x, y in sorted(pts):
            hv += (reference[0] - x) * (prev_y - y)
            prev_y = y
        return hv
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(np.asarray(pts, dtype=float), np.asarray(reference, dtype=float)))


def normalised_losses(values: Sequence[float], teacher: Sequence[float], maximize_quality: bool) -> list[float]:
    """Objective values divided by the teacher's, as losses: quality (the first) is negated when maximised."""
    out = []
    for k, (v, t) in enumerate(zip(values, teacher)):
        scale = abs(t) if t and math.isfinite(t) else 1.0
        out.append((-v if k == 0 and maximize_quality else v) / scale)
    return out


def reference_point(n: int, maximize_quality: bool) -> list[float]:
    """The hypervolume reference of teacher-normalised losses: quality 0 (10x the teacher's when lower is
    better), costs 1.1x the teacher's."""
    return [0.0 if maximize_quality else 10.0] + [1.1] * (n - 1)
