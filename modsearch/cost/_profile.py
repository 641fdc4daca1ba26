"""Latency profiles: a per-target lookup table that predicts a plan's latency without running it.

A profile is measured once per (bank, target, machine)::

    predict(profile, plan) = overhead + sum of the costs of the plan's kept blocks

How the costs are measured: a set of *calibration plans* (a few that together contain every distinct block of
the bank, then plans spread over every kept-block count of each stack) runs end to end, plain ``generate()``
at the target's shape, interleaved round by round so that the machine's slow drifts fall on every plan alike.
The overhead and the block costs are then fitted to those end-to-end times by least squares. Every block of a
stack is an instance of the same layer class with the same shapes (that is what a module is), so it does the
same work wherever it sits: the fit has one cost per stack (each encoder block at the input shape, each decoder
block for all its decode steps with the KV cache) and the fixed overhead (embeddings, LM head, the generation
loop, the first layer of a stack touching its state after the LM head evicted it from cache).

Why not time each layer with hooks inside a run: tried, and on a small model at batch 1 (a decode step of a few
hundred microseconds per layer) the hooks and the Python around them became part of the "overhead", which then
over-predicted a one-layer decoder by 40-70 % (benchmarks/latency_predictor.py, README). End-to-end times are
what a deployment sees, so they are what the fit matches; its leave-one-out error over the calibration plans is
stored in the profile, and ``modsearch profile --check`` measures the error on held-out random plans.

On disk a profile is JSON (written atomically) that records the target, the protocol, the bank checksum, the
machine's fingerprint and the calibration plans with their measured and fitted times. Measured objectives
refuse a profile made on another machine unless told otherwise (``allow_foreign=True``).

>>> profile = build_profile(bank, "cpu-1t-b1")                    # doctest: +SKIP
>>> profile.save("profiles/cpu-1t-b1.json")                       # doctest: +SKIP
>>> predict(LatencyProfile.load("profiles/cpu-1t-b1.json"), "0-1,2,3,4,5/0,1,2,3,x4,5")   # doctest: +SKIP
0.0734
"""

from __future__ import annotations

import collections
import datetime as _dt
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .._errors import UserError
from .._io import write_json
from .._version import __version__
from ._paired import interleaved_rounds
from ._measure import Clock, _runner, percentile, pinned_threads, prepare, summarize, timed_step
from ..plan._plan import DROP, LAYER, MODULE, AssemblyPlan, Block
from ._target import HardwareTarget, fingerprint, fingerprint_mismatch

FORMAT = "modsearch-latency-profile"
SCHEMA_VERSION = 2
#: Calibration plans beyond the covering ones, by default: enough that leaving any one out moves the fit little.
CALIBRATION_PLANS = 24


