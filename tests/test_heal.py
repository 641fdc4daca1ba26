"""Healing a chosen assembly, held to oracles: the teacher's plan heals nothing, the export scores in a fresh
process exactly what healing recorded, the unhealed score is the study's own, a resumed run is the run.

One tiny study (a 4+4 M2M100 bank with 2-layer modules, chrF on six sentence pairs, searched once) serves the
study-path tests; the identity test runs on the session's banks of several families.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import tiny
from modsearch import LayerBank, assemble
from modsearch.cli import main
from modsearch.heal import HealConfig, _copy_init, heal, trainable_parameters
from modsearch.quality._score import QualityTask
from modsearch.search import StudyConfig, run_search
from modsearch.train import collate, training_context
from modsearch.train._losses import plan_distillation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = """
bank = "bank"
target = "cpu-1t-b1"
objectives = ["quality", "params"]
[data]
path = "dev.jsonl"
source_field = "en"
target_field = "fr"
[task]
metric = "chrf"
max_new_tokens = 8
batch_size = 4
[sampler]
name = "nsga2"
population_size = 4
[seeds]
strategies = ["teacher", "uniform", "speed-first"]
[budget]
n_trials = 5
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("heal")
    tiny.translation_bank(root, {"train.jsonl": 8})
    (root / "tiny.toml").write_text(STUDY)
    run_search(StudyConfig.load(str(root / "tiny.toml")), progress=False, log=None)
    return root


def _module_trial(root):
    from modsearch.results import open_results

    res = open_results(str(root / "tiny.toml"))
    return next(t for t in res.trials if "-" in t.plan)


def _heal_argv(root, out, *extra, trial=None):
    return ["heal", str(root / "tiny.toml"), "--trial", str(trial if trial is not None else _module_trial(root).number),
            "--data", str(root / "train.jsonl"), "--out", str(out), "--steps", "4", "--eval-every", "2",
            "--lr", "3e-3", "--batch-tokens", "64", *extra]


@pytest.mark.parametrize("family", ["m2m_100", "t5", "gpt2", "llama"])
def test_the_teachers_plan_heals_nothing(banks, family):
    """Through the healing path (assembled copy, every block distilled), the teacher's plan has zero KL and zero
    hidden and attention terms, and its task loss is the teacher's own."""
    bank = banks[family]
    plan = bank.plan(",".join(map(str, range(bank.depths[0]))) + (
        "/" + ",".join(map(str, range(bank.depths[1]))) if len(bank.depths) > 1 else ""))
    model = assemble(bank, plan)
    ex = [([5, 9, 12, 7, 1], [8, 6, 1]), ([11, 4, 1], [7, 13, 9, 10, 1])]
    examples = ex if bank.kind == "seq2seq" else [(s, s) for s, _ in ex]
    inputs, labels = collate(bank, examples, [0, 1])
    cfg = HealConfig(steps=1)
    slots = {s: list(bank.adapter.layers(model, s)) for s in bank.stack_names}
    with torch.no_grad():
        logits = bank.base_model(**inputs, use_cache=False).logits  # plain transformers, its own attention
    teacher = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
    with training_context(bank, model), torch.no_grad():
        parts, per_block = plan_distillation(bank, model, slots, plan, inputs, labels, cfg, every_block=True)
    assert len(per_block) == sum(bank.depths)  # every block is distilled, not only modules
    assert parts["kl"] < 1e-6 and parts["hidden"] < 1e-10 and parts["attn"] < 1e-6, parts
    assert parts["task"] == pytest.approx(teacher, abs=1e-5)


