"""Hardware targets: the named, validated definition of where and how a plan's cost is measured.

A target pins everything that changes a latency figure: the device, the thread count, the dtype, the batch
size, the input length, the number of generated tokens (fixed: ``min_new_tokens == max_new_tokens``, so the
work is deterministic), the generation mode, and the measurement protocol (warm-up runs, a minimum number of
iterations *and* a minimum duration, the statistics reported).

Targets are TOML files in ``studies/targets/NAME.toml`` or a ``[target]`` table inline in a study::

    device = "cpu"
    threads = 1               # or "all"
    dtype = "float32"         # float32 | bfloat16 | float16
    batch_size = 1
    input_length = 32         # tokens, or "dev" (the median length of the dev set's inputs)
    output_length = 32        # generated tokens, exactly
    generation = "greedy"     # greedy | beam
    [protocol]
    warmup = 3
    min_iterations = 10
    min_seconds = 2.0
    statistics = ["p50", "p90", "mean", "cv"]
    # paired measurement (plans against the teacher, interleaved; see modsearch.cost._paired):
    interval = 0.03           # stop once every speed-up is known to +-3 % (95 % interval) ...
    min_rounds = 6            # ... after at least 6 rounds (fewer give no 95 % interval) ...
    max_seconds = 3.0         # ... or after 3 s for a trial's plan,
    verify_seconds = 150.0    # or 150 s for verifying a whole frontier, whichever comes first (then warn)

>>> t = HardwareTarget.resolve("cpu-1t-b1")          # doctest: +SKIP
>>> t.check_available()                              # refuses cuda on a machine without CUDA
>>> fingerprint()["cpu_model"]                       # doctest: +SKIP
'AMD EPYC'
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics as _stats
import subprocess
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field

from .._checks import is_int, known_keys, need
from .._errors import UserError

DEVICES = ("cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16", "float16")
GENERATION = ("greedy", "beam")
STATISTICS = ("p50", "p90", "p99", "mean", "std", "cv", "min", "max")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Protocol:
    """How a latency is measured: ``warmup`` untimed runs, then timed runs until there are at least
    ``min_iterations`` of them *and* at least ``min_seconds`` have passed (``max_iterations`` caps a very fast
    model). ``statistics`` are the figures reported."""

    warmup: int = 3
    min_iterations: int = 10
    min_seconds: float = 2.0
    max_iterations: int = 10_000
    statistics: tuple[str, ...] = ("p50", "p90", "mean", "cv")
    # Paired measurement: rounds of (plans, reference) in shuffled order until every ratio's ``confidence``
    # interval is within ``± interval`` (relative), after ``min_rounds``; capped at ``max_seconds`` for one
    # plan during a search (a search needs a ranking, not three digits) and ``verify_seconds`` for the
    # verification of a whole frontier (where the figures a user deploys by are made).
    interval: float = 0.03
    confidence: float = 0.95
    min_rounds: int = 6
    max_seconds: float = 3.0
    verify_seconds: float = 150.0

    def to_dict(self) -> dict:
        return {"warmup": self.warmup, "min_iterations": self.min_iterations, "min_seconds": self.min_seconds,
                "max_iterations": self.max_iterations, "statistics": list(self.statistics),
                "interval": self.interval, "confidence": self.confidence, "min_rounds": self.min_rounds,
                "max_seconds": self.max_seconds, "verify_seconds": self.verify_seconds}


@dataclass(frozen=True)
class HardwareTarget:
    """A hardware target (see the module docstring for the TOML form).

    ``threads`` is ``None`` for "all the CPUs this process may use". ``input_length`` is ``"dev"`` when it
    is taken from the dev set; call :meth:`with_input_lengths` to fix it before measuring.
    """

    name: str
    device: str = "cpu"
    threads: int | None = 1
    dtype: str = "float32"
    batch_size: int = 1
    input_length: int | str = 32
    output_length: int = 32
    generation: str = "greedy"
    num_beams: int = 1
    protocol: Protocol = field(default_factory=Protocol)
    description: str = ""

    # -- construction -------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict, name: str) -> HardwareTarget:
        """Build and validate a target from a parsed TOML table. Unknown keys and bad values are errors."""
        where = f"target {name!r}"
        if not isinstance(d, dict):
            raise UserError(f"{where}: must be a table of settings, not {type(d).__name__}")
        known = {"name", "description", "device", "threads", "dtype", "batch_size", "input_length",
                 "output_length", "generation", "num_beams", "protocol"}
        known_keys(d, known, where)
        name = d.get("name", name)
        need(isinstance(name, str) and name, where, "name", "a non-empty string")
        device = d.get("device", "cpu")
        need(isinstance(device, str) and _device_ok(device), where, "device",
               "'cpu', 'cuda', 'cuda:N' or 'mps'", device)
        threads = d.get("threads", 1)
        if threads == "all":
            threads = None
        else:
            need(is_int(threads) and threads >= 1, where, "threads", "an integer >= 1 or \"all\"", threads)
        dtype = d.get("dtype", "float32")
        need(dtype in DTYPES, where, "dtype", " | ".join(DTYPES), dtype)
        batch = d.get("batch_size", 1)
        need(is_int(batch) and batch >= 1, where, "batch_size", "an integer >= 1", batch)
        inp = d.get("input_length", 32)
        need(inp == "dev" or (is_int(inp) and inp >= 1), where, "input_length",
               "an integer >= 1 or \"dev\"", inp)
        out = d.get("output_length", 32)
        need(is_int(out) and out >= 1, where, "output_length", "an integer >= 1 (exact new tokens)", out)
        gen = d.get("generation", "greedy")
        need(gen in GENERATION, where, "generation", " | ".join(GENERATION), gen)
        beams = d.get("num_beams", 4 if gen == "beam" else 1)
        need(is_int(beams) and beams >= 1, where, "num_beams", "an integer >= 1", beams)
        if gen == "greedy" and beams != 1:
            raise UserError(f"{where}: num_beams = {beams} with generation = \"greedy\"; use generation = \"beam\"")
        if gen == "beam" and beams < 2:
            raise UserError(f"{where}: generation = \"beam\" needs num_beams >= 2")
        desc = d.get("description", "")
        need(isinstance(desc, str), where, "description", "a string", desc)
        return cls(name=name, device=device, threads=threads, dtype=dtype, batch_size=batch, input_length=inp,
                   output_length=out, generation=gen, num_beams=beams,
                   protocol=_protocol(d.get("protocol", {}), where), description=desc)

    @classmethod
    def from_toml(cls, path: str) -> HardwareTarget:
        name = os.path.splitext(os.path.basename(path))[0]
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise UserError(f"target file {path} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"target file {path} is not valid TOML ({exc})") from None
        return cls.from_dict(data, name)

    @classmethod
    def resolve(cls, spec: str | dict | HardwareTarget) -> HardwareTarget:
        """A target from a name (``studies/targets/NAME.toml`` under the working directory, then under the
        repository), a path to a TOML file, an inline table (dict) or a target (returned as is)."""
        if isinstance(spec, HardwareTarget):
            return spec
        if isinstance(spec, dict):
            return cls.from_dict(spec, spec.get("name", "inline"))
        if not isinstance(spec, str) or not spec:
            raise UserError(f"a target is a name, a TOML path or a table, not {spec!r}")
        if spec.endswith(".toml") or os.sep in spec:
            return cls.from_toml(spec)
        candidates = [os.path.join(root, "studies", "targets", f"{spec}.toml") for root in (os.getcwd(), _REPO)]
        for c in candidates:
            if os.path.isfile(c):
                return cls.from_toml(c)
        known = sorted({os.path.splitext(f)[0] for root in (os.getcwd(), _REPO)
                        for f in _listdir(os.path.join(root, "studies", "targets")) if f.endswith(".toml")})
        raise UserError(f"unknown target {spec!r}: no studies/targets/{spec}.toml "
                        f"(known: {', '.join(known) or 'none'}; or give a path to a TOML file)")

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "device": self.device,
                "threads": "all" if self.threads is None else self.threads, "dtype": self.dtype,
                "batch_size": self.batch_size, "input_length": self.input_length,
                "output_length": self.output_length, "generation": self.generation, "num_beams": self.num_beams,
                "protocol": self.protocol.to_dict()}

    def with_input_lengths(self, lengths: Sequence[int]) -> HardwareTarget:
        """For ``input_length = "dev"``: fix the input length to the median of the dev set's input lengths
        (in tokens). A fixed length keeps the measured work identical from run to run."""
        if self.input_length != "dev":
            return self
        if not lengths:
            raise UserError(f"target {self.name!r} takes its input length from the dev set, but no dev "
                            "lengths were given")
        return dataclasses.replace(self, input_length=max(1, round(_stats.median(lengths))))

    # -- derived ------------------------------------------------------------------------------------------
    @property
    def n_threads(self) -> int:
        """The thread count to pin: the target's, or every CPU this process may run on."""
        return self.threads if self.threads is not None else _cpus()

    @property
    def fixed_input_length(self) -> int:
        if self.input_length == "dev":
            raise UserError(f"target {self.name!r} takes its input length from the dev set; give the dev data "
                            "(or set input_length to a number)")
        return int(self.input_length)

    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @property
    def itemsize(self) -> int:
        """Bytes per weight in the target's dtype."""
        import torch

        return torch.empty((), dtype=self.torch_dtype()).element_size()

    def check_available(self) -> None:
        """Refuse (one line) a target this machine cannot provide."""
        import torch

        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise UserError(f"target {self.name!r} needs {self.device}, but CUDA is not available here "
                                f"(torch {torch.__version__}); pick a CPU target such as cpu-1t-b1")
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            if index >= torch.cuda.device_count():
                raise UserError(f"target {self.name!r} needs {self.device}, but this machine has "
                                f"{torch.cuda.device_count()} CUDA device(s)")
        elif self.device == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise UserError(f"target {self.name!r} needs mps, but MPS is not available here")
        if self.device == "cpu" and self.threads is not None and self.threads > _cpus():
            raise UserError(f"target {self.name!r} asks for {self.threads} threads, but this process may use "
                            f"only {_cpus()} CPU(s); oversubscribed timings are not what a deployment sees")
        _smoke_dtype(self)


