"""benchmarks/checkpoint_eval.py: a checkpoint holding the bank's own module weights scores every plan as the bank
does (the oracle); one with a module changed changes the plans that use it and no other; a file that is not
safetensors is one line, exit status 2."""

import json
import os
import re
import subprocess
import sys

import torch
from safetensors.torch import save_file

import tiny
from modsearch import LayerBank

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "checkpoint_eval.py")


def test_checkpoint_scores(tmp_path):
    tiny.save_tiny("llama", str(tmp_path / "model"), dec=4)
    bank = LayerBank.init(str(tmp_path / "model"), str(tmp_path / "bank"), granularities=[2])
    bank.set_task(task="lm", text_field="text")
    texts = [" ".join(tiny.WORDS[i:] + tiny.WORDS[:i]) for i in (0, 7, 19)]
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (tmp_path / "s.toml").write_text('bank = "bank"\ntarget = "cpu-1t-b1-lm"\nobjectives = ["quality", "params"]\n'
                                     '[data]\npath = "dev.jsonl"\ntext_field = "text"\n'
                                     '[task]\ntask = "lm"\nmetric = "perplexity"\ncontext_length = 16\nstride = 8\n'
                                     '[budget]\nn_plans = 4\n')
    own = {f"decoder.{i}-{j}::{n}": p.detach().clone() for (_, i, j) in bank.modules
           for n, p in bank.module_layer("decoder", i, j).named_parameters()}
    plans = ["0-1,2,3", "0,1,2-3", "0,1,2,3"]

    def run(state):
        save_file(state, str(tmp_path / "ckpt.safetensors"))
        res = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "s.toml"), str(tmp_path / "ckpt.safetensors"),
                              *plans], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        rows = re.findall(r"^\s*([\d.]+)\s+([\d.]+)\s+(\S+)$", res.stdout, re.M)
        return {plan: (float(a), float(b)) for a, b, plan in rows}

    same = run(own)
    assert set(same) == set(plans) and all(a == b for a, b in same.values())
    changed = dict(own)
    key = next(k for k in own if k.startswith("decoder.0-1::") and k.endswith("mlp.down_proj.weight"))
    changed[key] = torch.zeros_like(own[key])
    got = run(changed)
    assert got["0-1,2,3"][0] != got["0-1,2,3"][1]
    assert got["0,1,2-3"][0] == got["0,1,2-3"][1] and got["0,1,2,3"][0] == got["0,1,2,3"][1]
    (tmp_path / "bad.safetensors").write_text("not a tensor file")
    res = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "s.toml"), str(tmp_path / "bad.safetensors"),
                          "0,1,2,3"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
