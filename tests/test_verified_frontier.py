"""After `modsearch verify`, the frontier a user sees is the verified one, on one millisecond scale.

The studies here are Optuna studies written by hand, shaped like the ones `modsearch search` leaves (the figures
of issue 31: a point printed at 2.48x that measured 1.89x next to a better one at 1.88x), so nothing is timed.
"""

import dataclasses
import math

import optuna
import pytest

from modsearch.results._study import results_of
from modsearch.search import format_frontier, frontier_rows
from modsearch.search._storage import quiet_warnings
from modsearch.search._summary import dropped_rows

TEACHER_MS = 100.0


def _study(points, verified=None, constraints=(), drift=None):
    """A two-objective study: ``points`` are (plan, quality, the trial's paired speed-up); ``verified`` maps a
    plan to its verified speed-up; ``drift`` maps a plan to the teacher timing of the run that measured it,
    as runs wrote latency_ms before it was put on the study's one scale."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="toy")
    with quiet_warnings():  # "experimental" since Optuna 3.2
        study.set_metric_names(["quality", "latency_ms"])
    study.set_user_attr("modsearch", {"objectives": ["quality", "latency_ms"], "constraints": list(constraints),
                                      "bank_checksum": "ab" * 32, "target": {"name": "cpu-1t-b1"}})
    study.set_user_attr("teacher", {"plan": "t", "quality": 40.0, "latency_ms": TEACHER_MS, "latency_low_ms":
                                    TEACHER_MS, "latency_high_ms": TEACHER_MS, "latency_ratio": 1.0, "speedup": 1.0})
    for plan, quality, s in [("t", 40.0, 1.0), *points]:
        ms = (drift or {}).get(plan, TEACHER_MS) / s
        attrs = {"plan": plan, "strategy": "teacher" if plan == "t" else "sampler", "quality": quality,
                 "latency_ratio": 1 / s, "latency_ms": ms, "latency_low_ms": ms * 0.97, "latency_high_ms": ms * 1.03,
                 "speedup": s, "speedup_low": s / 1.03, "speedup_high": s / 0.97,
                 "speedup_basis": "latency_ms (paired)", "feasible": True}
        study.add_trial(optuna.trial.create_trial(values=[quality, ms], user_attrs=attrs))
    if verified:
        plans = {p: {"trial": None, "speedup": s, "low": s * 0.98, "high": s * 1.02, "half_width": 0.02,
                     "latency_ms": 80.0 / s, "on_front": True} for p, s in {"t": 1.0, **verified}.items()}
        study.set_user_attr("verification", {"objective": "latency_ms", "teacher_ms": 80.0, "rounds": 30,
                                             "confidence": 0.95, "teacher_plan": "t", "plans": plans})
    return study


# a: printed at 2.48x, verified 1.80x; b: better quality, verified 1.88x; e: never verified, hidden behind a.
POINTS = [("a", 33.3, 2.48), ("b", 37.4, 1.95), ("e", 31.0, 2.0), ("c", 30.0, 1.7)]
VERIFIED = {"a": 1.80, "b": 1.88}


def test_the_frontier_after_verify_is_the_verified_one():
    res = results_of(_study(POINTS, VERIFIED))
    plans = lambda trials: [t.plan for t in trials]  # noqa: E731
    # By the trials' own figures "a" looked fastest; verified, "b" is both faster and better, so "a" is gone,
    # and "e", which only "a" hid, is on the front with its trial's figures.
    assert plans(res.frontier(verified=False)) == ["a", "b", "t"]
    assert plans(res.frontier()) == ["e", "b", "t"]
    assert plans(res.dropped()) == ["a"]
    a, b, e = (res.trial(n) for n in (1, 2, 3))
    assert a.verified and b.verified and not e.verified
    assert a.trial_metrics["speedup"] == 2.48 and a.get("speedup") == 1.80
    # Verified latencies are on the study's scale: its teacher figure over the verified speed-up (not the
    # 80 ms the verification's own teacher timing read).
    assert b.get("latency_ms") == pytest.approx(TEACHER_MS / 1.88)
    assert b.get("latency_low_ms") < b.get("latency_ms") < b.get("latency_high_ms")
    # The hypervolume is the verified front's: lower than the trials' figures claimed.
    unverified = dataclasses.replace(res, verification=None)
    assert res.hypervolume() < unverified.hypervolume()
    assert res.hypervolume_history()[-1][1] == pytest.approx(res.hypervolume())
    # pick (so `modsearch export --pick`) reads the verified figures: "a" no longer meets 2x.
    assert unverified.pick("speedup >= 2").plan == "a"
    assert res.pick("speedup >= 2").plan == "e"
    assert res.pick(f"latency_ms <= {TEACHER_MS / 1.85}").plan == "b"
    assert unverified.dropped() == []


def test_constraints_are_judged_on_the_verified_figures():
    res = results_of(_study(POINTS, VERIFIED, constraints=["speedup >= 1.85"]))
    a = res.trial(1)
    assert a.trial_feasible and not a.feasible  # 2.48x met it, 1.80x does not
    with pytest.raises(Exception, match="no feasible completed trial"):
        res.pick("quality >= 33 and speedup >= 1.9")


def test_the_printed_frontier_says_which_figures_are_verified():
    study = _study(POINTS, VERIFIED)
    rows = frontier_rows(study)
    assert [r["plan"] for r in rows] == ["e", "b", "t"]
    assert [r["verified"] for r in rows] == [False, True, True]
    assert rows[1]["speedup"] == 1.88 and rows[1]["trial_speedup"] == 1.95
    table = format_frontier(rows, dropped_rows(study))
    lines = table.splitlines()
    assert "figures" in lines[0]
    assert "trial" in lines[1].split()[-1] and "verified (trial 1.95x)" in lines[2]
    assert "1 point(s) dropped off the front when verified" in table
    assert "trial 1 a: trial 2.48x, verified 1.80x" in table
    # A study not verified has no such column and drops nothing.
    plain = _study(POINTS)
    assert "figures" not in format_frontier(frontier_rows(plain)) and dropped_rows(plain) == []


def test_latency_ms_is_on_one_scale_whichever_run_timed_the_trial():
    # "a" and "c" were timed by a run whose teacher read 150 ms: their stored latency_ms is on that run's scale.
    res = results_of(_study(POINTS, drift={"a": 150.0, "c": 150.0}))
    for t in res.trials:
        assert t.get("latency_ms") == pytest.approx(t.get("latency_ratio") * TEACHER_MS)
        assert t.get("latency_low_ms") <= t.get("latency_ms") <= t.get("latency_high_ms")
    # Read on the run's own scale "a" (150 / 2.48 = 60.5 ms) would fail this; on the study's it is 40.3 ms.
    assert res.pick("latency_ms <= 45").plan == "a"
    assert math.isclose(res.teacher["latency_ms"], TEACHER_MS)


def test_the_order_check_of_the_latency_benchmark():
    """benchmarks/latency_truth.py: does independent timing agree with the printed frontier's order?"""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from latency_truth import order_disagreements

    rows = [{"plan": "e", "quality": 31.0, "latency_ms": 50.0}, {"plan": "b", "quality": 37.4, "latency_ms": 53.2},
            {"plan": "t", "quality": 40.0, "latency_ms": 100.0}]
    names, signs = ["quality", "latency_ms"], [-1.0, 1.0]
    # The independent speed-ups' intervals agree within the noise: b at [1.85, 1.95] and e at [1.90, 2.05].
    truth = {"e": (1.90, 2.05), "b": (1.85, 1.95), "t": (1.0, 1.0)}
    assert order_disagreements(rows, names, signs, truth) == []
    # The truth puts b (better quality) faster than e beyond both intervals: e, as printed, is dominated.
    truth["e"] = (1.70, 1.80)
    assert order_disagreements(rows, names, signs, truth) == [("e", "b")]
