# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from PIL import Image

from monai.handlers import IgniteMetricHandler, from_engine

from custom_components.ife.handlers import PREDICTION_COLUMNS, IFEEvaluationReport, IFEPredictionWriter
from custom_components.ife.classes import IFE_CLASSES
from custom_components.ife.referral import coverage_accuracy_curve
from custom_components.ife.calibration.temperature import expected_calibration_error
from custom_components.ife.metrics import IFEClassificationMetric


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"

def _write_gel(path, height=30, width=45):
    Image.fromarray(np.full((height, width, 3), 200, np.uint8)).save(path)
    return str(path)


def _item(path, probs, call, heads=True, label=None):
    image = MetaTensor(torch.zeros(3, 32, 32), meta={"filename_or_obj": path})
    item = {"image": image, "probabilities": torch.tensor(probs), "probabilities_call": torch.tensor(call)}
    if heads:
        item.update(
            severe_logits=torch.tensor([0.0, 3.0, 0.0, 0.0]),  # G
            mild_logits=torch.tensor([2.0, 0.0, 1.0]),  # None: a heavy chain alone is called Negative
            attention_severe=torch.rand(1),
            attention_mild=torch.rand(1),
        )
    else:
        item["attention"] = torch.rand(1)
    if label is not None:
        item["label"] = label
    return item


def _run_writer(writer, batches):
    """Run an engine whose outputs are the given lists of decollated items (inputs carry the labels)."""

    def step(engine, batch):
        outputs = [{k: v for k, v in item.items() if k != "label"} for item in batch]
        engine.state.output = outputs
        engine.state.batch = [{k: v for k, v in item.items() if k in ("image", "label")} for item in batch]
        return outputs

    engine = Engine(step)
    writer.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_prediction_writer_rows_and_figures(tmp_path):
    paths = [_write_gel(tmp_path / f"gel{i}.png") for i in range(3)]
    probs = [0.6, 0.05, 0.05, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03]
    batches = [
        [_item(paths[0], probs, 0, label="IgG-kappa"), _item(paths[1], probs, 0)],
        [_item(paths[2], probs[::-1], 8, heads=False, label=torch.tensor(8))],
    ]
    out = tmp_path / "out"
    writer = IFEPredictionWriter(out, max_figures=2)
    _run_writer(writer, batches)
    rows = _read_csv(out / "predictions.csv")
    assert not os.path.exists(out / "predictions.csv.partial")
    assert rows[0] == list(PREDICTION_COLUMNS)
    assert [r[0] for r in rows[1:]] == paths
    assert [r[1] for r in rows[1:]] == ["IgG-kappa", "", "IgM-lambda"]  # label from the batch; empty when absent
    assert [r[2] for r in rows[1:]] == ["Negative", "Negative", "IgM-lambda"]
    # multi-task rows: severe/mild from the head logits (G, None); baseline row: derived from the call (M, lambda)
    severe, mild = PREDICTION_COLUMNS.index("severe_prediction"), PREDICTION_COLUMNS.index("mild_prediction")
    assert [[r[severe], r[mild]] for r in rows[1:]] == [["G", "None"], ["G", "None"], ["M", "lambda"]]
    # no operating point given: nothing referred on the probabilities, and the reason says why
    assert {(r[-4], r[-3], r[-2], r[-1]) for r in rows[1:]} == {("false", "false", "not calibrated", "")}
    for row in rows[1:]:
        p = np.array(row[4:13], dtype=float)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        assert float(row[3]) == pytest.approx(p[IFE_CLASSES.index(row[2])])
    assert sorted(os.listdir(out / "attention")) == ["gel0.png", "gel1.png"]  # max_figures=2


