"""The cost of a plan on a hardware target: parameters, FLOPs (attention included, per block), peak memory,
and end-to-end latency measured with the target's protocol.

End to end means what a deployment runs: ``generate()`` on a batch of the target's shape with exactly
``output_length`` new tokens (``min_new_tokens == max_new_tokens``: the work never depends on when the model
happens to emit EOS). A seq2seq model encodes its input once and decodes step by step with a KV cache; a
decoder-only model reads the prompt and then decodes.

>>> report = cost_report(bank, "0-1,2-3,4-5/0,1,2,3,4,5", "cpu-1t-b1")   # doctest: +SKIP
>>> report["latency"]["p50"], report["flops"]["total"]                  # doctest: +SKIP
(0.081, 2.9e9)
>>> print(format_cost_report(report))                                   # doctest: +SKIP

The statistics live in pure functions (:func:`run_protocol`, :func:`summarize`) that take an injected clock,
so their logic is tested without timing anything.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from .._errors import UserError
from ..plan._plan import DROP, AssemblyPlan
from ._target import HardwareTarget, Protocol, fingerprint

Clock = Callable[[], float]


# -- statistics and protocol (pure) ---------------------------------------------------------------------------
def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's default)."""
    import numpy as np

    if not len(samples):
        raise ValueError("no samples")
    return float(np.percentile(np.asarray(samples, dtype=float), q))


def summarize(samples: Sequence[float]) -> dict:
    """Every statistic a protocol may report, from per-iteration durations in seconds.

    ``cv`` is the coefficient of variation, std / mean, with the sample (n - 1) standard deviation.
    """
    import numpy as np

    xs = np.asarray(samples, dtype=float)
    n = len(xs)
    mean = float(xs.mean())
    std = float(xs.std(ddof=1)) if n > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(xs, [50, 90, 99]))
    return {"n": n, "p50": p50, "p90": p90, "p99": p99, "mean": mean, "std": std,
            "cv": std / mean if mean > 0 else 0.0, "min": float(xs.min()), "max": float(xs.max()),
            "total_seconds": float(xs.sum())}


def run_protocol(step: Callable[[], float], protocol: Protocol, clock: Clock = time.perf_counter) -> list[float]:
    """Run ``step`` (one timed iteration; it returns its own duration in seconds) as the protocol says:
    ``warmup`` untimed runs, then until there are ``min_iterations`` samples *and* ``min_seconds`` have passed
    on ``clock`` (both: a fast model still gets enough seconds to average out scheduler noise, a slow one
    still gets enough samples for a percentile), never more than ``max_iterations``."""
    for _ in range(protocol.warmup):
        step()
    samples: list[float] = []
    start = clock()
    while len(samples) < protocol.max_iterations and (
            len(samples) < protocol.min_iterations or clock() - start < protocol.min_seconds):
        samples.append(step())
    return samples


