"""benchmarks/deep_search.py on a tiny Llama bank with small numbers: every strategy runs at the budget for
each seed, the reference front bounds them all, the cache on disk serves a second run without scoring, the
shares it prints are shares, and where the fidelity is exact its screened run is the study itself."""

import json
import os
import sys

import pytest

from test_screen import _study, lm_setup  # noqa: F401  (the fixture: a tiny Llama bank and its dev texts)

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import deep_search  # noqa: E402


def test_deep_search_on_a_tiny_bank(lm_setup, tmp_path, capsys):  # noqa: F811
    cfg = _study(lm_setup, "deep", windows=2, budget="n_plans = 12")
    cache, out = str(tmp_path / "cache.json"), str(tmp_path / "out.json")
    args = [cfg.source, "--windows", "2", "--seeds", "2", "--reference-factor", "2", "--cache", cache,
            "--json", out, "--strategies", "evolve,nsga2,random+seeds,seeds"]
    first = deep_search.main(args)
    text = capsys.readouterr().out
    assert "reference front" in text and "evolve" in text
    assert first["budget"] == 12 and first["reference"]["plans"] > 12
    for label, runs in first["runs"].items():
        assert len(runs) == 2
        for r in runs:
            assert 0 <= r["hv"] <= 1 + 1e-9  # nothing beats the front of every plan seen
            assert r["plans"] <= 12 and (label == "seeds" or r["plans"] == 12)
            for k in ("infeasible", "own_front"):
                assert r[k] != r[k] or 0 <= r[k] <= 1
    assert all(r["own_front"] in (0, 0.0) or r["own_front"] != r["own_front"] for r in first["runs"]["seeds"])
    assert max(r["hv"] for r in first["runs"]["evolve"]) > 0
    with open(out) as f:
        assert json.load(f)["runs"].keys() == first["runs"].keys()
    # Again from the cache: the same figures, nothing scored.
    second = deep_search.main(args)
    assert "0 scored by this run" in capsys.readouterr().out
    assert json.dumps(second["runs"]) == json.dumps(first["runs"])  # (NaN != NaN as floats)



def test_verified_hypervolumes_time_the_fronts_against_the_teacher(lm_setup, tmp_path, capsys):  # noqa: F811
    """--verify-rounds times the reference front's plans and every run's front in paired rounds and gives the
    hypervolumes with the measured latency ratios; the reference is the front of the verified points, so no run
    exceeds it, and a plan of fewer layers measures faster than the teacher. Too few rounds are refused. (The
    tiny bank is untrained, so the quality here is stated: each layer removed costs 10 %.)"""
    cfg = _study(lm_setup, "deepv", windows=2, budget="n_plans = 8", objectives='["quality", "latency_ms"]')
    try:
        deep_search.main([cfg.source, "--verify-rounds", "3"])
        raise AssertionError("3 rounds accepted")
    except SystemExit as exc:
        assert "--verify-rounds" in str(exc)
    cheap = deep_search.CheapStudy(cfg, 2, None)
    plans = ["0,1,2,3,4,5", "0-1,2,3,4,5", "0-1,2-3,4,5", "0-2,3-5", "0,1,2,3,4-5"]
    pool = {}
    for p in plans:
        removed = 6 - len(p.split(","))
        pool[p] = [1 + 0.1 * removed, cheap.screen.costs(cheap.bank.plan(p))[0] / cheap.teacher[1]]
    runs = [{"label": "a", "rows": [{"plan": p, "losses": pool[p], "feasible": True} for p in plans[:3]]},
            {"label": "b", "rows": [{"plan": p, "losses": pool[p], "feasible": True} for p in plans]}]
    v = deep_search.verified_table(cheap, pool, runs, ["a", "b"], rounds=6)
    assert "verifying" in capsys.readouterr().out
    assert {"0,1,2,3,4,5", "0-2,3-5"} <= set(v["plans"]) <= set(plans)  # fronts only (one of two equal points)
    assert v["plans"]["0,1,2,3,4,5"] is None  # the teacher is the yardstick
    timed = {p: r for p, r in v["plans"].items() if r is not None}
    assert all(r["rounds"] == 6 and r["low"] <= r["ratio"] <= r["high"] for r in timed.values())
    assert timed["0-2,3-5"]["ratio"] < 1.0  # 2 layers of 6
    assert v["runs"]["b"] == [pytest.approx(1.0)]  # every plan: it is the reference
    assert 0 < v["runs"]["a"][0] < 1.0


def test_the_screened_replay_is_the_study_itself(lm_setup):  # noqa: F811
    """Where the cheap fidelity is exact (every dev text, uncut: the cheap perplexity is the full score) and the
    costs are known (params), a screened run of deep_search is the study `modsearch search` runs: the same
    plans in the same order, the same ones screened, with the same sampler, seed and scoring threads."""
    from modsearch.search import run_search
    from test_screen import TEXTS

    # One scoring thread on both sides: "auto" reads the machine's load before each score, and perplexities
    # summed over another thread count differ in the last bits, enough to reorder two near-equal plans.
    cfg = _study(lm_setup, "replay", windows=len(TEXTS), budget="n_trials = 24", extra="[cost]\nscoring_threads = 1")
    result = run_search(cfg, progress=False, log=None)
    study = [(t.user_attrs["plan"], bool(t.user_attrs.get("screened")))
             for t in sorted(result.study.trials, key=lambda t: t.number) if t.state.name in ("COMPLETE", "PRUNED")]
    assert any(s for _, s in study) and not all(s for _, s in study), "the case must screen some plans, not all"
    assert result.evaluations["states_layers_skipped"] > 0  # the scores below are the same with states reused
    cheap = deep_search.CheapStudy(cfg, len(TEXTS), None)
    replay = deep_search.run(cheap, "evolve", cfg.seed, 24, cheap.seeds(24), screen=True)
    assert [(r["plan"], r["screened"]) for r in replay["rows"]] == study
