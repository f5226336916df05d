# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Datalists: reading, checking before training, splitting, and the embedded synthetic default.

A datalist is a MONAI decathlon-style JSON file::

    {"training":   [{"image": "images/a.png", "label": "IgG-kappa"}, ...],
     "validation": [...],
     "testing":    [{"image": "images/z.png"}, ...]}

Paths are relative to the datalist's folder (absolute paths work too). For classification the label is a class
name; for segmentation it is the path of the mask. A missing ``validation`` list is fine: the bundles then take a
stratified validation split from ``training`` (never from ``testing``).

Bad input is reported before any training starts, all problems at once, each naming its file.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from custom_components.data.image_files import (
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    screen_image_file,
    image_shape,
    read_array,
)

__all__ = [
    "DatalistError",
    "DATALIST_NAME",
    "load_datalist",
    "validate_classification_entries",
    "validate_segmentation_entries",
    "stratified_split",
    "stratified_kfold",
    "median_aspect",
    "prepare_dataset",
    "list_images",
    "scan_inputs",
]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"
#: how many problems an error message lists before summarising the rest
_MAX_LISTED = 50


class DatalistError(ValueError):
    """A datalist, or a file it names, cannot be used. The message names every bad entry and its problem."""


def _looks_like_path(value: object) -> bool:
    return isinstance(value, str) and value.lower().endswith(IMAGE_EXTENSIONS + NIFTI_EXTENSIONS)


def load_datalist(
    datalist_path: str | os.PathLike, section: str, path_keys: Sequence[str] | None = None
) -> list[dict]:
    """Read one section of a datalist, with file paths made absolute.

    Args:
        datalist_path: the JSON file.
        section: ``"training"``, ``"validation"``, ``"testing"`` or any other list in the file. A missing section
            gives an empty list (logged), so a datalist without ``validation`` works.
        path_keys: keys whose values are file paths relative to the datalist's folder. Default: ``"image"``, and
            ``"label"`` when it is a file name (an image or NIfTI extension), never a class name.

    Returns:
        the entries as new dicts, in file order.

    Raises:
        DatalistError: the file is missing or not valid JSON, the section is not a list, or an entry lacks ``image``.
    """
    path = Path(datalist_path)
    if not path.is_file():
        raise DatalistError(f"datalist {path} not found.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatalistError(f"datalist {path} is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DatalistError(
            f"datalist {path} must hold an object with lists such as 'training', got {type(content).__name__}."
        )
    if section not in content:
        logger.info("datalist %s has no %r list; using none.", path, section)
        return []
    items = content[section]
    if not isinstance(items, list):
        raise DatalistError(f"datalist {path}: {section!r} must be a list, got {type(items).__name__}.")
    base = path.parent
    entries = []
    for i, item in enumerate(items):
        if isinstance(item, str):  # a bare path, as MONAI also accepts for unlabelled data
            item = {"image": item}
        if not isinstance(item, dict) or "image" not in item:
            raise DatalistError(f"datalist {path}: {section}[{i}] must be an object with an 'image' key, got {item!r}.")
        entry = dict(item)
        if path_keys is not None:
            keys = list(path_keys)
        else:
            keys = [k for k in ("image", "label") if k == "image" or _looks_like_path(entry.get(k))]
        for key in keys:
            if key in entry and isinstance(entry[key], str):
                entry[key] = str(base / entry[key]) if not os.path.isabs(entry[key]) else entry[key]
        entries.append(entry)
    return entries


def _listed(problems: list[str]) -> str:
    listed = "\n".join(f"  - {p}" for p in problems[:_MAX_LISTED])
    return listed + (f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else "")


def _raise_problems(problems: list[str], total: int, what: str) -> None:
    if problems:
        raise DatalistError(f"{len(problems)} of {total} {what} entries cannot be used:\n{_listed(problems)}")


def _parallel(fn: Callable[[dict], list[str]], entries: Sequence[dict]) -> list[str]:
    # file checks are I/O bound: threads overlap the waits, results keep the datalist's order
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(entries)))) as pool:
        return [p for problems in pool.map(fn, entries) for p in problems]


