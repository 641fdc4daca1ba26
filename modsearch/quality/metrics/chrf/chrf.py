"""chrF (and chrF++) through sacrebleu, as an offline ``evaluate`` metric module.

``evaluate.load("chrf")`` fetches its script from the Hugging Face Hub and fails offline; this module is the
same metric, shipped with modsearch and loaded from its directory:

>>> import evaluate                                                         # doctest: +SKIP
>>> chrf = evaluate.load("path/to/modsearch/metrics/chrf")                  # doctest: +SKIP
>>> chrf.compute(predictions=["le chat"], references=["le chat"])["score"]  # doctest: +SKIP
100.0

modsearch's ``load_metric("chrf")`` resolves that path for you. Its primary score, the one a search maximises,
is ``score`` (0..100). The values equal ``sacrebleu.corpus_chrf`` on the same input.

evaluate scans this file's imports to check its dependencies: keep one import per line.
"""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    address = "Lisbon, Portugal",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W15-3049",
    pages = "392--395",
}
@inproceedings{popovic-2017-chrf,
    title = "chr{F}++: words helping character n-grams",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Second Conference on Machine Translation",
    year = "2017",
    address = "Copenhagen, Denmark",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W17-4770",
    pages = "612--618",
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
chrF is the F-score of character n-gram matches between a hypothesis and its reference(s), averaged over
n-gram orders 1..6 with recall weighted beta times as much as precision. chrF++ adds word n-grams (word_order=2).
It is robust for morphologically rich target languages and for small models whose output is far from the
reference, where BLEU is often zero. Computed by sacrebleu at corpus level (statistics summed over all
sentences, then one F-score), exactly as ``sacrebleu.corpus_chrf``.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one hypothesis per example.
    references (list of str, or list of list of str): the reference(s) of each example. With several
        references, every example must have the same number of them.
    char_order (int): character n-gram order (default 6).
    word_order (int): word n-gram order; 2 gives chrF++ (default 0).
    beta (int): weight of recall relative to precision (default 2).
    lowercase (bool): compare case-insensitively (default False).
    whitespace (bool): keep whitespace inside character n-grams (default False).
    eps_smoothing (bool): epsilon smoothing as in the reference chrF++.py (default False, sacrebleu's default).

Returns:
    score (float): chrF (or chrF++) in 0..100; higher is better. The primary score.
    char_order (int), word_order (int), beta (int): the settings used.

Examples:
    >>> chrf = evaluate.load("modsearch/metrics/chrf")                                  # doctest: +SKIP
    >>> chrf.compute(predictions=["il est venu"], references=[["il est venu"]])["score"] # doctest: +SKIP
    100.0
"""


def _by_reference_position(references):
    """evaluate gives references per example; sacrebleu wants one stream per reference position."""
    if references and isinstance(references[0], str):
        return [list(references)]
    width = len(references[0]) if references else 1
    if any(len(refs) != width for refs in references):
        raise ValueError("chrF through sacrebleu needs the same number of references for every prediction")
    return [[refs[i] for refs in references] for i in range(width)]


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    """chrF / chrF++ (primary score: ``score``, 0..100, higher is better)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            homepage="https://github.com/mjpost/sacrebleu",
            # Two accepted shapes: several references per example, or exactly one.
            features=[
                datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                   "references": datasets.Sequence(datasets.Value("string", id="sequence"),
                                                                   id="references")}),
                datasets.Features({"predictions": datasets.Value("string", id="sequence"),
                                   "references": datasets.Value("string", id="sequence")}),
            ],
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
            reference_urls=["https://aclanthology.org/W15-3049", "https://aclanthology.org/W17-4770"],
        )

    def _compute(self, predictions, references, char_order=CHRF.CHAR_ORDER, word_order=CHRF.WORD_ORDER,
                 beta=CHRF.BETA, lowercase=False, whitespace=False, eps_smoothing=False):
        # The CHRF class is what sacrebleu.corpus_chrf builds; using it directly also gives the lowercase switch.
        chrf = CHRF(char_order=char_order, word_order=word_order, beta=beta, lowercase=lowercase,
                    whitespace=whitespace, eps_smoothing=eps_smoothing)
        out = chrf.corpus_score(list(predictions), _by_reference_position(references))
        return {"score": out.score, "char_order": out.char_order, "word_order": out.word_order, "beta": out.beta}
