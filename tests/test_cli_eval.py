"""``modsearch eval``: scores and wall time on stdout; every bad input is one line on stderr and exit status 2."""

import json
import os

import pytest

import shutil
from modsearch.cli import main

PLAN = "0-1,2,3,x4,5/0,1-2,3,4,5"
ROWS = [{"id": f"v{i}", "en": s, "fr": t} for i, (s, t) in enumerate([
    ("the a of and to", "le la les"), ("in is that", "de et un une"), ("for it with as was on", "des en"),
    ("be by", "du est que pour dans")])]


@pytest.fixture
def dev(tmp_path):
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding="utf-8")
    return str(path)


def run(capsys, *argv):
    code = main(["eval", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_prints_scores_and_wall_time(banks, dev, capsys):
    code, out, err = run(capsys, banks["bart"].path, "--plan", PLAN, "--data", dev, "--source-field", "en",
                         "--target-field", "fr", "--metric", "chrf", "--metric", "bleu", "--max-new-tokens", "5")
    assert code == 0, err
    assert "chrf" in out and "(primary, higher is better)" in out and "bleu" in out and "wall time" in out


def test_eval_json_and_predictions_in_dev_order(banks, dev, tmp_path, capsys):
    preds = tmp_path / "out" / "preds.jsonl"
    code, out, err = run(capsys, banks["t5"].path, "--plan", PLAN, "--data", dev, "--source-field", "en",
                         "--target-field", "fr", "--metric", "chrf,loss", "--batch-size", "3", "--limit", "3",
                         "--max-new-tokens", "4", "--save-predictions", str(preds), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["primary"] == "chrf" and set(result["scores"]) == {"chrf", "loss"}
    assert result["n_examples"] == 3 and result["wall_time"] > 0 and result["plan"] == PLAN
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["v0", "v1", "v2"]
    assert all({"hypothesis", "reference", "loss"} <= set(r) for r in rows)


def test_eval_lm_perplexity(banks, tmp_path, capsys):
    path = tmp_path / "lm.jsonl"
    path.write_text('{"text": "the a of and"}\n{"text": "le la les de et"}\n', encoding="utf-8")
    code, out, err = run(capsys, banks["gpt2"].path, "--plan", "0-1,2,3,x4,5", "--data", str(path), "--task", "lm")
    assert code == 0, err
    assert "perplexity" in out and "lower is better" in out


def test_eval_help_has_description_and_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "dev set" in out and "examples:" in out and "modsearch eval banks/" in out


def _write(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


@pytest.mark.parametrize("case, message", [
    ("missing file", "not found"),
    ("malformed", "not valid JSON"),
    ("bad utf-8", "not valid UTF-8"),
    ("missing field", "no field 'de'"),
    ("empty", "no examples"),
    ("offline metric", "cannot be loaded offline"),
    ("bad plan", "no module"),
    ("bad beams", "num-beams"),
])
def test_bad_input_is_one_line_and_exit_2(banks, dev, tmp_path, capsys, case, message):
    data, extra = dev, []
    plan = PLAN
    if case == "missing file":
        data = str(tmp_path / "nope.jsonl")
    elif case == "malformed":
        data = _write(tmp_path, "bad.jsonl", '{"en": "the", "fr": "le"}\n{"en": \n')
    elif case == "bad utf-8":
        data = _write(tmp_path, "bad.jsonl", b'{"en": "the\xff", "fr": "le"}\n')
    elif case == "missing field":
        extra = ["--target-field", "de"]
    elif case == "empty":
        data = _write(tmp_path, "empty.jsonl", "\n")
    elif case == "offline metric":
        extra = ["--metric", "meteor"]
    elif case == "bad plan":
        plan = "0-4,5/0,1,2,3,4,5"
    elif case == "bad beams":
        extra = ["--num-beams", "0"]
    preds = tmp_path / "preds.jsonl"
    argv = [banks["m2m_100"].path, "--plan", plan, "--data", data, "--source-field", "en", "--target-field", "fr",
            "--save-predictions", str(preds), *extra]  # a repeated option's last value wins
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not preds.exists()


def test_corrupted_module_file_is_one_line_and_exit_2(banks, dev, tmp_path, capsys):
    bank = str(tmp_path / "bank")
    shutil.copytree(banks["m2m_100"].path, bank)
    with open(os.path.join(bank, "modules", "encoder.0-1.safetensors"), "r+b") as f:
        f.seek(-8, os.SEEK_END)
        f.write(b"\0" * 8)  # same size, different bytes: only the checksum can tell
    preds = tmp_path / "preds.jsonl"
    code, out, err = run(capsys, bank, "--plan", PLAN, "--data", dev, "--source-field", "en", "--target-field", "fr",
                         "--save-predictions", str(preds))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "encoder.0-1" in err and "sha256" in err, err
    assert not preds.exists()
