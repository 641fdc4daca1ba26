#!/usr/bin/env bash
# The bank → plan → assemble → export path end to end on a small model built from a config (about 30 s).
set -euo pipefail
cd "$(dirname "$0")/.."
MS="${MODSEARCH:-.venv/bin/modsearch}"
PY="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" examples/make_tiny_model.py "$work/model"
"$MS" bank init --model "$work/model" --out "$work/bank" --granularity 2,3
"$MS" bank info "$work/bank"
"$MS" bank verify "$work/bank"
"$MS" plans "$work/bank" --count
"$MS" plans "$work/bank" --sample 5 --seed 0
"$MS" export "$work/bank" --plan 0-1,2-3,4-5/0-2,3-5 --out "$work/half-depth"
"$PY" - "$work/half-depth" <<'PY'
import sys
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
path = sys.argv[1]
model = AutoModelForSeq2SeqLM.from_pretrained(path)
tok = AutoTokenizer.from_pretrained(path)
print("reloaded", type(model).__name__, "encoder", model.config.encoder_layers, "decoder", model.config.decoder_layers,
      "layers;", sum(p.numel() for p in model.parameters()), "parameters")
PY
