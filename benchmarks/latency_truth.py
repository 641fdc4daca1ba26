"""Benchmark: are the speed-ups a study reports true? An independent measurement on the exported models.

Reads a finished study (or runs it first with --run), exports the teacher and every frontier point as
standalone Hugging Face models (``modsearch.export_model``), loads them back with plain transformers
(``AutoModelForSeq2SeqLM`` / ``AutoModelForCausalLM``), and times them with code of its own, not modsearch's:
``model.generate`` at the study target's shape (batch, input length, exactly ``output_length`` new tokens,
greedy, the target's thread count), every model once per round in a freshly shuffled order, for --rounds
rounds after two warm-up rounds. A plan's true speed-up is the median over rounds of teacher time / plan time.

It then compares that with what the study reports for each point: the verified speed-up when the study was
verified (the figure the frontier table, the report and the export show), else the trial's. Printed per plan:
reported, true, error; also the error of the trials' own (search-time) speed-ups, and the noise floor of the
truth itself: the median ratio over the first half of the rounds against the second half.

It also checks the *order* of the printed frontier (the verified one, as ``modsearch search`` prints it): with
each point's true speed-up and its 95 % interval (the distribution-free median interval over the rounds), is any
printed point dominated beyond the noise by another (at least as good on every other objective, and faster with
the two intervals apart)? A frontier a user picks from should have none. The line reads
``frontier order: agrees with the independent timing over 7 points`` or names each dominated point.

    python benchmarks/latency_truth.py --run                       # the default study, run first
    python benchmarks/latency_truth.py studies/bible-en-fr.toml --rounds 40 --json out.json

Goal (issue 18): mean error <= 5 %, max <= 10 %, on a quiet machine and with one core kept busy. Nothing else
should run beside it except the load being studied; --note records what that was. The last line reads like
``speedup error: mean=3.1% max=7.4% over 7 plans``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time


def _time_round(models, order, kw, inputs):
    import torch

    out = {}
    for i in order:
        t0 = time.perf_counter()
        with torch.inference_mode():
            models[i].generate(**inputs[i], **kw[i])
        out[i] = time.perf_counter() - t0
    return out


def order_disagreements(rows: list[dict], names: list[str], signs: list[float],
                        truth: dict[str, tuple[float, float]]) -> list[tuple[str, str]]:
    """The printed frontier's points that the independent timing puts behind another beyond the noise:
    ``(dominated plan, dominating plan)`` pairs. ``rows`` are the printed rows (plan and the objectives
    ``names``; ``signs`` -1 for maximised), ``truth`` maps a plan to its true speed-up's (low, high); the latency
    objective is the one the speed-up replaces."""
    from modsearch.search._verify import dominated_beyond_noise

    objective = next(n for n in names if n in ("latency_ms", "profile_latency_ms"))
    ratios = {p: (1 / hi, 1 / lo if lo > 0 else float("inf")) for p, (lo, hi) in truth.items()}
    by = dominated_beyond_noise(rows, names, signs, objective, ratios)
    return [(p, q) for r in rows for p in [r["plan"]] for q in by.get(p, [])]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("study", nargs="?", default="studies/bible-en-fr.toml")
    p.add_argument("--run", action="store_true", help="run (or continue) the study first, as `modsearch search` does")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--note", default="", help="what else was running (recorded in the JSON)")
    p.add_argument("--json", help="write the figures here")
    a = p.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    from modsearch import LayerBank, export_model
    from modsearch.cost import HardwareTarget, fingerprint
    from modsearch.cost._paired import ratio_interval, speedup_of
    from modsearch.search import StudyConfig, frontier_rows, run_search
    from modsearch.search._storage import open_storage

    cfg = StudyConfig.load(a.study)
    t_run = None
    if a.run:
        t0 = time.perf_counter()
        run_search(cfg, progress=True, log=print)
        t_run = time.perf_counter() - t0
        print(f"study run: {t_run:.0f} s")
    import optuna

    study = optuna.load_study(study_name=cfg.name, storage=open_storage(cfg.storage))
    rows = frontier_rows(study)
    verification = study.user_attrs.get("verification")
    bank = LayerBank.load(cfg.bank)
    target = HardwareTarget.resolve(study.user_attrs["modsearch"]["target"])
    teacher_plan = str(bank.teacher_plan())
    plans = [teacher_plan] + [r["plan"] for r in rows if r["plan"] != teacher_plan]
    auto = AutoModelForSeq2SeqLM if bank.kind == "seq2seq" else AutoModelForCausalLM

    models, inputs, kws = [], [], []
    g = torch.Generator().manual_seed(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        for i, plan in enumerate(plans):
            d = os.path.join(tmp, f"p{i}")
            export_model(bank, plan, d)
            m = auto.from_pretrained(d, dtype=torch.float32).eval()
            cfgm = m.config
            specials = {getattr(cfgm, k, None) for k in ("pad_token_id", "eos_token_id", "bos_token_id",
                                                         "decoder_start_token_id")}
            low = max([s for s in specials if isinstance(s, int)] + [3]) + 1
            ids = torch.randint(low, cfgm.vocab_size, (target.batch_size, int(target.input_length)), generator=g)
            pad = cfgm.pad_token_id if cfgm.pad_token_id is not None else cfgm.eos_token_id
            models.append(m)
            inputs.append({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
            kws.append(dict(max_new_tokens=target.output_length, min_new_tokens=target.output_length,
                            do_sample=False, num_beams=target.num_beams, pad_token_id=pad))
        torch.set_num_threads(target.n_threads)
        rng = random.Random(a.seed)
        order = list(range(len(plans)))
        for _ in range(2):
            rng.shuffle(order)
            _time_round(models, order, kws, inputs)
        times = {i: [] for i in order}
        t0 = time.perf_counter()
        for r in range(a.rounds):
            rng.shuffle(order)
            for i, t in _time_round(models, order, kws, inputs).items():
                times[i].append(t)
            print(f"\rround {r + 1}/{a.rounds}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        seconds = time.perf_counter() - t0

    def truth(i, rounds=slice(None)):
        return statistics.median(t / p for t, p in zip(times[0][rounds], times[i][rounds]))

    half = a.rounds // 2
    by_plan = {r["plan"]: r for r in rows}
    out_rows, errors, trial_errors, noise = [], [], [], []
    print(f"\n{'plan':<36} {'reported':>9} {'basis':>9} {'true':>7} {'error':>7} {'trial':>7} {'t.err':>7} "
          f"{'halves':>7}")
    for i, plan in enumerate(plans[1:], start=1):
        true = truth(i)
        v = (verification or {}).get("plans", {}).get(plan)
        row = by_plan.get(plan, {})
        trial = row.get("trial_speedup", row.get("speedup"))
        reported, basis = (v["speedup"], "verified") if v else (trial, "trial")
        err = abs(reported - true) / true
        terr = abs(trial - true) / true if trial else float("nan")
        h = abs(truth(i, slice(0, half)) - truth(i, slice(half, None))) / true
        errors.append(err)
        trial_errors.append(terr)
        noise.append(h)
        out_rows.append({"plan": plan, "reported": reported, "basis": basis, "true": true, "error": err,
                         "trial_speedup": trial, "trial_error": terr, "halves_disagree": h,
                         "verified_interval": [v["low"], v["high"]] if v else None})
        print(f"{plan:<36} {reported:>8.2f}x {basis:>9} {true:>6.2f}x {err:>7.1%} "
              f"{(trial or float('nan')):>6.2f}x {terr:>7.1%} {h:>7.1%}")
    teacher_ms = statistics.median(times[0]) * 1000
    truth_intervals = {}
    for i, plan in enumerate(plans):
        s = speedup_of(ratio_interval(times[0], times[i]))
        truth_intervals[plan] = (s["low"], s["high"])
    names = study.metric_names
    signs = [-1.0 if d.name == "MAXIMIZE" else 1.0 for d in study.directions]
    disagree = order_disagreements(rows, names, signs, truth_intervals)
    summary = {"mean_error": statistics.mean(errors), "max_error": max(errors),
               "trial_mean_error": statistics.mean(trial_errors), "trial_max_error": max(trial_errors),
               "noise_floor_mean": statistics.mean(noise), "plans": len(errors),
               "order_disagreements": [list(d) for d in disagree]}
    print(f"\nteacher {teacher_ms:.1f} ms (median of {a.rounds} rounds, {seconds:.0f} s of timing); "
          f"truth's own noise (first half of the rounds against the second): mean {summary['noise_floor_mean']:.1%}")
    print(f"search-time (trial) speed-ups: mean error {summary['trial_mean_error']:.1%}, "
          f"max {summary['trial_max_error']:.1%}")
    if disagree:
        print("frontier order: the independent timing DISAGREES, beyond the noise: "
              + "; ".join(f"{p} is dominated by {q}" for p, q in disagree))
    else:
        print(f"frontier order: agrees with the independent timing over {len(rows)} points "
              "(no printed point dominated beyond the noise)")
    if a.json:
        from modsearch._io import write_json

        write_json(a.json, {"study": a.study, "study_run_seconds": t_run, "rounds": a.rounds, "note": a.note,
                            "teacher_ms": teacher_ms, "verification": {k: verification[k] for k in
                                                                        ("rounds", "seconds", "interval_met",
                                                                         "teacher_ms", "created")}
                            if verification else None, "rows": out_rows, "summary": summary,
                            "fingerprint": fingerprint(target.device), "target": target.to_dict()})
    print(f"speedup error: mean={summary['mean_error']:.1%} max={summary['max_error']:.1%} "
          f"over {summary['plans']} plans")
    return 0


if __name__ == "__main__":
    sys.exit(main())
