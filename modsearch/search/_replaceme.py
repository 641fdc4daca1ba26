"""ReplaceMe (Shopkhoev et al., NeurIPS 2025): training-free depth pruning by a linear map.

A run of ``n`` consecutive layers ``s..s+n-1`` is removed and a linear map ``T`` (hidden x hidden), fitted by
least squares on calibration activations, stands in for them. ``T`` acts on the MLP output of the layer just
before the cut, ``s-1``, and is folded into that layer's down projection (``W' = T^T W``), so the pruned model
is a plain model of the same family with ``n`` layers fewer and no new parameter.

With ``Y`` the residual stream of layer ``s-1`` after its attention, ``M`` its MLP output (so the layer returns
``Y + M``) and ``L`` the hidden state the teacher has after layer ``s+n-1``, ReplaceMe's L2 objective is
``min_T ||M T + Y - L||^2``, solved in closed form from the normal equations ``(M^T M) T = M^T (L - Y)``
accumulated in float64 over every calibration token. The cut is ReplaceMe's (and LLM-Streamline's) choice: the
run whose input and output hidden states are the most similar (cosine) on the calibration text.

This module builds the baseline for the layer-pruning comparison (``benchmarks/llm_pruning.py``); the search
does not use it. It applies to families whose MLP output is added to the residual stream as it is (Llama,
Qwen2, Mistral...); Gemma's post-feed-forward norm sits between the two and is refused.

>>> plan, model, info = replaceme(bank, removed=6, calibration=texts)               # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

from .._errors import UserError
from ..plan._plan import DROP, LAYER, AssemblyPlan, Block

__all__ = ["replaceme", "replaceme_span", "fit_linear_map"]


def replaceme_span(sim: Sequence[Sequence[float]], removed: int) -> tuple[int, int]:
    """The ``removed`` layers ``(s, s + removed - 1)`` whose input and output hidden states are the most similar
    (``sim`` as :func:`~modsearch.search._seeds.layer_similarity` gives it), with ``s >= 1``: layer ``s - 1``
    takes the linear map. The earliest on a tie."""
    depth = len(sim) - 1
    if not 1 <= removed <= depth - 1:
        raise UserError(f"ReplaceMe cannot remove {removed} of {depth} layers: it keeps at least the first layer, "
                        f"which takes the linear map (remove 1 to {depth - 1})")
    starts = range(1, depth - removed + 1)
    s = max(starts, key=lambda a: (sim[a][a + removed], -a))
    return s, s + removed - 1


def fit_linear_map(mm, md, ridge: float = 1e-6):
    """``T`` solving the normal equations ``(M^T M + ridge * mean(diag) * I) T = M^T D`` (float64); the small
    ridge only guards against a singular ``M^T M``."""
    import torch

    eye = torch.eye(mm.shape[0], dtype=mm.dtype)
    return torch.linalg.solve(mm + ridge * mm.diagonal().mean() * eye, md)


def replaceme(bank, removed: int, calibration: Sequence[str], *, sim=None, max_texts: int | None = None,
              max_tokens: int = 2048, log=None):
    """ReplaceMe's pruned model of a decoder-only ``bank``'s teacher with ``removed`` layers fewer.

    Returns ``(plan, model, info)``: the drop plan with the same layers (its shapes, FLOPs and speed are the
    pruned model's), the pruned model (a deep copy, eval mode, the map folded into layer ``s - 1``'s
    ``mlp.down_proj``), and ``{"span", "tokens", "fit_mse", "drop_mse"}`` (the fitted residual error per token
    against that of dropping the run without a map)."""
    import torch

    from ..assembly import assemble
    from ._seeds import boundary_similarity, calibration_passes

    if bank.kind != "causal":
        raise UserError("ReplaceMe applies to decoder-only banks")
    if not calibration:
        raise UserError("ReplaceMe needs calibration texts (the dev set's)")
    depth = bank.depths[0]
    teacher = assemble(bank, bank.teacher_plan(), share_weights=True)
    layers = bank.adapter.layers(teacher, bank.stack_names[0])
    if not hasattr(layers[0], "mlp") or not hasattr(layers[0].mlp, "down_proj"):
        raise UserError(f"ReplaceMe folds its map into mlp.down_proj, which {type(layers[0]).__name__} lacks")
    if hasattr(layers[0], "post_feedforward_layernorm"):
        raise UserError(f"ReplaceMe's map cannot be folded into {type(layers[0]).__name__}: a norm follows its MLP")
    sim = sim if sim is not None else boundary_similarity(bank, calibration)
    if len(sim) - 1 != depth:
        raise UserError(f"the similarities cover {len(sim) - 1} layers, the bank {depth}")
    s, e = replaceme_span(sim, removed)
    hidden = layers[0].mlp.down_proj.out_features
    mm = torch.zeros(hidden, hidden, dtype=torch.float64)
    md = torch.zeros(hidden, hidden, dtype=torch.float64)
    dd = torch.zeros((), dtype=torch.float64)
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _args, out):
            seen[name] = (out[0] if isinstance(out, tuple) else out).detach()[0].double()
        return hook

    handles = [layers[s - 1].mlp.register_forward_hook(keep("m")),
               layers[s - 1].register_forward_hook(keep("out")),
               layers[e].register_forward_hook(keep("target"))]
    tok, tokens = bank.tokenizer, 0
    try:
        with torch.inference_mode():
            for ids in calibration_passes(teacher, tok, calibration, max_texts, max_tokens):
                m, d = seen["m"], seen["target"] - seen["out"] + seen["m"]  # D = L - Y, with Y = out - M
                mm += m.T @ m
                md += m.T @ d
                dd += (d * d).sum()
                tokens += ids.shape[1]
    finally:
        for h in handles:
            h.remove()
    if not tokens:
        raise UserError("ReplaceMe: the calibration texts hold no tokens")
    t = fit_linear_map(mm, md)
    # ||M T - D||^2 = tr(T^T MM T) - 2 tr(T^T MD) + ||D||^2; dropping alone leaves ||M - D||^2 (T = I).
    fit = (torch.trace(t.T @ mm @ t) - 2 * torch.trace(t.T @ md) + dd).item() / tokens
    drop = (torch.trace(mm) - 2 * torch.trace(md) + dd).item() / tokens
    plan = AssemblyPlan((tuple(Block(i, i, DROP if s <= i <= e else LAYER) for i in range(depth)),))
    model = assemble(bank, plan)
    down = bank.adapter.layers(model, bank.stack_names[0])[s - 1].mlp.down_proj
    with torch.no_grad():
        down.weight.copy_((t.T @ down.weight.double()).to(down.weight.dtype))
    if log:
        log(f"ReplaceMe: layers {s}-{e} removed, map folded into layer {s - 1} ({tokens:,} calibration tokens; "
            f"residual error per token {fit:.4g}, dropping alone {drop:.4g})")
    return plan, model.eval(), {"span": [s, e], "tokens": tokens, "fit_mse": fit, "drop_mse": drop}
