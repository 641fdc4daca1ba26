"""Dev and training data: local JSONL/JSON/CSV/TSV files (or a hub id when the network allows) read through
``datasets``, with configurable field names, checked with one clear line per mistake (the one loader, for dev and training data alike), and batched by
similar lengths.

>>> dev = DevSet.load("data/bible-en-fr/dev.jsonl", "translation", source_field="en", target_field="fr")  # doctest: +SKIP
"""

from ._batching import length_batches, length_sorted
from ._devset import DEFAULT_FIELDS, TASKS, DevSet

__all__ = ["DEFAULT_FIELDS", "DevSet", "TASKS", "length_batches", "length_sorted"]
