"""A fixed-length genome for assembly plans, so that a sampler sees the same parameters in every trial.

A plan is a variable-length structure (a module over layers 2..3 replaces two positions with one block). Asked
for as conditional parameters, Optuna's model-based samplers only model the parameters every trial shares and
silently fall back to random sampling for the rest. The genome avoids that: it has one categorical gene per
layer position of each stack, always the same genes with the same choices:

- ``"L"`` keep the original layer, ``"X"`` drop it (only when drops are allowed),
- ``"M2"``, ``"M3"``... the module of that span starting here (only where the bank has one).

:meth:`PlanGenome.decode` reads a stack left to right: the gene at the current position says which block
starts there, and the genes a module covers are ignored. Every genome decodes to a valid plan (the one repair:
a stack whose every layer is dropped keeps its first layer), and every plan is reachable
(:meth:`PlanGenome.to_params` is its right inverse: ``decode(to_params(plan)) == plan``).

Positions with a single choice (no drop, no module starting there) carry no gene: a one-choice parameter
tells a sampler nothing.

>>> from modsearch.plan import PlanSpace
>>> g = PlanGenome(PlanSpace([4], [{(0, 1), (2, 3)}]), ["decoder"])
>>> g.choices["decoder.0"]
('L', 'X', 'M2')
>>> str(g.decode({"decoder.0": "M2", "decoder.1": "X", "decoder.2": "L", "decoder.3": "X"}))
'0-1,2,x3'
>>> g.to_params(g.decode({"decoder.0": "M2", "decoder.1": "X", "decoder.2": "L", "decoder.3": "X"}))
{'decoder.0': 'M2', 'decoder.1': 'L', 'decoder.2': 'L', 'decoder.3': 'X'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ._plan import DROP, LAYER, MODULE, AssemblyPlan, Block, PlanSpace

KEEP, DROP_GENE = "L", "X"

__all__ = ["PlanGenome"]


class PlanGenome:
    """The genome of a plan space (see the module docstring). ``stack_names`` name the genes."""

    def __init__(self, space: PlanSpace, stack_names: Sequence[str]):
        self.space = space
        self.stack_names = list(stack_names)
        #: gene name -> its choices, in a fixed order (keep, drop, modules by span).
        self.choices: dict[str, tuple[str, ...]] = {}
        # (stack, position) -> {choice: block}; also for positions without a gene (their one block).
        self._blocks: dict[tuple[int, int], dict[str, Block]] = {}
        for s, depth in enumerate(space.depths):
            for p in range(depth):
                opts = {KEEP: Block(p, p, LAYER)}
                if space.drops:
                    opts[DROP_GENE] = Block(p, p, DROP)
                for i, j in sorted(space.modules[s], key=lambda ij: ij[1]):
                    if i == p and j < depth:
                        opts[f"M{j - i + 1}"] = Block(i, j, MODULE)
                self._blocks[(s, p)] = opts
                if len(opts) > 1:
                    self.choices[self.gene(s, p)] = tuple(opts)

    def gene(self, stack: int, position: int) -> str:
        return f"{self.stack_names[stack]}.{position}"

    def __len__(self) -> int:
        return len(self.choices)

    def decode(self, params: Mapping[str, str]) -> AssemblyPlan:
        """The plan a genome stands for. Missing genes read as ``"L"``; unknown choices are a ValueError."""
        stacks = []
        for s, depth in enumerate(self.space.depths):
            blocks, p = [], 0
            while p < depth:
                opts = self._blocks[(s, p)]
                choice = params.get(self.gene(s, p), KEEP)
                if choice not in opts:
                    raise ValueError(f"gene {self.gene(s, p)} has no choice {choice!r} (choices: {tuple(opts)})")
                b = opts[choice]
                blocks.append(b)
                p = b.end + 1
            if all(b.kind == DROP for b in blocks):
                # The repair: an empty stack is no model. Keeping the first layer is deterministic and maps the
                # fewest genomes onto a plan they do not spell.
                blocks[0] = Block(0, 0, LAYER)
            stacks.append(tuple(blocks))
        return AssemblyPlan(tuple(stacks))

    def to_params(self, plan: AssemblyPlan) -> dict[str, str]:
        """A genome that decodes to ``plan`` (covered genes are set to ``"L"``, so it is unique per plan)."""
        params: dict[str, str] = {}
        for s, blocks in enumerate(plan.stacks):
            for b in blocks:
                opts = self._blocks.get((s, b.start), {})
                choice = next((c for c, ob in opts.items() if ob == b), None)
                if choice is None:
                    raise ValueError(f"plan {plan} is outside this genome's space (block {b} of stack {s})")
                for p in range(b.start, b.end + 1):
                    name = self.gene(s, p)
                    if name in self.choices:
                        params[name] = choice if p == b.start else KEEP
        return params

    def suggest(self, trial) -> AssemblyPlan:
        """Ask an Optuna trial for every gene (always all of them, in a fixed order) and decode."""
        return self.decode({name: trial.suggest_categorical(name, list(opts)) for name, opts in self.choices.items()})

    def describe(self) -> dict:
        """JSON-ready description, stored with a study so that readers can decode its trials' params."""
        return {"stacks": self.stack_names, "depths": list(self.space.depths), "drops": self.space.drops,
                "genes": {k: list(v) for k, v in self.choices.items()}}
