"""The training path held to the teacher on every registered family: identity, causality, padding.

A loss that falls proves nothing: the student of the first trainer attended to future tokens and padding and
its losses fell all the same. So the training path (the student shell, its masks, the taps, the chunked head)
is held to independent oracles: the deployed teacher's own logits, a changed future token, the same examples
one by one, and the plain unchunked losses.
"""

import json
import random

import pytest
import torch
import torch.nn.functional as F

import tiny
from modsearch import LayerBank, assemble
from modsearch.bank.arch import supported_model_types
from modsearch.train import (Student, TrainConfig, capture, collate, distillation_step, encode_examples, head_input,
                             head_logits, hidden_step, sample_student, training_context)

# Token ids, not text: some families' tokenizer classes re-tokenise the tiny vocabulary differently.
_rng = random.Random(0)
SENTENCES = [[_rng.randrange(4, tiny.VOCAB) for _ in range(n)] + [1] for n in (8, 3, 10, 5)]


@pytest.fixture(scope="module")
def bank_of(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    cache = {}

    def get(family):
        if family not in cache:
            model_dir = tiny.save_tiny(family, str(root / f"model-{family}"))
            cache[family] = LayerBank.init(model_dir, str(root / f"bank-{family}"), granularities=[2, 3])
        return cache[family]

    return get


def batch(bank, sentences=SENTENCES):
    examples = [(s, s[-2::-1] + [1]) if bank.kind == "seq2seq" else (s, s) for s in sentences]
    return collate(bank, examples, list(range(len(examples))))


def module_plan(bank):
    """A student with a module at every place one starts (p = 1): every stack runs modules."""
    return sample_student(bank, 1.0, random.Random(0))


def test_every_registered_family_is_tested():
    assert sorted(supported_model_types()) == sorted(tiny.ALL_FAMILIES)


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_teacher_plan_through_the_training_path_is_the_teacher(bank_of, family):
    bank = bank_of(family)
    inputs, labels = batch(bank)
    deployed = bank.base_model(**inputs, use_cache=False).logits  # plain transformers, default attention
    student = Student(bank)
    plan = bank.teacher_plan()
    m = labels.ne(-100)
    ad = bank.adapter
    with training_context(bank, student), torch.no_grad():
        slots = student.set_plan(plan)
        with capture([x for s in bank.stack_names for x in slots[s]]) as (s_hidden, _, _):
            s_logits = head_logits(student.shell, head_input(student.shell, inputs))
        with capture([x for s in bank.stack_names for x in ad.layers(bank.base_model, s)]) as (t_hidden, _, _):
            bank.base_model(**inputs, use_cache=False)
        parts, per_module = distillation_step(bank, student, plan, inputs, labels, TrainConfig())
        # Every layer called as the hidden objective calls a module gives the teacher's own state and attention.
        as_modules = {(s, i, i): ad.layers(bank.base_model, s)[i] for s in bank.stack_names
                      for i in range(len(ad.layers(bank.base_model, s)))}
        hidden_parts, hidden_per_module = hidden_step(bank, inputs, labels, TrainConfig(), modules=as_modules)
        both, _ = hidden_step(bank, inputs, labels, TrainConfig(hidden_loss="both"), modules=as_modules)
    assert (s_logits - deployed)[m].abs().max().item() < 1e-4
    for s, t in zip(s_hidden, t_hidden):
        assert torch.equal(s, t)
    assert per_module == {}
    assert abs(parts["kl"]) < 1e-6 and parts["hidden"] == 0 and parts["attn"] == 0
    ce = F.cross_entropy(deployed[m], labels[m]).item()
    assert abs(parts["task"] - ce) < 1e-4
    assert len(hidden_per_module) == sum(bank.depths)
    assert hidden_parts["hidden"] < 1e-10 and hidden_parts["attn"] < 1e-6
    assert both["hidden"] < 1e-10


def _logits(bank, student, plan, inputs):
    with training_context(bank, student), torch.no_grad():
        student.set_plan(plan)
        return head_logits(student.shell, head_input(student.shell, inputs))


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_training_student_never_sees_later_tokens(bank_of, family):
    bank = bank_of(family)
    inputs, _ = batch(bank, SENTENCES[:1])
    key = "decoder_input_ids" if bank.kind == "seq2seq" else "input_ids"
    changed = {k: v.clone() for k, v in inputs.items()}
    cut = 4
    changed[key][:, cut:] = (changed[key][:, cut:] + 7) % tiny.VOCAB
    student = Student(bank)
    plan = module_plan(bank)
    before, after = _logits(bank, student, plan, inputs), _logits(bank, student, plan, changed)
    assert torch.allclose(before[:, :cut], after[:, :cut], atol=1e-5)
    assert not torch.allclose(before[:, cut:], after[:, cut:], atol=1e-3)  # the change did reach later tokens


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_padding_never_changes_a_real_tokens_loss(bank_of, family):
    bank = bank_of(family)
    student = Student(bank)
    plan = module_plan(bank)

    def per_example(inputs, labels):
        with training_context(bank, student), torch.no_grad():
            t = head_logits(bank.base_model, head_input(bank.base_model, inputs))
        s = _logits(bank, student, plan, inputs)
        out = []
        for r in range(labels.shape[0]):
            m = labels[r].ne(-100)
            kl = F.kl_div(F.log_softmax(s[r][m], -1), F.log_softmax(t[r][m], -1), log_target=True,
                          reduction="batchmean")
            out.append((F.cross_entropy(s[r][m], labels[r][m]).item(), kl.item()))
        return out

    together = per_example(*batch(bank))
    alone = [per_example(*batch(bank, [s]))[0] for s in SENTENCES]
    assert batch(bank)[1].eq(-100).any()  # the batch really is padded
    for (ce_b, kl_b), (ce_a, kl_a) in zip(together, alone):
        assert abs(ce_b - ce_a) < 1e-4 and abs(kl_b - kl_a) < 1e-4


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_healing_losses_are_the_deployed_models_own(bank_of, family):
    """Healing trains a whole assembly (`modsearch heal`): its task CE and logit KL, computed in the training
    context on a padded batch, equal the ones computed from plain transformers forwards (default attention,
    outside any context) of the teacher and of a freshly assembled copy. A leak of later tokens or padding into
    either model would change them; on Gemma-3-270M pure distillation took a plan below its teacher's dev
    perplexity, which this rules out as an artefact of the healing path."""
    from modsearch.heal import _plan_slots
    from modsearch.train._losses import plan_distillation

    bank = bank_of(family)
    plan = module_plan(bank)
    inputs, labels = batch(bank)
    assert labels.eq(-100).any()  # padded
    m = labels.ne(-100)
    with torch.no_grad():
        t = bank.base_model(**inputs, use_cache=False).logits[m]
        s = assemble(bank, plan)(**inputs, use_cache=False).logits[m]
    want_kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), log_target=True, reduction="batchmean").item()
    want_ce = F.cross_entropy(s, labels[m]).item()
    model = assemble(bank, plan)
    with training_context(bank, model), torch.no_grad():
        parts, _ = plan_distillation(bank, model, _plan_slots(bank, model, plan), plan, inputs, labels,
                                     TrainConfig(w_attn=0.0), every_block=True)
    assert want_kl > 1e-5  # the plan really differs from the teacher
    assert parts["kl"] == pytest.approx(want_kl, rel=1e-4, abs=1e-6)
    assert parts["task"] == pytest.approx(want_ce, rel=1e-4)


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_assembled_layers_read_the_models_config(bank_of, family):
    bank = bank_of(family)
    model = assemble(bank, module_plan(bank))
    model.set_attn_implementation("eager")
    ad = bank.adapter
    for stack in bank.stack_names:
        owner = ad.stack_owner(model, stack)
        for layer in ad.layers(model, stack):
            configs = [m.config for m in layer.modules() if getattr(m, "config", None) is not None]
            assert configs and all(c is owner.config for c in configs)
            assert all(c._attn_implementation == "eager" for c in configs)


