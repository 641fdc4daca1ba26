"""Paired latency against injected clocks and synthetic timings: no test here reads the wall clock.

The oracle: a machine whose speed drifts (a slowdown factor that changes over time, as on a busy VM) multiplies
every model's time alike, so the true ratio of two models is the ratio of their work. Interleaved paired
measurement must recover it; timing each model in its own window must not (that is the failure it fixes).
"""

import math
import random

import pytest

from modsearch.cost import Protocol
from modsearch.cost._paired import interleaved_rounds, measure_paired, ratio_interval, speedup_of


class DriftingMachine:
    """A fake clock whose speed drifts: a step of ``work`` seconds takes ``work * slowdown(now)``, with the
    slowdown stepping between 1× and 3× every few seconds (another process coming and going), plus a little
    multiplicative jitter from a seeded generator."""

    def __init__(self, seed=0, jitter=0.02, period=2.0):
        self.now = 0.0
        self.rng = random.Random(seed)
        self.jitter, self.period = jitter, period

    def __call__(self):
        return self.now

    def slowdown(self):
        return 3.0 if int(self.now / self.period) % 2 else 1.0

    def model(self, work):
        def run():
            d = work * self.slowdown() * math.exp(self.rng.gauss(0.0, self.jitter))
            self.now += d
            return d

        return run


P = Protocol(warmup=1, interval=0.03, confidence=0.95, min_rounds=6, max_seconds=60.0)


def test_interleaved_rounds_run_each_step_once_per_round_in_shuffled_order():
    order = []

    def step(name):
        return lambda: (order.append(name), 0.1)[1]

    samples = interleaved_rounds([step("a"), step("b"), step("c")], 2,
                                 lambda s, _e: len(s[0]) < 20, rng=random.Random(1), clock=lambda: 0.0)
    assert [len(s) for s in samples] == [20, 20, 20]
    rounds = [order[i:i + 3] for i in range(0, len(order), 3)]
    assert len(rounds) == 22 and all(sorted(r) == ["a", "b", "c"] for r in rounds)  # 2 warm-up rounds first
    assert len({tuple(r) for r in rounds}) > 1  # the order changes between rounds
    assert all(r[0] == "a" for r in rounds) is False


def test_ratio_interval_is_exact_without_noise_and_covers_the_truth_with_it():
    ref = [2.0, 4.0, 3.0, 2.5, 3.5, 1.0]
    r = ratio_interval(ref, [x / 2 for x in ref])
    assert r["ratio"] == pytest.approx(0.5) and r["low"] == pytest.approx(0.5) and r["half_width"] == pytest.approx(0)
    # Five rounds cannot give a 95 % interval for a median (1/16 + 1/16 > 5 %): it says so by being infinite.
    assert ratio_interval(ref[:5], ref[:5])["half_width"] == math.inf
    # With log-normal noise of 5 % per round, the 95 % interval covers the true ratio at least 95 % of the time
    # (order statistics: 97.9 % at 10 rounds).
    rng = random.Random(0)
    hits = 0
    for _ in range(400):
        ref = [rng.uniform(1, 3) for _ in range(10)]
        other = [0.6 * x * math.exp(rng.gauss(0, 0.05)) for x in ref]
        r = ratio_interval(ref, other)
        hits += r["low"] <= 0.6 <= r["high"]
    assert 0.94 <= hits / 400 <= 0.995
    assert ratio_interval([1.0], [2.0])["half_width"] == math.inf
    with pytest.raises(ValueError):
        ratio_interval([1.0, 2.0], [1.0])


def test_a_stalled_round_does_not_move_the_estimate():
    """A shared machine now and then stalls one model for a whole run (seen here: 0.55 everywhere, then a
    round at 1.04). The median of the ratios stays put; a mean would not."""
    ref = [0.33] * 19 + [0.45]
    plan = [0.18] * 19 + [0.47]
    r = ratio_interval(ref, plan)
    assert r["ratio"] == pytest.approx(0.18 / 0.33) and r["high"] == pytest.approx(0.18 / 0.33)


def test_paired_measurement_recovers_the_ratio_on_a_drifting_machine():
    m = DriftingMachine(seed=3)
    res = measure_paired([m.model(0.20), m.model(0.10)], P, rng=random.Random(0), clock=m)
    r = res["ratios"][1]
    assert res["interval_met"] and r["half_width"] <= 0.03
    assert r["low"] <= 0.5 <= r["high"] and r["ratio"] == pytest.approx(0.5, rel=0.03)
    assert res["ratios"][0] == {"ratio": 1.0, "low": 1.0, "high": 1.0, "rounds": r["rounds"], "half_width": 0.0}
    s = speedup_of(r)
    assert s["speedup"] == pytest.approx(1 / r["ratio"]) and s["low"] <= 2.0 <= s["high"]


def test_timing_each_model_in_its_own_window_is_what_drift_breaks():
    """The same machine, the two models timed one after the other: the ratio is off by the drift (this is
    why trials are paired, not a property of the code under test; it makes the oracle above meaningful)."""
    m = DriftingMachine(seed=3)
    ref, plan = m.model(0.20), m.model(0.10)
    a = [ref() for _ in range(10)]  # 2 s at 1×
    b = [plan() for _ in range(7)]  # lands in the 3× stretch
    assert sum(b) / len(b) / (sum(a) / len(a)) > 1.0  # "slower than the teacher": badly wrong


def test_paired_stops_at_the_cap_when_the_machine_is_too_noisy_and_says_so():
    m = DriftingMachine(seed=1, jitter=0.5)
    res = measure_paired([m.model(0.2), m.model(0.1)], Protocol(warmup=0, interval=0.01, min_rounds=5,
                                                               max_seconds=5.0), clock=m)
    assert not res["interval_met"] and res["ratios"][1]["half_width"] > 0.01
    assert 5.0 <= res["seconds"] <= 5.0 + 2 * 0.3 * 3 * math.exp(2.5)  # stops within a round of the cap


def test_fixed_rounds_override_the_stopping_rule():
    m = DriftingMachine()
    res = measure_paired([m.model(0.1), m.model(0.05), m.model(0.2)], P, rounds=7, clock=m)
    assert res["rounds"] == 7 and [len(s) for s in res["samples"]] == [7, 7, 7]
    assert res["ratios"][2]["ratio"] == pytest.approx(2.0, rel=0.05)
