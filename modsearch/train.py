"""Train a bank's modules by multi-grained module replacing with knowledge distillation.

This is the training phase of *Modular Transformers* (Zhou, Le Bras, Choi, ACL Findings 2023), itself built on
BERT-of-Theseus module replacing. The teacher (the bank's original model) stays frozen; only module parameters
train. Each step:

1. samples a student: walking each stack left to right, at every position where modules start, one of them
   (granularity chosen uniformly) replaces its span with probability ``p(t)``; otherwise the original layer
   stays. ``p`` rises linearly from ``p_start`` to 1 over the first ``ramp`` fraction of training, then stays
   at 1, so every module trains first among original layers and then among other modules (many contexts);
2. runs the frozen teacher and the student on the same batch, with eager attention so that attention
   probabilities exist;
3. minimises ``task + w_logits·KL(teacher‖student) + w_hidden·Σ relMSE + w_attn·Σ attnKL`` where, for every
   module in use, relMSE compares its output with the teacher's hidden state at the end of its span, normalised
   by that hidden state's mean square, and attnKL compares its self-attention distributions with those of the
   last teacher layer of its span.

Why these weights (all 1 by default): every term is scale-free. The task loss and both KLs are in nats per
token; the hidden-state MSE is divided by the teacher state's mean square, so it measures relative error and
does not grow with the residual stream's norm in deeper layers (pre-LN models). Equal weights therefore give
each signal a comparable pull; the ablation knobs are exposed as options.

>>> from modsearch.train import TrainConfig, train_bank                 # doctest: +SKIP
>>> train_bank(bank, "train.jsonl", TrainConfig(steps=2000))             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import UserError
from ._io import atomic_dir, sha256_file, write_json
from .assembly import _skeleton
from .bank import LayerBank
from .plan import AssemblyPlan, Block, LAYER, MODULE

CKPT_DIR = ".train"


@dataclass
class TrainConfig:
    """Recipe of a ``bank train`` run (recorded in the manifest)."""

    steps: int = 2000
    batch_tokens: int = 2048
    max_len: int = 128
    lr: float = 1e-3
    warmup: int = 100
    weight_decay: float = 0.0
    p_start: float = 0.3
    ramp: float = 0.7
    w_task: float = 1.0
    w_logits: float = 1.0
    w_hidden: float = 1.0
    w_attn: float = 1.0
    clip: float = 1.0
    seed: int = 0
    eval_every: int = 500
    eval_size: int = 200
    checkpoint_every: int = 200
    source_field: str = "source"
    target_field: str = "target"
    text_field: str = "text"
    threads: int = 0


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed_s: float = 0.0
    history: list = field(default_factory=list)  # periodic records: step, losses, per-module hidden loss
    module_loss: dict = field(default_factory=dict)  # running per-module relMSE since the last record


# -- data ------------------------------------------------------------------------------------------------
def read_examples(path: str, fields: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Rows of a local JSONL/CSV file as tuples of the given fields (via `datasets`, offline)."""
    if not os.path.isfile(path):
        raise UserError(f"training data {path} not found")
    ext = os.path.splitext(path)[1].lower()
    kind = {".jsonl": "json", ".json": "json", ".csv": "csv"}.get(ext)
    if kind is None:
        raise UserError(f"training data {path}: use a .jsonl or .csv file")
    import datasets

    datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(kind, data_files=path, split="train")
    except Exception as exc:
        raise UserError(f"training data {path} cannot be read ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise UserError(f"training data {path} lacks field(s) {', '.join(missing)}; it has "
                        f"{', '.join(ds.column_names)} (set the field names with --source-field/--target-field)")
    rows = [tuple(str(r[f] or "") for f in fields) for r in ds]
    rows = [r for r in rows if all(x.strip() for x in r)]
    if not rows:
        raise UserError(f"training data {path} has no usable rows")
    return rows