@pytest.mark.parametrize("family", ["bart", "gemma3_text", "t5"])
def test_chunked_head_losses_and_gradients_equal_the_plain_ones(bank_of, family):
    """Oracle: the plain loss on the model's full logits, back-propagated in one piece."""
    bank = bank_of(family)
    inputs, labels = batch(bank)
    student = Student(bank)
    plan = module_plan(bank)
    cfg = TrainConfig(chunk_tokens=3, w_hidden=0.0, w_attn=0.0)
    params = [p for k in bank.modules for p in bank.module_layer(*k).parameters()]
    with training_context(bank, student):
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        parts, _ = distillation_step(bank, student, plan, inputs, labels, cfg, backward=True)
        chunked = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        for p in params:
            p.grad = None
        m = labels.ne(-100)
        with torch.no_grad():
            t = bank.base_model(**inputs, use_cache=False).logits
        student.set_plan(plan)
        s = student.shell(**inputs, use_cache=False).logits
        task = F.cross_entropy(s[m], labels[m])
        kl = F.kl_div(F.log_softmax(s[m], -1), F.log_softmax(t[m], -1), log_target=True, reduction="batchmean")
        (task + kl).backward()
        plain = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    assert abs(parts["task"] - task.item()) < 1e-4 and abs(parts["kl"] - kl.item()) < 1e-4
    assert any(g.abs().sum() > 0 for g in plain)
    for a, b in zip(chunked, plain):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["bart", "gemma3_text"])
