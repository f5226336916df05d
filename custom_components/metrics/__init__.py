"""Metrics: the IFE paper's classification metrics (accuracy, macro F1, FNR, M1/M3-Acc, per-class recall), top-label
calibration error and temperature scaling (``calibration``), the scan-level false fluid rate that completes MONAI's
segmentation metrics for fluid; fluid volume per ETDRS sector of an OCT volume (``etdrs``)."""

from .etdrs import ETDRS_SECTORS, ProvenanceSource, en_face_thickness, fluid_volumes, sector_masks
from .calibration import (
    TemperedOutput,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    temper_probabilities,
)
from .ife import IFEClassificationMetric, IFEMetricName, compute_ife_metrics, json_report, minority_classes_from_labels
from .segmentation import FalseFluidScanRate
