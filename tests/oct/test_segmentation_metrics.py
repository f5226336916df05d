"""Tests of custom_components.oct.metrics.FalseFluidScanRate."""

from __future__ import annotations

import math

import pytest
import torch

from custom_components.oct.metrics import FalseFluidScanRate


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
