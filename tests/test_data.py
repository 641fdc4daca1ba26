"""Dev sets load from local JSONL/CSV files with configurable fields; bad input is one clear UserError."""

import json

import pytest

from modsearch import UserError
from modsearch.data import DevSet

ROWS = [{"id": "a", "en": "the cat", "fr": "le chat"}, {"id": "b", "en": "a dog", "fr": "un chien"},
        {"id": "c", "en": "it is", "fr": "il est"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_jsonl_with_configured_fields_and_limit(tmp_path):
    dev = DevSet.load(write_jsonl(tmp_path / "d.jsonl", ROWS), source_field="en", target_field="fr", limit=2)
    assert dev.sources == ["the cat", "a dog"] and dev.targets == ["le chat", "un chien"]
    assert dev.ids == ["a", "b"] and len(dev) == 2


def test_csv_and_lm_text_field(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("en,fr\nthe cat,le chat\n2,deux\n", encoding="utf-8")
    dev = DevSet.load(str(p), source_field="en", target_field="fr")
    assert dev.sources == ["the cat", "2"] and dev.ids == ["0", "1"]
    lm = DevSet.load(write_jsonl(tmp_path / "t.jsonl", [{"text": "one"}, {"text": "two"}]), task="lm")
    assert lm.sources == ["one", "two"] and lm.targets is None


def test_content_hash_is_stable_and_follows_content(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    h = DevSet.load(path, source_field="en", target_field="fr").content_hash
    assert DevSet.load(path, source_field="en", target_field="fr").content_hash == h
    assert DevSet.load(path, source_field="en", target_field="fr", limit=2).content_hash != h
    assert DevSet.load(path, source_field="fr", target_field="en").content_hash != h
    changed = write_jsonl(tmp_path / "e.jsonl", ROWS[:2] + [{"id": "c", "en": "it is", "fr": "il était"}])
    assert DevSet.load(changed, source_field="en", target_field="fr").content_hash != h


@pytest.mark.parametrize("name, content, message", [
    ("bad.jsonl", '{"en": "a", "fr": "b"}\n{"en": "c", "fr\n', "not valid JSON: line 2"),
    ("utf.jsonl", b'{"en": "caf\xe9", "fr": "b"}\n', "not valid UTF-8"),
    ("empty.jsonl", "", "holds no examples"),
    ("empty.json", "[]", "holds no examples"),
    ("bad.csv", 'en,fr\n"a,b\nc,d\n', "not valid CSV"),
    ("fields.jsonl", '{"source": "a", "tgt": "b"}\n', "no field 'en'"),
    ("null.jsonl", '{"en": "a", "fr": null}\n', "example 1 has no value for field 'fr'"),
    ("nested.jsonl", '{"en": ["a"], "fr": "b"}\n', "must hold text"),
])
def test_bad_files_are_user_errors(tmp_path, name, content, message):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(UserError, match=message):
        DevSet.load(str(p), source_field="en", target_field="fr")


def test_missing_field_error_names_the_fields_that_exist(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(UserError) as err:
        DevSet.load(path)  # default fields source/target
    assert "no field 'source'" in str(err.value) and "id, en, fr" in str(err.value)


def test_missing_file_and_bad_limit(tmp_path):
    with pytest.raises(UserError, match="not found"):
        DevSet.load(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="--limit"):
        DevSet.load(write_jsonl(tmp_path / "d.jsonl", ROWS), limit=0)
