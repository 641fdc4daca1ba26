"""The structure-aware sampler: every proposal is a new, valid plan of the space; an edit stays one block edit
away from a plan of the feasible front; crossovers cut both parents on one boundary; one seed gives one
history; constraint-aware samplers propose fewer infeasible plans than random search."""

import warnings

import optuna
import pytest

from modsearch.plan import EDITS, DROP, MODULE, AssemblyPlan, PlanGenome, PlanSpace, crossovers, edit_window, neighbours
from modsearch.search import CONSTRAINT_AWARE, make_sampler
from modsearch.search._evolve import PROPOSAL_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _aligned(depth, grans):
    return {(i, i + k - 1) for k in grans for i in range(0, depth - k + 1, k)}


# A deep stack like the SmolLM2 bank's: aligned 2- and 3-layer modules plus long LLM-Streamline spans.
DEEP = PlanSpace([30], [_aligned(30, [2, 3]) | {(12, 18), (2, 12), (3, 18)}])
TWO_STACKS = PlanSpace([6, 6], [_aligned(6, [2, 3])] * 2)
NO_DROPS = PlanSpace([8], [_aligned(8, [2, 3]) | {(1, 2)}], drops=False)


def _one_edit(parent: AssemblyPlan, child: AssemblyPlan, kind: str) -> bool:
    """The child differs from the parent over one block-aligned stretch of one stack, and on one side of it
    the stretch is a single block (or, for a shift, the same module span moved over single layers)."""
    where = edit_window(parent, child)
    if where is None:
        return False
    s, lo, hi = where
    a = [b for b in parent.stacks[s] if lo <= b.start and b.end <= hi]
    b = [x for x in child.stacks[s] if lo <= x.start and x.end <= hi]
    if sum(x.end - x.start + 1 for x in a) != hi - lo + 1 or sum(x.end - x.start + 1 for x in b) != hi - lo + 1:
        return False  # not aligned to both plans' blocks
    if kind == "shift":
        ma, mb = [x for x in a if x.kind == MODULE], [x for x in b if x.kind == MODULE]
        return len(ma) == len(mb) == 1 and ma[0].span == mb[0].span
    return len(a) == 1 or len(b) == 1


@pytest.mark.parametrize("space", [DEEP, TWO_STACKS, NO_DROPS], ids=["deep", "two-stacks", "no-drops"])
def test_every_neighbour_is_a_new_valid_plan_one_block_edit_away(space):
    for parent in space.sample(min(40, space.count()), seed=3):
        seen = set()
        for child, kind in neighbours(parent, space):
            assert kind in EDITS and space.contains(child), (parent, child)
            assert str(child) != str(parent) and str(child) not in seen
            seen.add(str(child))
            assert _one_edit(parent, child, kind), (str(parent), str(child), kind)


def test_the_named_edits_do_what_they_say():
    space = PlanSpace([6], [{(0, 1), (1, 2), (2, 3), (0, 2), (3, 5)}])
    got = {(str(c), k) for c, k in neighbours(AssemblyPlan.parse("0-1,2,3,4,5"), space)}
    assert ("0,1-2,3,4,5", "shift") in got                                   # (0,1) -> (1,2)
    assert ("0-2,3,4,5", "merge") in got                                     # widened over layer 2
    assert ("0,1,2,3,4,5", "split") in got and ("x0,1,2,3,4,5", "split") in got  # a module -> layers or a drop
    assert ("0-1,x2,3,4,5", "drop") in got and ("0-1,2,3-5", "merge") in got
    # A drop swapped for a module over the neighbouring run.
    assert ("0-1,2-3,4,5", "merge") in {(str(c), k) for c, k in neighbours(AssemblyPlan.parse("0-1,x2,3,4,5"), space)}
    # No drops in a space without them, no stack of drops only.
    assert all("x" not in str(c) for c, _ in neighbours(AssemblyPlan.parse("0-1,2-3,4,5"), NO_DROPS.__class__(
        [6], [{(0, 1), (2, 3)}], drops=False)))
    assert all(any(b.kind != DROP for b in c.stacks[0]) for c, _ in neighbours(AssemblyPlan.parse("x0,x1,2"),
                                                                                  PlanSpace([3], [set()])))