def test_prediction_writer_attention_peak_rows_and_profiles(tmp_path):
    """Peak rows are in the file's own rows: a 400-row gel resized to 128 rows, stage-4 maps (stride 32)."""
    from monai.transforms import Resize

    path = _write_gel(tmp_path / "gel.png", height=400, width=600)
    image = Resize((128, 128))(MetaTensor(torch.zeros(3, 400, 600), meta={"filename_or_obj": path}))
    item = _item(path, [1.0] + [0.0] * 8, 0)
    item.update(
        image=image,
        attention_severe=torch.tensor([0.1, 0.2, 0.9, 0.3]),  # peak at map row 2: network row 64 -> image row 201
        attention_mild=torch.tensor([0.8, 0.2, 0.1, 0.3]),  # map row 0: network row 0 -> image row 1
        attention_shared=torch.tensor([0.0] * 7 + [1.0]),  # stride 16, row 7: network row 112 -> image row 351
    )
    baseline = _item(path, [1.0] + [0.0] * 8, 0, heads=False)
    baseline["image"] = image
    out = tmp_path / "out"
    _run_writer(IFEPredictionWriter(out, figure_dir=None), [[item, baseline]])
    rows = list(csv.DictReader(open(out / "predictions.csv", newline="")))
    assert rows[0]["severe_attention_peak_row"] == "201" and rows[0]["mild_attention_peak_row"] == "1"
    assert rows[1]["severe_attention_peak_row"] == "" and rows[1]["mild_attention_peak_row"] == ""  # no branches
    lines = [json.loads(line) for line in open(out / "attention_profiles.jsonl")]
    assert not os.path.exists(out / "attention_profiles.jsonl.partial")
    assert lines[0]["image"] == path and lines[0]["image_rows"] == 400 and lines[0]["network_rows"] == 128
    assert lines[0]["maps"]["attention_shared"]["stride"] == 16
    assert lines[0]["maps"]["attention_severe"] == {"stride": 32, "values": pytest.approx([0.1, 0.2, 0.9, 0.3])}
    assert set(lines[1]["maps"]) == {"attention"}
    # an interrupted run keeps both streams as .partial
    broken = _item(path, [1.0] + [0.0] * 8, 0)
    del broken["probabilities_call"]
    with pytest.raises(ValueError):
        _run_writer(IFEPredictionWriter(tmp_path / "stopped", figure_dir=None), [[item], [broken]])
    assert sorted(os.listdir(tmp_path / "stopped")) == ["attention_profiles.jsonl.partial", "predictions.csv.partial"]
    assert len(open(tmp_path / "stopped" / "attention_profiles.jsonl.partial").readlines()) == 1


def test_prediction_writer_unique_figure_names_and_no_figures(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    paths = [_write_gel(tmp_path / "a" / "x.png"), _write_gel(tmp_path / "b" / "x.png")]
    probs = [1.0] + [0.0] * 8
    writer = IFEPredictionWriter(tmp_path / "out")
    _run_writer(writer, [[_item(p, probs, 0) for p in paths]])
    assert sorted(os.listdir(tmp_path / "out" / "attention")) == ["x.png", "x_2.png"]

    writer = IFEPredictionWriter(tmp_path / "out2", figure_dir=None)
    _run_writer(writer, [[_item(paths[0], probs, 0)]])
    assert sorted(os.listdir(tmp_path / "out2")) == ["attention_profiles.jsonl", "predictions.csv"]


def test_prediction_writer_missing_call_keeps_partial(tmp_path):
    item = _item(_write_gel(tmp_path / "g.png"), [1.0] + [0.0] * 8, 0)
    del item["probabilities_call"]
    writer = IFEPredictionWriter(tmp_path / "out")
    with pytest.raises(ValueError, match="probabilities_call"):
        _run_writer(writer, [[item]])
    assert not os.path.exists(tmp_path / "out" / "predictions.csv")
    assert _read_csv(tmp_path / "out" / "predictions.csv.partial") == [list(PREDICTION_COLUMNS)]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"filename": "a/b.csv"}, "filename"), ({"max_figures": -1}, "max_figures"), ({"profiles_filename": "a/p.jsonl"}, "profiles_filename")],
)
def test_prediction_writer_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        IFEPredictionWriter(tmp_path, **kwargs)


