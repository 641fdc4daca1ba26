"""Heal one chosen assembly by distillation before it ships.

The bank's modules are trained to work in *any* assembly; once a plan is chosen, the whole assembled model can
adapt to that one plan (DistilBART fine-tunes its 12-3 student; Gromov et al. heal pruned LLMs with a short
run; LLM-Streamline trains its replacement layer in place). :func:`heal` assembles the plan as a standalone
model and distils it from the bank's teacher with the bank's own losses: task cross-entropy, logit KL (the LM
head in chunks of tokens, so large vocabularies stay in bounded memory) and the relative hidden-state MSE at
the end of *every* kept block (and the attention KL when ``w_attn``). The dev score is measured before healing
and every ``eval_every`` steps with the study's own scorer, and the best-scoring step wins (step 0, the
unhealed model, included: healing never makes the export worse on dev). The result is written by
:func:`~modsearch.export.export_model`, with the healing recorded in ``assembly.json`` and the model card.

Training runs in the bank trainer's context (eager attention, dropout off); dev scoring runs outside it, on the
model's own attention implementation, as the study scored it and as a fresh process loading the export will.
Checkpoints (``OUT.heal/``) make a run resumable; ``resume`` refuses a changed recipe, and another plan, bank,
training data, dev set, task, metric or scoring windows.

>>> from modsearch.heal import HealConfig, heal                                # doctest: +SKIP
>>> heal(bank, "0-1,2-3,4-5/0-2,3-5", "train.jsonl", devset, task, "exports/healed",
...      HealConfig(minutes=10))                                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field

import torch

from ._errors import UserError
from ._io import atomic_dir, sha256_file, write_json
from .assembly import assemble
from .export import export_model
from .plan._plan import DROP, MODULE
from .train._data import collate, encode_examples, read_examples
from .train._config import check_autocast, check_hidden_loss
from .train._losses import plan_distillation
from .train._loop import optimizer_moments, restore
from .train._student import training_context
from .data import length_batches
from .quality._score import score_quality
from .quality._windows import check_context

CKPT_SUFFIX = ".heal"
# What a checkpoint must agree on to be resumed, each named as a refusal says it: best scores compare only
# on one dev set, scored one way.
_IDENTITY = {"plan": "plan", "bank_checksum": "bank", "data_sha256": "training data", "dev_sha256": "dev set",
             "task": "task, metric or windows"}
_RUNTIME_FIELDS = ("threads", "chunk_tokens")  # how a run is carried out, not what it computes


@dataclass
class HealConfig:
    """Recipe of a healing run (recorded in ``assembly.json``).

    The budget is ``steps`` or ``minutes`` (wall time of training and dev scoring, across resumptions), or both
    (whichever ends first). The learning rate warms up linearly, then decays by cosine to a tenth of ``lr`` over
    the budget's progress (the larger of the step and time fractions). ``trainable``: ``all`` (every parameter
    but the token embeddings and LM head), ``modules`` (the plan's modules only) or ``last-K`` (the last K kept
    blocks of each stack). ``init="copy"`` starts each module from a copy of its span's first layer instead of
    the bank's trained weights: the ablation that shows what the bank's training is worth.
    """

    steps: int = 0
    minutes: float = 0.0
    trainable: str = "all"
    lr: float = 1e-4
    warmup: int = 20
    batch_tokens: int = 2048
    max_len: int = 128
    w_task: float = 1.0
    w_logits: float = 1.0
    w_hidden: float = 1.0
    w_attn: float = 1.0
    hidden_loss: str = "global"
    clip: float = 1.0
    eval_every: int = 100
    seed: int = 0
    init: str = "bank"
    chunk_tokens: int = 0
    device: str = "cpu"
    autocast: str = "none"
    threads: int = 0

    def validate(self) -> HealConfig:
        if self.steps < 0 or self.minutes < 0 or (self.steps == 0 and self.minutes == 0):
            raise UserError("give a healing budget: --steps N and/or --minutes M (positive)")
        if self.trainable not in ("all", "modules") and not _last_k(self.trainable):
            raise UserError(f"unknown --trainable {self.trainable!r}: use all, modules or last-K (e.g. last-2)")
        if self.init not in ("bank", "copy"):
            raise UserError(f"unknown init {self.init!r}: use bank or copy")
        if self.eval_every < 1 or self.batch_tokens < 1 or self.lr <= 0:
            raise UserError("--eval-every, --batch-tokens and --lr must be positive")
        check_hidden_loss(self.hidden_loss)
        check_autocast(self.autocast, self.device)
        weights = (self.w_task, self.w_logits, self.w_hidden, self.w_attn)
        if min(weights) < 0 or not any(weights):
            raise UserError("the loss weights --w-task, --w-logits, --w-hidden and --w-attn must be >= 0, one of "
                            "them positive")
        if self.device.split(":")[0] == "cuda" and not torch.cuda.is_available():
            raise UserError("--device cuda: this machine has no usable CUDA GPU; heal on --device cpu")
        return self

    def differences(self, other: dict) -> list[str]:
        mine = asdict(self)
        return sorted(k for k in mine if k not in _RUNTIME_FIELDS and other.get(k, mine[k]) != mine[k])

    def progress(self, step: int, elapsed: float) -> float:
        parts = ([step / self.steps] if self.steps else []) + ([elapsed / (60 * self.minutes)] if self.minutes else [])
        return max(parts)

    def learning_rate(self, step: int, elapsed: float) -> float:
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, self.progress(step, elapsed)))))


@dataclass
class HealState:
    step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed_s: float = 0.0
    best_step: int = 0
    best_score: float | None = None
    before: dict = field(default_factory=dict)
    history: list = field(default_factory=list)


def weights_sha256(model) -> str:
    """sha256 of a model's state dict: names, dtypes, shapes and bytes, in name order."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _last_k(text: str) -> int | None:
    head, _, k = text.partition("-")
    return int(k) if head == "last" and k.isdigit() and int(k) >= 1 else None


