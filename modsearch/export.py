"""Export an assembled plan as a standalone Hugging Face model directory.

The directory holds the model (config + safetensors), the bank's tokenizer, ``assembly.json`` (the plan, the
bank checksum, the modsearch version and whatever was measured for it) and a model card ``README.md``.
Loading it needs only transformers:

>>> from transformers import AutoModelForSeq2SeqLM                       # doctest: +SKIP
>>> model = AutoModelForSeq2SeqLM.from_pretrained("exports/half-depth")  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil

from ._errors import UserError
from ._io import atomic_dir, shareable_name, write_json, write_text
from ._version import __version__
from .assembly import assemble
from .bank._bank import LayerBank
from .bank._storage import licence_files
from .bank._tokenizer import tokenizer_loader
from .plan._plan import AssemblyPlan


def export_model(bank: LayerBank, plan: str | AssemblyPlan, out: str, overwrite: bool = False,
                 info: dict | None = None, dtype=None, model=None) -> str:
    """Write ``out`` atomically: a crash leaves no half-written directory. Returns ``out``.

    ``info`` (study, trial, target, metrics, healing...) is recorded in assembly.json and summarised in the
    card. ``model`` is the plan's model when it was changed after assembly (healed); by default it is assembled.
    """
    plan = bank.plan(plan)
    if os.path.exists(out) and not overwrite:
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    model = assemble(bank, plan) if model is None else model
    if dtype is not None:
        model = model.to(dtype)
    spec = {
        "format": "modsearch-assembly",
        "schema_version": 1,
        "modsearch_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        # Names and checksums, not machine paths: the export is shared; the checksum identifies the bank.
        "bank": {"name": os.path.basename(os.path.normpath(bank.path)), "checksum": bank.checksum,
                 "architecture": bank.manifest["architecture"]},
        **plan.to_json(bank.checksum, bank.stack_names),
        **bank.describe_plan(plan),
        "source_prefix": bank.source_prefix,
    }
    if info:
        spec.update(info)
    generate_note = _generation_note(bank, plan)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if bank.has_tokenizer():
            bank.tokenizer.save_pretrained(tmp)
        for name in licence_files(bank.base_dir):  # the base model's terms travel with every derivative
            shutil.copyfile(os.path.join(bank.base_dir, name), os.path.join(tmp, name))
        write_json(os.path.join(tmp, "assembly.json"), spec)
        # the class that reads the written tokenizer as it is (AutoTokenizer may rebuild it otherwise)
        loader = tokenizer_loader(tmp) if bank.has_tokenizer() else "AutoTokenizer"
        write_text(os.path.join(tmp, "README.md"), model_card(bank, plan, spec, generate_note, loader))
    return out


def _generation_note(bank: LayerBank, plan: AssemblyPlan) -> str:
    """What the model card must tell the caller about generate(), if anything."""
    if bank.manifest["architecture"]["model_type"] == "t5" and plan.depths[1] > plan.depths[0]:
        return ("This T5 has a deeper decoder than encoder. Its config carries `decoder_layers` so that plain "
                "`generate()` in transformers 5 sizes the decoder's KV cache to the decoder. If your "
                "transformers version raises IndexError in `generate()`, pass "
                "`past_key_values=EncoderDecoderCache(DynamicCache(), DynamicCache())`.")
    return ""


def model_card(bank: LayerBank, plan: AssemblyPlan, spec: dict, generate_note: str = "",
               tokenizer_class: str = "AutoTokenizer") -> str:
    arch = bank.manifest["architecture"]
    auto = "AutoModelForSeq2SeqLM" if bank.kind == "seq2seq" else "AutoModelForCausalLM"
    depths = ", ".join(f"{k} {v}" for k, v in spec["depths"].items())
    orig = ", ".join(f"{s} {d}" for s, d in zip(bank.stack_names, bank.depths))
    metrics = spec.get("metrics") or {}
    metric_lines = "\n".join(f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |"
                             for k, v in metrics.items())
    measured = (f"\n## Measured\n\n| metric | value |\n|---|---|\n{metric_lines}\n" if metric_lines else
                "\n## Measured\n\nNothing was measured at export time; see `modsearch eval`.\n")
    prefix = (f"\nInputs were prefixed with `{spec['source_prefix']}` during training; add it to your inputs.\n"
              if spec.get("source_prefix") else "")
    note = f"\n## Generation note\n\n{generate_note}\n" if generate_note else ""
    measured += _study_card_section(spec) + _healing_card_section(spec) + _licence_card_section(bank)
    source = shareable_name(str(bank.manifest["provenance"].get("source_model") or "not recorded"))
    return f"""---
library_name: transformers
tags: [modsearch, modular-transformers, compressed]
---

# {arch['model_class']} assembled by modsearch

This model was **assembled** from a layer bank: the original layers of a {arch['model_type']} model plus
modular layers, each trained to do the work of several consecutive original layers (the method of *Modular
Transformers*, Zhou, Le Bras and Choi, ACL Findings 2023). It is a plain `{arch['model_class']}`; loading it
does not need modsearch.

