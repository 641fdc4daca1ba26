"""The CLI over banks, plans and export, and its user errors: one line, exit status 2, no traceback."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from modsearch import LayerBank
from modsearch.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, argv, fragment):
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modsearch: error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


def test_bank_init_info_verify(capsys, model_dirs, tmp_path):
    out = str(tmp_path / "b")
    code, text, _ = run(capsys, "bank", "init", "--model", model_dirs["t5"], "--out", out, "--granularity", "2,3")
    assert code == 0 and "5" in text
    manifest = json.load(open(os.path.join(out, "manifest.json")))
    assert manifest["schema_version"] == 1 and manifest["architecture"]["model_type"] == "t5"
    assert [s["depth"] for s in manifest["stacks"]] == [6, 6]
    assert {(m["stack"], m["start"], m["end"]) for m in manifest["modules"]} == {
        (s, i, j) for s in ("encoder", "decoder") for i, j in [(0, 1), (2, 3), (4, 5), (0, 2), (3, 5)]}
    assert all(not m["trained"] and len(m["sha256"]) == 64 for m in manifest["modules"])
    assert "model.safetensors" in manifest["base"]["files"] and "tokenizer.json" in manifest["base"]["files"]
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in os.listdir(os.path.join(out, "base")))
    code, text, _ = run(capsys, "bank", "info", out)
    assert code == 0 and "encoder.3-5" in text and "145 (encoder) × 145 (decoder) = 21,025" in text
    code, text, _ = run(capsys, "bank", "verify", out)
    assert code == 0 and text.startswith("OK")


def test_starts_all_puts_a_module_at_every_start(model_dirs, tmp_path):
    bank = LayerBank.init(model_dirs["gpt2"], str(tmp_path / "b"), granularities=[2, 3], starts="all")
    assert sorted((e.start, e.end) for e in bank.modules.values()) == sorted(
        [(i, i + 1) for i in range(5)] + [(i, i + 2) for i in range(4)])


def test_verify_catches_corruption_and_bad_shapes(capsys, banks, tmp_path):
    path = str(tmp_path / "b")
    shutil.copytree(banks["bart"].path, path)
    entry = LayerBank.load(path).modules[("decoder", 0, 1)]
    with open(os.path.join(path, entry.file), "r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01\x02")
    assert_user_error(capsys, ["bank", "verify", path], "failed verification")
    # a module of the wrong shape with a matching checksum is caught by the shape check
    shutil.rmtree(path)
    shutil.copytree(banks["bart"].path, path)
    import torch
    from safetensors.torch import save_file

    from modsearch._io import sha256_file

    bank = LayerBank.load(path)
    e = bank.modules[("encoder", 0, 1)]
    state = {k: v.clone() for k, v in bank.module_layer("encoder", 0, 1).state_dict().items()}
    state["fc1.weight"] = torch.zeros(7, 7)
    save_file(state, os.path.join(path, e.file))
    manifest = json.load(open(os.path.join(path, "manifest.json")))
    for m in manifest["modules"]:
        if m["file"] == e.file:
            m["sha256"] = sha256_file(os.path.join(path, e.file))
    json.dump(manifest, open(os.path.join(path, "manifest.json"), "w"))
    assert_user_error(capsys, ["bank", "verify", path], "fc1.weight has shape (7, 7)")


def test_plans_count_list_sample(capsys, banks):
    path = banks["t5"].path  # starts=all, granularities 2 and 3
    code, text, _ = run(capsys, "plans", path, "--count")
    n = banks["t5"].space().count_per_stack()[0]
    assert code == 0 and f"{n:,}" in text and f"{n * n:,}" in text
    code, text, _ = run(capsys, "plans", path, "--list", "--limit", "7")
    assert code == 0 and len(text.strip().splitlines()) == 8 and "params ratio" in text
    code, text, _ = run(capsys, "plans", path, "--sample", "5", "--seed", "1", "--json", "--no-drops")
    rows = json.loads(text)
    assert len(rows) == 5 and all("x" not in r["plan"] for r in rows)
    for r in rows:
        banks["t5"].plan(r["plan"])


def test_plan_reports_depth_and_params(banks):
    bank = banks["bart"]
    d = bank.describe_plan(bank.plan("0-1,2,3,4-5/0,1,2,3,4,5"))
    assert d["depths"] == {"encoder": 4, "decoder": 6}
    assert d["params"] == sum(p.numel() for p in __import__("modsearch").assemble(bank, d["plan"]).parameters())
    assert 0 < d["params_ratio"] < 1
    assert bank.describe_plan(bank.teacher_plan())["params_ratio"] == 1.0


def test_export_loads_without_modsearch_in_a_fresh_process(capsys, banks, tmp_path):
    bank = banks["t5"]
    plan = "0-2,3-5/0,1,2,x3,4,5"  # the T5 decoder-deeper-than-encoder case, with plain generate()
    out = str(tmp_path / "exp")
    code, text, _ = run(capsys, "export", bank.path, "--plan", plan, "--out", out)
    assert code == 0 and "exported" in text
    spec = json.load(open(os.path.join(out, "assembly.json")))
    assert spec["plan"] == plan and spec["bank_checksum"] == bank.checksum and spec["modsearch_version"]
    card = open(os.path.join(out, "README.md")).read()
    assert plan in card and "AutoModelForSeq2SeqLM" in card
    import torch

    from modsearch import assemble

    model = assemble(bank, plan)
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    with torch.no_grad():
        expected = model.generate(input_ids=ids, max_new_tokens=5, min_new_tokens=5, do_sample=False).tolist()
    script = textwrap.dedent(f"""
        import sys, json, torch
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        model = AutoModelForSeq2SeqLM.from_pretrained({out!r}).eval()
        AutoTokenizer.from_pretrained({out!r})
        with torch.no_grad():
            seq = model.generate(input_ids=torch.tensor([[5, 6, 7, 8, 1]]), max_new_tokens=5, min_new_tokens=5,
                                 do_sample=False).tolist()
        assert "modsearch" not in sys.modules
        print(json.dumps(seq))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(tmp_path),
                         env={**os.environ, "PYTHONPATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.parametrize("argv, fragment", [
    (["bank", "info", "/nonexistent/bank"], "no bank at /nonexistent/bank"),
    (["bank", "init", "--model", "/nonexistent/model", "--out", "/tmp/x-never"], "not found"),
    (["frobnicate"], "invalid choice"),
])
def test_simple_user_errors(capsys, banks, argv, fragment):
    assert_user_error(capsys, argv, fragment)