def _encode(bank: LayerBank, rows, cfg: TrainConfig, prefix: str):
    tok = bank.tokenizer
    if bank.kind == "seq2seq":
        src = tok([prefix + r[0] for r in rows], truncation=True, max_length=cfg.max_len)["input_ids"]
        tgt = tok([r[1] for r in rows], truncation=True, max_length=cfg.max_len)["input_ids"]
        return list(zip(src, tgt))
    ids = tok([r[0] for r in rows], truncation=True, max_length=cfg.max_len)["input_ids"]
    return [(x, x) for x in ids if len(x) > 1]


def length_batches(examples, batch_tokens: int, seed: int) -> list[list[int]]:
    """Length-bucketed batches of about ``batch_tokens`` padded tokens (longest side), in a seeded random order.

    ``examples`` are tuples of token-id lists (source, target). The order depends only on the seed, so a resumed
    run sees exactly the batches an uninterrupted one would.
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


def _collate(bank: LayerBank, examples, idx):
    """Model inputs and the label tensor (-100 where padded) for a batch."""
    pad = bank.tokenizer.pad_token_id
    pad = 0 if pad is None else pad
    rows = [examples[i] for i in idx]
    if bank.kind == "seq2seq":
        start = bank.base_model.config.decoder_start_token_id
        ls, lt = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
        src = torch.full((len(rows), ls), pad, dtype=torch.long)
        dec = torch.full((len(rows), lt), pad, dtype=torch.long)
        labels = torch.full((len(rows), lt), -100, dtype=torch.long)
        for r, (s, t) in enumerate(rows):
            src[r, : len(s)] = torch.tensor(s)
            labels[r, : len(t)] = torch.tensor(t)
            dec[r, 0] = start
            dec[r, 1 : len(t)] = torch.tensor(t[:-1])
        dmask = labels.ne(-100).long()
        dmask[:, 0] = 1
        smask = torch.tensor([[1] * len(s) + [0] * (ls - len(s)) for s, _ in rows], dtype=torch.long)
        inputs = {"input_ids": src, "attention_mask": smask, "decoder_input_ids": dec,
                  "decoder_attention_mask": dmask}
        return inputs, labels
    ln = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), ln), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), ln), dtype=torch.long)
    for r, (x, _) in enumerate(rows):
        ids[r, : len(x)] = torch.tensor(x)
        mask[r, : len(x)] = 1
    labels = ids.masked_fill(mask.eq(0), -100)
    labels = torch.cat([labels[:, 1:], torch.full((len(rows), 1), -100, dtype=torch.long)], dim=1)
    return {"input_ids": ids, "attention_mask": mask}, labels


# -- capture ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _capture(layers: list[nn.Module], attentions: list[nn.Module] | None):
    """Record each layer's output hidden state and, optionally, its self-attention probabilities."""
    hidden: list[torch.Tensor | None] = [None] * len(layers)
    attn: list[torch.Tensor | None] = [None] * len(layers)
    handles = []

    def hook_layer(i):
        def fn(_m, _inp, out):
            hidden[i] = out[0] if isinstance(out, tuple) else out
        return fn

    def hook_attn(i):
        def fn(_m, _inp, out):
            if isinstance(out, tuple) and torch.is_tensor(out[-1]):
                attn[i] = out[-1]
        return fn

    try:
        for i, layer in enumerate(layers):
            handles.append(layer.register_forward_hook(hook_layer(i)))
            if attentions is not None:
                handles.append(attentions[i].register_forward_hook(hook_attn(i)))
        yield hidden, attn
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _eager_attention(modules: list[nn.Module]):
    """Switch every config reachable from ``modules`` to eager attention (so attention probabilities exist)."""
    configs = {}
    for root in modules:
        for m in root.modules():
            c = getattr(m, "config", None)
            if c is not None and hasattr(c, "_attn_implementation") and id(c) not in configs:
                configs[id(c)] = (c, c._attn_implementation)
    try:
        for c, _ in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for c, old in configs.values():
            c._attn_implementation = old


