"""A bank's files: safetensors only (reading never executes code), every file hashed, and a module's tensors
checked against the base layer's names and shapes before they load."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

from .._errors import UserError
from .._io import sha256_file
from .._version import __version__


def _hash_dir(path: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(path):
        for f in sorted(files):
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = sha256_file(full)
    return dict(sorted(out.items()))


def _layer_state(layer: nn.Module, private: Sequence[str]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in layer.state_dict().items() if k not in private}


def _write_safetensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, path, metadata={"format": "pt", "writer": f"modsearch {__version__}"})


def _read_safetensors(path: str, what: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file, refusing anything else (safetensors never executes code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"{what}: not a valid safetensors file ({str(exc).splitlines()[0]})") from None


def _compare_shapes(ref: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    missing = sorted(set(ref) - set(got))
    extra = sorted(set(got) - set(ref))
    if missing:
        return f"missing tensor(s) {', '.join(missing[:3])}"
    if extra:
        return f"unexpected tensor(s) {', '.join(extra[:3])}"
    for k, v in ref.items():
        if tuple(got[k].shape) != tuple(v.shape):
            return f"tensor {k} has shape {tuple(got[k].shape)}, expected {tuple(v.shape)}"
    return ""


def _load_layer_state(layer: nn.Module, tensors: dict[str, torch.Tensor], private: Sequence[str], what: str) -> None:
    ref = _layer_state(layer, private)
    bad = _compare_shapes(ref, tensors)
    if bad:
        raise UserError(f"{what}: {bad}")
    layer.load_state_dict(tensors, strict=False)


#: Files of a model directory that carry its terms: copied into a bank's base and into every export from it.
LICENCE_PATTERNS = ("license*", "licence*", "notice*", "copying*", "*terms*", "use_policy*", "use-policy*")


def licence_files(directory: str) -> list[str]:
    """The licence, notice and terms files at the top of ``directory`` (names matched case-insensitively)."""
    import fnmatch

    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [n for n in names if os.path.isfile(os.path.join(directory, n))
            and any(fnmatch.fnmatch(n.lower(), pat) for pat in LICENCE_PATTERNS)]
