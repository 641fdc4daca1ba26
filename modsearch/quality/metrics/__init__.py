"""Quality metrics that work offline: chrF, BLEU and ROUGE ship with modsearch as ``evaluate`` modules.

``evaluate.load("chrf")`` and friends fetch their scripts from the Hugging Face Hub, so they fail on a machine
without network. modsearch ships its own modules (``metrics/chrf/chrf.py``, ``metrics/bleu/bleu.py``,
``metrics/rouge/rouge.py``; sacrebleu and rouge_score do the work) and :func:`load_metric` resolves a name to
them. Any other evaluate id or a local metric directory/script is accepted too.

Each metric has a *primary* score, the one a search maximises (all three are higher-is-better):

=========  ===========  ==========
metric     primary key  range
=========  ===========  ==========
chrf       ``score``    0..100
bleu       ``score``    0..100
rouge      ``rougeL``   0..1
=========  ===========  ==========

>>> chrf = load_metric("chrf")                                                    # doctest: +SKIP
>>> chrf.compute(["il est venu"], ["il est venu"])                                # doctest: +SKIP
{'score': 100.0, 'char_order': 6, 'word_order': 0, 'beta': 2}
>>> chrf.primary                                                                   # doctest: +SKIP
'score'
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..._errors import UserError

__all__ = ["BUILTIN_METRICS", "LoadedMetric", "builtin_metric_path", "load_metric"]

_HERE = os.path.dirname(os.path.abspath(__file__))

#: The shipped modules and their primary score keys.
BUILTIN_METRICS: dict[str, str] = {"chrf": "score", "bleu": "score", "rouge": "rougeL"}
# Names people type for the same thing; evaluate's Hub calls sacreBLEU's BLEU "sacrebleu".
_ALIASES = {"sacrebleu": "bleu", "chrF": "chrf", "chrf++": "chrf"}


def builtin_metric_path(name: str) -> str:
    """The directory of a shipped metric module, for ``evaluate.load(path)``."""
    return os.path.join(_HERE, name)


@dataclass
class LoadedMetric:
    """An ``evaluate`` metric module with the name it was asked by and the key of its primary score.

    ``primary`` is None for a metric modsearch does not know; it is then guessed from the first result (a key
    named like the metric, else ``score``, else the only numeric value).
    """

    name: str
    module: Any
    primary: str | None = None
    kwargs: dict | None = None

    def compute(self, predictions: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]) -> dict:
        result = self.module.compute(predictions=list(predictions), references=list(references),
                                     **(self.kwargs or {}))
        if not isinstance(result, dict):
            raise UserError(f"metric {self.name!r} returned {type(result).__name__}, not a dict of scores")
        if self.primary is None:
            self.primary = _guess_primary(self.name, result)
        elif self.primary not in result:
            raise UserError(f"metric {self.name!r} has no score {self.primary!r} (it returns "
                            f"{', '.join(result) or 'nothing'})")
        return result


def _guess_primary(name: str, result: dict) -> str:
    numeric = [k for k, v in result.items() if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    base = os.path.splitext(os.path.basename(os.path.normpath(name)))[0]
    for key in (base, "score"):
        if key in numeric:
            return key
    if len(numeric) == 1:
        return numeric[0]
    raise UserError(f"metric {name!r} returns several scores ({', '.join(numeric) or 'none numeric'}); "
                    "say which one to maximise with --primary KEY")


def _looks_like_path(name: str) -> bool:
    return os.sep in name or "/" in name or name.startswith(".") or name.endswith(".py")


def load_metric(name_or_path: str, primary: str | None = None, **kwargs) -> LoadedMetric:
    """Load a metric offline: a shipped name (chrf, bleu, rouge), a local module path, or any evaluate id.

    ``kwargs`` are passed to every ``compute()`` (for example ``word_order=2`` for chrF++). A metric that
    cannot be loaded raises :class:`UserError`. ``import evaluate`` takes seconds, so it happens here, lazily.
    """
    name = _ALIASES.get(name_or_path, name_or_path)
    if not isinstance(name, str) or not name.strip():
        raise UserError("empty metric name: use chrf, bleu, rouge, an evaluate id or a metric directory")
    import evaluate

    if name.lower() in BUILTIN_METRICS:
        key = name.lower()
        module = evaluate.load(builtin_metric_path(key), keep_in_memory=True)
        return LoadedMetric(key, module, primary or BUILTIN_METRICS[key], kwargs)
    if os.path.exists(name):
        try:
            module = evaluate.load(name, keep_in_memory=True)
        except Exception as exc:  # evaluate raises many types for a broken module
            raise UserError(f"cannot load metric module {name}: {_first_line(exc)}") from None
        return LoadedMetric(name, module, primary, kwargs)
    if _looks_like_path(name):
        raise UserError(f"metric {name} not found: no such file or directory")
    try:
        module = evaluate.load(name, keep_in_memory=True)
    except Exception as exc:
        raise UserError(f"metric {name!r} cannot be loaded offline ({_first_line(exc)}); use one modsearch ships "
                        f"({', '.join(BUILTIN_METRICS)}), or give the path of a local evaluate metric module") from None
    return LoadedMetric(name, module, primary, kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
