"""What a study shows while and after it runs: the progress bar (front size, hypervolume), the trials as
CSV/Parquet, and the frontier as table rows and text."""

from __future__ import annotations

import json
import math
import os

from .._io import write_text
from ._figures import dropped, front, records_hypervolume, study_trials
from ._pareto import hypervolume, normalised_losses, pareto_front, reference_point


class ProgressBar:
    """trials done / to do (or, with ``plans``, the study's plan set that a ``_stop_at_plans`` callback keeps:
    new plans / to do), the size of the feasible front and its teacher-normalised hypervolume."""

    def __init__(self, study, total, teacher, objectives, maximize, enabled=True, plans: set | None = None):
        self.teacher, self.objectives, self.maximize = teacher, objectives, maximize
        self.bar = None
        self.plans, self.n_seen = plans, len(plans or ())
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="search", unit="trial" if plans is None else "plan",
                            dynamic_ncols=True)

    def update(self, study, trial) -> None:
        if self.bar is None:
            return
        new = True
        if self.plans is not None:
            new, self.n_seen = len(self.plans) > self.n_seen, len(self.plans)
        points = _feasible_losses(study, self.teacher, self.objectives, self.maximize)
        front = pareto_front(points)
        hv = hypervolume([points[i] for i in front], reference_point(len(self.objectives), self.maximize))
        self.bar.set_postfix_str(f"front {len(front)}, HV {hv:.4f}, last {trial.user_attrs.get('plan', '?')}",
                                 refresh=not new)
        if new:
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _feasible_losses(study, teacher, objectives, maximize) -> list[list[float]]:
    t = [teacher[o] for o in objectives]
    return [normalised_losses(tr.values, t, maximize) for tr in study.get_trials(deepcopy=False)
            if tr.state.name == "COMPLETE" and tr.user_attrs.get("feasible", True)]


def study_hypervolume(study) -> float:
    """The study's teacher-normalised hypervolume, verified figures where verified (as
    :meth:`modsearch.results.StudyResults.hypervolume`); the progress bar's, during the search, reads the
    trials' own."""
    trials, objectives, maximize = study_trials(study)
    return records_hypervolume(trials, objectives, study.user_attrs["teacher"], maximize)


# -- results ---------------------------------------------------------------------------------------------------
def trials_frame(study):
    """The study's trials as a pandas DataFrame: number, state, objective values, params (the genome) and
    every user attr (plan, strategy, metrics, timings, feasibility); dict-valued attrs become JSON text."""
    df = study.trials_dataframe(attrs=("number", "values", "datetime_start", "datetime_complete", "duration",
                                       "params", "user_attrs", "state"))
    for col in df.columns:
        if df[col].dtype == object and df[col].map(lambda v: isinstance(v, (dict, list))).any():
            df[col] = df[col].map(lambda v: json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v)
    names = study.metric_names
    if names:
        df = df.rename(columns={f"values_{i}": f"values_{n}" for i, n in enumerate(names)})
    return df


def export_trials(study, out_dir: str) -> dict:
    """Write ``trials.csv`` and ``trials.parquet`` (needs pyarrow) to ``out_dir``; returns their paths."""
    df = trials_frame(study)
    os.makedirs(out_dir, exist_ok=True)
    files = {"csv": os.path.join(out_dir, "trials.csv")}
    write_text(files["csv"], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return files
    from .._io import atomic_path

    path = os.path.join(out_dir, "trials.parquet")
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    files["parquet"] = path
    return files


def frontier_rows(study) -> list[dict]:
    """The feasible Pareto-optimal trials, cheapest first, as table rows: the front of
    :func:`modsearch.search._figures.front` (as :meth:`modsearch.results.StudyResults.frontier`), so after
    ``modsearch verify`` the front by the verified figures. Rows of a verified study carry ``verified``, and a
    verified row its trial's own speed-up as ``trial_speedup``.

    A plan that several trials share (a sampler may propose a known plan; it gets the cached values) is listed
    once, under its first trial."""
    trials, objectives, maximize = study_trials(study)
    return [_row(study, objectives, t) for t in front(trials, objectives, maximize)]


def dropped_rows(study) -> list[dict]:
    """The trials that verification took off the front (:func:`modsearch.search._figures.dropped`), as rows like
    :func:`frontier_rows`'; empty for a study not verified."""
    trials, objectives, maximize = study_trials(study)
    return [_row(study, objectives, t) for t in dropped(trials, objectives, maximize)]


def _row(study, objectives: list[str], t) -> dict:
    row = {"trial": t.number, "plan": t.plan, "strategy": t.strategy}
    row.update({n: t.get(n) for n in objectives})
    for k in ("params_ratio", "speedup", "speedup_low", "speedup_high"):
        if k in t.metrics:
            row[k] = t.get(k)
    if t.speedup_basis:
        row["speedup_basis"] = t.speedup_basis
    if study.user_attrs.get("verification"):
        row["verified"] = t.verified
    if t.verified:
        row["trial_speedup"] = t.trial_metrics.get("speedup")
    return row


def _fmt(k: str, v) -> str:
    if isinstance(v, float):
        if k == "speedup":
            return f"{v:.2f}x"
        if k == "params_ratio":
            return f"{v:.3f}"
        if k in ("flops", "params"):
            return f"{v:.4g}"
        return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"
    return "" if v is None else str(v)


_FOLDED = ("speedup_basis", "speedup_low", "speedup_high", "verified", "trial_speedup")


def _interval(v, lo, hi) -> str:
    return f"{v:.2f}x [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{v:.2f}x"


def format_frontier(rows: list[dict], dropped: list[dict] = ()) -> str:
    """The frontier as an aligned text table. A paired speed-up shows its 95 % interval. After ``modsearch
    verify`` the figures of verified points are the verified ones, and a column ``figures`` says which rows
    they are (with what the trial had measured); ``dropped`` (:func:`dropped_rows`) are listed below the table
    as points that verification took off the front."""
    if not rows:
        return "(no feasible completed trial yet)"
    rows = [dict(r) for r in rows]
    for r in rows:
        if r.get("speedup") is not None and "speedup_low" in r:
            r["speedup"] = _interval(r["speedup"], r.get("speedup_low"), r.get("speedup_high"))
        if "verified" in r:
            r["figures"] = (f"verified (trial {r['trial_speedup']:.2f}x)" if r["verified"] and
                            isinstance(r.get("trial_speedup"), float) else "verified" if r["verified"] else "trial")
    cols = [c for c in rows[0] if c not in _FOLDED]
    bases = {r.get("speedup_basis") for r in rows}
    basis = next(iter(bases)) if len(bases) == 1 else None
    header = {c: (f"speedup ({basis})" if c == "speedup" and basis else c) for c in cols}
    cells = [[_fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(header[c]), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(header[c].ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    if dropped:
        lines.append(f"{len(dropped)} point(s) dropped off the front when verified:")
        lines += [f"  trial {r['trial']} {r['plan']}: trial {r.get('trial_speedup') or r.get('speedup'):.2f}x, "
                  + (f"verified {_interval(r['speedup'], r.get('speedup_low'), r.get('speedup_high'))}"
                     if r.get("verified") else "not verified, dominated by verified points")
                  for r in dropped]
    return "\n".join(lines)


# Silence sqlalchemy/alembic chatter Optuna's RDB storage may emit on first creation.
