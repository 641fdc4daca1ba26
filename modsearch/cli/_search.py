"""The ``modsearch search`` verb: run or continue the study a TOML file describes, then print its frontier.

A thin layer over :func:`modsearch.search.run_search`; every user mistake raises :class:`UserError` (one line,
exit status 2). Ctrl-C stops after marking the trial under way failed, keeps every completed trial, still
writes the trials table and prints the frontier, and exits with status 130.
"""

from __future__ import annotations

import textwrap

_DESCRIPTION = (
    "Find the quality-versus-cost frontier of a bank's plan space on one hardware target with a multi-objective "
    "Optuna study. The study TOML names the bank, the dev data, the task, the target, the objectives (quality "
    "first; then latency_ms, profile_latency_ms, flops and/or params), constraints such as 'latency_ms <= 40' "
    "or 'quality >= 0.95 * teacher' (infeasible trials are kept and marked), the sampler, the budget, the seed "
    "and the storage (default: SQLite in the study's folder). Baselines (teacher, uniform granularities, "
    "speed-first, size-first, layer dropping) are evaluated first and tagged. Every evaluation is cached by "
    "bank, plan, data, task and target, so no plan is evaluated twice, across trials, restarts and studies. "
    "Running the same command again continues the study up to its budget: budget.n_trials finished trials "
    "and/or budget.n_plans distinct plans (a plan the sampler proposes again is a trial served from the cache, "
    "which n_plans does not count). With latency_ms as an objective, each new plan is timed paired with the "
    "teacher in shuffled rounds (a speed-up with a 95 % interval), at most a quarter of the budget goes to "
    "baselines ([seeds] max_share), and the run ends by verifying its frontier (see modsearch verify).")


def add_search_parser(sub, fmt, examples) -> None:
    """Register ``search`` on the ``modsearch`` subparsers (``examples`` formats the epilog)."""
    s = sub.add_parser("search", help="search a bank's plans for the quality/cost frontier (Optuna)",
                       formatter_class=fmt, description=textwrap.fill(_DESCRIPTION, 100),
                       epilog=examples("""
                           modsearch search studies/bible-en-fr.toml
                           modsearch search studies/bible-en-fr.toml --n-trials 200 --timeout 3600
                           modsearch search studies/bible-en-fr.toml --n-plans 210   # 1 % of the default space
                           modsearch search studies/bible-en-fr.toml --sampler tpe --study-name tpe-run --seed 1
                           modsearch search studies/bible-en-fr.toml --storage postgresql://u:p@db/modsearch
                           optuna-dashboard sqlite:///studies/bible-en-fr/study.db   # browse the study"""))
    s.add_argument("study", help="study TOML file (see studies/bible-en-fr.toml)")
    s.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the file's, else SQLite in "
                                                    "the study's folder)")
    s.add_argument("--study-name", metavar="NAME", help="study name (default: the file's name key or stem)")
    s.add_argument("--n-trials", type=int, metavar="N",
                   help="stop when the study has N finished trials in all (replaces the file's n_trials and n_plans)")
    s.add_argument("--n-plans", type=int, metavar="N",
                   help="stop when the study has N distinct plans: a re-proposed plan is not counted "
                        "(replaces the file's n_trials and n_plans; with --n-trials, whichever comes first)")
    s.add_argument("--timeout", type=float, metavar="S",
                   help="stop this run S seconds after it started (the seeds' calibration counts; verification "
                        "follows)")
    s.add_argument("--sampler", metavar="NAME", help="evolve | nsga2 | nsga3 | tpe | gp | random")
    s.add_argument("--seed", type=int, metavar="S", help="sampler seed")
    s.add_argument("--quiet", action="store_true", help="no progress bar or log lines; the frontier only")
    s.set_defaults(func=cmd_search)

    v = sub.add_parser("verify", help="measure the frontier again against the teacher, interleaved, and store it",
                       formatter_class=fmt, description=textwrap.fill(
                           "Measure the teacher and every frontier point of a finished study again, together, in "
                           "interleaved shuffled rounds on the study's target, and store each point's speed-up over "
                           "the teacher with its 95 % interval on the study. From then on the verified figures are the "
                           "study's for those points: the frontier table (column `figures`), its hypervolume, "
                           "`modsearch export --pick` and the report use them, and a point not on the front by them "
                           "is listed as dropped. `search` runs this at its end unless [verify] after_search = "
                           "false; run it alone after a study run by workers, or on a quieter machine. By default "
                           "rounds run until every interval is within the target protocol's `interval` (±3 %) or "
                           "`verify_seconds` have passed (then it warns). --rounds must give a finite interval: at "
                           "least 6 at 95 %.", 100),
                       epilog=examples("""
                           modsearch verify studies/bible-en-fr.toml
                           modsearch verify studies/bible-en-fr.toml --rounds 40
                           modsearch verify studies/bible-en-fr.toml --storage postgresql://u:p@db/modsearch"""))
    v.add_argument("study", help="study TOML file")
    v.add_argument("--rounds", type=int, metavar="N", help="exactly N rounds (default: the protocol's stopping rule)")
    v.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the file's)")
    v.add_argument("--study-name", metavar="NAME", help="study name (default: the file's)")
    v.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    v.set_defaults(func=cmd_verify)


