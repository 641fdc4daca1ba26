"""The results pages and the README's headline table, rendered from the JSON records in ``benchmarks/results/``.

Every figure on the site's results page and in the README's results table comes from a committed record through
this script, so no figure is typed twice. The docs build calls :func:`render_page`; the README's table is
rewritten by ``python docs/tools/readme.py`` and ``tests/test_docs.py`` fails when it is out of date.

Each section names its record, the date in the record's name, and the command that produced it.
"""

from __future__ import annotations

import glob
import json
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, "benchmarks", "results")


def _load(name: str) -> dict:
    with open(os.path.join(RESULTS, name), encoding="utf-8") as f:
        return json.load(f)


def _date(name: str) -> str:
    m = re.search(r"(\d{4}-\d{2}-\d{2})", name)
    return m.group(1) if m else "undated"


def _latest(pattern: str) -> str | None:
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(RESULTS, pattern)))
    return names[-1] if names else None


def _table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _x(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}\u00d7"


def _pct(v: float, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f} %"


def _interval(d: dict) -> str:
    return f"{_x(d['speedup'])} [{d['low']:.2f}, {d['high']:.2f}]"


# -- the default bank ------------------------------------------------------------------------------------------
BANK_QUALITY = "bank_quality-2026-12-02-retrained.json"
MODULE_TRAINING = "module_training-2026-12-02-retrained.json"
LATENCY_TRUTH = ("latency_truth-2026-12-03-quiet.json", "latency_truth-2026-12-03-busy.json")
HEAL = "heal-2026-12-03.json"
REPLAY = "replay-2026-12-03-retrained.json"
OVERHEAD = "search_overhead-2026-12-01-wal.json"
PREDICTOR = "latency_predictor-2026-12-02-retrained.json"
# -- Gemma-3-270M ----------------------------------------------------------------------------------------------
LLM_PRUNING = {"gemma": "llm-pruning-gemma-2026-12-06-study.json",
               "smollm2": "llm-pruning-smollm2-2026-12-07-healed.json"}
#: The SmolLM2 comparison before the healed run: two targets and the study's frontier (its study: run a).
LLM_PRUNING_SMOLLM2_TARGETS = "llm-pruning-smollm2-2026-12-07.json"
HEALED = {"gemma": "healed-pruning-gemma-2026-12-06-modules-all.json"}
TRAIN_STEP = "llm_train_step-2026-12-02.json"
# -- SmolLM2-135M ----------------------------------------------------------------------------------------------
DEEP_SEARCH = "deep-search-smollm2-2026-12-07i-screen130.json"
#: The same 130 trials on the previous bank (another VM's rebuild), evolve alone.
DEEP_SEARCH_PREVIOUS_BANK = "deep-search-smollm2-2026-12-07h-screen130.json"
#: 110 trials: the default sampler (g), and before it learnt the screened plans' estimates, with every baseline
#: strategy (f; random search after the baselines and the baselines alone do not use the sampler).
DEEP_SEARCH_110 = "deep-search-smollm2-2026-12-07g-screen110.json"
DEEP_SEARCH_BEFORE = "deep-search-smollm2-2026-12-07f-screen110.json"
VIEWS = "assembly-views-gemma-2026-12-03.json"

