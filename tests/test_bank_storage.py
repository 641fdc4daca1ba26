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
