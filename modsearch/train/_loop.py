"""The training loop: checkpoints every N steps, exact resumption, continuation stages, per-module dev metrics."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict

import torch
from torch import nn

from .._errors import UserError
from .._io import atomic_dir, sha256_file, write_json
from ..plan._plan import LAYER, MODULE, AssemblyPlan, Block
from ._config import TrainConfig, TrainState, learning_rate, replace_probability
from ..data import length_batches
from ._data import collate, encode_examples, read_examples
from ._losses import distillation_step, hidden_step, teacher_forced
from ._student import Student, sample_student, training_context

CKPT_DIR = ".train"


def module_alone_plan(bank, key: tuple[str, int, int]) -> AssemblyPlan:
    """The teacher with one module in place of its span."""
    stack, i, j = key

    def layers(a: int, b: int) -> tuple[Block, ...]:
        return tuple(Block(p, p, LAYER) for p in range(a, b))

    return AssemblyPlan(tuple(layers(0, i) + (Block(i, j, MODULE),) + layers(j + 1, depth) if name == stack
                              else layers(0, depth) for name, depth in zip(bank.stack_names, bank.depths)))


def _batches(bank, examples, cfg: TrainConfig):
    device = cfg.device
    for idx in length_batches(examples, cfg.batch_tokens, seed=0):
        inputs, labels = collate(bank, examples, idx)
        yield {k: v.to(device) for k, v in inputs.items()}, labels.to(device), len(idx)


def evaluate_modules(bank, student: Student, dev, cfg: TrainConfig) -> dict[str, dict]:
    """Each module alone in an otherwise original model, on the dev examples: teacher-forced loss and token
    accuracy, and its own distillation loss (its weighted hidden-state and attention terms, as in training)."""
    with training_context(bank, student):
        collated = list(_batches(bank, dev, cfg))
        batches = [(i, la) for i, la, _ in collated]
        sizes = [n for _, _, n in collated]
        out = {"teacher": teacher_forced(bank, bank.base_model, batches, cfg.chunk_tokens)}
        hidden_losses = {}
        if cfg.objective == "hidden":
            for (inputs, labels), n in zip(batches, sizes):
                _, per_module = hidden_step(bank, inputs, labels, cfg)
                for k, v in per_module.items():
                    hidden_losses[k] = hidden_losses.get(k, 0.0) + v * n
        for key in bank.modules:
            name = f"{key[0]}.{key[1]}-{key[2]}"
            plan = module_alone_plan(bank, key)
            student.set_plan(plan)
            metrics = teacher_forced(bank, student.shell, batches, cfg.chunk_tokens)
            if cfg.objective == "hidden":
                rel = hidden_losses[name]
            else:
                rel = 0.0
                with torch.no_grad():
                    for (inputs, labels), n in zip(batches, sizes):
                        _, per_module = distillation_step(bank, student, plan, inputs, labels, cfg)
                        rel += sum(per_module.values()) * n
            out[name] = metrics | {"dev_distill": rel / max(sum(sizes), 1)}
    return out


# -- checkpoints -------------------------------------------------------------------------------------------
def _trainable(bank) -> list[tuple[str, nn.Parameter]]:
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


def _save_checkpoint(bank, params, opt, state: TrainState, cfg: TrainConfig, mode: str, data_hash: str) -> None:
    from safetensors.torch import save_file

    moments = optimizer_moments(opt, params)
    with atomic_dir(os.path.join(bank.path, CKPT_DIR), overwrite=True) as tmp:
        save_file({n: p.detach().to("cpu").clone().contiguous() for n, p in params},
                  os.path.join(tmp, "modules.safetensors"))
        if moments:
            save_file(moments, os.path.join(tmp, "optimizer.safetensors"))
        write_json(os.path.join(tmp, "state.json"), {"state": asdict(state), "config": asdict(cfg), "mode": mode,
                                                      "data_sha256": data_hash, "bank_checksum": bank.checksum})


def _load_checkpoint(bank, params, opt, cfg: TrainConfig, mode: str, data_hash: str) -> TrainState:
    path = os.path.join(bank.path, CKPT_DIR)
    with open(os.path.join(path, "state.json")) as f:
        saved = json.load(f)
    if saved["data_sha256"] != data_hash:
        raise UserError("--resume: the training data differs from the checkpoint's (sha256 mismatch)")
    if saved["bank_checksum"] != bank.checksum:
        raise UserError("--resume: the bank changed since the checkpoint was written")
    if saved.get("mode", "train") != mode:
        flag = "with" if saved.get("mode") == "continue" else "without"
        raise UserError(f"--resume: the checkpoint is of a '{saved.get('mode', 'train')}' run; resume it {flag} "
                        f"--continue")
    changed = cfg.differences(saved["config"])
    if changed:
        what = ", ".join(f"{k} {saved['config'].get(k)!r} -> {getattr(cfg, k)!r}" for k in changed)
        raise UserError(f"--resume: the options differ from the checkpoint's ({what}); rerun with the same options "
                        f"or delete {path} to start over")
    restore(path, "modules.safetensors", params, opt)
    return TrainState(**saved["state"])


def optimizer_moments(opt, params) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as named CPU tensors (``NAME::KEY``), for a safetensors checkpoint."""
    names = {id(p): n for n, p in params}
    return {f"{names[id(p)]}::{k}": (v if torch.is_tensor(v) else torch.tensor(v)).detach().to("cpu").clone()
            .contiguous() for p, st in opt.state.items() for k, v in st.items()}