def _plan_slots(bank, model, plan) -> dict[str, list]:
    return {s: list(bank.adapter.layers(model, s)) for s in bank.stack_names}


def trainable_parameters(bank, model, plan, trainable: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The parameters that heal, by name; everything else is frozen."""
    frozen = {id(p) for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None
              for p in m.parameters()}
    if trainable == "all":
        chosen = [(n, p) for n, p in model.named_parameters() if id(p) not in frozen]
    else:
        k = _last_k(trainable)
        layers = []
        for name, blocks in zip(bank.stack_names, plan.stacks):
            kept = [b for b in blocks if b.kind != DROP]
            slots = list(bank.adapter.layers(model, name))
            picked = range(max(0, len(kept) - k), len(kept)) if k else \
                [i for i, b in enumerate(kept) if b.kind == MODULE]
            layers += [slots[i] for i in picked]
        ids = {id(p) for layer in layers for p in layer.parameters()} - frozen
        chosen = [(n, p) for n, p in model.named_parameters() if id(p) in ids]
    if not chosen:
        raise UserError(f"--trainable {trainable}: this plan has no such parameters (a plan without modules has "
                        f"nothing for 'modules' to heal)")
    for p in model.parameters():
        p.requires_grad_(False)
    for _, p in chosen:
        p.requires_grad_(True)
    return chosen


def _copy_init(bank, model, plan) -> None:
    """Each module slot gets the weights of its span's first original layer (the untrained bank's init)."""
    for name, blocks in zip(bank.stack_names, plan.stacks):
        kept = [b for b in blocks if b.kind != DROP]
        slots = list(bank.adapter.layers(model, name))
        for slot, b in zip(slots, kept):
            if b.kind == MODULE:
                src = bank.original_layer(name, b.start).state_dict()
                slot.load_state_dict({k: v for k, v in src.items() if k in slot.state_dict()}, strict=False)


def _score(model, bank, devset, task) -> dict:
    result = score_quality(model, bank.tokenizer, devset, task, source_prefix=bank.source_prefix)
    return dict(result.scores) | {"primary": result.primary, "value": result.value,
                                  "greater_is_better": result.greater_is_better}


def _better(a: float, b: float | None, greater: bool) -> bool:
    return b is None or (a > b if greater else a < b)


# -- checkpoints -----------------------------------------------------------------------------------------------
def _save(path, params, best, opt, state: HealState, cfg: HealConfig, ident: dict) -> None:
    from safetensors.torch import save_file

    moments = optimizer_moments(opt, params)
    with atomic_dir(path, overwrite=True) as tmp:
        save_file({n: p.detach().cpu().contiguous() for n, p in params}, os.path.join(tmp, "current.safetensors"))
        save_file({n: t.contiguous() for n, t in best.items()}, os.path.join(tmp, "best.safetensors"))
        if moments:
            save_file(moments, os.path.join(tmp, "optimizer.safetensors"))
        write_json(os.path.join(tmp, "state.json"), {"state": asdict(state), "config": asdict(cfg), **ident})


def _load(path, params, opt, cfg: HealConfig, ident: dict) -> tuple[HealState, dict]:
    from safetensors.torch import load_file  # the best weights

    with open(os.path.join(path, "state.json")) as f:
        saved = json.load(f)
    for k, v in ident.items():
        if saved.get(k) != v:
            raise UserError(f"--resume: the checkpoint in {path} is of another {_IDENTITY[k]}; rerun with the "
                            f"checkpoint's or delete it to start over")
    changed = cfg.differences(saved["config"])
    if changed:
        what = ", ".join(f"{k} {saved['config'].get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise UserError(f"--resume: the options differ from the checkpoint's ({what}); rerun with the same options "
                        f"or delete {path}")
    restore(path, "current.safetensors", params, opt)
    return HealState(**saved["state"]), load_file(os.path.join(path, "best.safetensors"))


# -- the loop --------------------------------------------------------------------------------------------------
def heal(bank, plan, data: str, devset, task, out: str, cfg: HealConfig, *, fields: tuple[str, ...],
         overwrite: bool = False, resume: bool = False, info: dict | None = None, progress: bool = True,
         log=print, start=None) -> dict:
    """Heal ``plan`` on the training rows of ``data`` (``fields``: source and target, or text), keep the step
    with the best score on ``devset`` (scored as ``task`` says: for ``lm``, in the windows of
    ``task.context_length`` and ``task.stride``, as a study scores) and export it to ``out``. Returns the healing
    record written to ``assembly.json``.

    ``start``: a model with ``plan``'s architecture to heal instead of the plan as the bank assembles it (a
    training-free baseline's weights, e.g. ReplaceMe's folded map); it is copied, and the sha256 of its weights
    joins the run's identity (a resume from other weights is refused) and the record."""
    from tqdm.auto import tqdm

    cfg.validate()
    plan = bank.plan(plan)
    if os.path.exists(out) and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    if not bank.has_tokenizer():
        raise UserError(f"bank {bank.path} has no tokenizer: healing reads text")
    if task.task == "lm":  # before minutes of training, not at the first scoring
        check_context(bank.base_model, task.context_length)
    rows = read_examples(data, fields)
    examples = encode_examples(bank, rows, cfg.max_len, bank.source_prefix)
    data_hash = sha256_file(data)
    ckpt = os.path.abspath(out).rstrip(os.sep) + CKPT_SUFFIX
    ident = {"plan": str(plan), "bank_checksum": bank.checksum, "data_sha256": data_hash,
             "dev_sha256": devset.content_hash, "task": task.to_json()}
    if start is not None:
        ident["start_sha256"] = weights_sha256(start)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    if start is not None:
        import copy

        model = copy.deepcopy(start)  # trainable_parameters() sets what trains
        if bank.adapter.depths(model) != dict(zip(bank.stack_names, plan.depths)):
            raise UserError(f"the starting model's depths {bank.adapter.depths(model)} are not plan {plan}'s")
    else:
        model = assemble(bank, plan)
    if cfg.init == "copy":
        _copy_init(bank, model, plan)
    model.to(cfg.device)
    bank.base_model.to(cfg.device)
    params = trainable_parameters(bank, model, plan, cfg.trainable)
    opt = torch.optim.AdamW([p for _, p in params], lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    if resume:
        if not os.path.exists(os.path.join(ckpt, "state.json")):
            raise UserError(f"--resume: no healing checkpoint at {ckpt}")
        state, best = _load(ckpt, params, opt, cfg, ident)
        log(f"resumed healing at step {state.step} ({state.elapsed_s:.0f} s spent)")
    else:
        if os.path.exists(ckpt):
            raise UserError(f"an unfinished healing run is checkpointed at {ckpt}; pass --resume to continue it or "
                            f"delete it")
        state = HealState()
        t0 = time.perf_counter()
        state.before = _score(model, bank, devset, task)
        state.best_score, state.best_step = state.before["value"], 0
        state.elapsed_s += time.perf_counter() - t0
        state.history.append({"step": 0, "dev": state.before["value"], "elapsed_s": round(state.elapsed_s, 1)})
        best = {n: p.detach().cpu().clone() for n, p in params}
        log(f"before healing: {task.primary} {state.before['value']:.4f}")
    greater = state.before["greater_is_better"]

    def budget_left() -> bool:
        return cfg.progress(state.step, state.elapsed_s) < 1.0

    bar = tqdm(total=cfg.steps or None, initial=state.step, disable=not progress, desc="healing", unit="step",
               dynamic_ncols=True)
    running, n_running = 0.0, 0
    while budget_left():
        with training_context(bank, model):
            while budget_left():
                batches = length_batches(examples, cfg.batch_tokens, cfg.seed + state.epoch)
                if state.batch >= len(batches):
                    state.epoch, state.batch = state.epoch + 1, 0
                    continue
                t0 = time.perf_counter()
                inputs, labels = collate(bank, examples, batches[state.batch])
                inputs = {k: v.to(cfg.device) for k, v in inputs.items()}
                for g in opt.param_groups:
                    g["lr"] = cfg.learning_rate(state.step, state.elapsed_s)
                opt.zero_grad(set_to_none=True)
                parts, _ = plan_distillation(bank, model, _plan_slots(bank, model, plan), plan, inputs,
                                             labels.to(cfg.device), cfg, backward=True, every_block=True)
                torch.nn.utils.clip_grad_norm_([p for _, p in params if p.grad is not None], cfg.clip)
                opt.step()
                state.step, state.batch = state.step + 1, state.batch + 1
                state.elapsed_s += time.perf_counter() - t0
                running, n_running = running + parts["loss"], n_running + 1
                bar.update(1)
                bar.set_postfix(loss=f"{running / n_running:.3f}", best=f"{state.best_score:.4g}")
                if state.step % cfg.eval_every == 0:
                    break
        t0 = time.perf_counter()
        score = _score(model, bank, devset, task)
        state.elapsed_s += time.perf_counter() - t0
        state.history.append({"step": state.step, "loss": running / max(n_running, 1), "dev": score["value"],
                              "elapsed_s": round(state.elapsed_s, 1)})
        running, n_running = 0.0, 0
        if _better(score["value"], state.best_score, greater):
            state.best_score, state.best_step = score["value"], state.step
            best = {n: p.detach().cpu().clone() for n, p in params}
        log(f"step {state.step}: dev {task.primary} {score['value']:.4f} (best {state.best_score:.4f} at step "
            f"{state.best_step}), {state.elapsed_s:.0f} s")
        _save(ckpt, params, best, opt, state, cfg, ident)
    bar.close()

    with torch.no_grad():
        for n, p in params:
            p.copy_(best[n].to(p.device))
    model.to("cpu").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    record = {"config": asdict(cfg), "steps": state.step, "best_step": state.best_step,
              "seconds": round(state.elapsed_s, 1),
              "data": {"name": os.path.basename(data), "sha256": data_hash, "rows": len(rows)},
              "dev": {"metric": task.primary, "examples": len(devset), "before": state.before["value"],
                      "after": state.best_score, "task": task.to_json()},
              "history": state.history}
    if start is not None:
        record["start_sha256"] = ident["start_sha256"]
    spec = dict(info or {})
    spec["healing"] = record
    export_model(bank, plan, out, overwrite=overwrite, info=spec, model=model)
    shutil.rmtree(ckpt, ignore_errors=True)
    return record
