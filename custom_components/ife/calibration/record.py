# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Calibration records stored beside a checkpoint: ``models/model.pt`` -> ``models/model.calibration.json``.

The record holds what :class:`custom_components.ife.calibration.handler.IFECalibrator` fitted on the validation
gels after training: the head temperatures, the refer-to-expert operating point, and the ECE/NLL before and after.
It names the SHA-256 of the weights it was fitted for, so a checkpoint overwritten by a later training run, with
the old record left beside it, is detected: :func:`read_calibration` warns and ignores such a stale record (returns
None, as without one), since temperatures and thresholds fitted for other weights mean nothing for these.

Record::

    {"checkpoint": "model.pt", "weights_sha256": "...",
     "temperatures": {"severe": Ts, "mild": Tm} (multi-task) or {"classes": T} (9-class),
     "fitted_on": {"section": "validation", "count": N},
     "ece_before": ..., "ece_after": ..., "nll_before": ..., "nll_after": ...,
     "operating_point": {...} or null, "written": "<ISO time, UTC>"}
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping
from typing import Any

from custom_components.core.atomic import read_json_file, write_json_atomic
from custom_components.core.recipe import weights_sha256

__all__ = [
    "CALIBRATION_SUFFIX",
    "CalibrationError",
    "calibration_path",
    "write_calibration",
    "read_calibration",
]

CALIBRATION_SUFFIX = ".calibration.json"
logger = logging.getLogger(__name__)


class CalibrationError(ValueError):
    """A calibration record that exists but cannot be used (unreadable, or without temperatures)."""


def calibration_path(checkpoint: str | os.PathLike) -> str:
    """``models/model.pt`` -> ``models/model.calibration.json`` (the stem rule of ``recipe_path``)."""
    root, _ = os.path.splitext(os.fspath(checkpoint))
    return root + CALIBRATION_SUFFIX


def write_calibration(checkpoint: str | os.PathLike, record: Mapping[str, Any]) -> str:
    """Write ``record`` as the calibration of ``checkpoint``, atomically.

    ``checkpoint``, ``weights_sha256`` (of the file as it is now) and ``written`` are filled in; the other entries
    are the caller's (see the module docstring).

    Args:
        checkpoint: the weights file the record belongs to (must exist: its hash is recorded).
        record: at least ``temperatures``, a non-empty mapping of positive numbers.

    Returns:
        the record's path.

    Raises:
        ValueError: when the checkpoint does not exist or the temperatures are missing or not positive.
    """
    checkpoint = os.fspath(checkpoint)
    if not os.path.isfile(checkpoint):
        raise ValueError(f"cannot write a calibration for {checkpoint}: the checkpoint does not exist.")
    _check_temperatures(record.get("temperatures"), checkpoint)
    full = {
        "checkpoint": os.path.basename(checkpoint),
        "weights_sha256": weights_sha256(checkpoint),
        **{k: v for k, v in record.items() if k not in ("checkpoint", "weights_sha256", "written")},
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = calibration_path(checkpoint)
    write_json_atomic(full, path)
    return path


def _check_temperatures(temperatures: Any, where: str) -> None:
    ok = isinstance(temperatures, Mapping) and bool(temperatures) and all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in temperatures.values()
    )
    if not ok:
        raise CalibrationError(f"{where}: 'temperatures' must map head names to numbers > 0, got {temperatures!r}.")


def read_calibration(checkpoint: str | os.PathLike, check_weights: bool = True) -> dict[str, Any] | None:
    """The calibration record beside ``checkpoint``, or None when there is none.

    Args:
        checkpoint: the weights file.
        check_weights: compare the record's ``weights_sha256`` with the checkpoint file; a stale record (fitted for
            other weights: training or a copy replaced them since) is ignored with a warning, and None returned,
            because temperatures and thresholds fitted for other weights mean nothing for these.

    Raises:
        CalibrationError: when the file exists but is not a JSON object with valid ``temperatures``.
    """
    path = calibration_path(checkpoint)
    record = read_json_file(path, "calibration record", CalibrationError)
    if record is None:
        return None
    if not isinstance(record, dict):
        raise CalibrationError(f"{path}: a calibration record must be a JSON object.")
    _check_temperatures(record.get("temperatures"), path)
    if check_weights and os.path.isfile(os.fspath(checkpoint)):
        if record.get("weights_sha256") != weights_sha256(checkpoint):
            logger.warning(
                "%s is stale: it was fitted for other weights than %s, so it is ignored (recalibrate with "
                "configs/calibrate.json).", path, checkpoint,
            )  # fmt: skip
            return None
    return record
