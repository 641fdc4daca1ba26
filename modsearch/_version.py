import hashlib
import os

__version__ = "0.1.0"

#: Where modsearch's own source lives (the code hashes read it; a test may point it at a copy).
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# The package's own code a cached result depends on, by kind (paths relative to the package): the version number
# never changes between commits, so cache keys hold a hash of this code's content instead.
SCORING_CODE = {
    "quality": ("quality", "data", "plan", "bank", "assembly.py", "search/_evaluator.py"),
    "cost": ("cost", "plan", "bank", "assembly.py", "search/_evaluator.py"),
    "seeds": ("search/_seeds.py", "quality", "plan", "bank", "assembly.py"),  # the calibrated baselines
}

# The libraries whose versions can change a score: the model code, tokenisation, and the metric implementations.
_SCORING_LIBRARIES = ("torch", "transformers", "tokenizers", "evaluate", "sacrebleu", "rouge_score")


def software_versions() -> dict[str, str | None]:
    """Versions of modsearch and of every library that can change a computed score (cache keys hold them)."""
    from importlib import metadata

    out: dict[str, str | None] = {"modsearch": __version__}
    for name in _SCORING_LIBRARIES:
        try:
            out[name] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def code_hash(kind: str) -> str:
    """sha256 over the source files (``*.py`` and the files beside them, ``__pycache__`` excepted) that a
    ``kind`` of cached result (``quality``, ``cost`` or ``seeds``) is computed by: any change to that code is another key."""
    h = hashlib.sha256()
    for part in SCORING_CODE[kind]:
        full = os.path.join(PACKAGE_DIR, part)
        files = [full] if os.path.isfile(full) else sorted(
            os.path.join(root, f) for root, dirs, names in os.walk(full)
            if "__pycache__" not in root.split(os.sep) for f in names if not f.endswith((".pyc", ".pyo")))
        for f in files:
            with open(f, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            h.update(f"{os.path.relpath(f, PACKAGE_DIR)}={digest}\n".encode())
    return h.hexdigest()
