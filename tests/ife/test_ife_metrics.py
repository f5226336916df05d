"""Tests of custom_components.ife.metrics on a fixed, hand-checked confusion matrix."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import IgniteMetricHandler

from custom_components.ife.metrics import (
    IFEClassificationMetric,
    accuracy,
    compute_ife_metrics,
    confusion_matrix,
    false_negative_rate,
    macro_f1,
    minority_accuracy,
    minority_classes_from_labels,
    per_class_recall,
)
from custom_components.ife.classes import IFE_CLASSES

# rows = truth, columns = prediction, IFE_CLASSES order; 25 samples, IgA-lambda (6) absent everywhere
CM = [
    [9, 0, 0, 1, 0, 0, 0, 0, 0],  # Negative: 9 right, 1 called IgG-kappa
    [1, 0, 0, 0, 0, 0, 0, 0, 0],  # kappa: called Negative (false negative)
    [0, 0, 1, 0, 1, 0, 0, 0, 0],  # lambda: 1 right, 1 called IgG-lambda
    [1, 0, 0, 3, 0, 0, 0, 0, 0],  # IgG-kappa: 3 right, 1 called Negative (false negative)
    [0, 0, 0, 0, 3, 0, 0, 0, 0],  # IgG-lambda: 3 right
    [0, 0, 0, 1, 0, 1, 0, 0, 0],  # IgA-kappa: 1 right, 1 called IgG-kappa
    [0, 0, 0, 0, 0, 0, 0, 0, 0],  # IgA-lambda: none
    [0, 0, 0, 0, 0, 0, 0, 0, 1],  # IgM-kappa: called IgM-lambda
    [0, 0, 0, 0, 0, 0, 0, 0, 2],  # IgM-lambda: 2 right
]
ACCURACY = 19 / 25
FNR = 2 / 15  # 15 positives, 2 of them called Negative
RECALL = [9 / 10, 0.0, 1 / 2, 3 / 4, 1.0, 1 / 2, math.nan, 0.0, 1.0]
# F1 = 2 TP / (support + predicted count) for the 8 classes seen in truth or predictions (IgA-lambda skipped)
F1 = [18 / 21, 0 / 1, 2 / 3, 6 / 9, 6 / 7, 2 / 3, 0 / 1, 4 / 5]
MACRO_F1 = sum(F1) / 8
# training split: kappa 1, IgM-lambda 2, lambda 3 rarest -> minority classes [1, 8, 2]
TRAIN_LABELS = (
    ["Negative"] * 20 + ["kappa"] + ["lambda"] * 3 + ["IgG-kappa"] * 6 + ["IgG-lambda"] * 5 + ["IgA-kappa"] * 4
    + ["IgA-lambda"] * 7 + ["IgM-kappa"] * 9 + ["IgM-lambda"] * 2
)


def _pairs() -> tuple[list[int], list[int]]:
    truth, pred = [], []
    for t, row in enumerate(CM):
        for p, n in enumerate(row):
            truth += [t] * n
            pred += [p] * n
    return truth, pred


def _nan_equal(a: list[float], b: list[float]) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


def test_confusion_matrix_from_pairs():
    truth, pred = _pairs()
    cm = confusion_matrix(truth, pred)
    assert cm.dtype == torch.long and cm.tolist() == CM
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0])
    with pytest.raises(ValueError, match=r"y_pred holds indices outside \[0, 8\]"):
        confusion_matrix([0], [9])


def test_pure_functions_on_fixed_matrix():
    cm = torch.tensor(CM)
    assert accuracy(cm) == pytest.approx(ACCURACY)
    assert false_negative_rate(cm) == pytest.approx(FNR)
    assert _nan_equal(per_class_recall(cm).tolist(), RECALL)
    assert macro_f1(cm) == pytest.approx(MACRO_F1)
    assert minority_accuracy(cm, [1, 8, 2], k=1) == 0.0  # kappa never found
    assert minority_accuracy(cm, [1, 8, 2], k=3) == pytest.approx((0.0 + 1.0 + 0.5) / 3)
    # IgA-lambda (6) has no test sample: skipped, so M1 is undefined and M3 averages the other two
    assert math.isnan(minority_accuracy(cm, [6, 2, 5], k=1))
    assert minority_accuracy(cm, [6, 2, 5], k=3) == pytest.approx(0.5)


def test_edge_cases():
    empty = torch.zeros(9, 9, dtype=torch.long)
    assert math.isnan(accuracy(empty)) and math.isnan(macro_f1(empty)) and math.isnan(false_negative_rate(empty))
    only_negatives = torch.zeros(9, 9, dtype=torch.long)
    only_negatives[0, 0] = 5
    assert math.isnan(false_negative_rate(only_negatives))  # no positives
    assert macro_f1(only_negatives) == 1.0  # one class seen, perfectly
    for bad, match in ((torch.zeros(9, 8), "square"), (torch.full((2, 2), 0.5), "counts"), (-torch.eye(3), "non-neg")):
        with pytest.raises(ValueError, match=match):
            accuracy(bad)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        minority_accuracy(torch.tensor(CM), [1], k=0)


def test_minority_classes_from_labels():
    assert minority_classes_from_labels(TRAIN_LABELS) == [1, 8, 2]
    assert minority_classes_from_labels(TRAIN_LABELS, k=1) == [1]
    indices = [IFE_CLASSES.index(name) for name in TRAIN_LABELS]
    assert minority_classes_from_labels(torch.tensor(indices, dtype=torch.float32)) == [1, 8, 2]
    # ties go to the lower index; classes without any sample are not ranked
    assert minority_classes_from_labels([4, 4, 3, 3, 0, 0, 0], k=3) == [3, 4, 0]
    assert minority_classes_from_labels(["Negative"], k=3) == [0]
    with pytest.raises(ValueError, match="valid names are"):
        minority_classes_from_labels(["IgD-kappa"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        minority_classes_from_labels(TRAIN_LABELS, k=0)


def test_compute_ife_metrics():
    out = compute_ife_metrics(torch.tensor(CM), minority_classes=["kappa", "IgM-lambda", "lambda"])
    assert out["accuracy"] == pytest.approx(ACCURACY) and out["fnr"] == pytest.approx(FNR)
    assert out["m1_acc"] == 0.0 and out["m3_acc"] == pytest.approx(0.5)
    assert out["support"].tolist() == [10, 1, 2, 4, 3, 2, 0, 1, 2]
    # fallback without a training list: rarest classes of the evaluated truth (kappa 1, IgM-kappa 1, lambda 2)
    fallback = compute_ife_metrics(torch.tensor(CM))
    assert fallback["minority_classes"][:3] == [1, 7, 2]
    assert fallback["m3_acc"] == pytest.approx((0.0 + 0.0 + 0.5) / 3)
    with pytest.raises(ValueError, match="9 x 9"):
        compute_ife_metrics(torch.eye(3, dtype=torch.long))


@pytest.mark.parametrize(
    "name, expected", [("accuracy", ACCURACY), ("macro_f1", MACRO_F1), ("fnr", FNR), ("m1_acc", 0.0), ("m3_acc", 0.5)]
)
def test_cumulative_metric_batches(name, expected):
    truth, pred = _pairs()
    metric = IFEClassificationMetric(metric_name=name, minority_classes=[1, 8, 2])
    one_hot = torch.nn.functional.one_hot(torch.tensor(pred), 9).float()
    metric(one_hot[:10], torch.tensor(truth[:10]))  # batch-first: (B, 9) one-hot and (B,) indices
    metric([torch.tensor(p) for p in pred[10:]], [torch.tensor([float(t)]) for t in truth[10:]])  # decollated
    value = metric.aggregate()
    assert value.dtype == torch.float32 and float(value) == pytest.approx(expected, rel=1e-6)
    assert metric.get_buffer().shape == (25, 2)
    assert metric.confusion_matrix().tolist() == CM


def test_report_is_json_ready():
    truth, pred = _pairs()
    metric = IFEClassificationMetric(minority_classes=["kappa", "IgM-lambda", "lambda"])
    metric(torch.tensor(pred), torch.tensor(truth))
    report = metric.report()
    json.dumps(report, allow_nan=False)
    assert report["per_class_recall"]["IgA-lambda"] is None
    assert report["per_class_recall"]["IgG-kappa"] == pytest.approx(0.75)
    assert report["confusion_matrix"] == CM and report["num_samples"] == 25
    assert report["minority_classes"] == ["kappa", "IgM-lambda", "lambda"]
    assert set(metric.aggregate_all()) >= {"accuracy", "macro_f1", "fnr", "m1_acc", "m3_acc", "per_class_recall"}
    metric.reset()
    with pytest.raises(ValueError, match="no buffered predictions"):
        metric.aggregate()


def test_metric_rejects_probabilities_and_bad_options():
    metric = IFEClassificationMetric()
    with pytest.raises(ValueError, match="must be one-hot"):
        metric(torch.full((2, 9), 1 / 9), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="same number of samples"):
        metric(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="f1_macro"):
        IFEClassificationMetric(metric_name="f1_macro")
    with pytest.raises(ValueError, match="must not repeat"):
        IFEClassificationMetric(minority_classes=["kappa", 1])


def test_ignite_handler_from_config():
    # the metric as a bundle config builds it, driven by an ignite engine with decollated outputs
    truth, pred = _pairs()
    config = {
        "metric": {
            "_target_": "IgniteMetricHandler",
            "metric_fn": {
                "_target_": "custom_components.ife.metrics.IFEClassificationMetric",
                "metric_name": "fnr",
            },
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
        }
    }
    handler = ConfigParser(config).get_parsed_content("metric")
    assert isinstance(handler, IgniteMetricHandler)
    batches = [(pred[i : i + 8], truth[i : i + 8]) for i in range(0, 25, 8)]

    def step(engine, batch):
        p, t = batch
        return [{"pred": torch.tensor(pi), "label": torch.tensor(ti)} for pi, ti in zip(p, t)]

    engine = Engine(step)
    handler.attach(engine, "val_fnr")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["val_fnr"] == pytest.approx(FNR, rel=1e-6)
    assert engine.state.metric_details["val_fnr"].shape == (25, 2)
