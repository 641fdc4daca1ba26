"""ROUGE through Google's rouge_score, as an offline ``evaluate`` metric module.

``evaluate.load("rouge")`` fetches its script from the Hugging Face Hub and fails offline; this module is the
same computation, shipped with modsearch and loaded from its directory:

>>> import evaluate                                                                   # doctest: +SKIP
>>> rouge = evaluate.load("path/to/modsearch/metrics/rouge")                          # doctest: +SKIP
>>> rouge.compute(predictions=["the cat sat"], references=["the cat sat"])["rougeL"]  # doctest: +SKIP
1.0

modsearch's ``load_metric("rouge")`` resolves that path for you. Its primary score, the one a search maximises,
is ``rougeL`` (F-measure in 0..1). Each value is the mean over examples of ``rouge_score``'s F-measure, the
same as evaluate's Hub "rouge" with ``use_aggregator=False`` followed by a mean (no bootstrap resampling, so the
result is deterministic).

evaluate scans this file's imports to check its dependencies: keep one import per line.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    address = "Barcelona, Spain",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W04-1013",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
ROUGE compares a summary with reference summaries by overlapping units: rouge1 and rouge2 count word unigrams
and bigrams, rougeL the longest common subsequence, and rougeLsum the LCS over sentences split at newlines.
Computed by Google's rouge_score package (the reimplementation of the original Perl script), with its
default tokeniser, which keeps ASCII letters and digits only: use it for English summaries.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one summary per example.
    references (list of str, or list of list of str): the reference(s) of each example; with several, each
        example takes the best-scoring one (rouge_score's ``score_multi``).
    rouge_types (list of str): any of 'rouge1'..'rouge9', 'rougeL', 'rougeLsum'
        (default: rouge1, rouge2, rougeL, rougeLsum).
    use_stemmer (bool): Porter-stem words before matching (default False).

Returns:
    One float per rouge type: the mean F-measure over examples, in 0..1; higher is better. ``rougeL`` is the
    primary score.

Examples:
    >>> rouge = evaluate.load("modsearch/metrics/rouge")                              # doctest: +SKIP
    >>> rouge.compute(predictions=["a cat sat here"], references=["a cat sat there"])["rouge1"]  # doctest: +SKIP
    0.75
"""

DEFAULT_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Rouge(evaluate.Metric):
    """ROUGE F-measures (primary score: ``rougeL``, 0..1, higher is better)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/google-research/google-research/tree/master/rouge",
            features=[
                datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                   "references": datasets.Sequence(datasets.Value("string", id="sequence"),
                                                                   id="references")}),
                datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                   "references": datasets.Value("string", id="sequence")}),
            ],
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
            reference_urls=["https://aclanthology.org/W04-1013"],
        )

    def _compute(self, predictions, references, rouge_types=None, use_stemmer=False):
        types = list(rouge_types or DEFAULT_TYPES)
        scorer = rouge_scorer.RougeScorer(rouge_types=types, use_stemmer=use_stemmer)
        totals = {t: 0.0 for t in types}
        for pred, refs in zip(predictions, references):
            if isinstance(refs, str):
                scores = scorer.score(refs, pred)  # rouge_score takes (target, prediction)
            else:
                scores = scorer.score_multi(refs, pred)
            for t in types:
                totals[t] += scores[t].fmeasure
        n = max(len(predictions), 1)
        return {t: totals[t] / n for t in types}
