"""Calibrated IFE calls, in one place: top-label calibration error and per-head temperature scaling
(``temperature``), the calibration record beside a checkpoint (``record``), and the fit after training with its
ignite handler (``handler``)."""

from .handler import IFECalibrator, calibrate_checkpoint
from .record import CalibrationError, calibration_path, read_calibration, write_calibration
from .temperature import (
    TemperedOutput,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    temper_probabilities,
)
