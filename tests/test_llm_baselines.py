"""The layer-pruning baselines a user of an LLM tries first, as seed strategies, each held to an independent
oracle: LLM-Streamline's span choice to the hidden states transformers returns, SLEB's greedy removal to
perplexities computed with transformers' own loss on the assembled models."""

import math

import pytest
import torch

import tiny
from modsearch import LayerBank, UserError, assemble
from modsearch.search._seeds import (BI_FRACTIONS, boundary_similarity, redundant_span, removed_count,
                                     seed_plans, sleb_order)

TEXTS = ["the a of and to in is that", "for it with as was on be by this are at from", "or an which his her"]


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm")
    tiny.save_tiny("llama", str(root / "model"), dec=6)
    return LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2], spans=["1-3", "2-4", "0-3"])


def test_removed_count_takes_at_least_the_share():
    assert [removed_count(f, 18) for f in BI_FRACTIONS] == [3, 5, 6, 9]
    assert [removed_count(f, 6) for f in BI_FRACTIONS] == [1, 2, 2, 3]


def test_boundary_similarity_is_the_cosine_of_the_hidden_states(bank):
    from transformers import AutoModelForCausalLM

    sim = boundary_similarity(bank, TEXTS)
    model = AutoModelForCausalLM.from_pretrained(bank.base_dir, dtype=torch.float32).eval()
    sums, n = torch.zeros(6, 6, dtype=torch.float64), 0
    for text in TEXTS:
        ids = bank.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hs = model(input_ids=ids, output_hidden_states=True).hidden_states
        for a in range(6):  # boundaries 0..5; the 6th comes back normalised from transformers
            for b in range(6):
                sums[a, b] += torch.nn.functional.cosine_similarity(hs[a][0].double(), hs[b][0].double(), dim=-1).sum()
        n += ids.shape[1]
    for a in range(6):
        for b in range(6):
            assert sim[a][b] == pytest.approx(float(sums[a, b]) / n, abs=1e-6)


def test_redundant_span_is_the_most_similar_run():
    sim = [[1.0] * 5 for _ in range(5)]
    sim[0][2], sim[1][3], sim[2][4] = 0.5, 0.9, 0.7
    assert redundant_span(sim, 1) == (1, 2)
    assert redundant_span(sim, 1, allowed={(0, 1), (2, 3)}) == (2, 3)
    with pytest.raises(UserError):
        redundant_span(sim, 1, allowed={(0, 2)})


def test_streamline_seeds_replace_the_most_redundant_span_the_bank_has(bank):
    sim = boundary_similarity(bank, TEXTS)
    seeds = seed_plans(bank, bank.space(), ["streamline"], calibration=TEXTS)
    spans = bank.module_spans()[0]
    assert seeds and all(s == "streamline" for _, s in seeds)
    for plan, _ in seeds:
        modules = [b for b in plan.stacks[0] if b.kind == "module"]
        assert len(modules) == 1 and all(b.kind == "layer" for b in plan.stacks[0] if b not in modules)
        m = modules[0]
        same_length = [(i, j) for i, j in spans if j - i == m.end - m.start]
        assert sim[m.start][m.end + 1] == max(sim[i][j + 1] for i, j in same_length)
    assert {b.end - b.start for p, _ in seeds for b in p.stacks[0] if b.kind == "module"} == {1, 2, 3}


def _hf_perplexity(bank, plan, texts):
    model = assemble(bank, plan)
    total, n = 0.0, 0
    for text in texts:
        ids = bank.tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            total += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    return math.exp(total / n)


def test_sleb_removes_the_layer_whose_removal_hurts_least_each_time(bank):
    order = sleb_order(bank, TEXTS, 2)
    assert len(order) == len(set(order)) == 2
    gone: list[int] = []
    for chosen in order:
        ppl = {i: _hf_perplexity(bank, ",".join(f"x{p}" if p in gone + [i] else str(p) for p in range(6)), TEXTS)
               for i in range(6) if i not in gone}
        assert ppl[chosen] <= min(ppl.values()) * (1 + 1e-4), (chosen, ppl)
        gone.append(chosen)
    seeds = seed_plans(bank, bank.space(), ["sleb"], calibration=TEXTS)
    order3 = sleb_order(bank, TEXTS, 3)
    assert [{b.start for b in p.stacks[0] if b.kind == "drop"} for p, _ in seeds] == \
        [set(order3[:k]) for k in (1, 2, 3)]