def _evaluate(report, batches, minority_classes=None, metric_name="val_macro_f1"):
    """Run an engine over (call, truth) batches with the bundle's IFE metric attached, as its evaluator does."""

    def step(engine, batch):
        # decollated outputs: 0-d call tensors, labels as numbers (as decollate_batch(detach=True) gives)
        return [{"pred": torch.tensor(c), "label": t} for c, t in batch]

    engine = Engine(step)
    metric = IgniteMetricHandler(
        IFEClassificationMetric("macro_f1", minority_classes=minority_classes),
        output_transform=from_engine(["pred", "label"]),
    )
    metric.attach(engine, metric_name)
    report.attach(engine)
    engine.run(batches, max_epochs=1)
    return engine, metric


def test_evaluation_report(tmp_path):
    # truth / calls: 4 Negative (one called kappa), 2 kappa (one called Negative), 2 IgG-kappa (both right)
    truth = [0, 0, 0, 0, 1, 1, 3, 3]
    calls = [0, 0, 0, 1, 0, 1, 3, 3]
    batches = [list(zip(calls[:5], truth[:5])), list(zip(calls[5:], truth[5:]))]
    minority = ["IgG-kappa", "kappa"]
    report = IFEEvaluationReport(tmp_path / "eval", minority_classes=minority, extra={"split": "testing"})
    engine, metric = _evaluate(report, batches, minority)
    with open(tmp_path / "eval" / "metrics.json") as f:
        saved = json.load(f)
    assert saved == report.report
    # the evaluator's own metric, its report and the handler's agree
    assert saved == {**metric.metric_fn.report(), "split": "testing"}
    assert saved["macro_f1"] == pytest.approx(engine.state.metrics["val_macro_f1"])
    assert saved["accuracy"] == pytest.approx(6 / 8)
    assert saved["fnr"] == pytest.approx(1 / 4)  # 4 positives, one called Negative
    assert saved["m1_acc"] == pytest.approx(1.0)  # IgG-kappa recall
    assert saved["m3_acc"] == pytest.approx((1.0 + 0.5) / 2)  # IgG-kappa and kappa
    # per-class F1: Negative 2*3/(6+1+1) = 0.75, kappa 2/(2+1+1) = 0.5, IgG-kappa 1
    assert saved["macro_f1"] == pytest.approx((0.75 + 0.5 + 1.0) / 3)
    assert saved["per_class_recall"]["Negative"] == pytest.approx(0.75)
    assert saved["per_class_recall"]["lambda"] is None
    assert saved["confusion_matrix"][0][:2] == [3, 1] and saved["confusion_matrix"][1][:2] == [1, 1]
    assert saved["split"] == "testing" and saved["num_samples"] == 8
    assert saved["minority_classes"] == minority
    assert _is_png(tmp_path / "eval" / "confusion_matrix.png")
    assert sorted(os.listdir(tmp_path / "eval")) == ["confusion_matrix.png", "metrics.json"]  # no temporary files

    engine.run(batches[:1], max_epochs=1)  # a second run starts from scratch
    assert report.report["num_samples"] == 5


def test_evaluation_report_minority_from_truth_and_other_metric_name(tmp_path):
    report = IFEEvaluationReport(tmp_path, figure_filename=None, details_metric="val_accuracy")
    _evaluate(report, [[(0, 0), (2, 2), (2, 2)]], metric_name="val_accuracy")
    assert report.report["minority_classes"] == ["Negative", "lambda"]  # rarest of the evaluated truth first
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_evaluation_report_needs_the_metric_details(tmp_path):
    report = IFEEvaluationReport(tmp_path, details_metric="val_f1")
    with pytest.raises(RuntimeError, match="val_f1.*save_details=True"):
        _evaluate(report, [[(0, 0)]])  # the metric is attached as val_macro_f1
    assert not os.path.exists(tmp_path / "metrics.json")


