"""Assembly plans: which block fills each stretch of each stack, in a one-line shell-safe notation.

Notation: stacks separated by ``/`` (encoder first), blocks by ``,``. ``i`` is original layer i, ``i-j`` is the
module covering layers i..j (inclusive), and ``xi`` drops layer i. The blocks tile each stack exactly once.

>>> plan = AssemblyPlan.parse("0,1-2,3-5/0-1,2,3,x4,5")
>>> str(plan)
'0,1-2,3-5/0-1,2,3,x4,5'
>>> plan.depths
(3, 5)

:class:`PlanSpace` counts the plans a bank allows by dynamic programming (instant for 24+24 stacks), lists
them lazily, and samples them uniformly.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .._errors import UserError

LAYER, MODULE, DROP = "layer", "module", "drop"
_BLOCK = re.compile(r"^(?:(x)(\d+)|(\d+)-(\d+)|(\d+))$")


@dataclass(frozen=True, order=True)
class Block:
    """One block of a plan: ``kind`` is ``layer``, ``module`` or ``drop``; it covers layers start..end."""

    start: int
    end: int
    kind: str

    def __str__(self) -> str:
        if self.kind == DROP:
            return f"x{self.start}"
        if self.kind == MODULE:
            return f"{self.start}-{self.end}"
        return str(self.start)

    @property
    def span(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class AssemblyPlan:
    """An assembly plan: for each stack (encoder first), the blocks that tile it in order."""

    stacks: tuple[tuple[Block, ...], ...]

    @classmethod
    def parse(cls, text: str) -> AssemblyPlan:
        """Parse the notation and check that each stack's blocks are contiguous from layer 0.

        Checks that need the bank (stack depths, which modules exist) are done by :meth:`validate`.
        """
        if not isinstance(text, str) or not text.strip():
            raise UserError("empty plan: give blocks like '0,1-2,3/0-1,2,3'")
        text = text.strip()
        stacks = []
        for s, part in enumerate(text.split("/")):
            where = f"plan {text!r}, stack {s + 1}"
            if not part:
                raise UserError(f"{where}: empty stack")
            blocks, expect = [], 0
            for token in part.split(","):
                m = _BLOCK.match(token.strip())
                if not m:
                    raise UserError(f"{where}: cannot read block {token!r} (use i, i-j or xi)")
                if m.group(1):
                    b = Block(int(m.group(2)), int(m.group(2)), DROP)
                elif m.group(3) is not None:
                    i, j = int(m.group(3)), int(m.group(4))
                    if j < i:
                        raise UserError(f"{where}: block '{token}' is a reversed span (write {j}-{i})")
                    if i == j:
                        raise UserError(f"{where}: block '{token}' covers one layer; write it as '{i}'")
                    b = Block(i, j, MODULE)
                else:
                    b = Block(int(m.group(5)), int(m.group(5)), LAYER)
                if b.start > expect:
                    raise UserError(f"{where}: gap before block '{token}': layers {expect}..{b.start - 1} "
                                    "are not covered")
                if b.start < expect:
                    raise UserError(f"{where}: block '{token}' overlaps an earlier block (layer {b.start} "
                                    "is already covered)")
                blocks.append(b)
                expect = b.end + 1
            stacks.append(tuple(blocks))
        return cls(tuple(stacks))

    def __str__(self) -> str:
        return "/".join(",".join(str(b) for b in blocks) for blocks in self.stacks)

    @property
    def depths(self) -> tuple[int, ...]:
        """Number of layers each stack has once assembled (drops contribute nothing)."""
        return tuple(sum(1 for b in blocks if b.kind != DROP) for blocks in self.stacks)

    def validate(self, depths: Sequence[int], modules: Sequence[set[tuple[int, int]]],
                 stack_names: Sequence[str] | None = None) -> AssemblyPlan:
        """Check the plan against a bank's stack depths and the (start, end) spans of its modules."""
        names = stack_names or [f"stack {i + 1}" for i in range(len(depths))]
        if len(self.stacks) != len(depths):
            raise UserError(f"plan {str(self)!r} has {len(self.stacks)} stack(s); the bank has {len(depths)} "
                            f"({', '.join(names)}), separated by '/'")
        for s, (blocks, depth) in enumerate(zip(self.stacks, depths)):
            where = f"plan {str(self)!r}, {names[s]}"
            last = blocks[-1].end
            if last >= depth:
                raise UserError(f"{where}: block '{blocks[-1]}' is out of range (layers 0..{depth - 1})")
            if last < depth - 1:
                raise UserError(f"{where}: layers {last + 1}..{depth - 1} are not covered")
            for b in blocks:
                if b.kind == MODULE and (b.start, b.end) not in modules[s]:
                    have = ", ".join(f"{i}-{j}" for i, j in sorted(modules[s])) or "none"
                    raise UserError(f"{where}: the bank has no module '{b}' (modules here: {have})")
            if all(b.kind == DROP for b in blocks):
                raise UserError(f"{where}: every layer is dropped; keep at least one block")
        return self

    def sources(self) -> tuple[tuple[int, ...], ...]:
        """For each stack, the original layer index whose position each kept block takes (its start)."""
        return tuple(tuple(b.start for b in blocks if b.kind != DROP) for blocks in self.stacks)

    def spans(self) -> tuple[tuple[tuple[int, int], ...], ...]:
        """For each stack, the ``(start, end)`` of the original layers each kept block stands for."""
        return tuple(tuple((b.start, b.end) for b in blocks if b.kind != DROP) for blocks in self.stacks)

    def to_json(self, bank_checksum: str, stack_names: Sequence[str]) -> dict:
        return {
            "plan": str(self),
            "bank_checksum": bank_checksum,
            "stacks": {name: [{"kind": b.kind, "start": b.start, "end": b.end} for b in blocks]
                       for name, blocks in zip(stack_names, self.stacks)},
            "depths": dict(zip(stack_names, self.depths)),
        }

    @classmethod
    def from_json(cls, obj: dict) -> AssemblyPlan:
        if not isinstance(obj, dict) or not isinstance(obj.get("plan"), str):
            raise UserError("plan JSON must be an object with a 'plan' string")
        return cls.parse(obj["plan"])


