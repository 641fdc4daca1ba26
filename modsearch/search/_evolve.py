"""A structure-aware evolutionary sampler for large plan spaces: edits of the plans on the feasible front.

NSGA-II's mutation and crossover act gene by gene, so most of its children in a deep bank are plans no nearby
front member resembles (a random gene turned into a drop, a module moved half-way across the stack); on the
Gemma-3-270M study all 24 of its proposals broke the constraint. This sampler proposes, after the enqueued
seeds, plans one block edit away from a plan on the current *feasible* front (:func:`modsearch.plan.neighbours`:
drop or keep a layer, merge blocks into a module, split, shift), a share of one-point crossovers between two
front members on block boundaries, and a small share of uniformly random plans. By default (``acquisition="hvi"``)
the edit is the candidate predicted to add the most hypervolume, the candidates being every edit of the first two
ranks and the front that a model of the objectives (:class:`~modsearch.search._surrogate.ObjectiveModel`,
additive in the blocks) predicts over the whole space, found by dynamic programming. Parents come from feasible
trials only (from the least violating ones while none is feasible); a parent whose every neighbour is known
passes its turn to the next one, then to the next non-dominated rank. It never proposes a plan any trial of the
study holds (finished, running, queued, screened or failed), while the space has others.

It is an Optuna sampler over the genome's genes (:meth:`infer_relative_search_space` is the whole genome,
:meth:`sample_relative` one plan's genes), so ``modsearch search`` and scale-out workers run it unchanged.
Deterministic for a seed: each trial's choices come from a generator seeded with (seed, trial number), so the
same study history gives the same proposal, in any process.

>>> sampler = PlanEvolutionSampler(genome, seed=0)                        # doctest: +SKIP
>>> optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)   # doctest: +SKIP
"""

from __future__ import annotations

import math
import random

from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

from .._errors import UserError
from ..plan._edits import crossovers, neighbours
from ..plan._plan import AssemblyPlan
from ._config import SAMPLERS
from ._pareto import hypervolume, pareto_front
from ._surrogate import ESTIMATES_ATTR, OBJECTIVE_ESTIMATES_ATTR, ConstraintModel, ObjectiveModel

__all__ = ["PlanEvolutionSampler"]

#: The user attribute where the sampler records what it did: ``{"move": ..., "parents": [plans]}``.
PROPOSAL_ATTR = "proposal"
#: How an edit is chosen: ``hvi``, the plan predicted to add the most hypervolume among the one-block edits of the
#: front and the model's own front over the whole space; ``hvi-local``, among the edits alone; ``random``, a
#: random edit of a parent drawn by a crowding tournament.
ACQUISITIONS = SAMPLERS["evolve"]["acquisition"]


