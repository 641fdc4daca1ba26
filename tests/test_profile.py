"""Latency profiles: one measured table per (bank, target, machine) that predicts a plan's latency as
overhead + sum of its blocks, refuses to be used on another machine or bank, and checks itself."""

import json

import pytest

from modsearch import UserError
from modsearch.cli import main
from modsearch.plan import DROP
from modsearch.cost import (
    LatencyProfile, build_profile, calibration_plans, check_profile, covering_plans, fit_costs,
    predict, prediction_errors, ranks, run_interleaved, spearman,
)
from modsearch.cost import Protocol

FAST = {"name": "fast", "device": "cpu", "threads": 1, "input_length": 8, "output_length": 4,
        "protocol": {"warmup": 1, "min_iterations": 2, "min_seconds": 0.0}}


def layer_call_clock():
    """A clock that advances 1 ms per encoder or decoder layer call: the model really runs, but its timings are
    the same on any machine under any load (a fit to real timings once gave a block zero cost on a slow VM)."""
    import torch

    calls = {"n": 0}

    def count(module, _args, _out):
        if type(module).__name__.endswith(("EncoderLayer", "DecoderLayer")):
            calls["n"] += 1

    return torch.nn.modules.module.register_module_forward_hook(count), lambda: calls["n"] * 1e-3


@pytest.fixture(scope="module")
def profile(banks):
    hook, clock = layer_call_clock()
    try:
        return build_profile(banks["m2m_100"], FAST, progress=False, extra_plans=8, clock=clock)
    finally:
        hook.remove()


def test_a_profile_fitted_to_layer_calls_recovers_them(profile):
    """An oracle for the whole build (plans, interleaving, fit): each encoder block costs one call per run and each
    decoder block one per generated token, so the fit must find costs in about that ratio and no overhead."""
    enc = profile.blocks["encoder:0"]["seconds"]
    dec = profile.blocks["decoder:0"]["seconds"]
    assert enc > 0 and dec > 0 and dec / enc == pytest.approx(FAST["output_length"], rel=0.3)
    assert abs(profile.overhead) < enc


def test_covering_plans_contain_every_block(banks):
    bank = banks["m2m_100"]
    plans = covering_plans(bank)
    assert str(plans[0]) == str(bank.teacher_plan())
    seen = {(s, b.start, b.end) for p in plans for s, blocks in zip(bank.stack_names, p.stacks) for b in blocks}
    assert set(bank.modules) <= seen


def test_calibration_plans_spread_over_kept_counts(banks):
    bank = banks["m2m_100"]
    plans = calibration_plans(bank, extra=12, seed=3)
    covering = covering_plans(bank)
    assert [str(p) for p in plans[:len(covering)]] == [str(p) for p in covering]
    assert len(plans) == len(covering) + 12 and len({str(p) for p in plans}) == len(plans)
    extra = [p.depths for p in plans[len(covering):]]
    # Random plans bunch around the middle depths; these are spread: no count pair twice before all are taken.
    assert len(set(extra)) == len(extra)
    assert min(c[1] for c in extra) <= 2 and max(c[1] for c in extra) >= 5


def test_calibration_plans_of_a_deep_bank_reach_its_extreme_depths(tmp_path):
    """16+16 layers: random plans almost never keep 1 or 16 decoder blocks; the fit needs those ends."""
    import tiny
    from modsearch import LayerBank

    bank = LayerBank.init(tiny.save_tiny("m2m_100", str(tmp_path / "m"), enc=16, dec=16), str(tmp_path / "b"),
                          granularities=[2], starts="aligned")
    plans = calibration_plans(bank, extra=40, seed=0)
    assert len({str(p) for p in plans}) == len(plans) and all(bank.space().contains(p) for p in plans)
    dec = {p.depths[1] for p in plans[len(covering_plans(bank)):]}
    enc = {p.depths[0] for p in plans[len(covering_plans(bank)):]}
    assert {1, 2, 15, 16} <= dec and {1, 2, 15, 16} <= enc, (sorted(enc), sorted(dec))