def test_a_hidden_only_heal_skips_the_head_and_gets_the_same_gradients(bank_of, family, monkeypatch):
    """With the task and logit weights zero, healing's loss never runs the LM head (most of a step on a large
    vocabulary), and its loss and gradients are those of the head-running path with a vanishing logit weight."""
    from modsearch.heal import _plan_slots
    from modsearch.train import _losses
    from modsearch.train._losses import plan_distillation

    bank = bank_of(family)
    plan = module_plan(bank)
    inputs, labels = batch(bank)
    model = assemble(bank, plan)
    params = [p for p in model.parameters() if p.is_floating_point()]

    def grads(cfg):
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        with training_context(bank, model):
            parts, _ = plan_distillation(bank, model, _plan_slots(bank, model, plan), plan, inputs, labels, cfg,
                                         backward=True, every_block=True)
        return parts, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    near, want = grads(TrainConfig(w_task=0.0, w_logits=1e-12, w_attn=0.0, hidden_loss="both"))
    calls = []
    monkeypatch.setattr(_losses, "head_logits", lambda *a: calls.append(a))
    parts, got = grads(TrainConfig(w_task=0.0, w_logits=0.0, w_attn=0.0, hidden_loss="both"))
    assert not calls
    assert parts["hidden"] == pytest.approx(near["hidden"], rel=1e-6) and parts["hidden"] > 0
    assert any(g.abs().sum() > 0 for g in got)
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["bart", "gemma3_text"])
def test_bf16_healing_losses_and_gradients_track_the_fp32_ones(bank_of, family):
    """``autocast bf16`` runs the forwards and the chunked LM head (its weight cast once) in bf16: the losses
    and the gradients stay within bf16 rounding of the fp32 ones (oracle: the same step in fp32)."""
    from modsearch.heal import _plan_slots
    from modsearch.train._losses import plan_distillation

    bank = bank_of(family)
    plan = module_plan(bank)
    inputs, labels = batch(bank)
    model = assemble(bank, plan)
    params = [p for n, p in model.named_parameters() if "embed" not in n and "shared" not in n]

    def step(autocast):
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        with training_context(bank, model):
            parts, _ = plan_distillation(bank, model, _plan_slots(bank, model, plan), plan, inputs, labels,
                                         TrainConfig(w_attn=0.0, chunk_tokens=3, autocast=autocast),
                                         backward=True, every_block=True)
        return parts, torch.cat([p.grad.flatten() for p in params if p.grad is not None])

    exact, g32 = step("none")
    low, g16 = step("bf16")
    assert exact["kl"] > 1e-5 and low["kl"] == pytest.approx(exact["kl"], rel=0.1, abs=1e-3)
    assert low["task"] == pytest.approx(exact["task"], rel=0.02)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.99
    assert g16.norm() == pytest.approx(g32.norm().item(), rel=0.05)


