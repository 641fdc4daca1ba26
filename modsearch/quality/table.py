"""The plan table: every plan of a bank scored once at a cheap fidelity, NAS-Bench style.

A table row holds a plan, its depths and parameters, its teacher-forced ``loss`` and ``token_accuracy`` on a dev
set, and (given a latency profile) its predicted latency. With the table, a search strategy can be replayed in
seconds: its objective looks a plan up instead of running it, and the table's own Pareto front is the exact
answer the strategy is trying to find (``benchmarks/tabular_search.py``).

Why it is cheap enough to score every plan: plans share prefixes. Every plan whose encoder begins ``0-1,2``
shares the hidden states after those two blocks, so :func:`build_table` walks each stack's plans as a prefix
tree, running each block once per distinct prefix; each encoder output serves every decoder plan; only the
output head runs once per plan. To do that it calls the layers directly, with the arguments a teacher forward
passes them (captured by forward pre-hooks). That holds for families whose layers get the same arguments at
every depth (the BART family, M2M100, Marian...), and it is *checked*: before the table is built, a few plans
are scored both ways (this path, and the plain assemble-and-score path of :func:`modsearch.score.score_plan`)
and a family where they disagree is refused. Encoder-decoder banks only.

>>> table = build_table(bank, dev, profile=LatencyProfile.load("profiles/cpu-1t-b1.json"))   # doctest: +SKIP
>>> table.sort_values("loss").head()                                                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import operator
import os
from collections.abc import Sequence

import torch

from .._errors import UserError
from .._io import write_json
from ..plan._plan import DROP, MODULE, AssemblyPlan, Block
from ._head import token_scores

__all__ = ["TABLE_COLUMNS", "build_table", "load_table", "save_table"]

TABLE_COLUMNS = ["plan", "encoder", "decoder", "depth_encoder", "depth_decoder", "params", "params_ratio", "loss",
                 "token_accuracy", "profile_latency_ms"]


class _Captured:
    """The arguments a stack's layer 0 received in a teacher forward, for one batch."""

    def __init__(self, hidden: torch.Tensor, args: tuple, kwargs: dict):
        self.hidden, self.args, self.kwargs = hidden, args, kwargs

    def call(self, layer, hidden: torch.Tensor, swap: tuple[torch.Tensor, torch.Tensor] | None = None):
        args, kwargs = self.args, self.kwargs
        if swap is not None:
            old, new = swap
            args = tuple(new if a is old else a for a in args)
            kwargs = {k: (new if v is old else v) for k, v in kwargs.items()}
        out = layer(hidden, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out


def _stack_module(bank, stack: str):
    parent = bank.adapter.stack_paths[stack].rpartition(".")[0]
    return operator.attrgetter(parent)(bank.base_model)


def _tail(module):
    """What the stack does after its last layer: its final norm, if it has one."""
    for name in ("layer_norm", "final_layer_norm", "norm"):
        m = getattr(module, name, None)
        if isinstance(m, torch.nn.Module):
            return m
    return None


def _capture(bank, batches, targets) -> tuple[list, list, list, list]:
    """Teacher forward per batch with pre-hooks on layer 0 of each stack; returns captured encoder and decoder
    inputs, the teacher's encoder outputs (the object the decoder layers were passed) and the labels."""
    model = bank.base_model
    ad = bank.adapter
    enc0, dec0 = ad.layers(model, "encoder")[0], ad.layers(model, "decoder")[0]
    enc_caps, dec_caps, enc_outs, labels_list = [], [], [], []
    seen: dict[str, tuple] = {}

    def pre(name):
        def fn(_m, args, kwargs):
            seen[name] = (args[0], tuple(args[1:]), dict(kwargs))
        return fn

    handles = [enc0.register_forward_pre_hook(pre("encoder"), with_kwargs=True),
               dec0.register_forward_pre_hook(pre("decoder"), with_kwargs=True)]
    try:
        for b in batches:
            from ._score import _pad

            labels, lmask = _pad([targets[i] for i in b.index], 0, left=False)
            labels = labels.masked_fill(lmask == 0, -100)
            seen.clear()
            enc = model.get_encoder()(input_ids=b.input_ids, attention_mask=b.attention_mask, return_dict=True)
            enc_caps.append(_Captured(*seen["encoder"]))
            from transformers.modeling_outputs import BaseModelOutput

            model(encoder_outputs=BaseModelOutput(last_hidden_state=enc.last_hidden_state),
                  attention_mask=b.attention_mask, labels=labels, use_cache=False)
            dec_caps.append(_Captured(*seen["decoder"]))
            enc_outs.append(enc.last_hidden_state)
            labels_list.append(labels)
    finally:
        for h in handles:
            h.remove()
    for cap, out in zip(dec_caps, enc_outs):
        hits = sum(a is out for a in cap.args) + sum(v is out for v in cap.kwargs.values())
        if hits != 1:
            raise UserError(f"bank {bank.path}: cannot find the encoder output among the decoder layers' "
                            f"arguments ({bank.manifest['architecture']['model_type']}); the plan table does not "
                            "support this family")
    return enc_caps, dec_caps, enc_outs, labels_list


def _stack_plans(space, s: int) -> list[tuple[Block, ...]]:
    return [t for t in space._stack_plans(s) if any(b.kind != DROP for b in t)]


def _apply(bank, stack: str, b: Block, hidden: list, caps: list, swaps: list | None) -> list:
    """Hidden states per batch after block ``b`` (a dropped block changes nothing)."""
    if b.kind == DROP:
        return hidden
    layer = bank.module_layer(stack, b.start, b.end) if b.kind == MODULE else bank.original_layer(stack, b.start)
    return [c.call(layer, h, None if swaps is None else swaps[k]) for k, (c, h) in enumerate(zip(caps, hidden))]


def _walk(bank, space, s: int, hidden: list, caps: list, swaps: list | None, prefix=(), p=0):
    """Yield (blocks, hidden per batch) for every tiling of stack ``s``, running each block once per prefix."""
    depth, stack = space.depths[s], bank.stack_names[s]
    if p == depth:
        if any(b.kind != DROP for b in prefix):
            yield prefix, hidden
        return
    for b in space._choices(s, p):
        if b.end < depth:
            nxt = _apply(bank, stack, b, hidden, caps, swaps)
            yield from _walk(bank, space, s, nxt, caps, swaps, prefix + (b,), b.end + 1)


def _loss(model, hidden: list, labels: list, tail) -> tuple[float, int, int]:
    """Summed NLL, correct tokens and tokens over the batches of one plan's decoder output."""
    nll = correct = n = 0
    for h, lab in zip(hidden, labels):
        a, c, k = _head(model, tail(h) if tail is not None else h, lab)
        nll, correct, n = nll + a, correct + c, n + k
    return nll, correct, n


def _head(model, hidden: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
    # The output head is most of a plan's cost here: token_scores runs it on the real reference tokens only.
    nll, correct, tokens = token_scores(model, hidden, labels)
    return float(nll.sum()), int(correct.sum()), int(tokens.sum())


def _task(devset, batch_size: int):
    from ._score import QualityTask

    return QualityTask(devset.task, metric="loss,token_accuracy", batch_size=batch_size)


def build_table(bank, devset, profile=None, *, drops: bool = True, granularities: Sequence[int] | None = None,
                batch_size: int = 64, checkpoint: str | None = None, check: int = 3, progress: bool = True,
                log=print):
    """Score every plan of ``bank``'s space on ``devset`` (teacher-forced); returns a pandas DataFrame.

    ``checkpoint`` (a JSONL path) makes the build resumable: the rows of each finished encoder plan are appended
    there, and a rerun skips them. ``check`` plans are first scored by the plain path as well and must agree.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from ._score import _encode_texts, _source_batches, score_plan

    if bank.kind != "seq2seq" or list(bank.stack_names) != ["encoder", "decoder"]:
        raise UserError(f"bank {bank.path}: the plan table supports encoder-decoder banks only")
    if devset.targets is None:
        raise UserError("the plan table scores references teacher-forced; the dev set has no targets")
    if profile is not None:
        profile.check_bank(bank)
    space = bank.space(drops=drops, granularities=granularities)
    model = bank.base_model.eval()
    task = _task(devset, batch_size)
    tok = bank.tokenizer
    teacher_params = bank.plan_params(bank.teacher_plan())
    with torch.inference_mode():
        batches = _source_batches(tok, devset, task, bank.source_prefix, left=False)
        targets = _encode_texts(tok, devset.targets, None, target=True)
        enc_caps, dec_caps, enc_outs, labels = _capture(bank, batches, targets)
    enc_tail = _tail(_stack_module(bank, "encoder"))
    dec_tail = _tail(_stack_module(bank, "decoder"))
    done: dict[str, list[dict]] = {}
    # What the rows depend on: a checkpoint made for another bank, data set, space or profile is refused.
    ident = {"bank": bank.checksum, "data": devset.content_hash, "drops": drops, "granularities": granularities,
             "batch_size": batch_size, "profile": profile.to_json() if profile is not None else None}
    if checkpoint and os.path.exists(checkpoint):
        good = 0  # bytes of whole lines; a torn last line (a kill mid-write) is cut off, and its plan redone
        with open(checkpoint, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw.decode("utf-8"))
                    if not raw.endswith(b"\n"):
                        raise ValueError("unterminated")
                except (ValueError, UnicodeDecodeError):
                    break
                good += len(raw)
                if "identity" in rec:
                    if rec["identity"] != ident:
                        raise UserError(f"plan-table checkpoint {checkpoint} was made for another bank, data set, "
                                        "space or profile; delete it or give another --checkpoint")
                    continue
                done[rec["encoder"]] = rec["rows"]
        with open(checkpoint, "r+b") as f:
            f.truncate(good)
    if checkpoint and (not os.path.exists(checkpoint) or os.path.getsize(checkpoint) == 0):
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
        with open(checkpoint, "w", encoding="utf-8") as f:
            f.write(json.dumps({"identity": ident}) + "\n")
    n_enc, n_dec = len(_stack_plans(space, 0)), len(_stack_plans(space, 1))
    total = n_enc * n_dec
    if check:
        _check(bank, devset, task, space, enc_caps, dec_caps, enc_outs, labels, enc_tail, dec_tail, check,
               score_plan, log)
    rows: list[dict] = []
    bar = tqdm(total=total, disable=not progress, desc="plan table", unit="plan", dynamic_ncols=True)
    with torch.inference_mode():
        enc_hidden0 = [c.hidden for c in enc_caps]
        for e_blocks, e_hidden in _walk(bank, space, 0, enc_hidden0, enc_caps, None):
            e_text = ",".join(str(b) for b in e_blocks)
            if e_text in done:
                rows.extend(done[e_text])
                bar.update(n_dec)
                continue
            e_out = [enc_tail(h) if enc_tail is not None else h for h in e_hidden]
            swaps = list(zip(enc_outs, e_out))
            dec_hidden0 = [c.hidden for c in dec_caps]
            chunk = []
            for d_blocks, d_hidden in _walk(bank, space, 1, dec_hidden0, dec_caps, swaps):
                nll, correct, n = _loss(model, d_hidden, labels, dec_tail)
                plan = AssemblyPlan((e_blocks, d_blocks))
                params = bank.plan_params(plan)
                row = {"plan": str(plan), "encoder": e_text, "decoder": ",".join(str(b) for b in d_blocks),
                       "depth_encoder": sum(b.kind != DROP for b in e_blocks),
                       "depth_decoder": sum(b.kind != DROP for b in d_blocks), "params": params,
                       "params_ratio": params / teacher_params, "loss": nll / n, "token_accuracy": correct / n,
                       "profile_latency_ms": profile.seconds(plan) * 1000 if profile is not None else None}
                chunk.append(row)
                bar.update(1)
            rows.extend(chunk)
            if checkpoint:
                with open(checkpoint, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"encoder": e_text, "rows": chunk}) + "\n")
    bar.close()
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _check(bank, devset, task, space, enc_caps, dec_caps, enc_outs, labels, enc_tail, dec_tail, n, score_plan, log):
    """Score ``n`` plans (the teacher, then sampled ones) by this path and by assemble + score; refuse on a
    disagreement. The table is only as good as this equality."""
    plans = [bank.teacher_plan()] + space.sample(max(n - 1, 0), seed=0)
    model = bank.base_model
    for plan in plans[:n]:
        with torch.inference_mode():
            e_hidden = [c.hidden for c in enc_caps]
            for b in plan.stacks[0]:
                e_hidden = _apply(bank, "encoder", b, e_hidden, enc_caps, None)
            e_out = [enc_tail(h) if enc_tail is not None else h for h in e_hidden]
            d_hidden = [c.hidden for c in dec_caps]
            for b in plan.stacks[1]:
                d_hidden = _apply(bank, "decoder", b, d_hidden, dec_caps, list(zip(enc_outs, e_out)))
            nll, _, n_tok = _loss(model, d_hidden, labels, dec_tail)
        fast = nll / n_tok
        slow = score_plan(bank, plan, devset, task).scores["loss"]
        if not abs(fast - slow) <= 1e-4 * max(1.0, abs(slow)):
            raise UserError(f"bank {bank.path}: the plan table's fast path gives loss {fast:.6f} for plan {plan} "
                            f"where assembling it gives {slow:.6f}; this family is not supported by the table")
    log(f"plan table: fast path checked against assemble + score on {len(plans[:n])} plans")


def save_table(table, path: str, meta: dict) -> None:
    """Write ``table`` as CSV and ``meta`` (bank checksum, data hash, fidelity, profile...) beside it."""
    from .._io import write_text

    write_text(path, table.to_csv(index=False, float_format="%.6g"))
    write_json(os.path.splitext(path)[0] + ".meta.json", meta)


def load_table(path: str):
    """Read a table written by :func:`save_table`; returns (DataFrame, meta)."""
    import pandas as pd

    meta_path = os.path.splitext(path)[0] + ".meta.json"
    try:
        table = pd.read_csv(path)
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read plan table {path} (and {meta_path}): {e}") from None
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(f"plan table {path} lacks columns {', '.join(missing)}")
    return table, meta