def test_fit_recovers_costs_and_clamps_negative_ones():
    counts = [(6, 6), (3, 3), (2, 1), (4, 2), (1, 5), (5, 4)]
    exact = [0.010 + 0.001 * e + 0.004 * d for e, d in counts]
    fit = fit_costs(counts, exact)
    assert fit["overhead"] == pytest.approx(0.010) and fit["costs"] == pytest.approx([0.001, 0.004])
    assert fit["loo"] == pytest.approx(exact) and fit["unidentified"] == []
    # A stack that costs nothing but reads slightly negative in noisy data is clamped to 0, the rest refitted.
    noisy = [0.010 - 0.0001 * e + 0.004 * d for e, d in counts]
    fit = fit_costs(counts, noisy)
    assert fit["costs"][0] == 0.0 and fit["costs"][1] > 0
    # A stack whose count never changes cannot be told from the overhead: the overhead carries it.
    fit = fit_costs([(2, d) for _, d in counts], [0.010 + 0.002 + 0.004 * d for _, d in counts])
    assert fit["unidentified"] == [0] and fit["costs"][0] == 0.0
    assert fit["overhead"] == pytest.approx(0.012) and fit["costs"][1] == pytest.approx(0.004)


def test_profile_has_every_block_and_round_trips(profile, banks, tmp_path):
    bank = banks["m2m_100"]
    originals = {f"{s}:{i}" for s, d in zip(bank.stack_names, bank.depths) for i in range(d)}
    modules = {f"{s}:{i}-{j}" for s, i, j in bank.modules}
    assert set(profile.blocks) == originals | modules
    assert all(v["seconds"] >= 0 and v["calls"] >= 1 for v in profile.blocks.values())  # a fit: 0 when noise wins
    assert profile.blocks["decoder:0"]["calls"] == 4 and profile.blocks["encoder:0"]["calls"] == 1
    assert profile.bank_checksum == bank.checksum and profile.target["protocol"]["min_iterations"] == 2
    # Every block of a stack costs the same (same layer class and shapes): one fitted cost per stack.
    for stack in bank.stack_names:
        assert len({v["seconds"] for k, v in profile.blocks.items() if k.startswith(stack)}) == 1
    assert profile.fit["per_block"]["decoder"] == profile.blocks["decoder:0-1"]["seconds"]
    calibration = calibration_plans(bank, 8)
    assert [r["plan"] for r in profile.plans] == [str(p) for p in calibration]
    for r in profile.plans:
        assert r["n"] >= 2 and r["p50"] > 0
        assert r["fitted"] == pytest.approx(predict(profile, r["plan"]))
    assert profile.fit["loo_mape"] >= profile.fit["residual_mape"] * 0.5
    path = profile.save(str(tmp_path / "p.json"))
    again = LatencyProfile.load(path)
    assert again.to_json() == profile.to_json()
    assert json.load(open(path))["fingerprint"]["cpu_model"] == profile.fingerprint["cpu_model"]


def test_predict_is_overhead_plus_blocks(profile, banks):
    plan = banks["m2m_100"].plan("0-1,2,x3,4-5/0,1-3,x4,5")
    kept = [f"{s}:{b}" for s, blocks in zip(profile.stacks, plan.stacks) for b in blocks if b.kind != DROP]
    expected = profile.overhead + sum(profile.blocks[k]["seconds"] for k in kept)
    assert predict(profile, plan) == pytest.approx(expected)
    assert predict(profile, str(plan)) == pytest.approx(expected)
    assert predict(profile, "0,1,2,3,4,5/x0,x1,x2,x3,x4,5") < predict(profile, "0,1,2,3,4,5/0,1,2,3,4,5")


def test_foreign_profile_is_refused_unless_allowed(profile):
    foreign = LatencyProfile(**{**profile.__dict__, "fingerprint": profile.fingerprint | {"cpu_model": "Elsewhere"}})
    with pytest.raises(UserError, match="another machine .*cpu_model"):
        predict(foreign, "0,1,2,3,4,5/0,1,2,3,4,5")
    assert predict(foreign, "0,1,2,3,4,5/0,1,2,3,4,5", allow_foreign=True) > 0


def test_profile_of_another_bank_is_refused(profile, banks):
    with pytest.raises(UserError, match="another bank"):
        check_profile(banks["bart"], profile, n_plans=2, progress=False)
    with pytest.raises(UserError, match="has 1 stack"):
        predict(profile, "0,1,2,3,4,5")


