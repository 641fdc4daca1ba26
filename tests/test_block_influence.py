"""ShortGPT's Block Influence as a seed strategy, held to an independent oracle: the hidden states the plain
transformers forward returns (``output_hidden_states``: entry i is what layer i receives, entry i + 1 what it
returns, for every layer but the last, whose output the model normalises before returning it)."""

import pytest
import torch

import tiny
from modsearch import LayerBank, UserError
from modsearch.search._seeds import BI_FRACTIONS, block_influence, seed_plans

TEXTS = ["the a of and to in is that", "for it with as was on be by this are at from", "or an which his her"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("bi")
    tiny.save_tiny("llama", str(root / "model"), dec=6)
    return LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2])


def test_block_influence_equals_one_minus_cosine_of_the_hidden_states(bank):
    bi = block_influence(bank, TEXTS)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(bank.base_dir, dtype=torch.float32).eval()
    sums, n = [0.0] * 6, 0
    for text in TEXTS:
        ids = bank.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        for i in range(5):  # the last layer's output comes back normalised: not comparable
            sums[i] += float(torch.nn.functional.cosine_similarity(hs[i][0].double(), hs[i + 1][0].double(),
                                                                   dim=-1).sum())
        n += ids.shape[1]
    for i in range(5):
        assert bi[i] == pytest.approx(1 - sums[i] / n, abs=1e-6)
    assert 0.0 <= bi[5] <= 2.0


def test_block_influence_seeds_drop_the_least_influential_layers(bank):
    space = bank.space()
    bi = block_influence(bank, TEXTS)
    seeds = seed_plans(bank, space, ["block-influence"], calibration=TEXTS)
    assert seeds and all(s == "block-influence" for _, s in seeds) and len(seeds) <= len(BI_FRACTIONS)
    ranked = sorted(range(6), key=lambda i: (bi[i], i))
    for plan, _ in seeds:
        dropped = {b.start for b in plan.stacks[0] if b.kind == "drop"}
        assert dropped == set(ranked[:len(dropped)]) and space.contains(plan)
    with pytest.raises(UserError, match="calibration"):
        seed_plans(bank, space, ["block-influence"])


def test_block_influence_is_refused_for_an_encoder_decoder(tmp_path):
    tiny.save_tiny("bart", str(tmp_path / "model"), enc=2, dec=2)
    b = LayerBank.init(str(tmp_path / "model"), str(tmp_path / "bank"), granularities=[2])
    with pytest.raises(UserError, match="decoder-only"):
        seed_plans(b, b.space(), ["block-influence"], calibration=TEXTS)
