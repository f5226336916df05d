# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Checking datalist entries before any training starts: all problems at once, each naming its file."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from custom_components.data.datalist import DatalistError
from custom_components.data.image_files import IMAGE_EXTENSIONS, image_shape, read_array, screen_image_file
from custom_components.ife_classes import IFE_CLASSES

__all__ = [
    "MASK_VALUE_SETS",
    "mask_value_problem",
    "listed_problems",
    "validate_classification_entries",
    "validate_segmentation_entries",
]

#: the value sets a fluid mask may hold: what annotation tools export (an all-zero mask is a scan without fluid)
MASK_VALUE_SETS = ({0, 1}, {0, 255})
#: how many problems an error message lists before summarising the rest
_MAX_LISTED = 50


def mask_value_problem(values: np.ndarray | Sequence) -> str | None:
    """The one mask-value check of the project: ``None`` for {0, 1} or {0, 255} values, else what is wrong.

    Anything else (anti-aliased edges, a multi-label map, a grayscale image given by mistake) would silently train
    the wrong target once binarised, so it is refused with the values found.
    """
    found = np.unique(np.asarray(values))
    if any(set(found.tolist()) <= allowed for allowed in MASK_VALUE_SETS):
        return None
    shown = ", ".join(str(v) for v in found[:10]) + (" ..." if found.size > 10 else "")
    return f"mask values must be {{0, 1}} or {{0, 255}}, found {shown}"


def listed_problems(problems: Sequence[str]) -> str:
    """One problem per line, the first fifty, then how many more."""
    listed = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
    return listed + (f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else "")


def _check_all(check: Callable[[dict], list[str]], entries: Sequence[dict], what: str) -> list[dict]:
    if not entries:
        raise DatalistError("the datalist has no entries to train on.")
    # file checks are I/O bound: threads overlap the waits, results keep the datalist's order
    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        problems = [p for found in pool.map(check, entries) for p in found]
    if problems:
        raise DatalistError(f"{len(problems)} of {len(entries)} {what} entries cannot be used:\n{listed_problems(problems)}")
    return list(entries)


def validate_classification_entries(
    entries: Sequence[dict],
    class_names: Sequence[str] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    decode: bool = False,
) -> list[dict]:
    """Check a classification datalist before training: every image readable, every label a known class.

    Args:
        entries: datalist entries with absolute paths (see :func:`~custom_components.data.datalist.load_datalist`).
        class_names: the valid label names (default: the nine IFE classes). Integer labels in
            ``range(len(class_names))`` are accepted too.
        image_key: key of the image path.
        label_key: key of the label.
        decode: decode every pixel rather than only checking the file structure.

    Returns:
        ``entries`` unchanged, so a config can chain it.

    Raises:
        DatalistError: naming each bad entry (its image path) and its problem, all at once; also for an empty list.
    """
    class_names = IFE_CLASSES if class_names is None else class_names
    valid = set(class_names)

    def check(entry: dict) -> list[str]:
        image = entry.get(image_key)
        if image is None:
            return [f"{entry}: no {image_key!r} key"]
        problems = []
        error = screen_image_file(image, decode=decode, extensions=IMAGE_EXTENSIONS)
        if error:
            problems.append(f"{image}: {error}")
        label = entry.get(label_key)
        is_index = isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(class_names)
        if label not in valid and not is_index:
            problems.append(f"{image}: unknown label {label!r} (valid: {', '.join(class_names)})")
        return problems

    return _check_all(check, entries, "classification")


def validate_segmentation_entries(
    entries: Sequence[dict], image_key: str = "image", label_key: str = "label", decode: bool = False
) -> list[dict]:
    """Check a segmentation datalist before training: image and mask readable 2D files, same size, mask binary.

    A mask must hold only {0, 1} or only {0, 255} (:func:`mask_value_problem`); the bundles then binarise it with
    MONAI's ``AsDiscreted(threshold=0.5)``.

    Args:
        entries: datalist entries with absolute paths (see :func:`~custom_components.data.datalist.load_datalist`).
        image_key: key of the image path.
        label_key: key of the mask path.
        decode: decode every image rather than only checking the file structure (masks are always decoded).

    Returns:
        ``entries`` unchanged, so a config can chain it.

    Raises:
        DatalistError: naming each bad file and its problem (missing, unreadable, size mismatch with both sizes,
            unexpected mask values), all at once; also for an empty list.
    """

    def check(entry: dict) -> list[str]:
        image, mask = entry.get(image_key), entry.get(label_key)
        if image is None or mask is None:
            return [f"{entry}: needs both {image_key!r} and {label_key!r}"]
        problems = [
            f"{p}: {e}" for p in (image, mask) if (e := screen_image_file(p, decode=decode, extensions=IMAGE_EXTENSIONS))
        ]
        if problems:
            return problems
        try:
            image_size, mask_size = image_shape(image), image_shape(mask)
            if image_size != mask_size:
                return [f"{mask}: mask size {mask_size} differs from image size {image_size} of {image}"]
            problem = mask_value_problem(read_array(mask))
        except Exception as err:  # a header that parses but pixels that do not
            return [f"{mask}: unreadable mask ({type(err).__name__}: {err})"]
        return [f"{mask}: {problem}"] if problem else []

    return _check_all(check, entries, "segmentation")