def test_gpt2_inverse_layer_scaling_is_exact_after_moving_a_layer(tmp_path):
    """GPT-2 scales attention by 1/(layer_idx+1): a layer moved to another slot must compute what it computed
    at its own index, in the assembled model and after a plain reload."""
    import transformers as tf

    model = tiny.tiny_model("gpt2")
    model.config.scale_attn_by_inverse_layer_idx = True
    model = tf.GPT2LMHeadModel(model.config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0) if p.dim() > 1 else None  # sharp attention, so a wrong scale shows
    model.save_pretrained(tmp_path / "m")
    tiny.tiny_tokenizer(str(tmp_path / "m"))
    bank = LayerBank.init(str(tmp_path / "m"), str(tmp_path / "b"), granularities=[2])
    plan = bank.plan("x0,x1,2-3,4,5")  # a module from index 2 to slot 0, layer 4 to slot 1, layer 5 to slot 2
    inputs, _ = batch(bank)
    student = Student(bank)
    reference = _logits(bank, student, plan, inputs)  # the training path keeps each layer's own index
    assembled = assemble(bank, plan)
    with torch.no_grad():
        got = assembled(**inputs, use_cache=False).logits
    assembled.save_pretrained(tmp_path / "export")
    reloaded = tf.GPT2LMHeadModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        again = reloaded(**inputs, use_cache=False).logits
    m = inputs["attention_mask"].bool()
    assert (got - reference)[m].abs().max() < 1e-4
    assert (again - reference)[m].abs().max() < 1e-4
    # and the fold is needed: without it, slot 0 would scale the module's scores by 1 instead of 1/3
    assert assembled.transformer.h[0].attn.scaling != student.bank.module_layer("decoder", 2, 3).attn.scaling


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def _teacher_data(bank, path, n=96):
    """Examples sampled from the teacher itself. A tiny random teacher disagrees with any made-up targets, and
    the task loss would then pull modules away from it; on its own samples, task and distillation agree (in
    expectation the task cross-entropy is the logit KL plus a constant), as they do for a trained teacher."""
    torch.manual_seed(0)
    rng = random.Random(0)
    tok, model = bank.tokenizer, bank.base_model
    rows = []
    for _ in range(n):
        words = " ".join(rng.choices(tiny.WORDS[:30], k=rng.randint(3, 9)))
        prompt = tok(words, return_tensors="pt")["input_ids"]
        if bank.kind == "causal":
            prompt = prompt[:, :2]
        out = model.generate(prompt, do_sample=True, top_k=0, max_new_tokens=8, min_new_tokens=2,
                             suppress_tokens=[0, 2, 3], pad_token_id=0)
        if bank.kind == "seq2seq":
            rows.append({"source": words, "target": tok.decode(out[0], skip_special_tokens=True)})
        else:
            rows.append({"text": tok.decode(out[0], skip_special_tokens=True)})
    return _write(path, rows)


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_a_few_steps_with_default_weights_lower_every_modules_distillation_loss(family, tmp_path):
    from modsearch.train import evaluate_modules, read_examples, train_bank

    model_dir = tiny.save_tiny(family, str(tmp_path / "model"), full_vocab=True)
    bank = LayerBank.init(model_dir, str(tmp_path / "bank"), granularities=[2, 3])
    data = _teacher_data(bank, tmp_path / "train.jsonl")
    cfg = TrainConfig(steps=16, batch_tokens=256, lr=3e-4, warmup=2, eval_every=0, eval_size=16,
                      checkpoint_every=100)
    fields = ("text",) if bank.kind == "causal" else ("source", "target")
    dev = encode_examples(bank, read_examples(data, fields)[-16:], cfg.max_len, "")
    before = evaluate_modules(bank, Student(bank), dev, cfg)
    after = train_bank(bank, data, cfg, progress=False, log=lambda *_: None)
    for e in bank.modules.values():
        assert after[e.name]["dev_distill"] < before[e.name]["dev_distill"], e.name


def test_head_chunks_are_sized_by_the_vocabulary():
    from torch import nn

    from modsearch.quality._head import CHUNK_ELEMENTS, chunk_tokens_for

    class Model(nn.Module):
        def __init__(self, vocab):
            super().__init__()
            self.head = nn.Linear(4, vocab, bias=False)

        def get_output_embeddings(self):
            return self.head

    assert chunk_tokens_for(Model(262144)) == 128  # Gemma-3: 128 MB of fp32 logits per chunk
    assert chunk_tokens_for(Model(8000)) * 8000 <= CHUNK_ELEMENTS
    assert chunk_tokens_for(Model(262144), 512) == 512  # an explicit size wins
