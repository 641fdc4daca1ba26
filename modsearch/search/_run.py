"""Search: the quality-versus-cost frontier of a bank's plan space on one hardware target, with Optuna.

The pieces, from the inside out:

- :func:`evaluate_plan` scores one plan (quality on the dev set, cost on the target). It is a pure function of
  (bank, plan, data, task, target) and so can be cached: :class:`EvaluationCache` keeps its results as JSON
  files keyed by a sha256 of exactly those inputs, shared across trials, restarts and studies. No plan is
  evaluated twice. :class:`PlanEvaluator` adds what a long-running search wants on top: the cache, reuse of
  encoder outputs between plans that share an encoder plan, and counters.
- :class:`~modsearch.genome.PlanGenome` makes the search space static (the same categorical genes in every
  trial), so NSGA-II/III, TPE and GP model all of it.
- :func:`seed_plans` lists the baselines evaluated first, each tagged with its strategy in the trial's
  ``user_attrs["strategy"]``: the teacher, every uniform granularity, the paper's speed-first and size-first
  ladders, and layer dropping.
- :func:`run_search` runs (or continues) the Optuna study a :class:`~modsearch.study.StudyConfig` describes.

>>> from modsearch.study import StudyConfig
>>> result = run_search(StudyConfig.load("studies/bible-en-fr.toml"))          # doctest: +SKIP
>>> print(format_frontier(result.frontier))                                     # doctest: +SKIP
>>> evaluate_plan(bank, "0-1,2-3,4-5/0,1,2,3,4,5", dev, task, "cpu-1t-b1")      # doctest: +SKIP
{'plan': '0-1,2-3,4-5/0,1,2,3,4,5', 'quality': 31.2, 'params': 8123456, 'flops': 1.2e9, ...}
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .._errors import UserError
from .._io import write_json, write_text
from ..plan._genome import PlanGenome
from ..plan._plan import DROP, LAYER, MODULE, AssemblyPlan, Block, PlanSpace
from ._pareto import hypervolume, normalised_losses, pareto_front, reference_point
from ._storage import open_storage, quiet_warnings

__all__ = ["EvaluationCache", "PlanEvaluator", "SearchResult", "evaluate_plan", "fail_dead_trials", "format_frontier",
           "frontier_rows", "make_sampler", "run_search", "seed_plans", "trials_frame",
           "export_trials", "worker_id"]

#: Bump when a change to scoring or costing makes stored evaluations stale.
CACHE_VERSION = 1
_FINISHED = ("COMPLETE",)
PLAN_TRIAL_FACTOR = 10  # a budget of n plans also stops at 10 n trials, should a sampler only repeat itself


# -- the cache -------------------------------------------------------------------------------------------------
class EvaluationCache:
    """Evaluation results on disk as JSON, one file per key (a sha256 of the key's parts).

    JSON, not pickle: a cache directory can be shared, copied or planted, and reading it must never run code.
    Each file holds its key parts too, so a read checks them (a collision or a stray file is a miss), and is
    written atomically (a crash leaves no half entry). Concurrent writers of one key write the same content.

    >>> cache = EvaluationCache("studies/.cache")                                   # doctest: +SKIP
    >>> cache.get("quality", {"plan": "0,1/0,1"}) is None                           # doctest: +SKIP
    True
    """

    def __init__(self, root: str):
        self.root = os.path.join(root, "evaluations")
        self.hits = 0
        self.misses = 0

    @staticmethod
    def digest(kind: str, parts: dict) -> str:
        text = json.dumps({"kind": kind, "version": CACHE_VERSION, **parts}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _path(self, kind: str, digest: str) -> str:
        return os.path.join(self.root, kind, digest[:2], f"{digest}.json")

    def get(self, kind: str, parts: dict) -> dict | None:
        digest = self.digest(kind, parts)
        try:
            with open(self._path(kind, digest), encoding="utf-8") as f:
                entry = json.load(f)
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            self.misses += 1
            return None
        if not isinstance(entry, dict) or entry.get("digest") != digest or "value" not in entry:
            self.misses += 1
            return None
        self.hits += 1
        return entry["value"]

    def put(self, kind: str, parts: dict, value: dict) -> None:
        digest = self.digest(kind, parts)
        write_json(self._path(kind, digest), {"digest": digest, "kind": kind, "version": CACHE_VERSION,
                                              "key": parts, "value": value})

    @contextlib.contextmanager
    def lock(self, kind: str, parts: dict):
        """Hold an exclusive lock on one key across processes (``flock``; the lock dies with its process).

        Workers sharing the cache take it around an evaluation, then read the cache again: a worker that asks
        for a plan another one is evaluating waits for its result instead of evaluating it a second time, and
        two workers never write different results (say, two latency measurements) for one key."""
        import fcntl

        digest = self.digest(kind, parts)
        path = os.path.join(self.root, "locks", digest[:2], f"{digest}.lock")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def log(self, event: str, kind: str, plan: str) -> None:
        """Append one line to ``evaluations/log.jsonl``: which process started or finished evaluating what
        (an audit trail of the real work; single ``O_APPEND`` writes of one short line do not interleave)."""
        line = json.dumps({"time": time.time(), "worker": worker_id(), "event": event, "kind": kind,
                           "plan": plan}) + "\n"
        os.makedirs(self.root, exist_ok=True)
        fd = os.open(os.path.join(self.root, "log.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


def worker_id() -> str:
    """``host:pid`` of this process, recorded on each trial it runs (a dead local worker is recognised by it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


# -- evaluating one plan ---------------------------------------------------------------------------------------
class PlanEvaluator:
    """Evaluates plans of one bank on one dev set, task and target, with a cache and encoder reuse.

    ``measure_latency`` runs the target's latency protocol for each new plan (slow, and it needs a quiet
    machine); FLOPs and parameters are always computed. ``profile`` (a :class:`~modsearch.profile.LatencyProfile`)
    adds a predicted latency. ``counts`` says how much real work was done: ``quality`` and ``cost`` evaluations,
    ``cached`` results served from the cache, and ``encoder_reused`` scorings that skipped the encoder.

    >>> ev = PlanEvaluator(bank, dev, task, "cpu-1t-b1", cache=EvaluationCache(".cache"))   # doctest: +SKIP
    >>> ev.evaluate(bank.teacher_plan())["quality"]                                        # doctest: +SKIP
    39.1
    """

    def __init__(self, bank, devset, task, target=None, *, measure_latency: bool = False, profile=None,
                 cache: EvaluationCache | None = None, encoder_reuse: bool = True, encoder_cache_size: int = 8):
        from ..cost._target import FINGERPRINT_KEYS, HardwareTarget, fingerprint

        self.bank, self.devset, self.task = bank, devset, task
        self.target = HardwareTarget.resolve(target) if target is not None else None
        if self.target is not None and self.target.input_length == "dev":
            self.target = self.target.with_input_lengths(self._input_lengths())
        self.measure_latency = measure_latency and self.target is not None
        if measure_latency and self.target is None:
            raise UserError("measuring latency needs a hardware target")
        self.profile = profile
        self.cache = cache
        self.encoder_reuse = encoder_reuse and bank.kind == "seq2seq"
        self._encoders: collections.OrderedDict[str, object] = collections.OrderedDict()
        self._encoder_cache_size = encoder_cache_size
        self.counts = collections.Counter()
        self._layer_flops = None
        fp = fingerprint(self.target.device if self.target else "cpu")
        self.fingerprint = fp
        # What must agree for a cached cost to stand: shapes (FLOPs) need the software; latency needs the machine.
        self._cost_machine = {k: fp.get(k) for k in FINGERPRINT_KEYS} | {"transformers": fp.get("transformers")}
        self.fingerprint_id = hashlib.sha256(json.dumps(self._cost_machine, sort_keys=True).encode()).hexdigest()[:16]
        self._base = {"bank": bank.checksum}

    def _input_lengths(self) -> list[int]:
        tok = self.bank.tokenizer
        prefix = self.task.source_prefix if self.task.source_prefix is not None else self.bank.source_prefix
        return [len(ids) for ids in tok([prefix + s for s in self.devset.sources])["input_ids"]]

    # -- keys ---------------------------------------------------------------------------------------------
    def quality_key(self, plan: AssemblyPlan) -> dict:
        return self._base | {"plan": str(plan), "data": self.devset.content_hash, "task": self.task.to_json(),
                             "source_prefix": self.bank.source_prefix}

    def cost_key(self, plan: AssemblyPlan, latency: bool) -> dict:
        key = self._base | {"plan": str(plan), "target": self.target.to_dict() if self.target else None,
                            "latency": latency, "software": {k: self._cost_machine.get(k)
                                                             for k in ("torch", "transformers")}}
        if latency:
            key["machine"] = self._cost_machine
        return key

    # -- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, plan: str | AssemblyPlan) -> dict:
        """All metrics of ``plan`` as a flat JSON-ready dict (see :func:`evaluate_plan`)."""
        plan = self.bank.plan(plan)
        t0 = time.perf_counter()
        if self.cache is None:
            return self._evaluate(plan, t0)
        out = self._evaluate(plan, t0, lookup_only=True)
        if out is not None:
            return out
        # A miss: evaluate under the plan's lock, after reading the cache again (another worker may have
        # finished this plan while we waited for the lock).
        with self.cache.lock("plan", self._base | {"plan": str(plan)}):
            return self._evaluate(plan, t0)

    def _evaluate(self, plan: AssemblyPlan, t0: float, lookup_only: bool = False) -> dict | None:
        quality = self._cached("quality", self.quality_key(plan))
        need_latency = self.measure_latency
        cost = None
        if self.target is not None:
            cost = self._cached("cost", self.cost_key(plan, need_latency))
            if cost is None and not need_latency:  # an entry with latency serves a request without it
                cost = self._cached("cost", self.cost_key(plan, True))
        cached = quality is not None and (cost is not None or self.target is None)
        if lookup_only and not cached:
            return None
        if not cached and self.cache:
            self.cache.log("start", "plan", str(plan))
        model = None
        if quality is None:
            model = self._assemble(plan)
            quality = self._score(plan, model)
            self.counts["quality"] += 1
            if self.cache:
                self.cache.put("quality", self.quality_key(plan), quality)
        if cost is None and self.target is not None:
            if need_latency:
                model = model if model is not None else self._assemble(plan)
            cost = self._cost(plan, model, need_latency)
            self.counts["cost"] += 1
            if self.cache:
                self.cache.put("cost", self.cost_key(plan, need_latency), cost)
        if cached:
            self.counts["cached"] += 1
        elif self.cache:
            self.cache.log("done", "plan", str(plan))
        described = self.bank.describe_plan(plan)
        out = {"plan": str(plan), "depths": described["depths"], "quality": quality["value"],
               "scores": quality["scores"], "greater_is_better": quality["greater_is_better"],
               "params": described["params"], "params_ratio": described["params_ratio"]}
        if cost is not None:
            out.update({k: v for k, v in cost.items() if k != "timings"})
        if self.profile is not None:
            from ..cost._profile import _predict

            out["profile_latency_ms"] = _predict(self.profile, plan) * 1000
        out["timings"] = {"quality_s": quality.get("wall_time", 0.0),
                          "generate_s": quality.get("timings", {}).get("generate", 0.0),
                          # the encoder pass run apart from generate() when encoder outputs are reused
                          "encode_s": quality.get("timings", {}).get("encode", 0.0),
                          **({"cost_s": cost.get("timings", {}).get("cost_s", 0.0)} if cost else {}),
                          "evaluate_s": time.perf_counter() - t0}
        out["cached"] = cached
        out["fingerprint"] = self.fingerprint_id
        return out

    def _cached(self, kind: str, key: dict) -> dict | None:
        return self.cache.get(kind, key) if self.cache else None

    def _assemble(self, plan: AssemblyPlan):
        from ..assembly import assemble

        return assemble(self.bank, plan)

    def _score(self, plan: AssemblyPlan, model) -> dict:
        from ..quality import _score as score

        encoder_cache = None
        encode_s = 0.0
        if self.encoder_reuse:
            enc_plan = ",".join(str(b) for b in plan.stacks[0])
            encoder_cache = self._encoders.get(enc_plan)
            if encoder_cache is None:
                encoder_cache = score.encode(model, self.bank.tokenizer, self.devset, self.task,
                                             source_prefix=self.bank.source_prefix, tag=enc_plan)
                encode_s = encoder_cache.seconds
                self._encoders[enc_plan] = encoder_cache
                while len(self._encoders) > self._encoder_cache_size:
                    self._encoders.popitem(last=False)
            else:
                self._encoders.move_to_end(enc_plan)
                self.counts["encoder_reused"] += 1
        result = score.score_quality(model, self.bank.tokenizer, self.devset, self.task,
                                     source_prefix=self.bank.source_prefix, encoder_cache=encoder_cache)
        return {"value": result.value, "scores": result.scores, "primary": result.primary,
                "greater_is_better": result.greater_is_better, "n_examples": result.n_examples,
                "wall_time": result.wall_time, "timings": result.timings | ({"encode": encode_s} if encode_s else {})}

    def _cost(self, plan: AssemblyPlan, model, latency: bool) -> dict:
        from ..cost._measure import LayerFlops, cost_report

        t = time.perf_counter()
        if self._layer_flops is None:
            try:
                self._layer_flops = LayerFlops(self.bank, self.target)
            except ValueError:
                self._layer_flops = False  # layers differ in cost: count every plan
        out = {}
        if self._layer_flops:
            # Exact, and milliseconds instead of a counted generate() per plan (see LayerFlops).
            out["flops"] = self._layer_flops(plan)["total"]
        report = {}
        if latency or not self._layer_flops:
            # cost_report casts the model to the target's dtype and device in place: quality is scored before.
            report = cost_report(self.bank, plan, self.target, model=model, latency=latency,
                                 flops=not self._layer_flops, memory=False)
            if "flops" in report:
                out["flops"] = report["flops"]["total"]
        lat = report.get("latency")
        if lat:
            out["latency_ms"] = lat["p50"] * 1000
            if "p90" in lat:
                out["latency_p90_ms"] = lat["p90"] * 1000
            if "cv" in lat:
                out["latency_cv"] = lat["cv"]
            out["latency_n"] = lat["n"]
        out["timings"] = {"cost_s": time.perf_counter() - t}
        return out


def evaluate_plan(bank, plan, devset, task, target=None, *, measure_latency: bool = False, profile=None,
                  cache: EvaluationCache | None = None) -> dict:
    """Quality and cost of one plan: ``quality`` (the task's primary score), ``scores`` (every metric),
    ``params``, ``params_ratio``, ``flops`` (one end-to-end generate on the target's shapes), with
    ``measure_latency`` also ``latency_ms`` (p50), ``latency_p90_ms``, ``latency_cv``, and with a profile
    ``profile_latency_ms``; plus ``timings``, ``cached`` and the machine ``fingerprint`` id.

    A pure function of (bank, plan, data, task, target) apart from measured latency, which also depends on the
    machine (its fingerprint is part of the cache key).
    """
    return PlanEvaluator(bank, devset, task, target, measure_latency=measure_latency, profile=profile,
                         cache=cache, encoder_reuse=False).evaluate(plan)


# -- seeds -----------------------------------------------------------------------------------------------------
def _even_tiling(depth: int, spans: set[tuple[int, int]], n: int) -> tuple[Block, ...] | None:
    """A tiling of a stack into exactly ``n`` blocks (layers and modules, no drops) with the most even spans
    (smallest largest span, then fewest modules, then earliest modules), or None when there is none."""
    best: dict[tuple[int, int], tuple | None] = {}

    def go(p: int, k: int):
        if (p, k) in best:
            return best[(p, k)]
        if p == depth:
            res = ((0, 0), ()) if k == 0 else None
        elif k == 0:
            res = None
        else:
            res = None
            # Modules first: on a tie the earliest position takes the module.
            options = [Block(i, j, MODULE) for i, j in sorted(spans) if i == p] + [Block(p, p, LAYER)]
            for b in options:
                rest = go(b.end + 1, k - 1)
                if rest is None:
                    continue
                (mx, mods), blocks = rest
                score = (max(mx, b.span), mods + (b.kind == MODULE))
                if res is None or score < res[0]:
                    res = (score, (b, *blocks))
        best[(p, k)] = res
        return res

    res = go(0, n)
    return None if res is None else res[1]


def _ladder(depth: int, spans: set[tuple[int, int]]) -> list[tuple[Block, ...]]:
    """The stack compressed step by step: the even tilings with depth-1, depth-2, ... blocks (where they exist)."""
    out = []
    for n in range(depth - 1, 0, -1):
        t = _even_tiling(depth, spans, n)
        if t is not None:
            out.append(t)
    return out


def seed_plans(bank, space: PlanSpace, strategies: Sequence[str]) -> list[tuple[AssemblyPlan, str]]:
    """The baseline plans to evaluate before sampling, each with the strategy that proposed it.

    - ``teacher``: every original layer.
    - ``uniform``: for each module span k the bank has, every stack tiled with k-modules (the rest kept).
    - ``speed-first`` (Modular Transformers): compress the decoder first (it runs once per generated token),
      one step at a time with the most even modules, then the encoder.
    - ``size-first`` (Modular Transformers): compress every stack evenly, step by step.
    - ``drop-alternate``: drop every other layer (1, 3, 5...) of every stack.
    - ``drop-one``: each single layer dropped in turn (which single drop hurts least shows in the study).

    A plan proposed by several strategies is listed once, under the first. Plans outside ``space`` (drops
    when drops are off, spans left out) are skipped.
    """
    depths, spans = list(space.depths), [set(m) for m in space.modules]
    teacher = tuple(tuple(Block(i, i, LAYER) for i in range(d)) for d in depths)
    found: list[tuple[AssemblyPlan, str]] = []

    def add(stacks, strategy):
        plan = AssemblyPlan(tuple(stacks))
        if space.contains(plan) and all(str(plan) != str(p) for p, _ in found):
            found.append((plan, strategy))

    for strategy in strategies:
        if strategy == "teacher":
            add(teacher, strategy)
        elif strategy == "uniform":
            for k in sorted({j - i + 1 for s in spans for i, j in s}):
                stacks = []
                for d, s in zip(depths, spans):
                    blocks, p = [], 0
                    while p < d:
                        b = Block(p, p + k - 1, MODULE) if (p, p + k - 1) in s else Block(p, p, LAYER)
                        blocks.append(b)
                        p = b.end + 1
                    stacks.append(tuple(blocks))
                add(stacks, strategy)
        elif strategy == "speed-first":
            ladders = [_ladder(d, s) for d, s in zip(depths, spans)]
            order = list(range(len(depths)))[::-1]  # decoder (last stack) first
            current = list(teacher)
            for s in order:
                for step in ladders[s]:
                    current[s] = step
                    add(current, strategy)
        elif strategy == "size-first":
            ladders = [_ladder(d, s) for d, s in zip(depths, spans)]
            for step in range(max((len(ld) for ld in ladders), default=0)):
                add([ld[min(step, len(ld) - 1)] if ld else t for ld, t in zip(ladders, teacher)], strategy)
        elif strategy == "drop-alternate":
            add([tuple(Block(i, i, DROP if i % 2 else LAYER) for i in range(d)) for d in depths], strategy)
        elif strategy == "drop-one":
            for s, d in enumerate(depths):
                for i in range(d):
                    stacks = list(teacher)
                    stacks[s] = tuple(Block(j, j, DROP if j == i else LAYER) for j in range(d))
                    add(stacks, strategy)
        else:
            raise UserError(f"unknown seed strategy {strategy!r}")
    return found


# -- samplers --------------------------------------------------------------------------------------------------
def make_sampler(name: str, settings: dict | None = None, seed: int | None = None):
    """An Optuna sampler by name (nsga2, nsga3, tpe, gp, random) with its settings.

    Samplers read constraints from ``trial.set_constraint``; none gets a ``constraints_func``.
    """
    import optuna

    s = dict(settings or {})
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
                            "another sampler (nsga2, nsga3, tpe, random)") from None
        return optuna.samplers.GPSampler(seed=seed, **s)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler {name!r}: use nsga2, nsga3, tpe, gp or random")


# -- the study -------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """What :func:`run_search` did: the study, its frontier rows, counts and where results were written."""

    study: object
    frontier: list[dict]
    n_trials: int
    new_trials: int
    interrupted: bool
    evaluations: dict
    hypervolume: float
    files: dict = field(default_factory=dict)
    teacher: dict = field(default_factory=dict)
    n_plans: int = 0  # distinct plans in the study


def _metrics(rec: dict, teacher: dict | None) -> dict:
    """The flat metrics of an evaluation record, with ratios and speedup against the teacher."""
    m = {k: rec[k] for k in ("quality", "params", "params_ratio", "flops", "latency_ms", "latency_p90_ms",
                             "latency_cv", "profile_latency_ms") if rec.get(k) is not None}
    m.update({k: v for k, v in rec["scores"].items() if k not in m})
    if teacher:
        if teacher.get("flops"):
            m["flops_ratio"] = m.get("flops", float("nan")) / teacher["flops"]
        for lat in ("latency_ms", "profile_latency_ms", "flops"):
            if m.get(lat) and teacher.get(lat):
                m["speedup"] = teacher[lat] / m[lat]
                m["speedup_basis"] = lat
                break
    return m


def _stored_identity(cfg, bank, devset, task, target, genome) -> dict:
    return {"bank_checksum": bank.checksum, "data_hash": devset.content_hash, "task": task.to_json(),
            "target": target.to_dict() if target else None, "objectives": cfg.objectives,
            "constraints": [c.text for c in cfg.constraints], "genome": genome.describe()}


def run_search(cfg, progress: bool = True, log: Callable[[str], None] | None = print,
               callbacks: Sequence[Callable] = (), *, storage=None, optimize: Callable | None = None,
               on_ready: Callable | None = None) -> SearchResult:
    """Run the study ``cfg`` describes, or continue it: it stops at ``n_trials`` finished trials in the study
    (not in this run), or at ``n_plans`` distinct plans in it (a sampler that proposes one of its plans again
    gets a trial served from the cache, which ``n_plans`` does not count; at most ``PLAN_TRIAL_FACTOR x n_plans``
    trials), or after ``timeout`` seconds of this run, or at Ctrl-C (the trial under way is marked failed;
    every completed one is kept).

    Trials left RUNNING by a process of this host that no longer exists (killed mid-trial) are failed and
    queued again with the same plan before the study continues.

    Writes ``trials.csv`` and ``trials.parquet`` to ``cfg.output`` and returns a :class:`SearchResult`.

    Hooks for :mod:`modsearch.worker`: ``storage`` (an Optuna storage object used instead of ``cfg.storage``),
    ``on_ready()`` (called once the study exists and its seeds are queued) and ``optimize(study, objective,
    n_trials, timeout, callbacks)`` (runs the trials instead of ``study.optimize``).
    """
    import optuna

    from ..bank._bank import LayerBank
    from ..cost._target import HardwareTarget

    say = log or (lambda _m: None)
    bank = LayerBank.load(cfg.bank)
    task = cfg.quality_task()
    devset = cfg.load_devset()
    task.load_metrics()  # a metric that cannot load fails now, not after the first trial's generation
    if not bank.has_tokenizer():
        raise UserError(f"bank {bank.path} has no tokenizer: scoring text needs one")
    target = HardwareTarget.resolve(cfg.target)
    if cfg.needs_latency():
        # Measured latency needs the target's device here; quality, FLOPs, params and profile latency do not,
        # so CPU-only quality workers can join a study whose target is a GPU.
        target.check_available()
    profile = _load_profile(cfg, bank, target, say, progress) if cfg.profile else None
    space = bank.space(drops=cfg.drops, granularities=cfg.granularities)
    genome = PlanGenome(space, bank.stack_names)
    cache = EvaluationCache(cfg.cache) if cfg.cache else None
    evaluator = PlanEvaluator(bank, devset, task, target, measure_latency=cfg.needs_latency(), profile=profile,
                              cache=cache)

    say(f"study {cfg.name}: bank {bank.path} ({space.count():,} plans, {len(genome)} genes), "
        f"{len(devset)} dev examples, target {target.name}, objectives {', '.join(cfg.objectives)}")
    teacher_rec = evaluator.evaluate(bank.teacher_plan())
    teacher = _metrics(teacher_rec, None)
    teacher = _metrics(teacher_rec, teacher)
    maximize = bool(teacher_rec["greater_is_better"])
    for c in cfg.constraints:
        if c.metric not in teacher:
            raise UserError(f"constraint {c.text!r}: this study does not compute {c.metric!r} "
                            f"(it computes {', '.join(sorted(teacher))})")
    directions = ["maximize" if maximize else "minimize"] + ["minimize"] * (len(cfg.objectives) - 1)

    storage = storage if storage is not None else open_storage(cfg.storage)
    os.makedirs(cfg.output, exist_ok=True)  # after the storage opened: a bad URL leaves nothing behind
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        try:
            study = optuna.load_study(study_name=cfg.name, storage=storage, sampler=None)
            existing = True
        except KeyError:
            existing = False
        identity = _stored_identity(cfg, bank, devset, task, target, genome)
        if existing:
            _check_same_study(study, cfg, directions, identity)
            n_dead = fail_dead_trials(study)
            if n_dead:
                say(f"failed {n_dead} trial(s) left running by a killed process; queued again with the same plan")
        n_before = len(study.trials) if existing else 0
        sampler = make_sampler(cfg.sampler, cfg.sampler_settings, seed=cfg.seed + n_before)
        study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions, sampler=sampler,
                                    load_if_exists=True)
        if not existing:
            with quiet_warnings():  # set_metric_names is "experimental" since Optuna 3.2, still in 5.0
                study.set_metric_names(list(cfg.objectives))
            study.set_user_attr("modsearch", identity)
            study.set_user_attr("teacher", {"plan": teacher_rec["plan"], **teacher})
            study.set_user_attr("config", cfg.to_json())

        known = {t.user_attrs.get("plan") for t in study.get_trials(deepcopy=False)
                 if t.state.name in ("COMPLETE", "WAITING")}
        seeds = seed_plans(bank, space, cfg.seed_strategies)
        for text in cfg.seed_plans:
            plan = bank.plan(text)
            if not space.contains(plan):
                raise UserError(f"seeds.plans: {text!r} is outside the study's space (drops or spans excluded)")
            seeds.append((plan, "user"))
        n_seeded = 0
        for plan, strategy in seeds:
            if str(plan) in known:
                continue
            known.add(str(plan))
            study.enqueue_trial(genome.to_params(plan), user_attrs={"strategy": strategy, "plan": str(plan)})
            n_seeded += 1

        finished = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED)
        remaining = None if cfg.n_trials is None else max(0, cfg.n_trials - finished)
        plans = _study_plans(study)
        plans_left = None
        if cfg.n_plans is not None:
            plans_left = max(0, cfg.n_plans - len(plans))
            cap = max(0, PLAN_TRIAL_FACTOR * cfg.n_plans - finished) if plans_left else 0
            remaining = cap if remaining is None else min(remaining, cap)
        if n_seeded:
            say(f"enqueued {n_seeded} baseline plan(s) ({', '.join(sorted({s for _, s in seeds}))})")
        if existing:
            say(f"continuing study {cfg.name}: {finished} finished trial(s) so far")
        if on_ready is not None:
            on_ready()

        objective = _objective(cfg, evaluator, genome, teacher, maximize)
        bar = _ProgressBar(study, remaining if plans_left is None else plans_left, teacher, cfg.objectives,
                           maximize, enabled=progress, plans=None if plans_left is None else plans)
        # The plan count first: the bar reads the set it keeps.
        stops = [] if cfg.n_plans is None else [_stop_at_plans(plans, cfg.n_plans)]
        interrupted = False
        if remaining != 0:
            try:
                if optimize is not None:
                    optimize(study, objective, remaining, cfg.timeout, [*stops, bar.update, *callbacks])
                else:
                    study.optimize(objective, n_trials=remaining, timeout=cfg.timeout,
                                   callbacks=[*stops, bar.update, *callbacks], gc_after_trial=False)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                bar.close()
        else:
            if plans_left == 0:
                say(f"study {cfg.name} already has {len(plans)} distinct plan(s) (n_plans = {cfg.n_plans}); "
                    "raise --n-plans to continue it")
            elif cfg.n_plans is not None and (cfg.n_trials is None or finished < cfg.n_trials):
                say(f"study {cfg.name} has run {finished} trial(s), {PLAN_TRIAL_FACTOR} x n_plans, for "
                    f"{len(plans)} distinct plan(s): its sampler keeps proposing known plans")
            else:
                say(f"study {cfg.name} already has {finished} finished trial(s) (n_trials = {cfg.n_trials}); "
                    "raise --n-trials to continue it")
    finally:
        optuna.logging.set_verbosity(previous)

    files = export_trials(study, cfg.output)
    frontier = frontier_rows(study)
    finished_after = sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED)
    hv = _study_hypervolume(study, teacher, cfg.objectives, maximize)
    files.update({"storage": cfg.storage, "study_name": cfg.name, "cache": cfg.cache or ""})
    return SearchResult(study=study, frontier=frontier, n_trials=finished_after,
                        new_trials=finished_after - finished, interrupted=interrupted,
                        evaluations=dict(evaluator.counts) | ({"cache_hits": cache.hits} if cache else {}),
                        hypervolume=hv, files=files, teacher=teacher, n_plans=len(_study_plans(study)))