def restore(path: str, weights_file: str, params, opt) -> None:
    """Load named ``params`` from ``path/weights_file`` and the optimiser's moments from
    ``path/optimizer.safetensors`` (when there are any): a resumed run continues exactly."""
    from safetensors.torch import load_file

    device = params[0][1].device if params else "cpu"
    weights = load_file(os.path.join(path, weights_file))
    with torch.no_grad():
        for n, p in params:
            p.copy_(weights[n].to(device))
    opt_path = os.path.join(path, "optimizer.safetensors")
    if os.path.exists(opt_path):
        moments = load_file(opt_path)
        sd = opt.state_dict()
        sd["state"] = {}
        for i, (n, _) in enumerate(params):
            entry = {k.rsplit("::", 1)[1]: v.to(device) for k, v in moments.items() if k.rsplit("::", 1)[0] == n}
            if entry:
                sd["state"][i] = entry
        opt.load_state_dict(sd)


def _data_record(path: str | None, digest: str, rows: int) -> dict:
    # Names and hashes only: an absolute path names the machine it was trained on, not the data.
    return {"name": os.path.basename(path) if path else None, "sha256": digest, "rows": rows}


def _recorded_stages(prov: dict) -> list[dict]:
    """The training stages a bank's provenance records; a bank from before ``training_stages`` has its one
    ``training`` record."""
    if prov.get("training_stages") is not None:
        return prov["training_stages"]
    old = prov.get("training")
    return [old | {"stage": old.get("stage", "train")}] if old else []


def _replayed_stages(bank, cfg: TrainConfig, data_hash: str) -> list[int]:
    """Earlier stages (numbered from 1) whose batches a stage with ``cfg`` on this data would draw again: the
    order depends only on the data, the seed, the batch size in tokens and the length cut."""
    keys = ("seed", "batch_tokens", "max_len")
    return [i + 1 for i, st in enumerate(_recorded_stages(bank.manifest["provenance"]))
            if st.get("data", {}).get("train", {}).get("sha256") == data_hash
            and all(st.get("config", {}).get(k) == getattr(cfg, k) for k in keys)]


