"""Training examples: read, tokenised, length-batched and collated for the teacher and the student."""

from __future__ import annotations

import os

import torch

from .._errors import UserError
from ..data import DevSet


def read_examples(path: str, fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows of a training file as tuples of the given fields: one field (text) for decoder-only banks, two
    (source, target) for seq2seq ones. Read by the one loader dev sets use (:class:`~modsearch.data.DevSet`), so
    the same formats and the same one-line errors apply; rows with an empty field are skipped."""
    if not os.path.isfile(path):
        raise UserError(f"training data {path} not found")
    if len(fields) == 1:
        data = DevSet.load(path, "lm", text_field=fields[0])
        rows = [(s,) for s in data.sources]
    else:
        data = DevSet.load(path, "translation", source_field=fields[0], target_field=fields[1])
        rows = list(zip(data.sources, data.targets))
    rows = [r for r in rows if all(x.strip() for x in r)]
    if not rows:
        raise UserError(f"training data {path} has no usable rows")
    return rows


def encode_examples(bank, rows, max_len: int, prefix: str) -> list[tuple[list[int], list[int]]]:
    """Token ids per example: (source, target) for seq2seq banks, (text, text) for decoder-only ones."""
    tok = bank.tokenizer
    if bank.kind == "seq2seq":
        src = tok([prefix + r[0] for r in rows], truncation=True, max_length=max_len)["input_ids"]
        tgt = tok([r[1] for r in rows], truncation=True, max_length=max_len)["input_ids"]
        return list(zip(src, tgt))
    ids = tok([r[0] for r in rows], truncation=True, max_length=max_len)["input_ids"]
    return [(x, x) for x in ids if len(x) > 1]


def collate(bank, examples, idx) -> tuple[dict, torch.Tensor]:
    """Model inputs and the label tensor (-100 where padded) for a batch; padding on the right."""
    pad = bank.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    rows = [examples[i] for i in idx]
    if bank.kind == "seq2seq":
        start = bank.base_model.config.decoder_start_token_id
        ls, lt = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        src = torch.full((len(rows), ls), pad, dtype=torch.long)
        dec = torch.full((len(rows), lt), pad, dtype=torch.long)
        labels = torch.full((len(rows), lt), -100, dtype=torch.long)
        for r, (s, t) in enumerate(rows):
            src[r, : len(s)] = torch.tensor(s)
            labels[r, : len(t)] = torch.tensor(t)
            dec[r, 0] = start
            dec[r, 1 : len(t)] = torch.tensor(t[:-1])
        dmask = labels.ne(-100).long()
        dmask[:, 0] = 1
        smask = torch.tensor([[1] * len(s) + [0] * (ls - len(s)) for s, _ in rows], dtype=torch.long)
        inputs = {"input_ids": src, "attention_mask": smask, "decoder_input_ids": dec,
                  "decoder_attention_mask": dmask}
        return inputs, labels
    ln = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), ln), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), ln), dtype=torch.long)
    for r, (x, _) in enumerate(rows):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    labels = ids.masked_fill(mask.eq(0), -100)
    labels = torch.cat([labels[:, 1:], torch.full((len(rows), 1), -100, dtype=torch.long)], dim=1)
    return {"input_ids": ids, "attention_mask": mask}, labels


def stack_masks(bank, inputs: dict, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per stack, which positions hold real tokens (the ones whose hidden states are distilled)."""
    if bank.kind == "seq2seq":
        return {"encoder": inputs["attention_mask"].bool(),
                "decoder": labels.ne(-100) | inputs["decoder_attention_mask"].bool()}
    return {"decoder": inputs["attention_mask"].bool()}
