"""What the structure-aware sampler predicts before it proposes: each constraint's violation for a plan not yet
measured, from the plans the study has measured.

In a deep bank most one-block edits of the front's most compressed plans break a quality constraint (the
SmolLM2-135M study screened 21 of 59 proposals on that ground). The model that avoids them is the one the plan
structure suggests: a plan's quality is the teacher's, changed by each block that is not an original layer,
and the changes compound. So, per constraint:

- if, over the completed trials, the violation is an exact affine function of one objective (``quality <= 3 *
  teacher`` is ``perplexity - 3 * teacher``), the objective is modelled (its logarithm while it is positive:
  the changes multiply) and mapped back; otherwise the violation itself;
- the modelled value is additive in the plan's non-layer blocks (one weight per module span and per dropped
  layer, per stack, plus one per kind of block, drop or module of a length, and one per layer a module stands
  in for), fitted by ridge regression; the transform (log or linear) and the ridge strength are picked by
  leave-one-out error on the violations;
- a child is predicted from a measured parent: the parent's own value plus the weights of the blocks the child
  adds, minus those it removes, so only the edit is extrapolated. A block never measured weighs what its kind
  weighs on average (a drop what drops cost, a 3-layer module what 3-layer modules cost), a module of a length
  never measured what modules cost per layer; where nothing is known the model is optimistic (weight 0), so
  those edits stay open.

Screened trials count with their cheap estimate (user attribute ``constraint_estimates``).

>>> m = ConstraintModel.fit([("0,1,2", {"q": -2.0}, [1.0]), ("0-1,2", {"q": -1.0}, [2.0]),
...     ("0,1-2", {"q": -1.5}, [1.5]), ("0,x1,2", {"q": 1.0}, [4.0])])
>>> m.violations("0,x1,x2", parent="0,x1,2")["q"] > 0
True
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from ..plan._plan import DROP, LAYER, MODULE, AssemblyPlan
from ._pareto import pareto_front

__all__ = ["ConstraintModel", "ObjectiveModel", "ESTIMATES_ATTR", "OBJECTIVE_ESTIMATES_ATTR"]

#: The user attribute where a screened trial keeps its estimated violations, ``{constraint: violation}``.
ESTIMATES_ATTR = "constraint_estimates"
#: The user attribute where a screened trial keeps its estimated objectives, in the study's order, None where the
#: screen estimates nothing (a measured latency): what the objective model learns from a plan never fully scored.
OBJECTIVE_ESTIMATES_ATTR = "objective_estimates"


def objective_estimates(objectives, estimate: float) -> list[float | None]:
    """A screened trial's :data:`OBJECTIVE_ESTIMATES_ATTR`: the screen's estimate in the quality's place."""
    return [estimate if o == "quality" else None for o in objectives]


_RIDGE = (1e-3, 1e-2, 1e-1, 1.0)


@lru_cache(maxsize=65536)
def _features(plan: str) -> tuple[tuple[tuple, float], ...]:
    """A plan's features, ``((name, value), ...)``: each non-layer block (1); per stack, how many blocks of each
    kind it has (drops; modules of each length), which carries what such blocks cost on average to the ones
    never measured; and how many layers its modules stand in for beyond one each, which carries what modules
    cost per layer to lengths never measured."""
    out: dict[tuple, float] = {}
    for s, blocks in enumerate(AssemblyPlan.parse(plan).stacks):
        for b in blocks:
            for f, x in _block_features(s, b):
                out[f] = out.get(f, 0.0) + x
    return tuple(sorted(out.items()))


def _block_features(s: int, b) -> list[tuple[tuple, float]]:
    """One block's share of a plan's features (none for an original layer): the features are sums of these."""
    if b.kind == LAYER:
        return []
    n = b.end - b.start + 1
    out = [((s, b.start, b.end, b.kind), 1.0), ((s, -1, n, b.kind), 1.0)]  # start -1: the kind
    if b.kind == MODULE:
        out.append(((s, -2, 0, "merged"), float(n - 1)))
    return out


def _dot(weights: dict, feats) -> float:
    return sum(weights.get(f, 0.0) * x for f, x in feats)


