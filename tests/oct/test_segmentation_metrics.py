"""Tests of custom_components.oct.metrics: FalseFluidScanRate and the per-scan output of typed models."""

from __future__ import annotations

import math

import pytest
import torch

from monai.metrics import DiceMetric

from custom_components.oct.metrics import FalseFluidScanRate, per_scan_output


def _scan(pred_pixels: int, true_pixels: int, shape=(1, 4, 4)):
    pred, truth = torch.zeros(shape), torch.zeros(shape)
    pred.view(-1)[:pred_pixels] = 1
    truth.view(-1)[truth.numel() - true_pixels :] = 1  # the last pixels; none for 0
    return pred, truth


def test_rate_counts_only_scans_without_fluid():
    metric = FalseFluidScanRate()
    scans = [_scan(0, 0), _scan(3, 0), _scan(1, 0), _scan(0, 5), _scan(4, 4)]  # 3 normal scans, 2 with fluid
    pred = torch.stack([p for p, _ in scans])
    truth = torch.stack([t for _, t in scans])
    per_scan = metric(pred, truth)
    assert per_scan.shape == (5, 1)
    assert per_scan[:3, 0].tolist() == [0.0, 1.0, 1.0] and torch.isnan(per_scan[3:]).all()
    assert metric.aggregate().item() == pytest.approx(2 / 3)


def test_rate_over_volumes_and_batches_accumulates():
    metric = FalseFluidScanRate()
    metric(*[t[None] for t in _scan(1, 0, (1, 3, 3, 2))])
    metric(*[t[None] for t in _scan(0, 0, (1, 3, 3, 2))])
    assert metric.aggregate().item() == pytest.approx(0.5)
    metric.reset()
    metric(*[t[None] for t in _scan(1, 2)])
    assert math.isnan(metric.aggregate().item())  # no scan without fluid: undefined, not 0


def test_rate_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\) and \(1, 1, 4, 5\)"):
        FalseFluidScanRate()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))


def _typed(*channels):
    """A (C, 2, 2) scan of one channel per fluid type, each given by its four pixels."""
    return torch.tensor(channels, dtype=torch.float32).reshape(len(channels), 2, 2)


def test_typed_rate_counts_a_scan_once_over_its_types():
    """IRF true, IRF and a pixel of SRF predicted: a scan with fluid (not a false-fluid scan of SRF); a scan with no
    fluid of any type but SRF predicted: false fluid."""
    irf_truth, irf_pred = _typed([1, 1, 0, 0], [0] * 4, [0] * 4), _typed([1, 1, 0, 0], [0, 0, 1, 0], [0] * 4)
    normal_truth, normal_pred = _typed(*[[0] * 4] * 3), _typed([0] * 4, [0, 1, 0, 0], [0] * 4)
    per_scan = FalseFluidScanRate()(torch.stack([irf_pred, normal_pred]), torch.stack([irf_truth, normal_truth]))
    assert per_scan.shape == (2, 1) and math.isnan(per_scan[0, 0].item()) and per_scan[1, 0].item() == 1.0


def test_per_scan_output_scores_each_typed_scan_once_with_its_types_right():
    """Truth: 2 IRF pixels. Prediction: 1 of them as IRF, the other as SRF. Per type, MONAI's Dice would be 2/3 for IRF
    and 0 for SRF (and NaN for PED); over the scan's types a pixel counts only with its type right: 2*1 / (2 + 2)."""
    truth, pred = _typed([1, 1, 0, 0], [0] * 4, [0] * 4), _typed([1, 0, 0, 0], [0, 1, 0, 0], [0] * 4)
    preds, labels = per_scan_output()([{"pred": pred, "label": truth}, {"pred": truth, "label": truth}])
    assert preds[0].shape == (1, 6, 2) and labels[0].shape == (1, 6, 2)
    dice = DiceMetric(include_background=True, ignore_empty=True)(torch.stack(preds), torch.stack(labels))
    assert dice[:, 0].tolist() == pytest.approx([0.5, 1.0])
    binary = torch.zeros(1, 4, 5)
    assert per_scan_output()([{"pred": binary, "label": binary}])[0][0].shape == (1, 4, 5)  # one class: unchanged