def test_evaluation_report_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="metrics_filename"):
        IFEEvaluationReport(tmp_path, metrics_filename="a/m.json")
    with pytest.raises(ValueError, match="metrics_filename"):
        IFEEvaluationReport(tmp_path, metrics_filename=None)
    with pytest.raises(ValueError, match="IgG-x"):
        IFEEvaluationReport(tmp_path, minority_classes=["IgG-x"])


def test_prediction_writer_refer_columns(tmp_path):
    """refer / refer_reason at an operating point, with the band pattern read from the batch."""
    paths = [_write_gel(tmp_path / f"gel{i}.png") for i in range(3)]
    confident_negative = [0.9] + [0.1 / 8] * 8
    unsure_negative = [0.5] + [0.5 / 8] * 8  # P(any) = 0.5
    batch = [
        _item(paths[0], confident_negative, 0, heads=False),
        _item(paths[1], unsure_negative, 0, heads=False),
        _item(paths[2], confident_negative, 0, heads=False),
    ]
    batch[2]["band_pattern"] = "two light-chain bands at different heights (kappa, lambda)"

    def step(engine, items):
        engine.state.batch = [{"image": i["image"], "band_pattern": i.get("band_pattern", "")} for i in items]
        engine.state.output = [{k: v for k, v in i.items() if k != "band_pattern"} for i in items]
        return engine.state.output

    engine = Engine(step)
    point = {"positive_threshold": 0.3, "confidence_threshold": 0.6}
    IFEPredictionWriter(tmp_path / "out", figure_dir=None, operating_point=point, calibrated=True).attach(engine)
    engine.run([batch], max_epochs=1)
    rows = _read_csv(tmp_path / "out" / "predictions.csv")[1:]
    assert [r[-4:-1] for r in rows] == [
        ["true", "false", ""],
        ["true", "true", "low confidence; positive call uncertain"],
        ["true", "true", "pattern outside the nine: two light-chain bands at different heights (kappa, lambda)"],
    ]
    assert [r[-1] for r in rows] == ["", "", ""]  # lane_layout_used: these gels were not lane-normalised
    with pytest.raises(ValueError, match="positive_threshold"):
        IFEPredictionWriter(tmp_path, operating_point={"confidence_threshold": 0.5})


def test_evaluation_report_refers_the_gels_answered_from_the_whole_image(tmp_path):
    """As predictions.csv does: a gel whose lanes were not found is referred, so it is not counted as decided."""
    confident = [0.02, 0.96] + [0.02 / 7] * 7  # kappa, right, far above any threshold

    def image(found):
        record = {"rows": [0, 9], "image_shape": [10, 10], "orientation": "albumin_bottom", "lanes_found": found}
        return MetaTensor(torch.zeros(3, 8, 8), meta={"lane_layout": record})

    def step(engine, batch):
        return [{"pred": torch.tensor(1), "probabilities": torch.tensor(confident), "label": 1, "image": image(found)}
                for found in batch]  # fmt: skip

    engine = Engine(step)
    IgniteMetricHandler(IFEClassificationMetric("macro_f1"), output_transform=from_engine(["pred", "label"])).attach(
        engine, "val_macro_f1"
    )
    point = {"positive_threshold": 0.4, "confidence_threshold": 0.6, "target_sensitivity": 0.98}
    report = IFEEvaluationReport(tmp_path, probabilities_key="probabilities", calibration={"operating_point": point})
    report.attach(engine)
    engine.run([[True, False], [torch.tensor(True)]], max_epochs=1)  # a flag as collation leaves it, too
    referral = json.loads((tmp_path / "metrics.json").read_text())["referral"]
    assert referral["referred"] == 1 and referral["coverage"] == pytest.approx(2 / 3)
    assert referral["refer_counts"]["lanes not read: whole image used"] == 1


