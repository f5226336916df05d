"""The pieces of the papers' comparison experiments (``scripts/experiments/*_paper_tables.py``) and of the README
demo that decide what a reader sees: the metrics computed from a run's predictions, the noisy data set, the list of
cross-validations behind each table and the tables' wording. The experiments themselves take an hour on a CPU; each
step they run is a bundle command tested in ``tests/bundles``."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def _load(relative: str):
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ife_tables():
    return _load("scripts/experiments/ife_paper_tables.py")


@pytest.fixture(scope="module")
def oct_tables():
    return _load("scripts/experiments/oct_paper_tables.py")


def test_ife_metrics_from_predictions_match_a_hand_count(ife_tables, tmp_path):
    # training: kappa rarest (1), then lambda (2), then IgM-kappa (3): M1 = recall(kappa), M3 = mean of the three
    training = ["kappa"] + ["lambda"] * 2 + ["IgM-kappa"] * 3 + ["Negative"] * 10 + ["IgG-kappa"] * 5
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "x", "label": c} for c in training]}))
    minority = ife_tables.minority_classes(tmp_path)
    assert minority == ["kappa", "lambda", "IgM-kappa"]
    rows = [  # (truth, call)
        ("Negative", "Negative"), ("Negative", "Negative"), ("Negative", "IgG-kappa"),
        ("IgG-kappa", "IgG-kappa"), ("IgG-kappa", "Negative"),
        ("kappa", "kappa"), ("lambda", "Negative"), ("lambda", "lambda"), ("IgM-kappa", "IgM-kappa"),
    ]  # fmt: skip
    with open(tmp_path / "predictions.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label", "prediction"])
        writer.writerows((f"g{i}.png", truth, call) for i, (truth, call) in enumerate(rows))
    metrics = ife_tables.classification(tmp_path / "predictions.csv", minority)
    assert metrics["test_gels"] == 9
    assert metrics["accuracy"] == pytest.approx(6 / 9)
    assert metrics["fnr"] == pytest.approx(2 / 6)  # two of the six positives called Negative
    assert metrics["m1_acc"] == pytest.approx(1.0)  # kappa: 1 of 1
    assert metrics["m3_acc"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)


def test_ife_minority_classes_follow_the_generators_mix_when_topping_up_ties_the_counts(ife_tables, tmp_path):
    from custom_components.ife.synthetic import synthesize_ife_dataset

    synthesize_ife_dataset(tmp_path, count=90, seed=0, image_size=(48, 64), min_per_class=8)
    counts = json.loads((tmp_path / "synthesis.json").read_text())["class_counts"]
    assert counts["kappa"] == counts["lambda"] == counts["IgM-lambda"] == 8  # tied: counts cannot rank them
    assert ife_tables.minority_classes(tmp_path) == ["kappa", "lambda", "IgM-lambda"]  # the paper's rarest


def test_ife_settings_are_the_papers_rows_and_the_tables_name_what_differs(ife_tables):
    settings = ife_tables.SETTINGS
    rows = {"stage4_row_stride": 2}  # the baseline's stage 4 keeps the multi-task branches' rows
    assert settings["9-class baseline, horizontal attention"] == (["baseline.json"], rows)
    assert settings["9-class baseline, no attention"][1] == {**rows, "network_def#attention": False}
    assert settings["multi-task, both (the paper)"][1]["stage4_row_stride"] == 2
    paper = settings["multi-task, both (the paper)"][1]
    assert paper["lambda_inner"] > 0 and paper["lambda_inter"] > 0
    assert settings["multi-task, no regulariser"][1]["lambda_inner"] == 0.0 == settings["multi-task, no regulariser"][1]["lambda_inter"]
    assert settings["multi-task, inner KL only"][1]["lambda_inter"] == 0.0 < settings["multi-task, inner KL only"][1]["lambda_inner"]
    assert settings["multi-task, inter JS only"][1]["lambda_inner"] == 0.0 < settings["multi-task, inter JS only"][1]["lambda_inter"]
    run = {"accuracy": 0.9, "macro_f1": 0.8, "fnr": 0.1, "m1_acc": 1.0, "m3_acc": None, "train_s": 60.0,
           "seed": 0, "attention": {"attention_severe": {"peak_in_band_share": 0.5, "fixed_row_share": 0.3,
                                                         "contrast_positive": 1.2, "contrast_negative": 1.1}}}  # fmt: skip
    summary = ife_tables.summarise({"multi-task, both (the paper)": [run, {**run, "seed": 1, "accuracy": 0.8}]})
    assert summary["multi-task, both (the paper)"]["accuracy"] == pytest.approx((0.85, 0.05))
    assert summary["multi-task, both (the paper)"]["m3_acc"] is None
    meta = {"device": "cpu", "machine": "m", "command": "c", "minutes": 1.0, "data_seed": 42, "seeds": [0, 1],
            "test_support": {"Negative": 40, "kappa": 6}, "minority": ["kappa", "lambda", "IgM-lambda"],
            "sizes": {"count": 450, "gel_size": [200, 300], "difficulty": 2.0, "min_per_class": 30, "image_size": 128,
                      "max_epochs": 8, "batch_size": 32, "lane_layout": False}}  # fmt: skip
    text = ife_tables.markdown(summary, meta)
    assert "| multi-task, both (the paper) | 85.0 +- 5.0 | 80.0 +- 0.0 | 10.0 +- 0.0 | 100.0 +- 0.0 | - |" in text
    assert "95.43 / 86.68 / 8.54 / 92.31 / 76.10" in text  # the paper's row beside it
    assert "Negative 40, kappa 6" in text and "selected on the test set" in text and "raw gels, as the paper" in text
    assert "(kappa, lambda, IgM-lambda)" in text and "450 gels, 8 epochs at 128 px" in text
    assert "| multi-task, both (the paper) | severe | 50.0 +- 0.0 | 30.0 +- 0.0 |" in text


def test_oct_runs_cover_the_three_tables_once_each(oct_tables):
    runs = oct_tables.runs()
    assert len(runs) == 4 + 4 + 5  # 4 networks with Dice; 4 more losses clean; 5 losses noisy
    assert {spec["network"] for spec in runs.values() if spec["loss"] == "dice" and spec["data"] == "clean"} == set(
        oct_tables.NETWORKS
    )
    assert {spec["loss"] for spec in runs.values() if spec["data"] == "noisy"} == set(oct_tables.LOSSES)
    assert all(spec["network"] == "TransUNet" for spec in runs.values() if spec["data"] == "noisy")
    for config in filter(None, oct_tables.NETWORKS.values()):
        assert (REPO / "bundles" / "oct_fluid_seg" / "configs" / config).is_file()


def test_noisy_copy_adds_the_bundles_seeded_noise_to_images_only(oct_tables, tmp_path):
    from custom_components.oct.synthetic import synthesize_oct_dataset

    clean = synthesize_oct_dataset(tmp_path / "clean", count=3, seed=0, image_size=(64, 64)).parent
    oct_tables.write_noisy_copy(clean, tmp_path / "noisy", sigma=0.1, seed=1)
    oct_tables.write_noisy_copy(clean, tmp_path / "again", sigma=0.1, seed=1)
    assert json.loads((tmp_path / "noisy" / "datalist.json").read_text()) == json.loads((clean / "datalist.json").read_text())
    for path in sorted((clean / "images").glob("*.png")):
        original = np.asarray(Image.open(path), dtype=float)
        noisy = np.asarray(Image.open(tmp_path / "noisy" / "images" / path.name), dtype=float)
        assert noisy.shape == original.shape
        unclipped = (original > 60) & (original < 195)  # two sigma from either end of the 8-bit range
        assert np.std(noisy[unclipped] - original[unclipped]) == pytest.approx(25.5, rel=0.15)
        assert abs(np.mean(noisy[unclipped] - original[unclipped])) < 3  # zero-mean
        assert (tmp_path / "again" / "images" / path.name).read_bytes() == (tmp_path / "noisy" / "images" / path.name).read_bytes()
        mask = path.parent.parent / "masks" / path.name
        assert (tmp_path / "noisy" / "masks" / path.name).read_bytes() == mask.read_bytes()
    oct_tables.write_noisy_copy(clean, tmp_path / "noisy", sigma=0.1, seed=1)  # the same noise: kept
    with pytest.raises(SystemExit, match="was made with other noise"):
        oct_tables.write_noisy_copy(clean, tmp_path / "noisy", sigma=0.2, seed=1)


def test_a_finished_cross_validation_is_reused_only_with_the_same_overrides(oct_tables, tmp_path, monkeypatch):
    import argparse

    import bundle_runs as commands

    args = argparse.Namespace(filters=[4, 8, 16, 32, 64], learning_rate=0.001, batch_size=8, num_workers=2,
                              image_size=32, max_epochs=2, seed=42, folds=2)  # fmt: skip
    spec = {"network": "Attention U-Net", "loss": "dice", "data": "clean"}
    ran = []

    def fake_run(cmd, log, cwd=None):  # what cross_validate.py writes, from the command it was given
        ran.append(cmd)
        flags = [cmd[i + 1 : i + 3] for i, a in enumerate(cmd) if a == "--override"]
        recorded = {k: v for k, v in flags} | {"image_size": cmd[cmd.index("--image-size") + 1],
                                               "max_epochs": cmd[cmd.index("--max-epochs") + 1]}  # fmt: skip
        configs = ["train.json"] + [cmd[i + 1] for i, a in enumerate(cmd) if a == "--config"]
        out = Path(cmd[cmd.index("--output-dir") + 1])
        (out / "cross_validation.json").write_text(json.dumps(
            {"overrides": recorded, "configs": configs, "seed": 42, "folds": 2, "folds_done": 2, "mean": {}}))

    monkeypatch.setattr(commands, "run_logged", fake_run)
    first = oct_tables.cross_validate("Attention U-Net, dice, clean", spec, tmp_path / "data", tmp_path, args)
    assert len(ran) == 1 and first["configs"] == ["train.json", "networks/attention_unet.json"]
    assert first["overrides"]["loss_name"] == "dice" and first["overrides"]["filters"] == "[4,8,16,32,64]"
    oct_tables.cross_validate("Attention U-Net, dice, clean", spec, tmp_path / "data", tmp_path, args)
    assert len(ran) == 1  # reused
    args.max_epochs = 3
    oct_tables.cross_validate("Attention U-Net, dice, clean", spec, tmp_path / "data", tmp_path, args)
    assert len(ran) == 2  # other epochs: run again


def test_oct_tables_name_the_models_as_they_are(oct_tables):
    cell = {"mean": 0.5, "std": 0.1}
    results = {name: {"dice": cell, "jaccard": cell, "noisy_dice": cell} for name in oct_tables.runs()}
    meta = {"device": "cpu", "machine": "m", "command": "c", "minutes": 1.0, "seed": 42, "pool": 128,
            "parameters": {n: "1.00 M" for n in oct_tables.NETWORKS}, "curves": "curves.png",
            "sizes": {"count": 160, "image_size": 96, "difficulty": 1.0, "folds": 5, "filters": [16, 32, 64, 128, 256],
                      "max_epochs": 15, "learning_rate": 0.001, "batch_size": 8, "noise_sigma": 0.1}}  # fmt: skip
    text = oct_tables.markdown(results, meta)
    assert "| SwinUNETR (not Swin-Unet) | 1.00 M | 50.0 +- 10.0 | 50.0 +- 10.0 | 65.60 | 77.60 |" in text
    assert "R2U-Net and UNet3+ (the paper's other rows) are not provided." in text
    assert "| combined (the paper's) | 50.0 +- 10.0 |" in text and "Trained clean, tested noisy" in text


def test_demo_prints_each_class_recall_beside_its_test_count(tmp_path, capsys):
    demo = _load("scripts/demo.py")
    report = {"per_class_recall": {"Negative": 0.95, "kappa": None}, "support": {"Negative": 40, "kappa": 0}}
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    demo._print_per_class(tmp_path / "metrics.json")
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["Negative", "40", "0.9500"] and lines[2].split() == ["kappa", "0", "-"]
