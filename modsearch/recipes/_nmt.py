"""Training a small translation teacher from scratch on CPU: tokenizer, model shape, recipe, checkpoints.

The recipe is the classic NMT one that learns fast on two CPU cores (see the project's NOTES): an
M2M100-style pre-LN encoder-decoder with sinusoidal positions, Adam (β 0.9/0.98) with an inverse-square-root
schedule and warm-up, label smoothing 0.1, batches of about 4k tokens, fp32 (bf16 autocast where the CPU has native bf16), gradient clipping 1.0,
and embeddings initialised N(0, 1/√d) then scaled by √d.

Checkpoints hold the model, the optimiser moments and the data position in safetensors + JSON, so a killed
run resumes where it stopped, and nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from .._io import atomic_dir, write_json
from ..data import length_batches as make_batches

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as M2M100 expects (bos 0, pad 1, eos 2)


@dataclass
class TeacherRecipe:
    vocab_size: int = 8000
    d_model: int = 256
    ffn_dim: int = 1024
    heads: int = 4
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    max_len: int = 128
    batch_tokens: int = 4096
    lr: float = 1.5e-3
    warmup: int = 250
    label_smoothing: float = 0.1
    clip: float = 1.0
    minutes: float = 215.0  # of training steps (evaluation excluded); the issue allows about 4 hours
    # Inverse-sqrt never anneals; decaying the rate linearly to 0 over the last minutes of the budget (a
    # "cooldown", as in warmup-stable-decay schedules) buys the loss drop a cosine schedule would give at its end.
    cooldown_minutes: float = 40.0
    eval_every_minutes: float = 10.0
    checkpoint_every_minutes: float = 5.0
    eval_size: int = 300
    seed: int = 0
    threads: int = 0  # 0: all cores
    # bf16 autocast only pays where the CPU has native bf16 (AVX512-BF16/AMX). On an AVX2-only EPYC here it
    # was 16x slower than fp32 (90 s against 5.6 s per 4k-token step), so it is off by default.
    bf16: bool = False


def train_tokenizer(texts: list[str], vocab_size: int, out_dir: str):
    """A shared English/French BPE tokenizer (Metaspace pre-tokenisation, like SentencePiece)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.NFKC()
    # Punctuation split after Metaspace: "mourut." and "mourut," share one token plus a mark.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, min_frequency=2)
    tok.train_from_iterator(texts, trainer=trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        model_max_length=512,
    )
    fast.save_pretrained(out_dir)
    return fast


