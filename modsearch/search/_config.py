"""Study configs: one TOML file says everything a search needs, and nothing it does not understand.

Paths in the file are relative to the file itself. Unknown keys and bad values are errors naming the key.
The command line overrides the common settings (:meth:`StudyConfig.override`).

.. code-block:: toml

    name = "bible-en-fr"                 # study name (default: the file's stem)
    bank = "../banks/bible-en-fr"
    target = "cpu-1t-b1"                 # a name in studies/targets/, a TOML path, or an inline [target] table
    objectives = ["quality", "latency_ms"]   # quality first; then any of latency_ms, profile_latency_ms,
                                             # flops, params (all minimised)
    constraints = ["quality >= 0.5 * teacher", "params_ratio <= 0.9"]
    seed = 0
    # storage = "sqlite:///elsewhere.db" # default: sqlite in <this folder>/<name>/study.db
    # output = "results/x"               # default: <this folder>/<name>/  (CSV/Parquet of the trials)
    # cache = "../.cache/modsearch"      # default: <this folder>/.cache  (shared by the studies beside it)

    [data]
    path = "../data/bible-en-fr/dev.jsonl"
    source_field = "en"
    target_field = "fr"
    limit = 200

    [task]                               # modsearch.score.QualityTask fields
    task = "translation"
    metric = "chrf"
    max_new_tokens = 64

    [space]
    drops = true                         # allow dropping single layers
    # granularities = [2, 3]             # only modules of these spans

    [sampler]
    name = "nsga2"                       # evolve | nsga2 | nsga3 | tpe | gp | random (+ that sampler's settings)
    population_size = 8                  # the default (chosen by benchmarks/tabular_search.py)

    [screen]                             # optional: a cheap fidelity first for sampler-proposed plans
    windows = 4                          # teacher-forced perplexity on this many dev texts (lm: the first
                                         # window of each) or dev examples (seq2seq)
    margin = 0.05                        # screened out when 5 % worse than a front plan of lower or equal cost

    [budget]
    n_trials = 80                        # the study's total of finished trials (a rerun continues up to it)
    # n_plans = 60                       # or/and: its total of distinct plans (re-proposals not counted)
    timeout = 540                        # seconds of wall time for this run, seeds' calibration included

    [seeds]
    strategies = ["teacher", "uniform", "speed-first", "size-first", "drop-alternate", "drop-one"]
                                         # decoder-only banks also: "greedy", "sleb", "streamline",
                                         # "block-influence" (measured on the dev file's texts)
    plans = []                           # more plans to evaluate first, in plan notation
    max_share = 0.25                     # baselines take at most this share of the budget (round-robin over
                                         # the strategies, spread within each)

    [cost]
    # profile = "../profiles/cpu-1t-b1.json"   # for profile_latency_ms (built on first use when missing)
    allow_foreign_profile = false
    scoring_threads = "auto"             # threads for quality scoring: "auto" = the cores other processes
                                         # leave free (checked before every plan), or a number
    prefix_memory_mb = 2048              # decoder-only: states kept so plans skip shared layers (0: off)

    [verify]                             # re-measure the frontier against the teacher, interleaved
    after_search = true                  # at the end of every search run with a latency objective
    # rounds = 20                        # fixed rounds (default: until the target's interval goal or cap)

>>> cfg = StudyConfig.load("studies/bible-en-fr.toml")        # doctest: +SKIP
>>> cfg = cfg.override(n_trials=10, sampler="tpe")           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field

from .._checks import is_int, is_num, known_keys, need
from .._errors import UserError
from ._seeds import CAUSAL_STRATEGIES

__all__ = ["COST_OBJECTIVES", "METRICS", "SAMPLERS", "SEED_STRATEGIES", "Constraint", "StudyConfig"]

#: Cost objectives (all minimised) and the trial metric each one is.
COST_OBJECTIVES = ("latency_ms", "profile_latency_ms", "flops", "params")
#: Every metric a trial records, usable in constraints (the task's metric names are usable too).
METRICS = ("quality", "params", "params_ratio", "flops", "flops_ratio", "latency_ms", "latency_p90_ms",
           "latency_ratio", "profile_latency_ms", "speedup")
#: Sampler name -> the settings it accepts, with their types (a tuple: the strings it may be).
SAMPLERS: dict[str, dict[str, type | tuple[str, ...]]] = {
    "evolve": {"crossover_prob": float, "random_prob": float, "predict_constraints": bool,
               "acquisition": ("hvi", "hvi-local", "random")},
    "nsga2": {"population_size": int, "mutation_prob": float, "crossover_prob": float, "swapping_prob": float},
    "nsga3": {"population_size": int, "mutation_prob": float, "crossover_prob": float, "swapping_prob": float},
    "tpe": {"n_startup_trials": int, "n_ei_candidates": int, "multivariate": bool, "constant_liar": bool},
    "gp": {"n_startup_trials": int, "deterministic_objective": bool},
    "random": {},
}
SEED_STRATEGIES = ("teacher", "uniform", "speed-first", "size-first", "drop-alternate", "drop-one")
#: Strategies a study may list beyond the defaults (they need the bank's model and the dev texts).
EXTRA_SEED_STRATEGIES = CAUSAL_STRATEGIES
_SECTIONS = {
    "data": {"path", "source_field", "target_field", "text_field", "limit"},
    "task": {"task", "metric", "num_beams", "max_new_tokens", "batch_size", "max_source_tokens", "source_prefix",
             "primary_key", "context_length", "stride"},
    "space": {"drops", "granularities"},
    "sampler": {"name"} | {k for s in SAMPLERS.values() for k in s},
    "budget": {"n_trials", "n_plans", "timeout"},
    "seeds": {"strategies", "plans", "max_share"},
    "cost": {"profile", "allow_foreign_profile", "measure_latency", "scoring_threads", "prefix_memory_mb"},
    "verify": {"after_search", "rounds"},
    "screen": {"windows", "margin"},
}
_TOP = {"name", "bank", "target", "objectives", "constraints", "seed", "storage", "output", "cache"} | set(_SECTIONS)
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=)\s*(?:([-+0-9.eE]+)\s*(\*\s*teacher)?|(teacher))\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``; with ``relative``, bound is a multiple of the teacher's value.

    :meth:`violation` is what ``trial.set_constraint`` takes: zero or less when the trial is feasible.

    >>> c = Constraint.parse("quality >= 0.95 * teacher")
    >>> c.violation(30.0, teacher=40.0)
    8.0
    """

    metric: str
    op: str
    bound: float
    relative: bool = False
    text: str = ""

    @classmethod
    def parse(cls, text: str, where: str = "constraints") -> Constraint:
        m = _CONSTRAINT.match(text) if isinstance(text, str) else None
        if not m:
            raise UserError(f"{where}: cannot read constraint {text!r}; write 'METRIC <= NUMBER', "
                            "'METRIC >= NUMBER * teacher' or 'METRIC <= teacher'")
        metric, op, num, times_teacher, bare_teacher = m.groups()
        try:
            bound = 1.0 if bare_teacher else float(num)
        except ValueError:
            raise UserError(f"{where}: {num!r} in constraint {text!r} is not a number") from None
        return cls(metric, op, bound, relative=bool(times_teacher or bare_teacher), text=" ".join(text.split()))

    def threshold(self, teacher: float | None = None) -> float:
        if not self.relative:
            return self.bound
        if teacher is None:
            raise ValueError(f"constraint {self.text!r} is relative to the teacher, whose value is unknown")
        return self.bound * teacher

    def violation(self, value: float, teacher: float | None = None) -> float:
        t = self.threshold(teacher)
        return value - t if self.op == "<=" else t - value


