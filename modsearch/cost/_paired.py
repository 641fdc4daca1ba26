"""Paired latency: plans timed against a reference in interleaved, shuffled rounds, reported as ratios with a
confidence interval.

Why: on a shared or virtual machine the speed of the CPU drifts by tens of percent over minutes (other load,
frequency scaling, noisy neighbours). Timing one plan alone puts whatever drift happens in its window on that
plan. Timing it in rounds with a reference (each round runs every model once, in a random order) puts the same
drift on both, and the per-round ratio ``plan / reference`` cancels it. The estimate is the median of the
per-round ratios and its interval the distribution-free one from their order statistics (paired statistics,
robust to the stalls a shared machine throws in), so it narrows as the rounds agree and widens when the
machine is erratic.

The round engine, :func:`interleaved_rounds`, is the one every interleaved measurement in modsearch runs on (the
latency profile's calibration, paired trial latency, ``modsearch verify``); it takes the steps and a stopping
rule, and an injected clock and random generator, so it is tested without timing anything.

>>> result = measure_paired([teacher_step, plan_step], protocol, reference=0)      # doctest: +SKIP
>>> result["ratios"][1]                                                           # doctest: +SKIP
{'ratio': 0.512, 'low': 0.503, 'high': 0.521, 'rounds': 9, 'half_width': 0.018}
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence

Clock = Callable[[], float]
Step = Callable[[], float]


def interleaved_rounds(steps: Sequence[Step], warmup: int, keep_going: Callable[[list[list[float]], float], bool],
                       *, rng: random.Random | None = None, clock: Clock = time.perf_counter,
                       on_round: Callable[[int], None] | None = None) -> list[list[float]]:
    """Run every step once per round, in a freshly shuffled order each round, after ``warmup`` untimed rounds,
    for as long as ``keep_going(samples, elapsed_seconds)`` says. Returns each step's durations (what each
    step returned), warm-up left out.

    Shuffling matters as well as interleaving: in a fixed order the second model of every round runs with the
    caches the first one left behind, and a periodic disturbance can line up with one position."""
    rng = rng if rng is not None else random.Random(0)
    order = list(range(len(steps)))
    for _ in range(warmup):
        rng.shuffle(order)
        for i in order:
            steps[i]()
    samples: list[list[float]] = [[] for _ in steps]
    start = clock()
    while keep_going(samples, clock() - start):
        rng.shuffle(order)
        for i in order:
            samples[i].append(float(steps[i]()))
        if on_round:
            on_round(len(samples[0]))
    return samples


def ratio_interval(reference: Sequence[float], other: Sequence[float], confidence: float = 0.95) -> dict:
    """The ratio ``other / reference`` of paired samples (same rounds) with a ``confidence`` interval.

    The estimate is the median of the per-round ratios ``other_i / reference_i``, and the interval the
    distribution-free one for a median: the order statistics ``k`` and ``n + 1 - k`` of the ratios, with ``k``
    the largest rank whose binomial tail ``P(Binomial(n, 1/2) < k)`` is at most ``(1 - confidence) / 2`` (its
    coverage is at least ``confidence`` whatever the distribution). Robust by design: on a shared machine a
    round now and then runs one model through a stall (a ratio of 1.0 where the rest read 0.55); a mean
    would move with it, the median does not. ``half_width`` is the interval's larger relative distance from the
    estimate: 0.03 means the ratio is known to ±3 %. Fewer than :func:`rounds_for_interval` rounds (6 at 95 %)
    cannot give the interval: it is then [0, inf]."""
    import numpy as np
    from scipy import stats

    ref, oth = np.asarray(reference, dtype=float), np.asarray(other, dtype=float)
    if len(ref) != len(oth) or not len(ref):
        raise ValueError("paired samples need the same, non-zero number of rounds")
    if (ref <= 0).any() or (oth <= 0).any():
        raise ValueError("durations must be positive")
    ratios = np.sort(oth / ref)
    n = len(ratios)
    ratio = float(np.median(ratios))
    # k: the 1-indexed rank of the lower bound, the largest with P(B <= k - 1) <= alpha / 2.
    k = 0
    while stats.binom.cdf(k, n, 0.5) <= (1 - confidence) / 2:
        k += 1
    if k < 1:
        return {"ratio": ratio, "low": 0.0, "high": math.inf, "rounds": n, "half_width": math.inf}
    low, high = float(ratios[k - 1]), float(ratios[n - k])
    return {"ratio": ratio, "low": low, "high": high, "rounds": n,
            "half_width": max(high / ratio - 1.0, 1.0 - low / ratio)}


def rounds_for_interval(confidence: float = 0.95) -> int:
    """The fewest rounds whose ratios give a finite ``confidence`` interval in :func:`ratio_interval`: the
    smallest ``n`` with ``P(Binomial(n, 1/2) = 0) = 0.5 ** n <= (1 - confidence) / 2``, since below it even
    the extreme order statistics do not cover the median with that confidence and the interval is [0, inf].
    6 at 95 %, 8 at 99 %.

    >>> rounds_for_interval(0.95), rounds_for_interval(0.99)
    (6, 8)
    """
    n = 1
    while 0.5 ** n > (1 - confidence) / 2:
        n += 1
    return n


def measure_paired(steps: Sequence[Step], protocol, *, reference: int = 0, rounds: int | None = None,
                   cap_seconds: float | None = None, rng: random.Random | None = None,
                   clock: Clock = time.perf_counter, on_round: Callable[[int], None] | None = None) -> dict:
    """Time ``steps`` (each runs one model once and returns its duration) in interleaved shuffled rounds and
    give every step's ratio to ``steps[reference]``.

    Stopping, from the target's protocol: at least ``min_rounds`` rounds, then stop as soon as every ratio's
    ``confidence`` interval is within ``± interval`` (relative), or when ``cap_seconds`` (default: the
    protocol's ``max_seconds``) have passed. ``rounds`` fixes the count instead (both rules
    off). Returns ``{"samples", "ratios" (per step; the reference's is exactly 1), "rounds", "seconds",
    "interval_met"}``.
    """
    cap = cap_seconds if cap_seconds is not None else protocol.max_seconds
    others = [i for i in range(len(steps)) if i != reference]

    def widths(samples) -> list[float]:
        return [ratio_interval(samples[reference], samples[i], protocol.confidence)["half_width"] for i in others]

    def keep_going(samples, elapsed) -> bool:
        n = len(samples[0])
        if rounds is not None:
            return n < rounds
        if n < max(2, protocol.min_rounds):
            return True
        if elapsed >= cap:
            return False
        return max(widths(samples), default=0.0) > protocol.interval

    t0 = clock()
    samples = interleaved_rounds(steps, protocol.warmup, keep_going, rng=rng, clock=clock, on_round=on_round)
    ratios = []
    for i in range(len(steps)):
        if i == reference:
            ratios.append({"ratio": 1.0, "low": 1.0, "high": 1.0, "rounds": len(samples[i]), "half_width": 0.0})
        else:
            ratios.append(ratio_interval(samples[reference], samples[i], protocol.confidence))
    met = all(r["half_width"] <= protocol.interval for r in ratios)
    return {"samples": samples, "ratios": ratios, "rounds": len(samples[0]), "seconds": clock() - t0,
            "interval_met": met}


def speedup_of(ratio: dict) -> dict:
    """A ratio record (plan time / reference time) as a speed-up (reference time / plan time) with its
    interval: ``{"speedup", "low", "high", "half_width", "rounds"}``."""
    high = 1.0 / ratio["low"] if ratio["low"] > 0 else math.inf
    return {"speedup": 1.0 / ratio["ratio"], "low": 1.0 / ratio["high"] if ratio["high"] < math.inf else 0.0,
            "high": high, "half_width": ratio.get("half_width"), "rounds": ratio.get("rounds")}
