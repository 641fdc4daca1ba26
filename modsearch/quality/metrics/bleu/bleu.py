"""BLEU through sacrebleu, as an offline ``evaluate`` metric module.

``evaluate.load("bleu")`` and ``evaluate.load("sacrebleu")`` fetch their scripts from the Hugging Face Hub and
fail offline; this module is sacreBLEU's corpus BLEU, shipped with modsearch and loaded from its directory:

>>> import evaluate                                                                # doctest: +SKIP
>>> bleu = evaluate.load("path/to/modsearch/metrics/bleu")                         # doctest: +SKIP
>>> bleu.compute(predictions=["the cat sat"], references=["the cat sat"])["score"] # doctest: +SKIP
100.0

modsearch's ``load_metric("bleu")`` resolves that path for you. Its primary score, the one a search maximises,
is ``score`` (0..100, sacreBLEU's scale, not the 0..1 of evaluate's Hub "bleu"). The values equal
``sacrebleu.corpus_bleu`` on the same input.

evaluate scans this file's imports to check its dependencies: keep one import per line.
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

_CITATION = """\
@inproceedings{papineni-etal-2002-bleu,
    title = "{B}leu: a Method for Automatic Evaluation of Machine Translation",
    author = "Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing",
    booktitle = "Proceedings of the 40th Annual Meeting of the Association for Computational Linguistics",
    year = "2002",
    address = "Philadelphia, Pennsylvania, USA",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/P02-1040",
    pages = "311--318",
}
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    address = "Brussels, Belgium",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W18-6319",
    pages = "186--191",
}
"""

_DESCRIPTION = """\
BLEU is the geometric mean of modified word n-gram precisions (n = 1..4) times a brevity penalty, computed over
the whole corpus. sacreBLEU fixes the tokenisation (13a by default) so that scores are comparable between
papers. Sentence-level BLEU is noisy; use it on a corpus of at least a few hundred sentences.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one hypothesis per example.
    references (list of str, or list of list of str): the reference(s) of each example. With several
        references, every example must have the same number of them.
    tokenize (str): sacreBLEU tokeniser: '13a' (default), 'intl', 'char', 'zh', 'ja-mecab', 'none', ...
    lowercase (bool): compare case-insensitively (default False).
    smooth_method (str): 'exp' (default), 'floor', 'add-k' or 'none'.
    smooth_value (float): the value for 'floor' and 'add-k' smoothing.
    use_effective_order (bool): drop n-gram orders with no matches (for sentence-level use; default False).

Returns:
    score (float): BLEU in 0..100; higher is better. The primary score.
    counts, totals (list of int): matched and total n-grams per order.
    precisions (list of float): n-gram precisions in 0..100.
    bp (float): brevity penalty. sys_len, ref_len (int): hypothesis and reference lengths in tokens.

Examples:
    >>> bleu = evaluate.load("modsearch/metrics/bleu")                                       # doctest: +SKIP
    >>> bleu.compute(predictions=["il est venu hier"], references=[["il est venu hier"]])["score"]  # doctest: +SKIP
    100.0
"""


def _by_reference_position(references):
    """evaluate gives references per example; sacrebleu wants one stream per reference position."""
    if references and isinstance(references[0], str):
        return [list(references)]
    width = len(references[0]) if references else 1
    if any(len(refs) != width for refs in references):
        raise ValueError("BLEU through sacrebleu needs the same number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    """sacreBLEU corpus BLEU (primary score: ``score``, 0..100, higher is better)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            features=[
                datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                   "references": datasets.Sequence(datasets.Value("string", id="sequence"),
                                                                   id="references")}),
                datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                   "references": datasets.Value("string", id="sequence")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/P02-1040", "https://aclanthology.org/W18-6319"],
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False, smooth_method="exp",
                 smooth_value=None, use_effective_order=False):
        # The BLEU class is what sacrebleu.corpus_bleu builds; the arguments map one to one.
        bleu = BLEU(lowercase=lowercase, tokenize=tokenize, smooth_method=smooth_method, smooth_value=smooth_value,
                    effective_order=use_effective_order)
        out = bleu.corpus_score(list(predictions), _by_reference_position(references))
        return {"score": out.score, "counts": list(out.counts), "totals": list(out.totals),
                "precisions": list(out.precisions), "bp": out.bp, "sys_len": out.sys_len, "ref_len": out.ref_len}