def test_check_profile_reports_errors_on_held_out_plans(profile, banks):
    res = check_profile(banks["m2m_100"], profile, n_plans=3, seed=1, progress=False)
    assert len(res["plans"]) == 3 and res["mape"] >= 0 and res["max_error"] >= res["mape"]
    assert not {r["plan"] for r in res["plans"]} & {r["plan"] for r in profile.plans}
    for r in res["plans"]:
        assert r["error"] == pytest.approx((r["predicted"] - r["measured"]) / r["measured"])


def test_error_statistics():
    assert ranks([10, 30, 20, 20]) == [1, 4, 2.5, 2.5]
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    e = prediction_errors([1.1, 1.8], [1.0, 2.0])
    assert e["mape"] == pytest.approx(0.1) and e["max_error"] == pytest.approx(0.1)


def test_interleaved_rounds_with_a_fake_clock():
    now = {"t": 0.0}
    order = []

    def step(name, d):
        def run():
            order.append(name)
            now["t"] += d
        return run

    rounds = run_interleaved([step("a", 0.25), step("b", 0.25)], Protocol(warmup=1, min_iterations=2, min_seconds=1.0),
                             clock=lambda: now["t"])
    # 1 s per plan = 2 s in all at 0.5 s per round: 4 rounds (more than min_iterations), after 1 warm-up round;
    # each round runs both, in a shuffled order.
    assert rounds == 4 and len(order) == 10 and all(sorted(order[i:i + 2]) == ["a", "b"] for i in range(0, 10, 2))


def test_plans_too_big_to_hold_together_are_measured_in_groups(banks, monkeypatch):
    from modsearch.cost import _profile as prof
    from modsearch.cost import HardwareTarget

    bank = banks["m2m_100"]
    plans = calibration_plans(bank, 3)
    target = HardwareTarget.resolve(FAST)
    one = bank.plan_params(plans[0]) * 4
    monkeypatch.setattr(prof, "_memory_budget", lambda device: int(one * 1.5))
    groups = prof._groups(bank, plans, target)
    assert [str(p) for g in groups for p in g] == [str(p) for p in plans]
    assert all(sum(bank.plan_params(p) * 4 for p in g) <= one * 1.5 or len(g) == 1 for g in groups)
    assert len(groups) >= len(plans) // 2
    built = []

    def counting_assemble(b, plan):
        from modsearch import assemble
        built.append(str(plan))
        return assemble(b, plan)

    samples = prof.measure_interleaved(bank, plans, target, progress=False, assemble_fn=counting_assemble)
    assert built == [str(p) for p in plans] and all(len(s) >= 2 for s in samples)


def _run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_profile_and_check(banks, tmp_path, capsys):
    bank = banks["m2m_100"].path
    target = tmp_path / "fast.toml"
    target.write_text('device = "cpu"\nthreads = 1\ninput_length = 8\noutput_length = 4\n'
                      '[protocol]\nwarmup = 0\nmin_iterations = 2\nmin_seconds = 0.0\n')
    out_file = tmp_path / "profiles" / "fast.json"
    code, out, _ = _run_cli(["profile", bank, "--target", str(target), "--out", str(out_file), "--quiet"], capsys)
    assert code == 0 and out_file.exists() and "profile written" in out
    code, out, _ = _run_cli(["profile", "--check", bank, "--profile", str(out_file), "--plans", "2", "--quiet"],
                            capsys)
    assert code == 0 and "MAPE=" in out.splitlines()[-1]


@pytest.mark.parametrize("argv, message", [
    (["profile", "BANK", "--target", "cuda-bf16-b1", "--out", "OUT"], "CUDA is not available"),
    (["profile", "BANK", "--target", "no-such-target", "--out", "OUT"], "unknown target"),
    (["profile", "BANK", "--out", "OUT"], "needs --target"),
    (["profile", "--check", "BANK", "--profile", "MISSING"], "not found"),
    (["profile", "--check", "BANK", "--profile", "BROKEN"], "not valid JSON"),
])
def test_cli_bad_target_or_profile_is_one_line_exit_2(banks, tmp_path, capsys, argv, message):
    import torch

    if "cuda-bf16-b1" in argv and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    subst = {"BANK": banks["m2m_100"].path, "OUT": str(tmp_path / "out.json"), "MISSING": str(tmp_path / "no.json"),
             "BROKEN": str(broken)}
    code, out, err = _run_cli([subst.get(a, a) for a in argv], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()
