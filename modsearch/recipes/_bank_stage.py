"""The recipe's last stage: a bank from the trained teacher, its modules trained by distillation."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from .._io import write_json
from ..bank._bank import LayerBank
from ..train import CKPT_DIR, TrainConfig, train_bank

GRANULARITIES = (2, 3)
#: The shipped bank's weight files are float16 (half the repository space); they load as float32.
STORAGE_DTYPE = "float16"


def build_bank(out: str, work: str, teacher_dir: str, dev_path: str, hashes: dict, recipe,
               bank_steps: int | None = None, log=print) -> str:
    if not os.path.exists(os.path.join(out, "manifest.json")):
        log(f"creating bank {out} from {teacher_dir}")
        bank = LayerBank.init(teacher_dir, out, granularities=GRANULARITIES, starts="aligned")
        curve_path = os.path.join(work, "teacher", "curve.json")
        curve = json.load(open(curve_path, encoding="utf-8")) if os.path.exists(curve_path) else []
        bank.manifest["provenance"].update({
            # The learning curve goes in the manifest itself: the work directory is scratch space.
            "recipe": {"name": "bible-en-fr", "teacher": asdict(recipe), "teacher_curve": curve},
            "data": {"train_sha256": hashes["train"], "dev_sha256": hashes["dev"], "test_sha256": hashes["test"]},
            "source_model": "trained from scratch by `modsearch recipe bible-en-fr`",
        })
        bank.set_task(source_field="en", target_field="fr", task="translation")
    bank = LayerBank.load(out)
    if not all(e.trained for e in bank.modules.values()):
        cfg = TrainConfig(steps=bank_steps or 1200, batch_tokens=2048, source_field="en", target_field="fr",
                          eval_every=500, eval_size=200, checkpoint_every=50)
        resume = os.path.exists(os.path.join(out, CKPT_DIR, "state.json"))
        train_bank(bank, os.path.join(work, "data", "train.jsonl"), cfg, dev_data=dev_path, resume=resume, log=log)
        bank = LayerBank.load(out)
    if bank.manifest["provenance"].get("storage_dtype") != STORAGE_DTYPE:
        store_half(bank, dev_path, log)
    log(f"bank {out}: ready ({len(bank.modules)} trained modules, checksum {LayerBank.load(out).checksum[:12]})")
    return out


def store_half(bank, dev_path: str, log=print, plans: tuple[str, ...] = ()) -> dict:
    """Store the bank in float16 (it is shipped in the repository) and record, in its provenance, the
    teacher-forced dev loss of a few plans before and after: the evidence that rounding moved no score."""
    from ..quality._score import QualityTask, score_plan

    dev = QualityTask("translation", source_field="en", target_field="fr").load_devset(dev_path, limit=200)
    task = QualityTask("translation", metric="loss,token_accuracy", batch_size=50)
    plans = plans or (str(bank.teacher_plan()),) + tuple(
        "/".join(",".join(f"{p}-{p + k - 1}" if (p, p + k - 1) in spans else str(p) for p in range(0, d, k))
                 for d, spans in zip(bank.depths, bank.module_spans()))
        for k in GRANULARITIES if all(d % k == 0 for d in bank.depths))
    before = {p: score_plan(bank, p, dev, task).scores for p in plans}
    bank.store_as(STORAGE_DTYPE)
    bank = LayerBank.load(bank.path)
    after = {p: score_plan(bank, p, dev, task).scores for p in plans}
    check = {p: {"float32": before[p], STORAGE_DTYPE: after[p]} for p in plans}
    bank.manifest["provenance"]["storage_check"] = {"examples": len(dev), "plans": check}
    write_json(os.path.join(bank.path, "manifest.json"), bank.manifest)
    for p in plans:
        log(f"{STORAGE_DTYPE} storage: {p}: dev loss {before[p]['loss']:.5f} -> {after[p]['loss']:.5f}")
    return check
