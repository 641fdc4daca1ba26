"""The frontier report: one self-contained HTML page per study (or per group of studies), built with plotly.

The page reads only the study storage (through :mod:`modsearch.results`); it never assembles a model. It holds:

- first, within the first screen, the choice the page is for: every point of the verified frontier
  (:meth:`~modsearch.results.StudyResults.frontier`) with what it keeps of the teacher's quality, its verified
  speed-up and interval (:meth:`~modsearch.results.StudyResults.verified`), and the commands that export it or
  heal it first;
- a headline computed from the data ("at 2.0x the teacher's speed, chrF 41.2 (-3.1 %)"), beside the best
  known strategy at that speed, so a reader sees what the search bought;
- quality against each measured cost (latency, FLOPs, params): the frontier drawn strong, dominated and
  infeasible trials faint, the teacher and every seeded baseline (uniform, speed-first, size-first, layer drop)
  marked and labelled; hovering a point shows its plan, quality, every cost figure, speed-up and size against
  the teacher, and its trial number;
- a plan diagram of the frontier: each plan as a row of blocks per stack (original layer, module of span k,
  dropped), aligned to layer positions, so a reader sees where the compression went;
- a sortable frontier table with the exact ``modsearch export`` command of every row;
- the hypervolume over trials.

plotly.js is embedded (a CDN link renders blank offline), so the file opens anywhere, alone. Large studies stay
quick to open: every frontier point and baseline is drawn, dominated points are sampled down to
``max_points`` per plot.

>>> from modsearch.report import write_report
>>> write_report(["studies/bible-en-fr.toml"])                                        # doctest: +SKIP
'reports/bible-en-fr.html'
"""

from __future__ import annotations

import html
import os

from .._errors import UserError
from .._io import write_text
from ..results._study import StudyResults, open_results
from ._figures import (_COST_SHORT, _STUDY_COLOURS, _num, _pct, _ratio, frontier_figure, headline, hypervolume_figure,
                       plan_diagram)

__all__ = ["build_report", "write_report"]


