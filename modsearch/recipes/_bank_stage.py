"""The recipe's last stage: a bank from the trained teacher, its modules trained by distillation."""

from __future__ import annotations

import os
from dataclasses import asdict

from ..bank import LayerBank
from ..train import CKPT_DIR, TrainConfig, train_bank

GRANULARITIES = (2, 3)


def build_bank(out: str, work: str, teacher_dir: str, dev_path: str, hashes: dict, recipe,
               bank_steps: int | None = None, log=print) -> str:
    if not os.path.exists(os.path.join(out, "manifest.json")):
        log(f"creating bank {out} from {teacher_dir}")
        bank = LayerBank.init(teacher_dir, out, granularities=GRANULARITIES, starts="aligned")
        bank.manifest["provenance"].update({
            "recipe": {"name": "bible-en-fr", "teacher": asdict(recipe),
                       "teacher_curve": os.path.join(os.path.relpath(work, out), "teacher", "curve.json")},
            "data": {"train_sha256": hashes["train"], "dev_sha256": hashes["dev"], "test_sha256": hashes["test"]},
            "source_model": "trained from scratch by `modsearch recipe bible-en-fr`",
        })
        bank.set_task(source_field="en", target_field="fr", task="translation")
    bank = LayerBank.load(out)
    if all(e.trained for e in bank.modules.values()):
        log(f"bank {out}: modules already trained")
        return out
    cfg = TrainConfig(steps=bank_steps or 1500, batch_tokens=2048, source_field="en", target_field="fr",
                      eval_every=500, eval_size=200, checkpoint_every=50)
    resume = os.path.exists(os.path.join(out, CKPT_DIR, "state.json"))
    train_bank(bank, os.path.join(work, "data", "train.jsonl"), cfg, dev_data=dev_path, resume=resume, log=log)
    return out