class _Fit:
    """One constraint's additive model: ``y = b + sum of block weights``, ``v = back(y)``."""

    def __init__(self, weights: dict, intercept: float, back, forward, known: dict[str, float]):
        self.weights, self.intercept, self.back, self.forward, self.known = weights, intercept, back, forward, known

    def predict(self, plan: str, parent: str | None) -> float:
        if plan in self.known:
            return self.known[plan]
        mine = _dot(self.weights, _features(plan))
        if parent is not None and parent in self.known:
            y = self.forward(self.known[parent]) + mine - _dot(self.weights, _features(parent))
        else:
            y = self.intercept + mine
        return self.back(y)


class ConstraintModel:
    """Predicted constraint violations (``> 0``: infeasible) of unmeasured plans; see the module docstring."""

    def __init__(self, fits: dict[str, _Fit]):
        self.fits = fits

    @classmethod
    def fit(cls, points: list[tuple[str, dict[str, float], list[float] | None]]) -> ConstraintModel:
        """``points``: (plan, {constraint: violation}, objective values or None for an estimate) per trial."""
        fits = {}
        for name in sorted({k for _, c, _ in points for k in c}):
            rows = [(plan, c[name], vals) for plan, c, vals in points if name in c and math.isfinite(c[name])]
            if len(rows) >= 3:
                fits[name] = _fit_one(rows)
        return cls(fits)

    def violations(self, plan: str, parent: str | None = None) -> dict[str, float]:
        """Each constraint's predicted violation of ``plan``, from ``parent`` if it was measured."""
        return {name: f.predict(str(plan), None if parent is None else str(parent)) for name, f in self.fits.items()}

    def feasible(self, plan, parent=None) -> bool:
        return all(v <= 0 for v in self.violations(plan, parent).values())


class ObjectiveModel:
    """Predicted objective values of unmeasured plans, each objective modelled as a constraint's violation is
    (additive in the plan's non-layer blocks, its logarithm where the leave-one-out error says so, a child
    predicted from its measured parent plus the edit): what the sampler ranks its candidate edits by.

    >>> m = ObjectiveModel.fit([("0,1,2", [10.0, 3.0]), ("0-1,2", [12.0, 2.0]), ("0,1-2", [11.0, 2.0]),
    ...     ("0,x1,2", [20.0, 2.0])])
    >>> m.predict("0,x1,x2", parent="0,x1,2")[0] > 20.0    # a second drop costs what drops cost
    True
    """

    def __init__(self, fits: list[_Fit]):
        self.fits = fits

    @classmethod
    def fit(cls, points: list[tuple[str, list[float | None]]]) -> ObjectiveModel | None:
        """``points``: (plan, objective values) of the measured plans, None (or NaN) where a value is not known
        (a screened plan's measured latency); each objective is fitted on the plans that have it. None while an
        objective has fewer than 3 finite values."""
        if not points:
            return None
        fits = []
        for k in range(len(points[0][1])):
            rows = [(str(p), float(v[k])) for p, v in points if v[k] is not None and math.isfinite(v[k])]
            if len(rows) < 3:
                return None
            fits.append(_fit_one([(p, x, [x]) for p, x in rows]))
        return cls(fits)

    def predict(self, plan, parent=None) -> list[float]:
        """Each objective's predicted value for ``plan``, from ``parent`` if it was measured."""
        return [f.predict(str(plan), None if parent is None else str(parent)) for f in self.fits]

    def front(self, space, sign: list[float], cap: int = 256) -> list[AssemblyPlan]:
        """The plans of ``space`` the model predicts non-dominated (``sign``: 1 where an objective is minimised,
        -1 where maximised). Every objective is a monotone function of a sum over the plan's blocks, so a
        dynamic programme over each stack's positions (the best tails from each layer on) finds them exactly
        while each position keeps at most ``cap`` tails; beyond that, ``cap`` spread along the first objective."""
        def term(s, b):
            feats = _block_features(s, b)
            return tuple(sg * _dot(f.weights, feats) for sg, f in zip(sign, self.fits))

        per_stack = []
        for s, depth in enumerate(space.depths):
            # tails[p][kept]: (losses, blocks) of the non-dominated tilings of layers p.. (kept: any block kept)
            tails: list[dict[bool, list]] = [{} for _ in range(depth + 1)]
            tails[depth] = {False: [((0.0,) * len(sign), ())]}
            for p in range(depth - 1, -1, -1):
                groups: dict[bool, list] = {}
                for b in space._choices(s, p):
                    if b.end >= depth:
                        continue
                    t = term(s, b)
                    for kept, rest in tails[b.end + 1].items():
                        k = kept or b.kind != DROP
                        groups.setdefault(k, []).extend((tuple(x + y for x, y in zip(t, v)), (b, *bl))
                                                        for v, bl in rest)
                tails[p] = {k: _thin(v, cap) for k, v in groups.items()}
            per_stack.append(tails[0].get(True, []))
        combos = [((0.0,) * len(sign), ())]
        for stack in per_stack:
            combos = _thin([(tuple(x + y for x, y in zip(v, w)), (*st, bl)) for v, st in combos for w, bl in stack],
                           cap)
        return [AssemblyPlan(stacks) for _, stacks in combos]


