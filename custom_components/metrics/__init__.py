"""Metrics: the IFE paper's classification metrics (accuracy, macro F1, FNR, M1/M3-Acc, per-class recall) and the
scan-level false fluid rate that completes MONAI's segmentation metrics for fluid."""

from .ife import IFEClassificationMetric, IFEMetricName, compute_ife_metrics, json_report, minority_classes_from_labels
from .segmentation import FalseFluidScanRate
