"""Field checks for the TOML files users write (studies, hardware targets): one line per mistake, naming the
file, the key, what is allowed and what was given.

Why not pydantic models: these files need paths resolved against the file, inline or named targets, and errors in
modsearch's one-line form (``modsearch: error: studies/x.toml: task.num_beams must be ...``); pydantic's messages
would be rewritten to that form anyway, and the two files need five small checks, below.
"""

from __future__ import annotations

from ._errors import UserError


def need(ok, where: str, key: str, expected: str, value=None) -> None:
    """Refuse ``key`` in ``where`` unless ``ok``: ``where: key must be EXPECTED, got VALUE``."""
    if not ok:
        got = "" if value is None else f", got {value!r}"
        raise UserError(f"{where}: {key} must be {expected}{got}")


def known_keys(d: dict, known: set[str], where: str, prefix: str = "") -> None:
    """Refuse the first key of ``d`` that is not in ``known``, listing the known ones."""
    unknown = sorted(set(d) - known)
    if unknown:
        raise UserError(f"{where}: unknown key {prefix + unknown[0]!r} (known: {', '.join(sorted(known))})")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
