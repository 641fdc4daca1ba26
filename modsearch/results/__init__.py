"""A finished (or running) study read back: its trials, frontier, baselines and hypervolume, whatever storage
it lives in.

>>> res = open_results("studies/bible-en-fr.toml")          # doctest: +SKIP
>>> res.frontier()                                           # doctest: +SKIP
"""

from ._study import BASELINES, COST_AXES, StudyResults, TrialRecord, open_results, quality_label, results_of

__all__ = ["BASELINES", "COST_AXES", "StudyResults", "TrialRecord", "open_results", "quality_label", "results_of"]
