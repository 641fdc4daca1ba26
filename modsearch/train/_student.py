"""The training student, and the taps that read a forward pass: layer outputs, attention, the head's input.

The student is a shell of the base model (frozen copies of embeddings, final norm and head) whose layer lists
are swapped to the sampled plan at each step: original layers are the teacher's own frozen objects, modules
train. Teacher and student run in one context (:func:`training_context`): eager attention on *every* config
(the shell's included, since the shell builds the attention masks: an SDPA-style mask given to eager layers
lets every token see the future and the padding), dropout off. The identity test holds this path to the
teacher's logits.
"""

from __future__ import annotations

import contextlib
import random

import torch
from torch import nn

from ..assembly import _skeleton
from ..plan._plan import DROP, LAYER, MODULE, AssemblyPlan, Block


def sample_student(bank, p: float, rng: random.Random, max_span: int = 0) -> AssemblyPlan:
    """A plan with no drops where each module-starting position is replaced with probability ``p`` (granularity
    uniformly among the modules that start there and, with ``max_span``, span at most that many layers: a stage
    can train the short modules among each other without the long ones taking their turns; a module longer than
    that gets no gradient and stays as it is).

    Students never drop layers, though the search mixes modules with dropped layers: sampling drops too (each
    kept layer dropped with probability 0.1) was measured on the default bank and did not pay (README)."""
    spans = [{(i, j) for i, j in s if not max_span or j - i + 1 <= max_span} for s in bank.module_spans()]
    stacks = []
    for s, depth in enumerate(bank.depths):
        blocks, pos = [], 0
        while pos < depth:
            starting = sorted({j for i, j in spans[s] if i == pos})
            if starting and rng.random() < p:
                j = rng.choice(starting)
                blocks.append(Block(pos, j, MODULE))
                pos = j + 1
            else:
                blocks.append(Block(pos, pos, LAYER))
                pos += 1
        stacks.append(tuple(blocks))
    return AssemblyPlan(tuple(stacks))


class Student:
    """A shell of the base model whose layers are set to a plan's blocks (no copies)."""

    def __init__(self, bank):
        self.bank = bank
        self.shell = _skeleton(bank, share_weights=True)
        self.shell.eval()
        for p in self.shell.parameters():
            p.requires_grad_(False)

    def set_plan(self, plan: AssemblyPlan) -> dict[str, list[nn.Module]]:
        """Put the plan's blocks in the shell; returns each stack's layers in slot order."""
        bank, ad = self.bank, self.bank.adapter
        slots = {}
        for name, blocks in zip(bank.stack_names, plan.stacks):
            layers = [bank.module_layer(name, b.start, b.end) if b.kind == MODULE else bank.original_layer(name, b.start)
                      for b in blocks if b.kind != DROP]
            ad.set_layers(self.shell, name, layers)
            slots[name] = layers
        # The base config holds the full per-layer lists (layer_types); the shell's own was trimmed last step.
        ad.set_depths(self.shell, dict(zip(bank.stack_names, plan.depths)),
                      dict(zip(bank.stack_names, (list(s) for s in plan.spans()))),
                      base_config=bank.base_model.config)
        return slots


@contextlib.contextmanager
def training_context(bank, student: Student | nn.Module | None = None):
    """Eager attention on every config reachable from the teacher, the student (a :class:`Student`'s shell, or
    a whole assembled model being healed) and every module (so masks and attention probabilities agree), and all
    of them in eval mode (dropout off: distillation targets are deterministic). Restores the attention
    implementations on exit."""
    roots = [bank.base_model] + [bank.module_layer(*k) for k in bank.modules]
    if student is not None:
        roots.append(student.shell if isinstance(student, Student) else student)
    configs = {}
    for root in roots:
        for m in root.modules():
            c = getattr(m, "config", None)
            if c is not None and hasattr(c, "_attn_implementation") and id(c) not in configs:
                configs[id(c)] = (c, c._attn_implementation)
    try:
        for c, _ in configs.values():
            c._attn_implementation = "eager"
        for root in roots[1:]:
            root.train(False)
        yield
    finally:
        for c, old in configs.values():
            c._attn_implementation = old


# -- taps --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def capture(layers: list[nn.Module], attentions: list[nn.Module] | None = None, inputs: bool = False):
    """Record each layer's output hidden state, optionally its self-attention probabilities, and optionally
    the arguments it was called with (to call a module later exactly as the teacher called that layer)."""
    hidden: list[torch.Tensor | None] = [None] * len(layers)
    attn: list[torch.Tensor | None] = [None] * len(layers)
    calls: list[tuple | None] = [None] * len(layers)
    handles = []

    def hook_layer(i):
        def fn(_m, _inp, out):
            hidden[i] = out[0] if isinstance(out, tuple) else out
        return fn

    def hook_call(i):
        def fn(_m, args, kwargs):
            calls[i] = (args, dict(kwargs))
        return fn

    def hook_attn(i):
        def fn(_m, _inp, out):
            if isinstance(out, tuple) and torch.is_tensor(out[-1]):
                attn[i] = out[-1]
        return fn

    try:
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(hook_layer(i)))
            if inputs:
                handles.append(layer.register_forward_pre_hook(hook_call(i), with_kwargs=True))
            if attentions is not None:
                handles.append(attentions[i].register_forward_hook(hook_attn(i)))
        yield hidden, attn, calls
    finally:
        for h in handles:
            h.remove()
