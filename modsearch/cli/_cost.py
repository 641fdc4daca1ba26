"""CLI wiring for cost: the ``profile`` verb, and the ``--target``/``--profile`` part of ``eval``.

``eval`` itself lives in ``_cli_eval.py``; it calls :func:`add_cost_options` on its parser and
:func:`eval_cost` with the parsed arguments.
"""

from __future__ import annotations

import json
import os

from .._errors import UserError


def add_cost_options(parser) -> None:
    """The options ``eval`` takes for cost on a hardware target."""
    parser.add_argument("--target", metavar="T",
                        help="hardware target: a name in studies/targets/ or a TOML file; measures latency, "
                             "FLOPs, memory")
    parser.add_argument("--profile", metavar="P", help="latency profile JSON: also print the predicted latency")
    parser.add_argument("--allow-foreign-profile", action="store_true",
                        help="use a profile measured on another machine (its fingerprint differs)")
    parser.add_argument("--no-latency", action="store_true", help="with --target: skip the latency measurement")


def eval_cost(bank, plan, a, model=None, input_lengths=None) -> dict | None:
    """Compute (and print unless ``a.json``) the cost part of ``eval``; ``None`` when no --target/--profile."""
    from ..cost._measure import cost_report, format_cost_report
    from ..cost._profile import LatencyProfile, predict

    if not getattr(a, "target", None) and not getattr(a, "profile", None):
        return None
    out: dict = {}
    if a.target:
        out = cost_report(bank, plan, a.target, model=model, latency=not a.no_latency, input_lengths=input_lengths)
    if a.profile:
        prof = LatencyProfile.load(a.profile)
        prof.check_bank(bank)
        out["predicted_latency"] = predict(prof, bank.plan(plan), allow_foreign=a.allow_foreign_profile)
        out["profile"] = {"path": a.profile, "target": prof.target_name}
    if not getattr(a, "json", False):
        if a.target:
            print(format_cost_report(out))
        if a.profile:
            print(f"predicted   {out['predicted_latency'] * 1000:.2f} ms (profile {a.profile}, target "
                  f"{out['profile']['target']})")
    return out


def cmd_profile(a) -> int:
    from ..bank._bank import LayerBank
    from ..cost._profile import LatencyProfile, build_profile, check_profile

    bank = LayerBank.load(a.bank)
    if a.check:
        if not a.profile:
            raise UserError("profile --check needs --profile P (the profile to check)")
        prof = LatencyProfile.load(a.profile)
        res = check_profile(bank, prof, n_plans=a.plans, seed=a.seed, progress=not a.quiet,
                            allow_foreign=a.allow_foreign_profile)
        if a.json:
            print(json.dumps(res, indent=2))
            return 0
        print(f"{'plan':<34} {'predicted':>10} {'measured':>10} {'error':>7} {'cv':>6}")
        for r in res["plans"]:
            print(f"{r['plan']:<34} {r['predicted'] * 1000:>8.2f}ms {r['measured'] * 1000:>8.2f}ms "
                  f"{r['error']:>+7.1%} {r['cv']:>6.1%}")
        print(f"{len(res['plans'])} plans on {res['target']}: MAPE={res['mape']:.1%} max={res['max_error']:.1%} "
              f"spearman={res['spearman']:.3f}")
        return 0
    if not a.target or not a.out:
        raise UserError("profile needs --target T and --out FILE (or --check --profile P)")
    if os.path.isdir(a.out):
        raise UserError(f"--out {a.out} is a directory; give a file path such as profiles/T.json")
    if a.calibration_plans is not None and a.calibration_plans < 0:
        raise UserError("--calibration-plans must be 0 or more")
    extra = {} if a.calibration_plans is None else {"extra_plans": a.calibration_plans}
    prof = build_profile(bank, a.target, progress=not a.quiet, **extra)
    prof.save(a.out)
    fit = prof.fit
    print(f"profile written to {a.out}: overhead {prof.overhead * 1000:.2f} ms, per block "
          + ", ".join(f"{k} {v * 1000:.3f} ms" for k, v in fit["per_block"].items())
          + f"; teacher {prof.plans[0]['p50'] * 1000:.2f} ms measured on {prof.fingerprint['cpu_model']}; "
          f"fit to {len(prof.plans)} plans: leave-one-out MAPE {fit['loo_mape']:.1%} (max {fit['loo_max_error']:.1%})")
    return 0


def add_profile_parser(sub, fmt, examples) -> None:
    """Register ``modsearch profile`` on the CLI's subparsers."""
    s = sub.add_parser(
        "profile", help="measure a bank's per-block latency table on a target, or check its predictions",
        formatter_class=fmt,
        description="Measure, once, what every block of a bank costs on a hardware target, plus the fixed "
                    "overhead: calibration plans (together containing every block, and spread over every "
                    "depth) run end to end at the target's shape, interleaved round by round, and the block "
                    "costs and overhead are fitted to their p50s by least squares. The profile predicts a "
                    "plan's latency as overhead + sum of its blocks. With --check, measure random plans that "
                    "were not calibration plans and print the prediction error (MAPE, max error, Spearman rank "
                    "correlation).",
        epilog=examples("modsearch profile banks/bible-en-fr --target cpu-1t-b1 --out profiles/cpu-1t-b1.json\n"
                        "modsearch profile --check banks/bible-en-fr --profile profiles/cpu-1t-b1.json --plans 30"))
    s.add_argument("bank", help="a bank directory")
    s.add_argument("--target", metavar="T", help="hardware target: a name in studies/targets/ or a TOML file")
    s.add_argument("--out", metavar="FILE", help="profile JSON to write (atomically)")
    s.add_argument("--calibration-plans", type=int, metavar="N",
                   help="plans measured beyond those that together contain every block (default 24)")
    s.add_argument("--check", action="store_true", help="check an existing --profile against measured plans")
    s.add_argument("--profile", metavar="P", help="with --check: the profile to check")
    s.add_argument("--plans", type=int, default=30, metavar="N", help="with --check: random plans (default 30)")
    s.add_argument("--seed", type=int, default=0, help="with --check: seed of the random plans")
    s.add_argument("--allow-foreign-profile", action="store_true",
                   help="with --check: accept a profile measured on another machine")
    s.add_argument("--json", action="store_true", help="with --check: print the results as JSON")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_profile)
