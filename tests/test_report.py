"""The last step: look at the frontier (report), pick a point and ship it (export), in a notebook too.

One tiny study (a 4+4 M2M100 bank with 2-layer modules, chrF on six sentence pairs) is searched once per
module; every test reads it. The browser tests open the report in headless Chromium and read its DOM; they are
skipped, with the reason, where no Chromium is installed (``.ci/run`` installs Debian's ``chromium``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time

import pytest

import tiny
from modsearch import LayerBank
from modsearch.cli import main
from modsearch.results import StudyResults, TrialRecord, open_results
from modsearch.search import run_search
from modsearch.search import StudyConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = """
bank = "bank"
target = "cpu-1t-b1"
objectives = {objectives}
constraints = ["params_ratio <= 0.95"]
[data]
path = "dev.jsonl"
source_field = "en"
target_field = "fr"
[task]
metric = "chrf"
max_new_tokens = 8
batch_size = 4
[sampler]
name = "nsga2"
population_size = 4
[seeds]
strategies = ["teacher", "uniform", "speed-first", "size-first", "drop-alternate"]
[budget]
n_trials = {n}
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A searched tiny study (quality, FLOPs, params) and a second one on the same bank (quality, params)."""
    root = tmp_path_factory.mktemp("report")
    tiny.translation_bank(root)
    (root / "tiny.toml").write_text(STUDY.format(objectives='["quality", "flops", "params"]', n=10))
    (root / "small.toml").write_text(STUDY.format(objectives='["quality", "params"]', n=6))
    for name in ("tiny", "small"):  # the second shares the evaluation cache: nearly free
        run_search(StudyConfig.load(str(root / f"{name}.toml")), progress=False, log=None)
    return root


# -- the browser ------------------------------------------------------------------------------------------------
def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


# Injected first into <head> of a copy of the page: it records every JavaScript error, then, once plotly has
# drawn, writes what the browser shows into the DOM, which --dump-dom prints.
_PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function(e){ window.__errors.push(String(e.message || e)); });
window.addEventListener('unhandledrejection', function(e){ window.__errors.push('promise: ' + e.reason); });
var __ce = console.error; console.error = function(){ window.__errors.push(Array.from(arguments).join(' '));
  __ce.apply(console, arguments); };
window.addEventListener('load', function(){ setTimeout(function(){
  var plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
  var table = document.querySelector('table.sortable'), sorted = null;
  if (table) {
    var th = table.querySelectorAll('th')[3];  // the quality column
    th.click(); th.click();                    // descending
    sorted = Array.from(table.tBodies[0].rows).map(function(r){ return parseFloat(r.cells[3].dataset.v); });
  }
  var out = {errors: window.__errors, plotly: typeof Plotly !== 'undefined' ? Plotly.version : null,
    plots: plots.map(function(p){ return {id: p.id, svg: p.querySelectorAll('.main-svg').length,
      traces: (p.data || []).length, points: p.querySelectorAll('.scatterlayer .point').length,
      bars: p.querySelectorAll('.barlayer .point').length,
      title: (p.querySelector('.gtitle') || {}).textContent || ''}; }),
    headlines: Array.from(document.querySelectorAll('.headline')).map(function(h){ return h.textContent; }),
    table_rows: table ? table.tBodies[0].rows.length : 0, sorted_quality: sorted,
    external_scripts: Array.from(document.scripts).filter(function(s){ return s.src; }).length};
  var pre = document.createElement('pre'); pre.id = '__probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 500); });
</script>"""


def _render(chromium: str, page: str, tmp_path, budget_ms: int = 20000, probe: str = _PROBE,
            window: str = "1280,800") -> tuple[dict, float]:
    """Open ``page`` in headless Chromium (a ``window`` of width,height pixels); return what the probe read from
    the DOM and the seconds it took."""
    text = open(page, encoding="utf-8").read()
    probed = tmp_path / ("probed-" + os.path.basename(page))
    probed.write_text(text.replace("<head>", "<head>" + probe, 1), encoding="utf-8")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-extensions", f"--user-data-dir={tmp_path / 'chrome'}",
           f"--window-size={window}", "--hide-scrollbars", f"--virtual-time-budget={budget_ms}", "--dump-dom",
           probed.as_uri()]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    seconds = time.perf_counter() - t
    start = proc.stdout.find('<pre id="__probe">')
    assert start >= 0, f"no probe in the DOM (exit {proc.returncode}): {proc.stderr[-2000:]}"
    raw = proc.stdout[start + len('<pre id="__probe">'):proc.stdout.index("</pre>", start)]
    import html

    return json.loads(html.unescape(raw)), seconds