#: The command that wrote each record (as run; the dates are in the names).
COMMANDS = {
    BANK_QUALITY: "python benchmarks/bank_quality.py banks/bible-en-fr --data data/bible-en-fr/test.jsonl "
                  f"--markdown --json benchmarks/results/{BANK_QUALITY}",
    MODULE_TRAINING: "python benchmarks/module_training.py --bank banks/bible-en-fr --dev data/bible-en-fr/test.jsonl "
                     f"--limit 300 --json benchmarks/results/{MODULE_TRAINING}",
    LATENCY_TRUTH[0]: "python benchmarks/latency_truth.py studies/bible-en-fr.toml --rounds 40 --note \"...\" "
                      f"--json benchmarks/results/{LATENCY_TRUTH[0]}",
    HEAL: "python benchmarks/heal.py studies/bible-en-fr.toml --data banks/bible-en-fr.work/data/train.jsonl "
          f"--test data/bible-en-fr/test.jsonl --minutes 10 --json benchmarks/results/{HEAL}",
    REPLAY: "python benchmarks/tabular_search.py replay benchmarks/results/table-bible-en-fr-retrained.csv "
            "--seeds 10 --jobs 2 --strategies default,nsga3,random,random+seeds "
            f"--json benchmarks/results/{REPLAY}",
    OVERHEAD: "python benchmarks/search_overhead.py banks/bible-en-fr --data data/bible-en-fr/dev.jsonl "
              "--limit 100 --plans 24",
    PREDICTOR: "python benchmarks/latency_predictor.py banks/bible-en-fr --target cpu-1t-b1 --plans 30 "
               f"--repeats 5 --out-profile profiles/cpu-1t-b1.json --json benchmarks/results/{PREDICTOR}",
    DEEP_SEARCH: "python benchmarks/deep_search.py studies/smollm2-135m.toml --windows 4 --seeds 5 "
                 "--reference-factor 2 --budget 130 --strategies evolve,seeds "
                 "--profile profiles/smollm2-135m-cpu-1t-b1-lm.json "
                 "--cache benchmarks/results/deep-search-smollm2-135m.cache.json --verify-rounds 20 "
                 f"--json benchmarks/results/{DEEP_SEARCH}",
    TRAIN_STEP: f"python benchmarks/llm_train_step.py --tokens 1024 --threads 2 --json benchmarks/results/{TRAIN_STEP}",
    VIEWS: "python benchmarks/assembly_views.py banks/gemma3-270m --data data/web-en/dev.jsonl "
           "--plan 0,1,2,3,4,5,6-7,8-9,10,11,12-13,14-15,16-17 --limit 1 --rounds 3",
}


def command(name: str) -> str:
    """The command that wrote record ``name`` (LLM comparisons: derived from the model's study)."""
    if name in COMMANDS:
        return COMMANDS[name]
    recorded = _load(name).get("command")
    if recorded:  # records from 2026-12-07 on say how they were made
        return recorded
    model = re.match(r"(?:llm|healed)-pruning-([a-z0-9]+)", name).group(1)
    study = {"gemma": "studies/gemma3-270m.toml", "smollm2": "studies/smollm2-135m.toml"}[model]
    if name.startswith("llm-pruning"):
        return f"python benchmarks/llm_pruning.py {study} --limit 8 --json benchmarks/results/{name}"
    return f"python benchmarks/healed_pruning.py {study} EXPORT... --limit 8 --json benchmarks/results/{name}"


def bank_quality(name: str = BANK_QUALITY) -> str:
    d = _load(name)
    teacher = d["rows"][0]["chrf"]
    rows = [[f"`{r['plan']}`", r["label"], "+".join(str(v) for v in r["depths"].values()), f"{r['params_ratio']:.3f}",
             f"{r['chrf']:.2f}", _pct(r["chrf"] / teacher), f"{r['bleu']:.2f}"] for r in d["rows"]]
    return _table(["plan", "what", "depth", "params", "chrF", "share of teacher", "BLEU"], rows)


def module_training(name: str = MODULE_TRAINING) -> str:
    d = _load(name)
    groups: dict = {}
    for r in d["rows"]:
        groups.setdefault(r["group"], {})[r["kind"]] = r
    rows = []
    for g, kinds in groups.items():
        first = next(iter(kinds.values()))
        cells = [g, f"`{first['plan']}`", first["depths"], f"{first['params_ratio']:.3f}"]
        for k in ("teacher", "trained", "untrained", "dropped"):
            r = kinds.get(k)
            cells.append(f"{r['chrf']:.2f} / {r['loss']:.3f}" if r else "")
        rows.append(cells)
    return _table(["group", "plan", "depth", "params", "teacher chrF / loss", "trained", "untrained copies",
                   "dropped"], rows)


def latency_truth(names=LATENCY_TRUTH) -> str:
    rows = []
    for n in names:
        d = _load(n)
        s = d["summary"]
        rows.append([d["note"], s["plans"], f"**{_pct(s['mean_error'])} / {_pct(s['max_error'])}**",
                     f"{_pct(s['trial_mean_error'])} / {_pct(s['trial_max_error'])}", _pct(s["noise_floor_mean"]),
                     f"{d['verification']['rounds']} rounds, {d['verification']['seconds']:.0f} s"])
    return _table(["run", "frontier plans", "verified speed-ups: mean / max error", "trials' own: mean / max error",
                   "the check's own noise", "verification"], rows)


