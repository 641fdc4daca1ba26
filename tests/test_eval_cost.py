"""`modsearch eval --target`: quality and hardware cost in one report; impossible targets refused up front."""

import json

from modsearch.cli import main

TARGET = """
device = "cpu"
threads = 1
dtype = "float32"
batch_size = 1
input_length = "dev"
output_length = 4
generation = "greedy"

[protocol]
warmup = 1
min_iterations = 3
min_seconds = 0.05
"""


def write_dev(path):
    rows = [{"source": "the a of and", "target": "le la les"}, {"source": "to in is that for", "target": "de et un"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_eval_reports_quality_and_cost_on_a_target(banks, tmp_path, capsys):
    target = tmp_path / "t.toml"
    target.write_text(TARGET)
    code = main(["eval", banks["m2m_100"].path, "--plan", "0-1,2,3,4-5/0-2,3,4,5", "--data",
                 write_dev(tmp_path / "dev.jsonl"), "--metric", "chrf", "--max-new-tokens", "4", "--target",
                 str(target), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert "chrf" in out["scores"]
    cost = out["cost"]
    assert cost["params"] == out["params"]
    assert cost["flops"]["total"] > 0 and cost["flops"]["attention"] > 0
    assert cost["latency"]["p50"] > 0 and cost["latency"]["n"] >= 3
    assert cost["fingerprint"]["torch"]


def test_eval_refuses_a_target_this_machine_lacks_before_scoring(banks, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():  # pragma: no cover - the test machines have no GPU
        import pytest

        pytest.skip("this machine has CUDA; the refusal is for machines without it")
    code = main(["eval", banks["m2m_100"].path, "--data", write_dev(tmp_path / "dev.jsonl"), "--target",
                 "cuda-bf16-b1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cuda" in err[0].lower()


def test_flops_and_params_need_no_target_device(banks):
    """A CPU-only quality worker of a study whose target is a GPU still counts FLOPs and parameters."""
    import pytest
    import torch

    from modsearch import UserError, cost_report

    if torch.cuda.is_available():  # pragma: no cover - the test machines have no GPU
        pytest.skip("this machine has CUDA")
    bank = banks["m2m_100"]
    report = cost_report(bank, "0-1,2,3,4-5/0-2,3,4,5", "cuda-bf16-b1", latency=False, memory=False)
    assert report["flops"]["total"] > 0 and report["params"] == bank.plan_params(bank.plan("0-1,2,3,4-5/0-2,3,4,5"))
    assert report["memory"]["weights_bytes"] > 0 and "latency" not in report
    with pytest.raises(UserError, match="(?i)cuda"):
        cost_report(bank, "0-1,2,3,4-5/0-2,3,4,5", "cuda-bf16-b1", latency=True, memory=False)