def validate_classification_entries(
    entries: Sequence[dict],
    class_names: Sequence[str] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    decode: bool = False,
) -> list[dict]:
    """Check a classification datalist before training: every image readable, every label a known class.

    Args:
        entries: datalist entries with absolute paths (see :func:`load_datalist`).
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
    if class_names is None:
        from custom_components.ife_classes import IFE_CLASSES

        class_names = IFE_CLASSES
    if not entries:
        raise DatalistError("the datalist has no entries to train on.")
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

    _raise_problems(_parallel(check, entries), len(entries), "classification")
    return list(entries)


def validate_segmentation_entries(
    entries: Sequence[dict], image_key: str = "image", label_key: str = "label", decode: bool = False
) -> list[dict]:
    """Check a segmentation datalist before training: image and mask readable 2D files, same size, mask binary.

    A mask must hold only {0, 1} or only {0, 255} (an all-zero mask is fine: a scan without fluid).

    Args:
        entries: datalist entries with absolute paths (see :func:`load_datalist`).
        image_key: key of the image path.
        label_key: key of the mask path.
        decode: decode every image rather than only checking the file structure (masks are always decoded).

    Returns:
        ``entries`` unchanged, so a config can chain it.

    Raises:
        DatalistError: naming each bad file and its problem (missing, unreadable, size mismatch with both sizes,
            unexpected mask values), all at once; also for an empty list.
    """
    if not entries:
        raise DatalistError("the datalist has no entries to train on.")

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
            values = np.unique(read_array(mask))
        except Exception as err:  # a header that parses but pixels that do not
            return [f"{mask}: unreadable mask ({type(err).__name__}: {err})"]
        if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
            shown = ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
            return [f"{mask}: mask values must be {{0, 1}} or {{0, 255}}, found {shown}"]
        return []

    _raise_problems(_parallel(check, entries), len(entries), "segmentation")
    return list(entries)


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


def _groups(entries: Sequence[dict], key: str | Callable[[dict], object] | None) -> dict[object, list[int]]:
    groups: dict[object, list[int]] = defaultdict(list)
    for i, entry in enumerate(entries):
        value = None if key is None else (key(entry) if callable(key) else entry.get(key))
        groups[str(value)].append(i)
    return groups


def stratified_split(
    entries: Sequence[dict],
    val_fraction: float = 0.2,
    seed: int = 0,
    key: str | Callable[[dict], object] | None = "label",
) -> tuple[list[dict], list[dict]]:
    """Split entries into training and validation, keeping each group's share (deterministic for a seed).

    Each group (entries with the same ``key`` value) contributes ``round(n * val_fraction)`` entries to validation,
    at least one when it has two or more entries and never all of them, so rare classes appear on both sides.

    Args:
        entries: datalist entries.
        val_fraction: share of each group for validation, in (0, 1).
        seed: random seed.
        key: the entry key (or a function of the entry) to stratify on; ``None`` for a plain random split.
            Unique values (e.g. mask paths) degrade gracefully to a random split.

    Returns:
        ``(train, val)``, each in the original order.

    Raises:
        ValueError: on ``val_fraction`` outside (0, 1).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
    groups = _groups(entries, key)
    if len(groups) == len(entries):  # every value unique: stratifying is meaningless
        groups = {"all": list(range(len(entries)))}
    rng = random.Random(seed)
    val_index: set[int] = set()
    for name in sorted(groups):
        members = groups[name][:]
        rng.shuffle(members)
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_index.update(members[:n_val])
    train = [e for i, e in enumerate(entries) if i not in val_index]
    val = [e for i, e in enumerate(entries) if i in val_index]
    return train, val


def stratified_kfold(
    entries: Sequence[dict], folds: int = 5, seed: int = 0, key: str | Callable[[dict], object] | None = None
) -> list[tuple[list[dict], list[dict]]]:
    """K-fold split, stratified on ``key`` (round-robin within each shuffled group).

    Returns:
        ``folds`` pairs ``(train, held_out)``; every entry is held out exactly once.

    Raises:
        ValueError: on ``folds < 2`` or more folds than entries.
    """
    if folds < 2 or folds > len(entries):
        raise ValueError(f"folds must be in [2, {len(entries)}] for {len(entries)} entries, got {folds}.")
    rng = random.Random(seed)
    fold_of = [0] * len(entries)
    offset = 0
    for name in sorted(groups := _groups(entries, key)):
        members = groups[name][:]
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold_of[i] = (offset + j) % folds
        offset += len(members)  # continue the round robin so small groups do not all land in fold 0
    return [
        ([e for i, e in enumerate(entries) if fold_of[i] != k], [e for i, e in enumerate(entries) if fold_of[i] == k])
        for k in range(folds)
    ]


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    kind: str,
    synthetic_count: int = 600,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
) -> str:
    """Return the datalist of ``dataset_dir``, writing the synthetic default there first if it has none.

    This is what makes every bundle command run out of the box: point ``dataset_dir`` at your data (a folder with
    ``datalist.json``) and it is used untouched; leave the default and a synthetic data set is generated once.

    Args:
        dataset_dir: the data folder.
        kind: ``"ife"`` (gels) or ``"oct"`` (B-scans with masks), for the synthetic default.
        synthetic_count: number of synthetic images.
        seed: generator seed.
        image_size: ``(H, W)`` of synthetic images; ``None`` for the generator's default.

    Returns:
        the datalist path, as a string.

    Raises:
        DatalistError: when ``dataset_dir`` holds files but no ``datalist.json`` (user data without a datalist
            is never overwritten or guessed at).
        ValueError: on an unknown ``kind``.
    """
    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if datalist.is_file():
        return str(datalist)
    if kind not in ("ife", "oct"):
        raise ValueError(f"kind must be 'ife' or 'oct', got {kind!r}.")
    if root.is_dir() and any(root.iterdir()):
        raise DatalistError(
            f"{root} has files but no {DATALIST_NAME}. Write one (see the bundle's docs/README.md, section Data), "
            "or point dataset_dir at a new folder to generate the synthetic default there."
        )
    logger.info(
        "No %s in %s: generating %d synthetic %s images there (seed %d).",
        DATALIST_NAME, root, synthetic_count, kind, seed,
    )  # fmt: skip
    root.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename into place, so concurrent ranks or an interrupted run never leave a
    # half-written data set behind a valid-looking path
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        kwargs = {} if image_size is None else {"image_size": tuple(int(s) for s in image_size)}
        if kind == "ife":
            from custom_components.data.synthetic.ife import synthesize_ife_dataset as synthesize
        else:
            from custom_components.data.synthetic.oct import synthesize_oct_dataset as synthesize
        synthesize(staging, count=synthetic_count, seed=seed, **kwargs)
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.rename(staging, root)
        logger.info("Synthetic %s data set ready: %s", kind, datalist)
    except OSError:
        if not datalist.is_file():  # someone else's rename did not win either: a real error
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return str(datalist)