def build_teacher(recipe: TeacherRecipe, tokenizer):
    from transformers import M2M100Config, M2M100ForConditionalGeneration

    config = M2M100Config(
        vocab_size=len(tokenizer), d_model=recipe.d_model,
        encoder_layers=recipe.encoder_layers, decoder_layers=recipe.decoder_layers,
        encoder_attention_heads=recipe.heads, decoder_attention_heads=recipe.heads,
        encoder_ffn_dim=recipe.ffn_dim, decoder_ffn_dim=recipe.ffn_dim,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0, dropout=recipe.dropout, attention_dropout=0.0,
        activation_dropout=0.0, max_position_embeddings=recipe.max_len + 8, scale_embedding=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(recipe.seed)
    model = M2M100ForConditionalGeneration(config)
    with torch.no_grad():
        model.model.shared.weight.normal_(0.0, recipe.d_model ** -0.5)
        model.model.shared.weight[config.pad_token_id].zero_()
    model.generation_config.max_length = None
    model.generation_config.num_beams = 1
    return model


def encode_pairs(tokenizer, pairs: list[dict], src: str, tgt: str, max_len: int):
    sources = tokenizer([p[src] for p in pairs], add_special_tokens=True)["input_ids"]
    targets = tokenizer([p[tgt] for p in pairs], add_special_tokens=True)["input_ids"]
    out = []
    for s, t in zip(sources, targets):
        out.append((s[: max_len - 1] + s[-1:] if len(s) > max_len else s,
                    t[: max_len - 1] + t[-1:] if len(t) > max_len else t))
    return out


def collate(examples, idx: list[int], pad: int, start: int):
    srcs = [examples[i][0] for i in idx]
    tgts = [examples[i][1] for i in idx]
    ls, lt = max(map(len, srcs)), max(map(len, tgts))
    input_ids = torch.full((len(idx), ls), pad, dtype=torch.long)
    labels = torch.full((len(idx), lt), -100, dtype=torch.long)
    dec_in = torch.full((len(idx), lt), pad, dtype=torch.long)
    for r, (s, t) in enumerate(zip(srcs, tgts)):
        input_ids[r, : len(s)] = torch.tensor(s)
        labels[r, : len(t)] = torch.tensor(t)
        dec_in[r, 0] = start
        dec_in[r, 1 : len(t)] = torch.tensor(t[:-1])
    return input_ids, input_ids.ne(pad).long(), dec_in, labels


def inverse_sqrt(step: int, warmup: int) -> float:
    step = max(step, 1)
    return min(step / warmup, math.sqrt(warmup / step))


def learning_rate(recipe: TeacherRecipe, step: int, elapsed_s: float) -> float:
    """Inverse-sqrt with warm-up, times a linear cooldown to 0 over the budget's last ``cooldown_minutes``."""
    lr = recipe.lr * inverse_sqrt(step, recipe.warmup)
    if recipe.cooldown_minutes > 0:
        left = recipe.minutes * 60 - elapsed_s
        lr *= min(1.0, max(0.0, left / (recipe.cooldown_minutes * 60)))
    return lr


@torch.inference_mode()
def greedy_translate(model, tokenizer, sources: list[str], batch_size: int = 64, max_len: int = 128) -> list[str]:
    model.eval()
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer([sources[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                        max_length=max_len)
        gen = model.generate(**enc, num_beams=1, do_sample=False,
                             max_new_tokens=min(max_len, int(enc["input_ids"].shape[1] * 2) + 10))
        for i, text in zip(idx, tokenizer.batch_decode(gen, skip_special_tokens=True)):
            out[i] = text
    return out


def _save_optimizer(opt: torch.optim.Optimizer, names: dict[int, str], directory: str) -> None:
    """One safetensors file per kind of state (exp_avg, exp_avg_sq, step), so that no file nears the 100 MB
    that git hosts accept per file: the recipe's checkpoints are committed between sessions."""
    by_kind: dict[str, dict[str, torch.Tensor]] = {}
    for p, st in opt.state.items():
        name = names[id(p)]
        for k, v in st.items():
            t = v.detach().clone().contiguous() if torch.is_tensor(v) else torch.tensor(v)
            by_kind.setdefault(k, {})[f"{name}::{k}"] = t
    for kind, tensors in by_kind.items():
        save_file(tensors, os.path.join(directory, f"optimizer.{kind}.safetensors"))


def _load_optimizer(opt: torch.optim.Optimizer, params: list[tuple[str, torch.nn.Parameter]], directory: str) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(os.listdir(directory)):
        if f.startswith("optimizer") and f.endswith(".safetensors"):  # optimizer.safetensors or optimizer.<kind>.*
            tensors.update(load_file(os.path.join(directory, f)))
    sd = opt.state_dict()
    state = {}
    for i, (name, _) in enumerate(params):
        entry = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.split("::", 1)[0] == name}
        if entry:
            state[i] = entry
    sd["state"] = state
    opt.load_state_dict(sd)


def train_teacher(work: str, train_pairs, dev_pairs, tokenizer, recipe: TeacherRecipe, log=print):
    """Train (or resume) the teacher in ``work``; returns the path of the best model directory.

    Layout: ``work/ckpt`` (latest resumable state), ``work/best`` (HF model dir with the best dev chrF),
    ``work/curve.json`` (the learning curve).
    """
    import sacrebleu

    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    ckpt, best_dir, curve_path = (os.path.join(work, n) for n in ("ckpt", "best", "curve.json"))
    os.makedirs(work, exist_ok=True)
    model = build_teacher(recipe, tokenizer)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = {id(p): n for n, p in params}
    opt = torch.optim.Adam([p for _, p in params], lr=recipe.lr, betas=(0.9, 0.98), eps=1e-8)
    state = {"step": 0, "epoch": 0, "batch": 0, "elapsed_s": 0.0, "best_chrf": -1.0, "curve": [],
             "recipe": asdict(recipe)}
    if os.path.exists(os.path.join(ckpt, "state.json")):
        with open(os.path.join(ckpt, "state.json")) as f:
            done = json.load(f)
        if done.get("done") and done["elapsed_s"] >= recipe.minutes * 60 and os.path.isdir(best_dir):
            log(f"teacher already trained ({done['step']} steps, {done['elapsed_s'] / 60:.1f} min, best dev chrF "
                f"{done['best_chrf']:.2f})")
            return best_dir
        load_model(model, os.path.join(ckpt, "model.safetensors"))
        _load_optimizer(opt, params, ckpt)
        with open(os.path.join(ckpt, "state.json")) as f:
            state = json.load(f)
        log(f"resumed teacher at step {state['step']} ({state['elapsed_s'] / 60:.1f} min trained)")
        state.pop("done", None)  # a larger budget continues a finished run
        if state.get("recipe") != asdict(recipe):
            state.setdefault("recipe_changes", []).append({"at_step": state["step"], "recipe": asdict(recipe)})
            state["recipe"] = asdict(recipe)

    examples = encode_pairs(tokenizer, train_pairs, "en", "fr", recipe.max_len)
    dev = dev_pairs[: recipe.eval_size]
    pad, start = tokenizer.pad_token_id, model.config.decoder_start_token_id

    def evaluate_dev():
        hyps = greedy_translate(model, tokenizer, [p["en"] for p in dev])
        return sacrebleu.corpus_chrf(hyps, [[p["fr"] for p in dev]]).score

    def checkpoint():
        with atomic_dir(ckpt, overwrite=True) as tmp:
            save_model(model, os.path.join(tmp, "model.safetensors"))
            _save_optimizer(opt, names, tmp)
            write_json(os.path.join(tmp, "state.json"), state)

    def record_eval(note: str = "") -> None:
        """A point on the learning curve; the best model so far is kept as an HF directory."""
        chrf = evaluate_dev()
        state["curve"].append({"minutes": round(state["elapsed_s"] / 60, 2), "step": state["step"],
                               "epoch": state["epoch"], "dev_chrf": round(chrf, 2)})
        log(f"dev chrF {chrf:.2f} at {state['elapsed_s'] / 60:.1f} min{note}")
        if chrf > state["best_chrf"]:
            state["best_chrf"] = chrf
            with atomic_dir(best_dir, overwrite=True) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
        write_json(curve_path, state["curve"])

    budget = recipe.minutes * 60
    last_ckpt = last_eval = state["elapsed_s"]
    if state["curve"]:
        last_eval = state["curve"][-1]["minutes"] * 60
    running, seen = 0.0, 0
    while state["elapsed_s"] < budget:
        batches = make_batches(examples, recipe.batch_tokens, recipe.seed + state["epoch"])
        while state["batch"] < len(batches) and state["elapsed_s"] < budget:
            t0 = time.perf_counter()
            model.train()
            input_ids, mask, dec_in, labels = collate(examples, batches[state["batch"]], pad, start)
            for g in opt.param_groups:
                g["lr"] = learning_rate(recipe, state["step"] + 1, state["elapsed_s"])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
                logits = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=dec_in).logits
            loss = torch.nn.functional.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), labels.view(-1), ignore_index=-100,
                label_smoothing=recipe.label_smoothing,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip)
            opt.step()
            state["step"] += 1
            state["batch"] += 1
            state["elapsed_s"] += time.perf_counter() - t0
            running += loss.item()
            seen += 1
            if state["step"] % 50 == 0:
                log(f"step {state['step']} epoch {state['epoch']} loss {running / seen:.3f} "
                    f"{state['elapsed_s'] / 60:.1f} min")
                running, seen = 0.0, 0
            if state["elapsed_s"] - last_eval >= recipe.eval_every_minutes * 60:
                record_eval()
                last_eval = state["elapsed_s"]
                checkpoint()
                last_ckpt = state["elapsed_s"]
            elif state["elapsed_s"] - last_ckpt >= recipe.checkpoint_every_minutes * 60:
                checkpoint()
                last_ckpt = state["elapsed_s"]
        if state["batch"] >= len(batches):
            state["epoch"] += 1
            state["batch"] = 0
    # Final evaluation so that the end of the budget is on the curve.
    if not state["curve"] or state["curve"][-1]["step"] != state["step"]:
        record_eval(" (end of budget)")
    checkpoint()
    state["done"] = True
    write_json(os.path.join(ckpt, "state.json"), state)
    return best_dir
