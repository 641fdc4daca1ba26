"""The hidden states kept between plans (LayerStates) change no score: every plan a study scores, windowed or
not, through the evaluator or the screen, equals score_plan on the whole assembled plan; the reuse is real
(layers are skipped) wherever the family takes inputs_embeds as the first layer's input, and turns itself off
where it does not (GPT-2 adds its position embeddings to inputs_embeds)."""

import pytest

import tiny
from modsearch import LayerBank
from modsearch.data import DevSet
from modsearch.quality._prefix import LayerStates
from modsearch.quality._score import QualityTask, score_plan, score_quality
from modsearch.search import PlanEvaluator

TEXTS = ["the a of and to in is that for it with as was on be by this are at from or an which his her the of",
         "his her the of and a to in is that for it with as was on be by this are",
         "is that for it with as was on be by this are at from", "and to in is that for it"]

# A study's order: the teacher, then plans that share a beginning with an earlier one, drops and modules mixed.
PLANS = ["0,1,2,3,4,5", "0,1,2,3,4-5", "0,1,2-3,4,5", "0,x1,2,3,4,5", "0,x1,2,3-5", "0,x1,2,3,x4,5",
         "0-1,2,3,4,5", "0,1,2,x3,4-5", "0,1,2,3,4,5"]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3_text", "gpt2"])
def bank(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    tiny.save_tiny(request.param, str(root / "model"), dec=6)
    return LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2, 3], starts="all")


@pytest.mark.parametrize("windows", [True, False])
def test_every_plan_scores_as_if_run_whole(bank, windows):
    task = (QualityTask("lm", metric="perplexity", context_length=8, stride=4, batch_size=3) if windows else
            QualityTask("lm", metric="perplexity", max_source_tokens=12, batch_size=2))
    dev = DevSet.from_lists(TEXTS, task="lm")
    ev = PlanEvaluator(bank, dev, task, scoring_threads=1)
    assert ev.states is not None
    for p in PLANS:
        got = ev.evaluate(p)["quality"]
        assert got == pytest.approx(score_plan(bank, p, dev, task).value, rel=1e-5), p
    counts = ev.states.counts
    if bank.base_model.config.model_type == "gpt2":
        assert not ev.states.usable and counts["disagreed"] == 1
    else:
        assert ev.states.usable and ev.states.checked
        # Every plan after the teacher shares at least its first layer with one before it.
        assert counts["layers_skipped"] >= len(PLANS) - 1
        per_plan = counts["batches"] // len(PLANS)
        assert counts["layers_run"] + counts["layers_skipped"] == per_plan * sum(
            len([b for b in p.split(",") if not b.startswith("x")]) for p in PLANS)


def test_a_store_too_small_for_one_state_keeps_nothing_and_scores_the_same(bank):
    task = QualityTask("lm", metric="perplexity", max_source_tokens=12, batch_size=2)
    dev = DevSet.from_lists(TEXTS, task="lm")
    states = LayerStates(max_bytes=64)
    from modsearch import assemble

    for p in PLANS[:4]:
        model = assemble(bank, p, share_weights=True)
        keys = [b for b in p.split(",") if not b.startswith("x")]
        got = score_quality(model, bank.tokenizer, dev, task,
                            states=states.bind(model, bank.adapter, bank.stack_names[0], keys)).value
        assert got == pytest.approx(score_plan(bank, p, dev, task).value, rel=1e-6)
    assert states.nbytes == 0 and states.counts["layers_skipped"] == 0


def test_the_store_stays_within_its_budget_and_keeps_the_shallow_states(bank):
    """Least recently used out, deepest first within a plan: after a plan, what is left is its shallowest
    states, and the store never holds more than its budget."""
    from modsearch import assemble

    task = QualityTask("lm", metric="perplexity", max_source_tokens=12, batch_size=4)
    dev = DevSet.from_lists(TEXTS, task="lm")
    model = assemble(bank, PLANS[0], share_weights=True)
    keys = PLANS[0].split(",")
    roomy = LayerStates(max_bytes=1 << 30)
    score_quality(model, bank.tokenizer, dev, task, states=roomy.bind(model, bank.adapter, bank.stack_names[0], keys))
    assert len(roomy._store) == 5  # the inputs of layers 1 to 5 (one batch)
    one = roomy.nbytes // 5
    states = LayerStates(max_bytes=2 * one + 1)
    score_quality(model, bank.tokenizer, dev, task, states=states.bind(model, bank.adapter, bank.stack_names[0], keys))
    assert states.nbytes <= 2 * one + 1 and len(states._store) == 2
    assert sorted(len(k[1]) for k in states._store) == [1, 2]  # the inputs of layers 1 and 2
