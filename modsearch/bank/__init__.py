"""Layer banks: a model's original layers plus modular layers, each trained to do the work of k layers.

``_bank`` holds :class:`LayerBank` (the manifest, checksums, creation and updates), ``_storage`` the
safetensors files (never pickle), and ``arch/`` one small adapter per transformers family.

>>> bank = LayerBank.load("banks/bible-en-fr")          # doctest: +SKIP
>>> bank.plan("0-1,2-3,4-5/0-2,3-5")                      # doctest: +SKIP
"""

from ._bank import MANIFEST, SCHEMA_VERSION, LayerBank, ModuleEntry

__all__ = ["MANIFEST", "SCHEMA_VERSION", "LayerBank", "ModuleEntry"]