- **Plan**: `{spec['plan']}` (stacks separated by `/`, encoder first; `i` = original layer i, `i-j` = a module
  covering layers i..j, `xi` = layer i dropped)
- **Depth**: {depths} (original: {orig})
- **Parameters**: {spec['params']:,} ({spec['params_ratio']:.1%} of the original)
- **Base model**: {source}
- **Bank checksum**: `{spec['bank_checksum']}`
- **modsearch version**: {spec['modsearch_version']}
{measured}
## How to load

```python
from transformers import {tokenizer_class}, {auto}

tokenizer = {tokenizer_class}.from_pretrained("path/to/this/directory")
model = {auto}.from_pretrained("path/to/this/directory")
inputs = tokenizer(["..."], return_tensors="pt")
print(tokenizer.batch_decode(model.generate(**inputs, max_new_tokens=64), skip_special_tokens=True))
```
{prefix}{note}
`assembly.json` beside this card records the plan, the bank and every figure measured for it.
"""


def _licence_card_section(bank: LayerBank) -> str:
    """The base model's terms: which files came with it, and that this model is a modified derivative."""
    files = licence_files(bank.base_dir)
    if not files:
        return ("\n## Licence\n\nThe base model came with no licence, notice or terms file; check the terms of "
                f"`{shareable_name(str(bank.manifest['provenance'].get('source_model')))}` before you redistribute "
                f"this model.\n")
    notice = next((f for f in files if f.lower().startswith("notice")), None)
    text = ""
    if notice:
        with open(os.path.join(bank.base_dir, notice), encoding="utf-8", errors="replace") as f:
            text = "\n" + "\n".join("> " + line for line in f.read().strip().splitlines()) + "\n"
    return ("\n## Licence\n\nThis model is a **modified** derivative of its base model: layers were removed or "
            "replaced by trained modules, and it may have been distilled further. The base model's terms apply to "
            f"it; they are in this directory: {', '.join(f'`{x}`' for x in files)}. Redistribute it only as those "
            f"terms allow, with these files.\n{text}")


def _study_card_section(spec: dict) -> str:
    """Where the point comes from, when it was exported from a study."""
    study = spec.get("study")
    if not study:
        return ""
    target = (spec.get("target") or {}).get("name", "?")
    task = study.get("task") or {}
    m, t = spec.get("metrics") or {}, spec.get("teacher") or {}
    lines = [f"- **Study**: `{study['name']}`, trial {spec.get('trial')} ({spec.get('strategy')})"
             + (f", picked by `{spec['picked_by']}`" if spec.get("picked_by") else ""),
             f"- **Hardware target**: `{target}`",
             f"- **Dev data**: `{study.get('dev_data')}` (content hash `{str(study.get('data_hash'))[:16]}`), "
             f"task {task.get('task', '?')}, metric {task.get('metric', '?')}, num_beams "
             f"{task.get('num_beams', 1)}, at most {task.get('max_new_tokens', '?')} new tokens"]
    if isinstance(m.get("quality"), (int, float)) and isinstance(t.get("quality"), (int, float)) and t["quality"]:
        lines.append(f"- **Quality**: {m['quality']:.4g} against the teacher's {t['quality']:.4g} "
                     f"({(m['quality'] - t['quality']) / abs(t['quality']):+.1%})")
    if isinstance(m.get("speedup"), (int, float)):
        lines.append(f"- **Speed-up** over the teacher: {m['speedup']:.2f}x (basis: {spec.get('speedup_basis') or '?'})")
    v = spec.get("verified")
    if v:
        mach = v.get("machine") or {}
        lines.append(f"- **Verified speed-up**: {v['speedup']:.2f}x ({v['confidence']:.0%} interval "
                     f"{v['low']:.2f}–{v['high']:.2f}), the teacher and the study's frontier re-measured together in "
                     f"{v['rounds']} interleaved shuffled rounds on `{v['target']}` ({mach.get('cpu_model')} × "
                     f"{mach.get('cpu_count')}, torch {mach.get('torch')}), {v['created']}"
                     + ("" if v["on_front"] else "; **verification knocked this point off the front**"))
    return "\n## Where it comes from\n\n" + "\n".join(lines) + "\n"


def _healing_card_section(spec: dict) -> str:
    """What healing did to the assembled model, when it was healed (:mod:`modsearch.heal`)."""
    h = spec.get("healing")
    if not h:
        return ""
    c, d = h["config"], h["dev"]
    budget = " and ".join(x for x in (f"{c['steps']} steps" if c.get("steps") else "",
                                      f"{c['minutes']:g} minutes" if c.get("minutes") else "") if x)
    kept = ("the unhealed weights (no healing step beat them on dev)" if h["best_step"] == 0 else
            f"the weights of step {h['best_step']}, the best on dev")
    return (f"\n## Healing\n\nAfter assembly, the whole model was distilled from the bank's teacher for "
            f"{h['steps']} steps ({h['seconds']:.0f} s; budget {budget}) on `{h['data']['name']}` (sha256 "
            f"`{h['data']['sha256'][:16]}`, {h['data']['rows']:,} rows), training `{c['trainable']}` parameters at "
            f"peak learning rate {c['lr']:g}, with task cross-entropy, logit KL and hidden-state losses at every "
            f"block boundary. Kept: {kept}.\n\n| dev {d['metric']} ({d['examples']} examples) | value |\n|---|---|\n"
            f"| before healing | {d['before']:.4f} |\n| after healing | {d['after']:.4f} |\n")


