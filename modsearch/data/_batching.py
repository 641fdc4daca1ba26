"""Batches of similar lengths: by a token budget (training) or by a count (scoring).

Similar lengths waste little compute on padding. Both orders are deterministic: a resumed training run sees the
batches an uninterrupted one would, and a scored dev set gives the same batches every time.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def length_batches(examples, batch_tokens: int, seed: int) -> list[list[int]]:
    """Length-bucketed batches of about ``batch_tokens`` padded tokens (longest side), in a seeded random order.

    ``examples`` are tuples of token-id lists (source, target). The order depends only on the seed.
    """
    rng = random.Random(seed)
    order = sorted(range(len(examples)), key=lambda i: (max(map(len, examples[i])), rng.random()))
    out, cur, longest = [], [], 0
    for i in order:
        n = max(map(len, examples[i]))
        if cur and max(longest, n) * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        out.append(cur)
    rng.shuffle(out)
    return out


def length_sorted(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Positions grouped into batches of ``batch_size`` similar lengths, longest first (an out-of-memory error
    shows in the first batch rather than after minutes). Ties keep the original order."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]
