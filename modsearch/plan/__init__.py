"""Assembly plans: the notation (``0,1-2,3-5/0-1,2,3,x4,5``), the space of a bank's plans (count, sample,
iterate lazily), and the fixed-length genome a sampler searches.

>>> plan = AssemblyPlan.parse("0-1,2,x3/0-2")       # doctest: +SKIP
>>> PlanSpace([6, 6], spans).count()                  # doctest: +SKIP
"""

from ._edits import EDITS, crossovers, edit_window, neighbours
from ._genome import PlanGenome
from ._plan import DROP, LAYER, MODULE, AssemblyPlan, Block, PlanSpace

__all__ = ["DROP", "EDITS", "LAYER", "MODULE", "AssemblyPlan", "Block", "PlanGenome", "PlanSpace", "crossovers", "edit_window",
           "neighbours"]
