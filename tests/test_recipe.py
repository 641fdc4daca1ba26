"""The default bank's recipe: text normalisation, the book split, and the resumable teacher trainer."""

import json
import os
import random
import re

import pytest

from modsearch.recipes import _bible
from modsearch.recipes._nmt import TeacherRecipe, train_teacher, train_tokenizer


def test_normalisation():
    assert _bible.normalise_english("Naomi`s  husband [died]") == "Naomi's husband died"
    assert _bible.normalise_french("(7:26) Il dit: (7:27) va.") == "Il dit: va."
    assert _bible.normalise_french("Voici (6:1) le roi.") == "Voici le roi."


def test_split_is_by_whole_books():
    pairs = [{"id": f"{b}:1:1", "book": b, "en": "x", "fr": "y"} for b in range(1, 67)]
    splits = _bible.split_pairs(pairs)
    books = {k: {p["book"] for p in v} for k, v in splits.items()}
    assert books["dev"] == set(_bible.DEV_BOOKS) and books["test"] == set(_bible.TEST_BOOKS)
    assert not (books["train"] & (books["dev"] | books["test"]))
    assert sum(len(v) for v in splits.values()) == 66


def test_committed_splits_match_the_data_card():
    root = os.path.join(os.path.dirname(__file__), "..", "data", "bible-en-fr")
    card = open(os.path.join(root, "DATACARD.md")).read()
    for split in ("dev", "test"):
        data = open(os.path.join(root, f"{split}.jsonl"), "rb").read()
        assert _bible.sha256_bytes(data) in card
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert 900 <= len(rows) <= 1100 and all(r["en"] and r["fr"] for r in rows)
        assert not any(re.search(r"\(\d+:\d+\)", r["fr"]) for r in rows)  # alternate verse numbers stripped


def test_teacher_training_checkpoints_and_resumes(tmp_path):
    rng = random.Random(0)
    words = "the a of and to in is that le la les de et un une des".split()
    pairs = []
    for _ in range(200):
        ws = rng.choices(words, k=rng.randint(2, 8))
        pairs.append({"en": " ".join(ws), "fr": " ".join(reversed(ws))})
    tok = train_tokenizer([p["en"] for p in pairs] + [p["fr"] for p in pairs], 60, str(tmp_path / "tok"))
    recipe = TeacherRecipe(vocab_size=60, d_model=32, ffn_dim=64, heads=2, encoder_layers=2, decoder_layers=2,
                           batch_tokens=256, minutes=0.02, eval_every_minutes=0.01, eval_size=10, warmup=5)
    work = str(tmp_path / "teacher")
    best = train_teacher(work, pairs, pairs[:10], tok, recipe, log=lambda *_: None)
    state = json.load(open(os.path.join(work, "ckpt", "state.json")))
    assert state["done"] and state["step"] > 0 and state["curve"]
    assert all(f.endswith((".json", ".safetensors")) for f in os.listdir(os.path.join(work, "ckpt")))
    # a larger budget resumes from the checkpoint rather than starting over
    more = TeacherRecipe(**{**recipe.__dict__, "minutes": 0.04})
    train_teacher(work, pairs, pairs[:10], tok, more, log=lambda *_: None)
    state2 = json.load(open(os.path.join(work, "ckpt", "state.json")))
    assert state2["step"] > state["step"] and state2["elapsed_s"] >= 0.04 * 60
    from transformers import AutoModelForSeq2SeqLM

    assert AutoModelForSeq2SeqLM.from_pretrained(best).config.encoder_layers == 2


def test_learning_rate_warms_up_decays_and_cools_down_to_zero():
    from modsearch.recipes._nmt import learning_rate

    r = TeacherRecipe(lr=1e-3, warmup=100, minutes=100, cooldown_minutes=20)
    assert learning_rate(r, 50, 0) == pytest.approx(0.5e-3)          # warm-up
    assert learning_rate(r, 400, 60) == pytest.approx(0.5e-3)        # inverse sqrt: sqrt(100/400)
    assert learning_rate(r, 400, 90 * 60) == pytest.approx(0.25e-3)  # half-way through the cooldown
    assert learning_rate(r, 400, 100 * 60) == 0.0
    assert learning_rate(TeacherRecipe(lr=1e-3, warmup=100, cooldown_minutes=0), 400, 1e9) == pytest.approx(0.5e-3)