needs_browser = pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium; "
                                                               ".ci/run does this when it runs as root)")


@needs_browser
def test_report_renders_every_plot_in_a_browser_without_errors(study, tmp_path, capsys):
    page = str(tmp_path / "tiny.html")
    assert main(["report", str(study / "tiny.toml"), "--out", page]) == 0
    assert "report written to" in capsys.readouterr().out
    res = open_results(str(study / "tiny.toml"))
    probe, seconds = _render(_chromium(), page, tmp_path)
    assert probe["errors"] == [], probe["errors"]
    assert probe["plotly"] and probe["external_scripts"] == 0  # plotly.js embedded: renders offline
    ids = [p["id"] for p in probe["plots"]]
    # quality against FLOPs and params, the plan diagram, the hypervolume
    assert ids == ["front-0-flops", "front-0-params", "plans-0", "hv-0"], ids
    assert all(p["svg"] > 0 and p["traces"] > 0 for p in probe["plots"])
    fronts = {p["id"]: p for p in probe["plots"]}
    # every completed trial is drawn (nothing is sampled in a small study): frontier, faint points, baselines
    assert fronts["front-0-params"]["points"] >= len(res.trials)
    assert "parameters" in fronts["front-0-params"]["title"]
    front = res.frontier()
    assert fronts["plans-0"]["bars"] >= (len(front) + 1) * 2  # teacher row + each frontier plan, two stacks
    assert probe["table_rows"] == len(front)
    assert probe["sorted_quality"] == sorted(probe["sorted_quality"], reverse=True)
    assert probe["headlines"] and "teacher" in probe["headlines"][0]
    assert seconds < 60


@needs_browser
def test_comparison_page_overlays_studies_of_one_bank(study, tmp_path):
    page = str(tmp_path / "cmp.html")
    assert main(["report", str(study / "tiny.toml"), str(study / "small.toml"), "--out", page]) == 0
    probe, _ = _render(_chromium(), page, tmp_path)
    assert probe["errors"] == []
    ids = [p["id"] for p in probe["plots"]]
    assert "cmp-params" in ids and "hv-cmp" in ids  # params is the cost both studies measured
    assert {"front-0-flops", "front-1-params", "plans-0", "plans-1"} <= set(ids)
    assert sum(h.startswith("tiny") or h.startswith("small") for h in probe["headlines"]) == 2


# Reads the page's layout as the browser drew it: where the choice panel sits against the first viewport, and,
# for every plot, the boxes of its legend, its legend entries, its plot areas and its titles.
_LAYOUT_PROBE = """<script>
window.addEventListener('load', function(){ setTimeout(function(){
  function box(el){ var r = el.getBoundingClientRect();
    return {left: r.left + window.scrollX, top: r.top + window.scrollY, right: r.right + window.scrollX,
            bottom: r.bottom + window.scrollY}; }
  function all(root, sel){ return Array.from(root.querySelectorAll(sel)).map(box); }
  var panel = document.querySelector('section.choice');
  var out = {viewport: {width: window.innerWidth, height: window.innerHeight},
    panel: panel ? box(panel) : null,
    panel_rows: panel ? panel.querySelectorAll('tbody tr').length : 0,
    panel_commands: panel ? Array.from(panel.querySelectorAll('code.cmd'))
      .map(function(c){ return c.textContent; }) : [],
    plots: Array.from(document.querySelectorAll('.js-plotly-plot')).map(function(p){
      var legend = p.querySelector('g.legend');
      return {id: p.id, svg: box(p.querySelector('.main-svg')),
              legend: legend ? box(legend.querySelector('rect.bg') || legend) : null,
              entries: legend ? all(legend, 'g.traces') : [],
              areas: all(p, '.nsewdrag'),
              titles: all(p, '.g-xtitle text, .g-ytitle text, .gtitle, .g-x2title text')}; })};
  var pre = document.createElement('pre'); pre.id = '__probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 500); });
</script>"""


def _overlap(a: dict, b: dict, slack: float = 0.5) -> bool:
    return (min(a["right"], b["right"]) - max(a["left"], b["left"]) > slack
            and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > slack)


def _check_layout(probe: dict) -> None:
    for p in probe["plots"]:
        if p["legend"] is None:
            continue
        lg = p["legend"]
        assert not any(_overlap(lg, area) for area in p["areas"]), (p["id"], "legend over the plot", lg, p["areas"])
        assert not any(_overlap(lg, t) for t in p["titles"]), (p["id"], "legend over a title", lg, p["titles"])
        entries = p["entries"]
        for i, a in enumerate(entries):
            assert not any(_overlap(a, b) for b in entries[i + 1:]), (p["id"], "legend entries overlap", entries)
        # drawn inside its figure, not cut off at an edge
        svg = p["svg"]
        assert lg["left"] >= svg["left"] - 1 and lg["right"] <= svg["right"] + 1, (p["id"], lg, svg)


