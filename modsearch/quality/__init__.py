"""Quality of an assembled model on a dev set: generation metrics (chrF, BLEU, ROUGE through the offline
``metrics/`` modules) and teacher-forced ones (loss, perplexity, token accuracy), batched and length-sorted.

``table`` scores every plan of a bank once at a cheap fidelity (teacher-forced, sharing prefixes): a fast path of
the same scoring, checked against :func:`score_plan` before it is used.

>>> task = QualityTask("translation", metric="chrf", source_field="en", target_field="fr")   # doctest: +SKIP
>>> score_plan(bank, "0-1,2-3,4-5/0-2,3-5", task.load_devset("dev.jsonl"), task).scores      # doctest: +SKIP
"""

from ._score import (DEFAULT_METRICS, TEACHER_FORCED, EncoderCache, QualityResult, QualityTask, encode,
                     prediction_rows, score_plan, score_quality)

__all__ = ["DEFAULT_METRICS", "TEACHER_FORCED", "EncoderCache", "QualityResult", "QualityTask", "encode",
           "prediction_rows", "score_plan", "score_quality"]