def test_crossover_cuts_both_parents_on_one_block_boundary():
    for a, b in zip(TWO_STACKS.sample(30, seed=1), TWO_STACKS.sample(30, seed=2)):
        for child in crossovers(a, b):
            assert TWO_STACKS.contains(child) and str(child) not in (str(a), str(b))
            text = str(child)
            # Some cut: a's text up to a block boundary, b's after it.
            assert any(text == str(a)[:i] + str(b)[j:] for i in range(len(str(a)) + 1)
                       for j in range(len(str(b)) + 1) if str(a)[i:i + 1] in (",", "/")
                       and str(b)[j:j + 1] in (",", "/") and str(a)[i] == str(b)[j]), (str(a), str(b), text)


def _objective(genome):
    def objective(trial):
        plan = genome.suggest(trial)
        kept = sum(plan.depths)
        drops = sum(b.kind == DROP for st in plan.stacks for b in st)
        modules = sum(b.kind == MODULE for st in plan.stacks for b in st)
        # A made-up quality: drops hurt more than modules; feasible while at most 4 layers are dropped.
        trial.set_constraint("drops <= 4", drops - 4)
        trial.set_user_attr("plan", str(plan))
        return 3.0 * drops + 0.7 * modules + 0.01 * kept, kept
    return objective


def _run(space, seed, n=80, sampler="evolve", settings=None):
    genome = PlanGenome(space, [f"s{i}" for i in range(len(space.depths))])
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=make_sampler(sampler, settings or {}, seed=seed, genome=genome))
    teacher = AssemblyPlan(tuple(tuple(__import__("modsearch").plan.Block(p, p, "layer") for p in range(d))
                                 for d in space.depths))
    study.enqueue_trial(genome.to_params(teacher))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(_objective(genome), n_trials=n)
    return study


@pytest.mark.parametrize("acquisition", ["hvi", "random"])
@pytest.mark.parametrize("space", [DEEP, TWO_STACKS, NO_DROPS], ids=["deep", "two-stacks", "no-drops"])
def test_every_proposal_is_new_valid_and_an_edit_stays_near_a_feasible_front_plan(space, acquisition):
    study = _run(space, seed=0, n=min(80, space.count()), settings={"acquisition": acquisition})
    seen = set()
    for t in study.trials:
        plan = AssemblyPlan.parse(t.user_attrs["plan"])
        assert space.contains(plan)
        assert str(plan) not in seen, f"trial {t.number} proposed {plan} again"
        seen.add(str(plan))
        prop = t.user_attrs.get(PROPOSAL_ATTR)
        if t.number == 0:
            assert prop is None  # the enqueued seed is not the sampler's
            continue
        before = [u for u in study.trials[:t.number] if all(v <= 0 for v in u.constraints.values())]
        losses = [u.values for u in before]
        front = {before[i].user_attrs["plan"] for i in range(len(before))
                 if not any(all(x <= y for x, y in zip(o, losses[i])) and o != losses[i] for o in losses)}
        rest = [u for u in before if u.user_attrs["plan"] not in front]
        second = {rest[i].user_attrs["plan"] for i in range(len(rest)) if not any(
            all(x <= y for x, y in zip(o.values, rest[i].values)) and o.values != rest[i].values for o in rest)}
        if "predicted" in prop:
            assert acquisition == "hvi" and prop["move"] in (*EDITS, "model-front")
            assert len(prop["predicted"]) == len(t.values)
        if prop["move"] in EDITS and "predicted" in prop:
            # The edit predicted to add the most hypervolume, of a plan of the first two feasible ranks.
            parent = AssemblyPlan.parse(prop["parents"][0])
            assert str(parent) in front | second
            assert (str(plan), prop["move"]) in {(str(c), k) for c, k in neighbours(parent, space)}
        elif prop["move"] == "model-front":
            assert "predicted" in prop and prop["parents"][0] in front | second  # predicted from the nearest
        elif prop["move"] in EDITS:
            parent = AssemblyPlan.parse(prop["parents"][0])
            # Feasible parents only (the teacher is feasible, so there always is one); first rank while it
            # has unknown neighbours.
            assert str(parent) in {u.user_attrs["plan"] for u in before}
            assert _one_edit(parent, plan, prop["move"])
            assert (str(plan), prop["move"]) in {(str(c), k) for c, k in neighbours(parent, space)}
            if str(parent) not in front:  # a later rank: every front plan's neighbours were known already
                assert all(str(c) in seen for f in front for c, _ in neighbours(AssemblyPlan.parse(f), space))
        elif prop["move"] == "crossover":
            assert str(plan) in {str(c) for a, b in [prop["parents"], prop["parents"][::-1]]
                                 for c in crossovers(AssemblyPlan.parse(a), AssemblyPlan.parse(b))}
        else:
            assert prop["move"] == "random"
    moves = [t.user_attrs[PROPOSAL_ATTR]["move"] for t in study.trials[1:]]
    assert sum(m in EDITS or m == "model-front" for m in moves) > len(moves) / 2


