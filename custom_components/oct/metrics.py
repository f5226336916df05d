# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Fluid segmentation metrics as the literature reports them, built on MONAI's.

Fluid test sets hold many scans without fluid, where a per-scan Dice is undefined (0/0). Papers and challenges
therefore report one of:

- **pooled** (global) Dice and Jaccard: true/false positives and false negatives summed over every pixel of the
  test set, then one score (MONAI's ``ConfusionMatrixMetric`` with ``compute_sample=False, reduction="sum"``:
  ``"f1 score"`` is the pooled Dice, ``"threat score"`` the pooled Jaccard);
- the **per-scan mean over fluid scans**: Dice per scan, averaged over the scans whose ground truth has fluid
  (MONAI's ``DiceMetric`` / ``MeanIoU`` with ``ignore_empty=True``: NaN for a scan without fluid, left out of
  the mean);
- how often fluid is **found on a scan that has none** (:class:`FalseFluidScanRate`), the clinically costly error
  that both Dice variants hide.

With fluid types (one channel per type) each stays a measure per scan: the pooled scores sum every channel (a pixel
is right only with its type right), the per-scan means see a scan's channels as one image (:func:`per_scan_output`),
and a scan without fluid is one with no fluid of any type.

The bundle configs attach each as an ``IgniteMetricHandler`` (``validate#key_metric`` and
``validate#additional_metrics`` of ``bundles/oct_fluid_seg/configs/train.json``); MONAI's cumulative buffers gather
them across ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.handlers import from_engine
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

__all__ = ["FalseFluidScanRate", "per_scan_output"]


def per_scan_output(keys: Sequence[str] = ("pred", "label")) -> Callable[[Any], tuple[list, ...]]:
    """An ``IgniteMetricHandler`` ``output_transform``: :func:`monai.handlers.from_engine` of ``keys``, each item's
    ``(C, H, W[, S])`` channels stacked along its first spatial axis into ``(1, C * H, W[, S])``.

    MONAI's ``DiceMetric`` and ``MeanIoU`` score each (scan, channel) pair; on the stacked items they score each
    scan once over all its fluid types: the Dice of a typed scan counts a pixel right only with its type right (the
    per-scan form of the pooled Dice), and ``ignore_empty`` leaves out the scans with no fluid of any type. One
    channel (the binary model) passes unchanged.
    """
    take = from_engine(list(keys))

    def transform(output: Any) -> tuple[list, ...]:
        return tuple([item.reshape(1, -1, *item.shape[2:]) for item in items] for items in take(output))

    return transform


class FalseFluidScanRate(CumulativeIterationMetric):
    """Share of scans without fluid in the ground truth on which any fluid pixel is predicted.

    Per scan (``y_pred``, ``y``: binary ``(B, C, H, W[, S])``, one channel per fluid class): NaN when the ground
    truth has fluid of any class (the scan does not count), else 1.0 when anything of any class is predicted and 0.0
    when nothing is; :meth:`aggregate` averages over the scans without fluid (NaN when there are none). Buffers
    gather across ranks like every MONAI metric.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if y_pred.shape != y.shape:
            raise ValueError(f"y_pred and y must have the same shape, got {tuple(y_pred.shape)} and {tuple(y.shape)}.")
        dims = tuple(range(1, y.ndim))  # every class and pixel of a scan
        has_fluid = (y > 0.5).any(dim=dims, keepdim=True).flatten(1)  # (B, 1)
        predicted = (y_pred > 0.5).any(dim=dims, keepdim=True).flatten(1).float()
        return torch.where(has_fluid, torch.full_like(predicted, float("nan")), predicted)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError(f"the data to aggregate must be a tensor, got {type(data).__name__}.")
        rate, counted = do_metric_reduction(data, MetricReduction.MEAN)
        # MONAI's mean of nothing but NaN is 0; with no scan without fluid the rate is undefined, not 0
        return torch.where(counted > 0, rate, torch.full_like(rate, float("nan")))
