"""Training a bank's modules: distillation loss falls, the teacher is untouched, the manifest is updated."""

import json
import os
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


def test_a_span_cap_keeps_longer_modules_out_of_students(banks):
    bank = banks["llama"]
    spans = {j - i + 1 for s in bank.module_spans() for i, j in s}
    assert spans == {2, 3}
    rng = random.Random(0)
    capped = [sample_student(bank, 1.0, rng, max_span=2) for _ in range(50)]
    used = {b.end - b.start + 1 for p in capped for s in p.stacks for b in s if b.kind == "module"}
    assert used == {2}  # p = 1 and a 2-layer module starts everywhere: every student is all 2-layer modules
    uncapped = [sample_student(bank, 1.0, rng, max_span=3) for _ in range(50)]
    assert {b.end - b.start + 1 for p in uncapped for s in p.stacks for b in s if b.kind == "module"} == {2, 3}


def test_a_capped_stage_trains_the_short_modules_and_leaves_the_long_ones_byte_identical(model_dirs, tmp_path):
    from modsearch._errors import UserError

    bank = fresh_bank(model_dirs, "llama", tmp_path)
    data = write_data(tmp_path / "train.jsonl", 64, True)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 4, "student_max_span": 2})
    with pytest.raises(UserError, match="untrained module"):  # a cap would leave the 3-layer modules untrained
        train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    train_bank(bank, data, TrainConfig(**{**CFG.__dict__, "steps": 4}), progress=False, log=lambda *_: None)
    bank = LayerBank.load(bank.path)
    before = {k: {n: t.clone() for n, t in bank.module_layer(*k).state_dict().items()} for k in bank.modules}
    train_bank(bank, data, cfg, continue_training=True, progress=False, log=lambda *_: None)
    after = LayerBank.load(bank.path)
    for k in bank.modules:
        state = after.module_layer(*k).state_dict()
        same = all(torch.equal(state[n], t) for n, t in before[k].items())
        assert same == (k[2] - k[1] + 1 > 2), k
    assert after.manifest["provenance"]["training"]["config"]["student_max_span"] == 2
    for bad in (dict(student_max_span=-1), dict(student_max_span=2, objective="hidden")):
        with pytest.raises(UserError, match="student-max-span"):
            TrainConfig(**bad).validate()


def test_resume_refuses_options_that_change_the_run(model_dirs, tmp_path):
    from modsearch._errors import UserError
    from modsearch.train import _loop

    bank = fresh_bank(model_dirs, "bart", tmp_path)
    data = write_data(tmp_path / "train.jsonl", 64, False)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 16})

    class Killed(Exception):
        pass

    orig = _loop._save_checkpoint

    def save_then_die(*a, **k):
        orig(*a, **k)
        raise Killed

    _loop._save_checkpoint = save_then_die
    try:
        with pytest.raises(Killed):
            train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    finally:
        _loop._save_checkpoint = orig
    # a longer run would stretch the learning-rate schedule under the steps already taken
    with pytest.raises(UserError, match=r"steps 16 -> 32"):
        train_bank(LayerBank.load(bank.path), data, TrainConfig(**{**cfg.__dict__, "steps": 32}), resume=True,
                   progress=False, log=lambda *_: None)
    with pytest.raises(UserError, match="without --continue"):
        train_bank(LayerBank.load(bank.path), data, cfg, resume=True, continue_training=True, progress=False,
                   log=lambda *_: None)
    # runtime options may change
    train_bank(LayerBank.load(bank.path), data, TrainConfig(**{**cfg.__dict__, "threads": 1}), resume=True,
               progress=False, log=lambda *_: None)
    assert LayerBank.load(bank.path).manifest["provenance"]["training"]["steps"] == 16