def test_one_seed_gives_one_history_and_another_seed_another():
    plans = [[t.user_attrs["plan"] for t in _run(DEEP, seed=s, n=40).trials] for s in (7, 7, 8)]
    assert plans[0] == plans[1] and plans[0] != plans[2]


def test_a_small_space_is_exhausted_without_repeats():
    space = PlanSpace([3], [{(0, 1)}])
    study = _run(space, seed=0, n=space.count())
    assert sorted(t.user_attrs["plan"] for t in study.trials) == sorted(str(p) for p in space)


def test_constraint_aware_samplers_propose_fewer_infeasible_plans_than_random():
    assert set(CONSTRAINT_AWARE) >= {"evolve", "nsga2", "tpe"} and "random" not in CONSTRAINT_AWARE

    def infeasible_share(sampler, settings=None):
        trials = _run(DEEP, seed=0, n=60, sampler=sampler, settings=settings).trials[20:]
        return sum(any(v > 0 for v in t.constraints.values()) for t in trials) / len(trials)

    rand = infeasible_share("random")
    assert infeasible_share("evolve") <= 0.2 < rand
    assert infeasible_share("nsga2", {"population_size": 8}) < rand
    assert infeasible_share("tpe", {"n_startup_trials": 10}) < rand


# -- the constraint model and constraint-aware proposals --------------------------------------------------------

def _factor(b) -> float:
    """A made-up, exactly multiplicative quality: each module or drop multiplies perplexity by its own factor."""
    if b.kind == MODULE:
        return 1.0 + 0.04 * (b.end - b.start + 1) + 0.013 * (b.start % 7)
    if b.kind == DROP:
        return 1.25 + 0.03 * (b.start % 5)
    return 1.0


def _quality(plan) -> float:
    q = 10.0
    for st in plan.stacks:
        for b in st:
            q *= _factor(b)
    return q


