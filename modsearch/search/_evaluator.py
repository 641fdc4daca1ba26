"""Evaluating plans: quality on the dev set and cost on the target, through the cache, with encoder outputs
reused between plans that share an encoder plan."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import time

from .._errors import UserError
from .._io import sha256_file
from .._version import code_hash, software_versions
from ..plan._plan import AssemblyPlan
from ._cache import EvaluationCache

__all__ = ["PlanEvaluator", "evaluate_plan"]


def _local_code_hash(metric: str) -> str | None:
    """sha256 over a local metric module's files (a script, or every file of a directory); None for a name."""
    import os

    if os.path.isfile(metric):
        return sha256_file(metric)
    if os.path.isdir(metric):
        h = hashlib.sha256()
        for root, dirs, files in os.walk(metric):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                h.update(f"{os.path.relpath(os.path.join(root, f), metric)}={sha256_file(os.path.join(root, f))}\n"
                         .encode())
        return h.hexdigest()
    return None


def machine_id(fp: dict) -> str:
    """A short id of the fingerprint fields that must agree for latencies to be comparable."""
    from ..cost._target import FINGERPRINT_KEYS

    return hashlib.sha256(json.dumps({k: fp.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True).encode()).hexdigest()[:16]


def dev_input_lengths(bank, devset, task) -> list[int]:
    """Token counts of the dev set's inputs as the model sees them (source prefix included): what a target with
    ``input_length = "dev"`` takes its length from."""
    prefix = task.source_prefix if task.source_prefix is not None else bank.source_prefix
    return [len(ids) for ids in bank.tokenizer([prefix + s for s in devset.sources])["input_ids"]]


class PlanEvaluator:
    """Evaluates plans of one bank on one dev set, task and target, with a cache and encoder reuse.

    ``scoring_threads`` pins the threads quality scoring uses (``"auto"``: the cores other processes leave free,
    checked before each plan; see :class:`~modsearch.cost._target.LoadProbe`). ``measure_latency`` times each new plan against the teacher in interleaved rounds (paired: the ratio is
    robust to the machine's drift; see :meth:`_paired_latency`); FLOPs and parameters are always computed. ``profile`` (a :class:`~modsearch.profile.LatencyProfile`)
    adds a predicted latency. ``counts`` says how much real work was done: ``quality`` and ``cost`` evaluations,
    ``cached`` results served from the cache, and ``encoder_reused`` scorings that skipped the encoder.

    >>> ev = PlanEvaluator(bank, dev, task, "cpu-1t-b1", cache=EvaluationCache(".cache"))   # doctest: +SKIP
    >>> ev.evaluate(bank.teacher_plan())["quality"]                                        # doctest: +SKIP
    39.1
    """

    def __init__(self, bank, devset, task, target=None, *, measure_latency: bool = False, profile=None,
                 cache: EvaluationCache | None = None, encoder_reuse: bool = True, encoder_cache_size: int = 8,
                 scoring_threads: int | str | None = None, prefix_memory_mb: int = 2048):
        from ..cost._target import FINGERPRINT_KEYS, HardwareTarget, fingerprint

        self.bank, self.devset, self.task = bank, devset, task
        self.target = HardwareTarget.resolve(target) if target is not None else None
        if self.target is not None and self.target.input_length == "dev":
            self.target = self.target.with_input_lengths(dev_input_lengths(bank, devset, task))
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
        self._reference = None
        self.scoring_threads = scoring_threads
        self._probe = None
        # Decoder-only, one stack: a plan's teacher-forced quality runs only from its first layer that no plan
        # scored before it shared (the screen's batches are other batches: the same store serves both).
        self.states = None
        if bank.kind != "seq2seq" and len(bank.stack_names) == 1 and prefix_memory_mb > 0:
            from ..quality._prefix import LayerStates

            self.states = LayerStates(prefix_memory_mb << 20)
        fp = fingerprint(self.target.device if self.target else "cpu")
        self.fingerprint = fp
        # What must agree for a cached cost to stand: shapes (FLOPs) need the software; latency needs the machine.
        self._cost_machine = {k: fp.get(k) for k in FINGERPRINT_KEYS}
        self.fingerprint_id = machine_id(fp)
        self._base = {"bank": bank.checksum}
        self._quality_base = None
        self._code: dict[str, str] = {}

    # -- keys ---------------------------------------------------------------------------------------------
    def quality_key(self, plan: AssemblyPlan) -> dict:
        """Everything a score depends on: bank content, plan, dev data, task (with the content of any local
        metric module, not just its path), the bank's source prefix, the software versions and the content of
        modsearch's own scoring code."""
        if self._quality_base is None:
            self._quality_base = {"data": self.devset.content_hash, "task": self.task.to_json(),
                                  "metric_code": {m: h for m in self.task.metrics
                                                  if (h := _local_code_hash(m)) is not None},
                                  "source_prefix": self.bank.source_prefix, "software": software_versions(),
                                  "code": self._code_hash("quality")}
        return self._base | self._quality_base | {"plan": str(plan)}

    def cost_key(self, plan: AssemblyPlan, latency: bool) -> dict:
        key = self._base | {"plan": str(plan), "target": self.target.to_dict() if self.target else None,
                            "latency": latency, "software": {k: self._cost_machine.get(k)
                                                             for k in ("torch", "transformers")}
                            | {"modsearch": software_versions()["modsearch"]}, "code": self._code_hash("cost")}
        if latency:
            key["machine"] = self._cost_machine
        return key

    def _code_hash(self, kind: str) -> str:
        """The content of modsearch's own code that computes ``kind`` (read once per evaluator): the version
        number never changes, the code does."""
        if kind not in self._code:
            self._code[kind] = code_hash(kind)
        return self._code[kind]

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

    def lookup(self, plan: str | AssemblyPlan) -> dict | None:
        """The plan's record when the cache holds all of it (nothing is scored), else None."""
        return None if self.cache is None else self._evaluate(self.bank.plan(plan), time.perf_counter(), True)

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
        if quality is None:
            # A view of the bank's tensors: nothing of the base model is copied per trial.
            quality = self._score(plan, self._assemble(plan, share_weights=True))
            self.counts["quality"] += 1
            if self.cache:
                self.cache.put("quality", self.quality_key(plan), quality)
        if cost is None and self.target is not None:
            # Timing (and FLOPs counting, which casts in place) gets a deep copy, laid out like an export.
            cost = self._cost(plan, self._assemble(plan) if need_latency else None, need_latency)
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
            if "latency_ratio" in cost:
                out.update(self.latency_ms(cost))
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

    def _assemble(self, plan: AssemblyPlan, share_weights: bool = False):
        from ..assembly import assemble

        return assemble(self.bank, plan, share_weights=share_weights)

    def _threads(self) -> int | None:
        """Threads for scoring: a number, None (torch's setting), or "auto" (the cores others leave free)."""
        if self.scoring_threads != "auto":
            return self.scoring_threads
        if self._probe is None:
            from ..cost._target import LoadProbe

            self._probe = LoadProbe()
        return self._probe.free_cpus()

    def _score(self, plan: AssemblyPlan, model) -> dict:
        import contextlib

        from ..cost._measure import pinned_threads

        threads = self._threads()
        if threads is not None:
            self.counts[f"scored_with_{threads}_threads"] += 1
        with pinned_threads(threads) if threads is not None else contextlib.nullcontext():
            return self._score_now(plan, model)

    def _score_now(self, plan: AssemblyPlan, model) -> dict:
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
                                     source_prefix=self.bank.source_prefix, encoder_cache=encoder_cache,
                                     states=self.bind_states(model, plan))
        return {"value": result.value, "scores": result.scores, "primary": result.primary,
                "greater_is_better": result.greater_is_better, "n_examples": result.n_examples,
                "wall_time": result.wall_time, "timings": result.timings | ({"encode": encode_s} if encode_s else {})}

    def bind_states(self, model, plan: AssemblyPlan):
        """The evaluator's :class:`~modsearch.quality._prefix.LayerStates` for ``model`` (assembled from
        ``plan``), or None where there are none (encoder-decoder banks, or turned off)."""
        if self.states is None:
            return None
        from ..quality._prefix import layer_keys

        return self.states.bind(model, self.bank.adapter, self.bank.stack_names[0], layer_keys(plan.stacks[0]))

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
        if not self._layer_flops:
            # Counted per plan (FLOPs only: latency is measured paired, below). cost_report casts the model to
            # the target's dtype and device in place: quality is scored before.
            report = cost_report(self.bank, plan, self.target, model=model, latency=False, flops=True,
                                 memory=False)
            out["flops"] = report["flops"]["total"]
        if latency:
            out.update(self._paired_latency(plan, model))
        out["timings"] = {"cost_s": time.perf_counter() - t}
        return out

    # -- paired latency -----------------------------------------------------------------------------------
    def reference_latency(self) -> dict:
        """The teacher on the target, measured once per evaluator under the target's protocol (the longer,
        calibrated run): ``{"p50", "p90", "n"}`` in seconds. :meth:`latency_ms` multiplies plans' paired ratios by
        this p50 (a study uses its stored teacher figure instead)."""
        if self._reference is None:
            from ..assembly import assemble
            from ..cost._measure import _runner, pinned_threads, prepare, run_protocol, summarize, timed_step

            model, inputs = prepare(assemble(self.bank, self.bank.teacher_plan()), self.target)
            step = timed_step(_runner(model, inputs, self.target), self.target.device)
            with pinned_threads(self.target.n_threads):
                stats = summarize(run_protocol(step, self.target.protocol))
            self._reference = {"p50": stats["p50"], "p90": stats["p90"], "n": stats["n"], "step": step}
        return self._reference

    def _paired_latency(self, plan: AssemblyPlan, model) -> dict:
        """The plan timed against the teacher in interleaved shuffled rounds (see :mod:`modsearch.cost._paired`):
        the ratio plan/teacher with its interval, and the plan's own p90 over those rounds."""
        import random
        import zlib

        from ..cost._measure import _runner, percentile, pinned_threads, prepare, timed_step
        from ..cost._paired import measure_paired

        if str(plan) == str(self.bank.teacher_plan()):
            return {"latency_ratio": 1.0, "latency_ratio_low": 1.0, "latency_ratio_high": 1.0, "latency_rounds": 0,
                    "latency_interval_met": True}
        ref = self.reference_latency()
        model, inputs = prepare(model, self.target)
        step = timed_step(_runner(model, inputs, self.target), self.target.device)
        # One warm-up round: the plan's first generate() pays one-time costs; the teacher is warm already.
        protocol = dataclasses.replace(self.target.protocol, warmup=min(1, self.target.protocol.warmup))
        with pinned_threads(self.target.n_threads):
            res = measure_paired([ref["step"], step], protocol,
                                 rng=random.Random(zlib.crc32(str(plan).encode())))
        r = res["ratios"][1]
        if not res["interval_met"]:
            self.counts["latency_interval_missed"] += 1
        return {"latency_ratio": r["ratio"], "latency_ratio_low": r["low"], "latency_ratio_high": r["high"],
                "latency_rounds": r["rounds"], "latency_interval_met": res["interval_met"],
                "latency_p90_ms": percentile(res["samples"][1], 90) * 1000}

    def latency_ms(self, cost: dict) -> dict:
        """``latency_ms`` (and its interval) of a cost record: its ratio to the teacher times the teacher's p50
        measured by this evaluator. A study does not keep these: it multiplies the ratio by the one teacher
        figure stored on it (:func:`modsearch.search._run.stated_teacher`), since this evaluator's p50 drifts
        from run to run."""
        p50 = self.reference_latency()["p50"] * 1000
        return {"latency_ms": cost["latency_ratio"] * p50, "latency_low_ms": cost["latency_ratio_low"] * p50,
                "latency_high_ms": cost["latency_ratio_high"] * p50}


def evaluate_plan(bank, plan, devset, task, target=None, *, measure_latency: bool = False, profile=None,
                  cache: EvaluationCache | None = None) -> dict:
    """Quality and cost of one plan: ``quality`` (the task's primary score), ``scores`` (every metric),
    ``params``, ``params_ratio``, ``flops`` (one end-to-end generate on the target's shapes), with
    ``measure_latency`` also ``latency_ratio`` (to the teacher, paired, with ``latency_ratio_low/high``),
    ``latency_ms`` (that ratio times the teacher's p50, with ``latency_low_ms/high_ms``), ``latency_p90_ms``,
    and with a profile
    ``profile_latency_ms``; plus ``timings``, ``cached`` and the machine ``fingerprint`` id.

    A pure function of (bank, plan, data, task, target) apart from measured latency, which also depends on the
    machine (its fingerprint is part of the cache key).
    """
    return PlanEvaluator(bank, devset, task, target, measure_latency=measure_latency, profile=profile,
                         cache=cache, encoder_reuse=False).evaluate(plan)