def test_continue_trains_further_as_a_new_stage(model_dirs, tmp_path):
    from modsearch._errors import UserError

    bank = fresh_bank(model_dirs, "llama", tmp_path)
    data = write_data(tmp_path / "train.jsonl", 64, True)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 8})
    with pytest.raises(UserError, match="untrained"):
        train_bank(bank, data, cfg, continue_training=True, progress=False, log=lambda *_: None)
    train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    trained = LayerBank.load(bank.path)
    first = {e.name: e.sha256 for e in trained.modules.values()}
    with pytest.raises(UserError, match="pass --continue"):
        train_bank(trained, data, cfg, progress=False, log=lambda *_: None)
    logged = []
    train_bank(trained, data, TrainConfig(**{**cfg.__dict__, "steps": 4, "lr": 5e-4}), continue_training=True,
               progress=False, log=logged.append)
    # the same seed, data and batch shape draw the first stage's batches again: said, so a user can change --seed
    assert any("stage 1 trained on the same data with --seed 0" in m for m in logged)
    again = LayerBank.load(bank.path)
    stages = again.manifest["provenance"]["training_stages"]
    assert [s["stage"] for s in stages] == ["train", "continue"]
    assert [s["steps"] for s in stages] == [8, 4] and stages[1]["config"]["lr"] == 5e-4
    assert again.manifest["provenance"]["training"] == stages[-1]
    assert all(first[e.name] != e.sha256 for e in again.modules.values())
    assert again.verify() == []
    # names and hashes only: no machine path in what the bank records
    assert again.manifest["provenance"]["training"]["data"]["train"]["name"] == "train.jsonl"
    assert str(tmp_path) not in json.dumps(again.manifest)
    logged = []
    train_bank(again, data, TrainConfig(**{**cfg.__dict__, "steps": 2, "seed": 1}), continue_training=True,
               progress=False, log=logged.append)
    assert not any("same batches" in m for m in logged)


@pytest.mark.parametrize("stop_at", ["second module file", "manifest"])
def test_a_crash_while_saving_leaves_a_bank_that_loads_and_a_checkpoint_that_resumes(model_dirs, tmp_path,
                                                                                      monkeypatch, stop_at):
    from modsearch.bank import _bank as bank_module

    bank = fresh_bank(model_dirs, "m2m_100", tmp_path)
    data = write_data(tmp_path / "train.jsonl", 64, False)
    cfg = TrainConfig(**{**CFG.__dict__, "steps": 8})
    before = {e.name: e.sha256 for e in bank.modules.values()}

    class Killed(Exception):
        pass

    calls = {"files": 0}
    real_write, real_json = bank_module._write_safetensors, bank_module.write_json

    def write_file(path, tensors):
        calls["files"] += 1
        if stop_at == "second module file" and calls["files"] == 2:
            raise Killed
        real_write(path, tensors)

    def write_manifest(path, obj):
        if stop_at == "manifest":
            raise Killed
        real_json(path, obj)

    monkeypatch.setattr(bank_module, "_write_safetensors", write_file)
    monkeypatch.setattr(bank_module, "write_json", write_manifest)
    with pytest.raises(Killed):
        train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    monkeypatch.undo()
    old = LayerBank.load(bank.path)  # the old state, whole
    assert old.verify() == []
    assert {e.name: e.sha256 for e in old.modules.values()} == before
    train_bank(old, data, cfg, resume=True, progress=False, log=lambda *_: None)
    new = LayerBank.load(bank.path)
    assert new.verify() == [] and all(e.trained for e in new.modules.values())
    files = sorted(os.listdir(os.path.join(bank.path, "modules")))
    assert files == sorted(os.path.basename(e.file) for e in new.modules.values())  # no leftovers


@pytest.mark.parametrize("family", ["m2m_100", "t5", "llama"])
def test_hidden_objective_lowers_every_modules_loss_without_the_head(model_dirs, family, tmp_path, monkeypatch):
    from modsearch.train import Student, encode_examples, evaluate_modules, read_examples

    bank = fresh_bank(model_dirs, family, tmp_path)
    data = write_data(tmp_path / "train.jsonl", 96, family in tiny.CAUSAL)
    cfg = TrainConfig(**{**CFG.__dict__, "objective": "hidden", "w_task": 1.0, "steps": 16})
    fields = ("text",) if family in tiny.CAUSAL else ("source", "target")
    dev = encode_examples(bank, read_examples(data, fields)[-16:], cfg.max_len, "")
    before = evaluate_modules(bank, Student(bank), dev, cfg)
    # Hooks are deep-copied with the module (the student's shell is a copy): count head calls by phase.
    phase, calls = ["train"], []
    bank.base_model.get_output_embeddings().register_forward_hook(lambda *_: calls.append(phase[0]))
    from modsearch.train import _loop

    real = _loop.evaluate_modules
    monkeypatch.setattr(_loop, "evaluate_modules", lambda *a, **k: (phase.__setitem__(0, "eval"), real(*a, **k))[1])
    after = train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    assert "train" not in calls and "eval" in calls  # the training steps never ran the LM head
    for e in bank.modules.values():
        assert after[e.name]["dev_distill"] < before[e.name]["dev_distill"], e.name
    assert LayerBank.load(bank.path).manifest["provenance"]["training"]["config"]["objective"] == "hidden"


