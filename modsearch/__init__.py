"""modsearch: compress a transformer by assembling it from a layer bank, searched with multi-objective Optuna.

The package follows the data path: ``bank`` → ``plan`` → ``assemble`` → score → search → report/export.

>>> from modsearch import LayerBank, assemble, export_model           # doctest: +SKIP
>>> bank = LayerBank.load("banks/bible-en-fr")                        # doctest: +SKIP
>>> model = assemble(bank, "0-1,2-3,4-5/0-1,2-3,4-5")                 # doctest: +SKIP
"""

from ._errors import UserError
from ._version import __version__
from .assemble import assemble
from .bank import LayerBank
from .export import export_model
from .plan import AssemblyPlan, Block, PlanSpace

__all__ = [
    "AssemblyPlan",
    "Block",
    "LayerBank",
    "PlanSpace",
    "UserError",
    "__version__",
    "assemble",
    "export_model",
]