def timed_step(fn: Callable[[], object], device: str = "cpu", clock: Clock = time.perf_counter) -> Callable[[], float]:
    """A step for :func:`run_protocol` that runs ``fn`` once and returns how long it took.

    On CUDA the device is synchronised first (earlier queued work must not land in this sample) and the time
    comes from CUDA events, read after the end event has completed. Untested here: no GPU on the dev machines.
    """
    if device.startswith("cuda"):
        def cuda_step() -> float:
            torch.cuda.synchronize(device)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0  # ms -> s

        return cuda_step

    def cpu_step() -> float:
        if device == "mps":
            torch.mps.synchronize()
        t0 = clock()
        fn()
        if device == "mps":
            torch.mps.synchronize()
        return clock() - t0

    return cpu_step


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Pin torch's intra-op thread count to ``n`` for the block, and restore it afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- inputs and generation -------------------------------------------------------------------------------------
def synthetic_inputs(model: nn.Module, target: HardwareTarget, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the target's shape: random ordinary tokens (no special ids), no padding.

    Latency depends on shapes, not on which tokens they are, and fixed new-token counts make the output length
    independent of them too.
    """
    cfg = model.config
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    special = {getattr(cfg, k, None) for k in ("pad_token_id", "eos_token_id", "bos_token_id",
                                               "decoder_start_token_id")}
    low = max([s for s in special if isinstance(s, int)] + [3]) + 1
    if vocab <= low:
        raise UserError(f"model vocabulary ({vocab}) is too small to build inputs")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, vocab, (target.batch_size, target.fixed_input_length), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def generate_kwargs(model: nn.Module, target: HardwareTarget) -> dict:
    cfg = model.config
    pad = cfg.pad_token_id if getattr(cfg, "pad_token_id", None) is not None else getattr(cfg, "eos_token_id", None)
    kw = dict(max_new_tokens=target.output_length, min_new_tokens=target.output_length, do_sample=False,
              num_beams=target.num_beams, use_cache=True, pad_token_id=pad)
    if target.num_beams > 1:
        kw["early_stopping"] = False
    return kw


def _runner(model: nn.Module, inputs: dict, target: HardwareTarget) -> Callable[[], torch.Tensor]:
    kw = generate_kwargs(model, target)

    def run():
        with torch.inference_mode():
            return model.generate(**inputs, **kw)

    return run


def prepare(model: nn.Module, target: HardwareTarget, seed: int = 0):
    """Move ``model`` to the target's device and dtype (in place) and build its inputs there."""
    model.to(device=target.device, dtype=target.torch_dtype()).eval()
    inputs = {k: v.to(target.device) for k, v in synthetic_inputs(model, target, seed).items()}
    return model, inputs


# -- FLOPs -------------------------------------------------------------------------------------------------------
def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict:
    # FlopCounterMode counts the CUDA SDPA kernels but not the CPU one, so attention reads 0 on CPU without this.
    aten = torch.ops.aten
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_cpu_flop
    return mapping


_ATTENTION_OPS = ("_scaled_dot_product", "bmm", "baddbmm")


def _attention_flops(ops: dict) -> int:
    # SDPA kernels are attention; under eager attention the score and context products are the batched matmuls
    # (projections run as mm/addmm on flattened tokens).
    return int(sum(v for op, v in ops.items() if any(a in str(op) for a in _ATTENTION_OPS)))


def _block_labels(bank, plan: AssemblyPlan) -> dict[str, list[str]]:
    return {name: [str(b) for b in blocks if b.kind != DROP] for name, blocks in zip(bank.stack_names, plan.stacks)}


def count_flops(bank, plan: AssemblyPlan, model: nn.Module, inputs: dict, target: HardwareTarget) -> dict:
    """FLOPs of one end-to-end run (matmuls as 2·M·N·K, attention included), split per block.

    Returns ``total``; ``encoder`` (one encoder pass; seq2seq only); ``per_token`` (everything outside the
    encoder, averaged over the generated tokens); ``attention`` (the part in attention score/context products);
    ``blocks``: one row per kept block with its stack, block notation and FLOPs over the run; ``other``:
    embeddings, LM head and anything outside the layers (``total == sum(blocks) + other``).
    """
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    labels = _block_labels(bank, plan)
    per_slot: dict[tuple[str, int], int] = {}
    started: dict[tuple[str, int], int] = {}
    handles = []

    def running_total() -> int:
        return int(sum(mode.flop_counts["Global"].values()))

    # Hooks read the counter's running total before and after each layer: this attributes FLOPs to slots for
    # every family, without depending on the module names FlopCounterMode derives inside generate().
    for name in bank.stack_names:
        for slot, layer in enumerate(bank.adapter.layers(model, name)):
            key = (name, slot)

            def pre(_m, _a, key=key):
                started[key] = running_total()

            def post(_m, _a, _o, key=key):
                per_slot[key] = per_slot.get(key, 0) + running_total() - started[key]

            handles.append(layer.register_forward_pre_hook(pre))
            handles.append(layer.register_forward_hook(post))
    encoder_total = {"n": 0}
    if bank.kind == "seq2seq":
        encoder = model.get_encoder()

        def enc_pre(_m, _a):
            encoder_total["start"] = running_total()

        def enc_post(_m, _a, _o):
            encoder_total["n"] += running_total() - encoder_total["start"]

        handles.append(encoder.register_forward_pre_hook(enc_pre))
        handles.append(encoder.register_forward_hook(enc_post))
    try:
        with mode:
            _runner(model, inputs, target)()
    finally:
        for h in handles:
            h.remove()
    total = running_total()
    ops = mode.flop_counts["Global"]
    blocks = [{"stack": name, "block": labels[name][slot], "flops": per_slot.get((name, slot), 0)}
              for name in bank.stack_names for slot in range(len(labels[name]))]
    encoder = encoder_total["n"] if bank.kind == "seq2seq" else 0
    return {"total": total, "encoder": encoder, "per_token": (total - encoder) / target.output_length,
            "attention": _attention_flops(ops), "blocks": blocks,
            "other": total - sum(b["flops"] for b in blocks),
            "by_op": {str(op): int(v) for op, v in ops.items()}}


class LayerFlops:
    """FLOPs of any plan of a bank on a target, from one counted run of the teacher.

    Every block of a stack is an instance of the same layer class with the same shapes, and a target fixes the
    input and output lengths, so each kept block costs the same FLOPs as every other block of its stack, and the
    rest of the run (embeddings, LM head) does not depend on the plan: ``flops(plan) = other + Σ_stacks kept ×
    per_layer``. Counting a plan through ``FlopCounterMode`` takes seconds (a full ``generate()`` under the
    dispatcher); this takes microseconds, and equals the count exactly (tested). It refuses a bank whose layers
    in one stack do not all cost the same (then count per plan).

    >>> lf = LayerFlops(bank, "cpu-1t-b1")                       # doctest: +SKIP
    >>> lf("0-1,2-3,4-5/0-2,3-5")["total"]                        # doctest: +SKIP
    422608896
    """

    def __init__(self, bank, target: str | dict | HardwareTarget):
        self.bank = bank
        counted = cost_report(bank, bank.teacher_plan(), target, latency=False, flops=True, memory=False)["flops"]
        self.per_layer: dict[str, int] = {}
        for name in bank.stack_names:
            costs = {b["flops"] for b in counted["blocks"] if b["stack"] == name}
            if len(costs) != 1:
                raise ValueError(f"layers of stack {name} differ in FLOPs ({sorted(costs)}); count per plan")
            self.per_layer[name] = costs.pop()
        self.other = counted["other"]
        self.output_length = HardwareTarget.resolve(target).output_length

    def __call__(self, plan: str | AssemblyPlan) -> dict:
        plan = self.bank.plan(plan)
        kept = dict(zip(self.bank.stack_names, plan.depths))
        total = self.other + sum(kept[s] * self.per_layer[s] for s in self.bank.stack_names)
        out = {"total": int(total)}
        if self.bank.kind == "seq2seq":
            out["encoder"] = int(kept["encoder"] * self.per_layer["encoder"])
            out["per_token"] = (total - out["encoder"]) / self.output_length
        return out


# -- memory ------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        try:
            import psutil

            return psutil.Process().memory_info().rss
        except ImportError:  # pragma: no cover - neither Linux nor psutil
            return 0


def peak_memory(run: Callable[[], object], device: str = "cpu", interval: float = 0.001) -> dict:
    """Peak memory of one run beyond what was in use before it.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only, exact). CPU: the process's resident set, sampled
    every ``interval`` seconds by a thread, minus the resident set before the run. That CPU figure is coarse:
    it includes allocator and heap growth, misses peaks shorter than the interval, and reads near 0 when the
    run reuses memory freed by earlier runs (glibc keeps small freed blocks). It is an upper-bound-ish view of
    activations + KV cache, not an exact tensor count; the weights are reported separately.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        torch.cuda.synchronize(device)
        return {"peak_bytes": int(torch.cuda.max_memory_allocated(device) - base),
                "method": "torch.cuda.max_memory_allocated minus memory allocated before the run"}
    base = _rss_bytes()
    peak = {"v": base}
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak["v"] = max(peak["v"], _rss_bytes())
            done.wait(interval)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        run()
    finally:
        done.set()
        t.join()
    peak["v"] = max(peak["v"], _rss_bytes())
    return {"peak_bytes": int(peak["v"] - base), "rss_before_bytes": int(base),
            "method": f"process RSS sampled every {interval * 1000:g} ms, minus RSS before the run (coarse)"}


def weight_bytes(model: nn.Module) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters())
               + sum(b.numel() * b.element_size() for b in model.buffers()))


# -- latency -----------------------------------------------------------------------------------------------------
def measure_latency(model: nn.Module, inputs: dict, target: HardwareTarget, clock: Clock = time.perf_counter) -> dict:
    """End-to-end ``generate()`` latency under the target's protocol, with threads pinned (then restored)."""
    run = _runner(model, inputs, target)
    with pinned_threads(target.n_threads):
        samples = run_protocol(timed_step(run, target.device, clock), target.protocol, clock)
    stats = summarize(samples)
    tokens = target.batch_size * target.output_length
    return {**{k: stats[k] for k in ("n", *target.protocol.statistics)}, "mean": stats["mean"],
            "samples": samples, "throughput_tokens_per_s": tokens / stats["mean"],
            "throughput_sequences_per_s": target.batch_size / stats["mean"], "threads": target.n_threads}


# -- the report --------------------------------------------------------------------------------------------------
def cost_report(bank, plan: str | AssemblyPlan, target: str | dict | HardwareTarget, *, model: nn.Module | None = None,
                latency: bool = True, flops: bool = True, memory: bool = True,
                input_lengths: Sequence[int] | None = None, seed: int = 0) -> dict:
    """Everything a plan costs on ``target``: params, FLOPs (per block), peak memory and measured latency.

    ``model`` may be the already assembled plan (it is moved to the target's device and dtype in place).
    ``input_lengths`` are the dev set's input lengths in tokens, needed when the target says
    ``input_length = "dev"``.
    """
    from ..assembly import assemble

    target = HardwareTarget.resolve(target)
    if input_lengths is not None:
        target = target.with_input_lengths(input_lengths)
    target.fixed_input_length  # noqa: B018  (refuses "dev" without lengths, before any work)
    on_device = latency or memory
    if on_device:
        # Only measurements need the target's device: parameters and FLOPs depend on shapes alone, so a machine
        # without it (a CPU worker of a study whose target is a GPU) can still count them.
        target.check_available()
    plan = bank.plan(plan)
    if model is None:
        model = assemble(bank, plan)
    report: dict = {"plan": str(plan), "bank_checksum": bank.checksum, "target": target.to_dict(),
                    "params": bank.plan_params(plan)}
    if flops:
        # FLOPs depend on shapes only: count in float32 on CPU, whatever the target's device and dtype.
        model.to(device="cpu", dtype=torch.float32)
        with pinned_threads(target.n_threads):
            report["flops"] = count_flops(bank, plan, model, synthetic_inputs(model, target, seed), target)
    if not on_device:
        itemsize = target.itemsize
        report["memory"] = {"weights_bytes": int(sum(p.numel() for p in model.parameters())
                                                 + sum(b.numel() for b in model.buffers())) * itemsize}
        report["fingerprint"] = fingerprint("cpu")
        return report
    model, inputs = prepare(model, target, seed)
    report["memory"] = {"weights_bytes": weight_bytes(model)}
    if memory:
        with pinned_threads(target.n_threads):
            run = _runner(model, inputs, target)
            run()  # a first run pays one-time allocations that a deployment pays once too
            report["memory"].update(peak_memory(run, target.device))
    if latency:
        report["latency"] = measure_latency(model, inputs, target)
    with pinned_threads(target.n_threads):
        report["fingerprint"] = fingerprint(target.device)
    return report


def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def format_cost_report(report: dict, blocks: bool = True) -> str:
    """The report as aligned text lines for a terminal."""
    t = report["target"]
    lines = [f"plan        {report['plan']}",
             f"target      {t['name']}: {t['device']}, threads {t['threads']}, {t['dtype']}, batch {t['batch_size']}, "
             f"{t['input_length']} in / {t['output_length']} out, {t['generation']}",
             f"params      {report['params']:,}"]
    f = report.get("flops")
    if f:
        lines += [f"FLOPs       total {_si(f['total'])} (attention {_si(f['attention'])}), encoder pass "
                  f"{_si(f['encoder'])}, per generated token {_si(f['per_token'])}"]
        if blocks:
            for b in f["blocks"]:
                lines.append(f"  {b['stack']:<8} {b['block']:<6} {_si(b['flops'])}")
            lines.append(f"  {'other':<15} {_si(f['other'])}  (embeddings, LM head)")
    m = report.get("memory")
    if m:
        line = f"memory      weights {_si(m['weights_bytes'], 'B')}"
        if "peak_bytes" in m:
            line += f", peak during a run +{_si(m['peak_bytes'], 'B')} ({m['method']})"
        lines.append(line)
    lat = report.get("latency")
    if lat:
        stats = [f"{k} {lat[k] * 1000:.2f} ms" if k != "cv" else f"cv {lat[k]:.1%}"
                 for k in t["protocol"]["statistics"] if k in lat]
        lines.append(f"latency     {', '.join(stats)}  (n={lat['n']}, {lat['threads']} thread(s))")
        lines.append(f"throughput  {lat['throughput_tokens_per_s']:.1f} tokens/s, "
                     f"{lat['throughput_sequences_per_s']:.2f} sequences/s")
    fp = report.get("fingerprint")
    if fp:
        gpu = f", GPU {fp['gpu_name']} (driver {fp['gpu_driver']})" if fp.get("gpu_name") else ""
        lines.append(f"machine     {fp['cpu_model']} × {fp['cpu_count']}, torch {fp['torch']}{gpu}")
    return "\n".join(lines)
