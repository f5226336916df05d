"""scripts/synthesize.py as a user runs it.

One test runs the README's command line in a process of its own: the command itself (``__main__``, the exit status,
progress logged on stderr, the package found from the script's folder) is what it tests. The others call the same
``main()`` in this process.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "synthesize.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_ife_command_writes_images_datalist_and_says_where(tmp_path):
    out = tmp_path / "gels"
    result = _run("ife", "--output-dir", str(out), "--count", "5", "--seed", "1", "--size", "60", "90")
    assert result.returncode == 0, result.stderr
    datalist = json.loads((out / "datalist.json").read_text())
    assert sum(len(v) for v in datalist.values()) == 5 and len(list((out / "images").glob("*.png"))) == 5
    assert f"Datalist: {(out / 'datalist.json').resolve()}" in result.stdout
    assert f"{(out / 'images').resolve()} (5 files)" in result.stdout
    assert "synthetic IFE gels: 5/5" in result.stderr  # progress is logged
    summary = json.loads((out / "synthesis.json").read_text())
    assert summary["seed"] == 1 and summary["image_size"] == [60, 90]


@pytest.fixture(scope="module")
def script():
    # in-process (a second interpreter costs seconds of imports): the same main() the command line runs
    spec = importlib.util.spec_from_file_location("synthesize_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "args, message",
    [
        (["ife", "--count", "0"], "count must be >= 1, got 0"),
        (["xray"], "invalid choice: 'xray'"),
        (["ife", "--size", "20", "30"], "image_size must be (H, W) of at least (48, 64)"),
    ],
)
def test_bad_arguments_are_usage_errors_that_write_nothing(script, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        script.main([*args, "--output-dir", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_oct_command_delegates_to_the_oct_generator(script, tmp_path, capsys):
    out = tmp_path / "oct"
    assert script.main(["oct", "--output-dir", str(out), "--count", "2", "--seed", "0", "--size", "64", "64"]) == 0
    datalist = json.loads((out / "datalist.json").read_text())
    entries = [e for split in datalist.values() for e in split]
    assert len(entries) == 2 and all((out / e["image"]).is_file() and (out / e["label"]).is_file() for e in entries)
    assert "Datalist:" in capsys.readouterr().out


def test_ife_layout_options_reach_the_generator(script, tmp_path, capsys):
    out = tmp_path / "gels"
    args = ["ife", "--output-dir", str(out), "--count", "4", "--seed", "0", "--size", "60", "90", "--style", "real",
            "--no-frame", "--orientation", "albumin_top", "--biclonal-fraction", "0.25"]  # fmt: skip
    assert script.main(args) == 0
    summary = json.loads((out / "synthesis.json").read_text())
    assert summary["orientation"] == "albumin_top" and summary["biclonal_fraction"] == 0.25
    assert summary["style"] == {"headers": True, "frame": False, "margin": True, "uneven_lanes": True}
    datalist = json.loads((out / "datalist.json").read_text())
    assert [e["label"] for e in datalist["biclonal"]] == ["biclonal"]
    assert "biclonal 1" in capsys.readouterr().out  # the section is listed with the others


@pytest.mark.parametrize(
    "args, message",
    [
        (["oct", "--orientation", "albumin_top"], "--orientation is for ife gels only"),
        (["ife", "--style", "mixed", "--frame"], "--style mixed draws every layout option per gel"),
        (["ife", "--biclonal-fraction", "1"], "biclonal fraction must be in [0, 1), got 1.0"),
        (["oct", "--min-per-class", "3"], "--min-per-class is for ife gels only"),
        (["oct", "--difficulty", "0"], "difficulty must be a finite positive number, got 0.0"),
        (["ife", "--typed-masks"], "--typed-masks is for oct scans only"),
    ],
)
def test_bad_layout_options_are_usage_errors(script, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        script.main([*args, "--output-dir", str(tmp_path / "x")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_typed_masks_reach_the_oct_generator(script, tmp_path):
    out = tmp_path / "scans"
    assert script.main(["oct", "--output-dir", str(out), "--count", "4", "--size", "48", "64", "--typed-masks"]) == 0
    summary = json.loads((out / "synthesis.json").read_text())
    assert summary["typed_masks"] is True
    for entry in summary["images"]:
        mask = np.asarray(Image.open(out / entry["label"]))
        assert set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
        assert [int((mask == v).sum()) for v in (1, 2, 3)] == [entry["type_pixels"][t] for t in ("IRF", "SRF", "PED")]


def test_difficulty_and_min_per_class_reach_the_generators(script, tmp_path):
    gels, scans = tmp_path / "gels", tmp_path / "scans"
    args = ["ife", "--output-dir", str(gels), "--count", "60", "--size", "60", "90", "--min-per-class", "5",
            "--difficulty", "1.5"]  # fmt: skip
    assert script.main(args) == 0
    summary = json.loads((gels / "synthesis.json").read_text())
    assert summary["difficulty"] == 1.5 and summary["min_per_class"] == 5
    assert min(summary["class_counts"].values()) == 5  # the default would be min(3, 60 // 9) = 3
    assert script.main(["oct", "--output-dir", str(scans), "--count", "2", "--size", "32", "32", "--difficulty", "2"]) == 0
    assert json.loads((scans / "synthesis.json").read_text())["difficulty"] == 2.0
