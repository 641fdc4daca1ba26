"""The output head, run apart from the body: the one teacher-forced token scoring of modsearch.

:func:`head_input` runs a model up to its output embeddings and returns what they would receive; :func:`head_logits`
turns any slice of that into the model's logits; :func:`token_scores` scores reference tokens with the head run on
chunks of real tokens only. Dev-set scoring, the plan table and module training all score tokens through it, so
a 262k-vocabulary model never makes a full-vocabulary tensor for a whole batch, and padding never reaches the
head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


#: Logit elements per head chunk when none is asked for: 32 M (128 MB in fp32), so a 262k vocabulary runs 128
#: tokens at a time and an 8k one a whole batch of 4k tokens.
CHUNK_ELEMENTS = 1 << 25


def chunk_tokens_for(model: nn.Module, requested: int = 0) -> int:
    """Tokens per head chunk: ``requested`` if positive, else as many as keep one logits tensor at
    :data:`CHUNK_ELEMENTS` elements."""
    if requested > 0:
        return requested
    vocab = model.get_output_embeddings().weight.shape[0]
    return max(1, CHUNK_ELEMENTS // vocab)


class _HeadReached(Exception):
    def __init__(self, x: torch.Tensor):
        super().__init__("head reached")
        self.x = x


def head_input(model: nn.Module, inputs: dict) -> torch.Tensor:
    """Run ``model`` up to its output embeddings and return what they would receive: the final hidden state,
    after the final norm and any scaling the family applies (T5). The full-vocabulary logits are never made."""
    head = model.get_output_embeddings()

    def stop(_m, args):
        raise _HeadReached(args[0])

    handle = head.register_forward_pre_hook(stop)
    try:
        model(**inputs, use_cache=False, return_dict=True)
    except _HeadReached as reached:
        return reached.x
    finally:
        handle.remove()
    raise RuntimeError(f"{type(model).__name__}'s forward never reached its output embeddings")


def head_logits(model: nn.Module, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """The logits ``model`` computes from head input ``x``: the LM head, plus what the family adds after it
    (BART's ``final_logits_bias``, Gemma 2/3's final soft-capping). Held equal to the model's own logits on
    every registered family by the tests. ``weight``: the head's weight already cast to a lower precision
    (``x`` is cast to it), so that a chunked head casts the (vocabulary-sized) weight once, not per chunk."""
    head = model.get_output_embeddings()
    if weight is None:
        logits = head(x)
    else:
        bias = getattr(head, "bias", None)
        logits = F.linear(x.to(weight.dtype), weight, None if bias is None else bias.to(weight.dtype))
    bias = getattr(model, "final_logits_bias", None)
    if bias is not None:
        logits = logits + bias.to(logits.dtype).view(-1)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


@torch.no_grad()
def token_scores(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, chunk_tokens: int = 0):
    """Per row of ``labels`` (-100: not scored): summed negative log-likelihood, argmax-correct tokens and scored
    tokens, from head input ``x`` (aligned with ``labels``), the head run ``chunk_tokens`` real tokens at a time
    (0: sized by the vocabulary, :func:`chunk_tokens_for`)."""
    chunk_tokens = chunk_tokens_for(model, chunk_tokens)
    valid = labels.ne(-100)
    rows = valid.nonzero()[:, 0]
    xs, ys = x[valid], labels[valid]
    nll = torch.zeros(labels.shape[0], dtype=torch.float64)
    correct = torch.zeros(labels.shape[0], dtype=torch.long)
    for a in range(0, int(ys.numel()), chunk_tokens):
        logits = head_logits(model, xs[a:a + chunk_tokens]).float()
        y = ys[a:a + chunk_tokens]
        lp = torch.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
        nll.index_add_(0, rows[a:a + chunk_tokens].cpu(), -lp.double().cpu())
        correct.index_add_(0, rows[a:a + chunk_tokens].cpu(), (logits.argmax(-1) == y).long().cpu())
    return nll, correct, valid.sum(-1).cpu()