@dataclass
class LatencyProfile:
    """Block costs of one bank on one target and machine, fitted to measured end-to-end latencies.

    ``blocks`` maps ``"stack:block"`` (block in plan notation, e.g. ``"decoder:2-3"``) to
    ``{"seconds": cost per end-to-end run, "per_call": seconds per forward call, "calls": calls per run}``.
    ``overhead`` is the fixed time of a run, in seconds. ``plans`` are the calibration plans
    (``{"plan", "p50", "fitted", "n", "cv"}``) and ``fit`` summarises the least-squares fit (per-stack block
    cost, residual and leave-one-out errors).
    """

    target: dict
    fingerprint: dict
    bank_checksum: str
    stacks: list[str]
    blocks: dict[str, dict]
    overhead: float
    fit: dict = field(default_factory=dict)
    plans: list[dict] = field(default_factory=list)
    created: str = ""
    modsearch_version: str = __version__

    def to_json(self) -> dict:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "created": self.created,
                "modsearch_version": self.modsearch_version, "target": self.target,
                "protocol": self.target.get("protocol"), "fingerprint": self.fingerprint,
                "bank_checksum": self.bank_checksum, "stacks": self.stacks, "overhead": self.overhead,
                "blocks": self.blocks, "fit": self.fit, "plans": self.plans}

    def save(self, path: str) -> str:
        write_json(path, self.to_json())
        return path

    @classmethod
    def load(cls, path: str) -> LatencyProfile:
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise UserError(f"profile {path} not found (make one with 'modsearch profile BANK --target T "
                            f"--out {path}')") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"profile {path} is not valid JSON ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise UserError(f"{path} is not a modsearch latency profile")
        if not isinstance(d.get("schema_version"), int) or d["schema_version"] > SCHEMA_VERSION:
            raise UserError(f"profile {path}: schema version {d.get('schema_version')!r} is newer than this "
                            f"modsearch understands ({SCHEMA_VERSION}); upgrade modsearch")
        missing = [k for k in ("target", "fingerprint", "bank_checksum", "stacks", "blocks", "overhead") if k not in d]
        if missing:
            raise UserError(f"profile {path} lacks field(s) {', '.join(missing)}")
        # Schema 1 (hook-timed blocks) has the same prediction fields; its "first_slot" is already in "overhead".
        return cls(target=d["target"], fingerprint=d["fingerprint"], bank_checksum=d["bank_checksum"],
                   stacks=list(d["stacks"]), blocks=d["blocks"], overhead=float(d["overhead"]),
                   fit=d.get("fit", {}), plans=d.get("plans", []), created=d.get("created", ""),
                   modsearch_version=d.get("modsearch_version", ""))

    @property
    def target_name(self) -> str:
        return self.target.get("name", "?")

    def check_machine(self, allow_foreign: bool = False, current: dict | None = None) -> None:
        """Refuse (one line) a profile measured on another machine, unless ``allow_foreign``."""
        if allow_foreign:
            return
        current = current or fingerprint(self.target.get("device", "cpu"))
        diff = fingerprint_mismatch(self.fingerprint, current)
        if diff:
            raise UserError(f"profile for target {self.target_name!r} was measured on another machine ({diff[0]}"
                            f"{f' and {len(diff) - 1} more' if len(diff) > 1 else ''}); re-profile here or "
                            "pass --allow-foreign-profile to use it anyway")

    def seconds(self, plan) -> float:
        """Predicted latency of ``plan`` in seconds, without the machine check of :func:`predict` (for tables
        built elsewhere, and for replays)."""
        return _predict(self, plan)

    def check_bank(self, bank) -> None:
        if bank.checksum != self.bank_checksum:
            raise UserError(f"profile for target {self.target_name!r} was measured on another bank (checksum "
                            f"{self.bank_checksum[:12]}, this bank {bank.checksum[:12]}); re-profile this bank")


def _key(stack: str, block: Block) -> str:
    return f"{stack}:{block}"


def predict(profile: LatencyProfile, plan: str | AssemblyPlan, allow_foreign: bool = False) -> float:
    """Predicted end-to-end latency of ``plan`` in seconds: overhead + sum of its kept blocks' costs.

    >>> predict(profile, "0-1,2,3,4,5/0,1,2,3,x4,5")   # doctest: +SKIP
    0.0734
    """
    profile.check_machine(allow_foreign)
    return _predict(profile, plan)


def _predict(profile: LatencyProfile, plan: str | AssemblyPlan) -> float:
    plan = AssemblyPlan.parse(plan) if isinstance(plan, str) else plan
    if len(plan.stacks) != len(profile.stacks):
        raise UserError(f"plan {str(plan)!r} has {len(plan.stacks)} stack(s); the profile has "
                        f"{len(profile.stacks)} ({', '.join(profile.stacks)})")
    total = profile.overhead
    for stack, blocks in zip(profile.stacks, plan.stacks):
        for b in blocks:
            if b.kind == DROP:
                continue
            entry = profile.blocks.get(_key(stack, b))
            if entry is None:
                raise UserError(f"profile for target {profile.target_name!r} has no block {stack} {b} "
                                "(was it made from another bank?)")
            total += float(entry["seconds"])
    return total


# -- calibration plans -------------------------------------------------------------------------------------------
def covering_plans(bank) -> list[AssemblyPlan]:
    """Few plans that together contain every distinct block: the teacher, then plans that greedily take
    modules not yet covered (left to right, original layers in the gaps)."""
    plans = [bank.teacher_plan()]
    todo = [{(e.start, e.end) for e in bank.modules.values() if e.stack == s} for s in bank.stack_names]
    while any(todo):
        stacks = []
        for s, depth in enumerate(bank.depths):
            blocks, p = [], 0
            while p < depth:
                mine = sorted((j, i) for i, j in todo[s] if i == p)
                if mine:
                    j = mine[-1][0]  # the longest uncovered module starting here
                    blocks.append(Block(p, j, MODULE))
                    todo[s].discard((p, j))
                    p = j + 1
                else:
                    blocks.append(Block(p, p, LAYER))
                    p += 1
            stacks.append(tuple(blocks))
        plans.append(bank.plan(AssemblyPlan(tuple(stacks))))
    return plans