def list_images(
    folder_or_file: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS
) -> list[str]:
    """The image files of a folder (searched recursively) or a single file, without opening them.

    Args:
        folder_or_file: a folder, or one file (returned whatever its ending).
        extensions: file endings to pick up in a folder, case-insensitive (``.nii.gz`` works as one ending).

    Returns:
        absolute paths, sorted.

    Raises:
        DatalistError: when ``folder_or_file`` does not exist.
    """
    source = Path(folder_or_file)
    if not source.exists():
        raise DatalistError(f"inference input {source} not found.")
    if source.is_file():
        return [str(source.resolve())]
    endings = tuple(e.lower() for e in extensions)
    return sorted(str(p.resolve()) for p in source.rglob("*") if p.is_file() and p.name.lower().endswith(endings))


def scan_inputs(
    source: str | os.PathLike,
    extensions: Iterable[str] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS,
    skipped_report: str | os.PathLike | None = None,
    section: str = "testing",
    decode: bool = True,
    strict: bool = False,
) -> list[dict]:
    """The one way both bundles list inference inputs: a folder, a single file or a datalist section, screened.

    Every entry is screened the same way (:func:`~custom_components.data.image_files.screen_image_file`: missing, not a
    file, wrong type for this bundle, empty, unreadable or truncated, no pixels, a NIfTI that is neither one B-scan
    nor one volume). One bad file never stops inference over the others: it is logged with its problem, listed in
    ``skipped_report`` (CSV with ``image,error``) and left out of the returned list.

    A datalist source uses only its ``section`` list (default ``testing``), never a fallback to other sections:
    silently predicting on the training images would make results look better than they are.

    Args:
        source: a folder (searched recursively), one image file, or a datalist ``.json`` (its ``section`` list;
            labels and other keys are kept).
        extensions: file types this bundle reads (case-insensitive); a folder is searched for these only.
        skipped_report: where to write the CSV of skipped files (written even when empty, so a run's outputs
            always say whether anything was skipped); ``None`` to only log.
        section: the datalist section used when ``source`` is a ``.json`` file.
        decode: fully decode each image while checking (catches truncated files that a header check misses).
        strict: make any skipped input an error (after writing ``skipped_report``), for pipelines that must not
            go on with a partial result.

    Returns:
        ``[{"image": absolute path, ...}]``, sorted by path for a folder, in file order for a datalist.

    Raises:
        DatalistError: when ``source`` does not exist, holds no image at all (for a datalist: its ``section`` is
            missing or empty; the message lists the sections it has), every input is unusable, or ``strict`` and
            any input is unusable (the message lists them).
    """
    source = Path(source)
    if not source.exists():
        raise DatalistError(f"inference input {source} not found.")
    extensions = tuple(e.lower() for e in extensions)
    if source.is_file() and source.suffix.lower() == ".json":
        entries = load_datalist(source, section)
        if not entries:
            content = json.loads(source.read_text())
            sections = ", ".join(f"{k!r} ({len(v)})" for k, v in content.items() if isinstance(v, list)) or "none"
            raise DatalistError(f"datalist {source} has no entries in {section!r}; its lists: {sections}.")
    else:
        entries = [{"image": path} for path in list_images(source, extensions)]
    if not entries:
        raise DatalistError(f"no images ({', '.join(extensions)}) found in {source}.")

    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        errors = list(pool.map(lambda e: screen_image_file(e["image"], decode=decode, extensions=extensions), entries))
    skipped = [(entry["image"], error) for entry, error in zip(entries, errors) if error]
    for image, error in skipped:
        logger.warning("Skipping %s: %s", image, error)
    if skipped_report is not None:
        report = Path(skipped_report)
        report.parent.mkdir(parents=True, exist_ok=True)
        with open(report, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "error"])
            writer.writerows(skipped)
    if skipped:
        where = f" (listed in {skipped_report})" if skipped_report else ""
        logger.warning("%d of %d inputs skipped as unusable%s.", len(skipped), len(entries), where)
        if strict or len(skipped) == len(entries):
            why = "strict mode stops on any" if strict else "no usable input is left after"
            raise DatalistError(
                f"{why} unusable input: {len(skipped)} of {len(entries)} inference inputs cannot be used:\n"
                + _listed([f"{image}: {error}" for image, error in skipped])
            )
    return [entry for entry, error in zip(entries, errors) if not error]
