"""Perplexity of long documents: a fixed context length and a stride, so that no document is truncated and none
overflows the model's positions.

Each document is tokenized whole and cut into windows of at most ``context`` tokens starting every ``stride``
tokens. In a window ``[begin, end)`` the tokens scored are those from ``max(previous end, begin + 1)`` to
``end``: every token of a document but its first is scored exactly once when ``stride < context``, each with
at least ``context - stride`` tokens of context (except near the start); the rest of the window is context only.
With ``stride == context`` the windows do not overlap and the first token of each window is not scored (it has
no context inside its window). A document that begins with the tokenizer's BOS token (``bos_id``) has every later
window begin with it too, in place of the window's first context token: models trained with a BOS at position
0 (Gemma) are far off their training distribution without one (measured on Gemma-3-270M: the teacher's loss on
the first 16 tokens of a window that starts mid-chapter was 11.7 nats without the BOS, 4.1 on the chapter's
opening with it), so a window without it scores the window's start, not the model. The head and its
log-softmax run in chunks (:func:`~modsearch.quality._head.token_scores`), so memory stays bounded by the batch
of windows, not by the vocabulary times the document.

>>> strided_windows(10, context=4, stride=2)
[(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
"""

from __future__ import annotations

import math

import torch

from .._errors import UserError


def strided_windows(n_tokens: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first_scored)`` for each window of a document of ``n_tokens`` tokens."""
    if context < 2 or not 1 <= stride <= context:
        raise UserError(f"context length must be >= 2 and stride between 1 and the context length "
                        f"(got {context} and {stride})")
    out, prev_end, begin = [], 0, 0
    while True:
        end = min(begin + context, n_tokens)
        first = max(prev_end, begin + 1)
        if first < end:
            out.append((begin, end, first))
        if end >= n_tokens:
            return out
        prev_end, begin = end, begin + stride


def model_positions(model) -> int | None:
    """How many positions the model can attend over (None when its config does not say)."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_context(model, context: int | None) -> None:
    """Refuse windows longer than the positions ``model`` can attend over (a model or its config's owner)."""
    positions = model_positions(model)
    if context is not None and positions is not None and context > positions:
        raise UserError(f"context length {context} is above the model's {positions} positions: use a "
                        f"context length of {positions} or less")


def windowed_lm_scores(model, ids: list[list[int]], context: int | None, stride: int | None,
                       batch_size: int, pad_id: int, bos_id: int | None = None,
                       states=None) -> tuple[dict, list[float]]:
    """Token-level cross-entropy, perplexity and accuracy of the tokenized texts ``ids`` under ``model``, scored in strided
    windows; returns ``(stats, per-document mean loss)`` like the unwindowed path. ``context`` None takes the
    model's positions (so a long document never overflows them); ``stride`` None takes half the context. A
    document starting with ``bos_id`` has each later window's first token replaced by it (it is never scored).
    ``states``: as :func:`~modsearch.quality.score_quality` takes it."""
    from ._head import head_input, token_scores

    positions = model_positions(model)
    if context is None:
        context = positions or 1024
    check_context(model, context)
    stride = stride if stride is not None else max(1, context // 2)
    rows = []  # (document, window token ids, labels)
    for d, doc in enumerate(ids):
        lead = bos_id is not None and len(doc) > 0 and doc[0] == bos_id
        for begin, end, first in strided_windows(len(doc), context, stride):
            window = [bos_id] + doc[begin + 1:end] if lead and begin > 0 else doc[begin:end]
            labels = [-100] * (first - begin) + doc[first:end]
            rows.append((d, window, labels))
    device = next(model.parameters()).device
    doc_loss, doc_tokens = [0.0] * len(ids), [0] * len(ids)
    total_correct = 0
    order = sorted(range(len(rows)), key=lambda k: -len(rows[k][1]))  # similar lengths share a batch
    for s in range(0, len(order), batch_size):
        batch = [rows[k] for k in order[s:s + batch_size]]
        width = max(len(w) for _, w, _ in batch)
        inp = torch.full((len(batch), width), pad_id, dtype=torch.long)
        lab = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, (_, w, lbl) in enumerate(batch):  # right padding: it never reaches a real token's context
            inp[r, :len(w)], lab[r, :len(w)], mask[r, :len(w)] = torch.tensor(w), torch.tensor(lbl), 1
        x = (states.head_input if states is not None else head_input)(
            model, {"input_ids": inp.to(device), "attention_mask": mask.to(device)})[:, :-1]
        nll, correct, tokens = token_scores(model, x, lab[:, 1:].to(device))
        for r, (d, _, _) in enumerate(batch):
            doc_loss[d] += float(nll[r])
            doc_tokens[d] += int(tokens[r])
        total_correct += int(correct.sum())
    total = sum(doc_tokens)
    if total == 0:
        raise UserError("the texts hold no tokens to score (every document is empty or one token long)")
    loss = sum(doc_loss) / total
    stats = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": total_correct / total,
             "tokens": total, "context_length": context, "stride": stride, "windows": len(rows)}
    return stats, [lo / t if t else float("nan") for lo, t in zip(doc_loss, doc_tokens)]
