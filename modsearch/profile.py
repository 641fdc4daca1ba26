"""Latency profiles: a per-target lookup table that predicts a plan's latency without running it.

A profile is measured once per (bank, target, machine). Every distinct block of the bank (each original layer
and each module) is timed *in its stack context*, inside real end-to-end ``generate()`` runs of plans that
contain it: forward hooks read the clock around each layer call, so an encoder block is timed at the target's
input shape and a decoder block per decode step with the KV cache growing to the target's output length.
What the layers do not account for (embeddings, LM head, the generation loop) is the fixed overhead::

    predict(profile, plan) = overhead + sum of the costs of the plan's kept blocks

Why this works here: a module is an instance of the base layer class with the same shapes, so a block's cost
does not depend on which block sits before it; depth changes the decode loop only through the layers it
runs. Why it can miss: a smaller model keeps more of its weights in cache (its layers get cheaper), and on
several threads the scheduler's behaviour changes with the work per op. ``modsearch profile --check``
measures that error on random plans.

On disk a profile is JSON (written atomically) that records the target, the protocol, the bank checksum and
the machine's fingerprint. Measured objectives refuse a profile made on another machine unless told
otherwise (``allow_foreign=True``).

>>> profile = build_profile(bank, "cpu-1t-b1")                    # doctest: +SKIP
>>> profile.save("profiles/cpu-1t-b1.json")                       # doctest: +SKIP
>>> predict(LatencyProfile.load("profiles/cpu-1t-b1.json"), "0-1,2,3,4,5/0,1,2,3,x4,5")   # doctest: +SKIP
0.0734
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics as _stats
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ._errors import UserError
from ._io import write_json
from ._version import __version__
from .cost import Clock, _runner, measure_latency, pinned_threads, prepare, summarize
from .plan import DROP, MODULE, AssemblyPlan, Block
from .target import HardwareTarget, fingerprint, fingerprint_mismatch

FORMAT = "modsearch-latency-profile"
SCHEMA_VERSION = 1


@dataclass
class LatencyProfile:
    """Measured block costs of one bank on one target and machine.

    ``blocks`` maps ``"stack:block"`` (block in plan notation, e.g. ``"decoder:2-3"``) to
    ``{"seconds": cost per end-to-end run, "per_call": seconds per forward call, "calls": calls per run}``.
    ``overhead`` is the time of a run spent outside the layers, in seconds, plus ``first_slot``: per stack,
    the extra time the layer in slot 0 takes whichever block it is.
    """

    target: dict
    fingerprint: dict
    bank_checksum: str
    stacks: list[str]
    blocks: dict[str, dict]
    overhead: float
    first_slot: dict[str, float] = field(default_factory=dict)
    plans: list[dict] = field(default_factory=list)
    created: str = ""
    modsearch_version: str = __version__

    def to_json(self) -> dict:
        return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "created": self.created,
                "modsearch_version": self.modsearch_version, "target": self.target,
                "protocol": self.target.get("protocol"), "fingerprint": self.fingerprint,
                "bank_checksum": self.bank_checksum, "stacks": self.stacks, "overhead": self.overhead,
                "blocks": self.blocks, "first_slot": self.first_slot,
                "plans": self.plans}

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
        return cls(target=d["target"], fingerprint=d["fingerprint"], bank_checksum=d["bank_checksum"],
                   stacks=list(d["stacks"]), blocks=d["blocks"], overhead=float(d["overhead"]),
                   first_slot=d.get("first_slot", {}), plans=d.get("plans", []), created=d.get("created", ""),
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


# -- building ----------------------------------------------------------------------------------------------------
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
                    blocks.append(Block(p, p, "layer"))
                    p += 1
            stacks.append(tuple(blocks))
        plans.append(bank.plan(AssemblyPlan(tuple(stacks))))
    return plans


class _LayerTimer:
    """Forward hooks that add each layer call's wall time to its slot (per run; reset between runs)."""

    def __init__(self, layers: dict[tuple[str, int], torch.nn.Module], clock: Clock, device: str):
        self.clock, self.device = clock, device
        self.seconds: dict[tuple[str, int], float] = {}
        self.calls: dict[tuple[str, int], int] = {}
        self._t0: dict[tuple[str, int], float] = {}
        self._handles = []
        for key, layer in layers.items():
            self._handles.append(layer.register_forward_pre_hook(lambda _m, _a, key=key: self._start(key)))
            self._handles.append(layer.register_forward_hook(lambda _m, _a, _o, key=key: self._stop(key)))

    def _sync(self):
        # CUDA work is asynchronous: without a sync the clock would time the kernel launches only.
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def _start(self, key):
        self._sync()
        self._t0[key] = self.clock()

    def _stop(self, key):
        self._sync()
        self.seconds[key] = self.seconds.get(key, 0.0) + self.clock() - self._t0[key]
        self.calls[key] = self.calls.get(key, 0) + 1

    def reset(self):
        self.seconds, self.calls = {}, {}

    def remove(self):
        for h in self._handles:
            h.remove()


