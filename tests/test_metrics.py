"""The shipped metric modules score exactly as sacrebleu and rouge_score do when called directly."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from modsearch import UserError
from modsearch.quality.metrics import load_metric

HYPS = ["Du temps des juges, il y eut une famine dans le pays.",
        "Le nom de cet homme était Élimélec, et sa femme Naomi.",
        "Elle resta avec ses deux fils.",
        ""]
REFS = ["Du temps des juges, il y eut une famine dans le pays.",
        "Le nom de cet homme était Élimélec, celui de sa femme Naomi.",
        "Élimélec, mari de Naomi, mourut, et elle resta avec ses deux fils.",
        "Ils prirent des femmes Moabites."]
REFS2 = ["Au temps des juges, il y eut une famine au pays.", "Cet homme s'appelait Élimélec; sa femme, Naomi.",
         "Elle resta avec ses deux fils.", "Ils épousèrent des Moabites."]


def test_chrf_equals_sacrebleu():
    chrf = load_metric("chrf")
    assert chrf.primary == "score"
    assert chrf.compute(HYPS, REFS)["score"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    both = chrf.compute(HYPS, [[a, b] for a, b in zip(REFS, REFS2)])["score"]
    assert both == sacrebleu.corpus_chrf(HYPS, [REFS, REFS2]).score


def test_chrf_plus_plus_through_compute_arguments():
    chrfpp = load_metric("chrf", word_order=2)
    assert chrfpp.compute(HYPS, REFS)["score"] == sacrebleu.corpus_chrf(HYPS, [REFS], word_order=2).score


def test_bleu_equals_sacrebleu():
    bleu = load_metric("bleu")
    out = bleu.compute(HYPS, REFS)
    direct = sacrebleu.corpus_bleu(HYPS, [REFS])
    assert bleu.primary == "score"
    assert out["score"] == direct.score
    assert out["counts"] == list(direct.counts) and out["bp"] == direct.bp
    assert load_metric("sacrebleu").compute(HYPS, REFS)["score"] == direct.score


def test_rouge_equals_rouge_score_mean_f_measure():
    rouge = load_metric("rouge")
    out = rouge.compute(HYPS, REFS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    direct = [scorer.score(r, h) for h, r in zip(HYPS, REFS)]
    assert rouge.primary == "rougeL"
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert out[key] == pytest.approx(sum(d[key].fmeasure for d in direct) / len(direct), abs=1e-12)


def test_identical_text_scores_the_maximum():
    assert load_metric("chrf").compute(REFS[:3], REFS[:3])["score"] == pytest.approx(100.0)
    assert load_metric("bleu").compute(REFS[:3], REFS[:3])["score"] == pytest.approx(100.0)
    assert load_metric("rouge").compute(REFS[:3], REFS[:3])["rougeL"] == pytest.approx(1.0)


def test_a_local_metric_module_loads_by_path(tmp_path):
    d = tmp_path / "exact"
    d.mkdir()
    (d / "exact.py").write_text(
        "import datasets\nimport evaluate\n\n\n"
        "class Exact(evaluate.Metric):\n"
        "    def _info(self):\n"
        "        return evaluate.MetricInfo(description='exact match', citation='', inputs_description='',\n"
        "            features=datasets.Features({'predictions': datasets.Value('string'),\n"
        "                                        'references': datasets.Value('string')}))\n\n"
        "    def _compute(self, predictions, references):\n"
        "        return {'exact': sum(p == r for p, r in zip(predictions, references)) / len(predictions)}\n")
    metric = load_metric(str(d))
    assert metric.compute(["a", "b"], ["a", "c"]) == {"exact": 0.5}
    assert metric.primary == "exact"  # guessed from the module's name


def test_metrics_that_cannot_load_offline_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="cannot be loaded offline"):
        load_metric("no_such_metric_xyz")
    with pytest.raises(UserError, match="not found"):
        load_metric(str(tmp_path / "missing" / "metric.py"))
