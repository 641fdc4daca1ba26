"""Perplexity in strided windows, held to an independent oracle: the same windows scored by the plain
transformers forward (its own logits, log-softmax and gather), summed by hand."""

import json
import math
import random

import pytest
import torch

import tiny
from modsearch import DevSet, UserError
from modsearch.quality._score import QualityTask, score_quality
from modsearch.quality._windows import strided_windows, windowed_lm_scores


@pytest.mark.parametrize("n, context, stride", [(10, 4, 2), (37, 8, 3), (5, 8, 4), (64, 16, 15), (2, 2, 1)])
def test_every_token_but_the_first_is_scored_exactly_once(n, context, stride):
    scored = []
    for begin, end, first in strided_windows(n, context, stride):
        assert end - begin <= context and begin < first <= end
        scored += range(first, end)
    assert sorted(scored) == list(range(1, n))


def test_without_overlap_each_windows_first_token_goes_unscored():
    wins = strided_windows(12, 4, 4)
    assert wins == [(0, 4, 1), (4, 8, 5), (8, 12, 9)]
    with pytest.raises(UserError):
        strided_windows(12, 4, 5)


def _docs(n_docs=5, seed=0):
    rng = random.Random(seed)
    words = list(tiny.WORDS)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 140))) for _ in range(n_docs)]


def _oracle(model, tok, texts, context, stride, bos=None):
    total, count = 0.0, 0
    for text in texts:
        ids = tok(text)["input_ids"] if isinstance(text, str) else text
        for begin, end, first in strided_windows(len(ids), context, stride):
            window = ids[begin:end] if bos is None or begin == 0 else [bos] + ids[begin + 1:end]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([window])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            for p in range(first, end):
                total -= float(lp[p - begin - 1, ids[p]])
                count += 1
    return total / count, count


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_windowed_perplexity_equals_the_plain_forward_on_the_same_windows(tmp_path, family):
    model = tiny.tiny_model(family, dec=3)
    tok = tiny.tiny_tokenizer(str(tmp_path))
    texts = _docs()
    assert max(len(tok(t)["input_ids"]) for t in texts) > 64  # longer than the tiny models' 64 positions
    ids = [tok(t)["input_ids"] for t in texts]
    stats, per_doc = windowed_lm_scores(model, ids, 16, 6, batch_size=3, pad_id=0)
    loss, count = _oracle(model, tok, texts, 16, 6)
    assert stats["tokens"] == count and stats["loss"] == pytest.approx(loss, rel=1e-5)
    assert stats["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5) and len(per_doc) == len(texts)


def test_windows_of_a_document_that_opens_with_bos_all_open_with_it(tmp_path):
    """Gemma-style models need their BOS at position 0: a later window of a BOS-led document starts with the BOS
    (in place of its first, unscored, context token); documents without a leading BOS are windowed as before."""
    model = tiny.tiny_model("gemma3_text", dec=3)
    tok = tiny.tiny_tokenizer(str(tmp_path))
    bos = 2
    plain = [tok(t)["input_ids"] for t in _docs()]
    assert all(d[0] != bos for d in plain)
    led = [[bos] + d for d in plain]
    stats, _ = windowed_lm_scores(model, led, 16, 6, batch_size=3, pad_id=0, bos_id=bos)
    loss, count = _oracle(model, tok, led, 16, 6, bos=bos)
    assert stats["tokens"] == count and stats["loss"] == pytest.approx(loss, rel=1e-5)
    without, _ = windowed_lm_scores(model, led, 16, 6, batch_size=3, pad_id=0)
    assert without["tokens"] == count and without["loss"] != pytest.approx(loss, rel=1e-5)  # the BOS is in effect
    same, _ = windowed_lm_scores(model, plain, 16, 6, batch_size=3, pad_id=0, bos_id=bos)
    assert same["loss"] == pytest.approx(_oracle(model, tok, plain, 16, 6)[0], rel=1e-5)


def test_long_texts_no_longer_overflow_the_positions_and_short_ones_score_as_before(tmp_path):
    model = tiny.tiny_model("llama", dec=3)
    tok = tiny.tiny_tokenizer(str(tmp_path))
    path = tmp_path / "dev.jsonl"
    texts = _docs(4, seed=1)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    dev = DevSet.load(str(path), task="lm", text_field="text")
    # Default: a text longer than the model's 64 positions switches to windows of 64, stride 32.
    auto = score_quality(model, tok, dev, QualityTask("lm", text_field="text", batch_size=2))
    assert auto.details["teacher_forced"]["context_length"] == 64
    explicit = score_quality(model, tok, dev, QualityTask("lm", text_field="text", batch_size=2, context_length=64,
                                                          stride=32))
    assert auto.scores == explicit.scores
    assert auto.scores["perplexity"] == pytest.approx(math.exp(_oracle(model, tok, texts, 64, 32)[0]), rel=1e-5)
    # Texts that fit: one window each, the same loss as the unwindowed path.
    short = tmp_path / "short.jsonl"
    short.write_text("".join(json.dumps({"text": t}) + "\n" for t in _docs(6, seed=2) if len(t.split()) < 50))
    sdev = DevSet.load(str(short), task="lm", text_field="text")
    plain = score_quality(model, tok, sdev, QualityTask("lm", text_field="text"))
    windowed = score_quality(model, tok, sdev, QualityTask("lm", text_field="text", context_length=64))
    assert "context_length" not in plain.details["teacher_forced"]
    assert len(sdev) >= 1
    assert windowed.details["teacher_forced"]["loss"] == pytest.approx(plain.details["teacher_forced"]["loss"], rel=1e-6)
    # A context longer than the positions is refused.
    with pytest.raises(UserError, match="above the model's 64 positions"):
        score_quality(model, tok, dev, QualityTask("lm", text_field="text", context_length=128))


@pytest.mark.parametrize("kw, message", [({"context_length": 1}, "context-length"), ({"stride": 0}, "stride"),
                                         ({"context_length": 8, "stride": 9}, "stride")])
def test_bad_window_settings_are_refused(kw, message):
    with pytest.raises(UserError, match=message):
        QualityTask("lm", **kw)
    with pytest.raises(UserError, match="task lm only"):
        QualityTask("translation", context_length=8)
    assert "context_length" not in QualityTask("lm").to_json()  # old cache keys still match