def _table(res: StudyResults, rows, table_id: str) -> str:
    q = res.quality_name
    costs = res.cost_axes()
    fronts2 = {c: {t.number for t in res.frontier(["quality", c])} for c in costs}
    head = ["trial", "strategy", "plan", q, f"{q} vs teacher"] + [_COST_SHORT[c] for c in costs] + \
           ["speed-up", "size vs teacher", "on 2-D front of", "export"]
    types = ["n", "s", "s", "n", "n"] + ["n"] * len(costs) + ["n", "n", "s", "s"]
    out = [f'<table class="sortable" id="{table_id}"><thead><tr>']
    out += [f'<th data-type="{ty}" title="click to sort">{html.escape(h)}</th>' for h, ty in zip(head, types)]
    out.append("</tr></thead><tbody>")
    tq = res.teacher.get("quality")
    for t in rows:
        cmd = res.export_command(t.number)
        cells = [(t.number, str(t.number)), (t.strategy, t.strategy), (t.plan, f"<code>{html.escape(t.plan)}</code>"),
                 (t.get("quality"), _num(t.get("quality"))),
                 ((t.get("quality") - tq) / abs(tq) * 100 if tq else 0, _pct(t.get("quality"), tq))]
        cells += [(t.get(c), _num(t.get(c), c)) for c in costs]
        sp = t.get("speedup")
        cells.append((sp if sp is not None else "", f"{sp:.2f}x" if sp is not None else ""))
        pr = t.get("params_ratio")
        cells.append((pr if pr is not None else "", f"{pr:.1%}" if pr is not None else ""))
        on = ", ".join(_COST_SHORT[c] for c in costs if t.number in fronts2[c])
        cells.append((on, on))
        cells.append((cmd, f'<code class="cmd">{html.escape(cmd)}</code>'))
        out.append("<tr>" + "".join(f'<td data-v="{html.escape(str(v))}">{shown}</td>' for v, shown in cells)
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _heal_command(res: StudyResults, number: int) -> str:
    """The shell command that heals trial ``number`` before exporting it (the user names the training text)."""
    out = os.path.join("exports", f"{res.name}-t{number}-healed")
    cmd = res.export_command(number, out=out)
    return cmd.replace("modsearch export", "modsearch heal", 1).replace(" --out ", " --data TRAIN.jsonl "
                                                                         "--minutes 10 --out ", 1)


def _speed_cell(res: StudyResults, t, cost: str) -> tuple[float, str]:
    """How much cheaper than the teacher, as the user deploys by it: the verified speed-up with its interval where
    ``modsearch verify`` measured the plan, else the trial's own figure, marked as such."""
    if cost in ("latency_ms", "profile_latency_ms") and t.get("speedup") is not None:
        v = res.verified(t.plan)
        if v is not None:
            return v["speedup"], (f'<b>{v["speedup"]:.2f}\u00d7</b> <span class="iv">[{v["low"]:.2f}, '
                                  f'{v["high"]:.2f}] verified</span>')
        sp = t.get("speedup")
        label = "teacher" if t.strategy == "teacher" else "trial, not verified"
        return sp, f'<b>{sp:.2f}\u00d7</b> <span class="iv">{label}</span>'
    r = _ratio(res, t, cost)
    return r, f"<b>{r:.2f}\u00d7</b> <span class=\"iv\">fewer {html.escape(_COST_SHORT[cost])}</span>"


def _choice_panel(res: StudyResults, idx: int) -> str:
    """The decision the page is for, first: each point of the verified frontier with what it keeps of the
    teacher's quality, what it buys, and the two commands that ship it (export, or heal then export)."""
    q, tq = res.quality_name, res.teacher.get("quality")
    costs = [o for o in res.objectives[1:] if o in res.cost_axes()] or res.cost_axes()
    cost = costs[0] if costs else "params"
    front = res.frontier()
    verified = bool((res.verification or {}).get("plans"))
    what = "speed-up" if cost in ("latency_ms", "profile_latency_ms") else f"{_COST_SHORT[cost]} vs teacher"
    rows = []
    for t in front:
        _v, speed = _speed_cell(res, t, cost)
        ship = ("" if t.strategy == "teacher" else
                f'<code class="cmd">{html.escape(res.export_command(t.number))}</code>'
                f'<code class="cmd">{html.escape(_heal_command(res, t.number))}</code>')
        rows.append(f"<tr><td><b>{_num(t.get('quality'))}</b> <span class=\"iv\">"
                    f"{_pct(t.get('quality'), tq) if t.strategy != 'teacher' else 'teacher'}</span></td>"
                    f"<td>{speed}</td><td>{t.number}</td><td><code>{html.escape(t.plan)}</code></td>"
                    f"<td class=\"ship\">{ship}</td></tr>")
    dropped = getattr(res, "dropped", None)
    fell = dropped() if callable(dropped) else []
    note = (f'{len(fell)} point(s) fell off the front when verified and are left out (trial '
            + ", ".join(str(t.number) for t in fell) + ")." if fell else "")
    basis = ("Speed-ups are verified: the teacher and every point timed together, 95 % intervals."
             if verified else ("Not verified yet: run <code>modsearch verify</code> for speed-ups to deploy by."
                               if cost == "latency_ms" else ""))
    return (f'<section class="choice" id="choice-{idx}"><h2>Choose a point: {html.escape(q)} against {what}</h2>'
            f'<p class="meta">The frontier{" (verified)" if verified else ""}, fastest first: each row keeps this '
            f"much of the teacher's {html.escape(q)} for this much {what}. Copy a command: export the point as a "
            f"standalone Hugging Face model, or heal it first (replace TRAIN.jsonl with training text). {basis} "
            f"{note}</p><div class=\"choice-scroll\"><table class=\"choice-table\"><thead><tr>"
            f"<th>{html.escape(q)}</th><th>{what}</th><th>trial</th><th>plan</th><th>ship it</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div></section>")


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;color:#222;
padding:0 16px;line-height:1.45}
h1{font-size:26px;margin-bottom:4px} h2{font-size:20px;margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;font-size:13px} .headline{font-size:21px;background:#eef5fb;border-left:5px solid #1f77b4;
padding:12px 16px;margin:16px 0 4px} .sub{font-size:14px;color:#444;margin:4px 0 12px 21px}
table.sortable{border-collapse:collapse;font-size:12.5px;width:100%} table.sortable th{background:#f2f2f2;
cursor:pointer;text-align:left;padding:5px 6px;border-bottom:2px solid #ccc;white-space:nowrap;position:sticky;top:0}
table.sortable th.asc:after{content:" \\25B2"} table.sortable th.desc:after{content:" \\25BC"}
table.sortable td{padding:4px 6px;border-bottom:1px solid #eee;vertical-align:top}
table.sortable tr:hover td{background:#fafad2} code{font-size:12px} code.cmd{user-select:all;color:#0b5394}
.milestones{font-size:13px;border-collapse:collapse} .milestones td,.milestones th{padding:3px 10px;
border-bottom:1px solid #eee;text-align:left} .plot{margin:8px 0 18px}
.choice{border:1px solid #cfe0ef;border-radius:6px;padding:4px 14px 10px;margin:10px 0 18px;background:#fbfdff}
.choice h2{margin-top:8px;border:0;font-size:18px} .choice .meta{margin:2px 0 8px}
.choice-scroll{max-height:42vh;overflow-y:auto} table.choice-table{border-collapse:collapse;font-size:13px;width:100%}
table.choice-table th{text-align:left;background:#f2f6fa;padding:4px 8px;position:sticky;top:0}
table.choice-table td{padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top;white-space:nowrap}
.iv{color:#666;font-size:11.5px} td.ship code.cmd{display:block;white-space:nowrap;font-size:11.5px}
"""

_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){
      var asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc');});
      th.classList.add(asc ? 'asc' : 'desc');
      var num = th.dataset.type === 'n', body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
        if (num) { x = parseFloat(x); y = parseFloat(y); x = isNaN(x) ? Infinity : x; y = isNaN(y) ? Infinity : y; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def _fig_html(fig, div_id: str) -> str:
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _study_section(res: StudyResults, idx: int, max_points: int, title: bool) -> str:
    q = res.quality_name
    h = headline(res)
    front = res.frontier()
    feas = sum(t.feasible for t in res.trials)
    parts = []
    if title:
        parts.append(f"<h2>Study {html.escape(res.name)} \u2014 target {html.escape(str(res.target_name))}</h2>")
    parts.append(f'<div class="headline" id="headline-{idx}">{html.escape(h["text"])}</div>')
    if h.get("baseline_text"):
        parts.append(f'<div class="sub">{html.escape(h["baseline_text"])}</div>')
    if front:
        parts.append(_choice_panel(res, idx))
    parts.append(f'<p class="meta">{len(res.trials):,} completed trials ({feas:,} feasible) of '
                 f'{res.n_trials_total:,} in the study; objectives {", ".join(res.objectives)}; '
                 f'constraints: {html.escape(", ".join(res.identity.get("constraints") or []) or "none")}; '
                 f'teacher {q} {_num(res.teacher.get("quality"))}; {len(front)} plans on the study\'s frontier.</p>')
    if h["rows"]:
        cost = h["cost"]
        mt = ['<table class="milestones"><tr><th>at least</th><th>best ' + html.escape(q) + '</th><th>trial</th>'
              '<th>plan</th><th>best known strategy</th></tr>']
        for r in h["rows"]:
            t, b = r["trial"], r["baseline"]
            mt.append(f"<tr><td>{r['milestone']:.2g}\u00d7 {_COST_SHORT[cost]}</td><td>{_num(t.get('quality'))} "
                      f"({_pct(t.get('quality'), res.teacher.get('quality'))})</td><td>{t.number}</td>"
                      f"<td><code>{html.escape(t.plan)}</code></td><td>"
                      + (f"{html.escape(b.strategy)}: {_num(b.get('quality'))}" if b else "none reaches it")
                      + "</td></tr>")
        mt.append("</table>")
        parts.append("".join(mt))
    parts.append("<h2>Frontiers</h2>" if not title else "<h3>Frontiers</h3>")
    for c in res.cost_axes():
        parts.append(f'<div class="plot">{_fig_html(frontier_figure(res, c, max_points), f"front-{idx}-{c}")}</div>')
    if front:
        parts.append("<h2>Plans on the frontier</h2>" if not title else "<h3>Plans on the frontier</h3>")
        parts.append(f'<div class="plot">{_fig_html(plan_diagram(res, front), f"plans-{idx}")}</div>')
        parts.append("<h2>Frontier table</h2>" if not title else "<h3>Frontier table</h3>")
        parts.append('<p class="meta">Click a column to sort. Each row\'s command exports that point as a '
                     'standalone Hugging Face model (assembly.json, tokenizer and model card).</p>')
        parts.append(_table(res, front, f"table-{idx}"))
    if not title:
        parts.append("<h2>Search progress</h2>")
        parts.append(f'<div class="plot">{_fig_html(hypervolume_figure([res]), f"hv-{idx}")}</div>')
    return "\n".join(parts)


def build_report(results: list[StudyResults], max_points: int = 2000) -> str:
    """The report page as one HTML string (plotly.js embedded)."""
    import plotly
    import plotly.offline

    if not results:
        raise UserError("give at least one study")
    for res in results:
        if not res.trials:
            raise UserError(f"study {res.name!r} in {res.storage} has no completed trial yet; run "
                            "'modsearch search' first")
    checks = {r.bank_checksum for r in results}
    if len(checks) > 1:
        raise UserError("these studies use different banks (" + ", ".join(f"{r.name}: {r.bank_checksum[:12]}"
                                                                         for r in results)
                        + "); a comparison page overlays studies of one bank")
    names = [r.name for r in results]
    if len(set(names)) < len(names):
        names = [f"{r.name} ({r.target_name})" for r in results]
    body = []
    if len(results) == 1:
        res = results[0]
        title = f"modsearch report: {res.name}"
        body.append(f"<h1>{html.escape(title)}</h1>")
        body.append(f'<p class="meta">bank {html.escape(res.bank_checksum[:16])} \u00b7 target '
                    f'{html.escape(str(res.target_name))} \u00b7 storage {html.escape(res.storage)} \u00b7 '
                    f'quality: {html.escape(res.quality_name)} on the dev set</p>')
        body.append(_study_section(res, 0, max_points, title=False))
    else:
        title = "modsearch comparison: " + " vs ".join(names)
        body.append(f"<h1>{html.escape(title)}</h1>")
        body.append(f'<p class="meta">bank {html.escape(results[0].bank_checksum[:16])}; one colour per study. '
                    "Each study's frontier is drawn strong, its dominated trials faint; the teacher is marked "
                    "per study (its cost depends on the target).</p>")
        for i, (res, name) in enumerate(zip(results, names)):
            body.append(f'<div class="headline" id="headline-cmp-{i}"><b>{html.escape(name)}</b> '
                        f'({html.escape(str(res.target_name))}): {html.escape(headline(res)["text"])}</div>')
        common = [c for c in results[0].cost_axes() if all(c in r.cost_axes() for r in results)]
        body.append("<h2>Frontiers overlaid</h2>")
        for c in common:
            fig = None
            for i, (res, name) in enumerate(zip(results, names)):
                col = _STUDY_COLOURS[i % len(_STUDY_COLOURS)]
                fig = frontier_figure(res, c, max_points // len(results), colour=col, fig=fig, label=name,
                                      baselines=False)
                fig.add_scatter(x=[res.teacher.get(c)], y=[res.teacher.get("quality")], mode="markers+text",
                                marker=dict(symbol="star", size=16, color=col, line=dict(color="#111", width=1)),
                                text=[f"teacher ({res.target_name})"], textposition="top center",
                                name=f"{name}: teacher", hovertemplate=f"teacher on {res.target_name}<br>"
                                                                       "%{x}, %{y}<extra></extra>")
            body.append(f'<div class="plot">{_fig_html(fig, f"cmp-{c}")}</div>')
        body.append("<h2>Search progress</h2>")
        body.append(f'<div class="plot">{_fig_html(hypervolume_figure(results, names), "hv-cmp")}</div>')
        for i, res in enumerate(results):
            body.append(_study_section(res, i, max_points // len(results), title=True))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<meta name=\"generator\" content=\"modsearch report, plotly {plotly.__version__}\">"
            f"<style>{_CSS}</style>\n<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>"
            f"</head><body>\n" + "\n".join(body) + f"\n<script>{_SORT_JS}</script>\n</body></html>\n")


def write_report(sources: list[str] | None = None, *, storage: str | None = None, study_names=None,
                 out: str | None = None, max_points: int = 2000) -> str:
    """Read the studies (TOML files, or ``storage`` with ``study_names``) and write the report; returns its path.

    Default path: ``reports/<study>.html`` (``reports/<a>-vs-<b>.html`` for several studies)."""
    results = []
    if sources:
        if study_names and len(study_names) > 1:
            raise UserError("--study names one study; with several TOML files, each names its own")
        for s in sources:
            results.append(open_results(s, storage=storage, study_name=(study_names or [None])[0]))
    else:
        if not storage or not study_names:
            raise UserError("give study TOML files, or --storage URL with --study NAME")
        for n in study_names:
            results.append(open_results(storage=storage, study_name=n))
    if max_points < 1:
        raise UserError(f"--max-points must be >= 1, not {max_points}")
    page = build_report(results, max_points=max_points)
    out = out or os.path.join("reports", "-vs-".join(r.name for r in results) + ".html")
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a directory; give a file name such as {os.path.join(out, 'report.html')}")
    write_text(out, page)
    return out
