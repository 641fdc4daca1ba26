"""One-block edits of a plan and one-point crossover of two plans: the moves a structure-aware search makes.

Each edit changes one stack over one contiguous stretch of layers that starts and ends on block boundaries of
the plan, and the result is always a plan of the space (modules the space has, drops only when it allows them,
never a stack with every layer dropped). The edits, by name:

- ``drop`` / ``keep``: drop an original layer, or put a dropped one back;
- ``merge``: one module of the space over a block-aligned stretch that several blocks fill now (a run of layers
  becomes a module; a module widens over its neighbour; two modules become one; a drop and the layers beside it
  become a module: the "swap a drop for a module" move);
- ``split``: a module becomes two pieces (modules of the space, or single layers or drops), or all its layers;
- ``shift``: a module moves to the nearest start of the same span the space has, over layers or drops; the
  layers it leaves become original layers again.

>>> space = PlanSpace([4], [{(0, 1), (1, 2), (2, 3)}])
>>> sorted(str(p) for p, kind in neighbours(AssemblyPlan.parse("0-1,2,3"), space) if kind == "shift")
['0,1-2,3']
>>> [str(p) for p in crossovers(AssemblyPlan.parse("0-1,2,3"), AssemblyPlan.parse("0,1,2-3"))]
['0-1,2-3']
"""

from __future__ import annotations

from collections.abc import Iterator

from ._plan import DROP, LAYER, MODULE, AssemblyPlan, Block, PlanSpace

__all__ = ["EDITS", "crossovers", "edit_window", "neighbours"]

#: The kinds of edit :func:`neighbours` makes.
EDITS = ("drop", "keep", "merge", "split", "shift")


def _replace(plan: AssemblyPlan, s: int, a: int, b: int, new: tuple[Block, ...]) -> AssemblyPlan:
    """``plan`` with blocks ``a..b`` (indices) of stack ``s`` replaced by ``new``."""
    blocks = plan.stacks[s]
    stacks = list(plan.stacks)
    stacks[s] = blocks[:a] + new + blocks[b + 1:]
    return AssemblyPlan(tuple(stacks))


def _pieces(i: int, j: int, spans: set, drops: bool) -> list[Block]:
    """The blocks of the space that cover exactly layers ``i..j``."""
    if i == j:
        return [Block(i, i, LAYER)] + ([Block(i, i, DROP)] if drops else [])
    return [Block(i, j, MODULE)] if (i, j) in spans else []


def _stack_edits(plan: AssemblyPlan, s: int, space: PlanSpace) -> Iterator[tuple[AssemblyPlan, str]]:
    blocks, spans, drops = plan.stacks[s], space.modules[s], space.drops
    starts = {b.start: x for x, b in enumerate(blocks)}
    ends = {b.end: x for x, b in enumerate(blocks)}
    for x, b in enumerate(blocks):
        if b.kind == LAYER and drops:
            yield _replace(plan, s, x, x, (Block(b.start, b.start, DROP),)), "drop"
        elif b.kind == DROP:
            yield _replace(plan, s, x, x, (Block(b.start, b.start, LAYER),)), "keep"
        elif b.kind == MODULE:
            for m in range(b.start, b.end):  # split after layer m
                for left in _pieces(b.start, m, spans, drops):
                    for right in _pieces(m + 1, b.end, spans, drops):
                        yield _replace(plan, s, x, x, (left, right)), "split"
            if b.span > 2:
                yield _replace(plan, s, x, x, tuple(Block(p, p, LAYER) for p in range(b.start, b.end + 1))), "split"
            for step in (1, -1):  # the nearest start of the same span in each direction
                i = b.start + step
                while 0 <= i and i + b.span - 1 < space.depths[s] and (i, i + b.span - 1) not in spans:
                    i += step
                j = i + b.span - 1
                if i < 0 or j >= space.depths[s]:
                    continue
                lo, hi = min(i, b.start), max(j, b.end)
                if lo not in starts or hi not in ends:
                    continue
                covered = [c for c in blocks[starts[lo]:ends[hi] + 1] if c != b]
                if any(c.kind == MODULE for c in covered):
                    continue  # a single-layer stretch only: moving over a module is two edits
                new = (tuple(Block(p, p, LAYER) for p in range(lo, i)) + (Block(i, j, MODULE),)
                       + tuple(Block(p, p, LAYER) for p in range(j + 1, hi + 1)))
                yield _replace(plan, s, starts[lo], ends[hi], new), "shift"
    for i, j in sorted(spans):
        if i in starts and j in ends and starts[i] != ends[j]:
            yield _replace(plan, s, starts[i], ends[j], (Block(i, j, MODULE),)), "merge"


def neighbours(plan: AssemblyPlan, space: PlanSpace) -> list[tuple[AssemblyPlan, str]]:
    """Every plan of ``space`` one edit away from ``plan`` (see the module docstring), with the edit's name;
    each listed once, ``plan`` itself never."""
    out, seen = [], {str(plan)}
    for s in range(len(plan.stacks)):
        for child, kind in _stack_edits(plan, s, space):
            key = str(child)
            if key not in seen and all(any(b.kind != DROP for b in st) for st in child.stacks):
                seen.add(key)
                out.append((child, kind))
    return out


def crossovers(a: AssemblyPlan, b: AssemblyPlan) -> list[AssemblyPlan]:
    """One-point crossovers on block boundaries: ``a`` up to a cut, ``b`` after it, where the cut is a boundary
    of both plans (between stacks, or between layers where a block of each plan starts); each plan listed once,
    neither parent. Both parents being plans of one space, so is every child (blocks come from one parent or
    the other); a child with a stack of drops only is left out."""
    out, seen = [], {str(a), str(b)}
    for s in range(len(a.stacks)):
        cuts = sorted({x.start for x in a.stacks[s]} & {y.start for y in b.stacks[s]})
        for c in cuts:  # c == 0: the stacks before s from a, s onward from b
            if s == 0 and c == 0:
                continue
            stack = tuple(x for x in a.stacks[s] if x.start < c) + tuple(y for y in b.stacks[s] if y.start >= c)
            child = AssemblyPlan(a.stacks[:s] + (stack,) + b.stacks[s + 1:])
            key = str(child)
            if key not in seen and all(any(x.kind != DROP for x in st) for st in child.stacks):
                seen.add(key)
                out.append(child)
    return out


def edit_window(a: AssemblyPlan, b: AssemblyPlan) -> tuple[int, int, int] | None:
    """Where two plans differ, when it is one stretch of one stack: ``(stack, first layer, last layer)``, the
    smallest stretch on block boundaries of both outside which they agree. None when they are equal or differ
    in more than one stack."""
    differ = [s for s, (x, y) in enumerate(zip(a.stacks, b.stacks)) if x != y]
    if len(differ) != 1:
        return None
    s = differ[0]
    xa, xb = set(a.stacks[s]), set(b.stacks[s])
    changed = (xa ^ xb)
    return s, min(c.start for c in changed), max(c.end for c in changed)