class PlanSpace:
    """All plans over stacks of the given depths with the given module spans.

    ``drops`` allows dropping single layers. A stack whose every layer is dropped is never a plan.

    >>> space = PlanSpace([6, 6], [{(0, 1), (2, 3), (4, 5)}, {(0, 1), (2, 3), (4, 5)}])
    >>> space.count_per_stack()
    [124, 124]
    """

    def __init__(self, depths: Sequence[int], modules: Sequence[set[tuple[int, int]]], drops: bool = True):
        self.depths = list(depths)
        self.modules = [set(m) for m in modules]
        self.drops = drops
        # _kept[s][p][k]: tilings of layers p..depth-1 of stack s that keep exactly k blocks; _ways[s][p]: all of
        # them (including all-dropped ones).
        self._kept = [self._kept_ways(s) for s in range(len(self.depths))]
        self._ways = [[sum(row) for row in kept] for kept in self._kept]

    def _choices(self, stack: int, p: int) -> list[Block]:
        out = [Block(p, p, LAYER)]
        if self.drops:
            out.append(Block(p, p, DROP))
        out += [Block(i, j, MODULE) for i, j in sorted(self.modules[stack]) if i == p]
        return out

    def count_per_stack(self) -> list[int]:
        return [w[0] - (1 if self.drops else 0) for w in self._ways]

    def count(self) -> int:
        total = 1
        for c in self.count_per_stack():
            total *= c
        return total

    def _stack_plans(self, s: int, p: int = 0) -> Iterator[tuple[Block, ...]]:
        if p == self.depths[s]:
            yield ()
            return
        for b in self._choices(s, p):
            if b.end < self.depths[s]:
                for rest in self._stack_plans(s, b.end + 1):
                    yield (b, *rest)

    def _stack_tilings(self, s: int) -> Iterator[tuple[Block, ...]]:
        return (t for t in self._stack_plans(s) if any(b.kind != DROP for b in t))

    def __iter__(self) -> Iterator[AssemblyPlan]:
        """Every plan, lazily, in a fixed order (the last stack varies fastest). Nothing is materialised:
        ``itertools.product`` would list every tiling of every stack first (4.5·10⁸ for a 24-layer stack)."""
        def combos(s: int) -> Iterator[tuple[tuple[Block, ...], ...]]:
            if s == len(self.depths):
                yield ()
                return
            for tiling in self._stack_tilings(s):
                for rest in combos(s + 1):
                    yield (tiling, *rest)

        for combo in combos(0):
            yield AssemblyPlan(combo)

    def _sample_stack(self, s: int, rng: random.Random) -> tuple[Block, ...]:
        while True:
            p, blocks = 0, []
            ways = self._ways[s]
            while p < self.depths[s]:
                choices = [b for b in self._choices(s, p) if b.end < self.depths[s]]
                weights = [ways[b.end + 1] for b in choices]
                b = rng.choices(choices, weights=weights)[0]
                blocks.append(b)
                p = b.end + 1
            if any(b.kind != DROP for b in blocks):
                return tuple(blocks)

    def sample(self, n: int, seed: int = 0, unique: bool = True) -> list[AssemblyPlan]:
        """``n`` plans drawn uniformly at random (distinct when ``unique``)."""
        total = self.count()
        if unique and n > total:
            raise UserError(f"cannot sample {n} distinct plans from a space of {total}")
        rng = random.Random(seed)
        out, seen = [], set()
        while len(out) < n:
            plan = AssemblyPlan(tuple(self._sample_stack(s, rng) for s in range(len(self.depths))))
            key = str(plan)
            if unique and key in seen:
                continue
            seen.add(key)
            out.append(plan)
        return out

    def _kept_ways(self, s: int) -> list[list[int]]:
        """``ways[p][k]``: tilings of layers p.. of stack ``s`` that keep exactly ``k`` blocks."""
        depth = self.depths[s]
        ways = [[0] * (depth + 1) for _ in range(depth + 1)]
        ways[depth][0] = 1
        for p in range(depth - 1, -1, -1):
            for b in self._choices(s, p):
                if b.end < depth:
                    kept = 0 if b.kind == DROP else 1
                    for k in range(kept, depth + 1):
                        ways[p][k] += ways[b.end + 1][k - kept]
        return ways

    def kept_counts(self) -> list[list[int]]:
        """For each stack, every number of kept blocks some plan of the space has (ascending)."""
        return [[k for k in range(1, d + 1) if self._kept[s][0][k]] for s, d in enumerate(self.depths)]

    def sample_depths(self, depths: Sequence[int], n: int = 1, seed: int = 0) -> list[AssemblyPlan]:
        """``n`` plans drawn uniformly among those whose ``depths`` (kept blocks per stack) are ``depths``
        (not necessarily distinct). Uniform samples bunch around the middle depths; this reaches every depth,
        the shallowest and deepest too. Raises UserError when no plan of the space has those depths."""
        for s, k in enumerate(depths):
            if not 1 <= k <= self.depths[s] or not self._kept[s][0][k]:
                raise UserError(f"no plan of this space keeps {k} block(s) in stack {s + 1}")
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            stacks = []
            for s, k in enumerate(depths):
                p, left, blocks = 0, k, []
                while p < self.depths[s]:
                    choices = [b for b in self._choices(s, p) if b.end < self.depths[s]]
                    rest = [left - (b.kind != DROP) for b in choices]  # blocks still to keep after b
                    weights = [self._kept[s][b.end + 1][r] if r >= 0 else 0 for b, r in zip(choices, rest)]
                    i = rng.choices(range(len(choices)), weights=weights)[0]
                    blocks.append(choices[i])
                    left = rest[i]
                    p = choices[i].end + 1
                stacks.append(tuple(blocks))
            out.append(AssemblyPlan(tuple(stacks)))
        return out

    def contains(self, plan: AssemblyPlan) -> bool:
        try:
            plan.validate(self.depths, self.modules)
        except UserError:
            return False
        return self.drops or all(b.kind != DROP for blocks in plan.stacks for b in blocks)
