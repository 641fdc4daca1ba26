"""Quality of a model on a dev set: generation scored by a metric, or teacher-forced loss on the references.

:class:`QualityTask` says what to measure (task, metrics, fields, generation settings); :func:`score_quality`
measures it for any transformers model and returns a :class:`QualityResult`. :func:`score_plan` does the same
for a plan of a bank (assemble, then score, with the bank's tokenizer and source prefix).

>>> from modsearch import LayerBank
>>> from modsearch.data import DevSet
>>> bank = LayerBank.load("banks/bible-en-fr")                                      # doctest: +SKIP
>>> task = QualityTask("translation", metric="chrf,bleu", source_field="en", target_field="fr")
>>> dev = task.load_devset("data/bible-en-fr/dev.jsonl", limit=100)                # doctest: +SKIP
>>> result = score_plan(bank, "0-1,2-3,4-5/0,1,2,3,4,5", dev, task)                 # doctest: +SKIP
>>> result.primary, result.value, result.scores                                    # doctest: +SKIP
('chrf', 31.2, {'chrf': 31.2, 'bleu': 9.8})

Metrics: ``chrf``, ``bleu``, ``rouge`` (shipped offline modules, see :mod:`modsearch.metrics`), any evaluate
id or local metric module, and three built-ins computed teacher-forced on the references (for any model):
``loss`` (token-level mean cross-entropy, nats), ``perplexity`` (exp of that loss: for a decoder-only model
on the lm task it is the usual perplexity; for an encoder-decoder it is the perplexity of the references given
the sources) and ``token_accuracy`` (share of reference tokens that are the model's argmax; cheap, used by the
search as a low-fidelity score). The first metric listed is the primary one, the one a search optimises.

For encoder-decoder models, :func:`encode` computes the encoder outputs of a dev set once; passing the result
as ``encoder_cache=`` scores another model that shares the same encoder (same encoder plan) without
re-running it. The search uses this when trials differ only in their decoder.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .._errors import UserError
from ..data._batching import length_sorted
from ..data._devset import TASKS, DevSet
from ._head import head_input, token_scores

__all__ = ["DEFAULT_METRICS", "TEACHER_FORCED", "EncoderCache", "QualityResult", "QualityTask", "encode",
           "prediction_rows", "score_plan", "score_quality"]

#: Built-in metrics computed teacher-forced on the references; the others need generated text.
TEACHER_FORCED = ("loss", "perplexity", "token_accuracy")
_LOWER_IS_BETTER = ("loss", "perplexity")
DEFAULT_METRICS = {"translation": "chrf", "summarization": "rouge", "lm": "perplexity"}


@dataclass
class QualityTask:
    """What to measure on a dev set, and how to generate.

    ``metric`` is one name or several (a list, or comma-separated); the first is primary. ``primary_key``
    picks the score inside an unknown evaluate metric's result (the shipped ones know theirs).
    ``source_prefix`` None means "the bank's" (from its manifest); "" means none.

    >>> QualityTask("translation", metric="chrf,bleu", num_beams=4).metrics
    ('chrf', 'bleu')
    """

    task: str = "translation"
    metric: str | Sequence[str] | None = None
    source_field: str | None = None
    target_field: str | None = None
    text_field: str | None = None
    num_beams: int = 1
    max_new_tokens: int = 128
    batch_size: int = 32
    max_source_tokens: int | None = None
    source_prefix: str | None = None
    primary_key: str | None = None
    context_length: int | None = None  # lm: score long texts in windows of this many tokens ...
    stride: int | None = None          # ... starting every `stride` tokens (modsearch.quality._windows)

    def __post_init__(self):
        if self.task not in TASKS:
            raise UserError(f"unknown task {self.task!r}: use one of {', '.join(TASKS)}")
        for name, low in (("num_beams", 1), ("max_new_tokens", 1), ("batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise UserError(f"{name.replace('_', '-')} must be an integer >= {low}, not {v!r}")
        if self.max_source_tokens is not None and self.max_source_tokens < 1:
            raise UserError(f"max-source-tokens must be >= 1, not {self.max_source_tokens}")
        if not self.metrics:
            raise UserError("no metric given: use chrf, bleu, rouge, loss, perplexity or token_accuracy")
        if (self.context_length is not None or self.stride is not None) and self.task != "lm":
            raise UserError("context-length and stride apply to task lm only")
        c, st = self.context_length, self.stride
        if c is not None and (not isinstance(c, int) or isinstance(c, bool) or c < 2):
            raise UserError(f"context-length must be an integer >= 2, not {c!r}")
        if st is not None and (not isinstance(st, int) or isinstance(st, bool) or st < 1 or (c is not None and st > c)):
            raise UserError(f"stride must be an integer between 1 and the context length, not {st!r}")
        if self.task == "lm":
            bad = [m for m in self.metrics if m not in TEACHER_FORCED]
            if bad:
                raise UserError(f"task lm has no references to generate against; metric {bad[0]!r} does not "
                                f"apply (use {', '.join(TEACHER_FORCED)})")

    @property
    def metrics(self) -> tuple[str, ...]:
        m = self.metric if self.metric is not None else DEFAULT_METRICS[self.task]
        names = m.split(",") if isinstance(m, str) else list(m)
        return tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))

    @property
    def primary(self) -> str:
        return self.metrics[0]

    @property
    def generates(self) -> bool:
        return any(m not in TEACHER_FORCED for m in self.metrics)

    @property
    def teacher_forced(self) -> bool:
        return any(m in TEACHER_FORCED for m in self.metrics)

    def load_devset(self, path: str, limit: int | None = None) -> DevSet:
        """Load ``path`` with this task's field names."""
        return DevSet.load(path, task=self.task, source_field=self.source_field, target_field=self.target_field,
                           text_field=self.text_field, limit=limit)

    def load_metrics(self) -> dict:
        """The generation metrics, loaded (cached per process): fails fast on one that cannot load offline."""
        return {m: _metric(m, self.primary_key if m == self.primary else None)
                for m in self.metrics if m not in TEACHER_FORCED}

    def to_json(self) -> dict:
        """Everything that changes a score: part of the cache key of a scored plan. Windowing settings appear
        only when set, so the keys of studies made before they existed still match."""
        d = asdict(self) | {"metric": list(self.metrics)}
        return {k: v for k, v in d.items() if not (k in ("context_length", "stride") and v is None)}