def test_the_constraint_model_predicts_unseen_plans_of_seen_blocks_against_the_exact_rule():
    from modsearch.search._surrogate import ConstraintModel

    plans = DEEP.sample(400, seed=3)
    train, test = plans[:300], plans[300:]
    seen = {(b.start, b.end, b.kind) for p in train for st in p.stacks for b in st}
    test = [p for p in test if all((b.start, b.end, b.kind) in seen or b.kind == "layer"
                                   for st in p.stacks for b in st)]
    drops = lambda p: sum(b.kind == DROP for st in p.stacks for b in st)  # noqa: E731
    points = [(str(p), {"q": _quality(p) - 30.0, "drops": drops(p) - 4.0}, [_quality(p), sum(p.depths)])
              for p in train]
    model = ConstraintModel.fit(points)
    assert len(test) > 50
    for p in test:
        got = model.violations(p)
        # The quality constraint is an affine function of the first objective, modelled in log space, where the
        # rule is exactly additive; the drop count is additive as it stands.
        assert got["q"] + 30.0 == pytest.approx(_quality(p), rel=2e-2), str(p)
        assert got["drops"] == pytest.approx(drops(p) - 4.0, abs=2e-2), str(p)
        if abs(_quality(p) - 30.0) > 0.03 * 30.0:
            assert model.feasible(p) == (_quality(p) <= 30.0 and drops(p) <= 4), str(p)
    # From a measured parent, a child one edit away is predicted from the parent's own value and the edit alone.
    parent = train[0]
    for child, _ in neighbours(parent, DEEP)[:20]:
        if all((b.start, b.end, b.kind) in seen or b.kind == "layer" for st in child.stacks for b in st):
            assert model.violations(child, parent)["q"] + 30.0 == pytest.approx(_quality(child), rel=2e-2)


def _quality_objective(genome, bound):
    def objective(trial):
        plan = genome.suggest(trial)
        q = _quality(plan)
        trial.set_constraint(f"quality <= {bound}", q - bound)
        trial.set_user_attr("plan", str(plan))
        return q, sum(plan.depths)
    return objective


