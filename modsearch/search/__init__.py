"""The multi-objective search: the study config (``_config``), the plan evaluator and its cache, the seeded
baselines, the samplers, Pareto fronts and hypervolume (``_pareto``, the only implementation), the storage (the only place a storage URL is opened), the run itself (``_run``) and
scale-out workers (``_worker``).

>>> cfg = StudyConfig.load("studies/bible-en-fr.toml")      # doctest: +SKIP
>>> run_search(cfg).frontier                                 # doctest: +SKIP
"""

from ._config import COST_OBJECTIVES, METRICS, SEED_STRATEGIES, Constraint, StudyConfig
from ._pareto import hypervolume, normalised_losses, pareto_front, reference_point
from ._run import (PLAN_TRIAL_FACTOR, EvaluationCache, PlanEvaluator, SearchResult, evaluate_plan, export_trials,
                   fail_dead_trials, format_frontier, frontier_rows, make_sampler, run_search, seed_plans,
                   trials_frame, worker_id)
from ._storage import open_storage, sqlite_wal, storage_url
from ._worker import run_local_workers, run_worker, worker_storage

__all__ = ["COST_OBJECTIVES", "METRICS", "PLAN_TRIAL_FACTOR", "SEED_STRATEGIES", "Constraint", "EvaluationCache",
           "PlanEvaluator", "SearchResult", "StudyConfig", "evaluate_plan", "export_trials", "fail_dead_trials",
           "format_frontier", "frontier_rows", "hypervolume", "make_sampler", "normalised_losses", "open_storage", "pareto_front", "reference_point", "run_local_workers",
           "run_search", "run_worker", "seed_plans", "sqlite_wal", "storage_url", "trials_frame", "worker_id",
           "worker_storage"]