@dataclass
class QualityResult:
    """Scores of one model on one dev set.

    ``scores`` maps each metric to its primary value (``rouge`` adds each ROUGE type); ``details`` holds each
    metric's full output. ``value`` is the primary score and ``greater_is_better`` its direction.
    ``predictions`` (hypotheses in dev-set order) and ``example_losses`` (mean loss per example) are filled
    when asked for with ``return_predictions=True``.
    """

    scores: dict[str, float]
    primary: str
    greater_is_better: bool
    wall_time: float
    n_examples: int
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, dict] = field(default_factory=dict)
    predictions: list[str] | None = None
    example_losses: list[float] | None = None

    @property
    def value(self) -> float:
        return self.scores[self.primary]

    def to_json(self, predictions: bool = False) -> dict:
        out = {"scores": self.scores, "primary": self.primary, "value": self.value,
               "greater_is_better": self.greater_is_better, "wall_time": self.wall_time,
               "n_examples": self.n_examples, "timings": self.timings, "details": self.details}
        if predictions:
            out["predictions"] = self.predictions
        return out


# -- batching --------------------------------------------------------------------------------------------
@dataclass
class _Batch:
    index: list[int]  # positions in the dev set, in batch-row order
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    prompt_len: int = 0  # decoder-only prompts are left-padded to this length


