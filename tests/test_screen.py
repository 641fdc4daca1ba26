"""The multi-fidelity screen: where the cheap fidelity is exact it never prunes a plan the full score would put
on the front; seeds are never screened; a screened plan is a pruned trial with its cheap figure that counts
toward n_trials and not toward n_plans; the evolve sampler and the screen run under `modsearch search`."""

import json

import pytest

import tiny
from modsearch import LayerBank
from modsearch.quality import QualityTask, score_plan
from modsearch.search import StudyConfig, run_search
from modsearch.search._surrogate import ESTIMATES_ATTR, OBJECTIVE_ESTIMATES_ATTR

TEXTS = ["the a of and to in is that for it", "with as was on be by this are at from or an",
         "which his her the of a and", "le la les de et un une des en du est que", "pour dans qui par sur au",
         "avec il elle ne pas the a of"]


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("screen")
    tiny.save_tiny("llama", str(root / "model"), dec=6)
    LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2, 3], starts="all")
    with open(root / "dev.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in TEXTS)
    return root


LM = ('target = "cpu-1t-b1-lm"', '[data]\npath = "dev.jsonl"\ntext_field = "text"\n[task]\ntask = "lm"\nmetric = "perplexity"')
SEQ2SEQ = ('target = "cpu-1t-b1"', '[data]\npath = "dev.jsonl"\nsource_field = "en"\ntarget_field = "fr"\n'
                                   '[task]\nmetric = "token_accuracy"')


def _study(root, name, windows, margin=0.0, budget="n_trials = 24", sampler="evolve", kind=LM,
           objectives='["quality", "params"]', constraints='["quality <= 40 * teacher"]', extra=""):
    p = root / f"{name}.toml"
    p.write_text(f"""bank = "bank"
{kind[0]}
objectives = {objectives}
constraints = {constraints}
{extra}
[screen]
windows = {windows}
margin = {margin}
[seeds]
strategies = ["teacher", "uniform"]
[sampler]
name = "{sampler}"
[budget]
{budget}
{kind[1]}
""")
    return StudyConfig.load(str(p))


def test_an_exact_screen_never_prunes_a_plan_the_full_score_puts_on_the_front(lm_setup):
    # Every dev text in the screen, no cut: the cheap perplexity is the full score, so with margin 0 a plan is
    # screened only when a front plan of lower or equal cost is strictly better, i.e. dominates it.
    cfg = _study(lm_setup, "exact", windows=len(TEXTS))
    result = run_search(cfg, progress=False, log=None)
    trials = result.study.trials
    screened = [t for t in trials if t.state.name == "PRUNED"]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert screened, "the case must screen something to show anything"
    bank = LayerBank.load(cfg.bank)
    task = QualityTask("lm", metric="perplexity")
    dev = cfg.load_devset()
    for t in screened:
        a = t.user_attrs
        assert a["screened"] and a["strategy"] == "sampler" and a["screened_by"] and a["screen_perplexity"] > 0
        # What the sampler's objective model learns from it: the estimate as its quality, its params unknown.
        assert a[OBJECTIVE_ESTIMATES_ATTR] == [a["screen_estimate"], None]
        full = score_plan(bank, a["plan"], dev, task).value
        assert full == pytest.approx(a["screen_perplexity"], rel=1e-5)
        params = bank.describe_plan(bank.plan(a["plan"]))["params"]
        # Dominated by a complete feasible trial in the full figures: it could not be on the front.
        assert any(d.user_attrs["feasible"] and d.values[0] < full and d.values[1] <= params for d in done), a["plan"]
    # The baselines are screened by the constraints alone, which they meet here; screened trials count toward
    # n_trials.
    assert all(t.user_attrs["strategy"] == "sampler" for t in screened)
    assert len(trials) == result.n_trials == 24
    assert result.evaluations["screen_screened"] == len(screened)
    plans = [t.user_attrs["plan"] for t in trials]
    assert len(plans) == len(set(plans))  # the sampler never proposed a screened plan again


def test_an_exact_screen_screens_exactly_the_plans_that_break_the_constraint(lm_setup):
    # (The tiny random model's plans sit near its teacher's perplexity: a bound below the teacher splits them.)
    # Exact fidelity, margin 0: the estimate of a plan's perplexity is its full score, so a plan is screened by
    # the constraint exactly when it is infeasible: every screened one breaks it and no scored proposal does.
    cfg = _study(lm_setup, "exact-constraint", windows=len(TEXTS), constraints='["quality <= 0.99 * teacher"]',
                 extra='cache = "cache-exact-constraint"')  # its own cache: no baseline is served from another's
    result = run_search(cfg, progress=False, log=None)
    trials = result.study.trials
    bank = LayerBank.load(cfg.bank)
    task = QualityTask("lm", metric="perplexity")
    dev = cfg.load_devset()
    teacher = score_plan(bank, bank.teacher_plan(), dev, task).value
    by_constraint = [t for t in trials if str(t.user_attrs.get("screened_by", "")).startswith("constraint ")]
    assert by_constraint, "the case must screen something by the constraint to show anything"
    for t in by_constraint:
        a = t.user_attrs
        assert a["screened_by"] == "constraint quality <= 0.99 * teacher" and t.state.name == "PRUNED"
        full = score_plan(bank, a["plan"], dev, task).value
        assert full == pytest.approx(a["screen_estimate"], rel=1e-5) and full > 0.99 * teacher
        # What the sampler's constraint model learns from the screened plan: its violation, from the estimate.
        assert a[ESTIMATES_ATTR] == {"quality <= 0.99 * teacher": pytest.approx(full - 0.99 * teacher, abs=1e-4 * full)}
    # The baselines too are screened by the constraint, and exactly those that break it; never the teacher.
    uniform = [t for t in trials if t.user_attrs.get("strategy") == "uniform"]
    assert uniform and any(t.state.name == "PRUNED" for t in uniform)
    for t in uniform:
        assert (t.state.name == "PRUNED") == (score_plan(bank, t.user_attrs["plan"], dev, task).value > 0.99 * teacher)
    assert next(t for t in trials if t.user_attrs.get("strategy") == "teacher").state.name == "COMPLETE"
    scored = [t for t in trials if t.state.name == "COMPLETE" and t.user_attrs["strategy"] == "sampler"
              and not t.user_attrs["cached"]]
    assert scored and all(t.user_attrs["feasible"] for t in scored)
    assert result.evaluations["screen_screened_infeasible"] == len(by_constraint)


def test_a_cheap_screen_and_an_n_plans_budget(lm_setup):
    # Two texts, the first 4 tokens of each: a real low fidelity. n_plans counts fully scored plans only.
    cfg = _study(lm_setup, "cheap", windows=2, margin=0.05, budget="n_plans = 14")
    cfg.task["max_source_tokens"] = 4
    result = run_search(cfg, progress=False, log=None)
    trials = result.study.trials
    assert sum(t.state.name == "COMPLETE" for t in trials) == result.n_plans == 14
    for t in trials:
        if t.state.name == "PRUNED":
            assert t.user_attrs["screened"] and "screen_perplexity" in t.user_attrs
        elif t.user_attrs["strategy"] == "sampler" and not t.user_attrs["cached"]:
            assert "screen_perplexity" in t.user_attrs  # passed the screen, then fully scored


def test_the_screen_runs_on_a_seq2seq_bank_with_another_sampler(tmp_path):
    tiny.translation_bank(tmp_path)
    cfg = _study(tmp_path, "s2s", windows=3, margin=0.05, budget="n_trials = 10", sampler="nsga2", kind=SEQ2SEQ,
                 objectives='["quality", "flops"]', constraints="[]")
    result = run_search(cfg, progress=False, log=None)
    assert result.n_trials == 10
    assert result.evaluations["screen_passed"] + result.evaluations.get("screen_screened", 0) >= 1
