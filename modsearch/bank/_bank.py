"""Layer banks: a model's original layers plus modular layers, each trained to do the work of k layers.

On disk a bank is a directory::

    BANK/
      manifest.json          versioned: architecture, stacks and depths, modules, sha256 of every file,
                             provenance (source model, recipe, data hashes, training stats)
      base/                  the original model as a plain Hugging Face model directory (+ tokenizer)
      modules/<stack>.<i>-<j>.safetensors
                             one module: the state dict of an instance of the base model's own layer class

Loading reads JSON and safetensors only; nothing is ever unpickled.

>>> bank = LayerBank.init("path/to/hf-model", "banks/mine", granularities=[2, 3])   # doctest: +SKIP
>>> bank = LayerBank.load("banks/mine")                                              # doctest: +SKIP
>>> plan = bank.plan("0,1-2,3-5/0-1,2,3,x4,5")                                        # doctest: +SKIP
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from .._errors import UserError
from .._io import atomic_dir, sha256_file, shareable_name, write_json
from .._version import __version__
from ..plan._plan import DROP, MODULE, AssemblyPlan, PlanSpace
from .arch import ArchitectureAdapter, adapter_for
from ._spans import module_spans, parse_spans
from ._storage import (_compare_shapes, _hash_dir, _layer_state, _load_layer_state, _read_safetensors, licence_files,
                       _write_safetensors)
from ._tokenizer import load_tokenizer

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
_REQUIRED = ("format", "schema_version", "architecture", "stacks", "base", "modules", "provenance")


@dataclass
class ModuleEntry:
    """One modular layer: covers layers ``start..end`` of ``stack``."""

    stack: str
    start: int
    end: int
    file: str
    sha256: str
    params: int
    trained: bool = False
    init: str = ""
    metrics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.stack}.{self.start}-{self.end}"

    @property
    def span(self) -> int:
        return self.end - self.start + 1

    def to_json(self) -> dict:
        return {"stack": self.stack, "start": self.start, "end": self.end, "file": self.file,
                "sha256": self.sha256, "params": self.params, "trained": self.trained, "init": self.init,
                "metrics": self.metrics}


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class LayerBank:
    """A bank on disk, loaded. The base model and module layers load lazily and are cached."""

    def __init__(self, path: str, manifest: dict):
        self.path = path
        self.manifest = manifest
        self.adapter: ArchitectureAdapter = adapter_for(manifest["architecture"]["model_type"])
        self.stack_names: list[str] = [s["name"] for s in manifest["stacks"]]
        self.depths: list[int] = [int(s["depth"]) for s in manifest["stacks"]]
        if tuple(self.stack_names) != self.adapter.stacks:
            raise UserError(f"bank {path}: manifest stacks {self.stack_names} do not match architecture "
                            f"{manifest['architecture']['model_type']!r} ({list(self.adapter.stacks)})")
        self.modules: dict[tuple[str, int, int], ModuleEntry] = {}
        for m in manifest["modules"]:
            try:
                e = ModuleEntry(**m)
            except TypeError as exc:
                raise UserError(f"bank {path}: malformed module entry {m!r} ({exc})") from None
            if e.stack not in self.stack_names:
                raise UserError(f"bank {path}: module {e.name} names unknown stack {e.stack!r}")
            depth = self.depths[self.stack_names.index(e.stack)]
            if not (0 <= e.start < e.end < depth):
                raise UserError(f"bank {path}: module {e.name} is out of range for a stack of depth {depth}")
            self.modules[(e.stack, e.start, e.end)] = e
        self._base = None
        self._tokenizer = None
        self._checksum: str | None = None
        self._file_hashes: dict[str, str] = {}  # sha256 of files read once, shared by the checksum and loading
        self._layers: dict[tuple[str, int, int], nn.Module] = {}

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str) -> LayerBank:
        """Open a bank directory (reads only its manifest; weights load on first use)."""
        mpath = os.path.join(path, MANIFEST)
        if not os.path.isdir(path):
            raise UserError(f"no bank at {path}: directory not found (create one with 'modsearch bank init')")
        if not os.path.isfile(mpath):
            raise UserError(f"{path} is not a bank: {MANIFEST} is missing")
        try:
            with open(mpath, encoding="utf-8") as f:
                manifest = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"bank {path}: {MANIFEST} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise UserError(f"bank {path}: {MANIFEST} must hold a JSON object")
        missing = [k for k in _REQUIRED if k not in manifest]
        if missing:
            raise UserError(f"bank {path}: {MANIFEST} lacks field(s) {', '.join(missing)}")
        if manifest["format"] != "modsearch-bank":
            raise UserError(f"bank {path}: {MANIFEST} is not a modsearch bank manifest")
        version = manifest["schema_version"]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise UserError(f"bank {path}: manifest schema version {version!r} is newer than this modsearch "
                            f"understands ({SCHEMA_VERSION}); upgrade modsearch")
        return cls(path, manifest)

    @property
    def base_dir(self) -> str:
        return os.path.join(self.path, self.manifest["base"]["dir"])

    @property
    def kind(self) -> str:
        return self.adapter.kind

    @property
    def base_model(self) -> nn.Module:
        """The original model (frozen, eval mode). Loaded from safetensors only."""
        if self._base is None:
            self._check_files(self._base_files(), "base model")
            cls = _auto_class(self.kind)
            try:
                model = cls.from_pretrained(self.base_dir, use_safetensors=True, dtype=torch.float32)
            except Exception as exc:  # transformers raises many types for a broken directory
                raise UserError(f"bank {self.path}: cannot load the base model ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            self._base = model
        return self._base

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._check_files({os.path.join(self.manifest["base"]["dir"], f): h
                               for f, h in self.manifest["base"]["files"].items()
                               if f.startswith(("tokenizer", "special_tokens", "vocab", "merges", "spiece"))}, "tokenizer")
            try:
                self._tokenizer = load_tokenizer(self.base_dir)
            except Exception as exc:
                raise UserError(f"bank {self.path}: no usable tokenizer in {self.base_dir} ({exc})") from None
        return self._tokenizer

    def has_tokenizer(self) -> bool:
        return any(f.startswith("tokenizer") for f in self.manifest["base"]["files"])

    def _base_files(self) -> dict[str, str]:
        # What shapes the model's outputs: weights, config and generation defaults (the tokenizer is checked when
        # it loads). An edited file is refused here and changes the checksum, so no cache serves it stale scores.
        return {os.path.join(self.manifest["base"]["dir"], f): h for f, h in self.manifest["base"]["files"].items()
                if f.endswith(".safetensors") or f in ("config.json", "generation_config.json")}

    def _check_files(self, files: dict[str, str], what: str) -> None:
        for rel, expected in files.items():
            full = os.path.join(self.path, rel)
            if not os.path.isfile(full):
                raise UserError(f"bank {self.path}: {what} file {rel} is missing")
            if self._live_sha256(rel, expected) != expected:
                raise UserError(f"bank {self.path}: {what} file {rel} does not match its sha256 in the "
                                f"manifest (corrupted or edited); run 'modsearch bank verify {self.path}'")

    def original_layer(self, stack: str, i: int) -> nn.Module:
        return self.adapter.layers(self.base_model, stack)[i]

    def module_layer(self, stack: str, start: int, end: int) -> nn.Module:
        """The module over ``start..end`` of ``stack``: an instance of the base layer class (cached)."""
        key = (stack, start, end)
        if key not in self._layers:
            entry = self.modules.get(key)
            if entry is None:
                raise UserError(f"bank {self.path} has no module {stack}.{start}-{end}")
            self._layers[key] = self._build_module(entry)
        return self._layers[key]

    def _build_module(self, entry: ModuleEntry) -> nn.Module:
        full = os.path.join(self.path, entry.file)
        self._check_files({entry.file: entry.sha256}, f"module {entry.name}")
        tensors = _read_safetensors(full, f"bank {self.path}: module {entry.name}")
        layer = copy.deepcopy(self.original_layer(entry.stack, entry.start))
        _load_layer_state(layer, tensors, self.adapter.stack_private_keys(entry.stack),
                          f"bank {self.path}: module {entry.name}")
        config = self.base_model.config
        self.adapter.set_attention_type(layer, config, self.adapter.attention_source(config, entry.start, entry.end))
        return layer

    # -- identity -----------------------------------------------------------------------------------------
    @property
    def checksum(self) -> str:
        """sha256 over the sha256 of every file of the bank (weights, configs, generation config, tokenizer) and
        the module spans: names the bank's content. Hashed from the files as they are (once per instance), so an
        edited file changes it even when the manifest was not updated: caches keyed by it stay honest."""
        if self._checksum is None:
            h = hashlib.sha256()
            for rel, digest in sorted(self.manifest["base"]["files"].items()):
                h.update(f"base/{rel}={self._live_sha256(os.path.join(self.manifest['base']['dir'], rel), digest)}\n"
                         .encode())
            for e in sorted(self.modules.values(), key=lambda e: e.name):
                h.update(f"{e.name}={self._live_sha256(e.file, e.sha256)}\n".encode())
            self._checksum = h.hexdigest()
        return self._checksum

    def _live_sha256(self, rel: str, recorded: str) -> str:
        full = os.path.join(self.path, rel)
        if not os.path.isfile(full):
            return f"missing:{recorded}"
        if rel not in self._file_hashes:
            self._file_hashes[rel] = sha256_file(full)
        return self._file_hashes[rel]

    @property
    def source_prefix(self) -> str:
        return self.manifest.get("task", {}).get("source_prefix", "") or ""

    # -- plans --------------------------------------------------------------------------------------------
    def module_spans(self) -> list[set[tuple[int, int]]]:
        return [{(e.start, e.end) for e in self.modules.values() if e.stack == s} for s in self.stack_names]

    def plan(self, text_or_plan: str | AssemblyPlan) -> AssemblyPlan:
        """Parse (if needed) and validate a plan against this bank."""
        plan = AssemblyPlan.parse(text_or_plan) if isinstance(text_or_plan, str) else text_or_plan
        return plan.validate(self.depths, self.module_spans(), self.stack_names)

    def space(self, drops: bool = True, granularities: Sequence[int] | None = None) -> PlanSpace:
        spans = self.module_spans()
        if granularities is not None:
            spans = [{(i, j) for i, j in s if j - i + 1 in granularities} for s in spans]
        return PlanSpace(self.depths, spans, drops=drops)

    def teacher_plan(self) -> AssemblyPlan:
        return self.plan("/".join(",".join(str(i) for i in range(d)) for d in self.depths))

    def layer_params(self) -> dict[str, list[int]]:
        return {s["name"]: list(s["layer_params"]) for s in self.manifest["stacks"]}

    def plan_params(self, plan: AssemblyPlan) -> int:
        """Parameters of the assembled model (from the manifest; nothing is loaded)."""
        total = int(self.manifest["base"]["params"])
        lp = self.layer_params()
        for name, blocks in zip(self.stack_names, plan.stacks):
            total -= sum(lp[name])
            for b in blocks:
                if b.kind == MODULE:
                    total += self.modules[(name, b.start, b.end)].params
                elif b.kind != DROP:
                    total += lp[name][b.start]
        return total

    def describe_plan(self, plan: AssemblyPlan) -> dict:
        params = self.plan_params(plan)
        return {"plan": str(plan), "depths": dict(zip(self.stack_names, plan.depths)), "params": params,
                "params_ratio": params / int(self.manifest["base"]["params"])}

    # -- creation -----------------------------------------------------------------------------------------
    @classmethod
    def init(cls, model: str, out: str, granularities: Sequence[int] = (2, 3), starts: str = "aligned",
             overwrite: bool = False, trust_remote_code: bool = False, source_prefix: str = "",
             spans: Sequence[str] = ()) -> LayerBank:
        """Create a bank from a Hugging Face model directory (or hub id, when the network allows).

        Each module starts as a copy of the first layer of its span (the BERT-of-Theseus initialisation) and is
        marked untrained. ``spans`` adds modules over single spans, ``"I-J"`` (or ``"STACK:I-J"`` when the
        model has several stacks), e.g. the most redundant run of layers of an LLM.
        """
        if starts not in ("aligned", "all"):
            raise UserError(f"--starts must be 'aligned' or 'all', not {starts!r}")
        grans = sorted(set(int(g) for g in granularities))
        if (not grans and not spans) or any(g < 2 for g in grans):
            raise UserError("granularities must be integers >= 2 (a module covers at least two layers), or "
                            "give the modules' spans")
        if os.path.exists(out) and not overwrite:
            raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
        hf_model, tokenizer = _load_source_model(model, trust_remote_code)
        adapter = adapter_for(hf_model.config.model_type)
        depths = adapter.depths(hf_model)
        for g in grans:
            if g > max(depths.values()):
                raise UserError(f"granularity {g} is deeper than every stack ({depths})")
        extra = parse_spans(spans, adapter.stacks, depths)
        with atomic_dir(out, overwrite=overwrite) as tmp:
            base_dir = os.path.join(tmp, "base")
            hf_model.save_pretrained(base_dir)
            if tokenizer is not None:
                tokenizer.save_pretrained(base_dir)
            for name in licence_files(model) if os.path.isdir(model) else ():
                shutil.copyfile(os.path.join(model, name), os.path.join(base_dir, name))
            os.makedirs(os.path.join(tmp, "modules"))
            modules = []
            for stack in adapter.stacks:
                layers = adapter.layers(hf_model, stack)
                for i, j in module_spans(depths[stack], grans, starts, extra.get(stack, ())):
                    rel = f"modules/{stack}.{i}-{j}.safetensors"
                    layer = layers[i]
                    state = _layer_state(layer, adapter.stack_private_keys(stack))
                    _write_safetensors(os.path.join(tmp, rel), state)
                    modules.append(ModuleEntry(
                        stack=stack, start=i, end=j, file=rel, sha256=sha256_file(os.path.join(tmp, rel)),
                        params=sum(t.numel() for t in state.values()), trained=False, init=f"copy of layer {i}",
                    ).to_json())
            manifest = {
                "format": "modsearch-bank",
                "schema_version": SCHEMA_VERSION,
                "architecture": {"model_type": hf_model.config.model_type,
                                 "model_class": type(hf_model).__name__, "kind": adapter.kind},
                "stacks": [{"name": s, "depth": depths[s],
                            "layer_params": [_params(layer) for layer in adapter.layers(hf_model, s)]}
                           for s in adapter.stacks],
                "base": {"dir": "base", "params": _params(hf_model), "files": _hash_dir(base_dir)},
                "modules": modules,
                "granularities": grans,
                "starts": starts,
                "task": {"source_prefix": source_prefix},
                "provenance": {
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "modsearch_version": __version__,
                    "source_model": shareable_name(model),
                    "recipe": None,
                    "training": None,
                    "data": {},
                },
            }
            write_json(os.path.join(tmp, MANIFEST), manifest)
        return cls.load(out)

    # -- updates (training) -------------------------------------------------------------------------------
    def save_modules(self, states: dict[tuple[str, int, int], dict[str, torch.Tensor]],
                     trained: bool | None = True, metrics: dict[tuple[str, int, int], dict] | None = None,
                     provenance: dict | None = None) -> None:
        """Write new weights for some modules and update the manifest, crash-safe.

        New weights go to new files named by their content (``modules/<stack>.<i>-<j>.<sha12>.safetensors``), the
        manifest is then swapped atomically, and only then are the files it no longer names removed. A crash at
        any point leaves a bank that loads: the old manifest with its old files, or the new one with its new files
        (at worst with unused files, which the next save removes).
        """
        entries = {k: copy.copy(e) for k, e in self.modules.items()}
        for key, state in states.items():
            e = entries[key]
            clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
            staged = os.path.join(self.path, "modules", f".staged-{e.name}.safetensors")
            _write_safetensors(staged, clean)
            digest = sha256_file(staged)
            e.file = f"modules/{e.name}.{digest[:12]}.safetensors"
            e.sha256 = digest
            os.replace(staged, os.path.join(self.path, e.file))
            if trained is not None:  # None keeps each module's flag (a storage rewrite)
                e.trained = trained
        for key, m in (metrics or {}).items():
            entries[key].metrics = m
        manifest = copy.deepcopy(self.manifest)
        manifest["modules"] = [e.to_json() for e in entries.values()]
        if provenance:
            manifest["provenance"].update(provenance)
        write_json(os.path.join(self.path, MANIFEST), manifest)
        self.manifest, self.modules, self._checksum = manifest, entries, None
        for key in states:
            self._layers.pop(key, None)
        self.remove_unused_files()

    def remove_unused_files(self) -> list[str]:
        """Delete module files (and staged leftovers) in ``modules/`` that the manifest does not name."""
        used = {os.path.normpath(e.file) for e in self.modules.values()}
        removed = []
        folder = os.path.join(self.path, "modules")
        for f in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            rel = os.path.normpath(os.path.join("modules", f))
            if f.endswith(".safetensors") and rel not in used:
                os.unlink(os.path.join(folder, f))
                removed.append(rel)
        return removed

    def store_as(self, dtype: str = "float16") -> None:
        """Rewrite every weight file with floating tensors stored as ``dtype`` (half the bytes for float16).

        Storage only: the base model and modules still load as float32 (values rounded once), so a bank
        shipped in a repository costs half the space. Checksums are updated; the bank's checksum changes.
        """
        torch_dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}.get(dtype)
        if torch_dtype is None:
            raise UserError(f"unknown storage dtype {dtype!r}: use float16, bfloat16 or float32")

        def rewrite(rel: str) -> str:
            full = os.path.join(self.path, rel)
            tensors = _read_safetensors(full, f"bank {self.path}: {rel}")
            if all(v.dtype == torch_dtype for v in tensors.values() if v.is_floating_point()):
                return sha256_file(full)  # stored so already: the same bytes, the same checksum
            tensors = {k: (v.to(torch_dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
            tmp = full + ".tmp"
            _write_safetensors(tmp, tensors)
            os.replace(tmp, full)
            return sha256_file(full)

        base = self.manifest["base"]
        for f in list(base["files"]):
            if f.endswith(".safetensors"):
                base["files"][f] = rewrite(os.path.join(base["dir"], f))
        self.manifest["provenance"]["storage_dtype"] = dtype
        self._base, self._layers, self._checksum, self._file_hashes = None, {}, None, {}
        # Modules through the crash-safe path: new content-named files, then the manifest, then old files go.
        states = {}
        for key, e in self.modules.items():
            tensors = _read_safetensors(os.path.join(self.path, e.file), f"bank {self.path}: {e.file}")
            states[key] = {k: (v.to(torch_dtype) if v.is_floating_point() else v) for k, v in tensors.items()}
        self.save_modules(states, trained=None)

    def set_task(self, **task) -> None:
        self.manifest.setdefault("task", {}).update(task)
        write_json(os.path.join(self.path, MANIFEST), self.manifest)

    # -- inspection ---------------------------------------------------------------------------------------
    def verify(self) -> list[str]:
        """Check every file's sha256 and every module's tensor names and shapes. Returns the problems found."""
        problems = []
        files = {os.path.join(self.manifest["base"]["dir"], f): h for f, h in self.manifest["base"]["files"].items()}
        files.update({e.file: e.sha256 for e in self.modules.values()})
        for rel, expected in sorted(files.items()):
            full = os.path.join(self.path, rel)
            if not os.path.isfile(full):
                problems.append(f"{rel}: missing")
            elif sha256_file(full) != expected:
                problems.append(f"{rel}: sha256 mismatch")
        if problems:
            return problems
        try:
            base = self.base_model
        except UserError as exc:
            return [str(exc)]
        for s, d in zip(self.stack_names, self.depths):
            if len(self.adapter.layers(base, s)) != d:
                problems.append(f"base model {s} has {len(self.adapter.layers(base, s))} layers; manifest says {d}")
        if problems:
            return problems
        for e in self.modules.values():
            try:
                tensors = _read_safetensors(os.path.join(self.path, e.file), e.file)
                ref = _layer_state(self.original_layer(e.stack, e.start), self.adapter.stack_private_keys(e.stack))
                bad = _compare_shapes(ref, tensors)
                if bad:
                    problems.append(f"{e.file}: {bad}")
            except UserError as exc:
                problems.append(str(exc))
        return problems

    def info(self) -> dict:
        space = self.space()
        return {
            "path": self.path,
            "checksum": self.checksum,
            "architecture": self.manifest["architecture"],
            "depths": dict(zip(self.stack_names, self.depths)),
            "params": int(self.manifest["base"]["params"]),
            "modules": [e.to_json() | {"name": e.name, "span": e.span} for e in self.modules.values()],
            "plans": {"per_stack": dict(zip(self.stack_names, space.count_per_stack())), "total": space.count(),
                      "without_drops": self.space(drops=False).count()},
            "provenance": self.manifest["provenance"],
        }


def _auto_class(kind: str):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM


def _load_source_model(model: str, trust_remote_code: bool):
    from transformers import AutoConfig

    local = os.path.isdir(model)
    if not local and (os.sep in model and os.path.exists(os.path.dirname(model)) or model.startswith((".", "/"))):
        raise UserError(f"model directory {model} not found")
    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception as exc:
        where = "directory" if local else "hub id (no network? give a local model directory)"
        raise UserError(f"cannot read a model config from {model} as a {where}: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    adapter = adapter_for(config.model_type)
    try:
        hf_model = _auto_class(adapter.kind).from_pretrained(model, trust_remote_code=trust_remote_code,
                                                             dtype=torch.float32)
    except Exception as exc:
        raise UserError(f"cannot load model weights from {model}: {str(exc).splitlines()[0]}") from None
    hf_model.eval()
    tokenizer = None
    try:
        tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    except Exception:
        tokenizer = None  # a bank without a tokenizer can still be assembled; scoring text needs one
    return hf_model, tokenizer
