"""The samplers a study can name, built with its seed and settings."""

from __future__ import annotations

from .._errors import UserError
from ._storage import quiet_warnings


#: The samplers that steer away from infeasible plans. Optuna 5 deprecates ``constraints_func``: NSGA-II/III
#: (feasible before infeasible in the elite selection), TPE (infeasible trials in the "above" group) and GP
#: (a constrained acquisition) read the constraints the objective sets with ``trial.set_constraint``, as
#: ``modsearch search`` does; evolve takes its parents from feasible trials only. Random search ignores them.
CONSTRAINT_AWARE = ("evolve", "nsga2", "nsga3", "tpe", "gp")


def make_sampler(name: str, settings: dict | None = None, seed: int | None = None, genome=None):
    """An Optuna sampler by name (evolve, nsga2, nsga3, tpe, gp, random) with its settings. ``evolve``
    (:class:`~modsearch.search._evolve.PlanEvolutionSampler`) edits plans, so it needs the study's ``genome``.

    Samplers read constraints from ``trial.set_constraint`` (see :data:`CONSTRAINT_AWARE`); none gets a
    ``constraints_func``.
    """
    import optuna

    s = dict(settings or {})
    if name == "evolve":
        from ._evolve import PlanEvolutionSampler

        if genome is None:
            raise ValueError("sampler evolve needs the study's genome (make_sampler(..., genome=...))")
        return PlanEvolutionSampler(genome, seed=seed, **s)
    if name in ("nsga2", "nsga3"):
        # Optuna's default population (50) spends a 60-trial study on one random generation. The tabular replay
        # of the default bank (benchmarks/tabular_search.py, README) chose these: NSGA-II with 8 beats random
        # search at every budget from 0.5 % of the space; NSGA-III was replayed with 16.
        s.setdefault("population_size", 8 if name == "nsga2" else 16)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **s)
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, **s)
    if name == "tpe":
        s.setdefault("multivariate", True)  # models the genes jointly: they only mean something together
        with quiet_warnings():
            return optuna.samplers.TPESampler(seed=seed, **s)
    if name == "gp":
        try:
            import scipy  # noqa: F401
        except ImportError:
            raise UserError("sampler gp needs scipy, which is not installed (pip install scipy), or pick "
                            "another sampler (evolve, nsga2, nsga3, tpe, random)") from None
        return optuna.samplers.GPSampler(seed=seed, **s)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}: use evolve, nsga2, nsga3, tpe, gp or random")