def test_evaluation_report_calibration_and_referral(tmp_path):
    """ECE before/after, the refer rule's coverage and FNR at the record's operating point, and both figures."""
    negative = [0.9] + [0.1 / 8] * 8
    positive = [0.02, 0.9] + [0.08 / 7] * 7  # kappa
    unsure = [0.55, 0.45] + [0.0] * 7  # called Negative, P(any) = 0.45
    gels = [(negative, 0), (negative, 0), (positive, 1), (unsure, 1)]  # (probabilities, truth)

    def step(engine, batch):
        return [
            {"pred": torch.tensor(int(np.argmax(p))), "probabilities": torch.tensor(p), "label": t} for p, t in batch
        ]

    engine = Engine(step)
    metric = IgniteMetricHandler(IFEClassificationMetric("macro_f1"), output_transform=from_engine(["pred", "label"]))
    metric.attach(engine, "val_macro_f1")
    point = {"positive_threshold": 0.4, "confidence_threshold": 0.6, "target_sensitivity": 0.98}
    calibration = {"temperatures": {"classes": 2.0}, "operating_point": point}
    report = IFEEvaluationReport(tmp_path, probabilities_key="probabilities", calibration=calibration)
    report.attach(engine)
    engine.run([gels[:3], gels[3:]], max_epochs=1)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    cal, ref = saved["calibration"], saved["referral"]
    # uncalibrated, 15 bins: confidences 0.9 (x3, all right) and 0.55 (wrong) -> (3 * 0.1 + 0.55) / 4
    assert cal["ece_uncalibrated"] == pytest.approx((3 * 0.1 + 0.55) / 4)
    tempered = torch.softmax(torch.tensor([p for p, _ in gels], dtype=torch.float64).clamp_min(1e-300).log() / 2, 1)
    assert cal["ece_calibrated"] == pytest.approx(expected_calibration_error(tempered, [0, 0, 1, 1]))
    assert cal["temperatures"] == {"classes": 2.0} and sum(cal["reliability_calibrated"]["count"]) == 4
    # T = 2 flattens every gel below the 0.6 confidence threshold (by hand: the negatives' p[Negative] = 0.949 /
    # (0.949 + 8 * 0.112) = 0.515, the kappa gel's p[kappa] = 0.516, the unsure gel's p[Negative] = 0.525), and
    # the three gels called Negative keep P(any) >= 0.4: all referred, no false negative
    assert tempered.max(1).values.tolist() == pytest.approx([0.515, 0.515, 0.516, 0.525], abs=2e-3)
    assert ref["coverage"] == 0.0 and ref["accuracy"] is None and ref["referred"] == 4
    assert ref["fnr"] == 0.0 and ref["sensitivity"] == 1.0 and ref["positives"] == 2
    assert ref["refer_counts"] == {"low confidence": 4, "positive call uncertain": 3, "pattern outside the nine": 0,
                                   "band pattern not read": 0, "lanes not read: whole image used": 0,
                                   "not calibrated": 0}  # fmt: skip
    assert ref["operating_point"] == point and ref["probabilities"] == "calibrated"
    expected = coverage_accuracy_curve(tempered, [0, 0, 1, 1], [0, 0, 1, 0])
    assert {k: pytest.approx(v, abs=1e-6) for k, v in expected.items()} == ref["coverage_accuracy_curve"]
    assert _is_png(tmp_path / "reliability_diagram.png") and _is_png(tmp_path / "coverage_accuracy.png")


