"""Cost of an assembled model on a hardware target: the target definition and machine fingerprint
(``_target``), the timing protocol, FLOPs and memory (``_measure``), and latency profiles fitted to interleaved
runs (``_profile``).

>>> target = HardwareTarget.resolve("cpu-1t-b1")            # doctest: +SKIP
>>> cost_report(bank, "0-1,2-3,4-5/0-2,3-5", target)        # doctest: +SKIP
"""

from ._measure import (LayerFlops, cost_report, count_flops, format_cost_report, measure_latency, peak_memory,
                       percentile, pinned_threads, prepare, run_protocol, summarize, synthetic_inputs, weight_bytes)
from ._profile import (LatencyProfile, build_profile, calibration_plans, check_profile, covering_plans, fit_costs,
                       predict, prediction_errors, ranks, run_interleaved, spearman)
from ._target import FINGERPRINT_KEYS, HardwareTarget, Protocol, fingerprint, fingerprint_mismatch

__all__ = ["FINGERPRINT_KEYS", "HardwareTarget", "LatencyProfile", "LayerFlops", "Protocol", "build_profile",
           "calibration_plans", "check_profile", "cost_report", "count_flops", "covering_plans", "fingerprint",
           "fingerprint_mismatch", "fit_costs", "format_cost_report", "measure_latency", "peak_memory", "percentile",
           "pinned_threads", "predict", "prediction_errors", "prepare", "ranks", "run_interleaved", "run_protocol",
           "spearman", "summarize", "synthetic_inputs", "weight_bytes"]
