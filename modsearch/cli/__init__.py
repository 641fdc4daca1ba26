"""The command line: a thin layer over the Python API, one module per group of verbs.

``modsearch --help`` lists the verbs; ``python -m modsearch`` is the same program.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