def test_evaluation_report_without_calibration_record(tmp_path):
    def step(engine, batch):
        return [{"pred": torch.tensor(0), "probabilities": torch.tensor([0.9] + [0.1 / 8] * 8), "label": 1}]

    engine = Engine(step)
    metric = IgniteMetricHandler(IFEClassificationMetric("macro_f1"), output_transform=from_engine(["pred", "label"]))
    metric.attach(engine, "val_macro_f1")
    report = IFEEvaluationReport(tmp_path, probabilities_key="probabilities", coverage_filename=None)
    report.attach(engine)
    engine.run([[0]], max_epochs=1)
    cal, ref = report.report["calibration"], report.report["referral"]
    assert cal["ece_uncalibrated"] == pytest.approx(0.9) and cal["ece_calibrated"] is None
    assert ref["operating_point"] is None and ref["refer_counts"]["not calibrated"] == 1
    assert ref["fnr"] == 1.0  # called Negative, not referred
    assert sorted(os.listdir(tmp_path)) == ["confusion_matrix.png", "metrics.json", "reliability_diagram.png"]
    with pytest.raises(ValueError, match="calibration"):
        IFEEvaluationReport(tmp_path, calibration=[1.0])


@pytest.mark.parametrize("orientation", ["albumin_bottom", "albumin_top"])
def test_prediction_writer_peak_rows_of_a_lane_normalised_gel(tmp_path, orientation):
    """With lane_layout, a peak at the band's network row is reported (and drawn) at the band's row of the file."""
    from monai.transforms import Compose, Resized

    from custom_components.ife.synthetic import render_gel
    from custom_components.ife.lanes import IFEBandPatternd, NormaliseLaneLayoutd

    rgb, info = render_gel(np.random.default_rng(3), "IgG-kappa", (200, 300), return_info=True, orientation=orientation,
                           style="real")  # fmt: skip
    path = str(tmp_path / "gel.png")
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    preprocessing = Compose([
        IFEBandPatternd("image", on_failure="report"),
        NormaliseLaneLayoutd("image", spatial_size=(96, 96), orientation="auto"),
        Resized("image", spatial_size=(64, 64), mode="bilinear", anti_aliasing=True),
    ])  # fmt: skip
    gel = MetaTensor(torch.as_tensor(rgb.transpose(2, 0, 1).astype(np.float32)), meta={"filename_or_obj": path})
    image = preprocessing({"image": gel})["image"]
    layout = image.meta["lane_layout"]
    assert layout["image_shape"] == [200, 300] and layout["orientation"] == orientation
    band = int(torch.argmin(image.mean(dim=0)[:, 12:20].mean(dim=1)))  # the band's network row, in the G lane
    top, bottom = layout["rows"]
    offset = (band + 0.5) * (bottom - top + 1) / 64 - 0.5
    expected = round(bottom - offset if orientation == "albumin_top" else top + offset)  # by hand
    assert abs(expected - info["band_row"]) <= 0.03 * 200 + 2  # the mapping lands on the band of the file
    item = _item(path, [0.05, 0.9] + [0.05 / 7] * 7, 1)
    peaked = torch.full((64,), 0.1)
    peaked[band] = 0.9  # stride 1: map row j is network row j
    item.update(image=image, attention_severe=peaked, attention_mild=peaked)
    out = tmp_path / "out"
    writer = IFEPredictionWriter(out, attention_strides={"attention_severe": 1, "attention_mild": 1})
    _run_writer(writer, [[item]])
    row = next(csv.DictReader(open(out / "predictions.csv", newline="")))
    assert row["severe_attention_peak_row"] == row["mild_attention_peak_row"] == str(expected)
    line = json.loads(open(out / "attention_profiles.jsonl").readline())
    assert line["image_rows"] == 200 and line["network_rows"] == 64  # not the normalised 96 that Resized traced
    assert line["lane_layout"] == {"rows": [top, bottom], "image_shape": [200, 300], "orientation": orientation,
                                   "lanes_found": True}
    assert row["lane_layout_used"] == "true"
    assert _is_png(out / "attention" / "gel.png")
    # the figure's profile: one value per file row, peaking at the CSV's row, nothing outside the gel rows
    record = {"values": peaked.tolist(), "stride": 1}
    profile = IFEPredictionWriter._file_profile(record, 64, line["lane_layout"])
    assert profile.shape == (200,) and abs(int(np.argmax(profile)) - expected) <= 1
    assert not profile[:top].any() and not profile[bottom + 1 :].any()