def calibration_plans(bank, extra: int = CALIBRATION_PLANS, seed: int = 0) -> list[AssemblyPlan]:
    """The covering plans, then ``extra`` distinct plans chosen so that every combination of kept-block counts
    per stack the space offers is measured about equally often (random plans bunch around the middle depths;
    a fit needs the shallow and deep ends too, so a combination no random plan has gets a constructed one)."""
    plans = covering_plans(bank)
    seen = {str(p) for p in plans}
    space = bank.space()
    pool = [p for p in space.sample(min(space.count(), max(200, 40 * extra)), seed=seed) if str(p) not in seen]
    by_counts: dict[tuple[int, ...], list[AssemblyPlan]] = {}
    for p in pool:
        by_counts.setdefault(p.depths, []).append(p)
    # A deep stack's extreme counts (one block kept, or all but one) are too rare to come up at random.
    for i, counts in enumerate(itertools.product(*space.kept_counts())):
        if counts not in by_counts:
            plan = space.sample_depths(counts, seed=seed * 7919 + i)[0]
            if str(plan) not in seen:
                by_counts[counts] = [plan]
    have = collections.Counter(p.depths for p in plans)
    # Each stack's count taken per value too: with more combinations than plans (deep banks), the least-taken
    # combinations alone could still miss a stack's extremes.
    per_stack = [collections.Counter(p.depths[s] for p in plans) for s in range(len(space.depths))]
    rng = random.Random(seed)
    while extra > 0 and any(by_counts.values()):
        open_ = [c for c, ps in by_counts.items() if ps]
        key = {c: (have[c], sum(per_stack[s][k] for s, k in enumerate(c))) for c in open_}
        least = min(key.values())
        c = rng.choice(sorted(c for c in open_ if key[c] == least))
        plans.append(by_counts[c].pop())
        have[c] += 1
        for s, k in enumerate(c):
            per_stack[s][k] += 1
        extra -= 1
    return plans


# -- measuring ---------------------------------------------------------------------------------------------------
def run_interleaved(steps: Sequence, protocol, clock: Clock = time.perf_counter, on_round=None,
                    rng: random.Random | None = None) -> int:
    """Run several measurements in rounds (one step of each per round, in shuffled order) under one protocol:
    ``warmup`` rounds, then rounds until every step has ``min_iterations`` samples and ``min_seconds`` per step
    have passed. The steps record their own samples; returns the number of timed rounds.

    Interleaving spreads slow drifts of the machine (other load, clock frequency, a noisy neighbour on a
    virtual machine) evenly over the plans, so they bias no plan against another.
    """
    def keep_going(samples, elapsed) -> bool:
        n = len(samples[0]) if samples else 0
        return n < protocol.max_iterations and (
            n < protocol.min_iterations or elapsed < protocol.min_seconds * len(steps))

    wrapped = [lambda s=s: (s(), 0.0)[1] for s in steps]
    samples = interleaved_rounds(wrapped, protocol.warmup, keep_going, rng=rng, clock=clock, on_round=on_round)
    return len(samples[0]) if samples else 0


def _memory_budget(device: str) -> int:
    """Bytes of weights that may be resident at once while plans are measured side by side."""
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.6)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return int(info["MemAvailable"] * 0.4)
    except (OSError, KeyError, ValueError):
        return 4 << 30


def _groups(bank, plans: Sequence[AssemblyPlan], target: HardwareTarget) -> list[list[AssemblyPlan]]:
    """Consecutive plans in groups whose assembled weights fit the memory budget together (one plan per group
    when a single model is already that big: then the plans are measured one after the other)."""
    itemsize = target.itemsize
    budget = _memory_budget(target.device)
    groups: list[list[AssemblyPlan]] = [[]]
    used = 0
    for p in plans:
        size = bank.plan_params(p) * itemsize
        if groups[-1] and used + size > budget:
            groups.append([])
            used = 0
        groups[-1].append(p)
        used += size
    return groups


def measure_interleaved(bank, plans: Sequence[AssemblyPlan], target: HardwareTarget, *, seed: int = 0,
                        clock: Clock = time.perf_counter, progress: bool = True, desc: str = "measuring",
                        assemble_fn: Callable | None = None) -> list[list[float]]:
    """End-to-end ``generate()`` times of each plan (seconds, warm-up runs left out), measured in interleaved
    rounds under the target's protocol, threads pinned. Plans whose weights do not fit in memory together are
    measured in consecutive groups."""
    from ..assembly import assemble

    assemble_fn = assemble_fn or assemble
    out: list[list[float]] = []
    groups = _groups(bank, plans, target)
    for g, group in enumerate(groups):
        part = f", group {g + 1}/{len(groups)}" if len(groups) > 1 else ""
        bar = _bar(None, f"{desc} {target.name} ({len(group)} plans interleaved{part})", progress, unit="round")
        try:
            steps, samples = [], []
            for plan in group:
                model, inputs = prepare(assemble_fn(bank, plan), target, seed)
                step = timed_step(_runner(model, inputs, target), target.device, clock)
                mine: list[float] = []
                samples.append(mine)
                steps.append(lambda step=step, mine=mine: mine.append(step()))
            with pinned_threads(target.n_threads):
                run_interleaved(steps, target.protocol, clock, on_round=lambda _r: bar.update(1))
            out += [s[target.protocol.warmup:] for s in samples]
            del steps  # the group's models go before the next group's are built
        finally:
            bar.close()
    return out