def test_llm_strategies_need_a_decoder_only_bank_and_calibration(bank, tmp_path):
    for strategy in ("sleb", "streamline"):
        with pytest.raises(UserError, match="calibration"):
            seed_plans(bank, bank.space(), [strategy])
    tiny.save_tiny("bart", str(tmp_path / "model"), enc=2, dec=2)
    b = LayerBank.init(str(tmp_path / "model"), str(tmp_path / "bank"), granularities=[2])
    with pytest.raises(UserError, match="decoder-only"):
        seed_plans(b, b.space(), ["sleb"], calibration=TEXTS)


def test_bank_init_adds_named_spans_and_refuses_bad_ones(bank, tmp_path):
    assert {(1, 3), (2, 4), (0, 3), (0, 1), (2, 3), (4, 5)} == set(bank.module_spans()[0])
    assert bank.space().contains(bank.plan("0,1-3,4,5"))
    for bad in ("3-3", "4-9", "a-b", "encoder:1-2"):
        with pytest.raises(UserError, match="span"):
            LayerBank.init(bank.base_dir, str(tmp_path / "b"), granularities=[2], spans=[bad])
    assert not (tmp_path / "b").exists()


def test_a_lone_long_module_is_streamline_not_uniform(bank):
    seeds = seed_plans(bank, bank.space(), ["uniform", "streamline"], calibration=TEXTS)
    tags = {}
    for plan, strategy in seeds:
        tags.setdefault(strategy, []).append(sum(b.kind == "module" for b in plan.stacks[0]))
    assert tags["uniform"] and all(n >= 2 for n in tags["uniform"])
    assert tags["streamline"] and all(n == 1 for n in tags["streamline"])


def test_greedy_takes_the_change_with_the_least_perplexity_rise_per_removed_layer(bank):
    from modsearch.search._seeds import greedy_path

    path = greedy_path(bank, TEXTS, 3, spans=bank.module_spans()[0])
    spans = sorted(bank.module_spans()[0])
    current = [str(p) for p in range(6)]
    cur_ppl = _hf_perplexity(bank, ",".join(current), TEXTS)
    gone = 0
    for plan, removed in path:
        options = {}
        for x, b in enumerate(current):
            if b.isdigit():
                options[",".join(current[:x] + [f"x{b}"] + current[x + 1:])] = 1
        for i, j in spans:
            run = [x for x, b in enumerate(current) if b.isdigit() and i <= int(b) <= j]
            if len(run) == j - i + 1:
                options[",".join(current[:run[0]] + [f"{i}-{j}"] + current[run[-1] + 1:])] = j - i
        rise = {p: (math.log(_hf_perplexity(bank, p, TEXTS)) - math.log(cur_ppl)) / k for p, k in options.items()}
        assert rise[str(plan)] <= min(rise.values()) + 1e-4, (str(plan), rise)
        gone += options[str(plan)]
        assert removed == gone
        current = str(plan).split(",")
        cur_ppl = _hf_perplexity(bank, str(plan), TEXTS)
    assert gone >= 3
    seeds = seed_plans(bank, bank.space(), ["greedy"], calibration=TEXTS)
    assert [str(p) for p, _ in seeds] == list(dict.fromkeys(
        str(next(p for p, n in path if n >= k)) for k in (1, 2, 2, 3)))


LONG_TEXTS = ["the a of and to in is that for it with as was on be by this are at from or an which",
              "his her the of and a to in", "is that for it with as was on be by this are at from"]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text", "gpt2"])
