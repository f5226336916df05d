# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Tests of custom_components.ife.bundle (what the ife_multitask configs call) and of the loss settings the
configs name."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from custom_components.core.datalist import DatalistError
from custom_components.ife import bundle
from custom_components.ife.bundle import (
    GEOMETRY_KEYS,
    RECIPE_DEFAULTS,
    calibration_datalist,
    inference_datalist,
    log_calibration_file,
    log_calibration_start,
    log_ensemble_start,
    log_evaluation_start,
    log_inference_start,
    log_training_data,
    onnx_runtime_network,
    training_minority_classes,
    validate_ife_datalist,
)
from custom_components.ife.classes import class_index
from custom_components.ife.losses import CLASS_EVIDENCE_LOSS_SETTINGS, PAPER_LOSS_SETTINGS, MultiTaskIFELoss

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "ife_multitask" / "configs"


def _datalist(tmp_path, training, testing=()):
    """A datalist of small RGB images: ``training`` and ``testing`` are lists of class names."""
    sections = {}
    for section, labels in (("training", training), ("testing", testing)):
        entries = []
        for n, label in enumerate(labels):
            name = f"{section}_{n}.png"
            Image.new("RGB", (24, 24), (n * 10 % 255, 40, 90)).save(tmp_path / name)
            entries.append({"image": name, "label": label})
        sections[section] = entries
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(sections))
    return str(path)


def _messages(caplog):
    return [(r.name, r.levelname, r.getMessage()) for r in caplog.records]


def test_recipe_defaults_and_geometry_keys():
    assert RECIPE_DEFAULTS == {"image_size": 224, "lane_layout": False, "lane_orientation": "albumin_bottom",
                               "channels": [64, 128, 256, 512], "stage4_row_stride": 2,
                               "tie_attention": False}  # fmt: skip
    assert GEOMETRY_KEYS == ("image_size", "lane_layout")


def test_training_minority_classes_come_from_the_training_section(tmp_path):
    datalist = _datalist(tmp_path, ["Negative"] * 3 + ["kappa"] * 2 + ["IgG-kappa"], testing=["lambda"])
    assert training_minority_classes(datalist) == [class_index("IgG-kappa"), class_index("kappa"), 0]
    assert training_minority_classes(datalist, k=1) == [class_index("IgG-kappa")]


def test_validate_ife_datalist_checks_class_names(tmp_path):
    good = _datalist(tmp_path, ["Negative", "kappa"], testing=["lambda"])
    assert validate_ife_datalist(good) == good
    assert validate_ife_datalist(good, "testing", decode=True) == good
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": [{"image": "training_0.png", "label": "IgX"}]}))
    with pytest.raises(DatalistError, match="IgX"):
        validate_ife_datalist(str(bad))


def test_calibration_datalist_uses_the_validation_split_or_a_section(tmp_path):
    datalist = _datalist(tmp_path, ["Negative"], testing=["kappa", "lambda"])
    split = [{"image": "a.png", "label": "kappa"}]
    assert calibration_datalist(datalist, "validation", split) is split
    assert [e["label"] for e in calibration_datalist(datalist, "testing", split)] == ["kappa", "lambda"]


def test_inference_datalist_reads_input_dir_without_making_the_demo(tmp_path):
    datalist = _datalist(tmp_path, ["Negative"], testing=["kappa", "lambda"])
    demo = tmp_path / "demo"
    entries = inference_datalist(datalist, demo, 5, 0, "testing", tmp_path / "skipped.csv", False)
    assert [e["label"] for e in entries] == ["kappa", "lambda"]
    assert not demo.exists() and (tmp_path / "skipped.csv").is_file()
    folder = inference_datalist(str(tmp_path), demo, 5, 0, "testing", None, False)
    assert {e["label"] for e in folder} == {""}  # a folder has no labels: the CSV column stays a string


def test_onnx_runtime_network_is_none_without_a_file():
    assert onnx_runtime_network(None, "cpu", 0, None, True) is None


