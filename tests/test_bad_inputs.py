"""The bad-input corpus: every user mistake modsearch knows of, in one table.

Each case runs through the CLI and must give exactly one line naming the fault (``modsearch: error: ...``),
exit status 2, no traceback, and no output file left behind (the case names the output it would have written).
Some cases repeat checks of test_cli_bank.py, test_cli_eval.py and test_study.py on purpose: this file is the
list of them all.
"""

import json
import os
import pickle
import shutil

import pytest

import tiny
from modsearch import LayerBank
from modsearch._io import sha256_file
from modsearch.cli import main

GOOD_PLAN = "0-1,2,3/0,1,2-3"
DEV = [{"en": "the a of", "fr": "le la"}, {"en": "and to in", "fr": "de et"}]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    tiny.save_tiny("m2m_100", str(root / "model"), enc=4, dec=4)
    LayerBank.init(str(root / "model"), str(root / "bank"), granularities=[2])
    with open(root / "dev.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in DEV)
    return root


class Ctx:
    def __init__(self, base, tmp):
        self.base, self.tmp = base, tmp
        self.out = str(tmp / "out")  # the file or directory each case would write

    def bank(self, edit=None):
        path = str(self.tmp / "bank")
        shutil.copytree(self.base / "bank", path)
        if edit:
            edit(path)
        return path

    def manifest(self, path, edit):
        mpath = os.path.join(path, "manifest.json")
        with open(mpath) as f:
            m = json.load(f)
        with open(mpath, "w") as f:
            json.dump(edit(m), f)

    def module(self, path, rewrite, fix_checksum=True):
        """Rewrite the module file encoder.0-1 with ``rewrite(bytes) -> bytes``; optionally re-sign it."""
        rel = "modules/encoder.0-1.safetensors"
        full = os.path.join(path, rel)
        with open(full, "rb") as f:
            data = f.read()
        with open(full, "wb") as f:
            f.write(rewrite(data))
        if fix_checksum:
            self.manifest(path, lambda m: {**m, "modules": [{**e, "sha256": sha256_file(full)} if e["file"] == rel
                                                             else e for e in m["modules"]]})

    def write(self, name, content):
        p = self.tmp / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(p)

    def eval(self, bank=None, data=None, *extra, plan=GOOD_PLAN):
        return ["eval", bank or str(self.base / "bank"), "--plan", plan, "--data", data or str(self.base / "dev.jsonl"),
                "--source-field", "en", "--target-field", "fr", "--max-new-tokens", "4",
                "--save-predictions", self.out, *extra]

    def train(self, *extra, data=None):
        return ["bank", "train", self.bank(), "--data", data or str(self.base / "dev.jsonl"), "--source-field", "en",
                "--target-field", "fr", "--steps", "1", *extra]

    def export(self, plan, bank=None):
        return ["export", bank or str(self.base / "bank"), "--plan", plan, "--out", self.out]

    def study(self, replace=None, extra=""):
        bank, dev = self.base / "bank", self.base / "dev.jsonl"
        text = f"""
bank = "{bank}"
target = "cpu-1t-b1"
objectives = ["quality", "params"]
output = "{self.out}"
cache = false
{extra}
[data]
path = "{dev}"
source_field = "en"
target_field = "fr"
[task]
metric = "token_accuracy"
max_new_tokens = 4
[sampler]
name = "nsga2"
[budget]
n_trials = 2
"""
        for old, new in (replace or {}).items():
            assert old in text
            text = text.replace(old, new)
        return self.write("s.toml", text)


def _shape(m):
    # A module whose fc1 has the wrong shape, with a valid checksum: only the shape check can tell.
    def edit(path):
        import torch
        from safetensors.torch import load_file, save_file

        full = os.path.join(path, "modules/encoder.0-1.safetensors")
        state = load_file(full)
        state["fc1.weight"] = torch.zeros(7, 7)
        save_file(state, full)
        m.module(path, lambda b: b)
    return edit


class _Boom:
    def __reduce__(self):  # unpickling this would create the file; loading a bank must never unpickle
        return (open, (os.environ["MODSEARCH_PICKLE_MARK"], "w"))


CASES = {
    # bank files
    "truncated safetensors": (lambda c: c.eval(c.bank(lambda p: c.module(p, lambda b: b[: len(b) // 2]))),
                              "not a valid safetensors file"),
    "corrupted safetensors header": (lambda c: c.eval(c.bank(lambda p: c.module(p, lambda b: b"\xff" * 16 + b[16:]))),
                                     "not a valid safetensors file"),
    "pickle posing as safetensors": (lambda c: c.eval(c.bank(lambda p: c.module(p, lambda b: pickle.dumps(_Boom()))))
                                     , "not a valid safetensors file"),
    "checksum mismatch": (lambda c: c.eval(c.bank(lambda p: c.module(p, lambda b: b[:-8] + b"\0" * 8, False))),
                          "does not match its sha256"),
    "manifest missing field": (lambda c: c.eval(c.bank(lambda p: c.manifest(
        p, lambda m: {k: v for k, v in m.items() if k != "stacks"}))), "lacks field(s) stacks"),
    "manifest future schema": (lambda c: c.eval(c.bank(lambda p: c.manifest(p, lambda m: {**m, "schema_version": 99}))),
                               "newer than this modsearch"),
    "manifest not JSON": (lambda c: c.eval(c.bank(lambda p: open(os.path.join(p, "manifest.json"), "w").write("{x"))),
                          "not valid JSON"),
    "tensor of the wrong shape": (lambda c: c.export(GOOD_PLAN, c.bank(_shape(c))), "fc1.weight"),
    "unknown architecture": (lambda c: c.eval(c.bank(lambda p: c.manifest(
        p, lambda m: {**m, "architecture": {**m["architecture"], "model_type": "bert"}}))),
        "unsupported architecture 'bert'"),
    "no bank there": (lambda c: c.eval(str(c.tmp / "nowhere")), "no bank at"),
    # plans
    "plan with a gap": (lambda c: c.export("0,2,3/0,1,2,3"), "gap"),
    "plan with an overlap": (lambda c: c.export("0-1,1,2,3/0,1,2,3"), "overlaps"),
    "plan with a reversed span": (lambda c: c.export("1-0,2,3/0,1,2,3"), "reversed"),
    "plan out of range": (lambda c: c.export("0,1,2,3,4/0,1,2,3"), "out of range"),
    "plan with an unknown module": (lambda c: c.export("0,1-2,3/0,1,2,3"), "no module '1-2'"),
    "plan with a wrong number of stacks": (lambda c: c.export("0,1,2,3"), "stack(s)"),
    # study configs
    "study TOML typo'd key": (lambda c: ["search", c.study(extra='objectivs = ["quality"]'), "--quiet"],
                              "unknown key 'objectivs'"),
    "study TOML wrong type": (lambda c: ["search", c.study({"n_trials = 2": 'n_trials = "two"'}), "--quiet"],
                              "budget.n_trials must be"),
    "study TOML unknown sampler": (lambda c: ["search", c.study({'name = "nsga2"': 'name = "annealing"'}), "--quiet"],
                                   "sampler.name"),
    "study TOML not TOML": (lambda c: ["search", c.write("s.toml", "bank = [unclosed"), "--quiet"], "not valid TOML"),
    "study file missing": (lambda c: ["search", str(c.tmp / "none.toml"), "--quiet"], "not found"),
    "study sampler setting out of range": (lambda c: ["search", c.study({'name = "nsga2"': 'name = "evolve"\n'
                                                                         'crossover_prob = 2'}), "--quiet"],
                                           "sampler.crossover_prob must be a probability"),
    "study sampler switch that is not a boolean": (lambda c: ["search", c.study({'name = "nsga2"': 'name = "evolve"\n'
                                                                            'predict_constraints = "yes"'}),
                                                              "--quiet"], "sampler.predict_constraints must be"),
    "study sampler acquisition it does not know": (lambda c: ["search", c.study({'name = "nsga2"': 'name = "evolve"\n'
                                                                             'acquisition = "ucb"'}), "--quiet"],
                                                   "sampler.acquisition must be one of 'hvi', 'hvi-local', 'random'"),
    "study screen with an unknown fidelity option": (lambda c: ["search", c.study(
        extra='[screen]\nwindows = 2\nfidelity = "bleu"'), "--quiet"], "unknown key 'screen.fidelity'"),
    "study screen that cannot rank (no window)": (lambda c: ["search", c.study(extra="[screen]\nwindows = 0"),
                                                             "--quiet"], "screen.windows must be an integer >= 1"),
    "study constraint on a metric the study does not record": (lambda c: ["search", c.study(
        extra='constraints = ["profile_latency_ms <= 40"]'), "--quiet"], "profile_latency_ms needs cost.profile"),
    "study constraint naming no metric": (lambda c: ["search", c.study(extra='constraints = ["bleu >= 3"]'),
                                                     "--quiet"], "about a metric this study records"),
    # dev data
    "dev file missing": (lambda c: c.eval(None, str(c.tmp / "none.jsonl")), "not found"),
    "dev file empty": (lambda c: c.eval(None, c.write("e.jsonl", "\n")), "no examples"),
    "lm text with no usable documents": (lambda c: ["eval", str(c.base / "bank"), "--plan", GOOD_PLAN, "--data",
                                                    c.write("t.jsonl", '{"text": ""}\n{"text": "  "}\n'), "--task",
                                                    "lm", "--text-field", "text", "--save-predictions", c.out],
                                         "no usable documents"),
    "dev file missing fields": (lambda c: c.eval(None, c.write("f.jsonl", '{"en": "the", "de": "der"}\n')),
                                "no field 'fr'"),
    "dev file invalid UTF-8": (lambda c: c.eval(None, c.write("u.jsonl", b'{"en": "the\xff", "fr": "le"}\n')),
                               "not valid UTF-8"),
    "dev file malformed JSON": (lambda c: c.eval(None, c.write("m.jsonl", '{"en": "the", "fr": \n')), "not valid JSON"),
    # metrics, storage, targets
    "metric not available offline": (lambda c: c.eval(None, None, "--metric", "meteor"), "cannot be loaded offline"),
    "storage unreachable (search)": (lambda c: ["search", c.study(), "--quiet", "--storage",
                                                "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
    "storage unreachable (worker)": (lambda c: ["worker", c.study(), "--quiet", "--storage",
                                                "postgresql://nobody@127.0.0.1:1/none"], "cannot open storage"),
    "storage not a URL": (lambda c: ["worker", c.study(), "--quiet", "--storage", "study.db"], "not a storage URL"),
    "target the machine cannot provide (eval)": (lambda c: c.eval(None, None, "--target", "cuda-bf16-b1"),
                                                 "CUDA is not available"),
    # Measured latency needs the target's device (quality, FLOPs and params do not: CPU workers may serve a
    # GPU study), so the refusal is for a study that measures latency.
    "target the machine cannot provide (search)": (lambda c: ["search", c.study({
        '"cpu-1t-b1"': '"cuda-bf16-b1"', '["quality", "params"]': '["quality", "latency_ms"]'}), "--quiet"],
        "CUDA is not available"),
    "unknown target": (lambda c: c.eval(None, None, "--target", "tpu-v9"), "tpu-v9"),
    "train --continue on untrained modules": (lambda c: c.train("--continue"), "untrained"),
    "train with an unknown objective": (lambda c: c.train("--objective", "magic"), "unknown --objective 'magic'"),
    "train with an unknown hidden loss": (lambda c: c.train("--hidden-loss", "cubic"), "unknown --hidden-loss"),
    "train on CUDA without a GPU": (lambda c: c.train("--device", "cuda"), "no usable CUDA GPU"),
    "train data without the bank's fields": (lambda c: c.train(data=c.write("t.jsonl", '{"en": "the", "de": "der"}\n')),
                                             "no field 'fr'"),
}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_no_traceback_no_file(name, base, tmp_path, capsys, monkeypatch):
    import torch

    if "CUDA" in CASES[name][1] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the target can be provided")
    mark = tmp_path / "unpickled"
    monkeypatch.setenv("MODSEARCH_PICKLE_MARK", str(mark))
    ctx = Ctx(base, tmp_path)
    make, fragment = CASES[name]
    argv = make(ctx)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("modsearch: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert not os.path.exists(ctx.out), f"{ctx.out} was left behind"
    assert not mark.exists(), "something was unpickled"
    leftovers = [f for f in os.listdir(tmp_path) if f.startswith((".tmp-", ".old-"))]
    assert not leftovers, leftovers
