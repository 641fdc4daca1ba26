"""Training a bank's modules: distillation loss falls, the teacher is untouched, the manifest is updated."""

import json
import random
import shutil

import pytest
import torch

import tiny
from modsearch import LayerBank
from modsearch.train import TrainConfig, sample_student, train_bank


def write_data(path, n, causal, seed=0):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            words = rng.choices(tiny.WORDS[:30], k=rng.randint(3, 9))
            if causal:
                f.write(json.dumps({"text": " ".join(words)}) + "\n")
            else:
                f.write(json.dumps({"source": " ".join(words), "target": " ".join(reversed(words))}) + "\n")
    return str(path)


def fresh_bank(model_dirs, family, tmp_path):
    return LayerBank.init(model_dirs[family], str(tmp_path / "bank"), granularities=[2, 3])


# The tiny teachers are random, so their predictions have nothing to do with the data's targets and the task
# loss would pull modules away from the teacher. Distillation alone is what these tests are about.
CFG = TrainConfig(steps=24, batch_tokens=256, lr=1e-3, warmup=2, eval_every=0, eval_size=16, checkpoint_every=8,
                  w_task=0.0)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_training_lowers_every_modules_distillation_loss(model_dirs, family, tmp_path):
    bank = fresh_bank(model_dirs, family, tmp_path)
    data = write_data(tmp_path / "train.jsonl", 160, family in tiny.CAUSAL)
    teacher_before = {k: v.clone() for k, v in bank.base_model.state_dict().items()}
    files_before = {e.name: e.sha256 for e in bank.modules.values()}
    checksum_before = bank.checksum
    from modsearch.train import Student, encode_examples, evaluate_modules, read_examples

    fields = ("text",) if family in tiny.CAUSAL else ("source", "target")
    dev = encode_examples(bank, read_examples(data, fields)[-16:], CFG.max_len, "")
    before = evaluate_modules(bank, Student(bank), dev, CFG)

    after = train_bank(bank, data, CFG, progress=False, log=lambda *_: None)

    for key in bank.modules:
        name = f"{key[0]}.{key[1]}-{key[2]}"
        assert after[name]["dev_distill"] < before[name]["dev_distill"], name
    # the teacher is untouched
    for k, v in bank.base_model.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    # manifest, files and checksums updated, and the bank still verifies
    reloaded = LayerBank.load(bank.path)
    assert all(e.trained and e.metrics for e in reloaded.modules.values())
    assert all(files_before[e.name] != e.sha256 for e in reloaded.modules.values())
    assert reloaded.checksum != checksum_before
    assert reloaded.verify() == []
    training = reloaded.manifest["provenance"]["training"]
    assert training["steps"] == CFG.steps and training["data"]["train"]["sha256"]
    for e in reloaded.modules.values():
        assert {"dev_loss", "dev_token_acc", "dev_distill", "teacher_dev_loss"} <= set(e.metrics)


def test_resume_continues_where_it_stopped(model_dirs, tmp_path):
    bank = fresh_bank(model_dirs, "bart", tmp_path)
    data = write_data(tmp_path / "train.jsonl", 160, False)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 16})
    # an uninterrupted run on a copy, for reference
    shutil.copytree(bank.path, tmp_path / "ref")
    ref = LayerBank.load(str(tmp_path / "ref"))
    train_bank(ref, data, cfg, progress=False, log=lambda *_: None)
    # the same run, stopped after its first checkpoint (step 8) and resumed
    from modsearch.train import _loop as tr

    # Emulate a kill right after the step-8 checkpoint.
    class Killed(Exception):
        pass

    orig = tr._save_checkpoint

    def save_then_die(*a, **k):
        orig(*a, **k)
        if a[3].step == 8:
            raise Killed

    tr._save_checkpoint = save_then_die
    try:
        with pytest.raises(Killed):
            train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    finally:
        tr._save_checkpoint = orig
    resumed = LayerBank.load(bank.path)
    train_bank(resumed, data, cfg, resume=True, progress=False, log=lambda *_: None)
    final = LayerBank.load(bank.path)
    for key in final.modules:
        a = final.module_layer(*key).state_dict()
        b = LayerBank.load(str(tmp_path / "ref")).module_layer(*key).state_dict()
        for n in a:
            assert torch.allclose(a[n], b[n], atol=1e-6), (key, n)


def test_student_sampling_respects_probability(banks):
    bank = banks["t5"]
    rng = random.Random(0)
    teacher = str(bank.teacher_plan())
    assert all(str(sample_student(bank, 0.0, rng)) == teacher for _ in range(20))
    full = [sample_student(bank, 1.0, rng) for _ in range(50)]
    assert all(all(b.kind == "module" for b in s[:1]) for p in full for s in p.stacks)
    assert len({str(p) for p in full}) > 3  # several granularity mixes
