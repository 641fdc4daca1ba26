"""The multi-objective search: the study config (``_config``), the evaluation cache (``_cache``) and the plan
evaluator (``_evaluator``), the seeded baselines (``_seeds``), the samplers (``_samplers``; the structure-aware one in ``_evolve``), the multi-fidelity screen (``_screen``), the progress bar,
trial export and frontier table (``_summary``), the figures a study shows for its trials (one millisecond
scale, verified where verified) and the front over them (``_figures``), Pareto fronts and hypervolume (``_pareto``, the only implementation), the storage (the only place a storage URL is opened), the run itself (``_run``),
scale-out workers (``_worker``) and the verified frontier (``_verify``).

>>> cfg = StudyConfig.load("studies/bible-en-fr.toml")      # doctest: +SKIP
>>> run_search(cfg).frontier                                 # doctest: +SKIP
"""

from ._config import COST_OBJECTIVES, METRICS, SEED_STRATEGIES, Constraint, StudyConfig
from ._pareto import hypervolume, normalised_losses, pareto_front, reference_point
from ._cache import CACHE_VERSION, EvaluationCache, worker_id
from ._evaluator import PlanEvaluator, evaluate_plan
from ._run import PLAN_TRIAL_FACTOR, SearchResult, fail_dead_trials, run_search
from ._samplers import CONSTRAINT_AWARE, make_sampler
from ._evolve import PlanEvolutionSampler
from ._screen import Screen
from ._seeds import seed_plans
from ._summary import dropped_rows, export_trials, format_frontier, frontier_rows, trials_frame
from ._storage import open_storage, sqlite_wal, storage_url
from ._worker import run_local_workers, run_worker, worker_storage
from ._verify import verification_of, verify_study

__all__ = ["CACHE_VERSION", "CONSTRAINT_AWARE", "COST_OBJECTIVES", "PlanEvolutionSampler", "Screen", "METRICS", "PLAN_TRIAL_FACTOR", "SEED_STRATEGIES", "Constraint", "EvaluationCache",
           "PlanEvaluator", "SearchResult", "StudyConfig", "dropped_rows", "evaluate_plan", "export_trials", "fail_dead_trials",
           "format_frontier", "frontier_rows", "hypervolume", "make_sampler", "normalised_losses", "open_storage", "pareto_front", "reference_point", "run_local_workers",
           "run_search", "run_worker", "seed_plans", "sqlite_wal", "storage_url", "trials_frame", "verification_of",
           "verify_study", "worker_id", "worker_storage"]
