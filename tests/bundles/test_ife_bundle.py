# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Real runs of the ``bundles/ife_multitask`` workflows on a tiny synthetic set, on the CPU.

Zoo-style, in this process: ``ConfigWorkflow`` (initialize, check_properties, run, finalize) for train / evaluate /
inference, MONAI's ``verify_net_in_out`` and ``ckpt_export`` functions (what ``python -m monai.bundle`` calls). A
second interpreter costs 10-20 s of imports and is kept only where the process is what is tested: DDP under
``torchrun`` (which also parses a ``python -m monai.bundle run`` command line). ``tests/conftest.py`` restores what a
workflow changes process-wide (logging.conf, set_determinism, cwd). 64 px images, about 40 gels, 1-2 epochs, and a
narrow network (stage widths 8-64 instead of ResNet18's 64-512, the same blocks and attention).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out
from PIL import Image

from custom_components.core.recipe import weights_sha256
from custom_components.ife.calibration.record import read_calibration
from custom_components.ife.synthetic import render_gel
from custom_components.ife.classes import IFE_CLASSES
from custom_components.ife.referral import REFER_REASONS
from custom_components.ife.calibration.temperature import temper_probabilities

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "ife_multitask"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
NARROW = [8, 16, 32, 64]
#: a narrow network for training runs; the checkpoint's recipe records the widths, so inference, evaluation and
#: export rebuild it without being told
SMALL = {
    "image_size": 64, "channels": NARROW, "batch_size": 8, "num_workers": 0, "cache_rate": 0.0, "synthetic_count": 40,
    "seed": 0,
}  # fmt: skip


def _configs(*names: str) -> list[str]:
    return [str(CONFIGS / n) for n in names]


def _workflow(names, workflow_type, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=_configs(*names), meta_file=META, logging_file=LOGGING, workflow_type=workflow_type, **override
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    return workflow


def _error_messages(error: BaseException) -> list[str]:
    """The messages of an error and of its causes (the config parser wraps what a config expression raises)."""
    messages = []
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    return messages


def _datalist(dataset_dir: Path) -> dict:
    with open(dataset_dir / "datalist.json") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Train 2 epochs on the embedded synthetic default, written on first use into an empty dataset_dir."""
    root = tmp_path_factory.mktemp("ife_bundle")
    dataset_dir = root / "data"
    override = {"bundle_root": str(root), "dataset_dir": str(dataset_dir), "max_epochs": 2, **SMALL}
    _workflow(["train.json"], "train", **override)
    train_record = read_calibration(root / "models" / "model.pt")
    # the 40-gel set's validation split is one Negative gel: no sensitivity to aim at, so training stored no operating
    # point; recalibrate on the testing section (11 gels, most positive) so that evaluation and inference have one
    # (fitting on the evaluated gels only checks the plumbing here, never do it for numbers)
    _workflow(["train.json", "calibrate.json"], "train", **override, calibrate_section="testing")
    return {"root": root, "dataset_dir": dataset_dir, "override": override, "train_record": train_record}


def test_train_outputs(trained):
    root = trained["root"]
    assert (trained["dataset_dir"] / "datalist.json").is_file()  # the synthetic default was generated
    model = torch.load(root / "models" / "model.pt", weights_only=True)
    # a bare state_dict of the network, of the narrow widths asked for
    assert model["severe_head.weight"].shape == (4, 64) and model["mild_head.weight"].shape == (3, 64)
    assert model["stem.0.weight"].shape == (8, 3, 7, 7)
    recipe = json.loads((root / "models" / "model.recipe.json").read_text())
    # the call rule follows from the network class
    assert recipe["settings"] == {
        "image_size": 64, "channels": NARROW, "stage4_row_stride": 2, "tie_attention": True, "lane_layout": True,
        "lane_orientation": "albumin_bottom",
    }
    assert recipe["network"] == "custom_components.ife.networks.MultiTaskIFEResNet"
    state = torch.load(root / "models" / "checkpoint.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "random_states", "grad_scaler"}
    iterations_per_epoch = state["trainer"]["epoch_length"]
    assert state["trainer"]["iteration"] == 2 * iterations_per_epoch
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(root / "eval"))


def test_training_calibrates_the_best_checkpoint(trained):
    """train.json's IFECalibrator: temperatures per head fitted on every validation gel after training, stored beside
    the best model with the hash of its weights; no operating point when the validation gels hold no positive."""
    root = trained["root"]
    record = trained["train_record"]
    assert record["checkpoint"] == "model.pt"
    assert record["weights_sha256"] == weights_sha256(root / "models" / "model.pt")  # not stale
    assert set(record["temperatures"]) == {"severe", "mild"} and all(t > 0 for t in record["temperatures"].values())
    validation = _datalist(trained["dataset_dir"])["validation"]
    # the datalist has its own validation list: seed and val_fraction did not choose the gels (recorded all the same)
    split = {"validation": "datalist", "seed": 0, "val_fraction": 0.2}
    assert record["fitted_on"] == {"section": "validation", "count": len(validation), "split": split}
    assert all(np.isfinite(record[k]) for k in ("ece_before", "ece_after", "nll_before", "nll_after"))
    assert [e["label"] for e in validation] == ["Negative"] and record["operating_point"] is None


def test_calibrate_config_refits_an_existing_checkpoint(trained, tmp_path):
    """configs/calibrate.json: the fixture's recalibration on the testing section (an operating point at the target
    sensitivity), and a recalibration on the validation split that reproduces training's record."""
    root = trained["root"]
    record = read_calibration(root / "models" / "model.pt")
    testing = _datalist(trained["dataset_dir"])["testing"]
    # the record keeps how training chose its validation gels, for a later recalibration on them
    split = trained["train_record"]["fitted_on"]["split"]
    assert record["fitted_on"] == {"section": "testing", "count": len(testing), "split": split}
    assert record["weights_sha256"] == trained["train_record"]["weights_sha256"]
    # temperature scaling minimises each head's NLL on these gels: the fused NLL does not rise much (T = 1 is allowed)
    assert record["nll_after"] <= record["nll_before"] * 1.05 + 1e-6
    point = record["operating_point"]
    assert point["target_sensitivity"] == 0.98 and point["target_coverage"] == 0.75
    positives = sum(e["label"] != "Negative" for e in testing)
    assert point["screening_sensitivity"] >= 0.98 and point["count"] == len(testing) and point["positives"] == positives
    assert 0 <= point["positive_threshold"] <= 1 and 0 <= point["confidence_threshold"] <= 1
    # the same weights and validation gels as training: the same temperatures (the fit is deterministic)
    copy = tmp_path / "bundle"
    shutil.copytree(root / "models", copy / "models")
    (copy / "models" / "model.calibration.json").unlink()
    _workflow(["train.json", "calibrate.json"], "train", **{**trained["override"], "bundle_root": str(copy)})
    fresh = read_calibration(copy / "models" / "model.pt")
    for head, t in trained["train_record"]["temperatures"].items():
        assert fresh["temperatures"][head] == pytest.approx(t, rel=1e-4)
    assert fresh["fitted_on"] == trained["train_record"]["fitted_on"]


def test_resume_continues_from_checkpoint(trained, tmp_path):
    root = tmp_path / "resumed"
    shutil.copytree(trained["root"] / "models", root / "models")
    override = {**trained["override"], "bundle_root": str(root), "resume": True, "max_epochs": 3}
    workflow = _workflow(["train.json"], "train", **override)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    state = torch.load(root / "models" / "checkpoint.pt", weights_only=True)
    assert trainer.state.epoch == 3
    assert state["trainer"]["iteration"] == 3 * state["trainer"]["epoch_length"]
    # one epoch of SGD steps was taken after resuming: the LR scheduler continued from its saved step
    assert workflow.parser.get_parsed_content("lr_scheduler").last_epoch == 3 * state["trainer"]["epoch_length"]


def test_training_starts_from_a_pretrained_checkpoint_of_the_same_recipe(trained, tmp_path):
    """train.json --pretrained PATH: the run starts from those weights (epoch 0, fresh optimizer), its recipe says
    where it started, and a checkpoint of another recipe is refused before any epoch with both values."""
    pretrained = trained["root"] / "models" / "model.pt"
    root = tmp_path / "fine_tuned"
    override = {**trained["override"], "bundle_root": str(root), "pretrained": str(pretrained), "max_epochs": 1,
                "learning_rate": 0.0}
    workflow = ConfigWorkflow(config_file=_configs("train.json"), meta_file=META, logging_file=LOGGING,
                              workflow_type="train", **override)  # fmt: skip
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network")
    workflow.run()
    workflow.finalize()
    assert workflow.parser.get_parsed_content("train#trainer").state.epoch == 1
    recipe = json.loads((root / "models" / "model.recipe.json").read_text())
    assert recipe["started_from"]["checkpoint"] == str(pretrained.resolve())
    assert recipe["started_from"]["weights_sha256"] == weights_sha256(pretrained)
    # at learning rate 0 the epoch changed no weight: the network trained from the pretrained weights, not its own
    start = torch.load(pretrained, weights_only=True)
    tuned = network.state_dict()
    weights = [key for key in start if key.endswith("weight") and start[key].ndim > 1]
    assert weights and all(torch.equal(tuned[key].cpu(), start[key]) for key in weights)
    with pytest.raises(Exception) as error:
        _workflow(["train.json"], "train", **{**override, "bundle_root": str(tmp_path / "other"), "image_size": 32})
    assert any("image_size: checkpoint 64, this run 32" in m for m in _error_messages(error.value))
    assert not (tmp_path / "other" / "models" / "model.pt").exists()


def test_evaluate_writes_metrics(trained, tmp_path):
    out = tmp_path / "eval"
    override = {**trained["override"], "output_dir": str(out)}
    _workflow(["train.json", "evaluate.json"], "train", **override)
    with open(out / "metrics.json") as f:
        report = json.load(f)
    testing = _datalist(trained["dataset_dir"])["testing"]
    assert report["num_samples"] == len(testing) > 0
    cm = np.array(report["confusion_matrix"], dtype=float)
    assert cm.shape == (9, 9)
    truth = np.bincount([IFE_CLASSES.index(e["label"]) for e in testing], minlength=9)
    assert cm.sum(axis=1).tolist() == truth.tolist()  # one row per test gel, in its true class
    assert report["support"] == dict(zip(IFE_CLASSES, truth.tolist()))
    # the summary numbers are those of the matrix (definitions in custom_components/ife/metrics.py)
    tp, predicted = np.diag(cm), cm.sum(axis=0)
    assert report["accuracy"] == pytest.approx(tp.sum() / len(testing))
    seen = (truth + predicted) > 0
    assert report["macro_f1"] == pytest.approx(np.mean(2 * tp[seen] / (truth + predicted)[seen]))
    positives = truth[1:].sum()  # everything but Negative
    assert positives > 0 and report["fnr"] == pytest.approx(cm[1:, 0].sum() / positives)
    assert report["per_class_recall"] == {
        name: (pytest.approx(tp[i] / truth[i]) if truth[i] else None) for i, name in enumerate(IFE_CLASSES)
    }
    assert report["section"] == "testing" and report["checkpoint"].endswith("model.pt")
    assert (out / "confusion_matrix.png").stat().st_size > 0
    # calibration: ECE before and after, reliability diagrams; refer-to-expert at the stored operating point
    record = read_calibration(trained["root"] / "models" / "model.pt")
    calibration, referral = report["calibration"], report["referral"]
    assert calibration["temperatures"] == record["temperatures"]
    assert 0 <= calibration["ece_uncalibrated"] <= 1 and 0 <= calibration["ece_calibrated"] <= 1
    assert sum(calibration["reliability_calibrated"]["count"]) == len(testing)
    assert referral["operating_point"] == record["operating_point"] and referral["probabilities"] == "calibrated"
    assert referral["count"] == len(testing) and referral["positives"] == positives
    assert referral["coverage"] == pytest.approx(1 - referral["referred"] / len(testing))
    assert referral["fnr"] is not None and referral["sensitivity"] == pytest.approx(1 - referral["fnr"])
    # a false negative of the refer rule is a false negative of the class call, never the other way round
    assert referral["fnr"] <= report["fnr"] + 1e-9
    curve = referral["coverage_accuracy_curve"]
    assert curve["coverage"][-1] == pytest.approx(1.0) and curve["accuracy"][-1] == pytest.approx(report["accuracy"])
    for name in ("reliability_diagram.png", "coverage_accuracy.png"):
        assert (out / name).stat().st_size > 0


def _read_predictions(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_inference_writes_predictions_and_figures(trained, tmp_path):
    out = tmp_path / "infer"
    # no image_size: the checkpoint's recipe says 64
    override = {"bundle_root": str(trained["root"]), "dataset_dir": str(trained["dataset_dir"]), "num_workers": 0}
    workflow = _workflow(["inference.json"], "infer", **override, output_dir=str(out))
    assert workflow.parser.get_parsed_content("image_size") == 64
    rows = _read_predictions(out / "predictions.csv")
    testing = _datalist(trained["dataset_dir"])["testing"]
    assert len(rows) == len(testing)
    for row in rows:
        probs = np.array([float(row[f"p_{name}"]) for name in IFE_CLASSES])
        assert probs.sum() == pytest.approx(1.0, abs=1e-4)
        assert row["prediction"] in IFE_CLASSES and row["label"] in IFE_CLASSES
        assert row["severe_prediction"] in ("None", "G", "A", "M")
        assert row["mild_prediction"] in ("None", "kappa", "lambda")
        # the call follows the per-head rule: a mild None is Negative whatever the severe head says
        assert (row["prediction"] == "Negative") == (row["mild_prediction"] == "None")
        # peak rows in the file's own rows (the synthetic gels are 400 x 600; the network saw 64 x 64)
        for column in ("severe_attention_peak_row", "mild_attention_peak_row"):
            assert 0 <= int(row[column]) < 400
    assert len(os.listdir(out / "attention")) == len(testing)
    profiles = [json.loads(line) for line in (out / "attention_profiles.jsonl").read_text().splitlines()]
    assert [p["image"] for p in profiles] == [r["image"] for r in rows]
    assert all(p["image_rows"] == 400 and p["network_rows"] == 64 for p in profiles)
    # the default's stage 4 halves stage 3's rows, as ResNet18: 64 / 32 = 2 rows, stride 32; stage 3: 4 rows
    assert {k: (v["stride"], len(v["values"])) for k, v in profiles[0]["maps"].items()} == {
        "attention_severe": (32, 2), "attention_mild": (32, 2), "attention_shared": (16, 4)
    }  # fmt: skip
    # the report joins them with the generator's band rows
    from custom_components.ife.attention import report_from_files

    report, _ = report_from_files(out / "attention_profiles.jsonl", trained["dataset_dir"] / "synthesis.json")
    assert report["gels"] == len(testing) and report["unmatched"] == 0
    assert report["maps"]["attention_severe"]["positives"] + report["maps"]["attention_severe"]["negatives"] == len(testing)
    # calibrated probabilities and the refer rule's columns
    assert {r["calibrated"] for r in rows} == {"true"} and {r["refer"] for r in rows} <= {"true", "false"}
    for row in rows:
        parts = [p for p in row["refer_reason"].split("; ") if p]
        assert all(p in REFER_REASONS for p in parts) and (row["refer"] == "true") == bool(parts)


def test_inference_calibration_and_band_patterns(trained, tmp_path):
    """The probabilities of predictions.csv are the uncalibrated ones tempered by the stored temperatures; a gel whose
    datalist entry carries a band pattern is referred with it; without calibration nothing is referred on its
    probabilities ("not calibrated")."""
    dataset_dir = tmp_path / "data"
    shutil.copytree(trained["dataset_dir"], dataset_dir)
    datalist = _datalist(dataset_dir)
    # as the band-pattern detector gives it: a text on every gel, empty where nothing is unusual
    datalist["testing"] = [dict(e, band_pattern="") for e in datalist["testing"][:4]]
    datalist["testing"][1]["band_pattern"] = "two heavy-chain bands at different heights (G, A)"
    (dataset_dir / "datalist.json").write_text(json.dumps(datalist))
    paths = {
        "bundle_root": str(trained["root"]), "dataset_dir": str(dataset_dir), "num_workers": 0, "save_figures": False,
        "band_pattern": False,  # the datalist's band patterns stand for the detector's (next test: the detector)
    }  # fmt: skip
    _workflow(["inference.json"], "infer", **paths, output_dir=str(tmp_path / "calibrated"))
    _workflow(["inference.json"], "infer", **paths, output_dir=str(tmp_path / "plain"), use_calibration=False)
    calibrated = _read_predictions(tmp_path / "calibrated" / "predictions.csv")
    plain = _read_predictions(tmp_path / "plain" / "predictions.csv")
    probs = {name: np.array([[float(r[f"p_{c}"]) for c in IFE_CLASSES] for r in rows]) for name, rows in
             (("calibrated", calibrated), ("plain", plain))}  # fmt: skip
    temperatures = read_calibration(trained["root"] / "models" / "model.pt")["temperatures"]
    expected = temper_probabilities(torch.as_tensor(probs["plain"]), temperatures).numpy()
    np.testing.assert_allclose(probs["calibrated"], expected, atol=2e-4)
    # a temperature never moves the per-head call
    assert [r["prediction"] for r in calibrated] == [r["prediction"] for r in plain]
    assert calibrated[1]["refer"] == "true"
    pattern = "pattern outside the nine: two heavy-chain bands at different heights (G, A)"
    assert pattern in calibrated[1]["refer_reason"]
    assert {r["calibrated"] for r in plain} == {"false"}
    assert all(r["refer_reason"].endswith("not calibrated") for r in plain)
    assert [r["refer"] for r in plain] == ["false", "true", "false", "false"]


def test_inference_refers_a_biclonal_gel_found_by_the_band_pattern_detector(trained, tmp_path):
    """The detector runs in inference.json by default: a generated biclonal gel (IgG-kappa and IgA-lambda at
    different heights) is referred as a pattern outside the nine, a one-band IgG-kappa gel is not for that reason."""
    folder = tmp_path / "gels"
    folder.mkdir()
    for name, class_name, components in (("biclonal", "biclonal", ("IgG-kappa", "IgA-lambda")), ("single", "IgG-kappa", None)):
        gel = render_gel(np.random.default_rng(5), class_name, (200, 300), components=components)
        Image.fromarray(gel).save(folder / f"{name}.png")
    out = tmp_path / "infer"
    _workflow(["inference.json"], "infer", **trained["override"], output_dir=str(out), input_dir=str(folder), save_figures=False)
    rows = {Path(r["image"]).stem: r for r in _read_predictions(out / "predictions.csv")}
    assert rows["biclonal"]["refer"] == "true" and "pattern outside the nine: " in rows["biclonal"]["refer_reason"]
    assert "pattern outside the nine" not in rows["single"]["refer_reason"]


def test_lane_layout_normalisation_trains_evaluates_and_infers_and_travels_with_the_checkpoint(tmp_path):
    """Gels of the real scanners' look (headers, frames, margins, uneven lanes), albumin at the top: trained,
    evaluated and segmented with ``lane_layout`` on and the orientation found per gel; the recipe records the
    layout, so evaluation and inference normalise too, and a run that turns it off is refused. A gel whose lanes
    cannot be found is trained on and answered from the whole image, flagged and referred, never dropped."""
    from custom_components.ife.synthetic import synthesize_ife_dataset

    data = tmp_path / "data"
    synthesize_ife_dataset(data, 40, seed=3, image_size=(120, 180), orientation="albumin_top", style="real")
    # one gel in training and one in testing whose lanes cannot be found (a smear, no lanes): neither is dropped
    datalist = _datalist(data)
    smear = np.repeat(np.linspace(60, 230, 120, dtype=np.uint8)[:, None, None], 180, axis=1).repeat(3, axis=2)
    for section in ("training", "testing"):
        Image.fromarray(smear).save(data / "images" / f"smear_{section}.png")
        datalist[section].append({"image": f"images/smear_{section}.png", "label": "Negative"})
    (data / "datalist.json").write_text(json.dumps(datalist))
    override = {**SMALL, "bundle_root": str(tmp_path), "dataset_dir": str(data), "max_epochs": 1,
                "lane_layout": True, "lane_orientation": "auto"}  # fmt: skip
    _workflow(["train.json"], "train", **override)
    recipe = json.loads((tmp_path / "models" / "model.recipe.json").read_text())
    assert recipe["settings"]["lane_layout"] is True and recipe["settings"]["lane_orientation"] == "auto"
    paths = {"bundle_root": str(tmp_path), "dataset_dir": str(data), "num_workers": 0, "save_figures": False}
    _workflow(["train.json", "evaluate.json"], "train", **paths, output_dir=str(tmp_path / "eval"))
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["num_samples"] == len(_datalist(data)["testing"]) and "calibration" in report
    _workflow(["inference.json"], "infer", **paths, output_dir=str(tmp_path / "infer"))
    predictions = _read_predictions(tmp_path / "infer" / "predictions.csv")
    assert len(predictions) == len(_datalist(data)["testing"])
    # peak rows in the files' 120 rows (not the normalised 64 that Resized traced), inside each gel's rows
    profiles = [json.loads(line) for line in open(tmp_path / "infer" / "attention_profiles.jsonl")]
    assert all(p["image_rows"] == 120 and p["lane_layout"]["image_shape"] == [120, 180] for p in profiles)
    gel_rows = {p["image"]: p["lane_layout"]["rows"] for p in profiles}
    for row in predictions:
        top, bottom = gel_rows[row["image"]]
        for column in ("severe_attention_peak_row", "mild_attention_peak_row"):
            assert top <= int(row[column]) <= bottom, (row["image"], column)
    used = {Path(row["image"]).name: row["lane_layout_used"] for row in predictions}
    assert used.pop("smear_testing.png") == "false" and set(used.values()) == {"true"}
    smear_row = next(row for row in predictions if row["image"].endswith("smear_testing.png"))
    assert smear_row["refer"] == "true" and "lanes not read: whole image used" in smear_row["refer_reason"]
    with pytest.raises(Exception) as raised:
        _workflow(["inference.json"], "infer", **paths, output_dir=str(tmp_path / "raw"), lane_layout=False)
    assert any("trained with lane_layout=True" in m for m in _error_messages(raised.value))


def test_inference_over_folder_skips_unreadable(trained, tmp_path):
    folder = tmp_path / "gels"
    folder.mkdir()
    testing = _datalist(trained["dataset_dir"])["testing"][:3]
    for entry in testing:
        shutil.copy(trained["dataset_dir"] / entry["image"], folder)
    (folder / "corrupt.png").write_bytes(b"not a png")
    out = tmp_path / "infer"
    # --max_figures 1: a large folder is not bound by plotting; every gel still gets its row
    override = {**trained["override"], "output_dir": str(out), "input_dir": str(folder), "max_figures": 1}
    _workflow(["inference.json"], "infer", **override)
    rows = _read_predictions(out / "predictions.csv")
    assert sorted(Path(r["image"]).name for r in rows) == sorted(Path(e["image"]).name for e in testing)
    assert all(r["label"] == "" for r in rows)  # a folder has no labels
    assert len(os.listdir(out / "attention")) == 1


def test_inference_over_a_datalist_skips_broken_entries_and_strict_stops(trained, tmp_path):
    dataset_dir = tmp_path / "data"
    shutil.copytree(trained["dataset_dir"], dataset_dir)
    datalist = _datalist(dataset_dir)
    good = datalist["testing"][:5]
    png = (dataset_dir / good[0]["image"]).read_bytes()
    (dataset_dir / "images" / "truncated.png").write_bytes(png[: len(png) // 2])
    (dataset_dir / "images" / "empty.png").write_bytes(b"")
    (dataset_dir / "images" / "text.png").write_text("a text file, not an image")
    broken = [{"image": f"images/{n}", "label": "Negative"} for n in ("truncated.png", "empty.png", "text.png")]
    datalist["testing"] = good[:2] + broken + good[2:]
    (dataset_dir / "datalist.json").write_text(json.dumps(datalist))
    out = tmp_path / "infer"
    paths = {
        "bundle_root": str(trained["root"]), "dataset_dir": str(dataset_dir), "num_workers": 0, "save_figures": False,
    }  # fmt: skip
    _workflow(["inference.json"], "infer", **paths, output_dir=str(out))
    assert not (out / "attention").exists()  # save_figures False
    rows = _read_predictions(out / "predictions.csv")
    assert [Path(r["image"]).name for r in rows] == [Path(e["image"]).name for e in good]  # every good gel, in order
    assert [r["label"] for r in rows] == [e["label"] for e in good]
    reasons = {Path(r["image"]).name: r["error"] for r in csv.DictReader(open(out / "skipped_inputs.csv"))}
    assert set(reasons) == {"truncated.png", "empty.png", "text.png"}
    assert reasons["empty.png"] == "empty file (0 bytes)" and reasons["text.png"].startswith("unreadable image")
    # strict: the same datalist is an error, before any prediction is written (the command line's non-zero exit
    # on --strict true is tested once, in test_oct_bundle.py)
    strict_out = tmp_path / "strict"
    workflow = ConfigWorkflow(
        config_file=_configs("inference.json"), meta_file=META, logging_file=LOGGING, workflow_type="infer",
        **paths, output_dir=str(strict_out), strict=True,
    )  # fmt: skip
    with pytest.raises(Exception) as info:
        workflow.initialize()
    chain = _error_messages(info.value)
    assert any("strict mode stops on any unusable input: 3 of 8" in m for m in chain), chain
    assert (strict_out / "skipped_inputs.csv").is_file() and not (strict_out / "predictions.csv").exists()


def test_baseline_override(trained, tmp_path):
    override = {**trained["override"], "bundle_root": str(tmp_path), "max_epochs": 1}
    workflow = _workflow(["train.json", "baseline.json"], "train", **override)
    assert type(workflow.parser.get_parsed_content("network")).__name__ == "IFEResNet"
    assert workflow.parser.get_parsed_content("optimizer").defaults["lr"] == 0.1
    model = torch.load(tmp_path / "models" / "baseline" / "model.pt", weights_only=True)
    assert model["head.weight"].shape == (9, 64)
    assert set(read_calibration(tmp_path / "models" / "baseline" / "model.pt")["temperatures"]) == {"classes"}
    assert workflow.parser.get_parsed_content("multitask") is False  # the 9-class call rule, from the network
    # inference with the baseline's override file; without it, the recipe names the mismatch
    paths = {"bundle_root": str(tmp_path), "dataset_dir": str(trained["dataset_dir"]), "num_workers": 0}
    paths["save_figures"] = False
    infer = _workflow(["inference.json", "baseline.json"], "infer", **paths, output_dir=str(tmp_path / "out"))
    assert infer.parser.get_parsed_content("multitask") is False
    rows = _read_predictions(tmp_path / "out" / "predictions.csv")
    assert len(rows) == len(_datalist(trained["dataset_dir"])["testing"])
    assert {r["calibrated"] for r in rows} == {"true"}
    shutil.copytree(tmp_path / "models" / "baseline", tmp_path / "plain" / "models")
    workflow = ConfigWorkflow(
        config_file=_configs("inference.json"), meta_file=META, logging_file=LOGGING, workflow_type="infer",
        **{**paths, "bundle_root": str(tmp_path / "plain")},
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
    chain = _error_messages(info.value)
    assert any("holds a custom_components.ife.networks.IFEResNet" in m and "baseline.json" in m for m in chain)


@pytest.mark.parametrize(
    "bad_entry, expected",
    [({"image": "images/missing.png", "label": "Negative"}, "missing.png"), (None, "IgG-banana")],
)
def test_bad_datalist_entry_stops_before_training(trained, tmp_path, bad_entry, expected):
    dataset_dir = tmp_path / "data"
    shutil.copytree(trained["dataset_dir"], dataset_dir)
    datalist = _datalist(dataset_dir)
    if bad_entry is None:  # unknown label on an existing image
        bad_entry = {"image": datalist["training"][0]["image"], "label": "IgG-banana"}
    datalist["training"].append(bad_entry)
    with open(dataset_dir / "datalist.json", "w") as f:
        json.dump(datalist, f)
    override = {**trained["override"], "bundle_root": str(tmp_path), "dataset_dir": str(dataset_dir)}
    workflow = ConfigWorkflow(
        config_file=_configs("train.json"), meta_file=META, logging_file=LOGGING, workflow_type="train", **override
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
    chain = _error_messages(info.value)
    assert any(expected in message for message in chain), chain
    assert not (tmp_path / "models").exists()  # nothing was trained or saved


def test_the_default_trains_the_cross_entropies_alone_on_the_papers_tied_network(trained, tmp_path):
    """The default (both lambdas 0, the setting measured best on real gels): the paper's regularisers are computed
    and logged but not trained, and the two branches share their attention convolutions (the authors' network)."""
    root = tmp_path / "bundle"
    override = {**SMALL, "bundle_root": str(root), "dataset_dir": str(trained["dataset_dir"]), "max_epochs": 1}
    workflow = _workflow(["train.json"], "train", **override)
    network = workflow.parser.get_parsed_content("network")
    severe, mild = network.severe_stages[0].blocks[0], network.mild_stages[0].blocks[0]
    assert mild.attention is severe.attention
    terms = workflow.parser.get_parsed_content("train#trainer").state.metrics
    terms = {k.removeprefix("train_loss_"): v for k, v in terms.items() if k.startswith("train_loss_")}
    assert terms["total"] == pytest.approx(terms["ce_severe"] + terms["ce_mild"], rel=1e-6, abs=1e-7)
    assert terms["inner_severe"] > 0 and terms["inter"] >= 0  # computed and logged all the same


@pytest.mark.parametrize("config", ["evaluate.json", "calibrate.json"])
def test_a_model_of_bundle_0_7_is_evaluated_and_calibrated_untied(tmp_path, config):
    """Bundle 0.7.0 trained untied and wrote no tie_attention in the recipe: evaluation and calibration rebuild it
    untied (the recipe defaults), so its weights load as trained rather than one branch's over the other's."""
    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    from custom_components.core.recipe import CheckedCheckpointLoader, write_recipe
    from custom_components.ife.networks import MultiTaskIFEResNet

    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    trained = MultiTaskIFEResNet(channels=NARROW, stage4_row_stride=1)
    torch.save(trained.state_dict(), checkpoint)
    write_recipe(checkpoint, {"image_size": 64, "channels": NARROW, "stage4_row_stride": 1, "lane_layout": True,
                              "lane_orientation": "albumin_bottom"})  # fmt: skip
    parser = ConfigParser()
    parser.read_config(_configs("train.json", config))
    parser.update({"bundle_root": str(tmp_path), "device": "$torch.device('cpu')"})
    network = parser.get_parsed_content("network")
    assert parser.get_parsed_content("tie_attention") is False and network.stage4_row_stride == 1
    CheckedCheckpointLoader(load_path=str(checkpoint), load_dict={"model": network})(Engine(lambda e, b: None))
    for key, value in trained.state_dict().items():
        assert torch.equal(network.state_dict()[key], value), key


def test_ablation_without_the_inner_term_trains_with_that_term_removed(trained, tmp_path, monkeypatch):
    """The Table 2 "w/o Reg_inner" run (``paper_attention.json --lambda_inner 0``), from an unrelated folder: the
    inner-task terms are still computed and logged, but the loss that is trained is the cross-entropies plus the
    inter-task term only."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "bundle"
    override = {
        **SMALL, "bundle_root": str(root), "dataset_dir": str(trained["dataset_dir"]), "max_epochs": 1,
        "lambda_inner": 0,
    }  # fmt: skip
    workflow = _workflow(["train.json", "paper_attention.json"], "train", **override)
    assert (root / "models" / "model.pt").is_file()
    loss = workflow.parser.get_parsed_content("loss")
    assert (loss.lambda_inner, loss.lambda_inter) == (0.0, 0.3)
    # epoch means of the terms of every step (LossTermsHandler), and the terms of the last step
    terms = workflow.parser.get_parsed_content("train#trainer").state.metrics
    terms = {k.removeprefix("train_loss_"): v for k, v in terms.items() if k.startswith("train_loss_")}
    for logged in (terms, {name: float(value) for name, value in loss.last_terms.items()}):
        inner = logged["inner_severe"] + logged["inner_mild"]
        without_inner = logged["ce_severe"] + logged["ce_mild"] + 0.3 * logged["inter"]
        assert logged["total"] == pytest.approx(without_inner, rel=1e-6, abs=1e-7)
        # the term is not negligible: had it been kept at the default weight, the total would be off by this much
        assert 0.3 * inner > 1e-3 * logged["total"], logged


def test_verify_net_in_out_and_export(trained, tmp_path):
    """The README's ``python -m monai.bundle verify_net_in_out`` / ``ckpt_export`` commands, as the functions they
    call, with the inference config (the image size from the checkpoint's recipe)."""
    root = trained["root"]
    common = {"meta_file": META, "config_file": str(CONFIGS / "inference.json"), "bundle_root": str(root)}
    verify_net_in_out("network_def", **common)
    ckpt_export(
        "network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(root / "models" / "model.pt"), **common
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    probs = scripted(torch.rand(2, 3, 64, 64))
    assert probs.shape == (2, 9)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(2))
    weights = torch.load(root / "models" / "model.pt", weights_only=True)  # the trained weights, not a fresh network
    torch.testing.assert_close(scripted.state_dict()["severe_head.weight"], weights["severe_head.weight"])


def test_multi_gpu_training_with_two_processes(tmp_path):
    """multi_gpu_train.json under ``torchrun --nproc_per_node 2`` (gloo, CPU): the ranks train on disjoint shards,
    only rank 0 writes files, and the validation metric gathered from both ranks is the one a single process
    computes with the same model on the same images.

    Also this module's one ``python -m monai.bundle run`` command line: the overrides are parsed as a user's are."""
    root, data = tmp_path / "bundle", tmp_path / "data"
    config = "[" + ",".join(f"'{c}'" for c in _configs("train.json", "multi_gpu_train.json")) + "]"
    # 80 gels: a validation list of a few gels, at least one per rank
    small = {**SMALL, "synthetic_count": 80, "max_epochs": 1}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", config, "--meta_file", META, "--logging_file", LOGGING,
        "--bundle_root", str(root), "--dataset_dir", str(data), "--device", "$torch.device('cpu')",
        "--dist_backend", "gloo", *[arg for key, value in small.items() for arg in (f"--{key}", str(value))],
        # each rank's last line says what it ran: the process group, the network stepped, its shard, the metric
        "--finalize#0", "$logging.getLogger('ife_multitask').info('rank %d of %d, training %s, shard %s, F1 %.6f, "
        "lr %.9f', dist.get_rank(), dist.get_world_size(), type(@train_network).__name__, sorted(@train#sampler), "
        "@validate#evaluator.state.best_metric, @optimizer.defaults['lr'])",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = re.findall(r"rank (\d) of 2, training (\w+), shard (\[[\d, ]*\]), F1 ([\d.]+), lr ([\d.]+)", result.stdout)
    ranks = {int(m[0]): (m[1], json.loads(m[2]), float(m[3])) for m in found}
    assert sorted(ranks) == [0, 1] and {net for net, _, _ in ranks.values()} == {"DistributedDataParallel"}
    # SGD's learning rate grows with the global batch (lr_scaling "linear"): two ranks, twice the base rate
    default_lr = json.loads((CONFIGS / "train.json").read_text())["learning_rate"]
    assert [float(m[4]) for m in found] == pytest.approx([2 * default_lr] * 2, rel=1e-6)
    shards = [set(ranks[r][1]) for r in (0, 1)]
    train, validation = _datalist(data)["training"], _datalist(data)["validation"]
    assert shards[0] | shards[1] == set(range(len(train)))  # every training gel, split between the ranks
    assert len(shards[0] & shards[1]) == len(train) % 2  # disjoint but for the padding of an odd count
    # only rank 0 wrote: one training and one validation TensorBoard file, the model, its recipe, the state
    assert len(list((root / "eval").glob("events.out.tfevents.*"))) == 2
    assert sorted(p.name for p in (root / "models").iterdir()) == [
        "checkpoint.pt", "model.calibration.json", "model.pt", "model.recipe.json"
    ]  # fmt: skip
    # rank 0 calibrated on every validation gel (not its shard) while rank 1 waited
    record = read_calibration(root / "models" / "model.pt")
    assert record["fitted_on"]["count"] == len(_datalist(data)["validation"])
    assert torch.load(root / "models" / "model.pt", weights_only=True)["stem.0.weight"].shape == (8, 3, 7, 7)
    # one process, the trained model, the same validation gels: the same macro F1 as the two ranks gathered
    assert ranks[0][2] == ranks[1][2] > 0
    out = tmp_path / "single"
    paths = {"bundle_root": str(root), "dataset_dir": str(data), "num_workers": 0, "eval_section": "validation"}
    _workflow(["train.json", "evaluate.json"], "train", **paths, output_dir=str(out))
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_samples"] == len(validation) >= 2
    assert report["macro_f1"] == pytest.approx(ranks[0][2], abs=1e-6)
