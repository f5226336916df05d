# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Tests of custom_components.oct.bundle (what the oct_fluid_seg configs call) and of the loss it trains with."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from PIL import Image

from custom_components.oct import bundle
from custom_components.oct.bundle import (
    RECIPE_DEFAULTS,
    inference_datalist,
    log_evaluation_metrics,
    log_evaluation_start,
    log_inference_outputs,
    log_inference_start,
    log_training_data,
)

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "oct_fluid_seg" / "configs"


def _messages(caplog):
    return [(r.name, r.levelname, r.getMessage()) for r in caplog.records]


def test_recipe_defaults():
    assert RECIPE_DEFAULTS == {"image_size": 512, "geometry": "resize", "filters": [64, 128, 256, 512, 1024],
                               "patch_size": 1, "embed_dim": 96, "training_aspect": None,
                               "fluid_classes": ["fluid"]}  # fmt: skip


def test_inference_datalist_reads_input_dir_without_making_the_demo(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("L", (32, 24), 60).save(tmp_path / name)
    demo = tmp_path / "demo"
    entries = inference_datalist(str(tmp_path), demo, 4, 0, 32, "testing", tmp_path / "skipped.csv", False)
    assert sorted(Path(e["image"]).name for e in entries) == ["a.png", "b.png"]
    assert not demo.exists() and (tmp_path / "skipped.csv").is_file()


def test_inference_datalist_makes_the_demo_without_input_dir(tmp_path):
    entries = inference_datalist(None, tmp_path / "demo", 4, 0, 32, "training", None, False)
    assert entries and all(Path(e["image"]).is_file() for e in entries)
    assert (tmp_path / "demo" / "datalist.json").is_file()


def test_messages(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="oct_fluid_seg"):
        log_training_data("d.json", [1, 2], [3], "native", 96)
        log_inference_start([1, 2, 3], "m.pt", None, "resize", 96)
        log_inference_start([1], "m.pt", "m.onnx", "resize", 96)
        log_inference_outputs("out", True)
        log_inference_outputs("out", False)
        log_evaluation_start("m.pt", "resize", 96, [1, 2], "testing", "d.json")
        log_evaluation_metrics(0.1, "out/metrics.json")
        monkeypatch.setattr(bundle, "is_not_rank0", lambda: True)
        log_evaluation_metrics(0.1, "out/metrics.json")
    assert [m for _, _, m in _messages(caplog)] == [
        "datalist d.json: 2 training and 1 validation B-scans, native geometry at 96 px",
        "segmenting 3 inputs with m.pt (resize geometry at 96 px)",
        "segmenting 1 inputs with m.onnx (resize geometry at 96 px)",
        "masks, overlays, fluid_measurements.csv, fluid_report.csv and reports/ in out",
        "masks, overlays, fluid_measurements.csv in out",
        "evaluating m.pt (resize geometry at 96 px) on 2 B-scans of section 'testing' of d.json",
        "metrics (clean and noisy, sigma 0.1): out/metrics.json; per-scan tables beside it",
    ]
    assert {name for name, _, _ in _messages(caplog)} == {"oct_fluid_seg"}


def test_train_json_trains_with_the_loss_class_defaults():
    """FluidSegLoss's defaults are what the bundle ships: train.json names the combined loss and nothing else."""
    train = json.loads((CONFIGS / "train.json").read_text())
    assert train["loss"] == {"_target_": "custom_components.oct.losses.fluid_loss", "name": "@loss_name"}
    assert train["loss_name"] == "combined"
