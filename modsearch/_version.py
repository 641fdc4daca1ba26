__version__ = "0.1.0"

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
