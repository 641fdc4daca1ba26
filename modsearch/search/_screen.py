"""The multi-fidelity screen: a cheap teacher-forced perplexity first, full scoring only for plans that may
reach the front.

A study with a ``[screen]`` table (``windows = N``, ``margin = m``) scores each plan its sampler proposes on a
cheap fidelity before the full score: the teacher-forced perplexity of the first N dev texts, each cut to its
first window (``context_length`` tokens, else ``max_source_tokens``) for an lm task, or of the first N dev
examples' references for a seq2seq one. The plan is *screened out* when a plan of the current feasible front
that costs no more on every cost objective has a cheap perplexity lower by more than the margin
(``cheap(plan) > (1 + m) x cheap(front plan)``): it cannot reach the front unless the cheap fidelity misranks
the two by more than m. Costs are those known before scoring: params, FLOPs (:class:`LayerFlops`), and the
profile's predicted latency; a measured ``latency_ms`` objective reads the profile's prediction when the study
has a profile, else FLOPs (a kept block costs the same FLOPs whatever fills it, and the latency of one is
close to its share, so they order plans of a bank alike).

The screen also applies the study's perplexity constraints (``quality <= ...`` on an lm task scored by
perplexity): a plan's full perplexity is estimated as the teacher's times the ratio of the two cheap figures,
and a plan whose estimate breaks a bound by more than the margin is screened out by that constraint
(``screened_by = "constraint quality <= 3 * teacher"``): the sampler learns it is infeasible without a full
score or a timing. Where the cheap fidelity is exact (every dev text, uncut) the estimate is the full score.

A screened plan becomes a PRUNED trial with its cheap figure (``screen_perplexity``) and the front plan that
screened it (``screened_by``). The baseline seeds are screened by the constraints only (one far past a bound
cannot be on the front, and its full score and timing would take the sampler's time); the teacher, plans the
user listed and plans whose full score is already cached never are. A
screened trial counts toward ``n_trials`` (it is a trial) and the trial cap of ``n_plans`` (10 x n_plans
trials), not toward ``n_plans``, which counts fully scored plans: the budget it saves goes to other plans.
Front plans' cheap figures are computed once each, and every cheap figure is kept in the evaluation cache.
The default bank measured Spearman 0.95 between teacher-forced loss on its dev set and generated chrF
(benchmarks/tabular_search.py fidelity).
"""

from __future__ import annotations

import contextlib
import dataclasses

from ..plan._plan import AssemblyPlan

__all__ = ["Screen"]


