"""Decoder-only families: GPT-2 (``transformer.h``) and Llama-style models (``model.layers``)."""

from __future__ import annotations

from ._base import ArchitectureAdapter, register


@register
class GPT2Adapter(ArchitectureAdapter):
    model_types = ("gpt2",)
    kind = "causal"
    stack_paths = {"decoder": "transformer.h"}
    depth_fields = {"decoder": ("n_layer",)}
    self_attention_path = "attn"

    def renumber(self, layer, slot: int) -> None:
        super().renumber(layer, slot)
        # With scale_attn_by_inverse_layer_idx, GPT-2 fixes its attention scale from layer_idx at construction;
        # recompute it as a reload would, so the assembled model and its export agree.
        attn = layer.attn
        attn.scaling = attn.head_dim ** -0.5 if attn.scale_attn_weights else 1.0
        if attn.scale_attn_by_inverse_layer_idx:
            attn.scaling /= float(slot + 1)


@register
class LlamaAdapter(ArchitectureAdapter):
    """Llama and the families built like it (one ``model.layers`` list, depth in ``num_hidden_layers``).

    Llama runs ``layers[:num_hidden_layers]``, so a stale config would silently truncate the model: the depth
    is always rewritten. Per-layer ``layer_types`` (sliding/full attention) follow their layers.
    """

    model_types = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "phi3")
    kind = "causal"
    stack_paths = {"decoder": "model.layers"}
    depth_fields = {"decoder": ("num_hidden_layers",)}
