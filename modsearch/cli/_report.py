"""The ``modsearch report`` verb: the study's frontier as one self-contained, interactive HTML page.

A thin layer over :func:`modsearch.report.write_report`. It reads only the study storage; every user mistake
raises :class:`UserError` (one line, exit status 2) and leaves no file behind.
"""

from __future__ import annotations

import textwrap

_DESCRIPTION = (
    "Write a study's frontier to one HTML page that opens offline (plotly.js embedded): a headline computed "
    "from the trials, quality against every measured cost (latency, FLOPs, params) with the frontier strong, "
    "dominated and infeasible trials faint, and the teacher and every seeded baseline marked; hover shows each "
    "trial's plan, quality, costs, speed-up and size against the teacher. Then a plan diagram of the frontier "
    "(where the compression went), a sortable frontier table with the 'modsearch export' command of every "
    "row, and the hypervolume over trials. Several studies of one bank (say, on different targets) overlay "
    "into one comparison page. Large studies open quickly: every frontier point is kept, dominated points are "
    "sampled down to --max-points per plot.")


def add_report_parser(sub, fmt, examples) -> None:
    """Register ``report`` on the ``modsearch`` subparsers (``examples`` formats the epilog)."""
    s = sub.add_parser("report", help="write a study's Pareto frontier as an interactive HTML page",
                       formatter_class=fmt, description=textwrap.fill(_DESCRIPTION, 100),
                       epilog=examples("""
                           modsearch report studies/bible-en-fr.toml            # -> reports/bible-en-fr.html
                           modsearch report studies/cpu.toml studies/gpu.toml --out reports/compare.html
                           modsearch report --storage postgresql://u:p@db/modsearch --study bible-en-fr"""))
    s.add_argument("studies", nargs="*", metavar="STUDY.toml", help="study TOML file(s); several overlay")
    s.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: each file's)")
    s.add_argument("--study", action="append", metavar="NAME", dest="study_names",
                   help="study name in the storage (repeat to compare several)")
    s.add_argument("--out", metavar="FILE", help="HTML file to write (default: reports/<study>.html)")
    s.add_argument("--max-points", type=int, default=2000, metavar="N",
                   help="at most N dominated trials drawn per plot (sampled; frontier always complete)")
    s.set_defaults(func=cmd_report)


def cmd_report(a) -> int:
    import os

    from ..report._page import write_report

    out = write_report(a.studies or None, storage=a.storage, study_names=a.study_names, out=a.out,
                       max_points=a.max_points)
    print(f"report written to {out} ({os.path.getsize(out) / 1e6:.1f} MB; opens offline in any browser)")
    return 0