# -- the student -----------------------------------------------------------------------------------------
def sample_student(bank: LayerBank, p: float, rng: random.Random) -> AssemblyPlan:
    """A plan with no drops where each module-starting position is replaced with probability ``p``."""
    spans = bank.module_spans()
    stacks = []
    for s, depth in enumerate(bank.depths):
        blocks, pos = [], 0
        while pos < depth:
            starting = sorted({j for i, j in spans[s] if i == pos})
            if starting and rng.random() < p:
                # granularity uniformly among the modules that start here
                j = rng.choice(starting)
                blocks.append(Block(pos, j, MODULE))
                pos = j + 1
            else:
                blocks.append(Block(pos, pos, LAYER))
                pos += 1
        stacks.append(tuple(blocks))
    return AssemblyPlan(tuple(stacks))


def replace_probability(step: int, cfg: TrainConfig) -> float:
    ramp_steps = max(1, int(cfg.ramp * cfg.steps))
    return min(1.0, cfg.p_start + (1.0 - cfg.p_start) * step / ramp_steps)


def _lr(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


class _Student:
    """A skeleton of the base model (frozen copies of embeddings and head) whose layer lists are swapped to
    the sampled plan at each step. Original layers are the teacher's own frozen objects; modules train."""

    def __init__(self, bank: LayerBank):
        self.bank = bank
        self.shell = _skeleton(bank)
        self.shell.eval()
        for p in self.shell.parameters():
            p.requires_grad_(False)

    def set_plan(self, plan: AssemblyPlan) -> dict[str, list[nn.Module]]:
        bank, ad = self.bank, self.bank.adapter
        slots = {}
        for name, blocks in zip(bank.stack_names, plan.stacks):
            layers = [bank.module_layer(name, b.start, b.end) if b.kind == MODULE else bank.original_layer(name, b.start)
                      for b in blocks]
            ad.set_layers(self.shell, name, layers)
            slots[name] = layers
        ad.set_depths(self.shell, dict(zip(bank.stack_names, plan.depths)),
                      dict(zip(bank.stack_names, (list(s) for s in plan.sources()))))
        return slots


def _attention_modules(bank: LayerBank, layers: list[nn.Module]) -> list[nn.Module]:
    return [bank.adapter.self_attention(layer) for layer in layers]


def _forward(model, inputs):
    return model(**inputs, use_cache=False, return_dict=True)


def distillation_step(bank: LayerBank, student: _Student, plan: AssemblyPlan, inputs, labels, cfg: TrainConfig):
    """Losses for one batch. Returns (total loss tensor, dict of float parts, per-module relMSE floats)."""
    teacher = bank.base_model
    ad = bank.adapter
    tmask = labels.ne(-100)
    t_layers = {s: list(ad.layers(teacher, s)) for s in bank.stack_names}
    slots = student.set_plan(plan)
    masks = {}
    if bank.kind == "seq2seq":
        masks = {"encoder": inputs["attention_mask"].bool(), "decoder": tmask | inputs["decoder_attention_mask"].bool()}
    else:
        masks = {"decoder": inputs["attention_mask"].bool()}

    with torch.no_grad(), contextlib.ExitStack() as es:
        t_caps = {s: es.enter_context(_capture(t_layers[s], _attention_modules(bank, t_layers[s])))
                  for s in bank.stack_names}
        t_logits = _forward(teacher, inputs).logits.float()
    with contextlib.ExitStack() as es:
        s_caps = {s: es.enter_context(_capture(slots[s], _attention_modules(bank, slots[s]))) for s in bank.stack_names}
        s_logits = _forward(student.shell, inputs).logits.float()

    vocab = s_logits.shape[-1]
    task = F.cross_entropy(s_logits.view(-1, vocab), labels.view(-1), ignore_index=-100)
    t_logp = F.log_softmax(t_logits, -1)[tmask]
    s_logp = F.log_softmax(s_logits, -1)[tmask]
    kl_logits = F.kl_div(s_logp, t_logp, log_target=True, reduction="batchmean")

    hidden_terms, attn_terms, per_module = [], [], {}
    for name, blocks in zip(bank.stack_names, plan.stacks):
        t_hidden, t_attn = t_caps[name]
        s_hidden, s_attn = s_caps[name]
        m = masks[name]
        for slot, b in enumerate(blocks):
            if b.kind != MODULE:
                continue
            target = t_hidden[b.end][m]
            rel = F.mse_loss(s_hidden[slot][m], target) / target.pow(2).mean().clamp_min(1e-6)
            hidden_terms.append(rel)
            local = cfg.w_hidden * rel.item()
            if s_attn[slot] is not None and t_attn[b.end] is not None:
                # KL over keys, for every head and every real query position.
                sa = s_attn[slot].float().clamp_min(1e-9)
                ta = t_attn[b.end].float().clamp_min(1e-9)
                kl = (ta * (ta.log() - sa.log())).sum(-1)  # batch, heads, queries
                q = m[:, None, : kl.shape[-1]].expand_as(kl)
                attn_terms.append(kl[q].mean())
                local += cfg.w_attn * attn_terms[-1].item()
            # The module's own distillation loss: its weighted hidden-state and attention terms.
            per_module[f"{name}.{b.start}-{b.end}"] = local
    hidden = torch.stack(hidden_terms).sum() if hidden_terms else s_logits.new_zeros(())
    attn = torch.stack(attn_terms).sum() if attn_terms else s_logits.new_zeros(())
    total = cfg.w_task * task + cfg.w_logits * kl_logits + cfg.w_hidden * hidden + cfg.w_attn * attn
    parts = {"loss": total.item(), "task": task.item(), "kl": kl_logits.item(), "hidden": hidden.item(),
             "attn": attn.item()}
    return total, parts, per_module


# -- evaluation --------------------------------------------------------------------------------------------
@torch.no_grad()
def teacher_forced(bank: LayerBank, model, examples, batch_tokens: int) -> dict:
    """Mean token cross-entropy and token accuracy of ``model`` on ``examples`` (teacher forcing)."""
    total, correct, n = 0.0, 0, 0
    for idx in length_batches(examples, batch_tokens, seed=0):
        inputs, labels = _collate(bank, examples, idx)
        logits = _forward(model, inputs).logits.float()
        m = labels.ne(-100)
        total += F.cross_entropy(logits[m], labels[m], reduction="sum").item()
        correct += (logits.argmax(-1)[m] == labels[m]).sum().item()
        n += int(m.sum())
    return {"dev_loss": total / max(n, 1), "dev_token_acc": correct / max(n, 1)}


def module_alone_plan(bank: LayerBank, key: tuple[str, int, int]) -> AssemblyPlan:
    stack, i, j = key

    def layers(a: int, b: int) -> tuple[Block, ...]:
        return tuple(Block(p, p, LAYER) for p in range(a, b))

    return AssemblyPlan(tuple(layers(0, i) + (Block(i, j, MODULE),) + layers(j + 1, depth) if name == stack
                              else layers(0, depth) for name, depth in zip(bank.stack_names, bank.depths)))


def evaluate_modules(bank: LayerBank, student: _Student, dev, cfg: TrainConfig) -> dict[str, dict]:
    """Each module alone in an otherwise original model, on the dev examples: teacher-forced loss and token
    accuracy, and its own distillation loss (relative MSE to the teacher's hidden state at the end of its span
    plus the attention KL, weighted as in training)."""
    out = {"teacher": teacher_forced(bank, bank.base_model, dev, cfg.batch_tokens)}
    batches = length_batches(dev, cfg.batch_tokens, seed=0)
    for key in bank.modules:
        plan = module_alone_plan(bank, key)
        student.set_plan(plan)
        metrics = teacher_forced(bank, student.shell, dev, cfg.batch_tokens)
        rel, n = 0.0, 0
        with torch.no_grad():
            for idx in batches:
                inputs, labels = _collate(bank, dev, idx)
                _, _, per_module = distillation_step(bank, student, plan, inputs, labels, cfg)
                rel += sum(per_module.values()) * len(idx)
                n += len(idx)
        out[f"{key[0]}.{key[1]}-{key[2]}"] = metrics | {"dev_distill": rel / max(n, 1)}
    return out


# -- checkpoints -------------------------------------------------------------------------------------------
def _params_of(bank: LayerBank) -> list[tuple[str, nn.Parameter]]:
    out = []
    for key in sorted(bank.modules):
        layer = bank.module_layer(*key)
        private = set(bank.adapter.stack_private_keys(key[0]))
        for n, p in layer.named_parameters():
            if n in private:
                p.requires_grad_(False)
                continue
            p.requires_grad_(True)
            out.append((f"{key[0]}.{key[1]}-{key[2]}::{n}", p))
    return out


def _save_checkpoint(bank: LayerBank, params, opt, state: TrainState, cfg: TrainConfig, data_hash: str) -> None:
    from safetensors.torch import save_file

    path = os.path.join(bank.path, CKPT_DIR)
    names = {id(p): n for n, p in params}
    moments = {}
    for p, st in opt.state.items():
        for k, v in st.items():
            moments[f"{names[id(p)]}::{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().clone().contiguous()
    with atomic_dir(path, overwrite=True) as tmp:
        save_file({n: p.detach().clone().contiguous() for n, p in params}, os.path.join(tmp, "modules.safetensors"))
        if moments:
            save_file(moments, os.path.join(tmp, "optimizer.safetensors"))
        write_json(os.path.join(tmp, "state.json"), {"state": asdict(state), "config": asdict(cfg),
                                                      "data_sha256": data_hash, "bank_checksum": bank.checksum})


def _load_checkpoint(bank: LayerBank, params, opt, cfg: TrainConfig, data_hash: str) -> TrainState:
    from safetensors.torch import load_file

    path = os.path.join(bank.path, CKPT_DIR)
    with open(os.path.join(path, "state.json")) as f:
        saved = json.load(f)
    if saved["data_sha256"] != data_hash:
        raise UserError("--resume: the training data differs from the checkpoint's (sha256 mismatch)")
    if saved["bank_checksum"] != bank.checksum:
        raise UserError("--resume: the bank changed since the checkpoint was written")
    weights = load_file(os.path.join(path, "modules.safetensors"))
    with torch.no_grad():
        for n, p in params:
            p.copy_(weights[n])
    opt_path = os.path.join(path, "optimizer.safetensors")
    if os.path.exists(opt_path):
        moments = load_file(opt_path)
        sd = opt.state_dict()
        sd["state"] = {}
        for i, (n, _) in enumerate(params):
            entry = {k.rsplit("::", 1)[1]: v for k, v in moments.items() if k.rsplit("::", 1)[0] == n}
            if entry:
                sd["state"][i] = entry
        opt.load_state_dict(sd)
    return TrainState(**saved["state"])


# -- the loop ----------------------------------------------------------------------------------------------
def train_bank(bank: LayerBank, data: str, cfg: TrainConfig, dev_data: str | None = None, resume: bool = False,
               progress: bool = True, log=print) -> dict:
    """Train every module of ``bank`` in place; returns the final per-module dev metrics.

    Checkpoints go to ``BANK/.train`` every ``checkpoint_every`` steps; ``resume=True`` continues from there
    with the same data order. At the end the module files, their sha256 and the manifest (recipe, data hashes,
    steps, per-module dev metrics) are updated, and the checkpoint is removed.
    """
    from tqdm.auto import tqdm

    if not bank.modules:
        raise UserError(f"bank {bank.path} has no modules to train")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    fields = (cfg.source_field, cfg.target_field) if bank.kind == "seq2seq" else (cfg.text_field,)
    data_hash = sha256_file(data) if os.path.isfile(data) else ""
    rows = read_examples(data, fields)
    examples = _encode(bank, rows, cfg, bank.source_prefix)
    dev_rows = read_examples(dev_data, fields)[: cfg.eval_size] if dev_data else rows[-cfg.eval_size:]
    dev = _encode(bank, dev_rows, cfg, bank.source_prefix)
    dev_hash = sha256_file(dev_data) if dev_data else data_hash

    teacher = bank.base_model
    params = _params_of(bank)
    opt = torch.optim.AdamW([p for _, p in params], lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    student = _Student(bank)
    ckpt = os.path.join(bank.path, CKPT_DIR, "state.json")
    state = TrainState()
    if resume:
        if not os.path.exists(ckpt):
            raise UserError(f"--resume: no checkpoint in {os.path.join(bank.path, CKPT_DIR)}")
        state = _load_checkpoint(bank, params, opt, cfg, data_hash)
        log(f"resumed at step {state.step}")
    elif os.path.exists(ckpt):
        raise UserError(f"bank {bank.path} has an unfinished training checkpoint; pass --resume to continue it "
                        f"or delete {os.path.join(bank.path, CKPT_DIR)}")

    all_layers = [teacher] + [bank.module_layer(*k) for k in bank.modules]
    bar = tqdm(total=cfg.steps, initial=state.step, disable=not progress, desc="training modules", unit="step",
               dynamic_ncols=True)
    running: dict[str, float] = {}
    n_running, tokens = 0, 0
    t_start = time.perf_counter()
    with _eager_attention(all_layers):
        for layer in all_layers[1:]:
            layer.train(False)  # dropout off: distillation targets are deterministic
        while state.step < cfg.steps:
            batches = length_batches(examples, cfg.batch_tokens, cfg.seed + state.epoch)
            while state.batch < len(batches) and state.step < cfg.steps:
                t0 = time.perf_counter()
                inputs, labels = _collate(bank, examples, batches[state.batch])
                # One RNG per step, so a resumed run samples exactly the students an uninterrupted one would.
                rng = random.Random(f"{cfg.seed}:{state.step}")
                plan = sample_student(bank, replace_probability(state.step, cfg), rng)
                for g in opt.param_groups:
                    g["lr"] = _lr(state.step, cfg)
                loss, parts, per_module = distillation_step(bank, student, plan, inputs, labels, cfg)
                opt.zero_grad(set_to_none=True)
                if loss.requires_grad:
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg.clip)
                    opt.step()
                state.step += 1
                state.batch += 1
                state.elapsed_s += time.perf_counter() - t0
                tokens += int(labels.ne(-100).sum())
                for k, v in parts.items():
                    running[k] = running.get(k, 0.0) + v
                n_running += 1
                for k, v in per_module.items():
                    agg = state.module_loss.setdefault(k, [0.0, 0])
                    agg[0] += v
                    agg[1] += 1
                bar.update(1)
                bar.set_postfix(loss=f"{running['loss'] / n_running:.3f}", p=f"{replace_probability(state.step, cfg):.2f}",
                                tok_s=f"{tokens / max(time.perf_counter() - t_start, 1e-9):.0f}")
                if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                    record = {"step": state.step, **{k: v / n_running for k, v in running.items()},
                              "module_distill": {k: a[0] / a[1] for k, a in state.module_loss.items()}}
                    if cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == cfg.steps):
                        record["dev"] = evaluate_modules(bank, student, dev, cfg)
                    state.history.append(record)
                    state.module_loss = {}
                    running, n_running = {}, 0
                    _save_checkpoint(bank, params, opt, state, cfg, data_hash)
            if state.batch >= len(batches):
                state.epoch += 1
                state.batch = 0
    bar.close()

    final = evaluate_modules(bank, student, dev, cfg)
    states = {k: {n: t for n, t in bank.module_layer(*k).state_dict().items()
                  if n not in bank.adapter.stack_private_keys(k[0])} for k in bank.modules}
    metrics = {k: final[f"{k[0]}.{k[1]}-{k[2]}"] | {"teacher_dev_loss": final["teacher"]["dev_loss"]}
               for k in bank.modules}
    training = {"method": "multi-grained module replacing + KD (Modular Transformers)", "config": asdict(cfg),
                "steps": state.step, "epochs": state.epoch, "train_seconds": round(state.elapsed_s, 1),
                "history": state.history,
                "data": {"train": {"path": os.path.abspath(data), "sha256": data_hash, "rows": len(rows)},
                         "dev": {"path": os.path.abspath(dev_data) if dev_data else None, "sha256": dev_hash,
                                 "rows": len(dev)}}}
    bank.save_modules(states, trained=True, metrics=metrics, provenance={"training": training})
    import shutil

    shutil.rmtree(os.path.join(bank.path, CKPT_DIR), ignore_errors=True)
    return final


def data_fingerprint(rows) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, ensure_ascii=False).encode())
    return h.hexdigest()
