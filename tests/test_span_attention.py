"""A module over a span that holds a full-attention layer attends fully (Gemma-3's global layers).

The oracle is the model's own attention: in a tiny Gemma-3 (six layers, layer 5 global, the others sliding over a
4-token window, shorter than the 12-token test sequence) layer 4 is made an identity (its attention and MLP
outputs zeroed: Gemma's post-norms of zero are zero). Then a module over 4-5 that is a copy of layer 5 does exactly
the span's work, so every path that runs it (assembly, an export reloaded by plain transformers, the training
student, the hidden-state objective) must give the teacher's own results. A module that took the attention of its
span's first layer (sliding) would not: layer 5 sees 12 tokens, a sliding window 4.
"""

from __future__ import annotations

import random

import pytest
import torch

import tiny
from modsearch import LayerBank, assemble
from modsearch.bank._storage import _layer_state
from modsearch.train import Student, TrainConfig, collate, head_input, head_logits, hidden_step, training_context

PLAN = "0,1,2,3,4-5"
_rng = random.Random(0)
SEQUENCES = [[_rng.randrange(4, tiny.VOCAB) for _ in range(12)], [_rng.randrange(4, tiny.VOCAB) for _ in range(9)]]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("span-attention")
    model = tiny.tiny_model("gemma3_text", dec=6)
    assert model.config.layer_types == ["sliding_attention"] * 5 + ["full_attention"]
    assert model.config.sliding_window < len(SEQUENCES[0])
    layers = model.model.layers
    with torch.no_grad():
        layers[4].self_attn.o_proj.weight.zero_()
        layers[4].mlp.down_proj.weight.zero_()
    model.save_pretrained(str(root / "model"))
    tiny.tiny_tokenizer(str(root / "model"))
    bank = LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[], spans=["4-5"])
    bank.save_modules({("decoder", 4, 5): _layer_state(bank.original_layer("decoder", 5), ())})
    return LayerBank.load(str(root / "bank"))


def _inputs(bank):
    inputs, labels = collate(bank, [(s, s) for s in SEQUENCES], [0, 1])
    return inputs, labels


def test_a_module_over_a_global_layer_attends_globally_when_assembled_and_reloaded(bank, tmp_path):
    from transformers import AutoModelForCausalLM

    inputs, _ = _inputs(bank)
    with torch.no_grad():
        teacher = bank.base_model(**inputs, use_cache=False).logits
        model = assemble(bank, PLAN)
        assembled = model(**inputs, use_cache=False).logits
    assert model.config.layer_types == ["sliding_attention"] * 4 + ["full_attention"]  # recorded in the config
    assert model.model.layers[4].self_attn.sliding_window is None
    m = inputs["attention_mask"].bool()
    assert (assembled - teacher)[m].abs().max().item() < 1e-4
    model.save_pretrained(str(tmp_path / "export"))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "export"))
    with torch.no_grad():
        again = reloaded(**inputs, use_cache=False).logits
    assert reloaded.config.layer_types[4] == "full_attention"
    assert (again - teacher)[m].abs().max().item() < 1e-4
    # Cached generation reads the same layer types (a sliding cache layer would forget the early tokens).
    prompt = {k: v[:1] for k, v in inputs.items()}
    with torch.no_grad():
        cached = reloaded.generate(**prompt, max_new_tokens=6, do_sample=False, use_cache=True)
        uncached = bank.base_model.generate(**prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_a_module_over_a_global_layer_attends_globally_in_training(bank):
    inputs, labels = _inputs(bank)
    m = labels.ne(-100)
    student = Student(bank)
    with training_context(bank, student), torch.no_grad():
        teacher = bank.base_model(**inputs, use_cache=False).logits
        student.set_plan(bank.plan(PLAN))
        assert student.shell.config.layer_types[4] == "full_attention"
        s_logits = head_logits(student.shell, head_input(student.shell, inputs))
        parts, _ = hidden_step(bank, inputs, labels, TrainConfig())  # the module called as the span was
    assert (s_logits - teacher)[m].abs().max().item() < 1e-4
    assert parts["hidden"] < 1e-10 and parts["attn"] < 1e-6, parts


def test_a_span_of_sliding_layers_keeps_its_window(bank):
    ad, config = bank.adapter, bank.base_model.config
    assert [ad.attention_source(config, i, j) for i, j in ((0, 1), (3, 5), (5, 5), (4, 5))] == [0, 5, 5, 5]