def _calls_per_run(bank, target: HardwareTarget, seed: int = 0) -> dict[str, int]:
    """Forward calls of a stack's layer in one ``generate()`` (once for an encoder, once per decode step for a
    decoder), counted on one untimed run of the teacher."""
    from ..assembly import assemble

    model, inputs = prepare(assemble(bank, bank.teacher_plan()), target, seed)
    calls = {s: 0 for s in bank.stack_names}
    handles = []
    for s in bank.stack_names:
        first = bank.adapter.layers(model, s)[0]
        handles.append(first.register_forward_hook(lambda *_a, s=s: calls.__setitem__(s, calls[s] + 1)))
    try:
        with pinned_threads(target.n_threads):
            _runner(model, inputs, target)()
    finally:
        for h in handles:
            h.remove()
    return calls


# -- fitting -----------------------------------------------------------------------------------------------------
def fit_costs(counts: Sequence[Sequence[int]], seconds: Sequence[float]) -> dict:
    """Least-squares fit of ``seconds ≈ overhead + sum_s cost[s] * counts[s]``, with no cost below zero.

    A stack whose count is the same in every plan cannot be told apart from the overhead: its cost is 0 and
    the overhead carries it (``unidentified`` lists such stacks). Returns ``{"overhead", "costs",
    "unidentified", "fitted", "loo"}``: ``fitted`` are the fitted times, ``loo`` the leave-one-out
    predictions (each plan predicted by the fit to all the others).
    """
    import numpy as np

    X = np.asarray(counts, dtype=float)
    y = np.asarray(seconds, dtype=float)
    n_stacks = X.shape[1]
    varying = [s for s in range(n_stacks) if np.ptp(X[:, s]) > 0]

    def solve(rows) -> tuple[float, list[float]]:
        from scipy.optimize import lsq_linear

        # Bounded least squares: the overhead is free, every identifiable stack's cost is >= 0.
        A = np.c_[np.ones(len(rows)), X[np.ix_(rows, varying)]]
        lower = np.r_[-np.inf, np.zeros(len(varying))]
        beta = lsq_linear(A, y[rows], bounds=(lower, np.inf), method="bvls").x  # exact at the bounds
        costs = [0.0] * n_stacks
        for c, b in zip(varying, beta[1:]):
            costs[c] = float(b)
        return float(beta[0]), costs

    rows = list(range(len(y)))
    overhead, costs = solve(rows)
    fitted = [overhead + float(np.dot(costs, X[i])) for i in rows]
    loo = []
    for i in rows:
        o, c = solve([j for j in rows if j != i]) if len(rows) > n_stacks + 2 else (overhead, costs)
        loo.append(o + float(np.dot(c, X[i])))
    return {"overhead": overhead, "costs": costs, "unidentified": [s for s in range(n_stacks) if s not in varying],
            "fitted": fitted, "loo": loo}


