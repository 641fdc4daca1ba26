"""The committed default bank: intact, complete, and it reproduces the scores its manifest records."""

import os

import pytest

from modsearch import LayerBank
from modsearch.quality import QualityTask, score_plan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANK = os.path.join(REPO, "banks", "bible-en-fr")


@pytest.fixture(scope="module")
def bank():
    return LayerBank.load(BANK)


def test_default_bank_verifies_and_every_module_is_trained(bank):
    assert bank.verify() == []
    assert bank.depths == [6, 6]
    assert {(e.stack, e.start, e.end) for e in bank.modules.values()} == {
        (s, i, j) for s in ("encoder", "decoder") for i, j in [(0, 1), (2, 3), (4, 5), (0, 2), (3, 5)]}
    assert all(e.trained for e in bank.modules.values())
    assert bank.space().count() == 21025
    prov = bank.manifest["provenance"]
    assert prov["storage_dtype"] == "float16"
    assert prov["recipe"]["teacher_curve"], "the teacher's learning curve is recorded"


def test_default_bank_reproduces_its_recorded_dev_losses(bank):
    check = bank.manifest["provenance"]["storage_check"]
    dev = QualityTask("translation", source_field="en", target_field="fr").load_devset(
        os.path.join(REPO, "data", "bible-en-fr", "dev.jsonl"), limit=check["examples"])
    task = QualityTask("translation", metric="loss,token_accuracy", batch_size=50)
    for plan, scores in check["plans"].items():
        got = score_plan(bank, plan, dev, task).scores
        assert got["loss"] == pytest.approx(scores["float16"]["loss"], abs=1e-4), plan
        # Storing the weights in float16 moved no score that matters.
        assert abs(scores["float16"]["loss"] - scores["float32"]["loss"]) < 2e-3, plan