def test_prefix_cached_perplexity_equals_scoring_the_whole_plan(family, tmp_path):
    """The oracle for the seeds' prefix cache: each candidate's calibration perplexity, computed from the
    reference plan's recorded layer inputs, equals score_plan's on the whole assembled candidate. GPT-2 adds its
    position embeddings to inputs_embeds, so the first reuse's check turns the cache off there and every
    candidate is scored whole (still equal)."""
    from modsearch.data import DevSet
    from modsearch.plan._plan import DROP, LAYER, MODULE, Block
    from modsearch.quality._prefix import PrefixPerplexity
    from modsearch.quality._score import QualityTask, score_plan

    tiny.save_tiny(family, str(tmp_path / "model"), dec=6)
    b = LayerBank.init(str(tmp_path / "model"), str(tmp_path / "bank"), granularities=[2, 3])
    texts, max_tokens = LONG_TEXTS, 12
    scorer = PrefixPerplexity(b, texts, max_tokens, batch_size=2)
    task = QualityTask("lm", metric="perplexity", max_source_tokens=max_tokens, batch_size=2)
    dev = DevSet.from_lists(texts, task="lm")

    def whole(blocks):
        return score_plan(b, ",".join(str(x) for x in blocks), dev, task).value

    teacher = [Block(p, p, LAYER) for p in range(6)]  # the teacher's plan gives the base model's perplexity
    base = b.base_model.eval()
    nll = n = 0.0
    for t in texts:
        ids = b.tokenizer(t, truncation=True, max_length=max_tokens, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            nll += float(base(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    assert scorer.reference(teacher) == pytest.approx(math.exp(nll / n), rel=1e-4)
    reference = [Block(0, 0, LAYER), Block(1, 1, DROP)] + [Block(p, p, LAYER) for p in range(2, 6)]
    assert scorer.reference(reference) == pytest.approx(whole(reference), rel=1e-5)
    candidates = [(reference[:3] + [Block(3, 3, DROP)] + reference[4:], 3),
                  (reference[:4] + [Block(4, 5, MODULE)], 4),
                  (reference[:2] + [Block(2, 3, MODULE)] + reference[4:], 2),
                  (reference[:3] + [Block(3, 5, MODULE)], 3),
                  (reference[:5] + [Block(5, 5, DROP)], 5)]
    for blocks, _ in candidates:
        assert scorer.candidate(blocks) == pytest.approx(whole(blocks), rel=1e-5), [str(x) for x in blocks]
    assert scorer.cached is (family != "gpt2")
    if family != "gpt2":  # each candidate ran from the layer before its first change, not whole
        assert scorer.states.counts["layers_skipped"] == len(scorer.batches) * sum(
            sum(1 for b in reference[:first] if b.kind != DROP) for _, first in candidates)


def test_streamline_seeds_cover_every_long_module_of_the_bank(tmp_path):
    """A recipe may train LLM-Streamline's modules at depths of its own (SmolLM2's at 1/5 of 30 layers = 6,
    not among the seeds' shares 5, 8, 10, 15): each module removing at least the smallest share is a seed;
    shorter ones are not, and a comparison at given shares keeps to them."""
    from modsearch.search._seeds import pruning_plans

    tiny.save_tiny("llama", str(tmp_path / "model"), dec=12)  # shares 1/6..1/2 of 12 remove 2, 3, 4, 6 layers
    b = LayerBank.init(str(tmp_path / "model"), str(tmp_path / "bank"), granularities=[2], spans=["3-8", "0-3"])
    removed = {str(p): sum(b.end - b.start for b in p.stacks[0] if b.kind == "module")
               for p, _ in seed_plans(b, b.space(), ["streamline"], calibration=TEXTS)}
    assert sorted(removed.values()) == [3, 5] and "0,1,2,3-8,9,10,11" in removed  # no 1-layer (2-span) seed
    assert set(pruning_plans(b, b.space(), "streamline", TEXTS, fractions=[1 / 4, 1 / 2])) == {3}


def test_calibrated_seeds_come_from_the_cache_the_second_time(bank, tmp_path, monkeypatch):
    """The strategies measured on calibration text run once per bank, space and text: a second study takes
    the same plans (and their progress lines) from the cache without calibrating; other text calibrates anew."""
    from modsearch.search import _seeds
    from modsearch.search._cache import EvaluationCache

    calls, real = [], _seeds.pruning_plans
    monkeypatch.setattr(_seeds, "pruning_plans", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    cache, strategies = EvaluationCache(str(tmp_path / "cache")), ["teacher", "sleb", "greedy"]
    first_log, second_log = [], []
    first = seed_plans(bank, bank.space(), strategies, calibration=TEXTS, log=first_log.append, cache=cache)
    assert calls == ["sleb", "greedy"] and first_log
    second = seed_plans(bank, bank.space(), strategies, calibration=TEXTS, log=second_log.append, cache=cache)
    assert calls == ["sleb", "greedy"]  # nothing calibrated again
    assert [(str(p), s) for p, s in second] == [(str(p), s) for p, s in first]
    assert second_log[:-1] == first_log and "from the cache" in second_log[-1]
    uncached = seed_plans(bank, bank.space(), strategies, calibration=TEXTS)  # the oracle: no cache
    assert [(str(p), s) for p, s in first] == [(str(p), s) for p, s in uncached] and len(calls) == 4
    seed_plans(bank, bank.space(), strategies, calibration=TEXTS[:2], cache=cache)
    assert calls[4:] == ["sleb", "greedy"]  # other calibration text: a miss
    seed_plans(bank, bank.space(drops=False), ["greedy"], calibration=TEXTS, cache=cache)
    assert calls[6:] == ["greedy"]  # another space: a miss


def test_a_greedy_path_stopped_after_a_step_goes_on_as_an_uninterrupted_run(bank):
    # The oracle is the uninterrupted run: a path resumed from what on_step handed over after its first step (and
    # after its second) takes the same steps, plan for plan, and reports each step once.
    from modsearch.search._seeds import greedy_path

    spans = bank.module_spans()[0]
    handed: list = []
    whole = greedy_path(bank, TEXTS, 4, spans=spans, on_step=lambda path: handed.append(path))
    assert len(handed) == len(whole) >= 3 and handed[-1] == [(str(p), n) for p, n in whole]
    for k in (1, 2):
        later: list = []
        resumed = greedy_path(bank, TEXTS, 4, spans=spans, resume=handed[k - 1], on_step=later.append)
        assert [(str(p), n) for p, n in resumed] == [(str(p), n) for p, n in whole]
        assert later == handed[k:]
    first: list = []
    order = sleb_order(bank, TEXTS, 3, on_step=first.append)
    assert sleb_order(bank, TEXTS, 3, resume=first[0]) == order


def test_a_greedy_path_over_several_calibration_batches_takes_the_same_steps(bank, monkeypatch):
    # Texts beyond CALIBRATION_BATCH_TOKENS are scored in batches of similar length, not one padded batch; the
    # perplexities (summed over real tokens) and so the steps must not depend on how the texts were batched.
    from modsearch.quality._prefix import PrefixPerplexity
    from modsearch.search import _seeds

    batches, init = [], PrefixPerplexity.__init__

    def counting(self, *args, **kwargs):
        init(self, *args, **kwargs)
        batches.append(len(self.batches))

    monkeypatch.setattr(PrefixPerplexity, "__init__", counting)
    texts = TEXTS + [t + " " + t for t in TEXTS] + ["the of and", "a to in is that for it"]
    one = _seeds.greedy_path(bank, texts, 3, spans=bank.module_spans()[0], max_texts=8, max_tokens=32)
    monkeypatch.setattr(_seeds, "CALIBRATION_BATCH_TOKENS", 64)  # 2 texts of 32 tokens a batch
    several = _seeds.greedy_path(bank, texts, 3, spans=bank.module_spans()[0], max_texts=8, max_tokens=32)
    assert batches == [1, 4]
    assert [(str(p), n) for p, n in several] == [(str(p), n) for p, n in one]
