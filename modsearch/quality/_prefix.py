"""Teacher-forced scoring of one-stack decoder plans without re-running the layers they share with a plan
scored before.

Two plans that begin with the same blocks hand the same hidden state to their first differing layer.
:class:`LayerStates` keeps those states (per batch of tokens, least recently used out, within a memory budget);
a plan then runs only from the deepest one it shares: its earlier layers are replaced by pass-throughs and the
kept state goes in as ``inputs_embeds``, with the same batches, padding and attention mask (same tokens, same
loss). Two users:

- the study's evaluator and screen (:class:`~modsearch.search.PlanEvaluator`, ``[cost] prefix_memory_mb``):
  a sampler's plan is often a change of one block of a plan scored before, so on a deep bank a quarter to a
  third of the layer runs of a study are skipped;
- SLEB and the greedy path (:mod:`modsearch.search._seeds`, through :class:`PrefixPerplexity`): at every step
  each candidate changes one block of the current plan, and runs from there; that halves their calibration.

Held to an oracle: the first plan run from a kept state is also run whole on that batch, and the two must agree
(else the family does something between the embedding and the first layer that ``inputs_embeds`` skips, such as
GPT-2's position embeddings, and the store turns itself off). The tests compare every plan with
:func:`~modsearch.quality.score_plan` on tiny Llama, Qwen2, Gemma-3 and GPT-2 models.
"""

from __future__ import annotations

import collections
import hashlib
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


def _signature(inputs: dict) -> str:
    """What identifies a batch: its token ids and attention mask (a state recorded for one batch serves no other)."""
    h = hashlib.sha1()
    for k in ("input_ids", "attention_mask"):
        t = inputs[k].detach().cpu().contiguous()
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def layer_keys(blocks) -> list[str]:
    """The keys :meth:`LayerStates.bind` takes for a stack's ``blocks``: one per layer run, drops omitted."""
    return [str(b) for b in blocks if b.kind != "drop"]


