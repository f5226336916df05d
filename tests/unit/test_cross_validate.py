"""scripts/cross_validate.py end to end on a tiny synthetic set: 2 folds x 1 epoch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from custom_components.data.synthetic.oct import synthesize_oct_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cross_validate.py"


@pytest.mark.slow
def test_two_fold_cross_validation_writes_per_fold_and_mean_scores(tmp_path):
    datalist = synthesize_oct_dataset(tmp_path / "data", count=10, seed=0, image_size=(32, 32))
    pooled = json.loads(datalist.read_text())
    n_pool = len(pooled["training"]) + len(pooled["validation"])
    out = tmp_path / "cv"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset-dir", str(tmp_path / "data"), "--folds", "2", "--max-epochs", "1",
         "--image-size", "32", "--output-dir", str(out), "--override", "filters", "[4,8,16,32,64]",
         "--override", "num_workers", "0", "--override", "batch_size", "4", "--override", "save_overlays", "false"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    summary = json.loads((out / "cross_validation.json").read_text())
    folds = summary["per_fold"]
    assert [f["fold"] for f in folds] == [0, 1]
    assert sum(f["held_out"] for f in folds) == n_pool  # every pooled B-scan held out exactly once
    held = [e["image"] for k in range(2) for e in json.loads((out / f"fold_{k}" / "datalist.json").read_text())["testing"]]
    assert len(set(held)) == n_pool
    test_images = {str(tmp_path / "data" / e["image"]) for e in pooled["testing"]}
    assert not test_images & set(held)  # the datalist's own test split is never used
    mean_dice = sum(f["dice"] for f in folds) / 2
    assert summary["mean"]["dice"]["mean"] == pytest.approx(mean_dice)
    rows = list(csv.DictReader(open(out / "cross_validation.csv")))
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "std"]
    assert "Dice" in result.stdout and "fold 2/2" in result.stdout


def test_bad_fold_count_is_reported(tmp_path):
    synthesize_oct_dataset(tmp_path / "data", count=4, seed=0, image_size=(32, 32))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--dataset-dir", str(tmp_path / "data"), "--folds", "1", "--output-dir", str(tmp_path / "cv")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0 and "folds must be in" in result.stderr