def test_healed_export_reproduces_its_dev_score_in_a_fresh_process(study, tmp_path, capsys):
    out = tmp_path / "healed"
    trial = _module_trial(study)
    assert main(_heal_argv(study, out)) == 0
    spec = json.loads((out / "assembly.json").read_text())
    h = spec["healing"]
    assert spec["plan"] == trial.plan and spec["trial"] == trial.number
    # The unhealed score is the study's own figure for that trial: the same scorer, the same dev set.
    assert h["dev"]["before"] == pytest.approx(trial.metrics["quality"], abs=1e-9)
    assert h["steps"] == 4 and [r["step"] for r in h["history"]] == [0, 2, 4]
    assert h["data"]["sha256"] and h["data"]["rows"] == 48
    assert "## Healing" in (out / "README.md").read_text()
    assert not os.path.exists(str(out) + ".heal")  # the checkpoint goes once the export is written
    code = f"""
import json, sys
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from modsearch.quality._score import QualityTask, score_quality
from modsearch.data import DevSet
spec = json.load(open({str(out)!r} + "/assembly.json"))
task = QualityTask(**spec["healing"]["dev"]["task"])
dev = task.load_devset({str(study / "dev.jsonl")!r})
model = AutoModelForSeq2SeqLM.from_pretrained({str(out)!r})
print(score_quality(model, AutoTokenizer.from_pretrained({str(out)!r}), dev, task).value)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": REPO})
    assert run.returncode == 0, run.stderr
    assert float(run.stdout.strip().splitlines()[-1]) == pytest.approx(h["dev"]["after"], abs=1e-9)


def test_a_step_that_scores_worse_is_never_shipped(study, tmp_path):
    """A learning rate that wrecks the model: the unhealed weights (step 0) are the best and are what is written;
    with a lower-is-better metric (teacher-forced loss) too."""
    bank = LayerBank.load(str(study / "bank"))
    plan = _module_trial(study).plan
    task = QualityTask("translation", metric="loss", source_field="en", target_field="fr")
    dev = task.load_devset(str(study / "dev.jsonl"))
    rec = heal(bank, plan, str(study / "train.jsonl"), dev, task, str(tmp_path / "o"),
               HealConfig(steps=4, eval_every=2, lr=5.0, warmup=1, batch_tokens=64), fields=("en", "fr"),
               progress=False, log=lambda m: None)
    assert rec["best_step"] == 0 and rec["dev"]["after"] == rec["dev"]["before"]
    assert all(r["dev"] > rec["dev"]["before"] for r in rec["history"][1:])  # it did get worse
    written = load_file(str(tmp_path / "o" / "model.safetensors"))
    unhealed = assemble(bank, plan).state_dict()
    assert all(torch.equal(written[k], unhealed[k]) for k in written)
    assert "unhealed weights" in (tmp_path / "o" / "README.md").read_text()


def test_trainable_parts(study):
    bank = LayerBank.load(str(study / "bank"))
    plan = bank.plan("0-1,2,3/0,1,2-3")
    model = assemble(bank, plan)
    emb = {id(p) for p in model.get_input_embeddings().parameters()}
    everything = trainable_parameters(bank, model, plan, "all")
    assert everything and not any(id(p) in emb for _, p in everything)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n, _ in everything}
    modules = {n for n, _ in trainable_parameters(bank, model, plan, "modules")}
    assert modules and all(n.startswith(("model.encoder.layers.0.", "model.decoder.layers.2.")) for n in modules)
    last = {n for n, _ in trainable_parameters(bank, model, plan, "last-1")}
    assert last and all(n.startswith(("model.encoder.layers.2.", "model.decoder.layers.2.")) for n in last)
    with pytest.raises(Exception, match="no such parameters"):
        trainable_parameters(bank, assemble(bank, "0,1,2,3/0,1,2,3"), bank.plan("0,1,2,3/0,1,2,3"), "modules")


def test_copy_initialisation_is_the_untrained_banks(study):
    bank = LayerBank.load(str(study / "bank"))
    plan = bank.plan("0-1,2,3/0,1,2-3")
    model = assemble(bank, plan)
    _copy_init(bank, model, plan)
    for stack, slot, first in (("encoder", 0, 0), ("decoder", 2, 2)):
        got = bank.adapter.layers(model, stack)[slot].state_dict()
        want = bank.original_layer(stack, first).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in got)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(study, tmp_path, monkeypatch, capsys):
    import modsearch.heal as heal_mod

    whole = tmp_path / "whole"
    assert main(_heal_argv(study, whole)) == 0
    calls = {"n": 0}
    real = heal_mod._score

    def dies_at_the_third_scoring(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # after step 2's checkpoint, before step 4's
            raise KeyboardInterrupt
        return real(*a, **k)

    part = tmp_path / "part"
    monkeypatch.setattr(heal_mod, "_score", dies_at_the_third_scoring)
    assert main(_heal_argv(study, part)) == 130
    assert not part.exists() and os.path.exists(str(part) + ".heal/state.json")
    monkeypatch.setattr(heal_mod, "_score", real)
    capsys.readouterr()
    assert main(_heal_argv(study, part, "--lr", "1e-3", "--resume")) == 2  # a changed recipe is refused
    assert "options differ" in capsys.readouterr().err
    assert main(_heal_argv(study, part)) == 2  # a checkpoint is never silently overwritten
    assert main(_heal_argv(study, part, "--resume")) == 0
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    ha = json.loads((whole / "assembly.json").read_text())["healing"]
    hb = json.loads((part / "assembly.json").read_text())["healing"]
    assert [r["dev"] for r in ha["history"]] == pytest.approx([r["dev"] for r in hb["history"]])


BAD = {
    "no such trial": (lambda r, o: _heal_argv(r, o, trial=999), "no completed trial 999"),
    "a plan the bank cannot build": (lambda r, o: ["heal", str(r / "bank"), "--plan", "0-2,3/0,1,2,3", "--data",
                                                   str(r / "train.jsonl"), "--dev", str(r / "dev.jsonl"),
                                                   "--source-field", "en", "--target-field", "fr", "--steps", "2",
                                                   "--out", str(o)], "0-2"),
    "training data without the fields": (lambda r, o: _heal_argv(r, o)[:5] + [str(r / "bad.jsonl")] +
                                         _heal_argv(r, o)[6:], "bad.jsonl"),
    "no budget": (lambda r, o: [a for a in _heal_argv(r, o) if a not in ("--steps", "4")], "budget"),
    "unknown trainable": (lambda r, o: _heal_argv(r, o, "--trainable", "some"), "--trainable"),
    "resume without a checkpoint": (lambda r, o: _heal_argv(r, o, "--resume"), "no healing checkpoint"),
    "no positive loss weight": (lambda r, o: _heal_argv(r, o, "--w-task", "0", "--w-logits", "0", "--w-hidden", "0",
                                                       "--w-attn", "0"), "loss weights"),
    "unknown hidden loss": (lambda r, o: _heal_argv(r, o, "--hidden-loss", "cubic"), "--hidden-loss"),
    "bank without --dev": (lambda r, o: ["heal", str(r / "bank"), "--plan", "0,1,2,3/0,1,2,3", "--data",
                                         str(r / "train.jsonl"), "--steps", "2", "--out", str(o)], "--dev"),
    "windows with a study": (lambda r, o: _heal_argv(r, o, "--context-length", "8"), "its own windows"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_exit_2(study, tmp_path, capsys, name):
    (study / "bad.jsonl").write_text(json.dumps({"english": "x", "french": "y"}) + "\n")
    out = tmp_path / "out"
    make, fragment = BAD[name]
    capsys.readouterr()
    assert main(make(study, out)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modsearch: error: ") and fragment in lines[0], lines
    assert not out.exists() and not os.path.exists(str(out) + ".heal")


def test_an_existing_output_needs_overwrite(study, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep").write_text("mine")
    assert main(_heal_argv(study, out)) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep").read_text() == "mine"


def test_a_decoder_only_bank_heals_against_perplexity(banks, tmp_path):
    """The bank form on a causal LM: text data, a lower-is-better metric, the export reloaded by plain
    transformers scores what healing recorded."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modsearch.quality._score import score_quality

    bank = banks["gpt2"]
    with open(tmp_path / "text.jsonl", "w") as f:
        for s in tiny.SOURCES * 4:
            f.write(json.dumps({"text": s}) + "\n")
    out = tmp_path / "healed"
    assert main(["heal", bank.path, "--plan", "0-1,2,3-4,5", "--data", str(tmp_path / "text.jsonl"), "--dev",
                 str(tmp_path / "text.jsonl"), "--task", "lm", "--metric", "perplexity", "--limit", "6",
                 "--steps", "2", "--eval-every", "1", "--batch-tokens", "64", "--w-task", "0", "--out",
                 str(out)]) == 0
    h = json.loads((out / "assembly.json").read_text())["healing"]
    assert h["config"]["w_task"] == 0 and h["config"]["w_logits"] == 1  # pure distillation, recorded
    assert h["dev"]["metric"] == "perplexity" and [r["step"] for r in h["history"]] == [0, 1, 2]
    task = QualityTask(**h["dev"]["task"])
    model = AutoModelForCausalLM.from_pretrained(str(out))
    got = score_quality(model, AutoTokenizer.from_pretrained(str(out)), task.load_devset(str(tmp_path / "text.jsonl"),
                                                                                       limit=6), task).value
    assert got == pytest.approx(h["dev"]["after"], rel=1e-6)


