"""The per-depth table of benchmarks/healed_pruning.py: each depth's tuned search plan against the best layer drop
and against LLM-Streamline tuned the same way, matched by plan, with the margins computed from the figures."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import healed_pruning  # noqa: E402


def _row(plan, before, after):
    return {"plan": plan, "test_before": before, "test_after": after}


BASELINES = {"rows": [
    {"removed": 3, "modsearch": "0,1-2,3", "streamline": "0-2,3", "block_influence_test_ppl": 50.0,
     "sleb_test_ppl": 40.0},
    {"removed": 5, "modsearch": "0-1,2-3", "streamline": "0-3", "block_influence_test_ppl": 90.0,
     "sleb_test_ppl": 120.0},
    {"removed": 9, "modsearch": "0-3", "streamline": "0-3", "block_influence_test_ppl": 1.0, "sleb_test_ppl": 1.0},
]}


def test_each_depth_is_matched_by_plan_and_margins_come_from_the_figures():
    rows = [_row("0-2,3", 30.0, 24.0), _row("0,1-2,3", 22.0, 20.0), _row("0-1,2-3", 35.0, 25.0)]
    lines = healed_pruning.depth_table(rows, BASELINES, teacher=10.0)
    body = lines[2:]
    assert len(body) == 2  # depth 9: no export of its search plan, so no row
    three, five = (line.split("|") for line in body)
    assert three[0].strip() == "3" and five[0].strip() == "5"
    assert three[1].strip() == "40.0 ( 4.00x)"  # the best drop is SLEB's here ...
    assert five[1].strip() == "90.0 ( 9.00x)"  # ... and Block Influence's here
    assert three[2].strip() == "24.0 (2.40x)"  # LLM-Streamline's export, tuned
    assert five[2].strip() == "not tuned"  # its streamline plan has no export
    assert three[3].strip() == "22.0 (2.20x)" and three[4].strip() == "20.0 (2.00x)"
    assert three[5].strip() == "2.00x"  # 40 / 20
    assert three[6].strip() == "1.20x"  # 24 / 20
    assert five[5].strip() == "3.60x" and five[6].strip() == "-"  # 90 / 25