def latency_truth_plans(name: str = LATENCY_TRUTH[0]) -> str:
    d = _load(name)
    rows = [[f"`{r['plan']}`", _x(r["trial_speedup"]),
             f"{_x(r['reported'])} [{r['verified_interval'][0]:.2f}, {r['verified_interval'][1]:.2f}]",
             _x(r["true"]), _pct(r["error"])] for r in d["rows"]]
    return _table(["plan", "trial's speed-up", "verified [95 %]", "independent check", "error of verified"], rows)


def heal(name: str = HEAL) -> str:
    d = _load(name)
    t = d["teacher"]["chrf"]
    rows = [[f"`{r['plan']}`", _x(r["speedup"]), f"{r['before']['chrf']:.2f} ({_pct(r['before']['chrf'] / t)})",
             f"**{r['bank']['test']['chrf']:.2f}** ({_pct(r['bank']['test']['chrf'] / t)}; {r['bank']['steps']} steps)",
             f"{r['copy']['test']['chrf']:.2f} ({_pct(r['copy']['test']['chrf'] / t)})"] for r in d["rows"]]
    return (f"Teacher {t:.2f} test chrF ({d['examples']} verses); {d['minutes']} minutes of healing per plan.\n\n"
            + _table(["plan", "study speed-up", "test chrF as assembled", "healed", "from copies, same budget"], rows))


_STRATEGY = {"default": "**NSGA-II, population 8 (the default)**", "nsga3": "NSGA-III, population 16",
             "random": "random search", "random+seeds": "random search after the baselines", "tpe": "TPE",
             "gp": "GP", "nsga2-p16": "NSGA-II, population 16", "nsga2-p32": "NSGA-II, population 32"}


def replay(name: str = REPLAY) -> str:
    d = _load(name)
    budgets = d["budgets"]
    head = ["strategy"] + [f"hv @ {b:,} plans" for b in budgets] + ["trials to reach them"]
    rows = []
    for k, med in d["medians"].items():
        trials = d.get("trials_to_budget", {}).get(k) or []
        rows.append([_STRATEGY.get(k, k)] + [f"{v:.4f}" for v in med] + [" / ".join(f"{t:,.0f}" for t in trials)])
    rows.append([f"the baselines alone"] + [f"{d['baselines']:.4f}"] * len(budgets) + [""])
    return (f"Medians over {d['seeds']} seeds; hypervolume relative to the table's exact front.\n\n"
            + _table(head, rows))


def deep_search(name: str) -> str:
    """benchmarks/deep_search.py: each strategy at the study's budget against a reference front."""
    import statistics

    d = _load(name)
    labels = {"evolve": "**evolve, hypervolume acquisition over edits and the model's front (the default)**",
              "evolve-local": "evolve, hypervolume acquisition over edits only",
              "evolve-edits": "evolve, random edits (the default before 2026-12-07e)",
              "evolve-plain": "evolve without the constraint model", "nsga2": "NSGA-II, population 8",
              "seeds": "the baselines alone"}
    def cell(vals, fmt):
        vals = [v for v in vals if v == v]
        return (f"{fmt.format(statistics.median(vals))} [{fmt.format(min(vals))}, {fmt.format(max(vals))}]"
                if vals else "-")

    verified = d.get("verified")
    rows = []
    for label, runs in d["runs"].items():
        cells = [cell([r[k] for r in runs], fmt)
                 for k, fmt in (("hv", "{:.4f}"), ("infeasible", "{:.0%}"), ("own_front", "{:.0%}"))]
        if verified:
            cells.insert(1, cell(verified["runs"][label], "{:.3f}"))
        rows.append([labels.get(label, _STRATEGY.get(label, label))] + cells)
    ref = d["reference"]
    head = ["strategy", "hypervolume / reference (profile latency)"]
    head += ["the same, verified speed-ups"] if verified else []
    head += ["infeasible", "own share of the front"]
    timed = [v for v in (verified or {}).get("plans", {}).values() if v]
    extra = (f" The verified column: the reference front's plans and every run's front ({len(timed) + 1} plans "
             f"with the teacher) timed against the teacher in {verified['rounds']} paired rounds on the study's "
             f"target (95 % intervals ±{100 * min(v['half_width'] for v in timed):.0f} to "
             f"±{100 * max(v['half_width'] for v in timed):.0f} %: too wide to rank close points), the "
             f"reference being the front of those verified points.") if verified else ""
    return (f"{d['budget']} distinct plans per run (the study's budget), {d['seeds']} seeds, medians [min, max]. "
            f"Every plan scored at the screen's fidelity (perplexity on {d['windows']} dev windows); latency from "
            f"the bank's latency profile. The reference front ({len(ref['front'])} plans) is the front of every "
            f"feasible plan ever scored at this fidelity (the cache: these runs, long runs of every strategy at "
            f"{ref['factor']}\u00d7 the budget ({ref['plans']:,} distinct plans), and earlier trials of other "
            f"settings). \"infeasible\" is the share of "
            f"the sampler's own proposals that break the study's constraint; \"own share\" the share of the "
            f"run's final front that are the sampler's plans, not baselines.{extra}\n\n"
            + _table(head, rows))