def _synthetic(n: int = 10_000, seed: int = 0) -> StudyResults:
    """A study of ``n`` trials with the shape a long search leaves: a few baselines, many dominated points."""
    import random

    rng = random.Random(seed)
    teacher = {"quality": 40.0, "latency_ms": 50.0, "flops": 2e9, "params": 9e6, "params_ratio": 1.0,
               "speedup": 1.0}
    trials = []
    for i in range(n):
        lat = rng.uniform(8, 55)
        quality = 40 * (1 - math.exp(-lat / 15)) - abs(rng.gauss(0, 4))
        feasible = quality >= 20
        m = {"quality": quality, "latency_ms": lat, "flops": lat * 4e7, "params": 9e6 * lat / 50,
             "params_ratio": lat / 50, "speedup": 50 / lat, "chrf": quality}
        strategy = "teacher" if i == 0 else ("uniform" if i < 3 else "sampler")
        trials.append(TrialRecord(i, f"0,1,2,3,4,5/0-1,2,x3,4,{i % 6}" if i else "0,1,2,3,4,5/0,1,2,3,4,5", strategy,
                                  feasible, m, [quality, lat], speedup_basis="latency_ms"))
    trials[0].metrics.update(teacher)
    trials[0].values = [40.0, 50.0]
    # distinct plans for the dedup: the plan string carries the trial number
    for t in trials[1:]:
        t.plan = f"0,1,2,3,4,5/0-1,2,3,4,5#{t.number}"
    return StudyResults(name="big", storage="sqlite:///big.db", source="studies/big.toml",
                        objectives=["quality", "latency_ms"], maximize=True, teacher=teacher,
                        config={"task": {"metric": ["chrf"]}}, identity={"bank_checksum": "ab" * 32,
                                                                         "genome": {"stacks": ["encoder", "decoder"],
                                                                                    "depths": [6, 6]},
                                                                         "target": {"name": "cpu-1t-b1"}},
                        trials=trials, n_trials_total=n)


def test_large_study_is_sampled_but_keeps_every_frontier_point(tmp_path, monkeypatch):
    import modsearch.report as report
    import modsearch.report._figures as figures

    res = _synthetic()
    # Plan strings of the synthetic study are not real plans: draw its diagram from real ones.
    monkeypatch.setattr(figures, "_blocks", lambda plan: [[(i, i, "layer") for i in range(6)]] * 2)
    page = report.build_report([res], max_points=2000)
    front = res.frontier(["quality", "latency_ms"])
    fig = report.frontier_figure(res, "latency_ms", max_points=2000)
    by_name = {tr.name.split(" (")[0]: tr for tr in fig.data}
    assert len(by_name["frontier"].x) == len(front) and len(front) > 5
    assert len(by_name["dominated"].x) == 2000  # sampled, and the legend says so
    assert "sampled" in next(tr.name for tr in fig.data if tr.name.startswith("dominated"))
    size_mb = len(page.encode()) / 1e6
    assert size_mb < 16, size_mb  # how fast it builds and opens is a benchmark's business, not a test's
    if _chromium():
        path = tmp_path / "big.html"
        path.write_text(page, encoding="utf-8")
        probe, _seconds = _render(_chromium(), str(path), tmp_path)
        assert probe["errors"] == [] and all(p["svg"] > 0 for p in probe["plots"])


def test_headline_is_computed_from_the_trials():
    from modsearch.report import headline

    res = _synthetic(2000)
    h = headline(res)
    best_2x = max((t for t in res.trials if t.feasible and 50 / t.get("latency_ms") >= h["milestone"]),
                  key=lambda t: t.get("quality"))
    assert h["trial"] == best_2x.number
    assert h["text"].startswith(f"at {h['milestone']:.2g}\u00d7 the teacher's speed, chrf ")
    assert "search gains" in h["baseline_text"] or "no seeded baseline" in h["baseline_text"]


