"""Architecture adapters: one small class per transformers family.

Adding a family means writing one :class:`ArchitectureAdapter` subclass (its layer-list paths and depth
fields) and decorating it with :func:`register`; nothing else in modsearch changes.
"""

from . import _bart, _decoder_only, _t5  # noqa: F401  (registration)
from ._base import ArchitectureAdapter, adapter_for, register, supported_model_types

__all__ = ["ArchitectureAdapter", "adapter_for", "register", "supported_model_types"]