def _smoke_dtype(target: HardwareTarget) -> None:
    """Run the ops a transformer layer needs in the target's dtype on its device: some builds lack them."""
    import torch

    dtype = target.torch_dtype()
    try:
        x = torch.randn(2, 8, 16, device=target.device).to(dtype)
        w = torch.randn(16, 16, device=target.device).to(dtype)
        y = torch.nn.functional.layer_norm(x @ w, (16,))
        torch.nn.functional.scaled_dot_product_attention(y, y, y).softmax(-1).sum().item()
    except (RuntimeError, TypeError) as exc:
        raise UserError(f"target {target.name!r}: dtype {target.dtype} is not supported on {target.device} by "
                        f"this torch build ({str(exc).splitlines()[0]})") from None


def _protocol(d, where: str) -> Protocol:
    where = f"{where}, [protocol]"
    if not isinstance(d, dict):
        raise UserError(f"{where}: must be a table")
    known_keys(d, {"warmup", "min_iterations", "min_seconds", "max_iterations", "statistics", "interval",
                   "confidence", "min_rounds", "max_seconds", "verify_seconds"}, where)
    p = Protocol()
    warmup = d.get("warmup", p.warmup)
    need(is_int(warmup) and warmup >= 0, where, "warmup", "an integer >= 0", warmup)
    mi = d.get("min_iterations", p.min_iterations)
    need(is_int(mi) and mi >= 1, where, "min_iterations", "an integer >= 1", mi)
    ms = d.get("min_seconds", p.min_seconds)
    need(isinstance(ms, int | float) and not isinstance(ms, bool) and ms >= 0, where, "min_seconds",
           "a number >= 0", ms)
    mx = d.get("max_iterations", p.max_iterations)
    need(is_int(mx) and mx >= mi, where, "max_iterations", f"an integer >= min_iterations ({mi})", mx)
    stats = d.get("statistics", list(p.statistics))
    need(isinstance(stats, list) and stats and all(s in STATISTICS for s in stats), where, "statistics",
           f"a non-empty list drawn from {', '.join(STATISTICS)}", stats)
    interval = d.get("interval", p.interval)
    need(_number(interval) and 0 < interval < 1, where, "interval",
         "a relative half-width between 0 and 1 (0.03 = ±3 %)", interval)
    conf = d.get("confidence", p.confidence)
    need(_number(conf) and 0.5 <= conf < 1, where, "confidence", "a level in [0.5, 1), e.g. 0.95", conf)
    mr = d.get("min_rounds", p.min_rounds)
    need(is_int(mr) and mr >= 2, where, "min_rounds", "an integer >= 2", mr)
    cap = d.get("max_seconds", p.max_seconds)
    need(_number(cap) and cap > 0, where, "max_seconds", "a number of seconds > 0", cap)
    vcap = d.get("verify_seconds", p.verify_seconds)
    need(_number(vcap) and vcap > 0, where, "verify_seconds", "a number of seconds > 0", vcap)
    return Protocol(warmup=warmup, min_iterations=mi, min_seconds=float(ms), max_iterations=mx,
                    statistics=tuple(stats), interval=float(interval), confidence=float(conf), min_rounds=mr,
                    max_seconds=float(cap), verify_seconds=float(vcap))


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _device_ok(device: str) -> bool:
    if device in DEVICES:
        return True
    head, _, idx = device.partition(":")
    return head == "cuda" and idx.isdigit()


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LoadProbe:
    """How many of this process's CPUs other processes are keeping busy, from ``/proc/stat`` and this process's
    own CPU time: ``(CPU time the machine spent busy - the time this process spent) / wall time`` since the
    last reading. Reading it costs microseconds and no sleep (after a 0.2 s first reading), so a search can
    ask before every plan.

    Why it matters: a torch op split over 2 threads waits for its slower half, so when another process holds
    one of 2 cores a 2-thread run slows down many times over (NOTES.md measured 5 s -> 30 s a plan), while a
    1-thread run barely notices. :meth:`free_cpus` is the thread count to use.
    """

    def __init__(self, clock=None):
        import time

        self._clock = clock or time.monotonic
        self._last = None

    @staticmethod
    def _machine_busy_seconds() -> float | None:
        try:
            with open("/proc/stat", encoding="ascii") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is in user)
        return busy / os.sysconf("SC_CLK_TCK")

    def _reading(self):
        busy = self._machine_busy_seconds()
        t = os.times()
        return busy, t.user + t.system, self._clock()

    def others(self) -> float | None:
        """Cores used by other processes since the last call (None where /proc/stat is not readable)."""
        import time

        if self._last is None:
            self._last = self._reading()
            time.sleep(0.2)
        now = self._reading()
        (b0, m0, t0), (b1, m1, t1) = self._last, now
        self._last = now
        if b0 is None or b1 is None or t1 <= t0:
            return None
        return max(0.0, ((b1 - b0) - (m1 - m0)) / (t1 - t0))

    def free_cpus(self) -> int:
        """This process's CPUs minus those other processes kept busy (rounded), at least 1."""
        others = self.others()
        n = _cpus()
        return n if others is None else max(1, n - int(others + 0.5))


