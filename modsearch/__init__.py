"""modsearch: compress a transformer by assembling it from a layer bank, searched with multi-objective Optuna.

The package follows the data path, one folder per noun: ``data`` → ``bank`` → ``plan`` → ``assembly`` →
``train`` (builds banks) → ``quality`` (on a dev set) and ``cost`` (on a hardware target) → ``search`` →
``results`` → ``report`` / ``export`` (and ``heal``, the chosen point distilled before it ships); ``cli`` is a thin layer over them. Each imports only rooms before it.

>>> from modsearch import LayerBank, assemble, export_model           # doctest: +SKIP
>>> bank = LayerBank.load("banks/bible-en-fr")                        # doctest: +SKIP
>>> model = assemble(bank, "0-1,2-3,4-5/0-1,2-3,4-5")                 # doctest: +SKIP
"""

from ._errors import UserError
from ._version import __version__

# Public names load on first use (PEP 562), so that `modsearch --help` and light imports do not pay for torch
# and transformers.
_EXPORTS = {
    "assemble": ".assembly", "LayerBank": ".bank", "cost_report": ".cost", "DevSet": ".data",
    "export_model": ".export", "AssemblyPlan": ".plan", "Block": ".plan", "PlanSpace": ".plan",
    "LatencyProfile": ".cost", "predict": ".cost", "QualityResult": ".quality", "QualityTask": ".quality",
    "score_plan": ".quality", "score_quality": ".quality", "HardwareTarget": ".cost", "TrainConfig": ".train",
    "train_bank": ".train", "heal": ".heal", "HealConfig": ".heal",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modsearch' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


__all__ = [
    "AssemblyPlan",
    "Block",
    "DevSet",
    "HealConfig",
    "HardwareTarget",
    "LatencyProfile",
    "LayerBank",
    "PlanSpace",
    "QualityResult",
    "QualityTask",
    "TrainConfig",
    "UserError",
    "__version__",
    "assemble",
    "cost_report",
    "export_model",
    "heal",
    "predict",
    "score_plan",
    "score_quality",
    "train_bank",
]