class _PlanTiming:
    """One plan assembled on the target, with every layer call timed in place; :meth:`step` runs it once."""

    def __init__(self, bank, plan: AssemblyPlan, target: HardwareTarget, clock: Clock, seed: int = 0):
        from .assembly import assemble

        self.plan, self.target, self.clock = plan, target, clock
        model, inputs = prepare(assemble(bank, plan), target, seed)
        self._run = _runner(model, inputs, target)
        self.slots: dict[tuple[str, int], torch.nn.Module] = {}
        self.labels: dict[tuple[str, int], str] = {}
        for stack, blocks in zip(bank.stack_names, plan.stacks):
            kept = [b for b in blocks if b.kind != DROP]
            for slot, layer in enumerate(bank.adapter.layers(model, stack)):
                self.slots[(stack, slot)] = layer
                self.labels[(stack, slot)] = _key(stack, kept[slot])
        self.timer = _LayerTimer(self.slots, clock, target.device)
        self.e2e: list[float] = []
        self.per_slot: dict[tuple[str, int], list[float]] = {k: [] for k in self.slots}

    def step(self) -> float:
        cuda = self.target.device.startswith("cuda")
        self.timer.reset()
        if cuda:
            torch.cuda.synchronize(self.target.device)
        t0 = self.clock()
        self._run()
        if cuda:
            torch.cuda.synchronize(self.target.device)
        dt = self.clock() - t0
        self.e2e.append(dt)
        for k in self.slots:
            self.per_slot[k].append(self.timer.seconds.get(k, 0.0))
        return dt

    def result(self, skip: int) -> dict:
        """``{"e2e": [...], "slots": [{"stack", "slot", "block", "calls", "seconds": [...]}]}``, without the
        first ``skip`` (warm-up) runs."""
        self.timer.remove()
        return {"e2e": self.e2e[skip:],
                "slots": [{"stack": k[0], "slot": k[1], "block": self.labels[k],
                           "calls": self.timer.calls.get(k, 0), "seconds": v[skip:]}
                          for k, v in self.per_slot.items()]}


def run_interleaved(steps: Sequence, protocol, clock: Clock = time.perf_counter, on_round=None) -> int:
    """Run several measurements in rounds (one step of each per round) under one protocol: ``warmup`` rounds,
    then rounds until every step has ``min_iterations`` samples and ``min_seconds`` per step have passed.

    Interleaving spreads slow drifts of the machine (other load, clock frequency) evenly over the plans, so
    they bias no block against another. Returns the number of timed rounds.
    """
    for _ in range(protocol.warmup):
        for s in steps:
            s()
    rounds, start = 0, clock()
    while rounds < protocol.max_iterations and (
            rounds < protocol.min_iterations or clock() - start < protocol.min_seconds * len(steps)):
        for s in steps:
            s()
        rounds += 1
        if on_round:
            on_round(rounds)
    return rounds