def _study_plans(study) -> set[str]:
    return {t.user_attrs.get("plan") for t in study.get_trials(deepcopy=False) if t.state.name in _FINISHED}


def _stop_at_plans(plans: set[str], n_plans: int) -> Callable:
    """A callback that stops the study once it holds ``n_plans`` distinct plans (``plans``: those it has)."""
    def stop(study, trial) -> None:
        if trial.state.name in _FINISHED:
            plans.add(trial.user_attrs.get("plan"))
        if len(plans) >= n_plans:
            study.stop()

    return stop


def _objective(cfg, evaluator: PlanEvaluator, genome: PlanGenome, teacher: dict, maximize: bool):
    def objective(trial):
        trial.set_user_attr("worker", worker_id())  # before the work: a dead worker's trial is recognisable
        plan = genome.suggest(trial)
        rec = evaluator.evaluate(plan)
        m = _metrics(rec, teacher)
        trial.set_user_attr("plan", rec["plan"])
        if "strategy" not in trial.user_attrs:
            trial.set_user_attr("strategy", "sampler")
        for k, v in m.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("depths", rec["depths"])
        trial.set_user_attr("timings", rec["timings"])
        trial.set_user_attr("cached", rec["cached"])
        trial.set_user_attr("fingerprint", rec["fingerprint"])
        feasible = True
        for c in cfg.constraints:
            v = c.violation(m[c.metric], teacher.get(c.metric))
            trial.set_constraint(c.text, v)
            trial.set_user_attr(f"constraint:{c.text}", v)
            feasible = feasible and v <= 0
        trial.set_user_attr("feasible", feasible)
        return [m[o] for o in cfg.objectives]

    objective.evaluator = evaluator
    return objective


