# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The IFE fold ensemble as a user runs it: ``python -m monai.bundle run`` with ``inference.json`` +
``ensemble_inference.json`` on two tiny fold checkpoints, checked against single-model inference with each fold.

The fold checkpoints are two narrow networks of different seeds with their recipes, written directly (what training
writes, without training: the ensemble's arithmetic does not care whether the weights are good). The gels are a
dozen small synthetic ones.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from custom_components.ife.calibration.record import write_calibration
from custom_components.core.recipe import write_recipe
from custom_components.ife.synthetic import synthesize_ife_dataset
from custom_components.ife.classes import IFE_CLASSES
from custom_components.ife.referral import LOW_CONFIDENCE, refer_decisions
from custom_components.ife.networks import MultiTaskIFEResNet

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "ife_multitask"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
SETTINGS = {"image_size": 64, "channels": [8, 16, 32, 64], "stage4_row_stride": 1}

def _read_predictions(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as f:
        return {row["image"]: np.array([float(row[f"p_{c}"]) for c in IFE_CLASSES]) for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """An ensemble folder with two fold checkpoints (+ recipes) and ensemble.json, and a dozen gels."""
    root = tmp_path_factory.mktemp("ife_ensemble")
    data = root / "data"
    synthesize_ife_dataset(data, count=12, seed=0, image_size=(64, 96))
    ensemble = root / "bundle" / "models" / "ensemble"
    for k in range(2):
        torch.manual_seed(k)
        network = MultiTaskIFEResNet(
            in_channels=3, shared_stages=3, attention=True, channels=SETTINGS["channels"], stage4_row_stride=1
        )
        checkpoint = ensemble / f"fold_{k}" / "models" / "model.pt"
        checkpoint.parent.mkdir(parents=True)
        torch.save(network.state_dict(), checkpoint)
        write_recipe(checkpoint, SETTINGS, network)
    point = {"positive_threshold": 0.3, "confidence_threshold": 0.9}
    record = {"checkpoints": [f"fold_{k}/models/model.pt" for k in range(2)], "operating_point": point}
    (ensemble / "ensemble.json").write_text(json.dumps(record))
    return {"root": root, "data": data, "bundle_root": root / "bundle", "ensemble": ensemble, "point": point}


def _infer(config_file, bundle_root: Path, data: Path, out: Path) -> None:
    """Inference in this process, as ``monai.bundle run`` would run it, on the dataset's training gels."""
    workflow = ConfigWorkflow(
        config_file=config_file, meta_file=META, logging_file=LOGGING, workflow_type="infer",
        bundle_root=str(bundle_root), dataset_dir=str(data), output_dir=str(out), num_workers=0, save_figures=False,
        datalist_section="training",
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def test_ensemble_inference_writes_the_mean_of_the_folds_predictions(folds, tmp_path):
    out = tmp_path / "ensemble_out"
    config = f"['{CONFIGS / 'inference.json'}','{CONFIGS / 'ensemble_inference.json'}']"
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "--config_file", config, "--meta_file", META,
        "--logging_file", LOGGING, "--bundle_root", str(folds["bundle_root"]), "--dataset_dir", str(folds["data"]),
        "--output_dir", str(out), "--num_workers", "0", "--save_figures", "False", "--datalist_section", "training",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # the ensemble's members, found through ensemble.json in the default ensemble_dir (bundle_root/models/ensemble)
    assert "with the mean of 2 fold models" in result.stdout + result.stderr
    ensemble = _read_predictions(out / "predictions.csv")
    training = json.loads((folds["data"] / "datalist.json").read_text())["training"]
    assert len(ensemble) == len(training) == 12  # a dozen gels are all training gels (small classes stay there)

    # each fold alone, through the plain inference config (its own checkpoint loader)
    singles = []
    for k in range(2):
        fold_out = tmp_path / f"fold_{k}"
        _infer(str(CONFIGS / "inference.json"), folds["ensemble"] / f"fold_{k}", folds["data"], fold_out)
        singles.append(_read_predictions(fold_out / "predictions.csv"))
    for image, probabilities in ensemble.items():
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        # the mean of the members' probabilities (to the CSV's 6 decimals); the members differ, so it is neither
        assert probabilities == pytest.approx((singles[0][image] + singles[1][image]) / 2, abs=2e-6)
    assert any(np.abs(singles[0][i] - singles[1][i]).max() > 1e-3 for i in ensemble)
    with open(out / "predictions.csv", newline="") as f:  # the members have no calibration records
        assert {row["calibrated"] for row in csv.DictReader(f)} == {"false"}


def test_calibrated_ensemble_refers_at_the_operating_point_of_ensemble_json(folds, tmp_path):
    """Members with calibration records and an operating point in ensemble.json: ``calibrated`` is true and the
    refer decisions follow the point (a confidence threshold of 1.0 refers every gel for low confidence)."""
    bundle_root = tmp_path / "bundle"
    shutil.copytree(folds["bundle_root"], bundle_root)
    ensemble = bundle_root / "models" / "ensemble"
    for k, t in enumerate(({"severe": 2.0, "mild": 0.5}, {"severe": 1.5, "mild": 3.0})):
        write_calibration(ensemble / f"fold_{k}" / "models" / "model.pt", {"temperatures": t, "operating_point": None})
    point = {"positive_threshold": 0.5, "confidence_threshold": 1.0}
    record = json.loads((ensemble / "ensemble.json").read_text())
    (ensemble / "ensemble.json").write_text(json.dumps({**record, "operating_point": point}))
    out = tmp_path / "out"
    _infer([str(CONFIGS / "inference.json"), str(CONFIGS / "ensemble_inference.json")], bundle_root, folds["data"], out)
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {row["calibrated"] for row in rows} == {"true"}
    probabilities = torch.tensor([[float(row[f"p_{c}"]) for c in IFE_CLASSES] for row in rows], dtype=torch.float64)
    calls = [IFE_CLASSES.index(row["prediction"]) for row in rows]
    expected = refer_decisions(probabilities, point, calls=calls)  # without the band-pattern detector's reasons
    for row, (refer, reason) in zip(rows, expected):
        assert row["refer"] == "true" and refer
        assert row["refer_reason"].startswith(reason) and reason.startswith(LOW_CONFIDENCE)
    # the calibrated mean differs from the uncalibrated one of the fixture's folds
    _infer([str(CONFIGS / "inference.json"), str(CONFIGS / "ensemble_inference.json")], folds["bundle_root"],
           folds["data"], tmp_path / "uncalibrated")  # fmt: skip
    uncalibrated = _read_predictions(tmp_path / "uncalibrated" / "predictions.csv")
    calibrated = _read_predictions(out / "predictions.csv")
    assert any(np.abs(calibrated[i] - uncalibrated[i]).max() > 1e-3 for i in calibrated)


def test_ensemble_config_ids(folds):
    """What the merged config resolves to, in this process: the members, the operating point of ensemble.json, and
    the evaluator's network (the single checkpoint loader is not part of initialize)."""
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.json"), str(CONFIGS / "ensemble_inference.json")], meta_file=META,
        logging_file=LOGGING, workflow_type="infer", bundle_root=str(folds["bundle_root"]),
        dataset_dir=str(folds["data"]), num_workers=0, datalist_section="training",
    )  # fmt: skip
    workflow.initialize()
    assert workflow.check_properties() == []
    parser = workflow.parser
    members = [str(folds["ensemble"] / f"fold_{k}" / "models" / "model.pt") for k in range(2)]
    assert parser.get_parsed_content("ensemble_checkpoints") == members
    assert parser.get_parsed_content("operating_point") == folds["point"]
    assert parser.get_parsed_content("image_size") == 64  # from the first member's recipe
    network = parser.get_parsed_content("evaluator").network
    assert type(network).__name__ == "ProbabilityEnsemble" and len(network.members) == 2
    assert not any("checkpointloader" in str(step) for step in parser.get("initialize"))
    # the calibrated column is the ensemble's (every member calibrated), not the first member's record; members here
    # have none
    writer = parser.get_parsed_content("handlers")[1]
    assert type(writer).__name__ == "IFEPredictionWriter" and writer.calibrated is False
    assert parser.get_parsed_content("calibrated") is False


def test_calibrated_column_needs_every_member_calibrated(folds, tmp_path):
    """Only the first member calibrated: its record gives ``temperatures`` (what ``inference.json``'s ``calibrated``
    column would follow), but the ensemble, with an uncalibrated member, is not calibrated."""
    bundle_root = tmp_path / "bundle"
    shutil.copytree(folds["bundle_root"], bundle_root)
    write_calibration(bundle_root / "models" / "ensemble" / "fold_0" / "models" / "model.pt",
                      {"temperatures": {"severe": 2.0, "mild": 0.5}})  # fmt: skip
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / "inference.json"), str(CONFIGS / "ensemble_inference.json")], meta_file=META,
        logging_file=LOGGING, workflow_type="infer", bundle_root=str(bundle_root), dataset_dir=str(folds["data"]),
        num_workers=0, datalist_section="training",
    )  # fmt: skip
    workflow.initialize()
    parser = workflow.parser
    assert parser.get_parsed_content("temperatures") == {"severe": 2.0, "mild": 0.5}
    assert parser.get_parsed_content("handlers")[1].calibrated is False
