"""Plan notation, validation, and the plan space (counting, listing, uniform sampling)."""

import collections
import math

import pytest

from modsearch import AssemblyPlan, PlanSpace, UserError

ALIGNED_23 = {(0, 1), (2, 3), (4, 5), (0, 2), (3, 5)}


@pytest.mark.parametrize("text", ["0,1-2,3-5/0-1,2,3,x4,5", "0", "x0,1", "0-5", "0,1,2/x0,x1,2",
                                  "0-2,x3,4-5/0,1,2,3,4,5"])
def test_parse_and_format_round_trip(text):
    assert str(AssemblyPlan.parse(text)) == text


def test_depths_and_sources():
    plan = AssemblyPlan.parse("0,1-2,3-5/0-1,2,3,x4,5")
    assert plan.depths == (3, 4)
    assert plan.sources() == ((0, 1, 3), (0, 2, 3, 5))


@pytest.mark.parametrize("text, fault", [
    ("0,2,3", "gap before block '2'"),
    ("0-2,2,3", "overlaps"),
    ("0,3-1", "reversed span"),
    ("0,1,y2", "cannot read block 'y2'"),
    ("", "empty plan"),
    ("0,1//0", "empty stack"),
    ("0,1-1", "covers one layer"),
])
def test_syntax_faults_are_named(text, fault):
    with pytest.raises(UserError, match=fault):
        AssemblyPlan.parse(text)


@pytest.mark.parametrize("text, fault", [
    ("0,1,2,3,4,5,6", "out of range"),
    ("0,1,2,3", r"layers 4\.\.5 are not covered"),
    ("0,1-2,3,4,5", "no module '1-2'"),
    ("x0,x1,x2,x3,x4,x5", "every layer is dropped"),
    ("0,1,2,3,4,5/0", "2 stack"),
])
def test_bank_level_faults_are_named(text, fault):
    with pytest.raises(UserError, match=fault):
        AssemblyPlan.parse(text).validate([6], [ALIGNED_23])


def test_json_form_names_the_bank():
    plan = AssemblyPlan.parse("0,1-2/0-1")
    obj = plan.to_json("abc123", ["encoder", "decoder"])
    assert obj["bank_checksum"] == "abc123" and obj["plan"] == "0,1-2/0-1"
    assert AssemblyPlan.from_json(obj) == plan


@pytest.mark.parametrize("drops", [True, False])
@pytest.mark.parametrize("depth, spans", [(1, set()), (3, {(0, 1)}), (6, ALIGNED_23),
                                          (5, {(i, j) for i in range(5) for j in range(i + 1, 5)})])
def test_count_equals_enumeration(depth, spans, drops):
    space = PlanSpace([depth, depth], [spans, spans], drops=drops)
    plans = list(space)
    assert len(plans) == space.count() == space.count_per_stack()[0] ** 2
    assert len({str(p) for p in plans}) == len(plans)
    for p in plans:
        p.validate([depth, depth], [spans, spans])


def test_default_sized_space():
    # 6+6 with aligned 2- and 3-layer modules and drops: the ~21,000 plans quoted in the design notes.
    assert PlanSpace([6, 6], [ALIGNED_23, ALIGNED_23]).count() == 145 ** 2


def test_count_of_a_24_plus_24_bank_is_exact():
    spans = {(i, i + k - 1) for k in (2, 3, 4, 6) for i in range(0, 24 - k + 1)}
    space = PlanSpace([24, 24], [spans, spans])
    # Cross-check the DP with an independent recurrence over positions (f(p) = sum of ways after each choice).
    f = [0] * 25
    f[24] = 1
    for p in range(23, -1, -1):
        f[p] = 2 * f[p + 1] + sum(f[j + 1] for i, j in spans if i == p)
    assert space.count() == (f[0] - 1) ** 2
    assert space.count() > 10 ** 15


def test_sampling_is_uniform():
    space = PlanSpace([4], [{(0, 1), (2, 3), (1, 3)}])
    n = space.count()
    draws = space.sample(n * 400, seed=3, unique=False)
    counts = collections.Counter(str(p) for p in draws)
    assert len(counts) == n
    expected = len(draws) / n
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    # 99.9th percentile of chi-square with n-1 dof is well under 3*(n-1)+20 for these sizes.
    assert chi2 < 3 * (n - 1) + 20, chi2


def test_sample_distinct_and_seeded():
    space = PlanSpace([6, 6], [ALIGNED_23, ALIGNED_23])
    a = [str(p) for p in space.sample(50, seed=1)]
    assert len(set(a)) == 50
    assert a == [str(p) for p in space.sample(50, seed=1)]
    assert a != [str(p) for p in space.sample(50, seed=2)]
    with pytest.raises(UserError, match="cannot sample"):
        PlanSpace([1], [set()]).sample(5)


def test_no_drops_space_excludes_drops():
    space = PlanSpace([6], [ALIGNED_23], drops=False)
    assert all("x" not in str(p) for p in space)
    assert space.count() == sum(1 for _ in space)
    assert math.prod(PlanSpace([6], [ALIGNED_23]).count_per_stack()) > space.count()


@pytest.mark.parametrize("drops", [True, False])
def test_sampling_at_given_depths_is_uniform_over_exactly_those_plans(drops):
    space = PlanSpace([5, 4], [{(0, 1), (2, 3), (1, 3), (2, 4)}, {(0, 1), (1, 3)}], drops=drops)
    by_depths = collections.defaultdict(set)
    for p in space:
        by_depths[p.depths].add(str(p))
    assert [sorted({d[s] for d in by_depths}) for s in range(2)] == space.kept_counts()
    for depths, plans in by_depths.items():
        draws = collections.Counter(str(p) for p in space.sample_depths(depths, n=200 * len(plans), seed=5))
        assert set(draws) == plans, depths
        expected = 200
        chi2 = sum((c - expected) ** 2 / expected for c in draws.values())
        assert chi2 < 3 * (len(plans) - 1) + 20, (depths, chi2)
    with pytest.raises(UserError, match="keeps 9 block"):
        space.sample_depths((9, 1))
    if not drops:  # without drops a 4-layer stack with 2- and 3-layer modules keeps at least 2 blocks
        with pytest.raises(UserError, match="keeps 1 block"):
            space.sample_depths((1, 1))


def test_listing_a_deep_space_is_lazy():
    """24+24 layers with modules of span 2, 3, 4 and 6 at every start: 4.5·10⁸ tilings per stack. Listing the
    first plans must not enumerate a stack first (it ran out of memory before)."""
    import itertools

    spans = {(i, i + k - 1) for k in (2, 3, 4, 6) for i in range(0, 24 - k + 1)}
    space = PlanSpace([24, 24], [spans, spans])
    produced = []
    tilings = space._stack_tilings

    def counted(s):
        for t in tilings(s):
            produced.append(s)
            yield t

    space._stack_tilings = counted
    first = list(itertools.islice(space, 5))
    assert len({str(p) for p in first}) == 5
    assert len(produced) < 10  # a handful of tilings were made, not a stack's 4.5·10⁸
    # the lazy order is the product order on a small space, every plan once
    small = PlanSpace([3, 2], [{(0, 1)}, {(0, 1)}])
    tilings = [list(small._stack_tilings(s)) for s in range(2)]
    assert [str(p) for p in small] == [str(AssemblyPlan(c)) for c in itertools.product(*tilings)]
    assert len(list(small)) == small.count()