def test_training_and_calibration_messages(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="ife_multitask"):
        log_training_data("d.json", [1, 2, 3], [4])
        log_calibration_file("models/model.pt", True)
        log_calibration_file("models/model.pt", False)
        monkeypatch.setattr(bundle, "is_not_rank0", lambda: True)
        log_calibration_file("models/model.pt", True)
        log_calibration_start("models/model.pt", 64, [1, 2], "validation", "d.json")
    assert _messages(caplog) == [
        ("ife_multitask", "INFO", "datalist d.json: 3 training and 1 validation images"),
        ("ife_multitask", "INFO", "calibration (temperatures, refer-to-expert operating point): "
         "models/model.calibration.json"),
        ("ife_multitask", "INFO", "calibrating models/model.pt (64 px) on 2 images of section 'validation' of d.json"),
    ]  # fmt: skip


def test_evaluation_messages_warn_without_calibration(caplog):
    with caplog.at_level(logging.INFO, logger="ife_multitask"):
        log_evaluation_start("m.pt", 64, [1], "testing", "d.json", {"temperatures": {}})
        log_evaluation_start("m.pt", 64, [1], "testing", "d.json", None)
    messages = _messages(caplog)
    assert messages[0] == messages[1] == (
        "ife_multitask", "INFO", "evaluating m.pt (64 px) on 1 images of section 'testing' of d.json"
    )
    assert messages[2][1] == "WARNING" and messages[2][2].startswith("m.pt has no calibration record (m.calibration")
    assert len(messages) == 3


def test_inference_messages(caplog):
    with caplog.at_level(logging.INFO, logger="ife_multitask"):
        log_inference_start("m.pt", True, None, [1, 2], 64, None)
        log_inference_start("m.pt", False, None, [1], 64, "m.onnx")
        log_ensemble_start([1, 2, 3], 64, ["a.pt", "b.pt"])
    levels_and_starts = [(level, message[:40]) for _, level, message in _messages(caplog)]
    assert levels_and_starts == [
        ("WARNING", "m.pt: no calibration record (m.calibrati"),
        ("INFO", "inference on 2 images at 64 px with m.pt"),
        ("INFO", "inference on 1 images at 64 px with m.on"),
        ("INFO", "onnxruntime runs m.onnx: predictions wit"),
        ("INFO", "inference on 3 images at 64 px with the "),
    ]
    assert _messages(caplog)[-1][2].endswith("the mean of 2 fold models: a.pt, b.pt")


def _loss_settings(config: dict) -> dict:
    """The MultiTaskIFELoss arguments a config sets, by the loss's argument names."""
    names = {"distribution": "attention_distribution"}
    return {arg: config[names.get(arg, arg)] for arg in PAPER_LOSS_SETTINGS}


def test_the_named_loss_settings_are_the_configs_and_the_class_defaults():
    train = json.loads((CONFIGS / "train.json").read_text())
    paper = {**train, **json.loads((CONFIGS / "paper_attention.json").read_text())}
    evidence = {**train, **json.loads((CONFIGS / "class_evidence_attention.json").read_text())}
    # the default is the paper's setting without its regularisers (what measured best on real gels)
    assert _loss_settings(train) == {**PAPER_LOSS_SETTINGS, "lambda_inner": 0.0, "lambda_inter": 0.0}
    assert _loss_settings(paper) == PAPER_LOSS_SETTINGS
    assert _loss_settings(evidence) == CLASS_EVIDENCE_LOSS_SETTINGS
    default = MultiTaskIFELoss()
    assert (default.lambda_inner, default.lambda_inter, default.inner_target) == (0.3, 0.3, "sharpened")
    MultiTaskIFELoss(**CLASS_EVIDENCE_LOSS_SETTINGS)  # a valid combination


def test_the_default_network_is_the_papers_and_the_attention_configs_restate_every_id():
    """train.json builds the paper's network (tied attention, the authors' initialisation, stage 4 halving the rows),
    and paper_attention.json and class_evidence_attention.json each set the same ids, so either restores its
    setting whatever the default."""
    train = json.loads((CONFIGS / "train.json").read_text())
    network = train["network_def"]
    assert (network["init"], train["tie_attention"], train["stage4_row_stride"]) == ("authors", True, 2)
    paper = json.loads((CONFIGS / "paper_attention.json").read_text())
    evidence = json.loads((CONFIGS / "class_evidence_attention.json").read_text())
    assert set(paper) == set(evidence)
    for key, value in paper.items():
        default = network[key.split("#", 1)[1]] if key.startswith("network_def#") else train[key]
        assert value == default or key in ("lambda_inner", "lambda_inter"), key