class LayerStates:
    """The hidden states the layers of one-stack decoder plans received, kept across plans (least recently used
    first out, within ``max_bytes``), so that a plan runs only from its first layer that no plan scored before it
    began the same way.

    A state is stored under the batch it came from (its token ids and mask) and the layers that made it (the
    plan's blocks up to there, drops omitted: a dropped layer computes nothing). :meth:`head_input` stands in for
    :func:`~modsearch.quality._head.head_input` on one model; the quality functions take it as ``states=``.

    Held to an oracle on first use: the first plan that starts from a stored state is also run whole on that
    batch, and the two head inputs must agree (else the family does something between the embedding and the
    first layer that ``inputs_embeds`` skips; the store is then emptied and never used again). ``counts`` says
    how many layer runs were skipped and how many ran."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._store: collections.OrderedDict[tuple, torch.Tensor] = collections.OrderedDict()
        self.nbytes = 0
        self.usable, self.checked = self.max_bytes > 0, False
        self.counts: collections.Counter = collections.Counter()

    def bind(self, model: nn.Module, adapter, stack: str, keys: Sequence[str], record: bool = True) -> "_Bound":
        """This store for ``model``, whose layers of ``stack`` are the blocks ``keys`` (e.g. ``["0", "1-3"]``)."""
        return _Bound(self, model, adapter, stack, list(keys), record)

    def _longest(self, sig: str, keys: list[str]) -> int:
        for i in range(len(keys), 0, -1):  # len(keys): every layer passes (a plan that ends earlier)
            if (sig, tuple(keys[:i])) in self._store:
                return i
        return 0

    def _put(self, key: tuple, state: torch.Tensor) -> None:
        if key in self._store:
            self._store.move_to_end(key)
            return
        size = state.numel() * state.element_size()
        if size > self.max_bytes:
            return
        self._store[key] = state
        self.nbytes += size
        while self.nbytes > self.max_bytes:
            _, old = self._store.popitem(last=False)
            self.nbytes -= old.numel() * old.element_size()

    def clear(self) -> None:
        self._store.clear()
        self.nbytes = 0


class _Bound:
    def __init__(self, states: LayerStates, model, adapter, stack, keys, record):
        self.states, self.model, self.adapter, self.stack = states, model, adapter, stack
        self.keys, self.record = keys, record
        self.layers = list(adapter.layers(model, stack))
        if len(self.layers) != len(keys):
            raise ValueError(f"{len(keys)} layer keys for {len(self.layers)} layers")

    def _run(self, inputs: dict, start: int, state: torch.Tensor | None) -> tuple[torch.Tensor, dict]:
        seen: dict[int, torch.Tensor] = {}

        def hook(i):
            def pre(_m, args, kwargs):
                seen[i] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
            return pre

        wanted = range(start + 1, len(self.layers)) if self.record and self.states.usable else ()
        handles = [self.layers[i].register_forward_pre_hook(hook(i), with_kwargs=True) for i in wanted]
        if start:
            self.adapter.set_layers(self.model, self.stack,
                                    [_PassThrough(x) for x in self.layers[:start]] + self.layers[start:])
            inputs = {"inputs_embeds": state, "attention_mask": inputs["attention_mask"]}
        try:
            return head_input(self.model, inputs), seen
        finally:
            for h in handles:
                h.remove()
            if start:
                self.adapter.set_layers(self.model, self.stack, self.layers)

    def head_input(self, model: nn.Module, inputs: dict) -> torch.Tensor:
        """:func:`~modsearch.quality._head.head_input` for this batch, run from the deepest stored state."""
        st = self.states
        if model is not self.model or "input_ids" not in inputs or not st.usable:
            return head_input(model, inputs)
        sig = _signature(inputs)
        start = st._longest(sig, self.keys)
        state = None
        if start:
            key = (sig, tuple(self.keys[:start]))
            st._store.move_to_end(key)
            state = st._store[key]
        x, seen = self._run(inputs, start, state)
        if start and not st.checked:
            whole, _ = self._run(inputs, 0, None)
            st.checked = True
            if not torch.allclose(x, whole, rtol=AGREEMENT, atol=AGREEMENT):
                st.usable = False
                st.clear()
                st.counts["disagreed"] += 1
                return whole
        st.counts["batches"] += 1
        st.counts["layers_skipped"] += start
        st.counts["layers_run"] += len(self.layers) - start
        for i in sorted(seen, reverse=True):  # deepest first: the shallow states, shared by more plans, stay longest
            st._put((sig, tuple(self.keys[:i])), seen[i])
        return x


class PrefixPerplexity:
    """Calibration perplexity (``texts``, each cut to ``max_tokens`` tokens, in batches of ``batch_size``) of
    plans of a one-stack decoder-only ``bank``, given as lists of :class:`~modsearch.plan.Block`.

    ``reference(blocks)`` scores a plan whole and keeps what each of its layers receives; ``candidate(blocks)``
    scores a plan from the deepest of those it shares with the reference. ``cached`` turns False (and stays so)
    if the store's first reuse disagrees with a whole run."""

    def __init__(self, bank, texts: Sequence[str], max_tokens: int, batch_size: int):
        self.bank = bank
        self.stack = bank.stack_names[0]
        ids = _encode_texts(bank.tokenizer, list(texts), max_tokens)
        pad = _pad_id(bank.tokenizer)
        self.batches = [_pad([ids[i] for i in index], pad, False)
                        for index in length_sorted([len(r) for r in ids], batch_size) if index]
        if not sum(int(mask[:, 1:].sum()) for _, mask in self.batches):
            raise UserError("calibration perplexity: the texts hold no tokens to score")
        self.states = LayerStates(max_bytes=1 << 62)  # one reference's states at a time, whatever their size

    @property
    def cached(self) -> bool:
        return self.states.usable

    def _perplexity(self, blocks, record: bool) -> float:
        from ..assembly import assemble
        from ..plan import AssemblyPlan

        model = assemble(self.bank, AssemblyPlan((tuple(blocks),)), share_weights=True)
        bound = self.states.bind(model, self.bank.adapter, self.stack, layer_keys(blocks), record=record)
        total, count = 0.0, 0
        model.eval()
        with torch.inference_mode():
            for ids, mask in self.batches:
                x = bound.head_input(model, {"input_ids": ids, "attention_mask": mask})[:, :-1]
                nll, _, tokens = token_scores(model, x, ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100))
                total += float(nll.sum())
                count += int(tokens.sum())
        return math.exp(min(total / count, 700.0))

    def reference(self, blocks) -> float:
        """Score ``blocks`` whole and keep what each of its layers receives (in place of the last reference's)."""
        self.states.clear()
        return self._perplexity(blocks, record=True)

    def candidate(self, blocks) -> float:
        """The perplexity of ``blocks``, run from the deepest layer input it shares with the reference."""
        return self._perplexity(blocks, record=False)
