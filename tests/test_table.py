"""The plan table scores every plan of a space once, and each row equals what assembling that plan gives."""

import json
import os
import sys

import pytest

import tiny
from modsearch import DevSet, LayerBank, UserError
from modsearch.quality import QualityTask, score_plan
from modsearch.quality.table import build_table, load_table, save_table

SRC = ["the a of and to in", "is that for it with as was", "on be by this", "are at from or an which his her"]
TGT = ["le la les de", "et un une des en du est", "que pour dans qui", "par sur au avec il elle ne pas"]


@pytest.fixture(scope="module")
def small_bank(tmp_path_factory):
    root = tmp_path_factory.mktemp("table")
    model = tiny.save_tiny("m2m_100", str(root / "model"), enc=3, dec=4)
    return LayerBank.init(model, str(root / "bank"), granularities=[2], starts="aligned")


def test_every_plan_once_and_each_row_matches_assembly(small_bank, tmp_path):
    dev = DevSet.from_lists(SRC, TGT)
    table = build_table(small_bank, dev, batch_size=3, progress=False, log=lambda m: None)
    space = small_bank.space()
    assert len(table) == space.count()
    assert table["plan"].is_unique
    assert set(table["plan"]) == {str(p) for p in space}
    task = QualityTask("translation", metric="loss,token_accuracy", batch_size=3)
    for plan in ["0,1,2/0,1,2,3", "0-1,x2/0,x1,2-3", "x0,x1,2/0-1,x2,x3"]:
        row = table.set_index("plan").loc[plan]
        slow = score_plan(small_bank, plan, dev, task).scores
        assert row["loss"] == pytest.approx(slow["loss"], rel=1e-5)
        assert row["token_accuracy"] == pytest.approx(slow["token_accuracy"], abs=1e-9)
        assert row["params"] == small_bank.plan_params(small_bank.plan(plan))


def test_killed_build_resumes_from_its_checkpoint(small_bank, tmp_path):
    dev = DevSet.from_lists(SRC, TGT)
    ckpt = tmp_path / "table.jsonl"
    full = build_table(small_bank, dev, batch_size=4, checkpoint=str(ckpt), check=0, progress=False)
    lines = ckpt.read_text().splitlines()
    # A kill after two encoder plans, mid-way through writing the third line.
    ckpt.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    again = build_table(small_bank, dev, batch_size=4, checkpoint=str(ckpt), check=0, progress=False)
    assert again.to_dict("records") == full.to_dict("records")
    assert json.loads(ckpt.read_text().splitlines()[-1])["encoder"] == full["encoder"].iloc[-1]
    assert all(json.loads(line) for line in ckpt.read_text().splitlines())  # the torn line was cut, not kept

    save_table(full, str(tmp_path / "t.csv"), {"bank_checksum": small_bank.checksum})
    loaded, meta = load_table(str(tmp_path / "t.csv"))
    assert meta["bank_checksum"] == small_bank.checksum
    assert list(loaded["plan"]) == list(full["plan"])
    assert loaded["loss"].tolist() == pytest.approx(full["loss"].tolist(), rel=1e-5)


def test_decoder_only_banks_are_refused_with_one_line(banks):
    with pytest.raises(UserError, match="encoder-decoder banks only"):
        build_table(banks["gpt2"], DevSet.from_lists(SRC, task="lm"), progress=False)


def test_a_checkpoint_of_another_build_is_refused(small_bank, tmp_path):
    ckpt = str(tmp_path / "table.jsonl")
    build_table(small_bank, DevSet.from_lists(SRC, TGT), batch_size=4, checkpoint=ckpt, check=0, progress=False)
    with pytest.raises(UserError, match="another bank, data set"):
        build_table(small_bank, DevSet.from_lists(SRC[:3], TGT[:3]), batch_size=4, checkpoint=ckpt, check=0,
                    progress=False)


def test_replay_resumes_from_its_checkpoint_with_the_same_figures(small_bank, tmp_path, capsys):
    """The tabular replay (benchmarks/tabular_search.py) on a table of a small bank: an interrupted replay run
    again does only the missing runs, and its figures equal an uninterrupted one's."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    import tabular_search

    table = build_table(small_bank, DevSet.from_lists(SRC, TGT), batch_size=4, check=0, progress=False)
    space = small_bank.space()
    csv = str(tmp_path / "t.csv")
    save_table(table, csv, {"depths": space.depths, "modules": [sorted(map(list, m)) for m in space.modules],
                            "drops": True, "teacher": str(small_bank.teacher_plan())})
    ckpt, first, second = (str(tmp_path / n) for n in ("runs.jsonl", "a.json", "b.json"))
    args = ["replay", csv, "--seeds", "3", "--jobs", "1", "--strategies", "default,random", "--checkpoint", ckpt]
    tabular_search.main(args + ["--json", first])
    lines = open(ckpt).read().splitlines()
    assert len(lines) == 6
    with open(ckpt, "w") as f:  # killed while writing the third run
        f.write("\n".join(lines[:2]) + "\n" + lines[2][:30])
    capsys.readouterr()
    tabular_search.main(args + ["--json", second])
    assert "2 of 6 runs done already" in capsys.readouterr().out
    a, b = json.load(open(first)), json.load(open(second))
    assert a["runs"] == b["runs"] and a["medians"] == b["medians"]
    for runs in a["runs"].values():
        for hv in runs:
            assert all(0 <= x <= 1 + 1e-9 for x in hv) and hv == sorted(hv)  # more plans never lose volume