def overhead(name: str = OVERHEAD) -> str:
    d = _load(name)
    tph = d["trials_per_hour"]
    rows = [["naive loop", f"{d['naive_s']:.1f} s", f"{tph['naive']:,.0f}"],
            ["`modsearch search`", f"{d['search_s']:.1f} s", f"{tph['search']:,.0f}"],
            ["the same study, every plan cached", f"{d['cached_s']:.1f} s", f"{tph['cached']:,.0f}"]]
    return (f"{d['plans']} plans, {d['examples']} dev verses. Overhead (trial wall time over the models' own time): "
            f"**{d['overhead']:.3f}**.\n\n" + _table(["way", "wall time", "trials per hour"], rows))


def predictor(name: str = PREDICTOR) -> str:
    d = _load(name)
    c, f = d["check"], d["fit"]
    rows = [["fit residual MAPE / leave-one-out", f"{_pct(f['residual_mape'])} / {_pct(f['loo_mape'])}"],
            ["check on 30 random plans: MAPE / max error", f"{_pct(c['mape'])} / {_pct(c['max_error'])}"],
            ["Spearman rank correlation", f"{c['spearman']:.2f}"],
            ["the measurement's own noise floor (MAPE)", _pct(d["noise_floor"])],
            ["CV of the teacher over 5 repeated measurements", _pct(d["cv"])]]
    return _table(["figure", "value"], rows)