# -- a study's point -------------------------------------------------------------------------------------------
def _redact(url: str) -> str:
    """A storage URL without its password or the machine's directories (the export's files may be shared)."""
    import re

    if url.startswith("sqlite:///"):
        return "sqlite:///" + shareable_name(url[len("sqlite:///"):])
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def export_study_point(source: str, out: str, *, trial: int | None = None, pick: str | None = None,
                       plan: str | None = None, storage: str | None = None, study_name: str | None = None,
                       overwrite: bool = False) -> tuple[str, dict]:
    """Export one point of a study: trial number ``trial``, the best-quality trial that meets ``pick`` (such
    as ``"latency_ms <= 40"``), or ``plan`` (its metrics are recorded when a trial evaluated it).

    ``source`` is the study TOML (its bank, storage and name; ``storage``/``study_name`` override them) or a
    bank directory together with ``storage`` and ``study_name``. The bank must be the one the study searched
    (same checksum). ``assembly.json`` records the plan, the bank checksum, the study, the trial, the target and
    every metric measured for it. Returns ``(out, the trial's metrics)``.
    """
    if os.path.exists(out) and not overwrite:  # before any slow work
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    bank, chosen, info = study_point(source, trial=trial, pick=pick, plan=plan, storage=storage,
                                     study_name=study_name)
    export_model(bank, chosen, out, overwrite=overwrite, info=info)
    return out, info


def study_point(source: str, *, trial: int | None = None, pick: str | None = None, plan: str | None = None,
                storage: str | None = None, study_name: str | None = None) -> tuple[LayerBank, str, dict]:
    """Resolve a study's point (see :func:`export_study_point`): ``(bank, plan, info)``, where ``info`` is what
    the export records about the study, the trial and its measured figures."""
    from .results._study import open_results

    if sum(x is not None for x in (trial, pick, plan)) != 1:
        raise UserError("give exactly one of --trial N, --pick CONDITION or --plan PLAN")
    if os.path.isdir(source):
        if not storage or not study_name:
            raise UserError(f"{source} is a bank directory: with --trial/--pick give --storage URL and "
                            "--study-name NAME too (or give the study TOML instead)")
        res = open_results(storage=storage, study_name=study_name)
        bank_path = source
    else:
        from .search._config import StudyConfig

        cfg = StudyConfig.load(source).override(storage=storage, study_name=study_name)
        res = open_results(source, storage=storage, study_name=study_name)
        bank_path = cfg.bank
    if trial is not None:
        rec = res.trial(trial)
    elif pick is not None:
        rec = res.pick(pick)
    else:
        rec = next((t for t in res.trials if t.plan == str(LayerBank.load(bank_path).plan(plan))), None)
    bank = LayerBank.load(bank_path)
    if res.bank_checksum and bank.checksum != res.bank_checksum:
        raise UserError(f"bank {bank_path} (checksum {bank.checksum[:12]}) is not the bank study {res.name!r} "
                        f"searched (checksum {res.bank_checksum[:12]}); its trials' figures would not apply")
    chosen = rec.plan if rec is not None else plan
    info = {
        "study": {"name": res.name, "storage": _redact(res.storage), "source": os.path.basename(source)
                  if res.source else None, "objectives": res.objectives,
                  "constraints": res.identity.get("constraints", []), "data_hash": res.identity.get("data_hash"),
                  "dev_data": os.path.basename(res.config.get("data_path") or "") or None, "task": res.identity.get("task")},
        "trial": rec.number if rec is not None else None,
        "strategy": rec.strategy if rec is not None else None,
        "picked_by": pick,
        "target": res.identity.get("target"),
        "feasible": rec.feasible if rec is not None else None,
        "speedup_basis": ("verified (modsearch verify)" if rec.verified else rec.speedup_basis)
        if rec is not None else None,
        "metrics": dict(rec.metrics) if rec is not None else {},
        "teacher": dict(res.teacher),
    }
    v = res.verified(chosen)
    if rec is not None and rec.verified:
        info["trial_metrics"] = dict(rec.trial_metrics)  # what the trial measured, before verification
    if v is not None:
        rec_v = res.verification
        info["verified"] = {"speedup": v["speedup"], "low": v["low"], "high": v["high"],
                            "latency_ms": v["latency_ms"], "on_front": v["on_front"],
                            "teacher_ms": rec_v["teacher_ms"], "rounds": rec_v["rounds"],
                            "confidence": rec_v["confidence"], "created": rec_v["created"],
                            "target": rec_v["target"], "machine": {k: rec_v["fingerprint"].get(k) for k in
                                                                   ("cpu_model", "cpu_count", "torch", "transformers")}}
    return bank, chosen, info
