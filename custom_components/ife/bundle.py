# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""What the ``ife_multitask`` bundle's configs call, so that a config lists what a run uses and the logic and the
long log lines live here, tested: the recipe defaults and geometry, the datalist checks and sections, the inference
inputs, the ONNX network, and the messages a run logs (on the bundle's logger, ``ife_multitask``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from custom_components.core.datalist import load_datalist
from custom_components.core.validation import TRAINING_SECTIONS, validate_datalist
from custom_components.core.image_files import IMAGE_EXTENSIONS
from custom_components.core.inputs import scan_inputs
from custom_components.core.onnx import OnnxRuntimeNetwork
from custom_components.core.runtime import is_not_rank0
from custom_components.core.synthetic import prepare_dataset
from custom_components.ife.calibration.record import calibration_path
from custom_components.ife.classes import IFE_CLASSES
from custom_components.ife.calibration.temperature import TemperedOutput
from custom_components.ife.metrics import minority_classes_from_labels
from custom_components.ife.networks import RESNET18_CHANNELS
from custom_components.ife.synthetic import synthesize_ife_dataset

__all__ = [
    "LOGGER_NAME",
    "RECIPE_DEFAULTS",
    "GEOMETRY_KEYS",
    "validate_ife_datalist",
    "calibration_datalist",
    "training_minority_classes",
    "inference_datalist",
    "onnx_runtime_network",
    "log_training_data",
    "log_calibration_file",
    "log_calibration_start",
    "log_evaluation_start",
    "log_inference_start",
    "log_ensemble_start",
]

#: the bundle's logger (the name its runs have always logged under)
LOGGER_NAME = "ife_multitask"

#: what a checkpoint without a recipe (written before recipes existed) was trained with: the settings of that
#: time's train.json, for ``core.trained_settings`` in inference, evaluation and calibration
RECIPE_DEFAULTS: Mapping[str, Any] = {
    "image_size": 224,
    "lane_layout": False,
    "lane_orientation": "albumin_bottom",
    "channels": list(RESNET18_CHANNELS),
    "stage4_row_stride": 2,
    "tie_attention": False,
}

#: the recipe settings a checkpoint cannot be run without (``core.check_recipe``): the size and the lane layout the
#: network learnt its gels at; a different value is an error, not a warning
GEOMETRY_KEYS = ("image_size", "lane_layout")

logger = logging.getLogger(LOGGER_NAME)


def validate_ife_datalist(
    datalist_file: str | os.PathLike, sections: Sequence[str] | str = TRAINING_SECTIONS, decode: bool = False
) -> str:
    """:func:`custom_components.core.validate_datalist` of a classification datalist whose labels are the nine IFE
    class names (arguments as there). Returns the datalist's path."""
    return validate_datalist(datalist_file, "classification", sections, decode=decode, class_names=IFE_CLASSES)


def calibration_datalist(datalist_file: str | os.PathLike, section: str, val_datalist: Sequence[dict]) -> list:
    """The images a calibration run fits on: the training run's validation split (``val_datalist``) for section
    ``"validation"`` (a datalist may have no such section: the split is then drawn from ``training``), else the
    entries of ``section`` of ``datalist_file``."""
    if section == "validation":
        return val_datalist
    return load_datalist(datalist_file, section)


def training_minority_classes(datalist_file: str | os.PathLike, k: int = 3) -> list[int]:
    """The ``k`` rarest classes of the ``training`` section of ``datalist_file``, rarest first (the M1/M3-Acc
    metrics' minority classes, taken from the training data as the paper does)."""
    return minority_classes_from_labels([entry["label"] for entry in load_datalist(datalist_file, "training")], k=k)


def inference_datalist(
    input_dir: str | os.PathLike | None,
    dataset_dir: str | os.PathLike,
    synthetic_count: int,
    seed: int,
    section: str,
    skipped_report: str | os.PathLike | None,
    strict: bool,
) -> list[dict]:
    """The screened inputs of an inference run, each with its ``label`` as a string (``""`` when it has none).

    Args:
        input_dir: a folder, an image file or a datalist file; if empty, the synthetic demo data set, made in
            ``dataset_dir`` (``synthetic_count`` gels from ``seed``) only then.
        dataset_dir, synthetic_count, seed: the synthetic data set.
        section: the datalist section to read from a datalist.
        skipped_report: where the CSV of skipped inputs goes.
        strict: stop on any unusable input instead of skipping it.
    """
    source = input_dir or prepare_dataset(dataset_dir, synthesize_ife_dataset, synthetic_count, seed)
    entries = scan_inputs(
        source, extensions=IMAGE_EXTENSIONS, section=section, skipped_report=skipped_report, strict=strict
    )
    # the prediction writer's CSV has a label column; a class index or a missing label would read differently
    return [dict(entry, label=str(entry.get("label", ""))) for entry in entries]


def onnx_runtime_network(
    onnx_file: str | os.PathLike | None,
    device: str | torch.device,
    threads: int,
    temperatures: Mapping[str, float] | None,
    multitask: bool,
) -> OnnxRuntimeNetwork | None:
    """The exported network run by ONNX Runtime, with the calibration's temperatures applied to its outputs as
    :class:`~custom_components.ife.networks.ForwardHeads` applies them to the PyTorch network's; ``None`` without
    ``onnx_file``.

    Args:
        onnx_file: the ``.onnx`` file.
        device: where its outputs go.
        threads: ONNX Runtime's intra-op threads (0: its default).
        temperatures: the calibration's temperatures, or ``None`` (uncalibrated).
        multitask: the export is the multi-task network (all heads), not the 9-class baseline (probabilities only).
    """
    if onnx_file is None:
        return None
    return OnnxRuntimeNetwork(
        onnx_file, device=device, intra_op_num_threads=threads,
        output_keys=None if multitask else ["probabilities"],
        output_transform=TemperedOutput(temperatures, heads=multitask),
    )  # fmt: skip


def log_training_data(datalist_file: str, train_datalist: Sequence, val_datalist: Sequence) -> None:
    """Log the datalist a training run reads and the sizes of its training and validation splits."""
    logger.info(
        "datalist %s: %d training and %d validation images", datalist_file, len(train_datalist), len(val_datalist)
    )


def log_calibration_file(checkpoint: str, calibrate: bool) -> None:
    """Log, on rank 0 of a run that calibrates, where the calibration record of ``checkpoint`` was written."""
    if is_not_rank0() or not calibrate:
        return
    logger.info("calibration (temperatures, refer-to-expert operating point): %s", calibration_path(checkpoint))


def log_calibration_start(
    checkpoint: str, image_size: int, datalist: Sequence, section: str, datalist_file: str
) -> None:
    """Log what a calibration run calibrates, at which size, on which images."""
    logger.info(
        "calibrating %s (%d px) on %d images of section %r of %s",
        checkpoint, image_size, len(datalist), section, datalist_file,
    )  # fmt: skip


def log_evaluation_start(
    checkpoint: str, image_size: int, datalist: Sequence, section: str, datalist_file: str, calibration: Any
) -> None:
    """Log what an evaluation evaluates, and warn when the checkpoint has no calibration record (``calibration``
    is ``None``): its calibration metrics are then those of the raw probabilities."""
    logger.info(
        "evaluating %s (%d px) on %d images of section %r of %s",
        checkpoint, image_size, len(datalist), section, datalist_file,
    )  # fmt: skip
    if calibration is None:
        logger.warning(
            "%s has no calibration record (%s): ECE, coverage and FNR are those of the uncalibrated probabilities, "
            "without a refer-to-expert operating point; run configs/calibrate.json",
            checkpoint, calibration_path(checkpoint),
        )  # fmt: skip


def log_inference_start(
    checkpoint: str,
    use_calibration: bool,
    calibration: Any,
    datalist: Sequence,
    image_size: int,
    onnx_file: str | None,
) -> None:
    """Log what an inference run uses: a warning when calibration is wanted but ``checkpoint`` has none, the
    number of inputs, the size and the model, and that an ONNX model gives no attention maps."""
    if use_calibration and calibration is None:
        logger.warning(
            '%s: no calibration record (%s): uncalibrated probabilities, and refer is false with reason "not '
            'calibrated" unless a band pattern or unread lanes say otherwise', checkpoint, calibration_path(checkpoint),
        )  # fmt: skip
    logger.info("inference on %d images at %d px with %s", len(datalist), image_size, onnx_file or checkpoint)
    if onnx_file:
        logger.info(
            "onnxruntime runs %s: predictions without attention maps (no attention figures, "
            "attention_profiles.jsonl or attention peak rows)", onnx_file,
        )  # fmt: skip


def log_ensemble_start(datalist: Sequence, image_size: int, checkpoints: Sequence[str]) -> None:
    """Log the number of inputs, the size and the fold models of an ensemble inference run."""
    logger.info(
        "inference on %d images at %d px with the mean of %d fold models: %s",
        len(datalist), image_size, len(checkpoints), ", ".join(checkpoints),
    )  # fmt: skip
