"""BART and the family that shares its layer layout: mBART, Marian, M2M100/NLLB, Pegasus, Blenderbot.

Layers live in ``model.encoder.layers`` / ``model.decoder.layers``; depths in ``encoder_layers`` /
``decoder_layers``. Positions are stack-level (learned or sinusoidal embeddings), so layers carry no
position state and a plain renumbering suffices.
"""

from ._base import ArchitectureAdapter, register


@register
class BartAdapter(ArchitectureAdapter):
    model_types = ("bart", "mbart", "marian", "m2m_100", "pegasus", "blenderbot", "blenderbot-small", "plbart")
    kind = "seq2seq"
    stack_paths = {"encoder": "model.encoder.layers", "decoder": "model.decoder.layers"}
    depth_fields = {"encoder": ("encoder_layers",), "decoder": ("decoder_layers",)}