def _pad(rows: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if not r:
            continue
        sl = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(r, dtype=torch.long)
        mask[i, sl] = 1
    return ids, mask


def _pad_id(tokenizer) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UserError("the tokenizer has neither a pad nor an eos token; batched scoring needs one")
    return int(pad)


def _encode_texts(tokenizer, texts: Sequence[str], max_tokens: int | None, target: bool = False) -> list[list[int]]:
    kw = {"truncation": True, "max_length": max_tokens} if max_tokens else {}
    enc = tokenizer(text_target=list(texts), **kw) if target else tokenizer(list(texts), **kw)
    return [list(ids) for ids in enc["input_ids"]]


def _sources(devset: DevSet, prefix: str) -> list[str]:
    return [prefix + s for s in devset.sources] if prefix else list(devset.sources)


def _source_batches(tokenizer, devset: DevSet, task: QualityTask, prefix: str, left: bool) -> list[_Batch]:
    ids = _encode_texts(tokenizer, _sources(devset, prefix), task.max_source_tokens)
    if left and tokenizer.eos_token_id is not None:
        # A decoder-only prompt must not end the sequence before the continuation it asks for.
        ids = [r[:-1] if len(r) > 1 and r[-1] == tokenizer.eos_token_id else r for r in ids]
    pad = _pad_id(tokenizer)
    out = []
    for index in length_sorted([len(r) for r in ids], task.batch_size):
        input_ids, mask = _pad([ids[i] for i in index], pad, left)
        out.append(_Batch(index, input_ids, mask, input_ids.shape[1] if left else 0))
    return out


def _model_kind(model: nn.Module) -> str:
    return "seq2seq" if getattr(model.config, "is_encoder_decoder", False) else "causal"


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# -- encoder reuse ---------------------------------------------------------------------------------------
@dataclass
class EncoderCache:
    """Encoder outputs of a dev set, batch by batch, for models that share one encoder.

    ``key`` ties the cache to the dev set content and the settings that shape its batches; scoring with a
    cache built for other data or settings is refused. Which models share the encoder is the caller's
    knowledge (for a bank: the same encoder plan); ``tag`` is free for the caller to record it.
    """

    key: tuple
    batches: list[_Batch]
    hidden: list[torch.Tensor]
    tag: str = ""
    seconds: float = 0.0  # the encoder pass itself (model time, as generate() would have spent it)

    @property
    def nbytes(self) -> int:
        return sum(h.numel() * h.element_size() for h in self.hidden)


def _cache_key(devset: DevSet, task: QualityTask, prefix: str) -> tuple:
    return (devset.content_hash, prefix, task.batch_size, task.max_source_tokens)


@torch.inference_mode()
def encode(model: nn.Module, tokenizer, devset: DevSet, task: QualityTask, source_prefix: str = "",
           tag: str = "") -> EncoderCache:
    """Run ``model``'s encoder over the dev set once (length-sorted batches, as :func:`score_quality` uses).

    >>> cache = encode(model_a, tok, dev, task)                                         # doctest: +SKIP
    >>> score_quality(model_b, tok, dev, task, encoder_cache=cache)  # model_b shares model_a's encoder
    """
    if _model_kind(model) != "seq2seq":
        raise ValueError("encode() needs an encoder-decoder model")
    prefix = _prefix(task, source_prefix)
    was_training = model.training
    model.eval()
    try:
        batches = _source_batches(tokenizer, devset, task, prefix, left=False)
        device = _device(model)
        encoder = model.get_encoder()
        t = time.perf_counter()
        hidden = [encoder(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device),
                          return_dict=True).last_hidden_state for b in batches]
        seconds = time.perf_counter() - t
    finally:
        model.train(was_training)
    return EncoderCache(_cache_key(devset, task, prefix), batches, hidden, tag, seconds)


# -- scoring ---------------------------------------------------------------------------------------------
def _prefix(task: QualityTask, source_prefix: str) -> str:
    return task.source_prefix if task.source_prefix is not None else (source_prefix or "")


def _encoder_outputs(hidden: torch.Tensor):
    from transformers.modeling_outputs import BaseModelOutput

    return BaseModelOutput(last_hidden_state=hidden)


def _generate(model, tokenizer, batches: list[_Batch], hidden: list[torch.Tensor] | None, task: QualityTask,
              n: int) -> list[str]:
    kind = _model_kind(model)
    device = _device(model)
    kw = {"max_new_tokens": task.max_new_tokens, "num_beams": task.num_beams, "do_sample": False,
          "pad_token_id": _pad_id(tokenizer)}
    out: list[str] = [""] * n
    for k, b in enumerate(batches):
        extra = {"encoder_outputs": _encoder_outputs(hidden[k])} if hidden is not None else {}
        seqs = model.generate(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device),
                              **kw, **extra)
        if kind == "causal":
            seqs = seqs[:, b.prompt_len:]  # keep the continuation only
        for i, text in zip(b.index, tokenizer.batch_decode(seqs, skip_special_tokens=True)):
            out[i] = text.strip()
    return out


