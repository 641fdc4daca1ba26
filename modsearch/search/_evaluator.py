"""Evaluating plans: quality on the dev set and cost on the target, through the cache, with encoder outputs
reused between plans that share an encoder plan."""

from __future__ import annotations

import collections
import hashlib
import json
import time

from .._errors import UserError
from .._io import sha256_file
from .._version import software_versions
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
        self._cost_machine = {k: fp.get(k) for k in FINGERPRINT_KEYS}
        self.fingerprint_id = hashlib.sha256(json.dumps(self._cost_machine, sort_keys=True).encode()).hexdigest()[:16]
        self._base = {"bank": bank.checksum}
        self._quality_base = None

    def _input_lengths(self) -> list[int]:
        tok = self.bank.tokenizer
        prefix = self.task.source_prefix if self.task.source_prefix is not None else self.bank.source_prefix
        return [len(ids) for ids in tok([prefix + s for s in self.devset.sources])["input_ids"]]

    # -- keys ---------------------------------------------------------------------------------------------
    def quality_key(self, plan: AssemblyPlan) -> dict:
        """Everything a score depends on: bank content, plan, dev data, task (with the content of any local
        metric module, not just its path), the bank's source prefix and the software versions."""
        if self._quality_base is None:
            self._quality_base = {"data": self.devset.content_hash, "task": self.task.to_json(),
                                  "metric_code": {m: h for m in self.task.metrics
                                                  if (h := _local_code_hash(m)) is not None},
                                  "source_prefix": self.bank.source_prefix, "software": software_versions()}
        return self._base | self._quality_base | {"plan": str(plan)}

    def cost_key(self, plan: AssemblyPlan, latency: bool) -> dict:
        key = self._base | {"plan": str(plan), "target": self.target.to_dict() if self.target else None,
                            "latency": latency, "software": {k: self._cost_machine.get(k)
                                                             for k in ("torch", "transformers")}
                            | {"modsearch": software_versions()["modsearch"]}}
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