def cmd_verify(a) -> int:
    from ..search import format_frontier, frontier_rows, verify_study
    from ..search._summary import dropped_rows
    from ..search._config import StudyConfig
    from ..search._storage import open_storage

    cfg = StudyConfig.load(a.study).override(storage=a.storage, study_name=a.study_name)
    storage = open_storage(cfg.storage)
    record = verify_study(cfg, rounds=a.rounds, storage=storage, progress=not a.quiet,
                          log=None if a.quiet else print)
    import optuna

    study = optuna.load_study(study_name=cfg.name, storage=storage)
    print(f"frontier of {cfg.name}, verified in {record['rounds']} interleaved rounds (teacher "
          f"{record['teacher_ms']:.1f} ms in them; milliseconds below are on the study's scale, teacher "
          f"{(study.user_attrs.get('teacher') or {}).get('latency_ms', float('nan')):.1f} ms):")
    print(format_frontier(frontier_rows(study), dropped_rows(study)))
    return 0
def cmd_search(a) -> int:
    from ..search import format_frontier, run_search
    from ..search._config import StudyConfig

    cfg = StudyConfig.load(a.study).override(storage=a.storage, study_name=a.study_name, n_trials=a.n_trials,
                                             n_plans=a.n_plans, timeout=a.timeout, sampler=a.sampler,
                                             seed=a.seed)
    result = run_search(cfg, progress=not a.quiet, log=None if a.quiet else print)
    state = "interrupted" if result.interrupted else "done"
    ev = result.evaluations
    print(f"\nstudy {cfg.name} {state}: {result.n_trials} finished trial(s), {result.new_trials} new, "
          f"{result.n_plans} distinct plan(s); "
          f"{ev.get('quality', 0)} quality and {ev.get('cost', 0)} cost evaluation(s) run, "
          f"{ev.get('cached', 0)} served from the cache; hypervolume {result.hypervolume:.4f} (teacher-normalised)")
    skipped, ran = ev.get("states_layers_skipped", 0), ev.get("states_layers_run", 0)
    if skipped + ran:
        print(f"layer states: {skipped:,} of {skipped + ran:,} layer runs of quality scoring skipped "
              f"({skipped / (skipped + ran):.0%}), where plans began like one scored before ([cost] prefix_memory_mb)")
    print(f"frontier ({len(result.frontier)} feasible Pareto-optimal trial(s)):")
    print(format_frontier(result.frontier, result.dropped))
    f = result.files
    print(f"\nstudy      {f['study_name']} in {f['storage']}   (optuna-dashboard {f['storage']})")
    print(f"trials     {f['csv']}" + (f", {f['parquet']}" if "parquet" in f else ""))
    if f.get("cache"):
        print(f"cache      {f['cache']}")
    if result.interrupted:
        print("interrupted: completed trials are saved; run the same command again to continue")
        return 130
    return 0