# -- LLMs ------------------------------------------------------------------------------------------------------
def llm_pruning(name: str) -> str:
    """The comparison table of a ``benchmarks/llm_pruning.py`` record. Records from 2026-12-07 on carry
    ReplaceMe and every column's speed-up per target; earlier ones the study plan's (or the greedy plan's)."""
    d = _load(name)
    t = d["teacher_test_ppl"]
    target = d["timing"]["target"]
    kinds = [k for k in ("block_influence", "sleb", "replaceme", "streamline")
             if any(f"{k}_test_ppl" in r for r in d["rows"])]
    titles = {"block_influence": "Block Influence", "sleb": "SLEB", "replaceme": "ReplaceMe",
              "streamline": "LLM-Streamline"}

    def cell(v, bold=False):
        if v is None:
            return ""
        text = f"{v:,.1f} ({v / t:.2f}\u00d7)" if v / t < 1000 else f"{v:,.0f}"
        return f"**{text}**" if bold else text

    def speed(r, k):
        per_target = r.get(f"{k}_speedup")
        if per_target:
            return per_target.get(target)
        return (r.get("speedup") or {}).get(k)

    rows = []
    for r in d["rows"]:
        base = [r.get(f"{k}_test_ppl") for k in kinds]
        best_base = min(v for v in base if v is not None)
        who = "modsearch" if r.get("modsearch_test_ppl") else "greedy"
        best = r.get(f"{who}_test_ppl")
        sp = speed(r, who)
        rows.append([r["removed"], *(cell(v) for v in base), cell(r.get("greedy_test_ppl")), cell(best, True),
                     _x(best_base / best) if best else "", _interval(sp) if sp else ""])
    text = (f"Test perplexity on {d['chapters']} test chapters, the teacher {t:.2f}; ratio to it in brackets. "
            f"Speed-up: the study's plan, paired against the teacher on `{target}` "
            f"({d['timing']['rounds']} rounds).\n\n"
            + _table(["layers removed", *(titles[k] for k in kinds), "greedy (bank)", "**study's best**",
                      "beats the best baseline by", "speed-up [95 %]"], rows))
    h = d.get("healing")
    if not h:
        return text
    every = kinds + ["greedy", "modsearch"]
    titles |= {"greedy": "greedy (bank)", "modsearch": "study's best"}
    budget = " and ".join(x for x in (f"{h['steps']} steps" if h["steps"] else "",
                                      f"{h['minutes']:g} min" if h["minutes"] else "") if x)
    for rule in h["rules"]:
        rows = [[r["removed"], *(cell((r.get(f"{k}_healed") or {}).get(rule, {}).get("test_ppl")) for k in every)]
                for r in d["rows"]]
        what = "the whole model but the embeddings and the head" if rule == "all" else "the plan's modules only"
        text += (f"\n\nHealed at equal budget ({budget} of {h['batch_tokens']} tokens on `{h['data']}`, pure "
                 f"distillation; trainable: {what}; best step on dev):\n\n"
                 + _table(["layers removed", *(titles[k] for k in every)], rows))
    return text


def healed(name: str) -> str:
    d = _load(name)
    t = d["teacher_test_ppl"]
    rows = []
    for r in d["rows"]:
        who = re.sub(r"\d+$", "", os.path.basename(r["export"]).split("-", 1)[-1])
        rows.append([r["removed"], who, f"`{r['plan']}`", f"{r['test_before']:.2f} ({r['test_before'] / t:.2f}\u00d7)",
                     f"**{r['test_after']:.2f} ({r['test_after'] / t:.2f}\u00d7)**",
                     _x(r["plain_ratio"]) if r.get("plain_ratio") else "", r["steps"], r["trainable"],
                     f"{r['heal_seconds'] / 60:.0f} min"])
    return (f"Teacher test perplexity {t:.2f} ({d['chapters']} chapters).\n\n"
            + _table(["removed", "plan from", "plan", "as assembled", "tuned", "plain-transformers check", "steps",
                      "trainable", "time"], rows))


def train_step(name: str = TRAIN_STEP) -> str:
    d = _load(name)
    rows = [[r["config"], f"{r['peak_rss_gb']:.2f} GB", f"{r['s_per_step']:.1f}"] for r in d["rows"]]
    return _table(["configuration", "peak memory", "seconds / step"], rows)


def views(name: str = VIEWS) -> str:
    s = _load(name)["summary"]
    rows = [[mode, f"{s[mode]['assemble_s']:.2f} s", f"{s[mode]['trial_s']:.1f} s", f"{s[mode]['peak_rss_gb']:.2f} GB"]
            for mode in ("deep", "view")]
    return _table(["assembly for scoring", "assembly", "trial", "peak RSS of a trial"], rows)


# -- the page --------------------------------------------------------------------------------------------------
def _section(title: str, name: str, body: str, note: str = "") -> str:
    parts = [f"### {title}", "", f"*{_date(name)}, record `benchmarks/results/{name}`.*"]
    if note:
        parts += ["", note]
    parts += ["", "```bash", command(name), "```", "", body, ""]
    return "\n".join(parts)


def _llm_sections(model: str, title: str) -> list[str]:
    out = []
    name = LLM_PRUNING.get(model) or _latest(f"llm-pruning-{model}*.json")
    if name:
        out.append(_section(f"{title}: against layer pruning", name, llm_pruning(name)))
    name = HEALED.get(model) or _latest(f"healed-pruning-{model}*.json")
    if name:
        out.append(_section(f"{title}: the chosen plans tuned", name, healed(name),
                            "Each export was made by `modsearch heal ... --trainable modules`; its recipe is in "
                            "its record (`benchmarks/results/healed-*.assembly.json`)."))
    return out