def build_profile(bank, target: str | dict | HardwareTarget, progress: bool = True,
                  clock: Clock = time.perf_counter, seed: int = 0, extra_plans: int = CALIBRATION_PLANS) -> LatencyProfile:
    """Measure the calibration plans of ``bank`` on ``target`` end to end and fit the profile to them (see the
    module docstring)."""
    target = HardwareTarget.resolve(target)
    target.fixed_input_length  # noqa: B018  (a "dev" input length must be fixed first)
    target.check_available()
    plans = calibration_plans(bank, extra_plans, seed)
    samples = measure_interleaved(bank, plans, target, seed=seed, clock=clock, progress=progress,
                                  desc="profiling")
    p50 = [percentile(s, 50) for s in samples]
    counts = [p.depths for p in plans]
    fit = fit_costs(counts, p50)
    calls = _calls_per_run(bank, target, seed)
    blocks = {}
    for s, stack in enumerate(bank.stack_names):
        spans = [(i, i) for i in range(bank.depths[s])] + [(e.start, e.end) for e in bank.modules.values()
                                                          if e.stack == stack]
        for i, j in sorted(spans):
            block = Block(i, j, LAYER if i == j else MODULE)
            blocks[_key(stack, block)] = {"seconds": fit["costs"][s], "calls": calls[stack],
                                          "per_call": fit["costs"][s] / max(1, calls[stack])}
    rows = [{"plan": str(p), "kept": list(c), "p50": m, "fitted": f, "loo": lo, "n": len(x),
             "cv": summarize(x)["cv"] if len(x) > 1 else 0.0}
            for p, c, m, f, lo, x in zip(plans, counts, p50, fit["fitted"], fit["loo"], samples)]
    fit_summary = {"method": "least squares on interleaved end-to-end p50s",
                   "per_block": dict(zip(bank.stack_names, fit["costs"])),
                   "unidentified": [bank.stack_names[s] for s in fit["unidentified"]],
                   "residual_mape": _mape(fit["fitted"], p50), "loo_mape": _mape(fit["loo"], p50),
                   "loo_max_error": prediction_errors(fit["loo"], p50)["max_error"]}
    with pinned_threads(target.n_threads):
        fp = fingerprint(target.device)
    return LatencyProfile(target=target.to_dict(), fingerprint=fp, bank_checksum=bank.checksum,
                          stacks=list(bank.stack_names), blocks=blocks, overhead=fit["overhead"], fit=fit_summary,
                          plans=rows, created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def _mape(predicted: Sequence[float], measured: Sequence[float]) -> float:
    return sum(abs(p - m) / m for p, m in zip(predicted, measured)) / len(measured)


def _bar(total: int | None, desc: str, enabled: bool, unit: str = "plan"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit)


# -- checking ----------------------------------------------------------------------------------------------------
def ranks(xs: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    from scipy.stats import rankdata

    return [float(r) for r in rankdata(xs)]


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (NaN when a side is constant)."""
    import warnings

    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant side; NaN says it
        return float(spearmanr(a, b).statistic)


def prediction_errors(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """MAPE and max absolute percentage error (as fractions) and Spearman's rank correlation."""
    return {"mape": _mape(predicted, measured), "max_error": max(abs(p - m) / m for p, m in zip(predicted, measured)),
            "spearman": spearman(predicted, measured)}


def check_profile(bank, profile: LatencyProfile, n_plans: int = 30, seed: int = 0, progress: bool = True,
                  allow_foreign: bool = False) -> dict:
    """Measure ``n_plans`` random plans end to end and compare them with :func:`predict`.

    The plans are held out: none of them is one of the profile's calibration plans. They are measured in
    interleaved rounds like the calibration plans, under the profile's protocol.

    Returns ``{"mape", "max_error", "spearman", "plans": [{"plan", "predicted", "measured", "cv", "error",
    "first_half", "second_half"}]}`` (errors as fractions; ``measured`` is the p50 over all rounds, the halves
    are the p50s of the first and second half of the rounds: how far a measurement agrees with itself).
    """
    profile.check_machine(allow_foreign)
    profile.check_bank(bank)
    target = HardwareTarget.from_dict(profile.target, profile.target_name)
    target.check_available()
    if n_plans < 2:
        raise UserError("--plans must be at least 2 (a rank correlation needs two plans)")
    calibration = {r["plan"] for r in profile.plans}
    space = bank.space()
    if space.count() - len(calibration) < n_plans:
        raise UserError(f"--plans {n_plans}: the space has only {space.count() - len(calibration)} plans beyond "
                        "the profile's calibration plans")
    plans: list[AssemblyPlan] = []
    draw = n_plans
    while len(plans) < n_plans:
        draw = min(space.count(), draw + len(calibration))
        plans = [p for p in space.sample(draw, seed=seed) if str(p) not in calibration][:n_plans]
    samples = measure_interleaved(bank, plans, target, seed=seed, progress=progress, desc="checking")
    rows = []
    for plan, xs in zip(plans, samples):
        stats = summarize(xs)
        pred = _predict(profile, plan)
        half = len(xs) // 2
        rows.append({"plan": str(plan), "predicted": pred, "measured": stats["p50"], "cv": stats["cv"],
                     "error": (pred - stats["p50"]) / stats["p50"],
                     "first_half": percentile(xs[:half] or xs, 50), "second_half": percentile(xs[half:], 50)})
    errs = prediction_errors([r["predicted"] for r in rows], [r["measured"] for r in rows])
    return {**errs, "plans": rows, "target": target.name, "seed": seed}


__all__ = ["LatencyProfile", "build_profile", "calibration_plans", "check_profile", "covering_plans", "fit_costs",
           "measure_interleaved", "predict", "prediction_errors", "spearman"]
