"""Assemble a plan from a bank into a standard transformers model.

The result is an instance of the base model's own class (for example ``M2M100ForConditionalGeneration``)
whose layers are deep copies of the bank's original layers and modules, in plan order. Attention
``layer_idx`` values are renumbered 0..N-1 (the KV cache is indexed by them: stale indices make cached
generation silently wrong), and config depths are rewritten as Python ints.

``share_weights=True`` (scoring) builds the same model as a *view* of the bank: new module objects (so layer
indices and configs can be renumbered without touching the bank) holding the bank's own parameter and buffer
tensors. Nothing of the 170M-parameter embedding of an LLM is copied per trial. Such a model must not be
changed in place (no ``.to(dtype)``, no training): that would change the bank. Export and latency timing use
the default, deep copies.

>>> model = assemble(bank, "0,1-2,3-5/0-1,2,3,x4,5")      # doctest: +SKIP
>>> model.save_pretrained("out")                          # a plain HF model
"""

from __future__ import annotations

import copy

from torch import nn

from .bank._bank import LayerBank
from .plan._plan import DROP, MODULE, AssemblyPlan


def _tensors(module: nn.Module) -> dict[int, object]:
    """A deepcopy memo that maps every parameter and buffer of ``module`` to itself (copies share them)."""
    return {id(t): t for t in list(module.parameters()) + list(module.buffers())}


def _skeleton(bank: LayerBank, share_weights: bool = False) -> nn.Module:
    """A deep copy of the base model without its layer lists (so they are not copied for nothing).

    With ``share_weights`` the copy's parameters and buffers are the base model's own tensors (only modules and
    configs are new objects): a frozen shell such as the training student's costs no memory for the embedding.
    """
    base = bank.base_model
    saved = {s: bank.adapter.layers(base, s) for s in bank.stack_names}
    memo = _tensors(base) if share_weights else {}
    try:
        for s in bank.stack_names:
            bank.adapter.set_layers(base, s, [])
        skeleton = copy.deepcopy(base, memo)
    finally:
        for s, layers in saved.items():
            bank.adapter.set_layers(base, s, list(layers))
    return skeleton


def plan_layers(bank: LayerBank, plan: AssemblyPlan) -> dict[str, list[nn.Module]]:
    """The bank's layer objects (not copies) that fill each stack's slots, in order."""
    out = {}
    for name, blocks in zip(bank.stack_names, plan.stacks):
        layers = []
        for b in blocks:
            if b.kind == DROP:
                continue
            if b.kind == MODULE:
                layers.append(bank.module_layer(name, b.start, b.end))
            else:
                layers.append(bank.original_layer(name, b.start))
        out[name] = layers
    return out


def assemble(bank: LayerBank, plan: str | AssemblyPlan, share_weights: bool = False) -> nn.Module:
    """Build the model that ``plan`` describes, as a standalone transformers model in eval mode (with
    ``share_weights``, a view of the bank's tensors: see the module docstring)."""
    plan = bank.plan(plan)
    adapter = bank.adapter
    model = _skeleton(bank, share_weights)
    for name, layers in plan_layers(bank, plan).items():
        copies = [copy.deepcopy(layer, _tensors(layer) if share_weights else {}) for layer in layers]
        for slot, layer in enumerate(copies):
            adapter.renumber(layer, slot)
        adapter.set_layers(model, name, copies)
        adapter.share_config(model, name)
        adapter.finalize_stack(model, name, bank.original_layer(name, 0))
    adapter.set_depths(model, dict(zip(bank.stack_names, plan.depths)),
                       dict(zip(bank.stack_names, (list(s) for s in plan.spans()))),
                       base_config=bank.base_model.config)
    model.eval()
    if not share_weights:  # shared tensors keep the bank's flags
        for p in model.parameters():
            p.requires_grad_(False)
    return model