class PlanEvolutionSampler(BaseSampler):
    """Proposes edits of the feasible front's plans (see the module docstring).

    ``crossover_prob``: the share of proposals that cross two front members; ``random_prob``: the share drawn
    uniformly from the space (exploration; in a deep space most such plans are infeasible, so keep it small);
    ``predict_constraints``: propose only plans the constraint model
    (:class:`~modsearch.search._surrogate.ConstraintModel`, fitted on the study's measured plans) predicts
    feasible, while there are such plans.
    """

    def __init__(self, genome, *, seed: int | None = None, crossover_prob: float = 0.2, random_prob: float = 0.05,
                 predict_constraints: bool = True, acquisition: str = "hvi"):
        if acquisition not in ACQUISITIONS:
            raise UserError(f"sampler evolve: unknown acquisition {acquisition!r}: use {' or '.join(ACQUISITIONS)}")
        self.genome = genome
        self.predict_constraints = predict_constraints
        self.acquisition = acquisition
        self.space = genome.space
        self.seed = 0 if seed is None else seed
        self.crossover_prob = crossover_prob
        self.random_prob = random_prob
        self._independent = RandomSampler(seed=seed)
        self._plans: dict[int, str] = {}  # trial id -> plan, for trials whose plan can no longer change

    # -- the Optuna protocol ------------------------------------------------------------------------------
    def infer_relative_search_space(self, study, trial) -> dict:
        return {name: CategoricalDistribution(list(opts)) for name, opts in self.genome.choices.items()}

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space or trial.system_attrs.get("fixed_params"):
            return {}  # an enqueued seed: its genes are given
        plan, move, parents, predicted = self.propose(study, trial.number)
        record = {"move": move, "parents": [str(p) for p in parents]}
        if predicted is not None:
            record["predicted"] = predicted  # chosen by the hypervolume it was predicted to add
        study._storage.set_trial_user_attr(trial._trial_id, PROPOSAL_ATTR, record)
        params = self.genome.to_params(plan)
        return {name: params.get(name, "L") for name in search_space}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    # -- proposals ----------------------------------------------------------------------------------------
    def _plan_of(self, t) -> str | None:
        if t._trial_id in self._plans:
            return self._plans[t._trial_id]
        plan = t.user_attrs.get("plan")
        if plan is None:
            params = t.params if t.state != TrialState.WAITING else t.system_attrs.get("fixed_params") or {}
            if not set(self.genome.choices) <= set(params):
                return None  # a trial still being suggested
            plan = str(self.genome.decode(params))
        if t.state.is_finished() or t.state == TrialState.WAITING:
            self._plans[t._trial_id] = plan
        return plan

    def propose(self, study, number: int) -> tuple[AssemblyPlan, str, list[AssemblyPlan], list[float] | None]:
        """The plan for trial ``number``, the move that made it (``random``, ``crossover``, ``model-front`` or
        an edit of :data:`modsearch.plan.EDITS`), its parents and, when the acquisition chose it by predicted
        hypervolume, its predicted objectives (else None)."""
        rng = random.Random(f"{self.seed}:{number}")
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != number]
        known = {p for t in trials if (p := self._plan_of(t)) is not None}
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None
                and self._plan_of(t) is not None]
        ranks = _Ranks(done, study.directions)
        model = self._model(trials) if self.predict_constraints else None

        def excess(child, parent=None) -> float:
            return 0.0 if model is None else sum(max(0.0, v) for v in model.violations(child, parent).values())

        def ok(child, parent=None) -> bool:
            return excess(child, parent) <= 0

        u = rng.random()
        fallback = None
        if done and u < self.random_prob and model is not None:
            plan = self._random(rng, known, ok, strict=True)
            if plan is not None:
                return plan, "random", [], None
            u = self.random_prob  # no random plan predicted feasible: an edit instead
        if done and u >= self.random_prob:
            if u < self.random_prob + self.crossover_prob:
                pool = [t for rank in ranks.first(2) for t in rank][:64]
                if len(pool) >= 2:
                    a, b = rng.sample(pool, 2)
                    pa, pb = AssemblyPlan.parse(self._plan_of(a)), AssemblyPlan.parse(self._plan_of(b))
                    children = [c for c in crossovers(pa, pb) + crossovers(pb, pa)
                                if str(c) not in known and ok(c, _nearer(c, pa, pb))]
                    if children:
                        return rng.choice(children), "crossover", [pa, pb], None
            if self.acquisition != "random":
                best = self._most_improving(done, trials, ranks, known, excess, study.directions, rng)
                if best is not None:
                    return best
            for rank in ranks:
                members = list(rank)
                rng.shuffle(members)
                if len(members) > 2:
                    # Binary tournament on crowding distance first (NSGA-II's): the ends of the front and its
                    # sparse stretches, where an edit adds the most, are tried more often than its dense middle.
                    spread = _crowding(members, ranks.sign)
                    a, b = members[0], members[1]
                    first = a if spread[a.number] >= spread[b.number] else b
                    members.remove(first)
                    members.insert(0, first)
                for t in members:
                    parent = AssemblyPlan.parse(self._plan_of(t))
                    options: dict[str, list[AssemblyPlan]] = {}
                    for child, kind in neighbours(parent, self.space):
                        if str(child) not in known:
                            e = excess(child, parent)
                            if e <= 0:
                                options.setdefault(kind, []).append(child)
                            elif fallback is None or e < fallback[0]:
                                fallback = (e, child, kind, parent)
                    if options:
                        kind = rng.choice(sorted(options))  # each kind of edit alike, then a child of it
                        return rng.choice(options[kind]), kind, [parent], None
            if fallback is not None and model is not None:
                # Every unknown edit of every ranked plan is predicted infeasible: the one predicted to break the
                # constraints least, so the model learns where it was wrong rather than the search leaving the
                # front for a random plan.
                _, child, kind, parent = fallback
                return child, kind, [parent], None
        return self._random(rng, known, ok), "random", [], None

    def _most_improving(self, done, trials, ranks, known, excess, directions, rng):
        """The new plan, predicted feasible, whose predicted objectives
        (:class:`~modsearch.search._surrogate.ObjectiveModel`) add the most hypervolume to the feasible front,
        among the one-block edits of the first two feasible ranks and (``hvi``) the model's own front over the
        whole space; ties drawn at random. The reference point is the worst of the measured front and of those
        candidates plus a tenth of their range, so it reaches as far as the constraints are predicted to allow
        (the measured plans alone would put every plan beyond the most compressed one at zero gain).
        ``(child, move, [parent], predicted objectives)``, or None when no candidate is predicted to add any."""
        feasible = [t for t in done if _feasible(t)]
        # The measured plans, and the screened ones by the screen's estimate (their quality; so the model knows
        # what the plans the screen stopped as infeasible cost in perplexity).
        screened = [(p, t.user_attrs[OBJECTIVE_ESTIMATES_ATTR]) for t in trials if t.state == TrialState.PRUNED
                    and t.user_attrs.get(OBJECTIVE_ESTIMATES_ATTR) and (p := self._plan_of(t)) is not None]
        model = ObjectiveModel.fit([(self._plan_of(t), list(t.values)) for t in done] + screened)
        if model is None or not feasible:
            return None
        sign = [-1.0 if d.name == "MAXIMIZE" else 1.0 for d in directions]
        pts = [[s * v for s, v in zip(sign, t.values)] for t in feasible]
        front = [pts[i] for i in pareto_front(pts)]
        parents = [AssemblyPlan.parse(self._plan_of(t)) for rank in ranks.first(2) for t in rank[:64]]
        candidates = [(child, kind, parent) for parent in parents for child, kind in neighbours(parent, self.space)]
        if self.acquisition == "hvi":
            # The model's own front over the whole space: the combinations no single edit of the front reaches.
            candidates += [(c, "model-front", _nearest(c, parents)) for c in model.front(self.space, sign)]
        scored, seen = [], set()
        for child, kind, parent in candidates:
            key = str(child)
            if key in known or key in seen or excess(child, parent) > 0:
                continue
            seen.add(key)
            loss = [s * v for s, v in zip(sign, model.predict(child, parent))]
            if all(math.isfinite(x) for x in loss):
                scored.append((child, kind, parent, loss))
        if not scored:
            return None
        cols = list(zip(*front, *(c[3] for c in scored)))
        ref = [max(c) + 0.1 * (max(c) - min(c)) + 1e-9 * (1.0 + abs(max(c))) for c in cols]
        base = hypervolume(front, ref)
        best, best_gain, ties = None, 0.0, 0
        for child, kind, parent, loss in scored:
            if any(all(f <= x for f, x in zip(p, loss)) for p in front):
                continue  # predicted dominated: adds nothing
            gain = hypervolume(front + [loss], ref) - base
            if gain > best_gain * (1 + 1e-12):
                best, best_gain, ties = (child, kind, [parent], loss), gain, 1
            elif best is not None and gain >= best_gain * (1 - 1e-12):
                ties += 1  # reservoir sampling over equal gains: each tie alike
                if rng.randrange(ties) == 0:
                    best = (child, kind, [parent], loss)
        if best is None:
            return None
        child, kind, parents, loss = best
        return child, kind, parents, [s * x for s, x in zip(sign, loss)]

    def _model(self, trials) -> ConstraintModel | None:
        """The constraint model of the measured trials (screened ones with their estimates), or None while no
        trial has a constraint."""
        points = []
        for t in trials:
            plan = self._plan_of(t) if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else None
            if plan is None:
                continue
            if t.state == TrialState.COMPLETE and t.values is not None and t.constraints:
                points.append((plan, dict(t.constraints), list(t.values)))
            elif t.state == TrialState.PRUNED and t.user_attrs.get(ESTIMATES_ATTR):
                points.append((plan, dict(t.user_attrs[ESTIMATES_ATTR]), None))
        model = ConstraintModel.fit(points) if points else None
        return model if model is not None and model.fits else None

    def _random(self, rng: random.Random, known: set[str], ok=lambda plan: True, strict: bool = False):
        """A new plan drawn uniformly, one ``ok`` says is feasible first; with ``strict``, None when none of 64
        draws is."""
        first = None
        for _ in range(64):
            plan = self.space.sample(1, seed=rng.randrange(2**32))[0]
            if str(plan) not in known:
                if ok(plan):
                    return plan
                first = first or plan
        if strict:
            return None
        if first is not None:
            return first  # none of 64 predicted feasible: the first new one
        if self.space.count() <= 100_000:  # nearly every plan known: look for one that is not
            rest = [p for p in self.space if str(p) not in known]
            if rest:
                return rng.choice(rest)
        return plan  # the space is exhausted: a known plan, served from the cache


