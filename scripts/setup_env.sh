#!/usr/bin/env bash
# Creates .venv at the repository root (if missing) and installs the pinned requirements and the
# custom_components package in editable mode. Safe to run again: pip skips what is installed.
# pip's own output goes to .venv/setup.log and is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
step() {
    if ! "$@" >>"$log" 2>&1; then
        cat "$log" >&2
        echo "setup_env.sh: failed: $*" >&2
        exit 1
    fi
}
echo "Installing the pinned environment into $(pwd)/.venv (the first time takes several minutes) ..."
step python3 -m venv .venv
step .venv/bin/python -m pip install --upgrade pip
step .venv/bin/python -m pip install -r requirements.txt
step .venv/bin/python -m pip install --no-deps -e .
cp "$log" .venv/setup.log
echo "Environment ready: $(pwd)/.venv (pip's output: .venv/setup.log)"
