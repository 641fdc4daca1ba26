"""The distillation losses of one batch, for both objectives, and teacher-forced scoring.

Every term is scale-free, so equal weights give each a comparable pull: task cross-entropy and logit KL are in
nats per token; the hidden-state term is a *relative* MSE (:func:`hidden_mse`: divided by the teacher state's
mean square, so it does not grow with the residual stream's norm in deeper layers); the attention term is a KL
over keys.

Large vocabularies: the LM head runs on chunks of ``chunk_tokens`` real tokens, each chunk's loss is
back-propagated to the head's input at once, and only then does the body's backward run. A full-vocabulary
tensor for the whole batch never exists (Gemma-3's 262k vocabulary makes one such tensor 1 GB per 1k tokens).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..plan._plan import DROP, MODULE
from ._config import HIDDEN_LOSSES
from ._data import stack_masks
from ..quality._head import chunk_tokens_for, head_input, head_logits, token_scores
from ._student import capture


def hidden_mse(student: torch.Tensor, teacher: torch.Tensor, how: str = "global") -> torch.Tensor:
    """Relative MSE of hidden states (tokens × dims), scale-free either way:

    - ``global``: the squared error over the teacher state's mean square. Where a few dimensions carry most of
      the energy (Gemma-3-270M: 8 of 640 hold 82-99 % of it), this term sees little else.
    - ``per-dim``: each dimension's squared error over that dimension's own mean square (over the tokens), so
      every dimension counts the same, the massive ones included.
    - ``both``: their sum.
    """
    if how not in HIDDEN_LOSSES:
        raise ValueError(f"unknown hidden loss {how!r}: use one of {', '.join(HIDDEN_LOSSES)}")
    student, teacher = student.float(), teacher.float()
    err = (student - teacher).pow(2)
    terms = []
    if how != "per-dim":
        terms.append(err.mean() / teacher.pow(2).mean().clamp_min(1e-6))
    if how != "global":
        terms.append((err / teacher.pow(2).mean(0).clamp_min(1e-6)).mean())
    return sum(terms[1:], terms[0])


def attention_kl(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """KL(teacher‖student) over keys, averaged over every head and every real query position."""
    sa = student.float().clamp_min(1e-9)
    ta = teacher.float().clamp_min(1e-9)
    kl = (ta * (ta.log() - sa.log())).sum(-1)  # batch, heads, queries
    q = mask[:, None, : kl.shape[-1]].expand_as(kl)
    return kl[q].mean()


def head_losses(teacher, student, t_x: torch.Tensor, s_x: torch.Tensor, labels: torch.Tensor, w_task: float,
                w_logits: float, chunk_tokens: int, backward: bool, dtype: torch.dtype | None = None):
    """Task cross-entropy and KL(teacher‖student) over the real tokens, in nats per token, with the LM head run
    ``chunk_tokens`` tokens at a time (0: sized by the vocabulary). With ``backward``, each chunk's weighted loss
    is back-propagated to the student's head input as it is computed; returns (task, kl, (s_x_selected, its
    gradient or None)). With both weights zero the head is not run at all (both terms are reported as 0): on a
    large vocabulary it is most of a step's time. ``dtype`` (autocast's): the head's matmuls in that precision,
    its weights cast once for all chunks; the softmaxes and losses stay fp32."""
    m = labels.ne(-100)
    t_sel, s_sel = t_x[m], s_x[m]
    if w_task == 0 and w_logits == 0:
        return 0.0, 0.0, (s_sel, None)
    chunk_tokens = chunk_tokens_for(student, chunk_tokens)
    y = labels[m]
    n = max(int(y.numel()), 1)
    leaf = s_sel.detach().requires_grad_(backward and s_sel.requires_grad)
    t_w = s_w = None
    if dtype is not None:
        t_w = teacher.get_output_embeddings().weight.detach().to(dtype)
        s_weight = student.get_output_embeddings().weight
        s_w = t_w if s_weight is teacher.get_output_embeddings().weight else s_weight.to(dtype)
    task = kl = 0.0
    for a in range(0, int(y.numel()), chunk_tokens):
        b = a + chunk_tokens
        with torch.no_grad():
            t_logp = F.log_softmax(head_logits(teacher, t_sel[a:b], t_w).float(), -1)
        with torch.enable_grad() if leaf.requires_grad else contextlib.nullcontext():
            s_logp = F.log_softmax(head_logits(student, leaf[a:b], s_w).float(), -1)
            ce = F.nll_loss(s_logp, y[a:b], reduction="sum")
            kd = F.kl_div(s_logp, t_logp, log_target=True, reduction="sum")
            if leaf.requires_grad:
                ((w_task * ce + w_logits * kd) / n).backward()
        task += ce.item()
        kl += kd.item()
        del t_logp, s_logp
    return task / n, kl / n, (s_sel, leaf.grad if leaf.requires_grad else None)


def _low_precision(cfg) -> torch.dtype | None:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.autocast)


def _autocast(cfg):
    dtype = _low_precision(cfg)
    return contextlib.nullcontext() if dtype is None else torch.autocast(cfg.device.split(":")[0], dtype=dtype)


def distillation_step(bank, student, plan, inputs, labels, cfg, backward: bool = False):
    """The paper's objective for one batch and one sampled student ``plan``.

    Returns ``(parts, per_module)``: the loss and its terms as floats, and each module's own distillation loss
    (its weighted hidden-state and attention terms). With ``backward``, gradients reach the modules.
    """
    slots = student.set_plan(plan)
    return plan_distillation(bank, student.shell, slots, plan, inputs, labels, cfg, backward)


def plan_distillation(bank, model, slots, plan, inputs, labels, cfg, backward: bool = False,
                      every_block: bool = False):
    """The distillation loss of ``model`` (whose stacks hold ``slots``, the kept blocks of ``plan`` in order)
    against the bank's teacher: task CE, logit KL, and the hidden-state and attention terms at the end of each
    module, or of every kept block with ``every_block`` (healing a whole assembly). Returns
    ``(parts, per_block)``."""
    teacher, ad = bank.base_model, bank.adapter
    masks = stack_masks(bank, inputs, labels)
    t_layers = {s: list(ad.layers(teacher, s)) for s in bank.stack_names}
    want_attn = cfg.w_attn != 0
    with torch.no_grad(), contextlib.ExitStack() as es, _autocast(cfg):
        t_caps = {s: es.enter_context(capture(t_layers[s], [ad.self_attention(x) for x in t_layers[s]]
                                              if want_attn else None)) for s in bank.stack_names}
        t_x = head_input(teacher, inputs)
    with contextlib.ExitStack() as es, _autocast(cfg):
        s_caps = {s: es.enter_context(capture(slots[s], [ad.self_attention(x) for x in slots[s]]
                                              if want_attn else None)) for s in bank.stack_names}
        s_x = head_input(model, inputs)

    hidden_terms, attn_terms, per_module = [], [], {}
    for name, blocks in zip(bank.stack_names, plan.stacks):
        t_hidden, t_attn, _ = t_caps[name]
        s_hidden, s_attn, _ = s_caps[name]
        m = masks[name]
        kept = [b for b in blocks if b.kind != DROP]
        for slot, b in enumerate(kept):
            if b.kind != MODULE and not every_block:
                continue
            rel = hidden_mse(s_hidden[slot][m], t_hidden[b.end][m], cfg.hidden_loss)
            hidden_terms.append(rel)
            local = cfg.w_hidden * rel.item()
            if want_attn and s_attn[slot] is not None and t_attn[b.end] is not None:
                attn_terms.append(attention_kl(s_attn[slot], t_attn[b.end], m))
                local += cfg.w_attn * attn_terms[-1].item()
            per_module[f"{name}.{b.start}-{b.end}"] = local
    zero = s_x.new_zeros((), dtype=torch.float32)
    hidden = torch.stack(hidden_terms).sum() if hidden_terms else zero
    attn = torch.stack(attn_terms).sum() if attn_terms else zero
    task, kl, (s_sel, s_grad) = head_losses(teacher, model, t_x, s_x, labels, cfg.w_task, cfg.w_logits,
                                            cfg.chunk_tokens, backward, _low_precision(cfg))
    body = cfg.w_hidden * hidden + cfg.w_attn * attn
    if backward:
        tensors, grads = [], []
        if body.requires_grad:
            tensors.append(body)
            grads.append(None)
        if s_grad is not None:
            tensors.append(s_sel)
            grads.append(s_grad.to(s_sel.dtype))
        if tensors:
            torch.autograd.backward(tensors, grads)
    total = cfg.w_task * task + cfg.w_logits * kl + body.item()
    parts = {"loss": total, "task": task, "kl": kl, "hidden": hidden.item(), "attn": attn.item()}
    return parts, per_module


def teacher_states(bank, inputs, with_attention: bool):
    """One teacher pass (no LM head): per stack, every layer's output, attention probabilities (optional) and
    the arguments each layer was called with."""
    teacher, ad = bank.base_model, bank.adapter
    layers = {s: list(ad.layers(teacher, s)) for s in bank.stack_names}
    with torch.no_grad(), contextlib.ExitStack() as es:
        caps = {s: es.enter_context(capture(layers[s], [ad.self_attention(x) for x in layers[s]]
                                            if with_attention else None, inputs=True)) for s in bank.stack_names}
        head_input(teacher, inputs)
    return caps


def hidden_step(bank, inputs, labels, cfg, backward: bool = False, modules=None):
    """The large-model objective for one batch: each module maps the teacher's hidden state at the start of its
    span to the one at its end, called with exactly the arguments the teacher's first layer of the span got (but
    the attention mask and position embeddings of the span's layer whose attention type the module takes: a
    span holding a full-attention layer is attended fully; see ``ArchitectureAdapter.attention_source``).

    ``modules`` maps ``(stack, start, end)`` to a layer (default: every module of the bank). Each module's loss
    is back-propagated as soon as it is computed, so one module's graph lives at a time.
    """
    ad = bank.adapter
    want_attn = cfg.w_attn != 0
    masks = stack_masks(bank, inputs, labels)
    with _autocast(cfg):
        caps = teacher_states(bank, inputs, want_attn)
    modules = modules if modules is not None else {k: bank.module_layer(*k) for k in sorted(bank.modules)}
    parts = {"hidden": 0.0, "attn": 0.0}
    per_module = {}
    for (stack, i, j), layer in modules.items():
        t_hidden, t_attn, calls = caps[stack]
        k = ad.attention_source(bank.base_model.config, i, j)
        args, kwargs = calls[i][0], calls[k][1] | {n: v for n, v in calls[i][1].items() if n == "hidden_states"}
        m = masks[stack]
        with torch.enable_grad() if backward else torch.no_grad(), _autocast(cfg), \
                capture([layer], [ad.self_attention(layer)] if want_attn else None) as (out, attn, _):
            layer(*args, **kwargs)
            rel = hidden_mse(out[0][m], t_hidden[j][m], cfg.hidden_loss)
            loss = cfg.w_hidden * rel
            a = None
            if want_attn and attn[0] is not None and t_attn[j] is not None:
                a = attention_kl(attn[0], t_attn[j], m)
                loss = loss + cfg.w_attn * a
        if backward and loss.requires_grad:
            loss.backward()
        parts["hidden"] += rel.item()
        parts["attn"] += a.item() if a is not None else 0.0
        per_module[f"{stack}.{i}-{j}"] = loss.item()
    parts["loss"] = sum(per_module.values())
    return parts, per_module


@torch.no_grad()
def teacher_forced(bank, model, batches, chunk_tokens: int = 0) -> dict:
    """Mean token cross-entropy and token accuracy of ``model`` on collated ``batches`` (teacher forcing)."""
    total, correct, n = 0.0, 0, 0
    for inputs, labels in batches:
        nll, right, tokens = token_scores(model, head_input(model, inputs), labels, chunk_tokens)
        total, correct, n = total + float(nll.sum()), correct + int(right.sum()), n + int(tokens.sum())
    return {"dev_loss": total / max(n, 1), "dev_token_acc": correct / max(n, 1)}
