"""The report's figures, each computed from a study's results alone: quality against each cost (frontier strong,
dominated and infeasible trials faint, baselines marked), the headline, the plan diagram and the hypervolume."""

from __future__ import annotations

import html
import random

from ..results._study import StudyResults

__all__ = ["frontier_figure", "headline", "hypervolume_figure", "plan_diagram"]

_AXIS_LABEL = {"latency_ms": "latency (ms, p50)", "profile_latency_ms": "predicted latency (ms, profile)",
               "flops": "FLOPs per generate()", "params": "parameters"}
_COST_SHORT = {"latency_ms": "latency", "profile_latency_ms": "pred. latency", "flops": "FLOPs", "params": "params"}
# One colour and symbol per strategy, readable on white and distinct for the common colour-vision deficiencies.
_STRATEGY_STYLE = {
    "teacher": ("teacher", "#111111", "star", 18),
    "uniform": ("uniform modules", "#d62728", "square", 12),
    "speed-first": ("speed-first", "#ff7f0e", "triangle-up", 12),
    "size-first": ("size-first", "#9467bd", "triangle-down", 12),
    "drop-alternate": ("layer drop (alternate)", "#8c564b", "x", 11),
    "drop-one": ("layer drop (one layer)", "#bcbd22", "cross", 10),
    "user": ("user seed", "#17becf", "diamond", 11),
}
_FRONT_COLOUR = "#1f77b4"
_STUDY_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_BLOCK_COLOURS = {"layer": "#c9ced6", "drop": "#ffffff", 2: "#4c78a8", 3: "#f58518", 4: "#54a24b", 5: "#e45756",
                  6: "#b279a2", 8: "#72b7b2"}
_MILESTONES = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


# -- formatting ------------------------------------------------------------------------------------------------
def _num(v, key: str = "") -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "" if v is None else str(v)
    if key == "params":
        return f"{v / 1e6:.3f} M" if abs(v) >= 1e5 else f"{int(v):,}"
    if key == "flops":
        return f"{v / 1e9:.3f} G" if abs(v) >= 1e7 else f"{v:.4g}"
    if key.endswith("_ratio"):
        return f"{v:.3f}"
    if key == "speedup":
        return f"{v:.2f}x"
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def _pct(v: float, ref: float) -> str:
    if not ref:
        return ""
    d = (v - ref) / abs(ref) * 100
    return f"{d:+.1f} %".replace("-", "\u2212")


def _ratio(res: StudyResults, t, cost: str) -> float:
    """How many times cheaper than the teacher on ``cost`` (speed-up for latency and FLOPs)."""
    tv, v = res.teacher.get(cost), t.get(cost)
    return tv / v if tv and v else float("nan")


def _hover(res: StudyResults, t) -> str:
    q = res.quality_name
    flag = "" if t.feasible else " \u00b7 <i>infeasible</i>"
    lines = [f"<b>trial {t.number}</b> \u00b7 {t.strategy}{flag}",
             f"plan <b>{html.escape(t.plan)}</b>",
             f"{q} {_num(t.get('quality'))} ({_pct(t.get('quality'), res.teacher.get('quality'))} vs teacher)"]
    for c in res.cost_axes():
        r = _ratio(res, t, c)
        lines.append(f"{_COST_SHORT[c]} {_num(t.get(c), c)} ({r:.2f}x cheaper than the teacher)")
    if t.get("speedup") is not None:
        lines.append(f"speed-up {t.get('speedup'):.2f}x ({t.speedup_basis or '?'})")
    if t.get("params_ratio") is not None:
        lines.append(f"size {t.get('params_ratio'):.1%} of the teacher")
    for k in sorted(t.metrics):
        if k not in ("quality", "params", "params_ratio", "flops", "flops_ratio", "speedup", "latency_ms",
                     "profile_latency_ms") and k != q:
            lines.append(f"{k} {_num(t.get(k), k)}")
    return "<br>".join(lines)


# -- 2-D fronts ------------------------------------------------------------------------------------------------
def _front2(res: StudyResults, cost: str, trials=None) -> list:
    """Feasible trials not dominated on (quality, cost), cheapest first; one per plan."""
    return res.frontier(["quality", cost]) if trials is None else trials


def _sample(items: list, n: int, seed: int = 0) -> list:
    if len(items) <= n:
        return items
    rng = random.Random(seed)
    return sorted(rng.sample(items, n), key=lambda t: t.number)


