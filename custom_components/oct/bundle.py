# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""What the ``oct_fluid_seg`` bundle's configs call, so that a config lists what a run uses and the logic and the
long log lines live here, tested: the recipe defaults, the inference inputs and the messages a run logs (on the
bundle's logger, ``oct_fluid_seg``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from custom_components.core.datalist import load_datalist
from custom_components.core.image_files import read_array
from custom_components.core.inputs import scan_inputs
from custom_components.core.runtime import is_not_rank0
from custom_components.core.synthetic import prepare_dataset
from custom_components.oct.fluid_types import BINARY_FLUID, check_fluid_classes, fluid_classes_of_masks
from custom_components.oct.synthetic import synthesize_oct_dataset
from custom_components.oct.volumes import OCT_EXTENSIONS

__all__ = [
    "LOGGER_NAME",
    "RECIPE_DEFAULTS",
    "training_fluid_classes",
    "check_evaluation_masks",
    "inference_datalist",
    "log_training_data",
    "log_inference_start",
    "log_inference_outputs",
    "log_evaluation_start",
    "log_evaluation_metrics",
]

#: the bundle's logger (the name its runs have always logged under)
LOGGER_NAME = "oct_fluid_seg"

#: what a checkpoint without a recipe (written before recipes existed) was trained with: the settings of that
#: time's train.json, for ``core.trained_settings`` in inference and evaluation (no training aspect: unchecked)
RECIPE_DEFAULTS: Mapping[str, Any] = {
    "image_size": 512,
    "geometry": "resize",
    "filters": [64, 128, 256, 512, 1024],
    "patch_size": 1,
    "embed_dim": 96,
    "training_aspect": None,
    "fluid_classes": list(BINARY_FLUID),
}

logger = logging.getLogger(LOGGER_NAME)


def inference_datalist(
    input_dir: str | os.PathLike | None,
    dataset_dir: str | os.PathLike,
    synthetic_count: int,
    seed: int,
    image_size: int,
    section: str,
    skipped_report: str | os.PathLike | None,
    strict: bool,
) -> list[dict]:
    """The screened inputs of an inference run (B-scans, volumes, vendor files).

    Args:
        input_dir: a folder, a file or a datalist file; if empty, the synthetic demo data set, made in
            ``dataset_dir`` (``synthetic_count`` B-scans of ``image_size`` pixels from ``seed``) only then.
        dataset_dir, synthetic_count, seed, image_size: the synthetic data set.
        section: the datalist section to read from a datalist.
        skipped_report: where the CSV of skipped inputs goes.
        strict: stop on any unusable input instead of skipping it.
    """
    source = input_dir or prepare_dataset(
        dataset_dir, synthesize_oct_dataset, synthetic_count, seed, [image_size, image_size]
    )
    return scan_inputs(
        source, section=section, skipped_report=skipped_report, strict=strict, extensions=OCT_EXTENSIONS
    )


def training_fluid_classes(
    datalist_file: str | os.PathLike,
    setting: str | Sequence[str] = "auto",
    sections: Sequence[str] = ("training", "validation"),
) -> list[str]:
    """The fluid classes a training run segments, one network output channel each, and the log line saying which.

    Args:
        datalist_file: the training datalist.
        setting: ``"auto"`` to read them from the masks of ``sections`` (binary masks: ``["fluid"]``, the paper's
            protocol; masks with fluid-type values 2 or 3: ``["IRF", "SRF", "PED"]``, see
            :func:`~custom_components.oct.fluid_types.fluid_classes_of_masks`), or the classes themselves, e.g.
            ``["fluid"]`` to train the paper's one class on typed masks (the union of the types).

    Raises:
        ValueError: on classes that are neither, or masks that mix the binary 255 with fluid-type values.
    """
    if setting != "auto":
        classes = check_fluid_classes(setting)
        logger.info("fluid classes %s, as set (fluid_classes)", ", ".join(classes))
        return list(classes)
    masks = [e["label"] for section in sections for e in load_datalist(datalist_file, section)]
    values = [{int(v) for v in np.unique(read_array(mask))} for mask in masks]
    classes = fluid_classes_of_masks(values)
    kind = "fluid-type values 1 IRF, 2 SRF, 3 PED" if classes != BINARY_FLUID else "binary masks"
    if classes != BINARY_FLUID:  # a binary 0/1 mask among label maps reads as IRF alone: say how many could be
        kind += f"; {sum(v == {0, 1} for v in values)} of them hold IRF alone (1), as a binary 0/1 mask would"
    logger.info("fluid classes %s: read from %d masks (%s)", ", ".join(classes), len(masks), kind)
    return list(classes)


def check_evaluation_masks(datalist: Sequence[Mapping], classes: Sequence[str]) -> None:
    """Check that the masks of an evaluation can be scored against a model's fluid classes.

    A binary model scores any mask (its fluid is the union of the types). A typed model needs label maps of 0-3:
    a mask with other values (a binary 0/255 mask) is refused, naming it; masks with no SRF (2) or PED (3) at all
    are scored, with a warning that binary 0/1 masks would count all their fluid as IRF.

    Raises:
        ValueError: naming the first mask a typed model cannot be scored on, and its values.
    """
    classes = check_fluid_classes(classes)
    if classes == BINARY_FLUID:
        return
    seen: set[int] = set()
    for entry in datalist:
        values = {int(v) for v in np.unique(read_array(entry["label"]))}
        if values - {0, 1, 2, 3}:
            raise ValueError(
                f"{entry['label']}: the model segments {', '.join(classes)} (its recipe's fluid_classes) and is scored "
                f"on label maps of 0-3 (1 IRF, 2 SRF, 3 PED), but this mask holds {sorted(values)}: evaluate a "
                "binary fluid model on binary masks."
            )
        seen |= values
    if datalist and not seen & {2, 3}:
        logger.warning(
            "none of the %d masks holds SRF (2) or PED (3): if they are binary 0/1 fluid masks, the typed model's "
            "scores count all their fluid as IRF", len(datalist),
        )  # fmt: skip


def log_training_data(
    datalist_file: str, train_datalist: Sequence, val_datalist: Sequence, geometry: str, image_size: int
) -> None:
    """Log the datalist a training run reads, the sizes of its splits and the geometry it trains at."""
    logger.info(
        "datalist %s: %d training and %d validation B-scans, %s geometry at %d px",
        datalist_file, len(train_datalist), len(val_datalist), geometry, image_size,
    )  # fmt: skip


def log_inference_start(
    datalist: Sequence, checkpoint: str, onnx_file: str | None, geometry: str, image_size: int
) -> None:
    """Log the number of inputs of an inference run, the model (the ONNX file if given) and its geometry."""
    logger.info(
        "segmenting %d inputs with %s (%s geometry at %d px)", len(datalist), onnx_file or checkpoint, geometry,
        image_size,
    )  # fmt: skip


def log_inference_outputs(output_dir: str, fluid_report: bool) -> None:
    """Log what an inference run wrote to ``output_dir`` (the fluid report only when it was asked for)."""
    report = ", fluid_report.csv and reports/" if fluid_report else ""
    logger.info("masks, overlays, fluid_measurements.csv%s in %s", report, output_dir)


def log_evaluation_start(
    checkpoint: str, geometry: str, image_size: int, datalist: Sequence, section: str, datalist_file: str
) -> None:
    """Log what an evaluation evaluates, at which geometry, on which B-scans."""
    logger.info(
        "evaluating %s (%s geometry at %d px) on %d B-scans of section %r of %s",
        checkpoint, geometry, image_size, len(datalist), section, datalist_file,
    )  # fmt: skip


def log_evaluation_metrics(noise_sigma: float, metrics_file: str) -> None:
    """Log, on rank 0 only, where an evaluation wrote its clean and noisy metrics."""
    if is_not_rank0():
        return
    logger.info("metrics (clean and noisy, sigma %s): %s; per-scan tables beside it", noise_sigma, metrics_file)