@pytest.mark.parametrize("plan, fragment", [
    ("0,2,3,4,5/0,1,2,3,4,5", "gap"),
    ("0-2,2,3,4,5/0,1,2,3,4,5", "overlaps"),
    ("0,2-1,3,4,5/0,1,2,3,4,5", "reversed"),
    ("0,1,2,3,4,5,6/0,1,2,3,4,5", "out of range"),
    ("0,1-4,5/0,1,2,3,4,5", "no module '1-4'"),
    ("0,1,2,3,4,5/x0,x1,x2,x3,x4,x5", "every layer is dropped"),
    ("0,1,2,3,4,5", "1 stack(s)"),
])
def test_bad_plans_are_refused_with_one_line(capsys, banks, tmp_path, plan, fragment):
    assert_user_error(capsys, ["export", banks["bart"].path, "--plan", plan, "--out", str(tmp_path / "o")], fragment)
    assert not os.path.exists(tmp_path / "o")


def test_bad_banks_are_refused_with_one_line(capsys, banks, tmp_path):
    src = banks["gpt2"].path
    cases = []
    for name, edit, fragment in [
        ("nomanifest", lambda m: None, "manifest.json is missing"),
        ("badjson", lambda m: "{not json", "not valid JSON"),
        ("future", lambda m: {**m, "schema_version": 99}, "newer than this modsearch"),
        ("nofield", lambda m: {k: v for k, v in m.items() if k != "stacks"}, "lacks field(s) stacks"),
        ("arch", lambda m: {**m, "architecture": {**m["architecture"], "model_type": "bert"}},
         "unsupported architecture 'bert'"),
    ]:
        path = str(tmp_path / name)
        shutil.copytree(src, path)
        manifest = json.load(open(os.path.join(path, "manifest.json")))
        new = edit(manifest)
        if new is None:
            os.remove(os.path.join(path, "manifest.json"))
        else:
            with open(os.path.join(path, "manifest.json"), "w") as f:
                f.write(new if isinstance(new, str) else json.dumps(new))
        cases.append((path, fragment))
    for path, fragment in cases:
        assert_user_error(capsys, ["bank", "info", path], fragment)


def test_init_refuses_bad_requests(capsys, model_dirs, banks, tmp_path):
    assert_user_error(capsys, ["bank", "init", "--model", model_dirs["gpt2"], "--out", banks["gpt2"].path],
                      "already exists")
    assert_user_error(capsys, ["bank", "init", "--model", model_dirs["gpt2"], "--out", str(tmp_path / "g"),
                               "--granularity", "1"], "granularities must be integers >= 2")
    assert_user_error(capsys, ["bank", "init", "--model", model_dirs["gpt2"], "--out", str(tmp_path / "g"),
                               "--granularity", "two"], "comma-separated integers")
    assert not os.path.exists(tmp_path / "g")
    # an architecture modsearch has no adapter for
    from transformers import BertConfig, BertForMaskedLM

    BertForMaskedLM(BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                               vocab_size=50)).save_pretrained(tmp_path / "bert")
    assert_user_error(capsys, ["bank", "init", "--model", str(tmp_path / "bert"), "--out", str(tmp_path / "bb")],
                      "unsupported architecture 'bert'")
    assert not os.path.exists(tmp_path / "bb")


def test_help_has_examples():
    for argv in (["--help"], ["bank", "init", "--help"], ["plans", "--help"], ["export", "--help"],
                 ["bank", "train", "--help"]):
        res = subprocess.run([sys.executable, "-m", "modsearch", *argv], capture_output=True, text=True)
        assert res.returncode == 0 and "examples:" in res.stdout, argv