def _lm_heal(bank, tmp_path, out, *extra, dev="text.jsonl"):
    """``modsearch heal BANK --task lm`` on a few tiny texts (training and dev), two steps."""
    for name, copies in (("text.jsonl", 4), ("other.jsonl", 2)):
        with open(tmp_path / name, "w") as f:
            for s in tiny.SOURCES[:copies + 2]:
                f.write(json.dumps({"text": s}) + "\n")
    return ["heal", bank.path, "--plan", "0-1,2,3-4,5", "--data", str(tmp_path / "text.jsonl"), "--dev",
            str(tmp_path / dev), "--task", "lm", "--steps", "2", "--eval-every", "1", "--batch-tokens", "64",
            "--out", str(out), *extra]


def test_an_lm_heal_scores_dev_in_the_windows_a_study_scores_in(banks, tmp_path):
    """``--context-length``/``--stride`` put the dev curve on the study's scale: the unhealed score is what a study
    with those windows records for the plan, not the unwindowed figure."""
    from modsearch.quality._score import score_plan

    bank = banks["gpt2"]
    out = tmp_path / "healed"
    assert main(_lm_heal(bank, tmp_path, out, "--context-length", "4", "--stride", "2")) == 0
    h = json.loads((out / "assembly.json").read_text())["healing"]
    assert h["dev"]["task"]["context_length"] == 4 and h["dev"]["task"]["stride"] == 2
    windowed = QualityTask("lm", context_length=4, stride=2)
    dev = windowed.load_devset(str(tmp_path / "text.jsonl"))
    study_score = score_plan(bank, "0-1,2,3-4,5", dev, windowed).value
    assert h["dev"]["before"] == pytest.approx(study_score, rel=1e-9)
    assert study_score != pytest.approx(score_plan(bank, "0-1,2,3-4,5", dev, QualityTask("lm")).value, rel=1e-3)


