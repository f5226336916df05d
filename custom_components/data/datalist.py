# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Reading datalists: MONAI's decathlon format with errors that name the file and the problem.

A datalist is a MONAI decathlon-style JSON file::

    {"training":   [{"image": "images/a.png", "label": "IgG-kappa"}, ...],
     "validation": [...],
     "testing":    [{"image": "images/z.png"}, ...]}

Paths are relative to the datalist's folder (absolute paths work too). For classification the label is a class
name; for segmentation it is the path of the mask. A missing ``validation`` list is fine: the bundles then take a
stratified validation split from ``training`` (never from ``testing``), see :func:`training_and_validation`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from custom_components.data.image_files import IMAGE_EXTENSIONS, NIFTI_EXTENSIONS, image_shape
from custom_components.data.splits import stratified_split

__all__ = ["DatalistError", "DATALIST_NAME", "load_datalist", "training_and_validation", "median_aspect"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"


class DatalistError(ValueError):
    """A datalist, or a file it names, cannot be used. The message names every bad entry and its problem."""


def _read_sections(path: Path) -> dict:
    """The datalist's JSON object; MONAI's reader gives a bare ``JSONDecodeError`` or ``KeyError`` instead."""
    if not path.is_file():
        raise DatalistError(f"datalist {path} not found.")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatalistError(f"datalist {path} is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DatalistError(
            f"datalist {path} must hold an object with lists such as 'training', got {type(content).__name__}."
        )
    return content


def load_datalist(datalist_path: str | os.PathLike, section: str) -> list[dict]:
    """Read one section of a datalist with MONAI's ``load_decathlon_datalist``, file paths made absolute.

    ``image`` is always a path relative to the datalist's folder (or absolute); so is ``label`` when it names an image
    or NIfTI file (a mask). A class name, and every other value, is kept as written.

    Args:
        datalist_path: the JSON file.
        section: ``"training"``, ``"validation"``, ``"testing"`` or any other list in the file. A missing or empty
            section gives an empty list (logged), so a datalist without ``validation`` works.

    Returns:
        the entries as new dicts, in file order.

    Raises:
        DatalistError: the file is missing or not valid JSON, the section is not a list, or an entry is not an
            object with an ``image`` key (a bare path string is refused too); the message names the file and the
            entry.
    """
    path = Path(datalist_path).absolute()
    content = _read_sections(path)
    items = content.get(section)
    if not items:
        logger.info("datalist %s has no entries in %r; using none.", path, section)
        return []
    if not isinstance(items, list):
        raise DatalistError(f"datalist {path}: {section!r} must be a list, got {type(items).__name__}.")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or "image" not in item:
            raise DatalistError(f"datalist {path}: {section}[{i}] must be an object with an 'image' key, got {item!r}.")
    masks = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS
    is_segmentation = any(str(item.get("label", "")).lower().endswith(masks) for item in items)
    entries = load_decathlon_datalist(path, is_segmentation=is_segmentation, data_list_key=section)
    # MONAI also joins any other value that happens to name something beside the datalist (the class label "kappa"
    # next to a folder "kappa/"): keep those as written
    path_keys = ("image", "label") if is_segmentation else ("image",)
    return [{k: v if k in path_keys else item[k] for k, v in entry.items()} for entry, item in zip(entries, items)]


def training_and_validation(
    datalist_path: str | os.PathLike,
    val_fraction: float = 0.2,
    seed: int = 0,
    key: str | Callable[[dict], object] | None = "label",
) -> tuple[list[dict], list[dict]]:
    """The datalist's ``training`` and ``validation`` lists, or a stratified split of ``training`` without one.

    Args:
        datalist_path: the JSON file.
        val_fraction: share of each group for validation when the datalist has no ``validation`` list.
        seed: seed of that split.
        key: what the split stratifies on (see :func:`~custom_components.data.splits.stratified_split`).

    Returns:
        ``(training, validation)`` entries with absolute paths.

    Raises:
        DatalistError: as :func:`load_datalist`.
    """
    training = load_datalist(datalist_path, "training")
    validation = load_datalist(datalist_path, "validation")
    if validation:
        return training, validation
    return stratified_split(training, val_fraction, seed, key)


def median_aspect(entries: Sequence[dict], image_key: str = "image", max_entries: int = 200) -> float | None:
    """Median rows / columns of a datalist's images, read from file headers (no pixels decoded).

    What a checkpoint records of its training scans' shape, so that inference can warn about a volume whose axes
    look swapped. Up to ``max_entries`` evenly spaced entries are read, which keeps start-up fast on large sets.

    Returns:
        the median aspect, or ``None`` for an empty list or when no header can be read.
    """
    if not entries:
        return None
    step = max(1, math.ceil(len(entries) / max_entries))
    aspects = []
    for entry in list(entries)[::step]:
        try:
            shape = image_shape(entry[image_key])
        except Exception:  # unreadable files are reported by the entry checks, not here
            continue
        if len(shape) >= 2 and min(shape[:2]) > 0:
            aspects.append(shape[0] / shape[1])
    return round(float(np.median(aspects)), 4) if aspects else None