def _teacher_forced(model, tokenizer, devset: DevSet, batches: list[_Batch], hidden: list[torch.Tensor] | None,
                    task: QualityTask, states=None) -> tuple[dict, list[float]]:
    """Token-level cross-entropy and argmax accuracy of the references, summed over the whole dev set."""
    kind = _model_kind(model)
    run = states.head_input if states is not None else head_input
    device = _device(model)
    n = len(devset)
    ex_loss, ex_tokens = [0.0] * n, [0] * n
    total_loss, total_tokens, total_correct = 0.0, 0, 0
    if kind == "seq2seq" or devset.targets is None:
        targets = _encode_texts(tokenizer, devset.targets if devset.targets is not None else devset.sources,
                                task.max_source_tokens if devset.targets is None else None,
                                target=devset.targets is not None)
    else:
        # Decoder-only on a source/target task: the continuation is the reference tokens and then EOS.
        eos = tokenizer.eos_token_id
        targets = [ids + ([eos] if eos is not None else []) for ids in
                   (list(r) for r in tokenizer(list(devset.targets), add_special_tokens=False)["input_ids"])]
    for k, b in enumerate(batches):
        rows = [targets[i] for i in b.index]
        if kind == "seq2seq":
            labels, lmask = _pad(rows, 0, left=False)
            labels = labels.masked_fill(lmask == 0, -100).to(device)
            inputs = {"input_ids": b.input_ids.to(device), "attention_mask": b.attention_mask.to(device),
                      "labels": labels}
            if hidden is not None:
                inputs["encoder_outputs"] = _encoder_outputs(hidden[k])
            x = head_input(model, inputs)
        elif devset.targets is None:
            # lm: each text is scored on its own tokens; right padding never reaches a real token's context.
            ids, mask = _pad(rows, _pad_id(tokenizer), left=False)
            x = run(model, {"input_ids": ids.to(device), "attention_mask": mask.to(device)})[:, :-1]
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100).to(device)
        else:
            prompts = [b.input_ids[r, b.input_ids.shape[1] - int(b.attention_mask[r].sum()):].tolist()
                       for r in range(len(rows))]
            full = [p + t for p, t in zip(prompts, rows)]
            ids, mask = _pad(full, _pad_id(tokenizer), left=False)
            lab = torch.full_like(ids, -100)
            for r, (p, t) in enumerate(zip(prompts, rows)):
                lab[r, len(p):len(p) + len(t)] = torch.tensor(t)
            x = run(model, {"input_ids": ids.to(device), "attention_mask": mask.to(device)})[:, :-1]
            labels = lab[:, 1:].to(device)
        nll, correct, tokens = token_scores(model, x, labels)
        per_loss, per_tok = nll.tolist(), tokens.tolist()
        for r, i in enumerate(b.index):
            ex_loss[i], ex_tokens[i] = per_loss[r], per_tok[r]
        total_loss += float(nll.sum())
        total_tokens += int(tokens.sum())
        total_correct += int(correct.sum())
    if total_tokens == 0:
        raise UserError("the references hold no tokens to score (empty targets?)")
    loss = total_loss / total_tokens
    stats = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "token_accuracy": total_correct / total_tokens,
             "tokens": total_tokens}
    return stats, [lo / t if t else float("nan") for lo, t in zip(ex_loss, ex_tokens)]


@functools.lru_cache(maxsize=32)
def _metric(name: str, primary_key: str | None):
    from .metrics import load_metric

    return load_metric(name, primary=primary_key)


