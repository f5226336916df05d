"""scripts/synthesize.py as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "synthesize.py"


def test_ife_command_writes_images_and_datalist(tmp_path):
    out = tmp_path / "gels"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "ife", "--output-dir", str(out), "--count", "5", "--seed", "1", "--size", "60", "90"],
        capture_output=True, text=True, check=True,
    )
    assert "datalist" in result.stdout
    datalist = json.loads((out / "datalist.json").read_text())
    assert sum(len(v) for v in datalist.values()) == 5 and len(list((out / "images").glob("*.png"))) == 5


def test_bad_count_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "ife", "--output-dir", str(tmp_path), "--count", "0"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "count must be >= 1" in result.stderr
