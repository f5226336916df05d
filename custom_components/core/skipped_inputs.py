# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Inference inputs that fail after screening: passed over by the evaluator and added to the skipped-inputs CSV.

:func:`skip_failed_inputs` is the evaluator's ``iteration_update``: it takes the failure records that
:func:`~custom_components.core.inputs.collate_skipping_failures` put in the batch and runs MONAI's own iteration on
the inputs that loaded (none: the batch is passed over). :class:`SkippedInputsReport` appends the records to the CSV
that screening wrote (``image,error``), so one file lists every input without a result, whenever it failed.
The batch's images must be under ``"image"`` (MONAI's ``CommonKeys.IMAGE``, what ``SupervisedEvaluator`` reads).
"""

from __future__ import annotations

import csv
import logging
import os
from typing import TYPE_CHECKING, Any

from monai.utils import CommonKeys, IgniteInfo, min_version, optional_import

from custom_components.core.inputs import FAILED_INPUTS
from custom_components.core.atomic import write_csv_atomic
from custom_components.core.events import attach_once

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["skip_failed_inputs", "SkippedInputsReport"]


def skip_failed_inputs(engine: Engine, batch: dict) -> Any:
    """Iteration of a MONAI ``SupervisedEvaluator`` (its ``iteration_update``) over batches that may hold failures.

    The batch's ``FAILED_INPUTS`` list moves to ``engine.state.failed_inputs`` (so the writers' decollation never
    sees it); the evaluator's own ``_iteration`` then runs on what loaded, and a batch in which nothing loaded gives
    no output (``None``) instead of stopping the run.
    """
    engine.state.failed_inputs = batch.pop(FAILED_INPUTS, [])  # read by SkippedInputsReport
    if CommonKeys.IMAGE not in batch:
        return None
    return engine._iteration(engine, batch)


class SkippedInputsReport:
    """Add the inputs that failed during the run (``engine.state.failed_inputs``) to the skipped-inputs CSV.

    The CSV (``image,error``) is the one :func:`~custom_components.core.inputs.scan_inputs` wrote before the run. It
    is rewritten, atomically, at the end of every iteration that had failures, so it is complete also when the run
    stops early for another reason; iterations without failures leave it as it is.

    Args:
        path: the skipped-inputs CSV.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        attach_once(engine, (Events.ITERATION_COMPLETED, self))

    def __call__(self, engine: Engine) -> None:
        failed = getattr(engine.state, "failed_inputs", None)
        if not failed:
            return
        rows = []
        if os.path.isfile(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        write_csv_atomic(self.path, ["image", "error"], rows + list(failed))
        self.logger.warning("%d more inputs failed while loading; listed in %s.", len(failed), self.path)
