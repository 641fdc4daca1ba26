"""ReplaceMe, the training-free baseline of the layer-pruning comparison, held to oracles: a run of layers that
does nothing must be replaced exactly (the map is the identity and the pruned model is the teacher), the closed
form must be least squares' own solution, and the fit can never be worse than dropping the run."""

import pytest
import torch

import tiny
from modsearch import LayerBank, UserError, assemble
from modsearch.search._replaceme import fit_linear_map, replaceme, replaceme_span

TEXTS = ["the a of and to in is that for it with as", "was on be by this are at from or an which his her",
         "the of a and in to is that it for as with was on be"]


def _bank(root, family="llama", silent=()):
    """A 6-layer tiny model whose layers in ``silent`` add nothing to the residual stream (zero output
    projections: each returns its input), and its bank."""
    model = tiny.tiny_model(family, dec=6)
    with torch.no_grad():
        for i in silent:
            model.model.layers[i].self_attn.o_proj.weight.zero_()
            model.model.layers[i].mlp.down_proj.weight.zero_()
    model.save_pretrained(str(root / "model"))
    tiny.tiny_tokenizer(str(root / "model"))
    return LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2])


def test_a_run_of_layers_that_does_nothing_is_replaced_exactly(tmp_path):
    bank = _bank(tmp_path, silent=(3, 4))
    plan, model, info = replaceme(bank, 2, TEXTS)
    assert info["span"] == [3, 4]  # identical input and output: the most similar run
    assert str(plan) == "0,1,2,x3,x4,5"
    teacher = assemble(bank, bank.teacher_plan())
    ids = bank.tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, teacher(input_ids=ids).logits, atol=1e-4, rtol=1e-4)
    assert info["fit_mse"] == pytest.approx(0.0, abs=1e-6) and info["drop_mse"] == pytest.approx(0.0, abs=1e-6)
    assert len(model.model.layers) == 4 and model.config.num_hidden_layers == 4


def test_the_map_is_least_squares_and_never_worse_than_dropping(tmp_path):
    bank = _bank(tmp_path)
    _, model, info = replaceme(bank, 2, TEXTS)
    assert 0 <= info["fit_mse"] <= info["drop_mse"]
    g = torch.Generator().manual_seed(0)
    m, d = torch.randn(200, 8, generator=g, dtype=torch.float64), torch.randn(200, 8, generator=g, dtype=torch.float64)
    torch.testing.assert_close(fit_linear_map(m.T @ m, m.T @ d, ridge=0.0), torch.linalg.lstsq(m, d).solution)
    # The bank itself is untouched: the map lives in the pruned copy only.
    s = info["span"][0]
    assert not torch.equal(model.model.layers[s - 1].mlp.down_proj.weight,
                           assemble(bank, bank.teacher_plan()).model.layers[s - 1].mlp.down_proj.weight)


def test_the_cut_keeps_the_first_layer_and_takes_the_most_similar_run():
    sim = [[1.0] * 6 for _ in range(6)]
    sim[0][2], sim[1][3], sim[2][4], sim[3][5] = 0.99, 0.5, 0.9, 0.7
    assert replaceme_span(sim, 2) == (2, 3)  # starting at 0 is not allowed: layer 0 is not removable
    with pytest.raises(UserError, match="remove 1 to 4"):
        replaceme_span(sim, 5)
    with pytest.raises(UserError):
        replaceme_span(sim, 0)


def test_families_with_a_norm_after_the_mlp_are_refused(tmp_path):
    bank = _bank(tmp_path, family="gemma3_text")
    with pytest.raises(UserError, match="a norm follows its MLP"):
        replaceme(bank, 2, TEXTS)
