"""benchmarks/llm_pruning.py end to end on a tiny Llama bank (no finished study): every baseline's plan removes
at least its row's layers, the teacher's test perplexity is the one transformers' own loss gives, the teacher is
its own reference (speed-up exactly 1), every plan heals at one budget, calibration from another text takes the
documents asked for, and bad arguments are one line."""

import json
import math
import os
import random
import re
import subprocess
import sys

import pytest
import torch

import tiny
from modsearch import LayerBank

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "llm_pruning.py")


def _texts(n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(tiny.WORDS) for _ in range(30)) + "." for _ in range(n)]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("llmp")
    tiny.save_tiny("llama", str(root / "model"), dec=6)
    LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2]).set_task(task="lm", text_field="text")
    for name, seed in (("dev.jsonl", 0), ("test.jsonl", 1)):
        (root / name).write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n"
                                         for i, t in enumerate(_texts(4, seed))))
    (root / "s.toml").write_text(f"""name = "tiny-lm"
bank = "bank"
target = "cpu-1t-b1-lm"
objectives = ["quality", "latency_ms"]
[data]
path = "dev.jsonl"
text_field = "text"
[task]
task = "lm"
metric = "perplexity"
context_length = 16
stride = 8
[budget]
n_plans = 4
""")
    return root


def test_the_comparison_end_to_end(study):
    out = study / "r.json"
    (study / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in _texts(12, 2)))
    res = subprocess.run([sys.executable, SCRIPT, str(study / "s.toml"), "--test", str(study / "test.jsonl"),
                          "--fractions", "1/6,1/3,1/2", "--rounds", "6", "--heal-steps", "2", "--heal-data",
                          str(study / "train.jsonl"), "--heal-trainable", "all,modules", "--heal-batch-tokens", "64",
                          "--heal-dir", str(study / "healed"), "--calib-data", str(study / "train.jsonl"),
                          "--calib-documents", "5", "--json", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(out.read_text())
    assert [r["removed"] for r in d["rows"]] == [1, 2, 3]
    bank = LayerBank.load(str(study / "bank"))
    for r in d["rows"]:
        for k in ("block_influence", "sleb", "replaceme", "streamline", "greedy"):
            if k not in r:
                continue
            plan = bank.plan(r[k].split(":", 1)[-1])
            assert 6 - plan.depths[0] >= r["removed"]
            assert r[f"{k}_speedup"]["cpu-1t-b1-lm"]["speedup"] > 0
        assert r["replaceme"].startswith("replaceme:") and 6 - bank.plan(r["replaceme"][10:]).depths[0] == r["removed"]
    # The teacher's test perplexity, from transformers' own loss over the same windows of 16 tokens every 8.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(study / "model"), dtype=torch.float32).eval()
    nll, n = 0.0, 0
    for text in _texts(4, 1):
        ids = bank.tokenizer(text)["input_ids"]
        scored_to = 0
        for start in range(0, max(1, len(ids) - 8), 8):
            window = ids[start:start + 16]
            labels = torch.tensor([window])
            labels[0, : max(1, scored_to - start)] = -100
            with torch.no_grad():
                loss = model(input_ids=torch.tensor([window]), labels=labels).loss
            k = int((labels[0, 1:] != -100).sum())
            nll, n, scored_to = nll + float(loss) * k, n + k, start + len(window)
            if start + 16 >= len(ids):
                break
    assert d["teacher_test_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-4)
    assert "goal" in res.stdout and d["calibration"]["documents"] == 5
    assert d["calibration"]["data"].endswith("train.jsonl")
    _check_healing(study, bank, d)
    # SLEB's and the greedy path's steps were kept as they were taken (a killed calibration goes on from there).
    parts = [json.loads(line) for line in open(str(out) + ".part.jsonl", encoding="utf-8")]
    paths = {r["name"]: r["value"] for r in parts if r["name"].startswith("steps:")}
    assert set(paths) == {"steps:sleb", "steps:greedy"}
    assert paths["steps:sleb"][-1] == [d["rows"][-1]["sleb"], 3]
    # Killed and rerun with the same arguments: the plans and test scores come from the part file.
    again = subprocess.run(res.args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "resuming: " in again.stdout
    assert not re.search(r"^test perplexity\s+\d", again.stdout, re.M)  # nothing scored again
    assert not re.search(r"^healing ", again.stdout, re.M)  # nothing healed again
    assert json.loads(out.read_text())["rows"][0]["sleb"] == d["rows"][0]["sleb"]


def _check_healing(study, bank, d):
    """--heal-steps: each plan of every row heals with the same steps, text and rule; modules-only applies to the
    plans with modules; a heal never ends worse on dev than it starts (step 0 is a candidate); ReplaceMe heals
    from its folded weights (its step-0 dev score is the folded model's, not its bare drop plan's)."""
    from modsearch.quality._score import score_plan, score_quality
    from modsearch.search import StudyConfig
    from modsearch.search._replaceme import replaceme

    assert d["healing"]["steps"] == 2 and d["healing"]["rules"] == ["all", "modules"]
    for row in d["rows"]:
        for k in ("block_influence", "sleb", "replaceme", "streamline", "greedy"):
            if k not in row:
                continue
            plan = bank.plan(row[k].split(":", 1)[-1])
            healed = row[f"{k}_healed"]
            modules = any(b.kind == "module" for b in plan.stacks[0])
            assert set(healed) == ({"all", "modules"} if modules else {"all"})
            for h in healed.values():
                assert h["steps"] == 2 and h["dev_after"] <= h["dev_before"] and h["test_ppl"] > 0
    row = d["rows"][1]
    cfg = StudyConfig.load(str(study / "s.toml"))
    task, dev = cfg.quality_task(), cfg.load_devset()
    # The calibration the run was given: 5 of train.jsonl's 12 documents, evenly spaced (0, 2, 4, 7, 9).
    calibration = [_texts(12, 2)[i] for i in (0, 2, 4, 7, 9)]
    _, folded, _ = replaceme(bank, row["removed"], calibration, max_tokens=2048)
    start = row["replaceme_healed"]["all"]["dev_before"]
    assert start == pytest.approx(score_quality(folded, bank.tokenizer, dev, task).value, rel=1e-5)
    assert start != pytest.approx(score_plan(bank, row["replaceme"][10:], dev, task).value, rel=1e-5)


def test_a_bad_share_is_one_line(study):
    res = subprocess.run([sys.executable, SCRIPT, str(study / "s.toml"), "--fractions", "1/0"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--fractions" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, SCRIPT, str(study / "s.toml"), "--heal-steps", "2"],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--heal-data" in res.stderr and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, SCRIPT, str(study / "s.toml"), "--calib-data", str(study / "none.jsonl")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "none.jsonl" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1

