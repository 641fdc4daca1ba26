"""A bank stored in half precision loads as float32, verifies, and scores as before within rounding."""

import os

import pytest
import torch

import tiny
from modsearch import LayerBank
from modsearch.assembly import assemble


def test_float16_storage_halves_the_files_and_keeps_the_logits(tmp_path):
    model = tiny.save_tiny("m2m_100", str(tmp_path / "model"), enc=4, dec=4)
    bank = LayerBank.init(model, str(tmp_path / "bank"), granularities=[2], starts="aligned")
    plan = "0-1,2,3/0,1,2-3"
    ids = torch.tensor([[4, 5, 6, 7, 1]])
    dec = torch.tensor([[1, 8, 9]])
    before = assemble(bank, plan)(input_ids=ids, decoder_input_ids=dec).logits
    sizes = {e.name: os.path.getsize(os.path.join(bank.path, e.file)) for e in bank.modules.values()}
    old_checksum = bank.checksum

    bank.store_as("float16")
    again = LayerBank.load(bank.path)
    assert again.verify() == []
    assert again.checksum != old_checksum
    assert again.manifest["provenance"]["storage_dtype"] == "float16"
    for e in again.modules.values():  # new files, named by their content; the old ones are gone
        assert os.path.getsize(os.path.join(bank.path, e.file)) < 0.6 * sizes[e.name]
    assert sorted(os.listdir(os.path.join(bank.path, "modules"))) == sorted(
        os.path.basename(e.file) for e in again.modules.values())
    assert next(again.base_model.parameters()).dtype == torch.float32
    after = assemble(again, plan)(input_ids=ids, decoder_input_ids=dec).logits
    assert after.dtype == torch.float32
    torch.testing.assert_close(after, before, rtol=0, atol=1e-2)
    assert not torch.equal(after, before)  # the rounding really happened


def test_unknown_storage_dtype_is_refused(tmp_path):
    from modsearch import UserError

    model = tiny.save_tiny("bart", str(tmp_path / "model"), enc=2, dec=2)
    bank = LayerBank.init(model, str(tmp_path / "bank"), granularities=[2])
    with pytest.raises(UserError, match="unknown storage dtype"):
        bank.store_as("int3")


def test_the_base_models_licence_files_travel_into_the_bank_and_every_export(tmp_path):
    from modsearch import export_model

    src = tmp_path / "model"
    tiny.save_tiny("llama", str(src), dec=4)
    (src / "LICENSE").write_text("Some licence text.\n")
    (src / "NOTICE").write_text("Gemma is provided under and subject to the Gemma Terms of Use.\n")
    (src / "GEMMA_TERMS.html").write_text("<html>terms</html>\n")
    (src / "notes.txt").write_text("not a licence\n")
    bank = LayerBank.init(str(src), str(tmp_path / "bank"), granularities=[2])
    base = tmp_path / "bank" / "base"
    assert {"LICENSE", "NOTICE", "GEMMA_TERMS.html"} <= set(os.listdir(base)) and not (base / "notes.txt").exists()
    assert "NOTICE" in bank.manifest["base"]["files"] and bank.verify() == []  # hashed like every base file
    (base / "NOTICE").write_text("tampered\n")
    assert any("NOTICE" in p for p in LayerBank.load(str(tmp_path / "bank")).verify())
    (base / "NOTICE").write_text("Gemma is provided under and subject to the Gemma Terms of Use.\n")

    out = tmp_path / "export"
    export_model(bank, "0-1,2-3", str(out))
    assert (out / "LICENSE").read_text() == "Some licence text.\n" and (out / "GEMMA_TERMS.html").exists()
    card = (out / "README.md").read_text()
    assert "## Licence" in card and "**modified**" in card and "`NOTICE`" in card
    assert "> Gemma is provided under and subject to the Gemma Terms of Use." in card

    # A base without any such file: the card says so instead of inventing terms.
    bare = tmp_path / "bare"
    tiny.save_tiny("llama", str(bare), dec=2)
    b2 = LayerBank.init(str(bare), str(tmp_path / "bank2"), granularities=[2])
    export_model(b2, "0-1", str(tmp_path / "export2"))
    assert "came with no licence" in (tmp_path / "export2" / "README.md").read_text()
