"""Perplexity of many one-stack plans that each differ from one reference plan in one place, without re-running
the layers they share.

SLEB and the greedy path (:mod:`modsearch.search._seeds`) score, at every step, each candidate that changes one
block of the current plan: a drop, or a module over a run of layers. A candidate runs exactly the current
plan's layers before the block it changes, so the hidden state entering that block is the current plan's,
which :class:`PrefixPerplexity` records once per step (``reference``). A candidate then runs only from there:
its earlier layers are replaced by pass-throughs and the recorded state goes in as ``inputs_embeds``, with the
same batches, padding and attention mask as :func:`~modsearch.quality.score_plan` (same tokens, same loss).
On average that halves the calibration of a deep bank's seeds.

Held to an oracle at every step: the reference plan is scored both whole and from its last layer's recorded
input, and the two must agree (else the family does something between the embedding and the first layer that
``inputs_embeds`` skips, and every candidate is scored whole from then on). The tests also compare candidates
with :func:`~modsearch.quality.score_plan` on tiny Llama, Qwen2 and Gemma-3 models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._errors import UserError
from ..data._batching import length_sorted
from ._head import head_input, token_scores
from ._score import _encode_texts, _pad, _pad_id

#: Relative agreement asked of the whole and the prefix-cached perplexity of a reference plan.
AGREEMENT = 1e-4


class _PassThrough(nn.Module):
    """A layer that returns the hidden state it receives (the recorded state is already past it); it keeps the
    attention type the model's forward reads to pick each layer's mask."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class PrefixPerplexity:
    """Calibration perplexity (``texts``, each cut to ``max_tokens`` tokens, in batches of ``batch_size``) of
    plans of a one-stack decoder-only ``bank``, given as lists of :class:`~modsearch.plan.Block`.

    ``reference(blocks)`` scores a plan whole and records the input of each of its layers;
    ``candidate(blocks, first)`` scores a plan equal to the reference in its blocks before index ``first``.
    ``cached`` turns False (and stays so) if a reference's two scores disagree."""

    def __init__(self, bank, texts: Sequence[str], max_tokens: int, batch_size: int):
        self.bank, self.cached = bank, True
        self.stack = bank.stack_names[0]
        ids = _encode_texts(bank.tokenizer, list(texts), max_tokens)
        pad = _pad_id(bank.tokenizer)
        self.batches = [_pad([ids[i] for i in index], pad, False)
                        for index in length_sorted([len(r) for r in ids], batch_size) if index]
        if not sum(int(mask[:, 1:].sum()) for _, mask in self.batches):
            raise UserError("calibration perplexity: the texts hold no tokens to score")
        self.inputs: list[list[torch.Tensor]] = []  # per reference layer, per batch
        self.blocks: list = []

    def _model(self, blocks):
        from ..assembly import assemble
        from ..plan import AssemblyPlan

        return assemble(self.bank, AssemblyPlan((tuple(blocks),)), share_weights=True)

    def _perplexity(self, model, start: int = 0) -> float:
        layers = self.bank.adapter.layers(model, self.stack)
        if start:
            self.bank.adapter.set_layers(model, self.stack,
                                         [_PassThrough(x) for x in layers[:start]] + list(layers[start:]))
        total, count = 0.0, 0
        model.eval()
        with torch.inference_mode():
            for b, (ids, mask) in enumerate(self.batches):
                inputs = ({"inputs_embeds": self.inputs[start][b], "attention_mask": mask} if start
                          else {"input_ids": ids, "attention_mask": mask})
                x = head_input(model, inputs)[:, :-1]
                nll, _, tokens = token_scores(model, x, ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100))
                total += float(nll.sum())
                count += int(tokens.sum())
        return math.exp(min(total / count, 700.0))

    def reference(self, blocks) -> float:
        """Score ``blocks`` whole, record what each of its layers receives, and check the cached path on it."""
        model = self._model(blocks)
        layers = list(self.bank.adapter.layers(model, self.stack))
        seen: list[list[torch.Tensor]] = [[] for _ in layers]

        def hook(i):
            def pre(_m, args, kwargs):
                seen[i].append((args[0] if args else kwargs["hidden_states"]).detach().clone())
            return pre

        handles = [layer.register_forward_pre_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
        try:
            value = self._perplexity(model)
        finally:
            for h in handles:
                h.remove()
        self.inputs, self.blocks = seen, list(blocks)
        if self.cached and len(layers) > 1:
            again = self._perplexity(self._model(blocks), start=len(layers) - 1)
            if not math.isclose(again, value, rel_tol=AGREEMENT):
                self.cached = False
        return value

    def candidate(self, blocks, first: int) -> float:
        """The perplexity of ``blocks``, which equal the reference's before block index ``first``."""
        start = sum(1 for b in self.blocks[:first] if b.kind != "drop")
        if not self.cached or start == 0 or list(blocks[:first]) != self.blocks[:first]:
            return self._perplexity(self._model(blocks))
        return self._perplexity(self._model(blocks), start=start)