def test_report_refuses_bad_input_in_one_line_and_writes_nothing(study, tmp_path, capsys):
    out = tmp_path / "r.html"
    cases = [[str(tmp_path / "missing.toml")],
             ["--storage", f"sqlite:///{study / 'tiny' / 'study.db'}", "--study", "nope"],
             ["--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "tiny"],
             []]
    for args in cases:
        assert main(["report", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("modsearch: error:") and "\n" not in err, err
        assert not out.exists()
    assert not (tmp_path / "none.db").exists()  # reading never creates a storage


# -- export -----------------------------------------------------------------------------------------------------
_REPRODUCE = r"""
import json, sys
import sacrebleu
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

torch.set_num_threads(1)
path, dev = sys.argv[1], sys.argv[2]
spec = json.load(open(path + "/assembly.json"))
task = spec["study"]["task"]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()
rows = [json.loads(line) for line in open(dev)]
ids = tok([(spec.get("source_prefix") or "") + r["en"] for r in rows])["input_ids"]
order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))   # as scored: longest first, then dev order
preds = [""] * len(rows)
for b in range(0, len(order), task["batch_size"]):
    idx = order[b:b + task["batch_size"]]
    width = max(len(ids[i]) for i in idx)
    input_ids = torch.tensor([ids[i] + [tok.pad_token_id] * (width - len(ids[i])) for i in idx])
    mask = torch.tensor([[1] * len(ids[i]) + [0] * (width - len(ids[i])) for i in idx])
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=task["max_new_tokens"],
                             num_beams=task["num_beams"], do_sample=False, pad_token_id=tok.pad_token_id)
    for i, text in zip(idx, tok.batch_decode(out, skip_special_tokens=True)):
        preds[i] = text.strip()
print(json.dumps({"chrf": sacrebleu.corpus_chrf(preds, [[r["fr"] for r in rows]]).score,
                  "modsearch_imported": any(m.startswith("modsearch") for m in sys.modules)}))
"""


def test_exported_trial_reproduces_its_study_score_in_a_fresh_process(study, tmp_path, capsys):
    res = open_results(str(study / "tiny.toml"))
    # a compressed frontier plan whose score is not the teacher's
    rec = next(t for t in res.frontier() if t.strategy != "teacher" and t.get("params_ratio") < 1)
    out = tmp_path / "exp"
    assert main(["export", str(study / "tiny.toml"), "--trial", str(rec.number), "--out", str(out)]) == 0
    assert f"trial {rec.number} of study tiny" in capsys.readouterr().out
    spec = json.loads((out / "assembly.json").read_text())
    assert spec["plan"] == rec.plan and spec["trial"] == rec.number and spec["study"]["name"] == "tiny"
    assert spec["bank_checksum"] == res.bank_checksum and spec["target"]["name"] == "cpu-1t-b1"
    assert spec["metrics"]["quality"] == rec.get("quality") and spec["metrics"]["flops"] == rec.get("flops")
    card = (out / "README.md").read_text()
    assert rec.plan in card and "Where it comes from" in card and "AutoModelForSeq2SeqLM" in card
    assert (out / "tokenizer.json").exists()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", _REPRODUCE, str(out), str(study / "dev.jsonl")],
                          capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not got["modsearch_imported"]
    assert got["chrf"] == rec.get("quality")  # exactly, not approximately


def test_pick_exports_the_best_quality_under_a_budget(study, tmp_path, capsys):
    res = open_results(str(study / "tiny.toml"))
    ok = [t for t in res.trials if t.feasible and t.get("params_ratio") <= 0.75]
    best = max(t.get("quality") for t in ok)
    rec = res.pick("params_ratio <= 0.75")
    assert rec.get("quality") == best and rec.get("params_ratio") <= 0.75
    out = tmp_path / "picked"
    assert main(["export", str(study / "tiny.toml"), "--pick", "params_ratio <= 0.75", "--out", str(out)]) == 0
    spec = json.loads((out / "assembly.json").read_text())
    assert spec["picked_by"] == "params_ratio <= 0.75" and spec["plan"] == rec.plan
    # bad picks and trials: one line, exit 2, no directory
    for args in (["--pick", "params_ratio <= 0.01"], ["--pick", "latency <= 3"], ["--trial", "999"],
                 ["--trial", "1", "--pick", "params <= 1"]):
        bad = tmp_path / "bad"
        assert main(["export", str(study / "tiny.toml"), *args, "--out", str(bad)]) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("modsearch: error:") and "\n" not in err and not bad.exists()


# -- notebook ---------------------------------------------------------------------------------------------------
def test_notebook_runs_top_to_bottom_on_a_study(study, tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra (nbclient)")
    pytest.importorskip("ipykernel", reason="the notebook test needs the test extra (ipykernel)")
    nb = nbformat.read(os.path.join(REPO, "notebooks", "explore_pareto.ipynb"), as_version=4)
    os.environ["MODSEARCH_STUDY"] = str(study / "tiny.toml")
    os.environ["MODSEARCH_EXPORT_DIR"] = str(tmp_path / "nb-export")
    try:
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        os.environ.pop("MODSEARCH_STUDY")
        os.environ.pop("MODSEARCH_EXPORT_DIR")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "nb-export" / "assembly.json").exists()


def test_verified_frontier_is_drawn_with_its_intervals():
    import modsearch.report as report

    res = _synthetic(n=300)
    front = res.frontier(["quality", "latency_ms"])
    plans = {}
    for k, t in enumerate(front[:3]):
        s = 50 / t.get("latency_ms")
        plans[t.plan] = {"trial": t.number, "speedup": s, "low": s * 0.97, "high": s * 1.02, "half_width": 0.03,
                         "latency_ms": 50 / s, "on_front": k != 1}
    res.verification = {"objective": "latency_ms", "teacher_ms": 50.0, "rounds": 30, "confidence": 0.95,
                        "plans": plans}
    fig = report.frontier_figure(res, "latency_ms", max_points=2000)
    tr = next(t for t in fig.data if t.name.startswith("verified"))
    assert len(tr.x) == 3 and "30 rounds" in tr.name
    for x, hi, lo, t in zip(tr.x, tr.error_x.array, tr.error_x.arrayminus, front[:3]):
        v = plans[t.plan]
        # The bars span exactly the verified interval, turned into latency: teacher_ms / speed-up.
        assert x + hi == pytest.approx(50 / v["low"]) and x - lo == pytest.approx(50 / v["high"])
    assert list(tr.marker.color).count("#d62728") == 1  # the one verification knocked off, in red
    assert "off the front" in tr.text[1]
    # No verification record, or one for another cost axis: no such trace.
    res.verification = None
    assert not any(t.name.startswith("verified") for t in report.frontier_figure(res, "latency_ms").data)


@needs_browser
@pytest.mark.parametrize("window", ["1280,800", "1024,768"])
def test_choice_panel_is_in_the_first_viewport_and_no_legend_overlaps(study, tmp_path, window):
    page = str(tmp_path / "tiny.html")
    assert main(["report", str(study / "tiny.toml"), "--out", page]) == 0
    res = open_results(str(study / "tiny.toml"))
    probe, _ = _render(_chromium(), page, tmp_path, probe=_LAYOUT_PROBE, window=window)
    panel, vp = probe["panel"], probe["viewport"]
    assert panel is not None and 0 <= panel["top"] and panel["bottom"] <= vp["height"], (panel, vp)
    # the choice: every frontier point, with the commands that export it and heal it
    front = res.frontier()
    assert probe["panel_rows"] == len(front)
    for t in front:
        assert res.export_command(t.number) in probe["panel_commands"]
        assert any(c.startswith("modsearch heal ") and f"--trial {t.number} " in c for c in probe["panel_commands"])
    assert {p["id"] for p in probe["plots"]} >= {"front-0-flops", "plans-0"}
    _check_layout(probe)


@needs_browser
def test_a_verified_study_opens_on_its_verified_frontier(tmp_path, monkeypatch):
    import modsearch.report as report
    import modsearch.report._figures as figures

    monkeypatch.setattr(figures, "_blocks", lambda plan: [[(i, i, "layer") for i in range(6)]] * 2)
    res = _synthetic(n=400)
    front = res.frontier(["quality", "latency_ms"])
    plans = {t.plan: {"trial": t.number, "speedup": 50 / t.get("latency_ms"), "low": 50 / t.get("latency_ms") * 0.97,
                      "high": 50 / t.get("latency_ms") * 1.02, "half_width": 0.03, "latency_ms": t.get("latency_ms"),
                      "on_front": True} for t in front[:8]}
    res.verification = {"objective": "latency_ms", "teacher_ms": 50.0, "rounds": 30, "confidence": 0.95,
                        "plans": plans}
    page = tmp_path / "big.html"
    page.write_text(report.build_report([res]), encoding="utf-8")
    probe, _ = _render(_chromium(), str(page), tmp_path, probe=_LAYOUT_PROBE)
    panel, vp = probe["panel"], probe["viewport"]
    # A long frontier scrolls inside the panel; the panel itself stays in the first viewport.
    assert panel is not None and panel["bottom"] <= vp["height"], (panel, vp)
    assert probe["panel_rows"] == len(res.frontier())
    _check_layout(probe)
    html_text = page.read_text(encoding="utf-8")
    first = html_text.index('id="choice-0"')
    assert first < html_text.index('id="front-0-latency_ms"')  # the choice comes before any figure
    assert "verified" in html_text[first:first + 20000]
