# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Reading datalists: MONAI's decathlon format with errors that name the file and the problem.

A datalist is a MONAI decathlon-style JSON file::

    {"training":   [{"image": "images/a.png", "label": "IgG-kappa"}, ...],
     "validation": [...],
     "testing":    [{"image": "images/z.png"}, ...]}

Paths are relative to the datalist's folder (absolute paths and paths through ``..`` work too). For classification
the label is a class name; for segmentation it is the path of the mask. A missing ``validation`` list is fine: the
bundles then take a stratified validation split from ``training`` (never from ``testing``), see
:func:`training_and_validation`. This module reads the file and the structure of its entries; what the entries
point to (files, labels, duplicates, leakage between sections) is checked by
:func:`custom_components.core.validation.validate_datalist`.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import reprlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from monai.data import load_decathlon_datalist

from custom_components.core.image_files import IMAGE_EXTENSIONS, NIFTI_EXTENSIONS, image_shape
from custom_components.core.splits import stratified_group_split, stratified_split

__all__ = [
    "DatalistError",
    "DATALIST_NAME",
    "read_datalist_object",
    "section_sizes",
    "listed_problems",
    "load_datalist",
    "training_and_validation",
    "median_aspect",
]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"
#: how many problems an error message lists before summarising the rest
_MAX_LISTED = 50


class DatalistError(ValueError):
    """A datalist, or a file it names, cannot be used. The message names every bad entry and its problem.

    Args:
        message: the whole message.
        problems: the problems one by one, each a line that names its entry (``"training[3] /data/a.png: file not
            found"``) or its section, for tools that list or count them (``scripts/validate_datalist.py``);
            default: the message as the only problem.
    """

    def __init__(self, message: str, problems: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems) if problems else [message]


def listed_problems(problems: Sequence[str], more: str = "") -> str:
    """One problem per line, the first fifty, then how many more (followed by ``more``, e.g. where to see them all)."""
    listed = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
    if len(problems) > _MAX_LISTED:
        listed += f"\n  ... and {len(problems) - _MAX_LISTED} more{more}"
    return listed


def read_datalist_object(datalist_path: str | os.PathLike) -> dict:
    """The datalist's JSON object, after the checks of the file as a whole.

    The file must exist and be UTF-8 text without a byte-order mark (what ``json.dump`` and every editor's "UTF-8"
    write; MONAI's reader refuses a BOM, and a UTF-16 file, Windows' "Unicode", is refused as not UTF-8), hold valid
    JSON, and that JSON must be an object. Keys that are not lists (a decathlon ``name``, ``description``,
    ``labels``) are allowed and ignored.

    Args:
        datalist_path: the JSON file.

    Returns:
        the parsed object.

    Raises:
        DatalistError: naming the file and the problem: not found, not UTF-8 (with the offset of the first bad byte),
            a byte-order mark, not valid JSON (with line and column), not an object.
    """
    path = Path(datalist_path).absolute()
    if not path.is_file():
        raise DatalistError(f"datalist {path} not found.")
    raw = path.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raise DatalistError(f"datalist {path} starts with a UTF-8 byte-order mark: save it as UTF-8 without BOM.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatalistError(
            f"datalist {path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}): save it as UTF-8."
        ) from err
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise DatalistError(f"datalist {path} is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DatalistError(
            f"datalist {path} must hold an object with lists such as 'training', got {type(content).__name__}."
        )
    return content


def section_sizes(content: dict) -> str:
    """The lists of a datalist object and their lengths, e.g. ``"'training' (120), 'testing' (30)"``, for messages
    about a missing or empty section (a misspelt ``"train"`` shows up here)."""
    return ", ".join(f"{k!r} ({len(v)})" for k, v in content.items() if isinstance(v, list)) or "none"


def _entry_structure_problem(item: object) -> str | None:
    """Why a datalist entry cannot be read at all, or ``None``: it must be an object whose ``image`` is one path."""
    if not isinstance(item, dict) or "image" not in item:
        return f"must be an object with an 'image' key, got {reprlib.repr(item)}"
    image = item["image"]
    if not isinstance(image, str) or not image.strip():
        # MONAI would stack a list of files as channels: the bundles read one file per entry
        return f"'image' must be the path of one file, got {reprlib.repr(image)}"
    return None


def load_datalist(datalist_path: str | os.PathLike, section: str) -> list[dict]:
    """Read one section of a datalist with MONAI's ``load_decathlon_datalist``, file paths made absolute.

    ``image`` is always a path relative to the datalist's folder, or absolute; so is ``label`` when it names an image
    or NIfTI file (a mask). Paths are normalised (``images/../images/a.png`` is ``images/a.png``), so a path that
    leaves the datalist's folder with ``..`` works, and the same file written two ways compares equal. A class
    name, and every other value, is kept as written.

    Args:
        datalist_path: the JSON file.
        section: ``"training"``, ``"validation"``, ``"testing"`` or any other list in the file. A missing or empty
            section gives an empty list (logged), so a datalist without ``validation`` works.

    Returns:
        the entries as new dicts, in file order.

    Raises:
        DatalistError: the file cannot be read (see :func:`read_datalist_object`), the section is not a list, or
            entries are not objects whose ``image`` is one path (a bare path string is refused too); the message
            names the file and every such entry (``training[3]``), and ``problems`` lists them.
    """
    path = Path(datalist_path).absolute()
    content = read_datalist_object(path)
    if section not in content:
        logger.info("datalist %s has no %r list (its lists: %s); using none.", path, section, section_sizes(content))
        return []
    items = content[section]
    if not isinstance(items, list):
        problem = f"{section!r} must be a list of entries, got {type(items).__name__}"
        raise DatalistError(f"datalist {path}: {problem}.", [problem])
    if not items:
        logger.info("datalist %s has no entries in %r; using none.", path, section)
        return []
    problems = [f"{section}[{i}]: {p}" for i, item in enumerate(items) if (p := _entry_structure_problem(item))]
    if problems:
        raise DatalistError(
            f"datalist {path}: {len(problems)} of {len(items)} entries of {section!r} cannot be read:\n"
            + listed_problems(problems),
            problems,
        )
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

    Entries that carry a ``group`` (a patient, an eye, a volume) are split in whole groups
    (:func:`~custom_components.core.splits.stratified_group_split`): B-scans of one eye never land on both sides.

    Args:
        datalist_path: the JSON file.
        val_fraction: share of each stratum for validation when the datalist has no ``validation`` list.
        seed: seed of that split.
        key: what the split stratifies on (see :func:`~custom_components.core.splits.stratified_split`).

    Returns:
        ``(training, validation)`` entries with absolute paths.

    Raises:
        DatalistError: as :func:`load_datalist`.
    """
    training = load_datalist(datalist_path, "training")
    validation = load_datalist(datalist_path, "validation")
    if validation:
        return training, validation
    groups = [str(entry["group"]) for entry in training if entry.get("group") is not None]
    if len(set(groups)) < len(groups):  # some group holds several entries (singleton groups split like no groups)
        return stratified_group_split(training, val_fraction, seed, key)
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