def _thin(points: list, cap: int) -> list:
    """The non-dominated ``(losses, payload)`` of ``points`` (one of equal losses), at most ``cap`` of them,
    spread evenly along the first loss."""
    front = [points[i] for i in pareto_front([x for x, _ in points])]
    if len(front) <= cap:
        return front
    front.sort(key=lambda x: x[0])
    return [front[round(i * (len(front) - 1) / (cap - 1))] for i in range(cap)]


def _link(rows) -> tuple[float, float] | None:
    """``(a, c)`` with violation = a * objective + c exactly over the completed trials, for the first objective
    that gives one, else None."""
    done = [(v, vals) for _, v, vals in rows if vals is not None]
    if len(done) < 3:
        return None
    v = np.array([d[0] for d in done])
    for i in range(len(done[0][1])):
        x = np.array([d[1][i] for d in done], dtype=float)
        if not np.all(np.isfinite(x)) or np.ptp(x) <= 1e-12 * (1 + np.abs(x).max()):
            continue
        a, c = np.polyfit(x, v, 1)
        if abs(a) > 1e-12 and np.abs(a * x + c - v).max() <= 1e-6 * (1 + np.abs(v).max()):
            return float(a), float(c)
    return None


def _fit_one(rows) -> _Fit:
    plans = [r[0] for r in rows]
    v = np.array([r[1] for r in rows], dtype=float)
    feats = sorted({f for p in plans for f, _ in _features(p)})
    col = {f: k for k, f in enumerate(feats)}
    X = np.zeros((len(plans), len(feats) + 1))
    X[:, -1] = 1.0
    for i, p in enumerate(plans):
        for f, x in _features(p):
            X[i, col[f]] = x
    transforms = [(lambda y: y, lambda y: y)]  # (forward: violation -> y, back: y -> violation)
    link = _link(rows)
    if link is not None:
        a, c = link
        obj = (v - c) / a
        transforms.append((lambda u, a=a, c=c: (u - c) / a, lambda y, a=a, c=c: a * y + c))
        if np.all(obj > 0):
            transforms.append((lambda u, a=a, c=c: math.log(max((u - c) / a, 1e-300)),
                               lambda y, a=a, c=c: a * math.exp(min(y, 700.0)) + c))
    best = None
    for forward, back in transforms:
        y = np.array([forward(u) for u in v])
        for lam in _RIDGE:
            pen = np.full(X.shape[1], lam)
            pen[-1] = 1e-9  # the intercept (the teacher's value) is not shrunk
            inv = np.linalg.inv(X.T @ X + np.diag(pen))
            w = inv @ X.T @ y
            hat = np.einsum("ij,jk,ik->i", X, inv, X)
            loo_y = y - (y - X @ w) / np.maximum(1.0 - hat, 1e-6)  # leave-one-out predictions, closed form
            err = float(np.mean([(back(p) - u) ** 2 for p, u in zip(loo_y, v)]))
            if best is None or err < best[0]:
                best = (err, w, forward, back)
    _, w, forward, back = best
    return _Fit({f: float(w[col[f]]) for f in feats}, float(w[-1]), back, forward, dict(zip(plans, v.tolist())))