def render_page() -> str:
    """The results page (Markdown)."""
    parts = ["# Results", "",
             "*Generated from the JSON records in `benchmarks/results/` when the site is built "
             "(`docs/tools/results.py`): no figure on this page is typed by hand. How each run went, what else ran "
             "on the machine and what was learnt from it is in the history pages: "
             "[the default bank](history-default-bank.md) and [Gemma-3-270M](history-gemma.md).*", "",
             "All runs are on a 2-vCPU virtual machine (CPU only) with nothing else running unless a row says so. "
             "Speed-ups are ratios measured together with the teacher (see "
             "[paired latency](../concepts.md#paired-latency)).", "",
             "## The default bank (M2M100-style 6+6, English to French)", "",
             _section("Plans on the held-out test split", BANK_QUALITY, bank_quality(),
                      "All 981 test verses, greedy decoding. \"drop\" plans keep the first layer of every span of k."),
             _section("Trained modules against untrained copies and layer dropping", MODULE_TRAINING,
                      module_training(), "First 300 test verses; each cell is test chrF / teacher-forced loss."),
             _section("Are the study's speed-ups true?", LATENCY_TRUTH[0],
                      latency_truth() + "\n\nThe quiet run's frontier:\n\n" + latency_truth_plans(),
                      "Exports reloaded by plain transformers and timed by code of the benchmark's own, against the "
                      "speed-ups the default study reported. Goal: mean error \u2264 5 %, max \u2264 10 %."),
             _section("Healing the chosen point", HEAL, heal()),
             _section("The search against random search (tabular replay)", REPLAY, replay(),
                      "Every one of the 21,025 plans scored once at a cheap fidelity; strategies replayed against "
                      "the table. Budgets are 0.5, 1, 2 and 5 % of the space."),
             _section("Search overhead", OVERHEAD, overhead()),
             _section("Latency predictor (profiles)", PREDICTOR, predictor(),
                      "Goal MAPE \u2264 5 %: not met on this machine, whose own drift is larger."),
             "## Gemma-3-270M (18 layers, decoder-only)", "",
             *_llm_sections("gemma", "Gemma-3-270M"),
             _section("Module training at the scale of an LLM", TRAIN_STEP, train_step(),
                      "One step on Gemma-3-270M's shapes (random weights), 4 \u00d7 256 tokens, 2 threads."),
             _section("Scoring a view of the bank instead of a copy", VIEWS, views()),
             ]
    smol = _llm_sections("smollm2", "SmolLM2-135M")
    smol.append(_section("SmolLM2-135M: against layer pruning on two targets (the first study's plans)",
                         LLM_PRUNING_SMOLLM2_TARGETS, llm_pruning(LLM_PRUNING_SMOLLM2_TARGETS),
                         "The same comparison before LLM-Streamline seeds covered 12-18, timed on both targets, "
                         "with the study's frontier plans; no healing."))
    smol.append(_section("SmolLM2-135M: which search finds the frontier of a deep bank", DEEP_SEARCH,
                         deep_search(DEEP_SEARCH),
                         "The bank holds 66,512,188,363 plans. The default sampler at the study's budget (130 "
                         "trials, screened or fully scored, 39 of them the baselines) and the baselines alone, on "
                         "the bank as rebuilt on 2026-12-07 evening, against the reference front of every plan "
                         "scored at this fidelity on it (12 plans of 566: a long evolve run at twice the budget and "
                         "the runs below; random search's run was cut for time), each run screened as the study "
                         "screens; "
                         "the sampler learns the screened plans' estimated perplexity. Infeasible counts the "
                         "proposals the screen stopped by the constraint estimate (cheap: about 1.5 s each in a "
                         "study, against 23 s for a fully scored plan)."))
    smol.append(_section("SmolLM2-135M: the same on the previous bank", DEEP_SEARCH_PREVIOUS_BANK,
                         deep_search(DEEP_SEARCH_PREVIOUS_BANK),
                         "The bank as another VM rebuilt it (other rounding, checksum 22cd00f8...), evolve alone, "
                         "the reference the front of the 2,565 plans ever scored on that bank."))
    smol.append(_section("SmolLM2-135M: the same at 110 trials, against random edits", DEEP_SEARCH_110,
                         deep_search(DEEP_SEARCH_110), "The same screen and reference, 110 trials."))
    smol.append(_section("SmolLM2-135M: the same, before the sampler learnt the screen's estimates",
                         DEEP_SEARCH_BEFORE, deep_search(DEEP_SEARCH_BEFORE),
                         "The same budget, screen and reference, with the baseline strategies (they do not use the "
                         "sampler, so their figures stand). Without the screened plans' estimates the sampler's "
                         "proposals break the constraint far more often, for a similar hypervolume."))
    unscreened = "deep-search-smollm2-2026-12-07e.json"
    smol.append(_section("SmolLM2-135M: the deep search unscreened, at 60 plans", unscreened, deep_search(unscreened),
                         "Every plan's cheap figure reaches the sampler (no screen), 60 plans, a reference from "
                         "long runs at 4x the budget (its log has their cost)."))
    parts += ["## SmolLM2-135M (30 layers, decoder-only)", ""]
    parts += smol or ["No record yet: the figures appear here once `benchmarks/results/llm-pruning-smollm2-*.json` "
                      "is committed (see the [tutorial](../tutorials/smollm2-135m.md)).", ""]
    return "\n".join(parts)