class Screen:
    """The cheap fidelity of one study's plans and the verdict it gives (see the module docstring).

    ``evaluator`` is the study's :class:`~modsearch.search.PlanEvaluator` (bank, dev set, task, cache, profile);
    ``objectives`` the study's, quality first.

    >>> screen = Screen(evaluator, ["quality", "flops"], windows=4, margin=0.05)          # doctest: +SKIP
    >>> screen.check("0,1-2,3,4,5", study)                                             # doctest: +SKIP
    {'screen_perplexity': 41.2, 'screened_by': '0-1,2-3,4,5'}
    """

    def __init__(self, evaluator, objectives, windows: int, margin: float = 0.05, constraints=(),
                 teacher_quality: float | None = None):
        from ..data import DevSet
        from ..quality._score import QualityTask

        self.evaluator, self.bank = evaluator, evaluator.bank
        self.objectives, self.margin = list(objectives), margin
        dev, task = evaluator.devset, evaluator.task
        n = min(windows, len(dev))
        self.devset = dataclasses.replace(dev, sources=dev.sources[:n], ids=dev.ids[:n],
                                          targets=None if dev.targets is None else dev.targets[:n])
        cut = task.context_length or task.max_source_tokens
        self.task = QualityTask(task.task, metric="perplexity", source_field=task.source_field,
                                target_field=task.target_field, text_field=task.text_field,
                                batch_size=task.batch_size, max_source_tokens=cut, source_prefix=task.source_prefix)
        self._cheap: dict[str, float] = {}
        self._costs: dict[str, list[float]] = {}
        self._flops = None
        self.counts = {"screened": 0, "passed": 0, "cheap_scored": 0, "screened_infeasible": 0}
        # Only a perplexity quality has a cheap estimate (the cheap figure is a perplexity).
        lm_ppl = task.task == "lm" and task.primary == "perplexity" and teacher_quality is not None
        self.constraints = [c for c in constraints if lm_ppl and c.metric == "quality"]
        self.teacher_quality = teacher_quality

    def cheap(self, plan: str | AssemblyPlan) -> float:
        """The plan's cheap perplexity (cached in memory and in the evaluation cache)."""
        plan = self.bank.plan(plan)
        key = str(plan)
        if key in self._cheap:
            return self._cheap[key]
        cache = self.evaluator.cache
        ckey = self.evaluator.quality_key(plan) | {"screen": {"task": self.task.to_json(),
                                                              "data": self.devset.content_hash}}
        hit = cache.get("screen", ckey) if cache else None
        if hit is None:
            from ..assembly import assemble
            from ..cost._measure import pinned_threads
            from ..quality._score import score_quality

            threads = self.evaluator._threads()
            model = assemble(self.bank, plan, share_weights=True)
            with pinned_threads(threads) if threads is not None else contextlib.nullcontext():
                value = score_quality(model, self.bank.tokenizer, self.devset, self.task,
                                      source_prefix=self.bank.source_prefix,
                                      states=self.evaluator.bind_states(model, plan)).value
            hit = {"perplexity": value}
            self.counts["cheap_scored"] += 1
            if cache:
                cache.put("screen", ckey, hit)
        self._cheap[key] = hit["perplexity"]
        return hit["perplexity"]

    def know(self, plan: str | AssemblyPlan, perplexity: float) -> None:
        """Take ``plan``'s cheap perplexity as known (a benchmark replaying cached figures); :meth:`check` then
        scores nothing for it."""
        self._cheap[str(self.bank.plan(plan))] = perplexity

    def costs(self, plan: AssemblyPlan) -> list[float]:
        """The plan's cost objectives as known before scoring (see the module docstring)."""
        if str(plan) in self._costs:
            return self._costs[str(plan)]
        out = self._costs[str(plan)] = []
        profile = self.evaluator.profile
        for o in self.objectives[1:]:
            if o == "params":
                out.append(float(self.bank.describe_plan(plan)["params"]))
            elif o == "profile_latency_ms" or (o == "latency_ms" and profile is not None):
                from ..cost._profile import _predict

                out.append(_predict(profile, plan))
            else:
                out.append(self._flops_of(plan))
        return out

    def _flops_of(self, plan: AssemblyPlan) -> float:
        if self._flops is None:
            from ..cost._measure import LayerFlops

            try:
                self._flops = LayerFlops(self.bank, self.evaluator.target or "cpu-1t-b1")
            except ValueError:  # layers of a stack differ in cost: the kept parameters order plans instead
                self._flops = False
        if self._flops:
            return float(self._flops(plan)["total"])
        return float(self.bank.describe_plan(plan)["params"])

    def check(self, plan: str | AssemblyPlan, front_plans) -> dict:
        """``{"screen_perplexity": ...}``, plus ``"screened_by"`` (a front plan) when ``plan`` is screened out.
        ``front_plans``: the plans of the study's feasible front."""
        plan = self.bank.plan(plan)
        mine, cost = self.cheap(plan), self.costs(plan)
        out = {"screen_perplexity": mine}
        if self.constraints:
            estimate = self.teacher_quality * mine / self.cheap(self.bank.teacher_plan())
            out["screen_estimate"] = estimate
            broken = next((c for c in self.constraints if c.violation(estimate, self.teacher_quality)
                           > self.margin * abs(c.threshold(self.teacher_quality))), None)
            if broken is not None:
                out["screened_by"] = f"constraint {broken.text}"
                self.counts["screened_infeasible"] += 1
        for f in front_plans if "screened_by" not in out else ():
            f = self.bank.plan(f)
            if str(f) == str(plan):
                continue
            if all(a <= b for a, b in zip(self.costs(f), cost)) and mine > (1 + self.margin) * self.cheap(f):
                out["screened_by"] = str(f)
                break
        self.counts["screened" if "screened_by" in out else "passed"] += 1
        return out