# -- fingerprint ---------------------------------------------------------------------------------------------
#: Fields that must agree for two measurements to be comparable (hostname and thread count are not here: the
#: target carries the threads, and identical machines under different names give comparable figures).
# transformers too: its version changes generate()'s own overhead, a large share of a small model's latency.
FINGERPRINT_KEYS = ("cpu_model", "cpu_count", "machine", "torch", "transformers", "gpu_name", "gpu_driver")


def fingerprint(device: str = "cpu") -> dict:
    """What the measurement ran on: CPU model and count, torch and transformers versions, threads, GPU name and
    driver.

    Figures from different fingerprints are never mixed silently (see :func:`fingerprint_mismatch`).
    """
    import torch
    import transformers

    fp = {"cpu_model": _cpu_model(), "cpu_count": _cpus(), "machine": platform.machine(),
          "system": platform.system(), "python": platform.python_version(), "torch": torch.__version__,
          "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
          "gpu_name": None, "gpu_driver": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        index = int(device.split(":")[1]) if ":" in device else 0
        fp["gpu_name"] = torch.cuda.get_device_name(index)
        fp["gpu_driver"] = _nvidia_driver()
        fp["cuda_runtime"] = torch.version.cuda
    return fp


def fingerprint_mismatch(a: dict, b: dict) -> list[str]:
    """The comparable fields on which two fingerprints differ, as ``key: a != b`` strings."""
    return [f"{k}: {a.get(k)!r} != {b.get(k)!r}" for k in FINGERPRINT_KEYS if a.get(k) != b.get(k)]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return out.strip().splitlines()[0] if out.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None
