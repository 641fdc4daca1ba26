"""One offline HTML page per study (or several side by side): frontiers, baselines, the plan diagram, a
sortable table with export commands, hypervolume.

>>> write_report(["studies/bible-en-fr.toml"], "reports/bible-en-fr.html")      # doctest: +SKIP
"""

from ._figures import frontier_figure, headline, hypervolume_figure, plan_diagram
from ._page import build_report, write_report

__all__ = ["build_report", "frontier_figure", "headline", "hypervolume_figure", "plan_diagram", "write_report"]