@dataclass
class StudyConfig:
    """A validated study (see the module docstring for the file format). Paths are absolute."""

    name: str
    bank: str
    data_path: str
    target: str | dict
    objectives: list[str]
    constraints: list[Constraint] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    task: dict = field(default_factory=dict)
    drops: bool = True
    granularities: list[int] | None = None
    sampler: str = "nsga2"
    sampler_settings: dict = field(default_factory=dict)
    n_trials: int | None = None
    n_plans: int | None = None
    timeout: float | None = None
    seed: int = 0
    storage: str = ""
    output: str = ""
    cache: str | None = ""
    seed_strategies: list[str] = field(default_factory=lambda: list(SEED_STRATEGIES))
    seed_plans: list[str] = field(default_factory=list)
    profile: str | None = None
    allow_foreign_profile: bool = False
    measure_latency: bool = False
    seed_share: float = 0.25
    scoring_threads: int | None = None  # None: "auto", the cores other processes leave free
    prefix_memory_mb: int = 2048  # hidden states kept between plans (modsearch.quality._prefix.LayerStates)
    verify_after: bool = True
    verify_rounds: int | None = None
    screen_windows: int | None = None  # None: no screen
    screen_margin: float = 0.05
    source: str = ""

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> StudyConfig:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise UserError(f"study file {path} not found") from None
        except IsADirectoryError:
            raise UserError(f"{path} is a directory; give a study TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"study file {path} is not valid TOML ({exc})") from None
        return cls.from_dict(raw, base_dir=os.path.dirname(os.path.abspath(path)),
                             default_name=os.path.splitext(os.path.basename(path))[0], source=path)

    @classmethod
    def from_dict(cls, raw: dict, base_dir: str = ".", default_name: str = "study", source: str = "") -> StudyConfig:
        where = f"study {source or default_name}"
        known_keys(raw, _TOP, where)
        for sec in _SECTIONS:
            if sec in raw:
                need(isinstance(raw[sec], dict), where, sec, "a table")
                known_keys(raw[sec], _SECTIONS[sec], f"{where}, [{sec}]", prefix=f"{sec}.")

        def path(v: str) -> str:
            return v if os.path.isabs(v) else os.path.normpath(os.path.join(base_dir, v))

        name = raw.get("name", default_name)
        need(isinstance(name, str) and re.fullmatch(r"[\w.-]+", name or ""), where, "name",
              "a non-empty name of letters, digits, '.', '_' or '-'", name)
        bank = raw.get("bank")
        need(isinstance(bank, str) and bank, where, "bank", "the path of a bank directory", bank)

        data = dict(raw.get("data", {}))
        need(isinstance(data.get("path"), str) and data.get("path"), where, "data.path",
              "the path of the dev data file", data.get("path"))
        for k in ("source_field", "target_field", "text_field"):
            if k in data:
                need(isinstance(data[k], str) and data[k], where, f"data.{k}", "a field name", data[k])
        if "limit" in data:
            need(is_int(data["limit"]) and data["limit"] >= 1, where, "data.limit", "an integer >= 1",
                  data["limit"])
        data_path = data.pop("path")
        if not ("://" in data_path or not _looks_local(data_path)):
            data_path = path(data_path)

        task = dict(raw.get("task", {}))
        for k in ("num_beams", "max_new_tokens", "batch_size", "max_source_tokens"):
            if k in task:
                need(is_int(task[k]) and task[k] >= 1, where, f"task.{k}", "an integer >= 1", task[k])
        for k in ("task", "source_prefix", "primary_key"):
            if k in task:
                need(isinstance(task[k], str), where, f"task.{k}", "a string", task[k])
        if "metric" in task:
            m = task["metric"]
            need(isinstance(m, str) and m or isinstance(m, list) and m and all(isinstance(x, str) for x in m),
                  where, "task.metric", "a metric name or a list of them", m)
        if "task" in task:
            from ..data._devset import TASKS

            need(task["task"] in TASKS, where, "task.task", " | ".join(TASKS), task["task"])

        target = raw.get("target")
        need(isinstance(target, (str, dict)) and target, where, "target",
              "a target name, a TOML path, or a [target] table", target)
        if isinstance(target, str) and (target.endswith(".toml") or os.sep in target):
            target = path(target)

        objectives = raw.get("objectives", ["quality", "latency_ms"])
        need(isinstance(objectives, list) and objectives and all(isinstance(o, str) for o in objectives),
              where, "objectives", "a list such as [\"quality\", \"latency_ms\"]", objectives)
        need(objectives[0] == "quality", where, "objectives", "a list whose first entry is \"quality\"",
              objectives)
        costs = objectives[1:]
        need(bool(costs), where, "objectives", f"quality and at least one of {', '.join(COST_OBJECTIVES)}",
              objectives)
        for o in costs:
            need(o in COST_OBJECTIVES, where, "objectives",
                  f"\"quality\" then some of {', '.join(COST_OBJECTIVES)}", o)
        need(len(set(objectives)) == len(objectives), where, "objectives", "a list without repeats", objectives)

        cons = raw.get("constraints", [])
        need(isinstance(cons, list), where, "constraints", "a list of strings like \"latency_ms <= 40\"", cons)
        task_metrics = _task_metrics(task)
        # "Constraints that name no objective" (issue 33), read the stricter reasonable way: a constraint must
        # name a metric this study records, checked here rather than after the teacher is scored. Read
        # literally (an objective only) it would refuse a documented use, a size cap on a latency study
        # ("params_ratio <= 0.9"); read loosely (any metric name) it lets through a constraint on a figure
        # the study never computes, e.g. profile_latency_ms without a profile, which used to fail at run time.
        recorded = METRICS + task_metrics
        if not (raw.get("cost") or {}).get("profile"):
            recorded = tuple(m for m in recorded if m != "profile_latency_ms")
        constraints = []
        for c in cons:
            con = Constraint.parse(c, f"{where}: constraints")
            need(con.metric in recorded, where, "constraints",
                  f"about a metric this study records ({', '.join(recorded)}"
                  + ("; profile_latency_ms needs cost.profile" if con.metric == "profile_latency_ms" else "")
                  + ")", con.metric)
            constraints.append(con)

        space = raw.get("space", {})
        drops = space.get("drops", True)
        need(isinstance(drops, bool), where, "space.drops", "true or false", drops)
        grans = space.get("granularities")
        if grans is not None:
            need(isinstance(grans, list) and grans and all(is_int(g) and g >= 2 for g in grans), where,
                  "space.granularities", "a list of module spans >= 2", grans)

        sampler = dict(raw.get("sampler", {}))
        sname = sampler.pop("name", "nsga2")
        need(sname in SAMPLERS, where, "sampler.name", " | ".join(SAMPLERS), sname)
        settings = _sampler_settings(sname, sampler, where)

        budget = raw.get("budget", {})
        n_trials, n_plans, timeout = budget.get("n_trials"), budget.get("n_plans"), budget.get("timeout")
        if n_trials is not None:
            need(is_int(n_trials) and n_trials >= 1, where, "budget.n_trials", "an integer >= 1", n_trials)
        if n_plans is not None:
            need(is_int(n_plans) and n_plans >= 1, where, "budget.n_plans", "an integer >= 1", n_plans)
        if timeout is not None:
            need(is_num(timeout) and timeout > 0, where, "budget.timeout", "a number of seconds > 0", timeout)
        need(n_trials is not None or n_plans is not None or timeout is not None, where, "budget",
              "a table with n_trials, n_plans and/or timeout", budget or None)

        seed = raw.get("seed", 0)
        need(is_int(seed) and seed >= 0, where, "seed", "an integer >= 0", seed)
        storage = raw.get("storage", "")
        need(isinstance(storage, str), where, "storage", "an Optuna storage URL", storage)
        output = raw.get("output", "")
        need(isinstance(output, str), where, "output", "a directory path", output)
        output = path(output) if output else os.path.join(base_dir, name)
        if storage and "://" not in storage:
            raise UserError(f"{where}: storage must be an Optuna storage URL such as "
                            f"sqlite:///path/study.db or postgresql://..., got {storage!r}")
        storage = storage or f"sqlite:///{os.path.join(output, 'study.db')}"
        cache = raw.get("cache", "")
        need(cache is False or isinstance(cache, str), where, "cache", "a directory path or false", cache)
        cache = None if cache is False else (path(cache) if cache else os.path.join(base_dir, ".cache"))

        seeds = raw.get("seeds", {})
        strategies = seeds.get("strategies", list(SEED_STRATEGIES))
        need(isinstance(strategies, list) and all(s in SEED_STRATEGIES + EXTRA_SEED_STRATEGIES for s in strategies),
              where, "seeds.strategies", f"a list drawn from {', '.join(SEED_STRATEGIES + EXTRA_SEED_STRATEGIES)}",
              strategies)
        plans = seeds.get("plans", [])
        need(isinstance(plans, list) and all(isinstance(p, str) and p for p in plans), where, "seeds.plans",
              "a list of plans in plan notation", plans)
        share = seeds.get("max_share", 0.25)
        need(is_num(share) and 0 < share <= 1, where, "seeds.max_share",
              "the largest share of the budget the baselines may take, in (0, 1]", share)

        verify = raw.get("verify", {})
        after = verify.get("after_search", True)
        need(isinstance(after, bool), where, "verify.after_search", "true or false", after)
        rounds = verify.get("rounds")
        if rounds is not None:
            need(is_int(rounds) and rounds >= 2, where, "verify.rounds", "an integer >= 2", rounds)

        cost = raw.get("cost", {})
        profile = cost.get("profile")
        if profile is not None:
            need(isinstance(profile, str) and profile, where, "cost.profile", "the path of a latency profile",
                  profile)
            profile = path(profile)
        need("profile_latency_ms" not in objectives or profile, where, "cost.profile",
              "set when an objective is profile_latency_ms")
        foreign = cost.get("allow_foreign_profile", False)
        need(isinstance(foreign, bool), where, "cost.allow_foreign_profile", "true or false", foreign)
        measure = cost.get("measure_latency", False)
        need(isinstance(measure, bool), where, "cost.measure_latency", "true or false", measure)
        threads = cost.get("scoring_threads", "auto")
        need(threads == "auto" or (is_int(threads) and threads >= 1), where, "cost.scoring_threads",
              "\"auto\" or an integer >= 1", threads)
        prefix_mb = cost.get("prefix_memory_mb", 2048)
        need(is_int(prefix_mb) and prefix_mb >= 0, where, "cost.prefix_memory_mb", "an integer >= 0", prefix_mb)

        screen = raw.get("screen")
        windows, margin = None, 0.05
        if screen is not None:
            windows, margin = screen.get("windows"), screen.get("margin", 0.05)
            # One window ranks nothing against the front only in the degenerate case of none: refuse < 1.
            need(is_int(windows) and windows >= 1, where, "screen.windows",
                  "an integer >= 1 (the dev texts or examples the cheap fidelity scores; fewer cannot rank)", windows)
            need(is_num(margin) and margin >= 0, where, "screen.margin",
                  "a number >= 0 (how much worse than a front plan of lower or equal cost a plan may look)", margin)

        cfg = cls(name=name, bank=path(bank), data_path=data_path, target=target, objectives=list(objectives),
                  constraints=constraints, data=data, task=task, drops=drops,
                  granularities=list(grans) if grans else None, sampler=sname, sampler_settings=settings,
                  n_trials=n_trials, n_plans=n_plans, timeout=float(timeout) if timeout is not None else None,
                  seed=seed, storage=storage, output=output, cache=cache, seed_strategies=list(strategies),
                  seed_plans=list(plans), profile=profile, allow_foreign_profile=foreign,
                  measure_latency=measure, seed_share=float(share),
                  scoring_threads=None if threads == "auto" else threads, prefix_memory_mb=prefix_mb,
                  verify_after=after, verify_rounds=rounds, screen_windows=windows, screen_margin=float(margin),
                  source=source)
        return cfg

    # -- command-line overrides ---------------------------------------------------------------------------
    def override(self, *, storage: str | None = None, study_name: str | None = None, n_trials: int | None = None,
                 timeout: float | None = None, sampler: str | None = None, seed: int | None = None,
                 n_plans: int | None = None) -> StudyConfig:
        """A copy with the given settings replaced (``None`` keeps the file's value; ``n_trials`` or ``n_plans``
        alone replaces both of the file's count budgets)."""
        changes: dict = {}
        if study_name is not None:
            if not re.fullmatch(r"[\w.-]+", study_name):
                raise UserError(f"--study-name {study_name!r}: use letters, digits, '.', '_' or '-'")
            changes["name"] = study_name
            if study_name != self.name:
                # Another study writes its trials CSV/Parquet to a folder of its own: <dir>/<name> when the file
                # used the default <dir>/<file's name>, else a subfolder of the file's output.
                parent, leaf = os.path.split(os.path.normpath(self.output))
                changes["output"] = (os.path.join(parent, study_name) if leaf == self.name
                                     else os.path.join(self.output, study_name))
        if storage is not None:
            if "://" not in storage:
                raise UserError(f"--storage {storage!r} is not a storage URL (sqlite:///path.db, "
                                "postgresql://...)")
            changes["storage"] = storage
        if n_trials is not None:
            if n_trials < 1:
                raise UserError(f"--n-trials must be >= 1, not {n_trials}")
            changes["n_trials"] = n_trials
        if n_plans is not None:
            if n_plans < 1:
                raise UserError(f"--n-plans must be >= 1, not {n_plans}")
            changes["n_plans"] = n_plans
        if (n_trials is None) != (n_plans is None):  # a count budget given here replaces the file's
            changes.setdefault("n_trials", None)
            changes.setdefault("n_plans", None)
        if timeout is not None:
            if timeout <= 0:
                raise UserError(f"--timeout must be > 0 seconds, not {timeout}")
            changes["timeout"] = float(timeout)
        if sampler is not None:
            if sampler not in SAMPLERS:
                raise UserError(f"--sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")
            if sampler != self.sampler:
                # Settings belong to the sampler named in the file; keep only those the new one takes.
                changes["sampler_settings"] = {k: v for k, v in self.sampler_settings.items() if k in SAMPLERS[sampler]}
            changes["sampler"] = sampler
        if seed is not None:
            if seed < 0:
                raise UserError(f"--seed must be >= 0, not {seed}")
            changes["seed"] = seed
        return dataclasses.replace(self, **changes)

    # -- derived ------------------------------------------------------------------------------------------
    def quality_task(self):
        from ..quality._score import QualityTask

        t = dict(self.task)
        for k in ("source_field", "target_field", "text_field"):
            if k in self.data:
                t[k] = self.data[k]
        return QualityTask(**t)

    def load_devset(self):
        return self.quality_task().load_devset(self.data_path, limit=self.data.get("limit"))

    def calibration_texts(self) -> list[str]:
        """What the decoder-only seed strategies measure layers on: the dev file's texts, regardless of the
        ``limit`` that bounds scoring (each strategy takes the first few it needs)."""
        if not any(s in CAUSAL_STRATEGIES for s in self.seed_strategies):
            return []
        return list(self.quality_task().load_devset(self.data_path).sources)

    def seed_cap(self) -> int | None:
        """How many baseline plans may be enqueued: ``max_share`` of the count budget (distinct plans, else
        trials), at least one (the teacher); None when the budget is a timeout alone."""
        budget = self.n_plans if self.n_plans is not None else self.n_trials
        return None if budget is None else max(1, int(self.seed_share * budget))

    def latency_objective(self) -> str | None:
        """The objective that is a latency (measured or from a profile), if any."""
        return next((o for o in self.objectives if o in ("latency_ms", "profile_latency_ms")), None)

    def needs_latency(self) -> bool:
        """Whether trials measure latency (slow): only when an objective or a constraint reads it."""
        return self.measure_latency or "latency_ms" in self.objectives or any(
            c.metric in ("latency_ms", "latency_p90_ms", "latency_ratio") for c in self.constraints)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["constraints"] = [c.text for c in self.constraints]
        return d


def _task_metrics(task: dict) -> tuple[str, ...]:
    m = task.get("metric")
    if m is None:
        return ()
    names = m.split(",") if isinstance(m, str) else m
    return tuple(n.strip() for n in names if n.strip())


def _sampler_settings(name: str, raw: dict, where: str) -> dict:
    allowed = SAMPLERS[name]
    out = {}
    for k, v in raw.items():
        if k not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise UserError(f"{where}: sampler.{k} is not a setting of sampler {name!r} (its settings: {known})")
        typ = allowed[k]
        if isinstance(typ, tuple):
            need(v in typ, where, f"sampler.{k}", f"one of {', '.join(map(repr, typ))}", v)
            out[k] = v
            continue
        ok = isinstance(v, bool) if typ is bool else (is_num(v) if typ is float else is_int(v))
        need(ok and (typ is bool or v >= 0), where, f"sampler.{k}",
              {bool: "true or false", float: "a number >= 0", int: "an integer >= 0"}[typ], v)
        if k.endswith("_prob"):
            need(0 <= v <= 1, where, f"sampler.{k}", "a probability between 0 and 1", v)
        if k == "population_size":
            need(v >= 2, where, f"sampler.{k}", "an integer >= 2", v)
        out[k] = v
    return out


def _looks_local(p: str) -> bool:
    return os.path.isabs(p) or p.startswith(".") or os.sep in p or os.path.splitext(p)[1] != ""
