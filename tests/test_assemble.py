"""Assembled models are plain transformers models that behave exactly as their plans say, for every family."""

import copy
import re

import pytest
import torch

import tiny
from modsearch import assemble

SEQ2SEQ_PLANS = [
    "0,1,2,3,4,5/0,1,2,3,4,5",
    "0-1,2,3,4-5/0-2,3,x4,5",  # modules at both ends of the encoder, a drop in the decoder
    "x0,1-3,4,5/0,1,2,3,4-5",  # a dropped first layer, a module at the decoder's end
    "0-2,3-5/0,1,2,x3,4,5",  # decoder deeper than encoder (T5 generate() pitfall)
    "x0,x1,2,3-5/x0,1-2,x3,4-5",
]
CAUSAL_PLANS = ["0,1,2,3,4,5", "0-1,2,3,4-5", "x0,1-3,x4,5", "0-2,x3,4,5", "x0,x1,x2,x3,x4,5"]
# Independent oracle for test 4: where each family keeps its layers in the state dict.
PREFIX = {"t5": ("encoder.block.", "decoder.block."), "bart": ("model.encoder.layers.", "model.decoder.layers."),
          "marian": ("model.encoder.layers.", "model.decoder.layers."),
          "m2m_100": ("model.encoder.layers.", "model.decoder.layers."),
          "gpt2": ("transformer.h.",), "llama": ("model.layers.",)}
DEPTH_FIELDS = {"t5": ("num_layers", "num_decoder_layers"), "bart": ("encoder_layers", "decoder_layers"),
                "marian": ("encoder_layers", "decoder_layers"), "m2m_100": ("encoder_layers", "decoder_layers"),
                "gpt2": ("n_layer",), "llama": ("num_hidden_layers",)}
CASES = [(f, p) for f in tiny.SEQ2SEQ for p in SEQ2SEQ_PLANS] + [(f, p) for f in tiny.CAUSAL for p in CAUSAL_PLANS]

SRC = torch.tensor([[5, 6, 7, 8, 9, 10, 1], [11, 12, 13, 1, 0, 0, 0]])
TGT = torch.tensor([[1, 20, 21, 22, 23], [1, 24, 25, 26, 27]])


def logits(model, family):
    with torch.no_grad():
        if family in tiny.SEQ2SEQ:
            return model(input_ids=SRC, attention_mask=SRC.ne(0).long(), decoder_input_ids=TGT).logits
        return model(input_ids=SRC, attention_mask=SRC.ne(0).long()).logits


def generate(model, family, use_cache):
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, num_beams=1, use_cache=use_cache,
              output_scores=True, return_dict_in_generate=True)
    src = SRC[:1] if family in tiny.CAUSAL else SRC  # decoder-only: no left padding to worry about
    with torch.no_grad():
        return model.generate(input_ids=src, attention_mask=src.ne(0).long(), **kw)


@pytest.mark.parametrize("family, plan", CASES)
def test_cached_and_uncached_generation_agree(banks, family, plan):
    model = assemble(banks[family], plan)
    cached, uncached = generate(model, family, True), generate(model, family, False)
    assert torch.equal(cached.sequences, uncached.sequences)
    for a, b in zip(cached.scores, uncached.scores):
        finite = torch.isfinite(a) & torch.isfinite(b)
        assert torch.equal(torch.isfinite(a), torch.isfinite(b))
        assert (a[finite] - b[finite]).abs().max().item() < 1e-5


@pytest.mark.parametrize("family, plan", CASES)
def test_save_and_reload_reproduces_logits_exactly(banks, family, plan, tmp_path):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    model = assemble(banks[family], plan)
    model.save_pretrained(tmp_path)
    auto = AutoModelForSeq2SeqLM if family in tiny.SEQ2SEQ else AutoModelForCausalLM
    reloaded, info = auto.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert type(reloaded) is type(model)
    assert torch.equal(logits(model, family), logits(reloaded.eval(), family))
    # and the reloaded model still generates like the assembled one (the T5 deep-decoder case included)
    assert torch.equal(generate(model, family, True).sequences, generate(reloaded, family, True).sequences)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_all_original_layers_reproduce_the_original_model(banks, family):
    bank = banks[family]
    teacher = assemble(bank, bank.teacher_plan())
    assert torch.equal(logits(teacher, family), logits(bank.base_model, family))


def hand_kept(original, family, plan_text):
    """The original model with the layers a plan keeps, built without modsearch: a fresh model of the smaller
    depth whose state dict is copied key by key (a module i..j of a copy-initialised bank is layer i)."""
    stacks = plan_text.split("/")
    kept = [[int(re.match(r"x?(\d+)", b).group(1)) for b in s.split(",") if not b.startswith("x")] for s in stacks]
    config = copy.deepcopy(original.config)
    for field, layers in zip(DEPTH_FIELDS[family], kept):
        setattr(config, field, len(layers))
    fresh = type(original)(config)
    src = original.state_dict()
    new = {}
    for key in fresh.state_dict():
        mapped = key
        for prefix, layers in zip(PREFIX[family], kept):
            m = re.match(re.escape(prefix) + r"(\d+)\.(.*)", key)
            if m:
                candidate = f"{prefix}{layers[int(m.group(1))]}.{m.group(2)}"
                # T5's relative-position table belongs to slot 0; take it from the original block 0.
                mapped = candidate if candidate in src else f"{prefix}0.{m.group(2)}"
        new[key] = src[mapped]
    fresh.load_state_dict(new, strict=True)
    return fresh.eval()


@pytest.mark.parametrize("family, plan", CASES)
def test_init_bank_assembly_equals_hand_kept_layers(banks, family, plan):
    bank = banks[family]
    expected = hand_kept(bank.base_model, family, plan)
    assert torch.equal(logits(assemble(bank, plan), family), logits(expected, family))


def test_layer_indices_are_renumbered(banks):
    model = assemble(banks["bart"], "0-1,2,3,4-5/x0,1,2-4,5")
    for stack in (model.model.encoder.layers, model.model.decoder.layers):
        for slot, layer in enumerate(stack):
            idx = {m.layer_idx for m in layer.modules() if hasattr(m, "layer_idx")}
            assert idx <= {slot}
    assert model.config.encoder_layers == 4 and type(model.config.encoder_layers) is int
    assert model.config.decoder_layers == 3


def test_t5_position_bias_lives_in_slot_zero_only(banks):
    model = assemble(banks["t5"], "x0,1-2,3,4,5/x0,x1,2-3,4,5")
    for stack in (model.encoder.block, model.decoder.block):
        owners = [i for i, b in enumerate(stack) if hasattr(b.layer[0].SelfAttention, "relative_attention_bias")]
        assert owners == [0]
        assert stack[0].layer[0].SelfAttention.has_relative_attention_bias


def test_assembled_layers_are_copies(banks):
    bank = banks["gpt2"]
    model = assemble(bank, "0-1,2,3,4,5")
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight.add_(1.0)
    assert not torch.equal(bank.original_layer("decoder", 2).mlp.c_fc.weight, model.transformer.h[1].mlp.c_fc.weight)
