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
        """With ``scale_attn_by_inverse_layer_idx`` GPT-2 scales attention scores by 1/(layer_idx+1), fixed at
        construction: a layer trained at index i and placed in slot s would compute other scores, and a reload
        recomputes the scale from s. So the query projection absorbs (s+1)/(i+1): scores stay what they were at
        index i, and the model reloads exactly as assembled."""
        attn = layer.attn
        native = attn.layer_idx
        super().renumber(layer, slot)
        attn.scaling = attn.head_dim ** -0.5 if attn.scale_attn_weights else 1.0
        if attn.scale_attn_by_inverse_layer_idx:
            attn.scaling /= float(slot + 1)
            ratio = (slot + 1) / (native + 1)
            if ratio != 1.0:
                import torch

                # c_attn is a Conv1D: weight (in, 3·embed), the query first. New tensors, not in place: the
                # layer may be a view of the bank's (assemble(share_weights=True)).
                for name, cols in (("weight", (slice(None), slice(0, attn.embed_dim))),
                                   ("bias", (slice(0, attn.embed_dim),))):
                    old = getattr(attn.c_attn, name)
                    new = old.detach().clone()
                    new[cols] *= ratio
                    setattr(attn.c_attn, name, torch.nn.Parameter(new, requires_grad=old.requires_grad))


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
