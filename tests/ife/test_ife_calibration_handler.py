# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Tests of custom_components.ife.calibration.handler: post-training calibration of a checkpoint."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from ignite.engine import Engine

from custom_components.ife.calibration.record import read_calibration
from custom_components.core.recipe import CheckpointMismatchError
from custom_components.ife.calibration.handler import (
    IFECalibrator,
    calibrate_checkpoint,
    checked_split,
    split_settings,
)
from custom_components.ife.networks import IFEResNet, MultiTaskIFEResNet

NARROW = (8, 16, 32, 64)


def _data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 9  # every class, Negative included
    return [{"image": torch.rand(3, 32, 32, generator=g), "label": int(label)} for label in labels]


@pytest.mark.parametrize("kind", ["multitask", "nine_class"])
def test_calibrate_checkpoint_writes_the_record(kind, tmp_path):
    torch.manual_seed(0)
    net = MultiTaskIFEResNet(channels=NARROW) if kind == "multitask" else IFEResNet(channels=NARROW, num_classes=9)
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    torch.save(net.state_dict(), checkpoint)
    loader = torch.utils.data.DataLoader(_data(), batch_size=5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    record = calibrate_checkpoint(net, checkpoint, loader, device="cpu", target_sensitivity=0.9, target_coverage=0.5)
    stored = read_calibration(checkpoint)
    assert {k: stored[k] for k in record} == record and stored["checkpoint"] == "model.pt"
    assert set(record["temperatures"]) == ({"severe", "mild"} if kind == "multitask" else {"classes"})
    assert record["fitted_on"] == {"section": "validation", "count": 12}
    assert record["nll_after"] <= record["nll_before"] + 1e-9  # the fit minimises the NLL (of each head)
    point = record["operating_point"]
    assert point["screening_sensitivity"] >= 0.9 and point["positives"] == 10 and point["count"] == 12
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())  # the network itself is untouched


def test_calibrator_skips_a_missing_checkpoint_and_raises_on_bad_arguments(tmp_path, caplog):
    net = MultiTaskIFEResNet(channels=NARROW)
    calibrator = IFECalibrator(net, tmp_path / "model.pt", _data(3))
    engine = Engine(lambda e, b: None)
    calibrator.attach(engine)
    with caplog.at_level(logging.WARNING):
        engine.run([0], max_epochs=1)  # COMPLETED: nothing to calibrate
    assert "does not exist" in caplog.text and calibrator.record is None
    disabled = Engine(lambda e, b: None)
    IFECalibrator(net, tmp_path / "model.pt", _data(3), enabled=False).attach(disabled)
    assert not disabled.has_event_handler(calibrator)
    with pytest.raises(ValueError, match="target_sensitivity"):
        IFECalibrator(net, tmp_path / "model.pt", _data(3), target_sensitivity=0)
    with pytest.raises(ValueError, match="batch_size"):
        IFECalibrator(net, tmp_path / "model.pt", _data(3), batch_size=0)


def test_calibrator_raises_after_the_barrier_when_calibration_fails(tmp_path):
    net = MultiTaskIFEResNet(channels=NARROW)
    checkpoint = tmp_path / "model.pt"
    torch.save({"not": torch.zeros(1)}, checkpoint)  # weights of another network
    with pytest.raises(CheckpointMismatchError, match=r"model\.pt does not fit the network"):
        IFECalibrator(net, checkpoint, _data(3))()
    assert read_calibration(checkpoint) is None


def test_recalibration_refuses_a_validation_split_other_than_trainings(tmp_path):
    net = MultiTaskIFEResNet(channels=NARROW)
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    torch.save(net.state_dict(), checkpoint)
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": [{"image": "a.png", "label": 0}]}))
    trained = split_settings(datalist, seed=0, val_fraction=0.2)
    assert trained == {"validation": "split", "seed": 0, "val_fraction": 0.2}
    current = split_settings(datalist, 42, 0.2)
    assert checked_split(checkpoint, current) == current  # no record yet: nothing to compare
    loader = torch.utils.data.DataLoader(_data(), batch_size=6)
    IFECalibrator(net, checkpoint, _data(), split=trained, device="cpu").calibrate()  # as training does
    assert read_calibration(checkpoint)["fitted_on"]["split"] == trained
    assert checked_split(checkpoint, split_settings(datalist, 0, 0.2)) == trained  # the same split: proceed
    message = (r"seed=42, val_fraction=0.3: it was trained with the split of seed=0, val_fraction=0.2 .*"
               r"Run with --seed 0 --val_fraction 0.2")  # fmt: skip
    with pytest.raises(ValueError, match=message):
        checked_split(checkpoint, split_settings(datalist, 42, 0.3))
    # another section is held out whatever the seed: allowed, and the record keeps training's split
    assert checked_split(checkpoint, split_settings(datalist, 42, 0.3), section="testing") == trained
    record = calibrate_checkpoint(net, checkpoint, loader, "cpu", section="testing", split=trained)
    assert record["fitted_on"] == {"section": "testing", "count": 12, "split": trained}
    # a datalist with its own validation list: seed and val_fraction do not choose the gels
    datalist.write_text(json.dumps({"training": [{"image": "a.png", "label": 0}], "validation": [{"image": "b.png"}]}))
    assert split_settings(datalist, 42, 0.3)["validation"] == "datalist"
    assert checked_split(checkpoint, split_settings(datalist, 42, 0.3)) == trained  # no refusal
