"""Baselines evaluated before the sampler runs: the teacher, uniform granularities, the paper's speed-first and
size-first ladders, and layer dropping; each tagged with its strategy."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._errors import UserError
from ..plan._plan import DROP, LAYER, MODULE, AssemblyPlan, Block, PlanSpace


def _even_tiling(depth: int, spans: set[tuple[int, int]], n: int) -> tuple[Block, ...] | None:
    """A tiling of a stack into exactly ``n`` blocks (layers and modules, no drops) with the most even spans
    (smallest largest span, then fewest modules, then earliest modules), or None when there is none."""
    best: dict[tuple[int, int], tuple | None] = {}

    def go(p: int, k: int):
        if (p, k) in best:
            return best[(p, k)]
        if p == depth:
            res = ((0, 0), ()) if k == 0 else None
        elif k == 0:
            res = None
        else:
            res = None
            # Modules first: on a tie the earliest position takes the module.
            options = [Block(i, j, MODULE) for i, j in sorted(spans) if i == p] + [Block(p, p, LAYER)]
            for b in options:
                rest = go(b.end + 1, k - 1)
                if rest is None:
                    continue
                (mx, mods), blocks = rest
                score = (max(mx, b.span), mods + (b.kind == MODULE))
                if res is None or score < res[0]:
                    res = (score, (b, *blocks))
        best[(p, k)] = res
        return res

    res = go(0, n)
    return None if res is None else res[1]


def _ladder(depth: int, spans: set[tuple[int, int]]) -> list[tuple[Block, ...]]:
    """The stack compressed step by step: the even tilings with depth-1, depth-2, ... blocks (where they exist)."""
    out = []
    for n in range(depth - 1, 0, -1):
        t = _even_tiling(depth, spans, n)
        if t is not None:
            out.append(t)
    return out


def seed_plans(bank, space: PlanSpace, strategies: Sequence[str],
               calibration: Sequence[str] = (), log=None, cache=None) -> list[tuple[AssemblyPlan, str]]:
    """The baseline plans to evaluate before sampling, each with the strategy that proposed it.

    - ``teacher``: every original layer.
    - ``uniform``: for each module span k the bank has, every stack tiled with k-modules (the rest kept), where
      that places at least two modules.
    - ``speed-first`` (Modular Transformers): compress the decoder first (it runs once per generated token),
      one step at a time with the most even modules, then the encoder.
    - ``size-first`` (Modular Transformers): compress every stack evenly, step by step.
    - ``drop-alternate``: drop every other layer (1, 3, 5...) of every stack.
    - ``drop-one``: each single layer dropped in turn (which single drop hurts least shows in the study).
    - ``block-influence`` (ShortGPT, Men et al. 2024; decoder-only banks): rank layers by Block Influence,
      1 - cos(input, output) on the ``calibration`` texts, and drop the least influential 1/6, 1/4, 1/3 and 1/2
      of them (at least that share: 5 of 18 for a quarter).
    - ``sleb`` (SLEB, Song et al. 2024; decoder-only): drop layers greedily, each time the one whose removal
      gives the lowest perplexity on a few calibration texts, to the same depths.
    - ``greedy`` (decoder-only): SLEB over the bank, modules as well as drops: each step takes the change with
      the smallest rise of calibration log-perplexity per layer removed, to the same depths.
    - ``streamline`` (LLM-Streamline, Chen et al. 2024; decoder-only): replace the most redundant contiguous
      span (the highest cos(input, output)) by one trained module, removing the same shares and, beyond them,
      as many layers as each module of the bank that removes at least the smallest share (a recipe trains
      LLM-Streamline's modules at its own depths: SmolLM2's at 1/5, 1/3, 1/2); only spans the bank has a
      module for.

    A plan proposed by several strategies is listed once, under the first. Plans outside ``space`` (drops
    when drops are off, spans left out) are skipped. ``log`` receives progress lines of the slow ones (SLEB).

    With an :class:`~modsearch.search._cache.EvaluationCache`, the strategies measured on ``calibration``
    (minutes on a deep bank) run once per bank, space, calibration text, software and seeding code: a second
    study over the same bank (another target, a fresh start) takes their plans, and their progress lines,
    from the cache.
    """
    if cache is not None and any(s in CAUSAL_STRATEGIES for s in strategies):
        return _cached_seed_plans(cache, bank, space, strategies, calibration, log)
    depths, spans = list(space.depths), [set(m) for m in space.modules]
    teacher = tuple(tuple(Block(i, i, LAYER) for i in range(d)) for d in depths)
    found: list[tuple[AssemblyPlan, str]] = []
    similarity: list = []

    def sim():  # boundary similarities, measured once whichever strategies need them
        if not similarity:
            similarity.append(boundary_similarity(bank, calibration))
        return similarity[0]

    def add(stacks, strategy):
        plan = AssemblyPlan(tuple(stacks))
        if space.contains(plan) and all(str(plan) != str(p) for p, _ in found):
            found.append((plan, strategy))

    for strategy in strategies:
        if strategy == "teacher":
            add(teacher, strategy)
        elif strategy == "uniform":
            for k in sorted({j - i + 1 for s in spans for i, j in s}):
                stacks = []
                for d, s in zip(depths, spans):
                    blocks, p = [], 0
                    while p < d:
                        b = Block(p, p + k - 1, MODULE) if (p, p + k - 1) in s else Block(p, p, LAYER)
                        blocks.append(b)
                        p = b.end + 1
                    stacks.append(tuple(blocks))
                if sum(b.kind == MODULE for st in stacks for b in st) >= 2:  # a lone long span is no tiling
                    add(stacks, strategy)
        elif strategy == "speed-first":
            ladders = [_ladder(d, s) for d, s in zip(depths, spans)]
            order = list(range(len(depths)))[::-1]  # decoder (last stack) first
            current = list(teacher)
            for s in order:
                for step in ladders[s]:
                    current[s] = step
                    add(current, strategy)
        elif strategy == "size-first":
            ladders = [_ladder(d, s) for d, s in zip(depths, spans)]
            for step in range(max((len(ld) for ld in ladders), default=0)):
                add([ld[min(step, len(ld) - 1)] if ld else t for ld, t in zip(ladders, teacher)], strategy)
        elif strategy == "drop-alternate":
            add([tuple(Block(i, i, DROP if i % 2 else LAYER) for i in range(d)) for d in depths], strategy)
        elif strategy == "drop-one":
            for s, d in enumerate(depths):
                for i in range(d):
                    stacks = list(teacher)
                    stacks[s] = tuple(Block(j, j, DROP if j == i else LAYER) for j in range(d))
                    add(stacks, strategy)
        elif strategy in CAUSAL_STRATEGIES:
            for plan in pruning_plans(bank, space, strategy, calibration, sim, log).values():
                add(plan.stacks, strategy)
        else:
            raise UserError(f"unknown seed strategy {strategy!r}")
    return found


def _cached_seed_plans(cache, bank, space: PlanSpace, strategies, calibration, log):
    import hashlib
    import json

    from .._version import code_hash, software_versions

    key = {"bank": bank.checksum, "strategies": list(strategies),
           "calibration": hashlib.sha256(json.dumps(list(calibration), ensure_ascii=False).encode()).hexdigest(),
           "space": {"depths": space.depths, "modules": [sorted(m) for m in space.modules], "drops": space.drops},
           "software": software_versions(), "code": code_hash("seeds")}
    stored = cache.get("seeds", key)
    try:
        found = [(bank.plan(text), strategy) for text, strategy in stored["plans"]]
        lines = [str(line) for line in stored["log"]]
    except Exception:  # noqa: BLE001 - a miss, or an entry that is not this shape: calibrate again
        found = None
    say = log or (lambda _line: None)
    if found is not None and all(space.contains(p) for p, _ in found):
        for line in lines:
            say(line)
        say(f"baselines: {len(found)} plan(s) from the cache (their calibration ran before)")
        return found
    lines = []

    def record(line: str) -> None:
        lines.append(line)
        say(line)

    found = seed_plans(bank, space, strategies, calibration, log=record)
    cache.put("seeds", key, {"plans": [[str(p), strategy] for p, strategy in found], "log": lines})
    return found


def pruning_plans(bank, space: PlanSpace, strategy: str, calibration: Sequence[str], sim=None,
                  log=None, fractions: Sequence[float] = (), max_texts: int = 4,
                  max_tokens: int = 128, resume=(), on_step=None) -> dict[int, AssemblyPlan]:
    """A decoder-only strategy's plan (``CAUSAL_STRATEGIES``) at each depth of ``fractions`` (default
    :data:`BI_FRACTIONS`), keyed by the layers it removes (fewer keys when a bank has no plan there, or a small
    model maps two shares to one count). ``sim`` returns the boundary similarities (measured on ``calibration``
    when not given), so callers running several strategies measure them once. ``max_texts`` calibration texts
    of at most ``max_tokens`` tokens score each candidate of SLEB and the greedy path (``resume`` and
    ``on_step``: their steps, as in :func:`greedy_path`)."""
    if bank.kind != "causal":
        raise UserError(f"seed strategy {strategy} applies to decoder-only banks")
    if not calibration:
        raise UserError(f"seed strategy {strategy} needs calibration texts (the dev set's)")
    sim = sim or (lambda: boundary_similarity(bank, calibration))
    depth, spans = space.depths[0], set(space.modules[0])
    counts = list(dict.fromkeys(removed_count(frac, depth) for frac in (fractions or BI_FRACTIONS)))

    def layers(a: int, b: int) -> tuple[Block, ...]:
        return tuple(Block(p, p, LAYER) for p in range(a, b))

    def dropped(gone) -> AssemblyPlan:
        return AssemblyPlan((tuple(Block(i, i, DROP if i in gone else LAYER) for i in range(depth)),))

    if strategy == "sleb":
        order = sleb_order(bank, calibration, max(counts), max_texts=max_texts, max_tokens=max_tokens, log=log,
                           resume=resume, on_step=on_step)
        return {k: dropped(set(order[:k])) for k in counts}
    if strategy == "block-influence":
        ranked = sorted(range(depth), key=lambda i: (1.0 - sim()[i][i + 1], i))
        return {k: dropped(set(ranked[:k])) for k in counts}
    if strategy == "greedy":
        path = greedy_path(bank, calibration, max(counts), spans=spans, drops=space.drops, max_texts=max_texts,
                           max_tokens=max_tokens, log=log, resume=resume, on_step=on_step)
        firsts = {k: next((p for p, n in path if n >= k), None) for k in counts}
        return {k: p for k, p in firsts.items() if p is not None}
    if not fractions:  # as seeds: also every longer span the bank holds (a recipe may train other depths)
        counts = sorted(set(counts) | {j - i for i, j in spans if j - i >= min(counts)})
    out = {}  # streamline: one module over the most redundant span the bank has a module for
    for k in counts:
        if any(j - i == k for i, j in spans):
            i, j = redundant_span(sim(), k, allowed=spans)
            out[k] = AssemblyPlan((layers(0, i) + (Block(i, j, MODULE),) + layers(j + 1, depth),))
    return out


#: Seed strategies for decoder-only banks, measured on calibration text.
CAUSAL_STRATEGIES = ("block-influence", "sleb", "streamline", "greedy")
#: The shares of the layers ShortGPT-style seeds drop (the depths the layer-pruning comparison reports).
BI_FRACTIONS = (1 / 6, 1 / 4, 1 / 3, 1 / 2)


def boundary_similarity(bank, texts: Sequence[str], max_texts: int = 32, max_tokens: int = 256) -> list[list[float]]:
    """The mean cosine similarity between the hidden states at every two layer boundaries of a decoder-only
    bank's teacher (see :func:`layer_similarity`)."""
    from ..assembly import assemble

    model = assemble(bank, bank.teacher_plan(), share_weights=True)
    return layer_similarity(model, bank.adapter.layers(model, bank.stack_names[0]), bank.tokenizer, texts,
                            max_texts, max_tokens)