def _nearer(child: AssemblyPlan, a: AssemblyPlan, b: AssemblyPlan) -> AssemblyPlan:
    """The parent that shares more blocks with ``child`` (a crossover child is predicted from it)."""
    return _nearest(child, [a, b])


def _nearest(child: AssemblyPlan, plans: list[AssemblyPlan]) -> AssemblyPlan:
    """The plan of ``plans`` (the first of equals) that shares the most blocks with ``child``: the measured plan
    a far child is predicted from."""
    blocks = {(s, x) for s, st in enumerate(child.stacks) for x in st}
    share = [len(blocks & {(s, x) for s, st in enumerate(p.stacks) for x in st}) for p in plans]
    return plans[share.index(max(share))]


def _feasible(t) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def _crowding(trials: list, sign: list[float]) -> dict[int, float]:
    """NSGA-II's crowding distance of each trial (by number) within one rank: infinite at the ends."""
    out = {t.number: 0.0 for t in trials}
    for k, s in enumerate(sign):
        order = sorted(trials, key=lambda t: (s * t.values[k], t.number))
        lo, hi = s * order[0].values[k], s * order[-1].values[k]
        out[order[0].number] = out[order[-1].number] = float("inf")
        if hi > lo:
            for i in range(1, len(order) - 1):
                out[order[i].number] += (s * order[i + 1].values[k] - s * order[i - 1].values[k]) / (hi - lo)
    return out


class _Ranks:
    """Non-dominated ranks of the feasible trials (the front first), computed as far as they are read; while
    none is feasible, the trials one per rank from the least violating (the way back into the feasible
    region)."""

    def __init__(self, trials: list, directions):
        feasible = [t for t in trials if _feasible(t)]
        self.sign = [-1.0 if d.name == "MAXIMIZE" else 1.0 for d in directions]
        self._ranks: list[list] = []
        self._rest = sorted(feasible, key=lambda t: t.number)
        if not feasible:
            order = sorted(trials, key=lambda t: (sum(max(0.0, v) for v in t.constraints.values()), t.number))
            self._ranks, self._rest = [[t] for t in order], []

    def __iter__(self):
        k = 0
        while True:
            while k >= len(self._ranks) and self._rest:
                rest = self._rest
                front = set(pareto_front([[s * v for s, v in zip(self.sign, t.values)] for t in rest]))
                self._ranks.append([t for i, t in enumerate(rest) if i in front])
                self._rest = [t for i, t in enumerate(rest) if i not in front]
            if k >= len(self._ranks):
                return
            yield self._ranks[k]
            k += 1

    def first(self, n: int) -> list[list]:
        return [r for _, r in zip(range(n), self)]