def test_hidden_losses_against_numpy_and_their_invariances():
    """Each scaling of the hidden-state MSE equals its definition computed in numpy; ``global`` is blind to a
    dimension's error when another dimension is massive, ``per-dim`` is not (the reason it exists)."""
    import numpy as np

    from modsearch.train._losses import hidden_mse

    g = torch.Generator().manual_seed(0)
    t = torch.randn(50, 16, generator=g, dtype=torch.float64)
    s = t + 0.1 * torch.randn(50, 16, generator=g, dtype=torch.float64)
    tn, sn = t.numpy(), s.numpy()
    want_global = ((sn - tn) ** 2).sum() / (tn ** 2).sum()
    want_dim = (((sn - tn) ** 2).mean(0) / (tn ** 2).mean(0)).mean()
    assert abs(hidden_mse(s, t, "global").item() - want_global) < 1e-6
    assert abs(hidden_mse(s, t, "per-dim").item() - want_dim) < 1e-6
    assert abs(hidden_mse(s, t, "both").item() - (want_global + want_dim)) < 1e-6
    # Scaling one dimension of both states by 1000 (a massive activation): per-dim does not move, global
    # then sees almost nothing but that dimension's error.
    scale = torch.ones(16, dtype=torch.float64)
    scale[3] = 1000.0
    assert abs(hidden_mse(s * scale, t * scale, "per-dim").item() - want_dim) < 1e-6
    only_3 = ((sn[:, 3] - tn[:, 3]) ** 2).sum() / (tn[:, 3] ** 2).sum()
    assert abs(hidden_mse(s * scale, t * scale, "global").item() - only_3) < 1e-3 * only_3
    with pytest.raises(ValueError):
        hidden_mse(s, t, "cubic")


def test_the_gemma_recipe_trains_its_bank_in_stages(tmp_path):
    """The recipe's bank stage on a tiny Gemma-3 base: two hidden-state stages, then one among the others on the
    output; a bank built with fewer stages gets the missing ones on a rerun, each stage recorded in the
    manifest with its own config; a further rerun finds all done and changes nothing."""
    from modsearch.recipes import gemma3_270m

    work, data = tmp_path / "bank.work", tmp_path / "data"
    tiny.save_tiny("gemma3_text", str(work / "base"))
    (work / "data").mkdir(parents=True)
    data.mkdir()
    words = tiny.WORDS
    rows = [{"id": f"d{i}", "text": " ".join(random.Random(i).choice(words) for _ in range(40)) + "."}
            for i in range(12)]
    (work / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    (data / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[8:]))
    out = str(tmp_path / "bank")
    stages = tuple((2, cfg) for _, cfg in gemma3_270m.STAGES)
    gemma3_270m.build_bank(out, str(work), str(data), stages[:1], log=lambda m: None)
    assert len(LayerBank.load(out).manifest["provenance"]["training_stages"]) == 1
    gemma3_270m.build_bank(out, str(work), str(data), stages, log=lambda m: None)
    bank = LayerBank.load(out)
    done = bank.manifest["provenance"]["training_stages"]
    assert [(st["stage"], st["steps"], st["config"]["objective"], st["config"]["seed"]) for st in done] == \
        [("train", 2, "hidden", 0), ("continue", 2, "hidden", 1), ("continue", 2, "logits", 2)]
    assert {st["config"]["hidden_loss"] for st in done} == {"both"}
    assert {st["config"]["autocast"] for st in done} == {"bf16" if gemma3_270m.native_bf16() else "none"}
    # Modules from the first third of the depth on, plus LLM-Streamline's spans.
    first = round(bank.depths[0] / 3)
    spans = {(k[1], k[2]) for k in bank.modules}
    assert {(int(a), int(b)) for a, b in (s.split("-") for s in gemma3_270m.bank_spans(bank.depths[0]))} <= spans
    assert min(i for i, _ in spans - set(map(tuple, bank.manifest["provenance"]["recipe"]["streamline_spans"]))) \
        >= first
    assert all(e.trained for e in bank.modules.values())
    before = {k: e.sha256 for k, e in bank.modules.items()}
    gemma3_270m.build_bank(out, str(work), str(data), stages, log=lambda m: None)
    assert {k: e.sha256 for k, e in LayerBank.load(out).modules.items()} == before
