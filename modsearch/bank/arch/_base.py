"""What modsearch needs to know about one transformer family: where its layer stacks live and how to keep
a model consistent after its layers have been swapped.

Each family is one small :class:`ArchitectureAdapter`. The generic work (renumbering ``layer_idx``, setting
config depths as Python ints, trimming ``layer_types``) lives here; an adapter only names its layer lists and
config fields, and overrides :meth:`finalize_stack` when the family keeps state outside its layers (T5's
relative position bias).

A module over a span of layers with different attention types (Gemma-3: five sliding-window layers, then one
full-attention layer) attends fully when its span holds a full-attention layer, with that layer's RoPE
parameters (:meth:`ArchitectureAdapter.attention_source`): a module over a global layer must not turn it into a
sliding window. The assembled config's ``layer_types`` records each slot's type.
"""

from __future__ import annotations

import operator
from typing import ClassVar

from torch import nn


class ArchitectureAdapter:
    """Maps a transformers model family onto modsearch's stacks.

    Attributes:
        model_types: the ``config.model_type`` values this adapter handles.
        kind: ``"seq2seq"`` (encoder + decoder) or ``"causal"`` (decoder only).
        stack_paths: stack name → dotted attribute path of its ``nn.ModuleList``, encoder first.
        depth_fields: stack name → the config fields that hold that stack's depth.
    """

    model_types: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = "seq2seq"
    stack_paths: ClassVar[dict[str, str]] = {}
    depth_fields: ClassVar[dict[str, tuple[str, ...]]] = {}

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(self.stack_paths)

    def layers(self, model: nn.Module, stack: str) -> nn.ModuleList:
        return operator.attrgetter(self.stack_paths[stack])(model)

    def set_layers(self, model: nn.Module, stack: str, layers: list[nn.Module]) -> None:
        parent_path, _, attr = self.stack_paths[stack].rpartition(".")
        parent = operator.attrgetter(parent_path)(model) if parent_path else model
        setattr(parent, attr, nn.ModuleList(layers))

    def depths(self, model: nn.Module) -> dict[str, int]:
        return {s: len(self.layers(model, s)) for s in self.stacks}

    def stack_private_keys(self, stack: str) -> tuple[str, ...]:
        """State-dict keys (relative to a layer) that belong to the stack, not to the layer that holds them.

        A module never stores them; :meth:`finalize_stack` puts them where the stack needs them.
        """
        return ()

    #: attribute path from a layer to its self-attention module (whose output ends with the attention probs)
    self_attention_path: ClassVar[str] = "self_attn"

    def self_attention(self, layer: nn.Module) -> nn.Module:
        return operator.attrgetter(self.self_attention_path)(layer)

    # -- after assembly -----------------------------------------------------------------------------------
    def renumber(self, layer: nn.Module, slot: int) -> None:
        """Give every attention module of ``layer`` the index of its new slot: the KV cache is indexed by it."""
        for m in layer.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = slot

    def finalize_stack(self, model: nn.Module, stack: str, original_slot0: nn.Module) -> None:
        """Fix stack-level state after the layers of ``stack`` were replaced. ``original_slot0`` is the base
        model's layer 0 of that stack, for families that keep stack state in it."""

    def stack_owner(self, model: nn.Module, stack: str) -> nn.Module:
        """The module that holds ``stack``'s layer list (its config is the one the stack's layers must read)."""
        parent_path = self.stack_paths[stack].rpartition(".")[0]
        return operator.attrgetter(parent_path)(model) if parent_path else model

    def share_config(self, model: nn.Module, stack: str) -> None:
        """Point every layer's submodules at the config of the module that owns the stack. Deep-copied layers
        carry config copies of their own, which ``model.set_attn_implementation(...)`` would never reach."""
        config = getattr(self.stack_owner(model, stack), "config", None) or model.config
        for layer in self.layers(model, stack):
            for m in layer.modules():
                if getattr(m, "config", None) is not None and type(m.config) is type(config):
                    m.config = config

    def attention_source(self, config, start: int, end: int) -> int:
        """The layer of the span ``start..end`` whose attention type (and so RoPE parameters, mask and cache) a
        block over that span takes: the first full-attention layer of the span, else its first layer.

        The span's layers see the whole context when one of them attends fully; a module in their place must
        too (Gemma-3's modules over a global layer would otherwise become 512-token sliding windows)."""
        types = getattr(config, "layer_types", None)
        if self.kind != "causal" or not isinstance(types, list | tuple):
            return start
        return next((k for k in range(start, end + 1) if types[k] == "full_attention"), start)

    def set_attention_type(self, layer: nn.Module, config, source: int) -> None:
        """Make ``layer``'s attention modules of the type of ``config``'s layer ``source`` (what transformers sets
        at construction from ``layer_types``: the kernels that read ``sliding_window`` need it)."""
        types = getattr(config, "layer_types", None)
        if not isinstance(types, list | tuple):
            return
        kind = types[source]
        for m in layer.modules():
            if hasattr(m, "layer_type") and hasattr(m, "sliding_window"):
                m.layer_type = kind
                m.sliding_window = config.sliding_window if kind == "sliding_attention" else None
                if hasattr(m, "is_sliding"):
                    m.is_sliding = kind == "sliding_attention"

    def set_depths(self, model: nn.Module, depths: dict[str, int], spans: dict[str, list[tuple[int, int]]],
                   base_config=None) -> None:
        """Write the new depths into the config (Python ints: config fields are strict) and keep per-layer
        config lists such as ``layer_types`` aligned with the blocks that now fill each slot (``spans``: each
        slot's ``(start, end)``; see :meth:`attention_source`). The per-layer lists are read from
        ``base_config`` (the original model's), since ``model``'s own may be trimmed already."""
        config = model.config
        base = base_config if base_config is not None else config
        for stack, n in depths.items():
            for field in self.depth_fields[stack]:
                setattr(config, field, int(n))
        layer_types = getattr(base, "layer_types", None)
        if self.kind == "causal" and isinstance(layer_types, list | tuple):
            (stack,) = self.stacks
            config.layer_types = [layer_types[self.attention_source(base, i, j)] for i, j in spans[stack]]


_REGISTRY: dict[str, ArchitectureAdapter] = {}


def register(adapter_cls: type[ArchitectureAdapter]) -> type[ArchitectureAdapter]:
    adapter = adapter_cls()
    for model_type in adapter_cls.model_types:
        _REGISTRY[model_type] = adapter
    return adapter_cls


def supported_model_types() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(model_type: str) -> ArchitectureAdapter:
    from ..._errors import UserError

    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise UserError(
            f"unsupported architecture {model_type!r}; supported: {', '.join(supported_model_types())}"
        ) from None