def test_an_lm_heal_whose_windows_overflow_the_positions_is_refused(banks, tmp_path, capsys):
    out = tmp_path / "healed"
    assert main(_lm_heal(banks["gpt2"], tmp_path, out, "--context-length", "100")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "context length 100 is above the model's 64 positions" in lines[0], lines
    assert not out.exists() and not os.path.exists(str(out) + ".heal")


def test_a_resume_against_another_dev_set_task_or_windows_is_refused(banks, tmp_path, monkeypatch, capsys):
    """Best scores compare on one dev set scored one way: the checkpoint records the dev set's content hash, the
    task (with its windows) and the metric, and a resume that differs in any of them is refused."""
    import modsearch.heal as heal_mod

    bank, out = banks["gpt2"], tmp_path / "healed"
    real, calls = heal_mod._score, {"n": 0}

    def dies_at_the_third_scoring(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:  # after step 1's checkpoint, before step 2's
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(heal_mod, "_score", dies_at_the_third_scoring)
    assert main(_lm_heal(bank, tmp_path, out, "--steps", "3")) == 130
    assert os.path.exists(str(out) + ".heal/state.json")
    monkeypatch.setattr(heal_mod, "_score", real)
    for extra, dev, what in (((), "other.jsonl", "dev set"), (("--metric", "token_accuracy"), "text.jsonl", "metric"),
                             (("--context-length", "4"), "text.jsonl", "windows")):
        capsys.readouterr()
        assert main(_lm_heal(bank, tmp_path, out, "--steps", "3", "--resume", *extra, dev=dev)) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "of another" in lines[0] and what in lines[0], lines
    assert main(_lm_heal(bank, tmp_path, out, "--steps", "3", "--resume")) == 0
