"""Which spans a new bank gets modules for: every k-th (or every) start for each granularity, plus single
spans named by the user."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .._errors import UserError


def module_spans(depth: int, granularities: Iterable[int], starts: str,
                  extra: Iterable[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    spans = []
    for k in sorted(set(granularities)):
        step = k if starts == "aligned" else 1
        spans += [(i, i + k - 1) for i in range(0, depth - k + 1, step)]
    return spans + sorted(set(extra) - set(spans))


def parse_spans(texts: Iterable[str], stacks: Sequence[str], depths: dict) -> dict[str, list[tuple[int, int]]]:
    """``["9-14", "decoder:3-5"]`` -> {stack: [(9, 14), (3, 5)]}, checked against the model's stacks."""
    out: dict[str, list[tuple[int, int]]] = {}
    for text in texts:
        stack, _, rng = text.rpartition(":")
        if not stack and len(stacks) > 1:
            raise UserError(f"span {text!r}: name the stack ({', '.join(stacks)}), e.g. {stacks[-1]}:{text}")
        stack = stack or stacks[0]
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", rng)
        if stack not in stacks or not m:
            raise UserError(f"span {text!r}: expected I-J (STACK:I-J with several stacks; stacks: {', '.join(stacks)})")
        i, j = int(m.group(1)), int(m.group(2))
        if not 0 <= i < j < depths[stack]:
            raise UserError(f"span {text!r}: a module covers layers I < J of the {depths[stack]} in {stack}")
        out.setdefault(stack, []).append((i, j))
    return out