# -- the README's headline table -------------------------------------------------------------------------------
def headline_rows() -> list[tuple[str, str, str]]:
    """(what, result, record) of the few figures a newcomer needs."""
    bq = _load(BANK_QUALITY)
    by_plan = {r["plan"]: r for r in bq["rows"]}
    t = bq["rows"][0]["chrf"]
    half = by_plan["0-1,2-3,4-5/0-1,2-3,4-5"]
    drop = by_plan["0,x1,2,x3,4,x5/0,x1,2,x3,4,x5"]
    lt = _load(LATENCY_TRUTH[0])["summary"]
    lp = _load(LLM_PRUNING["gemma"])
    q = next(r for r in lp["rows"] if r["removed"] == 5)
    tt = lp["teacher_test_ppl"]
    best, sleb = q["modsearch_test_ppl"], q["sleb_test_ppl"]
    hp = _load(HEALED["gemma"])
    tuned = next(r for r in hp["rows"] if r["removed"] == 5 and r["plan"] == q["modsearch"])
    rp = _load(REPLAY)
    return [
        ("default bank at half depth (uniform 2-layer modules, 3+3)",
         f"test chrF {half['chrf']:.2f}, {_pct(half['chrf'] / t)} of the teacher's {t:.2f}; the same layers "
         f"dropped: {drop['chrf']:.2f}", BANK_QUALITY),
        ("default study: verified speed-ups against an independent timing",
         f"mean error {_pct(lt['mean_error'])}, max {_pct(lt['max_error'])} over {lt['plans']} frontier plans",
         LATENCY_TRUTH[0]),
        ("Gemma-3-270M (4-bit Q4_K_M GGUF, dequantised), 5 of 18 layers removed, as assembled, 8 test chapters",
         f"test perplexity {best:.2f}, {best / tt:.2f}\u00d7 the teacher's {tt:.2f} (best baseline, SLEB: "
         f"{sleb / tt:.2f}\u00d7); paired speed-up {_x(q['speedup']['modsearch']['speedup'])}", LLM_PRUNING["gemma"]),
        ("the same plan, its modules tuned (90 steps)",
         f"test perplexity {tuned['test_after']:.2f}, {tuned['test_after'] / tt:.2f}\u00d7 the teacher's",
         HEALED["gemma"]),
        *_smollm2_headline(),
        *_deep_search_headline(),
        ("default sampler against random search, at 1 % of the default bank's plans",
         f"hypervolume {rp['medians']['default'][1]:.4f} against {rp['medians']['random'][1]:.4f} "
         f"(medians of {rp['seeds']} seeds)", REPLAY),
    ]