# -- the loop ----------------------------------------------------------------------------------------------
def train_bank(bank, data: str, cfg: TrainConfig, dev_data: str | None = None, resume: bool = False,
               continue_training: bool = False, progress: bool = True, log=print) -> dict:
    """Train every module of ``bank`` in place; returns the final per-module dev metrics.

    A bank whose modules are all trained is trained further only with ``continue_training`` (a new stage with
    a fresh schedule, recorded beside the earlier ones in the manifest). Checkpoints go to ``BANK/.train`` every
    ``checkpoint_every`` steps; ``resume=True`` continues from there with the same data order, and refuses
    options that would change the run. At the end the module files, their sha256 and the manifest are updated
    (crash-safe: :meth:`LayerBank.save_modules`), and the checkpoint is removed.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    if not bank.modules:
        raise UserError(f"bank {bank.path} has no modules to train")
    untrained = sorted(e.name for e in bank.modules.values() if not e.trained)
    mode = "continue" if continue_training else "train"
    if continue_training and untrained:
        raise UserError(f"--continue trains trained modules further, but {len(untrained)} module(s) of {bank.path} "
                        f"are untrained ({', '.join(untrained[:4])}); train them first without --continue")
    cap = cfg.student_max_span
    longer = sorted(e.name for e in bank.modules.values() if cap and not e.trained and e.span > cap)
    if longer:
        raise UserError(f"--student-max-span {cfg.student_max_span} would leave {len(longer)} untrained module(s) "
                        f"untrained ({', '.join(longer[:4])}); train every module first, then cap the students")
    if not continue_training and not untrained and not resume:
        raise UserError(f"every module of {bank.path} is trained already; pass --continue to train them further "
                        f"with a fresh schedule")
    fields = (cfg.source_field, cfg.target_field) if bank.kind == "seq2seq" else (cfg.text_field,)
    rows = read_examples(data, fields)
    dev_rows = read_examples(dev_data, fields)[: cfg.eval_size] if dev_data else rows[-cfg.eval_size:]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data_hash = sha256_file(data)
    dev_hash = sha256_file(dev_data) if dev_data else data_hash
    examples = encode_examples(bank, rows, cfg.max_len, bank.source_prefix)
    dev = encode_examples(bank, dev_rows, cfg.max_len, bank.source_prefix)
    if continue_training and not resume:
        replayed = _replayed_stages(bank, cfg, data_hash)
        if replayed:
            which = f"stage{'s' * (len(replayed) > 1)} {', '.join(map(str, replayed))}"
            log(f"note: {which} trained on the same data with --seed {cfg.seed} and the same --batch-tokens and "
                f"--max-len, so this stage draws the same batches in the same order; pass another --seed to draw "
                f"others")

    bank.base_model.to(cfg.device)
    for key in bank.modules:
        bank.module_layer(*key).to(cfg.device)
    params = _trainable(bank)
    opt = torch.optim.AdamW([p for _, p in params], lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    student = Student(bank)
    student.shell.to(cfg.device)
    ckpt = os.path.join(bank.path, CKPT_DIR, "state.json")
    state = TrainState()
    if resume:
        if not os.path.exists(ckpt):
            raise UserError(f"--resume: no checkpoint in {os.path.join(bank.path, CKPT_DIR)}")
        state = _load_checkpoint(bank, params, opt, cfg, mode, data_hash)
        log(f"resumed at step {state.step}")
    elif os.path.exists(ckpt):
        raise UserError(f"bank {bank.path} has an unfinished training checkpoint; pass --resume to continue it "
                        f"or delete {os.path.join(bank.path, CKPT_DIR)}")

    bar = tqdm(total=cfg.steps, initial=state.step, disable=not progress, desc=f"training modules ({mode})",
               unit="step", dynamic_ncols=True)
    running: dict[str, float] = {}
    n_running, tokens = 0, 0
    t_start = time.perf_counter()
    with training_context(bank, student):
        while state.step < cfg.steps:
            batches = length_batches(examples, cfg.batch_tokens, cfg.seed + state.epoch)
            while state.batch < len(batches) and state.step < cfg.steps:
                t0 = time.perf_counter()
                inputs, labels = collate(bank, examples, batches[state.batch])
                inputs = {k: v.to(cfg.device) for k, v in inputs.items()}
                labels = labels.to(cfg.device)
                for g in opt.param_groups:
                    g["lr"] = learning_rate(state.step, cfg)
                opt.zero_grad(set_to_none=True)
                if cfg.objective == "hidden":
                    parts, per_module = hidden_step(bank, inputs, labels, cfg, backward=True)
                else:
                    # One RNG per step, so a resumed run samples exactly the students an uninterrupted one would.
                    rng = random.Random(f"{cfg.seed}:{state.step}")
                    plan = sample_student(bank, replace_probability(state.step, cfg), rng, cfg.student_max_span)
                    parts, per_module = distillation_step(bank, student, plan, inputs, labels, cfg, backward=True)
                grads = [p for _, p in params if p.grad is not None]
                if grads:
                    torch.nn.utils.clip_grad_norm_(grads, cfg.clip)
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
                bar.set_postfix(loss=f"{running['loss'] / n_running:.3f}",
                                p=f"{replace_probability(state.step, cfg):.2f}",
                                tok_s=f"{tokens / max(time.perf_counter() - t_start, 1e-9):.0f}")
                if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                    record = {"step": state.step, **{k: v / n_running for k, v in running.items()},
                              "module_distill": {k: a[0] / a[1] for k, a in state.module_loss.items()}}
                    if cfg.eval_every and (state.step % cfg.eval_every == 0 or state.step == cfg.steps):
                        record["dev"] = evaluate_modules(bank, student, dev, cfg)
                    state.history.append(record)
                    state.module_loss = {}
                    running, n_running = {}, 0
                    _save_checkpoint(bank, params, opt, state, cfg, mode, data_hash)
            if state.batch >= len(batches):
                state.epoch += 1
                state.batch = 0
    bar.close()

    last = state.history[-1] if state.history else {}
    # The record of the last step may hold this very evaluation already (eval_every divides the steps).
    final = last["dev"] if last.get("step") == state.step and "dev" in last else evaluate_modules(bank, student, dev, cfg)
    private = {s: set(bank.adapter.stack_private_keys(s)) for s in bank.stack_names}
    states = {k: {n: t for n, t in bank.module_layer(*k).state_dict().items() if n not in private[k[0]]}
              for k in bank.modules}
    metrics = {k: final[f"{k[0]}.{k[1]}-{k[2]}"] | {"teacher_dev_loss": final["teacher"]["dev_loss"]}
               for k in bank.modules}
    record = {"stage": mode, "method": "multi-grained module replacing + KD (Modular Transformers)"
              if cfg.objective == "logits" else "per-module hidden-state distillation from teacher states",
              "config": asdict(cfg), "steps": state.step, "epochs": state.epoch,
              "train_seconds": round(state.elapsed_s, 1), "history": state.history,
              "data": {"train": _data_record(data, data_hash, len(rows)),
                       "dev": _data_record(dev_data, dev_hash, len(dev))}}
    prov = bank.manifest["provenance"]
    previous = _recorded_stages(prov) if mode == "continue" else prov.get("training_stages") or []
    bank.save_modules(states, trained=True, metrics=metrics,
                      provenance={"training": record, "training_stages": previous + [record]})
    shutil.rmtree(os.path.join(bank.path, CKPT_DIR), ignore_errors=True)
    return final
