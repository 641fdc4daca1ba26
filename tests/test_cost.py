"""Cost of a plan: FLOPs with attention counted and split per block, the measurement protocol's logic (with a
fake clock: no test here depends on wall-clock speed), and the report."""

import pytest
import torch

from modsearch import assemble
from modsearch.cost import (
    count_flops, cost_report, format_cost_report, percentile, pinned_threads, run_protocol, summarize,
    synthetic_inputs,
)
from modsearch.cost import HardwareTarget, Protocol

FAST = {"name": "fast", "device": "cpu", "threads": 1, "input_length": 8, "output_length": 4,
        "protocol": {"warmup": 1, "min_iterations": 3, "min_seconds": 0.0}}


class FakeClock:
    """A clock that only moves when a step says it took time."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def step(self, durations):
        it = iter(durations)

        def run():
            d = next(it)
            self.now += d
            return d

        return run


def test_statistics():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s["p50"] == 2.5 and s["p90"] == pytest.approx(3.7) and s["mean"] == 2.5
    assert s["std"] == pytest.approx((5 / 3) ** 0.5) and s["cv"] == pytest.approx((5 / 3) ** 0.5 / 2.5)
    assert (s["min"], s["max"], s["n"]) == (1.0, 4.0, 4)
    assert percentile([5.0], 90) == 5.0 and summarize([2.0])["cv"] == 0.0


def test_protocol_honours_min_iterations_when_runs_are_slow():
    clock = FakeClock()
    samples = run_protocol(clock.step([1.0] * 100), Protocol(warmup=2, min_iterations=5, min_seconds=1.0), clock)
    assert samples == [1.0] * 5  # 1 s passed after the first sample, but 5 iterations are required


def test_protocol_honours_min_seconds_when_runs_are_fast():
    clock = FakeClock()
    p = Protocol(warmup=3, min_iterations=5, min_seconds=2.0)
    samples = run_protocol(clock.step([0.5] * 3 + [0.125] * 1000), p, clock)
    assert samples == [0.125] * 16  # 16 x 0.125 s = 2 s; the 1.5 s of warm-up do not count
    capped = run_protocol(clock.step([0.01] * 1000), Protocol(warmup=0, min_iterations=1, min_seconds=100,
                                                              max_iterations=7), clock)
    assert len(capped) == 7


def test_pinned_threads_restores():
    before = torch.get_num_threads()
    with pinned_threads(2):
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def _flops(bank, plan, eager=False):
    target = HardwareTarget.resolve(FAST)
    model = assemble(bank, plan)
    if eager:
        model.set_attn_implementation("eager")
    return count_flops(bank, bank.plan(plan), model, synthetic_inputs(model, target), target)


def test_attention_flops_are_counted_and_match_eager(banks):
    bank = banks["m2m_100"]
    sdpa = _flops(bank, bank.teacher_plan())
    assert sdpa["attention"] > 0
    assert any("scaled_dot_product" in op for op in sdpa["by_op"])  # the CPU SDPA kernel, counted
    # The same model under eager attention runs plain matmuls that FlopCounterMode always counted. The switch must
    # reach every layer (each reads its stack's config), or both runs would be SDPA and this check could not fail.
    eager = _flops(bank, bank.teacher_plan(), eager=True)
    assert not any("scaled_dot_product" in op for op in eager["by_op"]), eager["by_op"]
    assert eager["total"] == sdpa["total"]


@pytest.mark.parametrize("family", ["m2m_100", "t5", "gpt2"])
def test_flop_breakdown_adds_up_and_compression_costs_less(banks, family):
    bank = banks[family]
    teacher = _flops(bank, bank.teacher_plan())
    small_plan = "0-1,2-3,x4,5/0-2,3,x4,5" if bank.kind == "seq2seq" else "0-1,2-3,x4,5"
    small = _flops(bank, small_plan)
    for f in (teacher, small):
        assert f["total"] == sum(b["flops"] for b in f["blocks"]) + f["other"]
        assert all(b["flops"] > 0 for b in f["blocks"]) and f["other"] > 0
        assert f["per_token"] * 4 == pytest.approx(f["total"] - f["encoder"])
    assert teacher["total"] > small["total"]
    assert [b["block"] for b in small["blocks"] if b["stack"] == bank.stack_names[0]] == ["0-1", "2-3", "5"]
    if bank.kind == "seq2seq":
        enc = sum(b["flops"] for b in teacher["blocks"] if b["stack"] == "encoder")
        assert 0 < enc <= teacher["encoder"]  # the encoder pass = its layers + embeddings and final norm
    else:
        assert teacher["encoder"] == 0


def test_cost_report(banks):
    bank = banks["m2m_100"]
    r = cost_report(bank, "0-1,2,3,4,5/0,1,2,3,x4,5", FAST)
    assert r["params"] == bank.plan_params(bank.plan("0-1,2,3,4,5/0,1,2,3,x4,5"))
    lat = r["latency"]
    assert lat["n"] >= 3 and 0 < lat["p50"] <= lat["p90"] and lat["cv"] >= 0
    assert lat["throughput_tokens_per_s"] == pytest.approx(4 / lat["mean"])
    assert r["memory"]["weights_bytes"] > 0 and "peak_bytes" in r["memory"]
    assert r["fingerprint"]["torch"] == torch.__version__
    text = format_cost_report(r)
    assert "FLOPs" in text and "latency" in text and "decoder  x4" not in text


@pytest.mark.parametrize("family", ["m2m_100", "t5", "gpt2", "llama"])
def test_layer_flops_equal_the_counted_flops_of_every_plan(banks, family):
    from modsearch.cost import LayerFlops

    bank = banks[family]
    lf = LayerFlops(bank, FAST)
    for plan in [bank.teacher_plan()] + bank.space().sample(4, seed=3):
        counted = cost_report(bank, plan, FAST, latency=False, flops=True, memory=False)["flops"]
        predicted = lf(plan)
        assert predicted["total"] == counted["total"], str(plan)
        if bank.kind == "seq2seq":
            assert predicted["encoder"] == counted["encoder"]
            assert predicted["per_token"] == pytest.approx(counted["per_token"])