def layer_similarity(model, layers, tok, texts: Sequence[str], max_texts: int = 32,
                     max_tokens: int = 256) -> list[list[float]]:
    """The mean cosine similarity between the hidden states at every two layer boundaries of a decoder-only
    model, over every token of up to ``max_texts`` calibration texts (each truncated to ``max_tokens`` and run
    one at a time: no padding). Boundary ``i`` is what layer ``i`` of ``layers`` receives; boundary ``depth``
    is what the last layer returns (before the final norm). ``sim[i][j]`` for ``i < j`` is how little layers
    ``i..j-1`` change the residual stream together: ShortGPT's Block Influence of layer ``i`` is
    ``1 - sim[i][i + 1]``, LLM-Streamline's redundancy of a span ``i..j-1`` is ``sim[i][j]``."""
    import torch

    n = len(layers) + 1
    sums = torch.zeros(n, n, dtype=torch.float64)
    count = 0
    seen: dict[int, torch.Tensor] = {}

    def pre_hook(i):
        def pre(_m, args, kwargs):
            seen[i] = (args[0] if args else kwargs["hidden_states"]).detach()[0].double()
        return pre

    def post(_m, _args, _kwargs, out):
        seen[n - 1] = (out[0] if isinstance(out, tuple) else out).detach()[0].double()

    handles = [layer.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles.append(layers[-1].register_forward_hook(post, with_kwargs=True))
    try:
        with torch.inference_mode():
            for ids in calibration_passes(model, tok, texts, max_texts, max_tokens):
                unit = torch.nn.functional.normalize(torch.stack([seen[i] for i in range(n)]), dim=-1)
                sums += torch.einsum("atd,btd->ab", unit, unit)
                count += ids.shape[1]
    finally:
        for h in handles:
            h.remove()
    if not count:
        raise UserError("layer similarity: the calibration texts hold no tokens")
    return (sums / count).tolist()


def calibration_passes(model, tok, texts: Sequence[str], max_texts: int | None, max_tokens: int):
    """Run ``model``'s backbone (no LM head) on each of the first ``max_texts`` texts, cut to ``max_tokens``
    tokens, one at a time (no padding); yield each text's ids after its pass, for the caller's hooks to read."""
    for text in list(texts)[:max_texts]:
        ids = tok(text, truncation=True, max_length=max_tokens, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            continue
        model.base_model(input_ids=ids)
        yield ids


def block_influence(bank, texts: Sequence[str], max_texts: int = 32, max_tokens: int = 256) -> list[float]:
    """ShortGPT's Block Influence of each layer of a decoder-only bank's teacher: 1 - the mean cosine similarity
    between the hidden state a layer receives and the one it returns (see :func:`boundary_similarity`). Low =
    the layer changes little, a candidate to drop."""
    sim = boundary_similarity(bank, texts, max_texts, max_tokens)
    return [1.0 - sim[i][i + 1] for i in range(len(sim) - 1)]


def removed_count(frac: float, depth: int) -> int:
    """How many of ``depth`` layers "removing ``frac`` of them" removes: at least that share (4.5 -> 5)."""
    return max(1, math.ceil(frac * depth - 1e-9))


def redundant_span(sim: Sequence[Sequence[float]], removed: int, allowed=None) -> tuple[int, int]:
    """LLM-Streamline's choice: the ``removed + 1`` contiguous layers ``(i, j)`` whose input and output are the
    most similar (one trained layer replaces them, so ``removed`` layers go); the earliest on a tie. ``allowed``
    (a set of spans) limits the choice, e.g. to the spans a bank has modules for."""
    depth = len(sim) - 1
    span = removed + 1
    starts = [a for a in range(depth - span + 1) if allowed is None or (a, a + span - 1) in allowed]
    if not 2 <= span <= depth or not starts:
        raise UserError(f"cannot replace {span} of {depth} layers by one module")
    i = max(starts, key=lambda a: (sim[a][a + span], -a))
    return i, i + span - 1


#: Tokens (texts x their cut) above which SLEB's and the greedy path's calibration texts are scored in several
#: batches of similar length rather than one.
CALIBRATION_BATCH_TOKENS = 16384


def greedy_path(bank, texts: Sequence[str], removals: int, spans=(), drops: bool = True, max_texts: int = 4,
                max_tokens: int = 128, log=None, name: str = "greedy", resume=(),
                on_step=None) -> list[tuple[AssemblyPlan, int]]:
    """Greedy removal on a decoder-only bank, from the teacher: at each step apply the one change with the
    smallest increase of calibration log-perplexity per layer it removes, until ``removals`` layers are gone.
    The changes: drop a kept original layer (with ``drops``), or put the bank's module over a run of kept
    original layers (one of ``spans``). With drops alone this is SLEB (each step removes one layer, the one
    whose removal gives the lowest perplexity). Returns each step's plan with the layers removed so far; costs
    one perplexity evaluation of ``max_texts`` texts of ``max_tokens`` tokens per candidate and step, run only
    from the block the candidate changes (:class:`~modsearch.quality._prefix.PrefixPerplexity`).

    A long calibration can stop and go on: ``on_step(path)`` is called after every step with the path so far as
    ``[(plan, layers removed), ...]`` (plans as text), and ``resume`` (such a path, from the same bank, texts and
    settings) continues it from its last step, as an uninterrupted run would."""
    from ..quality._prefix import PrefixPerplexity

    # All texts in one batch while they fit CALIBRATION_BATCH_TOKENS, else batches of similar length: one batch of
    # 40 chapters padded to the longest did more than twice the work of their real tokens.
    batch = max(1, min(max_texts, CALIBRATION_BATCH_TOKENS // max(1, max_tokens)))
    scorer = PrefixPerplexity(bank, list(texts)[:max_texts], max_tokens, batch_size=batch)
    path = [(bank.plan(p), int(n)) for p, n in resume]
    cur = list(path[-1][0].stacks[0]) if path else [Block(p, p, LAYER) for p in range(bank.depths[0])]
    cur_ppl, gone = scorer.reference(cur), path[-1][1] if path else 0
    if path and log:
        log(f"{name}: resumed at {gone}/{removals} layers removed: {path[-1][0]}")
    while gone < removals and sum(b.kind != DROP for b in cur) > 1:
        candidates = []  # (blocks, layers removed)
        for x, b in enumerate(cur):
            if drops and b.kind == LAYER:
                candidates.append((cur[:x] + [Block(b.start, b.start, DROP)] + cur[x + 1:], 1))
        for i, j in sorted(spans):
            run = [x for x, b in enumerate(cur) if i <= b.start <= j]
            if len(run) == j - i + 1 and all(cur[x].kind == LAYER for x in run):
                candidates.append((cur[:run[0]] + [Block(i, j, MODULE)] + cur[run[-1] + 1:], j - i))
        if not candidates:
            break
        best = None
        for blocks, k in candidates:
            value = scorer.candidate(blocks)
            score = (math.log(value) - math.log(cur_ppl)) / k
            if best is None or score < best[0]:
                best = (score, value, blocks, k)
        _, cur_ppl, cur, k = best
        scorer.reference(cur)  # the next step's candidates start from this plan's layer inputs
        gone += k
        path.append((AssemblyPlan((tuple(cur),)), gone))
        if log:
            log(f"{name}: {gone}/{removals} layers removed: {path[-1][0]} (calibration perplexity {cur_ppl:.2f})")
        if on_step:
            on_step([(str(p), n) for p, n in path])
    return path


def sleb_order(bank, texts: Sequence[str], removals: int, max_texts: int = 4, max_tokens: int = 128,
               log=None, resume=(), on_step=None) -> list[int]:
    """SLEB's greedy block elimination (Song et al. 2024): remove, one at a time, the layer whose removal
    gives the lowest perplexity on the calibration texts, ``removals`` times (:func:`greedy_path` with drops
    alone; ``resume`` and ``on_step`` as there). Returns the layers in the order they were removed."""
    order: list[int] = []
    for plan, _ in greedy_path(bank, texts, removals, max_texts=max_texts, max_tokens=max_tokens, log=log,
                               name="SLEB", resume=resume, on_step=on_step):
        order += [b.start for b in plan.stacks[0] if b.kind == DROP and b.start not in order]
    return order


def _spread(n: int) -> list[int]:
    """0..n-1 in an order that covers the range early: the first, the last, then midpoints of the widest gaps."""
    if n <= 2:
        return list(range(n))
    order, seen = [0, n - 1], {0, n - 1}
    gaps = [(0, n - 1)]
    while len(order) < n:
        gaps.sort(key=lambda g: (-(g[1] - g[0]), g[0]))
        lo, hi = gaps.pop(0)
        mid = (lo + hi) // 2
        if mid in seen:
            continue
        order.append(mid)
        seen.add(mid)
        gaps += [(lo, mid), (mid, hi)]
    return order


def limit_seeds(seeds: Sequence[tuple[AssemblyPlan, str]], cap: int | None) -> list[tuple[AssemblyPlan, str]]:
    """At most ``cap`` of the baselines: the teacher first, then one plan of each strategy in turn
    (round-robin, in the order the strategies were listed), each strategy's plans taken spread over its range
    (its first, its last, then the middle...), so a small cap still sees every strategy's extremes. ``None``
    keeps them all. Plans the user listed (strategy ``user``) are not baselines and are always kept."""
    user = [s for s in seeds if s[1] == "user"]
    base = [s for s in seeds if s[1] != "user"]
    if cap is None or len(base) <= cap:
        return list(base) + user
    by: dict[str, list] = {}
    for s in base:
        by.setdefault(s[1], []).append(s)
    queues = [[items[i] for i in _spread(len(items))] for items in by.values()]
    picked: list = []
    while len(picked) < cap and any(queues):
        for q in queues:
            if q and len(picked) < cap:
                picked.append(q.pop(0))
    return picked + user
