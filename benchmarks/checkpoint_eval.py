"""Benchmark: plans scored with a bank's modules as a training checkpoint left them, against the bank's own.

A training stage checkpoints the modules it trains (``BANK/.train/modules.safetensors``, names
``stack.start-end::parameter``). Copy that file mid-stage and this script scores the study's plans on its dev
set and windows twice: with the bank's modules, and with the checkpoint's loaded over them (the original layers
are the same in both). It judges on dev, not test, how much the rest of a stage bought.

    python benchmarks/checkpoint_eval.py studies/gemma3-270m.toml CKPT/modules.safetensors \\
        0,1,2,3,4,5,6-8,9,10,11,12-13,14-15,16-17 0,1,2,3,4,5,6-7,8-9,10-11,12-13,14-15,16-17

Nothing is written; nothing is unpickled (safetensors only).
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="the study TOML (its bank, dev set, task and windows)")
    p.add_argument("checkpoint", help="a copy of BANK/.train/modules.safetensors")
    p.add_argument("plans", nargs="+", help="plans to score (plan notation)")
    a = p.parse_args()

    import torch
    from safetensors import safe_open

    from modsearch import LayerBank, UserError
    from modsearch.quality._score import score_plan
    from modsearch.search._config import StudyConfig

    try:
        cfg = StudyConfig.load(a.study)
        bank = LayerBank.load(cfg.bank)
        plans = [bank.plan(x) for x in a.plans]
        dev, task = cfg.load_devset(), cfg.quality_task()
        with safe_open(a.checkpoint, "pt") as f:
            saved = {k: f.get_tensor(k) for k in f.keys()}
    except (UserError, OSError) as exc:
        print(f"checkpoint_eval: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # safetensors' own errors: not a safetensors file
        print(f"checkpoint_eval: error: {a.checkpoint}: {exc}", file=sys.stderr)
        return 2
    mine = {p: score_plan(bank, p, dev, task).value for p in plans}
    states: dict[tuple[str, int, int], dict[str, torch.Tensor]] = {}
    for name, tensor in saved.items():
        module, _, param = name.partition("::")
        stack, _, span = module.rpartition(".")
        start, _, end = span.partition("-")
        states.setdefault((stack, int(start), int(end)), {})[param] = tensor
    unknown = [f"{s}.{i}-{j}" for s, i, j in states if (s, i, j) not in bank.modules]
    if unknown:
        print(f"checkpoint_eval: error: the checkpoint holds modules the bank has not: {', '.join(unknown[:3])}",
              file=sys.stderr)
        return 2
    with torch.no_grad():
        for key, state in states.items():
            # strict=False: a stack's private parameters are not trained, so not saved; a name the layer has not
            # is refused below.
            unexpected = bank.module_layer(*key).load_state_dict(state, strict=False).unexpected_keys
            if unexpected:
                print(f"checkpoint_eval: error: {key[0]}.{key[1]}-{key[2]} has no parameter {unexpected[0]}",
                      file=sys.stderr)
                return 2
    print(f"dev perplexity ({len(dev)} texts of {os.path.relpath(cfg.data_path)}; windows "
          f"{task.context_length}/{task.stride}):")
    print(f"{'checkpoint':>12}{'bank':>12}  plan")
    for p in plans:
        print(f"{score_plan(bank, p, dev, task).value:12.2f}{mine[p]:12.2f}  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
