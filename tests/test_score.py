"""score_quality measures what it says: the same numbers for an assembled plan and its export, for a reused
encoder and a fresh one, in dev-set order whatever the batching, and losses that match transformers' own."""

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from modsearch import UserError, assemble, export_model
from modsearch.data import DevSet
from modsearch.data import length_sorted
from modsearch.quality import QualityTask, encode, score_plan, score_quality

SOURCES = ["the a of and to in is that", "for it", "with as was on be by this are at from", "or an",
           "which his her the of", "a", "in is that for it with"]
TARGETS = ["le la les de", "et un une des en", "du", "est que pour dans qui par", "sur au", "avec il elle ne",
           "pas le"]
DEV = DevSet.from_lists(SOURCES, TARGETS)
LM_DEV = DevSet.from_lists(SOURCES, task="lm")
SEQ2SEQ_PLAN = "0-1,2,3,x4,5/0,1-2,3,4,5"
GEN = QualityTask("translation", metric="chrf,bleu,loss,token_accuracy", batch_size=3, max_new_tokens=6)


def _same(a, b):
    assert a.scores == b.scores
    assert a.predictions == b.predictions
    assert a.example_losses == b.example_losses


@pytest.mark.parametrize("family", ["m2m_100", "t5"])
def test_assembled_plan_scores_like_its_reloaded_export(banks, tmp_path, family):
    bank = banks[family]
    direct = score_plan(bank, SEQ2SEQ_PLAN, DEV, GEN, return_predictions=True)
    out = export_model(bank, SEQ2SEQ_PLAN, str(tmp_path / "exp"))
    model = AutoModelForSeq2SeqLM.from_pretrained(out)
    again = score_quality(model, AutoTokenizer.from_pretrained(out), DEV, GEN, return_predictions=True)
    _same(direct, again)
    assert direct.primary == "chrf" and direct.greater_is_better
    assert list(direct.scores) == ["chrf", "bleu", "loss", "token_accuracy"]


def test_decoder_only_plan_scores_like_its_reloaded_export(banks, tmp_path):
    bank, plan = banks["gpt2"], "0-1,2,x3,4,5"
    task = QualityTask("lm", metric="perplexity,loss,token_accuracy", batch_size=3)
    direct = score_plan(bank, plan, LM_DEV, task, return_predictions=True)
    out = export_model(bank, plan, str(tmp_path / "exp"))
    again = score_quality(AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out), LM_DEV,
                          task, return_predictions=True)
    _same(direct, again)
    assert direct.scores["perplexity"] == pytest.approx(math.exp(direct.scores["loss"]))
    assert not direct.greater_is_better


@pytest.mark.parametrize("family", ["m2m_100", "t5"])
@pytest.mark.parametrize("num_beams", [1, 2])
def test_reused_encoder_outputs_give_identical_results(banks, family, num_beams):
    bank = banks[family]
    task = QualityTask("translation", metric="chrf,loss", batch_size=3, max_new_tokens=6, num_beams=num_beams)
    # Two plans with the same encoder plan and different decoders: the first one's encoder serves the second.
    first = assemble(bank, "0-1,2,3,x4,5/0,1,2,3,4,5")
    second = assemble(bank, "0-1,2,3,x4,5/0-2,x3,4,5")
    cache = encode(first, bank.tokenizer, DEV, task, tag="0-1,2,3,x4,5")
    fresh = score_quality(second, bank.tokenizer, DEV, task, return_predictions=True)
    calls = []
    second.get_encoder().register_forward_hook(lambda *_: calls.append(1))
    reused = score_quality(second, bank.tokenizer, DEV, task, return_predictions=True, encoder_cache=cache)
    _same(fresh, reused)
    assert calls == []  # the encoder never ran: its outputs came from the cache
    assert len(set(reused.example_losses)) == len(DEV)  # the comparison is not between trivial outputs
    # And the cache is what the decoder reads: another encoder's outputs change the result.
    wrong = encode(assemble(bank, "0,1,2,3,4,5/0,1,2,3,4,5"), bank.tokenizer, DEV, task)
    assert score_quality(second, bank.tokenizer, DEV, task, encoder_cache=wrong).scores != reused.scores
    other = DevSet.from_lists(SOURCES[:3], TARGETS[:3])
    with pytest.raises(ValueError, match="another dev set"):
        score_quality(second, bank.tokenizer, other, task, encoder_cache=cache)


def test_length_sorted_batches_come_back_in_dev_set_order(banks):
    bank = banks["bart"]
    model = assemble(bank, "0,1,2,3,4,5/0,1,2,3,4,5")
    seen = []
    generate = model.generate

    def recording_generate(**kw):
        seen.append(kw["attention_mask"].sum(-1).tolist())
        return generate(**kw)

    model.generate = recording_generate
    task = QualityTask("translation", metric="chrf", batch_size=3, max_new_tokens=5)
    batched = score_quality(model, bank.tokenizer, DEV, task, return_predictions=True)
    lengths = [n for batch in seen for n in batch]
    assert lengths == sorted(lengths, reverse=True) and len(seen) == 3  # longest first, 3 + 3 + 1
    one_by_one = [score_quality(model, bank.tokenizer, DevSet.from_lists([s], [t]), task,
                                return_predictions=True).predictions[0] for s, t in zip(SOURCES, TARGETS)]
    assert batched.predictions == one_by_one
    assert length_sorted([3, 5, 5, 1, 4], 2) == [[1, 2], [4, 0], [3]]


@pytest.mark.parametrize("family", ["bart", "llama"])
def test_teacher_forced_loss_is_transformers_loss(banks, family):
    bank = banks[family]
    model = assemble(bank, bank.teacher_plan())
    tok = bank.tokenizer
    src, tgt = SOURCES[0], TARGETS[0]
    with torch.no_grad():
        if bank.kind == "seq2seq":
            enc = tok([src], return_tensors="pt")
            ref = model(**enc, labels=tok(text_target=[tgt], return_tensors="pt")["input_ids"]).loss.item()
            got = score_quality(model, tok, DevSet.from_lists([src], [tgt]), QualityTask(metric="loss"))
        else:
            ids = tok([src], return_tensors="pt")["input_ids"]
            ref = model(input_ids=ids, labels=ids).loss.item()
            got = score_quality(model, tok, DevSet.from_lists([src], task="lm"), QualityTask("lm", metric="loss"))
    assert got.value == pytest.approx(ref, rel=1e-5)


def test_decoder_only_translation_generates_continuations(banks):
    bank = banks["llama"]
    task = QualityTask("translation", metric="chrf,loss", batch_size=4, max_new_tokens=4)
    result = score_plan(bank, "0,1-2,3,4,5", DEV, task, return_predictions=True)
    assert len(result.predictions) == len(DEV) and result.scores["loss"] > 0
    assert all(not p.startswith(s) for p, s in zip(result.predictions, SOURCES))  # the prompt is cut off


def test_model_mode_is_restored_and_task_is_checked(banks):
    bank = banks["t5"]
    model = assemble(bank, bank.teacher_plan()).train()
    score_quality(model, bank.tokenizer, DEV, QualityTask(metric="token_accuracy"))
    assert model.training
    with pytest.raises(UserError, match="no references"):
        QualityTask("lm", metric="chrf")
    with pytest.raises(UserError, match="num-beams"):
        QualityTask(num_beams=0)
    with pytest.raises(UserError, match="needs references"):
        score_quality(model, bank.tokenizer, LM_DEV, QualityTask(metric="loss"))
