#!/usr/bin/env bash
# Creates .venv at the repository root (if missing) and installs the pinned requirements and the
# custom_components package in editable mode. Safe to run again: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -e .
echo "Environment ready: $(pwd)/.venv"