def frontier_figure(res: StudyResults, cost: str, max_points: int = 2000, colour: str = _FRONT_COLOUR,
                    fig=None, label: str | None = None, baselines: bool = True):
    """Quality against ``cost``: the feasible frontier as a staircase, dominated and infeasible trials faint,
    teacher and baselines marked. Pass ``fig`` to overlay another study (``label`` names its traces)."""
    import plotly.graph_objects as go

    q = res.quality_name
    front = _front2(res, cost)
    on_front = {t.number for t in front}
    fig = fig or go.Figure()
    prefix = f"{label}: " if label else ""
    dominated = [t for t in res.trials if t.feasible and t.number not in on_front and t.strategy == "sampler"]
    infeasible = [t for t in res.trials if not t.feasible and t.strategy == "sampler"]
    shown_dom, shown_inf = _sample(dominated, max_points), _sample(infeasible, max_points // 2, seed=1)
    for name, pts, style in ((f"{prefix}dominated", shown_dom, dict(color=colour, size=6, opacity=0.22)),
                             (f"{prefix}infeasible", shown_inf, dict(color="#7f7f7f", size=6, opacity=0.25,
                                                                     symbol="x-thin", line=dict(width=1,
                                                                                                color="#7f7f7f")))):
        if not pts:
            continue
        extra = f" ({len(pts):,} of {len(dominated if 'dom' in name else infeasible):,}, sampled)" \
            if len(pts) < len(dominated if "dom" in name else infeasible) else ""
        fig.add_trace(go.Scatter(x=[t.get(cost) for t in pts], y=[t.get("quality") for t in pts], mode="markers",
                                 name=name + extra, marker=style, text=[_hover(res, t) for t in pts],
                                 hovertemplate="%{text}<extra></extra>", legendgroup=f"{prefix}faint"))
    fig.add_trace(go.Scatter(x=[t.get(cost) for t in front], y=[t.get("quality") for t in front],
                             mode="lines+markers", line=dict(color=colour, width=2.5, shape="hv"),
                             marker=dict(color=colour, size=9, line=dict(color="white", width=1)),
                             name=f"{prefix}frontier ({len(front)})", text=[_hover(res, t) for t in front],
                             hovertemplate="%{text}<extra></extra>"))
    _verified_trace(fig, res, cost, front, prefix)
    if baselines:
        for strategy, (name, col, symbol, size) in _STRATEGY_STYLE.items():
            pts = [t for t in res.trials if t.strategy == strategy]
            if not pts:
                continue
            seen, uniq = set(), []
            for t in pts:
                if t.plan not in seen:
                    seen.add(t.plan)
                    uniq.append(t)
            show_text = strategy in ("teacher", "uniform")
            texts = ["teacher" if strategy == "teacher" else _uniform_label(t.plan) for t in uniq] \
                if show_text else None
            fig.add_trace(go.Scatter(
                x=[t.get(cost) for t in uniq], y=[t.get("quality") for t in uniq],
                mode="markers+text" if show_text else "markers", name=f"{prefix}{name}",
                marker=dict(color=col, symbol=symbol, size=size, line=dict(color="white", width=1)),
                text=texts, textposition="top center", textfont=dict(size=11, color=col),
                customdata=[_hover(res, t) for t in uniq], hovertemplate="%{customdata}<extra></extra>"))
    tq = res.teacher.get("quality")
    if tq is not None and baselines:
        fig.add_hline(y=tq, line=dict(color="#555", width=1, dash="dot"),
                      annotation_text=f"teacher {q} {_num(tq)}", annotation_position="bottom left",
                      annotation_font=dict(size=10, color="#555"))
    fig.update_layout(
        title=dict(text=f"{q} against {_AXIS_LABEL[cost]}" + (f" \u2014 target {res.target_name}"
                                                               if cost == "latency_ms" and not label else ""),
                   font=dict(size=16)),
        xaxis_title=_AXIS_LABEL[cost] + ("" if label else " \u2192 cheaper to the left"),
        yaxis_title=f"{q} ({'higher' if res.maximize else 'lower'} is better)",
        template="plotly_white", height=520, hovermode="closest", legend=dict(font=dict(size=11)),
        margin=dict(l=70, r=20, t=60, b=60), font=dict(size=13))
    return fig


def _verified_trace(fig, res: StudyResults, cost: str, front: list, prefix: str) -> None:
    """The frontier's verified latencies (``modsearch verify``) with their intervals as horizontal error bars;
    points that verification knocks off the front in red."""
    import plotly.graph_objects as go

    rec = res.verification or {}
    if cost != rec.get("objective") or not rec.get("plans"):
        return
    pts = [(t, res.verified(t.plan)) for t in front if res.verified(t.plan)]
    if not pts:
        return
    tm = rec["teacher_ms"]
    x = [tm / v["speedup"] for _t, v in pts]
    hi = [tm / v["low"] - xi if v["low"] > 0 else 0.0 for (_t, v), xi in zip(pts, x)]
    lo = [xi - tm / v["high"] for (_t, v), xi in zip(pts, x)]
    fig.add_trace(go.Scatter(
        x=x, y=[t.get("quality") for t, _v in pts], mode="markers",
        name=f"{prefix}verified ({rec['confidence']:.0%} interval, {rec['rounds']} rounds)",
        marker=dict(symbol="diamond-open", size=11, line=dict(width=2),
                    color=["#2ca02c" if v["on_front"] else "#d62728" for _t, v in pts]),
        error_x=dict(type="data", symmetric=False, array=hi, arrayminus=lo, thickness=1.5, width=4),
        text=[f"{t.plan}<br>verified {v['speedup']:.2f}x [{v['low']:.2f}, {v['high']:.2f}]"
              + ("" if v["on_front"] else "<br><b>off the front when verified</b>") for t, v in pts],
        hovertemplate="%{text}<extra></extra>"))


def _uniform_label(plan: str) -> str:
    spans = {b.count("-") and int(b.split("-")[1]) - int(b.split("-")[0]) + 1 for b in plan.replace("/", ",").split(",")
             if "-" in b}
    return "uniform k=" + ",".join(str(s) for s in sorted(spans)) if spans else "uniform"


# -- headline --------------------------------------------------------------------------------------------------
def headline(res: StudyResults, cost: str | None = None) -> dict:
    """The headline figures, computed from the trials: at the highest speed-up (or size reduction) milestone
    where the best frontier quality stays within 10 % of the teacher's (else the first milestone reached), the
    best quality there, and the best seeded baseline at the same milestone.

    Returns ``{"text", "milestone", "trial", "baseline_text", "rows"}`` (rows: every milestone reached)."""
    axes = res.cost_axes()
    cost = cost or next((o for o in res.objectives[1:] if o in axes), axes[0] if axes else None)
    tq = res.teacher.get("quality")
    if cost is None or not res.trials or tq is None:
        return {"text": "no completed trial yet", "rows": [], "milestone": None, "trial": None,
                "baseline_text": ""}
    word = "size" if cost == "params" else "speed"
    feasible = [t for t in res.trials if t.feasible]
    rows = []
    for m in _MILESTONES:
        ok = [t for t in feasible if _ratio(res, t, cost) >= m - 1e-9]
        if not ok:
            break
        best = max(ok, key=lambda t: (t.get("quality") if res.maximize else -t.get("quality"), -t.number))
        bases = [t for t in ok if t.strategy not in ("sampler", "teacher")]
        base = max(bases, key=lambda t: t.get("quality") if res.maximize else -t.get("quality")) if bases else None
        rows.append({"milestone": m, "trial": best, "baseline": base})
    if not rows:
        return {"text": f"no feasible plan is {_MILESTONES[0]}x cheaper than the teacher in {_COST_SHORT[cost]} yet",
                "rows": [], "milestone": None, "trial": None, "baseline_text": ""}

    def within(r):
        return abs(r["trial"].get("quality") - tq) <= 0.10 * abs(tq)

    pick = next((r for r in reversed(rows) if within(r)), rows[0])
    q, t, m = res.quality_name, pick["trial"], pick["milestone"]
    what = f"at {m:.2g}\u00d7 the teacher's {word}" if word == "speed" else f"at 1/{m:.2g} of the teacher's size"
    text = (f"{what}, {q} {_num(t.get('quality'))} ({_pct(t.get('quality'), tq)}) "
            f"\u2014 trial {t.number}, plan {t.plan}")
    b = pick["baseline"]
    if b is None:
        btext = f"no seeded baseline reaches {m:.2g}\u00d7 ({_COST_SHORT[cost]})"
    else:
        gain = t.get("quality") - b.get("quality")
        btext = (f"best known strategy there: {b.strategy} ({b.plan}), {q} {_num(b.get('quality'))} "
                 f"({_pct(b.get('quality'), tq)}); the search gains {gain:+.2f} {q}")
    return {"text": text, "milestone": m, "trial": t.number, "baseline_text": btext, "rows": rows, "cost": cost}


# -- plan diagram ----------------------------------------------------------------------------------------------
def _blocks(plan: str) -> list[list[tuple[int, int, str]]]:
    from ..plan._plan import AssemblyPlan

    return [[(b.start, b.end, b.kind) for b in blocks] for blocks in AssemblyPlan.parse(plan).stacks]


def plan_diagram(res: StudyResults, rows=None, max_rows: int = 80):
    """Each frontier plan as a row of blocks per stack, aligned to layer positions (teacher on top)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = list(rows if rows is not None else res.frontier())[:max_rows]
    stacks = (res.identity.get("genome") or {}).get("stacks") or [f"stack {i + 1}" for i in
                                                                  range(len(_blocks(rows[0].plan)) if rows else 1)]
    depths = (res.identity.get("genome") or {}).get("depths") or []
    q = res.quality_name
    teacher_row = f"teacher \u00b7 {q} {_num(res.teacher.get('quality'))}"
    labels = [teacher_row] + [f"t{t.number} \u00b7 {q} {_num(t.get('quality'))} \u00b7 "
                              f"{_ratio(res, t, res.objectives[1]):.2f}x" for t in rows]
    teacher_plan = "/".join(",".join(str(i) for i in range(d)) for d in depths) if depths else None
    plans = ([teacher_plan] if teacher_plan else []) + [t.plan for t in rows]
    if not teacher_plan:
        labels = labels[1:]
    fig = make_subplots(rows=1, cols=len(stacks), shared_yaxes=True, subplot_titles=stacks,
                        horizontal_spacing=0.03)
    legend_done = set()
    for s in range(len(stacks)):
        groups: dict = {}
        for label, plan in zip(labels, plans):
            for start, end, kind in _blocks(plan)[s]:
                key = "drop" if kind == "drop" else ("layer" if kind == "layer" else end - start + 1)
                g = groups.setdefault(key, {"x": [], "base": [], "y": [], "text": [], "hover": []})
                g["x"].append(end - start + 1)
                g["base"].append(start)
                g["y"].append(label)
                g["text"].append(f"x{start}" if kind == "drop" else (str(start) if kind == "layer" else
                                                                    f"{start}-{end}"))
                g["hover"].append(f"{stacks[s]} layers {start}..{end}: "
                                  + ("dropped" if kind == "drop" else "original layer" if kind == "layer"
                                     else f"module of span {end - start + 1}") + f"<br>{html.escape(plan)}")
        for key in sorted(groups, key=lambda k: (isinstance(k, int), k if isinstance(k, int) else str(k))):
            g = groups[key]
            name = {"layer": "original layer", "drop": "dropped"}.get(key) or f"module, span {key}"
            colour = _BLOCK_COLOURS.get(key, "#999999")
            fig.add_trace(go.Bar(
                x=g["x"], base=g["base"], y=g["y"], orientation="h", name=name, legendgroup=str(key),
                showlegend=key not in legend_done, text=g["text"], textposition="inside", insidetextanchor="middle",
                textfont=dict(size=10, color="#222" if key in ("layer", "drop") else "white"),
                marker=dict(color=colour, line=dict(color="#e45756" if key == "drop" else "#555", width=1),
                            pattern=dict(shape="/", fgcolor="#e45756") if key == "drop" else None),
                hovertext=g["hover"], hoverinfo="text"), row=1, col=s + 1)
            legend_done.add(key)
        if s < len(depths):
            fig.update_xaxes(range=[0, depths[s]], dtick=1, title_text="layer position", row=1, col=s + 1)
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(labels)), autorange=True)
    fig.update_layout(barmode="overlay", bargap=0.25, template="plotly_white",
                      height=max(300, 90 + 26 * len(labels)), title=dict(
                          text="Where the compression went: frontier plans, cheapest at the bottom", font=dict(size=16)),
                      # The legend in a column of its own right of the plots: below them, a horizontal legend ran
                      # into the axis titles in Chromium whenever the diagram had few rows.
                      legend=dict(orientation="v", x=1.01, xanchor="left", y=1, yanchor="top",
                                  title=dict(text="block"), tracegroupgap=4),
                      margin=dict(l=230, r=20, t=70, b=60))
    return fig


# -- hypervolume -----------------------------------------------------------------------------------------------
def hypervolume_figure(results: list[StudyResults], labels: list[str] | None = None):
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, res in enumerate(results):
        hist = res.hypervolume_history()
        # A step per change is all the curve needs: 10,000 trials stay light.
        xs, ys, last = [], [], None
        for n, hv in hist:
            if hv != last:
                xs.append(n)
                ys.append(hv)
                last = hv
        if hist and (not xs or xs[-1] != hist[-1][0]):
            xs.append(hist[-1][0])
            ys.append(hist[-1][1])
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(shape="hv", width=2.5,
                                                                     color=_STUDY_COLOURS[i % len(_STUDY_COLOURS)]),
                                 name=(labels[i] if labels else res.name)))
    fig.update_layout(title=dict(text="Hypervolume of the feasible front over trials (teacher-normalised)",
                                 font=dict(size=16)),
                      xaxis_title="trial number", yaxis_title="hypervolume", template="plotly_white", height=360,
                      margin=dict(l=70, r=20, t=60, b=50), showlegend=len(results) > 1)
    return fig


# -- table -----------------------------------------------------------------------------------------------------