def fail_dead_trials(study, max_retry: int | None = 3) -> int:
    """Fail the study's RUNNING trials whose worker ran on this host and is gone (SIGKILL, OOM, power), and
    queue each again with the same parameters (so the same plan) as Optuna's heartbeat retry does. Returns how
    many were failed. Trials of other hosts are left to the RDB heartbeat (see :mod:`modsearch.worker`)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    host = socket.gethostname()
    retry = None
    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        who = t.user_attrs.get("worker", "")
        w_host, _, pid = who.rpartition(":")
        if w_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if not study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process failed it first, and queued the retry
        if retry is None:
            with quiet_warnings():  # "experimental" since Optuna 2.8
                retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        with quiet_warnings():
            retry(study, study._storage.get_trial(t._trial_id))
        n += 1
    return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_same_study(study, cfg, directions: list[str], identity: dict) -> None:
    stored = study.user_attrs.get("modsearch")
    have = [d.name.lower() for d in study.directions]
    hint = "give another --study-name (or storage) for a new study"
    if have != directions:
        raise UserError(f"study {cfg.name!r} in {cfg.storage} has directions {have}, this config needs "
                        f"{directions}; {hint}")
    if stored is None:
        raise UserError(f"study {cfg.name!r} in {cfg.storage} was not made by modsearch search; {hint}")
    for key, what in (("bank_checksum", "bank"), ("data_hash", "dev data"), ("task", "task"), ("target", "target"),
                      ("objectives", "objectives"), ("constraints", "constraints"), ("genome", "plan space")):
        if stored.get(key) != identity[key]:
            raise UserError(f"study {cfg.name!r} in {cfg.storage} was run with another {what}; its trials are not "
                            f"comparable with this config's; {hint}")


def _load_profile(cfg, bank, target, say, progress):
    from ..cost._profile import LatencyProfile, build_profile

    if not os.path.exists(cfg.profile):
        say(f"no latency profile at {cfg.profile}: measuring one for target {target.name} (once)")
        prof = build_profile(bank, target, progress=progress)
        prof.save(cfg.profile)
    prof = LatencyProfile.load(cfg.profile)
    prof.check_bank(bank)
    prof.check_machine(cfg.allow_foreign_profile)
    if prof.target.get("name") != target.name:
        raise UserError(f"profile {cfg.profile} was measured for target {prof.target_name!r}, the study's target "
                        f"is {target.name!r}")
    return prof


# -- progress --------------------------------------------------------------------------------------------------
class _ProgressBar:
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


def _study_hypervolume(study, teacher, objectives, maximize) -> float:
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
    for i in pareto_front([[s * v for s, v in zip(signs, t.values)] for t in pool]):
        t = pool[i]
        row = {"trial": t.number, "plan": t.user_attrs.get("plan"), "strategy": t.user_attrs.get("strategy")}
        row.update(dict(zip(names, t.values)))
        for k in ("params_ratio", "speedup", "speedup_basis"):
            if k in t.user_attrs:
                row[k] = t.user_attrs[k]
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


def format_frontier(rows: list[dict]) -> str:
    """The frontier as an aligned text table."""
    if not rows:
        return "(no feasible completed trial yet)"
    cols = [c for c in rows[0] if c != "speedup_basis"]
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
logging.getLogger("alembic").setLevel(logging.WARNING)
