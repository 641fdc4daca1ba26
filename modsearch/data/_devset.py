"""Dev sets: the examples a plan's quality is scored on, loaded with ``datasets``.

A dev set is a local JSON Lines, JSON or CSV/TSV file (or a hub dataset id, when the network allows) with a
source and a target field for translation and summarization, or one text field for language modelling. Field
names are configurable. ``content_hash`` names exactly what was loaded (fields, order, limit), so a search can
cache scores by it.

>>> dev = DevSet.load("data/bible-en-fr/dev.jsonl", source_field="en", target_field="fr", limit=100)  # doctest: +SKIP
>>> len(dev), dev.sources[0][:20], dev.content_hash[:12]                                            # doctest: +SKIP
(100, 'It happened in the d', '3f9a...')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._errors import UserError

__all__ = ["DEFAULT_FIELDS", "DevSet", "TASKS"]

TASKS = ("translation", "summarization", "lm")
#: Field names assumed when none are given: (source, target) per task; lm reads one text field.
DEFAULT_FIELDS = {"translation": ("source", "target"), "summarization": ("document", "summary"), "lm": ("text", None)}
_FORMATS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".csv": "csv", ".tsv": "csv"}


@dataclass
class DevSet:
    """Examples to score: ``sources`` (inputs, or the texts for lm) and ``targets`` (references; None for lm).

    ``ids`` come from an ``id`` field when the file has one, else they are row numbers.
    """

    sources: list[str]
    targets: list[str] | None
    ids: list[str]
    task: str = "translation"
    origin: str = ""
    fields: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.sources:
            raise UserError(f"dev set {self.origin or '(in memory)'} holds no examples")
        if self.targets is not None and len(self.targets) != len(self.sources):
            raise UserError(f"dev set {self.origin or '(in memory)'}: {len(self.sources)} sources but "
                            f"{len(self.targets)} targets")

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def content_hash(self) -> str:
        """sha256 of the loaded content (task, field names, every value, in order): the cache key of a score."""
        h = hashlib.sha256()
        h.update(json.dumps({"task": self.task, "fields": self.fields}, sort_keys=True).encode())
        for i, src in enumerate(self.sources):
            tgt = self.targets[i] if self.targets is not None else None
            # One JSON line per example: unambiguous however the strings are composed.
            h.update(b"\n" + json.dumps([src, tgt], ensure_ascii=False).encode("utf-8"))
        return h.hexdigest()

    @classmethod
    def from_lists(cls, sources: Sequence[str], targets: Sequence[str] | None = None, task: str = "translation",
                   ids: Sequence[str] | None = None) -> DevSet:
        """A dev set from Python lists (notebooks, tests)."""
        return cls(list(sources), None if targets is None else list(targets),
                   list(ids) if ids is not None else [str(i) for i in range(len(sources))], task=task,
                   origin="(in memory)", fields={"source": "source", "target": "target"})

    @classmethod
    def load(cls, path: str, task: str = "translation", source_field: str | None = None,
             target_field: str | None = None, text_field: str | None = None, limit: int | None = None,
             split: str = "train") -> DevSet:
        """Load a dev set from a local JSONL/JSON/CSV/TSV file, or a hub dataset id when the network allows.

        ``limit`` keeps the first N examples in file order. Every problem with the input raises
        :class:`UserError` naming the file and what is wrong.
        """
        if task not in TASKS:
            raise UserError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
        if limit is not None and limit < 1:
            raise UserError(f"--limit must be a positive number of examples, not {limit}")
        if task == "lm":
            wanted = {"text": text_field or source_field or DEFAULT_FIELDS["lm"][0]}
        else:
            src, tgt = DEFAULT_FIELDS[task]
            wanted = {"source": source_field or src, "target": target_field or tgt}
        ds = _load_rows(path, split)
        columns = list(ds.column_names)
        for role, name in wanted.items():
            if name not in columns:
                flag = "--text-field" if role == "text" else f"--{role}-field"
                raise UserError(f"{path}: no field {name!r} (the {role} field; set it with {flag}); "
                                f"the data has fields: {', '.join(columns) or 'none'}")
        n = len(ds)
        if n == 0:
            raise UserError(f"{path} holds no examples")
        if limit is not None:
            ds = ds.select(range(min(limit, n)))
        values = {role: _strings(ds[name], path, name) for role, name in wanted.items()}
        ids = [str(v) for v in ds["id"]] if "id" in columns else [str(i) for i in range(len(ds))]
        if task == "lm":
            if not any(t.strip() for t in values["text"]):
                raise UserError(f"{path}: no usable documents: every {wanted['text']!r} text is empty")
            return cls(values["text"], None, ids, task=task, origin=path, fields=wanted)
        return cls(values["source"], values["target"], ids, task=task, origin=path, fields=wanted)


def _strings(column: list, path: str, name: str) -> list[str]:
    out = []
    for row, v in enumerate(column):
        if v is None:
            raise UserError(f"{path}: example {row + 1} has no value for field {name!r}")
        if isinstance(v, (dict, list)):
            raise UserError(f"{path}: field {name!r} must hold text, but example {row + 1} holds a "
                            f"{type(v).__name__}")
        out.append(v if isinstance(v, str) else str(v))
    return out


def _load_rows(path: str, split: str):
    """A ``datasets.Dataset`` of the file's rows (or a hub dataset's split)."""
    import datasets

    ext = os.path.splitext(path[:-3] if path.endswith(".gz") else path)[1].lower()
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory; give a JSONL, JSON or CSV file")
    if os.path.isfile(path):
        builder = _FORMATS.get(ext)
        if builder is None:
            raise UserError(f"{path}: unknown data format {ext or '(no extension)'!r}; use .jsonl, .json, .csv or .tsv")
        _check_text_file(path)
        kwargs = {"delimiter": "\t"} if ext == ".tsv" else {}
        try:
            with _quiet(datasets):
                # Each load parses the file afresh: a dev set is small, and a stale cache would score old data.
                ds = datasets.load_dataset(builder, data_files={"dev": path}, split="dev",
                                           download_mode="force_redownload", keep_in_memory=True, **kwargs)
        except Exception as exc:  # datasets wraps pyarrow/json/pandas errors in several types
            cause = _root_cause(exc)
            if "corresponds to no data" in cause:
                raise UserError(f"{path} holds no examples") from None
            kind = "JSON" if builder == "json" else "CSV"
            where = _first_bad_json_line(path) if ext in (".jsonl", ".ndjson") else ""
            raise UserError(f"{path} is not valid {kind}: {where or cause}") from None
        return ds
    if _looks_like_path(path):
        raise UserError(f"data file {path} not found")
    try:
        with _quiet(datasets):
            return datasets.load_dataset(path, split=split,
                                         download_config=datasets.DownloadConfig(max_retries=0))
    except Exception as exc:
        raise UserError(f"data {path!r} is neither a local file nor a loadable hub dataset "
                        f"(no network?): {_root_cause(exc)}") from None


def _check_text_file(path: str) -> None:
    """Report an empty file or bad UTF-8 with a position, before datasets buries it in a generic error."""
    if path.endswith(".gz"):
        return
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        raise UserError(f"{path} is empty: it holds no examples")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path} is not valid UTF-8 (line {line}, byte {exc.start}); re-encode it as UTF-8") from None


def _first_bad_json_line(path: str) -> str:
    """Name the first line of a JSON Lines file that does not parse (datasets reports a byte offset at best)."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"line {n}: {exc.msg} (column {exc.colno})"
            if not isinstance(row, dict):
                return f"line {n}: expected a JSON object per line, got {type(row).__name__}"
    return ""


def _looks_like_path(text: str) -> bool:
    return os.path.isabs(text) or text.startswith(".") or os.path.splitext(text)[1].lower() in _FORMATS \
        or text.endswith(".gz")


@contextlib.contextmanager
def _quiet(datasets):
    """Silence datasets' progress bars and its logged copy of errors we report ourselves in one line."""
    bars = datasets.is_progress_bar_enabled()
    level = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