def build_profile(bank, target: str | dict | HardwareTarget, progress: bool = True,
                  clock: Clock = time.perf_counter, seed: int = 0) -> LatencyProfile:
    """Measure every distinct block of ``bank`` on ``target`` (see the module docstring) and the overhead."""
    target = HardwareTarget.resolve(target)
    target.fixed_input_length  # noqa: B018  (a "dev" input length must be fixed first)
    target.check_available()
    plans = covering_plans(bank)
    samples: dict[str, list[float]] = {}
    calls: dict[str, int] = {}
    overheads: list[float] = []
    premiums: dict[str, list[float]] = {st: [] for st in bank.stack_names}
    plan_rows = []
    timings = [_PlanTiming(bank, plan, target, clock, seed) for plan in plans]
    p = target.protocol
    bar = _bar(None, f"profiling {target.name} ({len(plans)} plans, interleaved)", progress, unit="round")
    try:
        with pinned_threads(target.n_threads):
            run_interleaved([t.step for t in timings], p, clock, on_round=lambda _r: bar.update(1))
    finally:
        bar.close()
    for t in timings:
        m = t.result(skip=p.warmup)
        # Overhead per iteration: the run's time minus the time its layers took, so both come from the same
        # run and share its noise.
        per_iter = [e - sum(sl["seconds"][i] for sl in m["slots"]) for i, e in enumerate(m["e2e"])]
        overheads.append(_stats.median(per_iter))
        for st in bank.stack_names:
            rows = [sl for sl in m["slots"] if sl["stack"] == st]
            meds = [_stats.median(sl["seconds"]) for sl in rows]
            # The layer in slot 0 of a stack runs slower, whichever block it is (it is the first to touch its
            # stack's state each step, after the embeddings or LM head have evicted it from cache). That
            # premium belongs to the position, not the block: it moves to the overhead, which every plan pays
            # once per stack.
            premium = meds[0] - _stats.median(meds[1:]) if len(meds) > 1 else 0.0
            premiums[st].append(premium)
            for sl, med in zip(rows, meds):
                samples.setdefault(sl["block"], []).append(med - (premium if sl["slot"] == 0 else 0.0))
                calls[sl["block"]] = sl["calls"]
        plan_rows.append({"plan": str(t.plan), "p50": _stats.median(m["e2e"]), "n": len(m["e2e"])})
    first_slot = {st: _stats.median(v) for st, v in premiums.items()}
    blocks = {k: {"seconds": _stats.median(v), "calls": calls.get(k, 0),
                  "per_call": _stats.median(v) / max(1, calls.get(k, 1)), "measured_in": len(v)}
              for k, v in sorted(samples.items(), key=lambda kv: _block_order(kv[0], bank.stack_names))}
    with pinned_threads(target.n_threads):
        fp = fingerprint(target.device)
    return LatencyProfile(target=target.to_dict(), fingerprint=fp, bank_checksum=bank.checksum,
                          stacks=list(bank.stack_names), blocks=blocks,
                          overhead=_stats.median(overheads) + sum(first_slot.values()),
                          first_slot=first_slot, plans=plan_rows,
                          created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))


def _block_order(key: str, stacks: Sequence[str]):
    stack, block = key.split(":")
    start, _, end = block.partition("-")
    return (stacks.index(stack), int(start), int(end or start))


def _bar(total: int | None, desc: str, enabled: bool, unit: str = "plan"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit=unit)


# -- checking ----------------------------------------------------------------------------------------------------
def ranks(xs: Sequence[float]) -> list[float]:
    """Ranks 1..n, ties sharing their average rank."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks; NaN when a side is constant)."""
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va and vb else float("nan")


def prediction_errors(predicted: Sequence[float], measured: Sequence[float]) -> dict:
    """MAPE and max absolute percentage error (as fractions) and Spearman's rank correlation."""
    errs = [abs(p - m) / m for p, m in zip(predicted, measured)]
    return {"mape": sum(errs) / len(errs), "max_error": max(errs), "spearman": spearman(predicted, measured)}


def check_profile(bank, profile: LatencyProfile, n_plans: int = 30, seed: int = 0, progress: bool = True,
                  allow_foreign: bool = False) -> dict:
    """Measure ``n_plans`` random plans end to end and compare them with :func:`predict`.

    Returns ``{"mape", "max_error", "spearman", "plans": [{"plan", "predicted", "measured", "cv", "error"}]}``
    (errors as fractions; ``measured`` is the p50 under the profile's protocol).
    """
    from .assembly import assemble

    profile.check_machine(allow_foreign)
    profile.check_bank(bank)
    target = HardwareTarget.from_dict(profile.target, profile.target_name)
    target.check_available()
    if n_plans < 2:
        raise UserError("--plans must be at least 2 (a rank correlation needs two plans)")
    plans = bank.space().sample(n_plans, seed=seed)
    rows = []
    bar = _bar(len(plans), f"checking {target.name}", progress)
    try:
        for plan in plans:
            bar.set_postfix_str(str(plan))
            model, inputs = prepare(assemble(bank, plan), target, seed)
            lat = measure_latency(model, inputs, target)
            stats = summarize(lat["samples"])
            pred = _predict(profile, plan)
            rows.append({"plan": str(plan), "predicted": pred, "measured": stats["p50"], "cv": stats["cv"],
                         "error": (pred - stats["p50"]) / stats["p50"]})
            bar.update(1)
    finally:
        bar.close()
    errs = prediction_errors([r["predicted"] for r in rows], [r["measured"] for r in rows])
    return {**errs, "plans": rows, "target": target.name, "seed": seed}


__all__ = ["LatencyProfile", "build_profile", "check_profile", "covering_plans", "predict",
           "prediction_errors", "spearman"]
