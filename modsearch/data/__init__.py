"""Dev and training data: local JSONL/JSON/CSV/TSV files (or a hub id when the network allows) read through
``datasets``, with configurable field names, checked with one clear line per mistake.

>>> dev = DevSet.load("data/bible-en-fr/dev.jsonl", "translation", source_field="en", target_field="fr")  # doctest: +SKIP
"""

from ._devset import DEFAULT_FIELDS, TASKS, DevSet

__all__ = ["DEFAULT_FIELDS", "DevSet", "TASKS"]
