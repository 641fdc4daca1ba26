"""Scoring assembles plans as views of the bank (``assemble(..., share_weights=True)``): new module objects over
the bank's own tensors. Held to the deep-copy assembly (which export uses and the other assembly tests hold to
transformers' own models): the same logits and generations, no tensor copied, and the bank left exactly as it
was, whatever was assembled from it."""

import pytest
import torch

import tiny
from modsearch import assemble

from test_assemble import CAUSAL_PLANS, SEQ2SEQ_PLANS, generate, logits

CASES = ([(f, p) for f in tiny.SEQ2SEQ for p in SEQ2SEQ_PLANS[1:3]]
         + [(f, p) for f in tiny.CAUSAL for p in CAUSAL_PLANS[1:4]])


def _tensors(module):
    return {id(t) for t in list(module.parameters()) + list(module.buffers())}


def _bank_tensors(bank):
    ids = _tensors(bank.base_model)
    for key in bank.modules:
        ids |= _tensors(bank.module_layer(*key))
    return ids


def _snapshot(bank):
    state = {f"base.{k}": v.clone() for k, v in bank.base_model.state_dict().items()}
    for key in bank.modules:
        state.update({f"{key}.{k}": v.clone() for k, v in bank.module_layer(*key).state_dict().items()})
    return state


@pytest.mark.parametrize("family, plan", CASES)
def test_a_view_computes_what_the_deep_copy_computes(banks, family, plan):
    bank = banks[family]
    view, deep = assemble(bank, plan, share_weights=True), assemble(bank, plan)
    assert torch.equal(logits(view, family), logits(deep, family))
    cached, uncached = generate(view, family, True), generate(view, family, False)
    assert torch.equal(cached.sequences, uncached.sequences)
    assert torch.equal(cached.sequences, generate(deep, family, True).sequences)


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_a_view_copies_no_tensor_and_leaves_the_bank_as_it_was(banks, family):
    bank = banks[family]
    before = _snapshot(bank)
    indices = {key: [m.layer_idx for m in bank.module_layer(*key).modules() if hasattr(m, "layer_idx")]
               for key in bank.modules}
    plans = SEQ2SEQ_PLANS if family in tiny.SEQ2SEQ else CAUSAL_PLANS
    owned = _bank_tensors(bank)
    for plan in plans:
        view = assemble(bank, plan, share_weights=True)
        foreign = [n for n, t in list(view.named_parameters()) + list(view.named_buffers()) if id(t) not in owned]
        # Copy-on-write where a family must change a weight to move a layer (GPT-2's scaled query, only with
        # scale_attn_by_inverse_layer_idx, off in these models), and T5's position-bias table moved to slot 0.
        assert all("relative_attention_bias" in n for n in foreign), foreign
    after = _snapshot(bank)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert indices == {key: [m.layer_idx for m in bank.module_layer(*key).modules() if hasattr(m, "layer_idx")]
                       for key in bank.modules}
    # and the teacher plan still gives the teacher: the base model's own forward, an independent oracle
    assert torch.equal(logits(assemble(bank, bank.teacher_plan(), share_weights=True), family),
                       logits(bank.base_model, family))


def test_gpt2_layers_moved_under_inverse_index_scaling_are_copied_on_write(tmp_path):
    from transformers import AutoConfig

    from modsearch import LayerBank

    path = tiny.save_tiny("gpt2", str(tmp_path / "m"), dec=4)
    cfg = AutoConfig.from_pretrained(path)
    cfg.scale_attn_by_inverse_layer_idx = True
    cfg.save_pretrained(path)
    bank = LayerBank.init(path, str(tmp_path / "bank"), granularities=[2])
    before = _snapshot(bank)
    view, deep = assemble(bank, "x0,1,2-3", share_weights=True), assemble(bank, "x0,1,2-3")
    assert torch.equal(logits(view, "gpt2"), logits(deep, "gpt2"))
    after = _snapshot(bank)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert view.transformer.h[0].attn.c_attn.weight is not bank.original_layer("decoder", 1).attn.c_attn.weight
    assert view.transformer.h[0].mlp.c_fc.weight is bank.original_layer("decoder", 1).mlp.c_fc.weight