def _quality_run(seed: int, settings: dict, n: int = 70, bound: float = 40.0):
    """evolve with ``settings`` on the made-up multiplicative quality against depth, the seeds the teacher and 9
    random plans."""
    genome = PlanGenome(DEEP, ["s0"])
    sampler = make_sampler("evolve", settings, seed=seed, genome=genome)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for p in [",".join(map(str, range(30)))] + [str(x) for x in DEEP.sample(9, seed=seed)]:
        study.enqueue_trial(genome.to_params(AssemblyPlan.parse(p)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(_quality_objective(genome, bound), n_trials=n)
    return study


def _infeasible_share(predict: bool, seed: int, n: int = 90, bound: float = 40.0) -> float:
    # The tournament's random edits: what the constraint model alone changes (the hvi acquisition's own model of
    # the objectives steers off the bound too).
    own = _quality_run(seed, {"predict_constraints": predict, "acquisition": "random"}, n, bound).trials[10:]
    return sum(any(v > 0 for v in t.constraints.values()) for t in own) / len(own)


def test_predicting_the_constraints_cuts_infeasible_proposals():
    # Near the constraint's edge plain edits of the front break it: a multiplicative quality bounded at twice the
    # teacher's, the seeds the teacher and random plans. Same seeds, same start; with the model (the default)
    # the proposals break the bound far less often.
    plain = [_infeasible_share(False, s, n=60, bound=20.0) for s in (0, 1, 2)]
    model = [_infeasible_share(True, s, n=60, bound=20.0) for s in (0, 1, 2)]
    assert max(model) <= 0.05 < min(plain), (plain, model)


# -- the hypervolume-improvement acquisition --------------------------------------------------------------------

def _hv_of(study) -> float:
    from modsearch.search import hypervolume

    pts = [[t.values[0] / 10.0, t.values[1] / 30.0] for t in study.trials
           if t.values is not None and all(v <= 0 for v in t.constraints.values())]
    return hypervolume(pts, [4.4, 1.1])  # quality up to 44 (the bound 40 plus a tenth), depth up to 33 layers


def test_the_hypervolume_acquisition_finds_a_better_front_than_random_edits_at_equal_budget():
    # The made-up multiplicative quality against depth, the same seeds and budget for both: ranking the edits by
    # the hypervolume they are predicted to add finds more of the front than drawing them at random, seed by seed.
    hvi = [_hv_of(_quality_run(s, {"acquisition": "hvi"})) for s in (0, 1, 2)]
    rnd = [_hv_of(_quality_run(s, {"acquisition": "random"})) for s in (0, 1, 2)]
    assert all(a > b for a, b in zip(hvi, rnd)), (hvi, rnd)


def test_an_hvi_edit_is_one_no_measured_plan_dominates_under_the_exact_rule_mostly():
    # The rule is exactly log-additive, so the model's predictions are near exact once a block was measured: most
    # of the acquisition's edits land off the dominated region of what was measured before them.
    study = _quality_run(0, {"acquisition": "hvi"}, n=60)
    landed = []
    for t in study.trials[10:]:
        if t.user_attrs.get(PROPOSAL_ATTR, {}).get("move") not in EDITS:
            continue
        before = [u.values for u in study.trials[:t.number] if all(v <= 0 for v in u.constraints.values())]
        landed.append(not any(all(b <= x for b, x in zip(o, t.values)) for o in before))
    assert len(landed) >= 20 and sum(landed) / len(landed) >= 0.6, landed


def test_the_objective_model_fits_each_objective_on_the_plans_that_have_it():
    # A screened plan has an estimated quality and no measured latency: the quality fit takes it, the latency fit
    # is the fit of the measured plans alone.
    from modsearch.search._surrogate import ObjectiveModel

    plans = DEEP.sample(40, seed=4)
    measured = [(str(p), [_quality(p), float(sum(p.depths))]) for p in plans[:25]]
    screened = [(str(p), [_quality(p), None]) for p in plans[25:]]
    both, alone = ObjectiveModel.fit(measured + screened), ObjectiveModel.fit(measured)
    probe = DEEP.sample(5, seed=9)
    assert [both.predict(p)[1] for p in probe] == [alone.predict(p)[1] for p in probe]
    assert [both.predict(p)[0] for p in probe] != [alone.predict(p)[0] for p in probe]
    assert ObjectiveModel.fit(measured[:2] + screened) is None  # two measured latencies fit nothing


def test_an_unknown_acquisition_is_refused_in_one_line():
    from modsearch._errors import UserError

    with pytest.raises(UserError, match="unknown acquisition 'best'"):
        make_sampler("evolve", {"acquisition": "best"}, seed=0, genome=PlanGenome(DEEP, ["s0"]))


@pytest.mark.parametrize("space", [PlanSpace([7], [_aligned(7, [2, 3]) | {(1, 4)}]),
                                   PlanSpace([4, 4], [_aligned(4, [2]), {(0, 2), (1, 2)}])],
                         ids=["one-stack", "two-stacks"])
def test_the_model_front_is_the_exact_front_of_its_predictions_over_the_space(space):
    # The oracle: every plan of a small space predicted one by one (the additive model without a parent), and the
    # non-dominated set of those predictions taken by brute force. The dynamic programme must give the same set of
    # predicted points (plans of equal predictions are interchangeable, so points are compared, not plans).
    from modsearch.search import pareto_front
    from modsearch.search._surrogate import ObjectiveModel, _dot, _features

    measured = space.sample(25, seed=4)
    model = ObjectiveModel.fit([(str(p), [_quality(p), 3.0 * sum(p.depths) + 0.1 * len(str(p))]) for p in measured])

    def additive(plan) -> tuple:
        return tuple(round(f.back(f.intercept + _dot(f.weights, _features(str(plan)))), 9) for f in model.fits)

    every = list(space)
    preds = [additive(p) for p in every]
    want = {preds[i] for i in pareto_front(preds)}
    got = model.front(space, [1.0, 1.0], cap=10_000)
    assert {additive(p) for p in got} == want and len(got) == len(want)
    assert all(space.contains(p) for p in got)
    # A small cap keeps that many, spread along the front.
    assert 1 <= len(model.front(space, [1.0, 1.0], cap=3)) <= 3
