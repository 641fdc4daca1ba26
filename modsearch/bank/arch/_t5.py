"""T5 (and its relatives with the same block layout): ``encoder.block`` / ``decoder.block``.

T5 keeps the relative position bias table of a stack in its block 0 only, and every later block receives the
bias computed there. After assembly, whatever fills slot 0 must own the table and no other slot may, or the
stack silently loses position information (or a reload reports missing/unexpected keys). Modules never store
the table: it is the stack's, and it is taken from the original block 0.
"""

from __future__ import annotations

import copy

from torch import nn

from ._base import ArchitectureAdapter, register

_BIAS = "layer.0.SelfAttention.relative_attention_bias.weight"


@register
class T5Adapter(ArchitectureAdapter):
    model_types = ("t5",)
    kind = "seq2seq"
    stack_paths = {"encoder": "encoder.block", "decoder": "decoder.block"}
    depth_fields = {"encoder": ("num_layers",), "decoder": ("num_decoder_layers",)}

    def self_attention(self, layer: nn.Module) -> nn.Module:
        return layer.layer[0].SelfAttention

    def stack_private_keys(self, stack: str) -> tuple[str, ...]:
        return (_BIAS,)

    def finalize_stack(self, model: nn.Module, stack: str, original_slot0: nn.Module) -> None:
        table = original_slot0.layer[0].SelfAttention.relative_attention_bias
        for slot, block in enumerate(self.layers(model, stack)):
            attn = block.layer[0].SelfAttention
            if slot == 0:
                attn.relative_attention_bias = copy.deepcopy(table)
                attn.has_relative_attention_bias = True
            else:
                if hasattr(attn, "relative_attention_bias"):
                    del attn.relative_attention_bias
                attn.has_relative_attention_bias = False

    def set_depths(self, model, depths, spans, base_config=None) -> None:
        super().set_depths(model, depths, spans, base_config)
        # Each T5Stack holds its own copy of the config; the decoder's num_layers is its own depth.
        model.encoder.config.num_layers = int(depths["encoder"])
        model.decoder.config.num_layers = int(depths["decoder"])
        model.decoder.config.num_decoder_layers = int(depths["decoder"])
        # transformers 5.23 sizes the decoder's KV cache from get_text_config(decoder=True), which for T5's
        # flat config only remaps keys that start with "decoder": num_decoder_layers does not, so the cache gets
        # num_layers (the encoder depth) layers and generate() raises IndexError when the decoder is deeper.
        # A `decoder_layers` field is remapped to num_hidden_layers there, sizing the cache to the decoder; T5's
        # own code ignores the field. It is saved with the config, so a plain reload + generate() works too.
        model.config.decoder_layers = int(depths["decoder"])
