"""What a study shows while and after it runs: the progress bar (front size, hypervolume), the trials as
CSV/Parquet, and the frontier as table rows and text."""

from __future__ import annotations

import json
import math
import os

from .._io import write_text
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


def study_hypervolume(study, teacher, objectives, maximize) -> float:
    points = _feasible_losses(study, teacher, objectives, maximize)
    return hypervolume(points, reference_point(len(objectives), maximize))


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
    """The feasible Pareto-optimal trials, cheapest first, as table rows: the same front as
    :meth:`modsearch.results.StudyResults.frontier` (one :func:`pareto_front`, the first trial of each plan).

    A plan that several trials share (a sampler may propose a known plan; it gets the cached values) is listed
    once, under its first trial."""
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    signs = [-1.0 if d.name == "MAXIMIZE" else 1.0 for d in study.directions]
    pool, seen = [], set()
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if t.state.name != "COMPLETE" or not t.user_attrs.get("feasible", True) or t.user_attrs.get("plan") in seen:
            continue
        if not all(math.isfinite(v) for v in t.values):
            continue
        seen.add(t.user_attrs.get("plan"))
        pool.append(t)
    rows = []
    verified = (study.user_attrs.get("verification") or {}).get("plans", {})
    for i in pareto_front([[s * v for s, v in zip(signs, t.values)] for t in pool]):
        t = pool[i]
        row = {"trial": t.number, "plan": t.user_attrs.get("plan"), "strategy": t.user_attrs.get("strategy")}
        row.update(dict(zip(names, t.values)))
        for k in ("params_ratio", "speedup", "speedup_low", "speedup_high", "speedup_basis"):
            if k in t.user_attrs:
                row[k] = t.user_attrs[k]
        v = verified.get(row["plan"])
        if v:
            row.update({"verified_speedup": v["speedup"], "verified_low": v["low"], "verified_high": v["high"],
                        "verified_on_front": v["on_front"]})
        rows.append(row)
    key = names[1] if len(names) > 1 else names[0]
    return sorted(rows, key=lambda r: (r[key], r["trial"]))


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


_FOLDED = ("speedup_basis", "speedup_low", "speedup_high", "verified_speedup", "verified_low", "verified_high",
           "verified_on_front")


def _interval(v, lo, hi) -> str:
    return f"{v:.2f}x [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"{v:.2f}x"


def format_frontier(rows: list[dict]) -> str:
    """The frontier as an aligned text table. A paired speed-up shows its 95 % interval; a verified one
    (``modsearch verify``) gets a column of its own, and a point that verification knocks off the front says so."""
    if not rows:
        return "(no feasible completed trial yet)"
    rows = [dict(r) for r in rows]
    for r in rows:
        if r.get("speedup") is not None and "speedup_low" in r:
            r["speedup"] = _interval(r["speedup"], r.get("speedup_low"), r.get("speedup_high"))
        if any("verified_speedup" in x for x in rows):
            r["verified"] = ("not verified" if "verified_speedup" not in r else
                             _interval(r["verified_speedup"], r["verified_low"], r["verified_high"])
                             + ("" if r["verified_on_front"] else "  OFF THE FRONT"))
    cols = [c for c in rows[0] if c not in _FOLDED]
    if any("verified" in r for r in rows) and "verified" not in cols:
        cols.append("verified")
    if "speedup" in cols and rows[0].get("speedup_basis"):
        header = {c: (f"speedup ({rows[0]['speedup_basis']})" if c == "speedup" else c) for c in cols}
    else:
        header = {c: c for c in cols}
    cells = [[_fmt(c, r.get(c)) for c in cols] for r in rows]
    widths = [max(len(header[c]), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(header[c].ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# Silence sqlalchemy/alembic chatter Optuna's RDB storage may emit on first creation.
