# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""``scripts/benchmark.py`` runs both bundles' own configs end to end and writes what it printed to JSON.

The figures themselves are not asserted (speed is measured, never tested): only that every measurement ran on the
configs users run, on the images it says, and that the ONNX export it times computes what PyTorch computes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "benchmark.py"
MEASUREMENTS = ("train_model_alone", "train_bundle", "infer_model_alone", "infer_bundle")


def test_benchmark_measures_both_bundles_and_writes_json(tmp_path):
    out = tmp_path / "benchmark.json"
    cmd = [
        sys.executable, str(SCRIPT), "--small", "--image-size", "32", "--batch-size", "4", "--steps", "2",
        "--warmup", "1", "--num-workers", "0", "--onnx", "--override", "log_interval", "1", "--json", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["machine"]["device"] == "cpu" and report["machine"]["cpu_cores"] >= 1
    assert report["command"].startswith("benchmark.py --small") and report["steps"] == 2
    assert [b["bundle"] for b in report["bundles"]] == ["ife_multitask", "oct_fluid_seg"]
    for bundle in report["bundles"]:
        assert all(bundle[m]["images_per_s"] > 0 and bundle[m]["peak_gpu_gib"] is None for m in MEASUREMENTS)
        # the trainer of train.json with the overrides asked for, on the CPU (where the GPU switches are off)
        assert bundle["train_overrides"]["log_interval"] == 1 and bundle["image_size"] == 32
        assert bundle["train_settings"]["amp"] is False and bundle["train_settings"]["channels_last"] is False
        assert bundle["infer_bundle"]["images"] > 0
        onnx = bundle["infer_onnxruntime"]
        assert onnx["onnx_images_per_s"] > 0 and onnx["max_abs_diff"] < 1e-4
        assert f"{bundle['bundle']}: 32 px" in result.stdout
    assert result.stdout.count("of model") == 2 and "wrote" in result.stdout