def _smollm2_headline() -> list[tuple[str, str, str]]:
    """SmolLM2-135M at a third of its layers removed, as assembled, once its comparison record is committed."""
    name = LLM_PRUNING.get("smollm2") or _latest("llm-pruning-smollm2*.json")
    if not name:
        return []
    d = _load(name)
    q = next((r for r in d["rows"] if r["removed"] == 10 and r.get("modsearch_test_ppl")), None)
    if q is None:
        return []
    tt, target = d["teacher_test_ppl"], d["timing"]["target"]
    kinds = [k for k in ("block_influence", "sleb", "replaceme", "streamline") if f"{k}_test_ppl" in q]
    best_base = min(kinds, key=lambda k: q[f"{k}_test_ppl"])
    titles = {"block_influence": "Block Influence", "sleb": "SLEB", "replaceme": "ReplaceMe",
              "streamline": "LLM-Streamline"}
    mine = q["modsearch_test_ppl"]
    rows = [(f"SmolLM2-135M (4-bit Q4_1 GGUF, dequantised), 10 of 30 layers removed, as assembled, "
             f"{d['chapters']} test chapters",
             f"test perplexity {mine:.2f}, {mine / tt:.2f}\u00d7 the teacher's {tt:.2f} (best baseline, "
             f"{titles[best_base]}: {q[f'{best_base}_test_ppl'] / tt:.2f}\u00d7); paired speed-up "
             f"{_interval(q['modsearch_speedup'][target])} on `{target}`", name)]
    healed = {k: (q.get(f"{k}_healed") or {}).get("all", {}).get("test_ppl") for k in [*kinds, "modsearch"]}
    if healed["modsearch"]:
        base = min((k for k in kinds if healed[k]), key=lambda k: healed[k])
        rows.append((f"the same depth, every plan healed at one budget ({d['healing']['minutes']:g} min, the "
                     f"whole model but the embeddings)",
                     f"test perplexity {healed['modsearch']:.2f}, {healed['modsearch'] / tt:.2f}\u00d7 the "
                     f"teacher's (best baseline, {titles[base]}: {healed[base] / tt:.2f}\u00d7)", name))
    return rows


def _deep_search_headline() -> list[tuple[str, str, str]]:
    import statistics

    d, before = _load(DEEP_SEARCH), _load(DEEP_SEARCH_BEFORE)
    med = {k: statistics.median(r["hv"] for r in runs) for k, runs in {**before["runs"], **d["runs"]}.items()}
    at = {k: "" if k in d["runs"] else f" (at {before['budget']})" for k in med}
    inf = statistics.median(r["infeasible"] for r in d["runs"]["evolve"])
    others = ", ".join(f"{name} {med[k]:.3f}{at[k]}" for k, name in (
        ("evolve-edits", "random edits of the front"), ("random+seeds", "random search after the same baselines"),
        ("nsga2", "NSGA-II"), ("tpe", "TPE"), ("seeds", "the baselines alone")) if k in med)
    ver = (f"; with verified speed-ups evolve {statistics.median(d['verified']['runs']['evolve']):.3f}"
           + (f", the baselines alone {statistics.median(d['verified']['runs']['seeds']):.3f}"
              if "seeds" in d["verified"]["runs"] else "")) if d.get("verified") else ""
    screened = ", screened as the study screens" if d.get("screen") else ""
    return [(f"SmolLM2-135M bank's search at the study's budget ({d['budget']} plans of 66.5 billion)",
             f"the default sampler (evolve) reaches {med['evolve']:.3f} of the reference front's hypervolume "
             f"({100 * inf:.0f} % of its proposals infeasible); {others} (medians of {d['seeds']} seeds, "
             f"screen fidelity{screened}, profile latency{ver})", DEEP_SEARCH)]


def headline_markdown() -> str:
    """The README's results table and the commands that wrote its records."""
    rows = [[what, result, _date(name), f"`{name}`"] for what, result, name in headline_rows()]
    commands = []
    for _what, _result, name in headline_rows():
        if command(name) not in commands:
            commands.append(command(name))
    return (_table(["what", "result", "measured", "record (`benchmarks/results/`)"], rows)
            + "\n\nThe commands that wrote these records:\n\n```bash\n" + "\n".join(commands) + "\n```")


if __name__ == "__main__":  # pragma: no cover
    print(render_page())
