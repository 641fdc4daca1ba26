#!/usr/bin/env bash
# Set up a fresh machine: a virtualenv in .venv with the CPU build of torch and modsearch (editable).
# torch is installed first and pinned: a bare `torch` requirement on a machine without torch pulls a multi-GB
# CUDA build. Pass PYTHON=python3.11 to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import torch, modsearch; print('modsearch', modsearch.__version__, 'torch', torch.__version__)"
