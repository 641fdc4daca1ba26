"""A bank tokenizes as its model's own tokenizer.json does, whatever class AutoTokenizer picks.

transformers 5's AutoTokenizer builds the class a config's ``model_type`` maps to; for a Qwen2 config that class
rebuilds a word-level tokenizer.json as a byte-level BPE that maps most words to one id. A tiny Qwen2's bank then
trained on that text, and with the task loss on its deployed plan moved away from the teacher (issue 31: KL
0.0471 -> 0.0498 where Llama and Gemma-3 fell). The oracle is the ``tokenizers`` library reading the file.
"""

import json
import random

import pytest
import torch
from tokenizers import Tokenizer

import tiny
from modsearch import LayerBank, assemble, export_model
from modsearch.bank._tokenizer import load_tokenizer, tokenizer_loader
from modsearch.train import TrainConfig, train_bank

TEXT = " ".join(tiny.WORDS)


def own_ids(directory, text=TEXT):
    return Tokenizer.from_file(f"{directory}/tokenizer.json").encode(text, add_special_tokens=False).ids


@pytest.mark.parametrize("family", tiny.ALL_FAMILIES)
def test_a_bank_tokenizes_as_its_tokenizer_file(family, tmp_path):
    model = tiny.save_tiny(family, str(tmp_path / "model"), enc=2, dec=2)
    bank = LayerBank.init(model, str(tmp_path / "bank"), granularities=[2])
    expected = own_ids(model)
    assert len(set(expected)) == len(tiny.WORDS)  # the oracle tells every word apart
    assert bank.tokenizer.encode(TEXT, add_special_tokens=False) == expected
    assert load_tokenizer(model).encode(TEXT, add_special_tokens=False) == expected


def test_the_export_card_names_the_class_that_reads_its_tokenizer(tmp_path):
    import transformers

    for family, cls in (("qwen2", "PreTrainedTokenizerFast"), ("llama", "AutoTokenizer")):
        model = tiny.save_tiny(family, str(tmp_path / family / "model"), dec=2)
        bank = LayerBank.init(model, str(tmp_path / family / "bank"), granularities=[2])
        out = export_model(bank, "0-1", str(tmp_path / family / "export"))
        assert tokenizer_loader(out) == cls
        card = open(f"{out}/README.md").read()
        assert f"tokenizer = {cls}.from_pretrained(" in card
        loaded = getattr(transformers, cls).from_pretrained(out)
        assert loaded.encode(TEXT, add_special_tokens=False) == own_ids(out) == own_ids(model)


def test_bank_train_with_the_task_loss_brings_a_qwen2_plan_nearer_the_teacher(tmp_path):
    """The reviewer's case: default weights (task loss on), a 2-module plan, KL to the teacher on held-out text.
    Before the tokenizer fix it stayed put (0.0113 -> 0.0109 in the same set-up); Llama's fell by 40 %."""
    torch.manual_seed(0)
    model = tiny.save_tiny("qwen2", str(tmp_path / "model"), dec=6)
    bank = LayerBank.init(model, str(tmp_path / "bank"), granularities=[2])
    rng = random.Random(0)
    words = tiny.WORDS[:30]
    with open(tmp_path / "train.jsonl", "w") as f:
        for _ in range(400):
            f.write(json.dumps({"text": " ".join(rng.choices(words, k=rng.randint(15, 30)))}) + "\n")
    texts = [" ".join(rng.choices(words, k=30)) for _ in range(32)]
    enc = bank.tokenizer(texts, return_tensors="pt", padding=True)
    mask = enc["attention_mask"].bool()
    plan = "0,1,2-3,4-5"

    def kl(b):
        with torch.no_grad():
            t = b.base_model(**enc).logits.log_softmax(-1)
            s = assemble(b, b.plan(plan)).eval()(**enc).logits.log_softmax(-1)
        return (t.exp() * (t - s)).sum(-1)[mask].mean().item()

    before = kl(bank)
    cfg = TrainConfig(steps=40, batch_tokens=2048, eval_every=0, eval_size=16, checkpoint_every=20)
    assert cfg.w_task > 0  # the default weights, as `bank train` runs them
    train_bank(bank, str(tmp_path / "train.jsonl"), cfg, progress=False, log=lambda *_: None)
    after = kl(LayerBank.load(bank.path))
    assert after < 0.8 * before, (before, after)