def score_quality(model: nn.Module, tokenizer, devset: DevSet, task: QualityTask, source_prefix: str = "",
                  return_predictions: bool = False, encoder_cache: EncoderCache | None = None,
                  states=None) -> QualityResult:
    """Score ``model`` on ``devset`` as ``task`` says. Generation is batched, length-sorted and greedy or beam.

    Runs under ``torch.inference_mode()`` with the model in eval mode (its mode is restored afterwards).
    ``source_prefix`` is the bank's prefix; ``task.source_prefix`` overrides it. ``encoder_cache`` (from
    :func:`encode`, with a model sharing this one's encoder) skips the encoder. ``states`` (a decoder-only
    model's :meth:`LayerStates.bind <modsearch.quality._prefix.LayerStates.bind>`) runs the teacher-forced
    batches only from the first layer no earlier plan ran on them.
    """
    kind = _model_kind(model)
    if task.task != "lm" and devset.targets is None:
        raise UserError(f"task {task.task} needs references; the dev set has none")
    prefix = _prefix(task, source_prefix)
    if encoder_cache is not None:
        if kind != "seq2seq":
            raise ValueError("an encoder cache applies to encoder-decoder models only")
        if encoder_cache.key != _cache_key(devset, task, prefix):
            raise ValueError("this encoder cache was built for another dev set, prefix or batching")
    t0 = time.perf_counter()
    # Load metrics first: a metric that cannot load should fail before minutes of generation, not after.
    metrics = task.load_metrics()
    timings: dict[str, float] = {}
    scores: dict[str, float] = {}
    details: dict[str, dict] = {}
    predictions = losses = None
    windowed = False
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if encoder_cache is not None:
                batches, hidden = encoder_cache.batches, encoder_cache.hidden
            elif task.task == "lm":
                # Asked-for windows score each text whole: no truncation then.
                windowing = task.context_length is not None or task.stride is not None
                ids = _encode_texts(tokenizer, devset.sources, None if windowing else task.max_source_tokens)
                windowed = windowing or _too_long(model, ids, task)
                batches = [] if windowed else [
                    _Batch(index, *_pad([ids[i] for i in index], _pad_id(tokenizer), False))
                    for index in length_sorted([len(r) for r in ids], task.batch_size)]
                hidden = None
            else:
                batches = _source_batches(tokenizer, devset, task, prefix, left=kind == "causal")
                hidden = None
            if task.generates:
                t = time.perf_counter()
                predictions = _generate(model, tokenizer, batches, hidden, task, len(devset))
                timings["generate"] = time.perf_counter() - t
            if task.teacher_forced:
                t = time.perf_counter()
                if windowed:
                    from ._windows import windowed_lm_scores

                    stats, losses = windowed_lm_scores(model, ids, task.context_length, task.stride,
                                                       task.batch_size, _pad_id(tokenizer),
                                                       getattr(tokenizer, "bos_token_id", None), states=states)
                else:
                    stats, losses = _teacher_forced(model, tokenizer, devset, batches, hidden, task, states)
                timings["teacher_forced"] = time.perf_counter() - t
                details["teacher_forced"] = stats
                scores.update({m: stats[m] for m in task.metrics if m in TEACHER_FORCED})
    finally:
        model.train(was_training)
    t = time.perf_counter()
    extra: dict[str, float] = {}
    for m, metric in metrics.items():
        result = metric.compute(predictions, devset.targets)
        details[m] = result
        scores[m] = float(result[metric.primary])
        if metric.name == "rouge":  # each ROUGE type is a score people quote
            extra.update({k: float(v) for k, v in result.items() if k != metric.primary})
    if metrics:
        timings["metrics"] = time.perf_counter() - t
    primary = task.primary
    return QualityResult(
        scores={m: scores[m] for m in task.metrics} | extra,
        primary=primary, greater_is_better=primary not in _LOWER_IS_BETTER,
        wall_time=time.perf_counter() - t0, n_examples=len(devset), timings=timings, details=details,
        predictions=predictions if return_predictions else None,
        example_losses=losses if return_predictions else None)


def _too_long(model, ids: list[list[int]], task: QualityTask) -> bool:
    """Whether an lm text (not truncated by max_source_tokens) is longer than the model's positions, which would
    fail unwindowed: then it is scored in windows of the positions instead."""
    from ._windows import model_positions

    positions = model_positions(model)
    return positions is not None and task.max_source_tokens is None and any(len(r) > positions for r in ids)


def score_plan(bank, plan, devset: DevSet, task: QualityTask, return_predictions: bool = False,
               encoder_cache: EncoderCache | None = None) -> QualityResult:
    """Assemble ``plan`` from ``bank`` and score it with the bank's tokenizer and source prefix."""
    from ..assembly import assemble

    if not bank.has_tokenizer():
        raise UserError(f"bank {bank.path} has no tokenizer: scoring text needs one (re-create the bank from a "
                        "model directory that holds its tokenizer)")
    t = time.perf_counter()
    model = assemble(bank, plan, share_weights=True)  # a view of the bank: scoring changes no weight
    took = time.perf_counter() - t
    result = score_quality(model, bank.tokenizer, devset, task, source_prefix=bank.source_prefix,
                           return_predictions=return_predictions, encoder_cache=encoder_cache)
    result.timings = {"assemble": took, **result.timings}
    result.wall_time += took
    return result


def prediction_rows(devset: DevSet, result: QualityResult) -> list[dict]:
    """One JSON-ready row per example, in dev-set order: id, source, reference, hypothesis, loss."""
    rows = []
    for i in range(len(devset)):
        row = {"id": devset.ids[i], "source": devset.sources[i]}
        if devset.targets is not None:
            row["reference"] = devset.targets[i]
        if result.predictions is not None:
            row["hypothesis"] = result.predictions[i]
        if result.example_losses is not None:
            row["loss"] = result.example_losses[i]
        rows.append(row)
    return rows
