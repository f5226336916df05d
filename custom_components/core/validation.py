# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Checking a datalist before any training starts: all problems at once, each naming its entry and file.

:func:`validate_datalist` is what training start-up, evaluation and ``scripts/validate_datalist.py`` run, so the
three give the same verdict in the same words. It checks, for the sections a command uses:

- the file as a whole and the structure of each section and entry (:mod:`custom_components.core.datalist`);
- that each section holds entries (``validation`` may be missing or empty: the bundles then split it from
  ``training``);
- each entry's files (:func:`~custom_components.core.image_files.screen_image_file`) and label: a known class for
  classification; for segmentation a mask of the image's size holding only {0, 1} or {0, 255};
- repeats, compared by normalised absolute path: the same image twice within a section (it would count twice in
  training or in a score), in ``training`` and ``validation`` (the score that picks the best checkpoint would be
  measured on training images), or in ``testing`` and ``training``/``validation`` (leakage: the test results
  would be inflated). Each is an error; the later entry is the one named, with the earlier one it repeats. One
  mask shared by several images (an all-zero mask for every scan without fluid) is fine.

Every problem is one line naming the entry as ``section[index]`` (0-based, in file order), its image path, and
what is wrong; an entry with several problems gets one line with all of them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from custom_components.core.datalist import (
    DatalistError,
    listed_problems,
    load_datalist,
    read_datalist_object,
    section_sizes,
)
from custom_components.core.image_files import (
    IMAGE_EXTENSIONS,
    image_shape,
    printable_path,
    read_array,
    screen_image_file,
)
from custom_components.core.splits import SECTIONS

__all__ = [
    "TASKS",
    "TRAINING_SECTIONS",
    "MASK_VALUE_SETS",
    "mask_value_problem",
    "listed_problems",
    "SectionReport",
    "DatalistReport",
    "check_datalist",
    "validate_datalist",
]

#: the tasks a datalist can be checked for: class names as labels (IFE) or mask paths as labels (OCT)
TASKS = ("classification", "segmentation")
#: the value sets a fluid mask may hold: binary, as annotation tools export it (an all-zero mask is a scan without
#: fluid), or a label map of fluid types (RETOUCH's values: 1 IRF, 2 SRF, 3 PED; ``custom_components.oct.fluid_types``)
MASK_VALUE_SETS = ({0, 1}, {0, 255}, {0, 1, 2, 3})
#: the sections training start-up checks: the bundles train on the first and validate on the second
TRAINING_SECTIONS = ("training", "validation")
#: why an image repeated from an earlier section is refused, by (earlier section, later section)
_LEAKAGE = {
    ("training", "validation"): "validating on a training image inflates the score that picks the best checkpoint",
    ("training", "testing"): "testing on a training image inflates the test results",
    ("validation", "testing"): "testing on an image that picked the checkpoint inflates the test results",
}
#: entries per task of the thread pool: small enough to share the work out, large enough that the pool's own
#: bookkeeping (a future per task) stays negligible next to the checks
_CHUNK = 128


def mask_value_problem(values: np.ndarray | Sequence) -> str | None:
    """The one mask-value check of the project: ``None`` for {0, 1}, {0, 255} or fluid-type {0, 1, 2, 3} values,
    else what is wrong.

    Anything else (anti-aliased edges, a multi-label map, a grayscale image given by mistake) would silently train
    the wrong target once binarised, so it is refused with the values found.
    """
    values = np.asarray(values)
    if values.dtype in (np.uint8, np.bool_):  # what mask files decode to: counting is much faster than sorting
        found = np.flatnonzero(np.bincount(values.ravel().view(np.uint8), minlength=2)).astype(values.dtype)
    else:
        found = np.unique(values)
    if any(set(found.tolist()) <= allowed for allowed in MASK_VALUE_SETS):
        return None
    shown = ", ".join(str(v) for v in found[:10]) + (" ..." if found.size > 10 else "")
    return f"mask values must be {{0, 1}} or {{0, 255}} (binary), or within {{0, 1, 2, 3}} (fluid types), found {shown}"


def _class_name(label: object, class_names: Sequence[str]) -> str | None:
    """The class a label names (a name, or an index into ``class_names``), ``None`` when it names none."""
    if isinstance(label, str):
        return label if label in class_names else None
    if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(class_names):
        return class_names[label]
    return None


def _required_class_names(class_names: Sequence[str] | None) -> tuple[str, ...]:
    """The valid label names of a classification datalist, which the bundle hands in (the IFE bundle its nine)."""
    if not class_names:
        raise ValueError("checking a classification datalist needs the valid class names (class_names).")
    return tuple(class_names)


def _classification_checker(
    class_names: Sequence[str], image_key: str, label_key: str, decode: bool
) -> Callable[[dict], list[str]]:
    """The problems of one classification entry: its image file, then its label."""

    def check(entry: dict) -> list[str]:
        image = entry.get(image_key)
        if image is None:
            return [f"no {image_key!r} key"]
        problems = []
        error = screen_image_file(image, decode=decode, extensions=IMAGE_EXTENSIONS)
        if error:
            problems.append(error)
        if label_key not in entry:
            problems.append(f"no {label_key!r} (one of {', '.join(class_names)})")
        elif _class_name(entry[label_key], class_names) is None:
            problems.append(f"unknown label {entry[label_key]!r} (valid: {', '.join(class_names)})")
        return problems

    return check


def _segmentation_checker(image_key: str, label_key: str, decode: bool) -> Callable[[dict], list[str]]:
    """The problems of one segmentation entry: image and mask files, then the mask's size and values."""

    def check(entry: dict) -> list[str]:
        image, mask = entry.get(image_key), entry.get(label_key)
        if image is None:
            return [f"no {image_key!r} key"]
        if mask is None:
            return [f"no {label_key!r} (the path of the image's mask)"]
        if not isinstance(mask, str) or not mask.lower().endswith(IMAGE_EXTENSIONS):
            # a class name, or a classification datalist given to the segmentation bundle
            return [f"label {mask!r} is not the path of a mask image ({', '.join(IMAGE_EXTENSIONS)})"]
        problems = []
        error = screen_image_file(image, decode=decode, extensions=IMAGE_EXTENSIONS)
        if error:
            problems.append(error)
        # the mask is decoded below whatever ``decode`` says: its header check here only names a broken file first
        error = screen_image_file(mask, decode=False, extensions=IMAGE_EXTENSIONS)
        if error:
            problems.append(f"label {printable_path(mask)}: {error}")
        if problems:
            return problems
        try:
            image_size, mask_values = image_shape(image), read_array(mask)
        except Exception as err:  # a header that parses but pixels that do not
            return [f"label {printable_path(mask)}: unreadable mask ({type(err).__name__}: {err})"]
        mask_size = tuple(mask_values.shape[:2])
        if mask_size != tuple(image_size):
            return [f"label {printable_path(mask)}: mask size {mask_size} differs from image size {image_size}"]
        problem = mask_value_problem(mask_values)
        return [f"label {printable_path(mask)}: {problem}"] if problem else []

    return check


def _entry_checker(
    task: str, class_names: Sequence[str] | None, image_key: str, label_key: str, decode: bool
) -> Callable[[dict], list[str]]:
    if task == "classification":
        return _classification_checker(_required_class_names(class_names), image_key, label_key, decode)
    if task == "segmentation":
        return _segmentation_checker(image_key, label_key, decode)
    raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}.")


def _check_files(check: Callable[[dict], list[str]], entries: Sequence[dict]) -> list[list[str]]:
    """``check`` of every entry, in order. The checks wait on the disk, so threads overlap the waits (a network
    file system or a cold cache); each thread takes a chunk of entries, as a task per entry would cost more in
    the pool's locking than the check itself on a warm cache."""
    chunks = [entries[i : i + _CHUNK] for i in range(0, len(entries), _CHUNK)]
    if len(chunks) <= 1:
        return [check(entry) for entry in entries]
    with ThreadPoolExecutor(max_workers=min(8, len(chunks))) as pool:
        return [found for chunk in pool.map(lambda part: [check(e) for e in part], chunks) for found in chunk]


def _repeat_problems(
    sections: dict[str, Sequence[dict]], checked: Sequence[str] | None = None, image_key: str = "image"
) -> dict[tuple[str, int], str]:
    """Images listed more than once: within a section, or again in a later section of :data:`SECTIONS`.

    Args:
        sections: entries by section, in the order they are compared (the standard ones in :data:`SECTIONS` order
            first); any other section is compared within itself only.
        checked: the sections being checked: a repeat counts when the repeating entry or the one it repeats is in
            one of them (evaluation does not report repeats within ``training``); ``None`` for all.
        image_key: key of the image path.

    Returns:
        the problem of each repeating entry, keyed by ``(section, index)``; the first occurrence is not a problem.
    """
    checked = list(sections) if checked is None else checked
    problems: dict[tuple[str, int], str] = {}
    first_in: dict[str, dict[str, int]] = {}  # section -> image -> index of its first occurrence there
    for section, entries in sections.items():
        seen = first_in.setdefault(section, {})
        earlier_sections = SECTIONS[: SECTIONS.index(section)] if section in SECTIONS else ()
        for i, entry in enumerate(entries):
            image = entry.get(image_key)
            if not isinstance(image, str):
                continue  # reported by the entry checks
            key = os.path.abspath(image)  # normalised: the same file however it was written, through ".." too
            if key in seen:
                if section in checked:
                    problems[(section, i)] = f"same image as {section}[{seen[key]}]"
                continue
            seen[key] = i
            for earlier in earlier_sections:
                if key in first_in.get(earlier, {}) and (section in checked or earlier in checked):
                    why = _LEAKAGE[(earlier, section)]
                    problems[(section, i)] = f"also in {earlier}[{first_in[earlier][key]}]: {why}"
                    break
    return problems


def _entry_line(name: str, entry: dict, image_key: str, problems: Sequence[str]) -> str:
    """One entry's problems as one line: ``training[3] /data/images/a.png: file not found; ...``."""
    image = entry.get(image_key)
    shown = printable_path(image) if isinstance(image, str) else repr(image)
    return f"{name} {shown}: {'; '.join(problems)}"


@dataclass
class SectionReport:
    """What :func:`check_datalist` found in one section.

    Attributes:
        name: the section's key in the datalist.
        entries: how many entries it holds (0 when missing, empty or not a list).
        checked: whether its entries' files and labels were checked (otherwise it was only compared for repeats).
        bad_entries: how many entries have a problem.
        problems: one line per bad entry (``training[3] /data/a.png: file not found``), or one for the section
            (``'training' is missing or empty ...``).
        class_counts: classification only: entries per class among those with a valid label, in the order of the
            class names (classes without entries left out).
    """

    name: str
    entries: int = 0
    checked: bool = False
    bad_entries: int = 0
    problems: list[str] = field(default_factory=list)
    class_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class DatalistReport:
    """What :func:`check_datalist` found in a datalist.

    Attributes:
        path: the datalist, absolute.
        task: ``"classification"`` or ``"segmentation"``.
        sections: one report per section checked, or holding a repeat of a checked section's image.
    """

    path: str
    task: str
    sections: list[SectionReport]

    @property
    def problems(self) -> list[str]:
        """Every problem line, section by section."""
        return [p for section in self.sections for p in section.problems]

    def error(self) -> DatalistError | None:
        """The error training start-up raises for these problems (``None`` when there are none): every problem line,
        the first fifty in the message, all of them in its ``problems``."""
        problems = self.problems
        if not problems:
            return None
        checked = ", ".join(s.name for s in self.sections if s.checked)
        more = f" (python scripts/validate_datalist.py --task {self.task} {self.path} lists them all)"
        return DatalistError(
            f"datalist {self.path}: {len(problems)} problem{'s' if len(problems) != 1 else ''} for {self.task} "
            f"(sections checked: {checked}):\n{listed_problems(problems, more)}",
            problems,
        )


def check_datalist(
    datalist_path: str | os.PathLike,
    task: str,
    sections: Sequence[str] = TRAINING_SECTIONS,
    decode: bool = False,
    class_names: Sequence[str] | None = None,
) -> DatalistReport:
    """Check a datalist for a task and report every problem, without raising for any of them.

    The checks are listed in this module's docstring. The files of ``sections`` are checked; ``training``,
    ``validation`` and ``testing`` are also read, whichever are checked, to find an image repeated across them.

    Args:
        datalist_path: the JSON file (paths in it relative to its folder, or absolute).
        task: ``"classification"`` (labels are class names) or ``"segmentation"`` (labels are mask paths).
        sections: the sections to check (a name or names), e.g. ``("training", "validation")`` before training,
            ``"testing"`` before evaluation. Each must hold entries, except ``validation`` (missing or empty: the
            bundles split one from ``training``).
        decode: decode every image's pixels rather than only checking each file's structure (masks are always
            decoded: their values are checked).
        class_names: classification: the valid label names (required; the IFE bundle hands in its nine); an
            integer label in ``range(len(class_names))`` is valid too.

    Returns:
        the report, with a :class:`SectionReport` per checked section (in the order of ``sections``), then any other
        section holding a repeat of a checked section's image.

    Raises:
        DatalistError: only when the file itself cannot be read (see
            :func:`~custom_components.core.datalist.read_datalist_object`).
        ValueError: on an unknown ``task``, or a classification check without ``class_names``.
    """
    sections = [sections] if isinstance(sections, str) else list(dict.fromkeys(sections))
    if task == "classification":
        class_names = _required_class_names(class_names)
    check = _entry_checker(task, class_names, "image", "label", decode)
    path = os.path.abspath(datalist_path)
    content = read_datalist_object(path)
    # repeats are found in SECTIONS order (training before validation before testing), whatever is checked
    names = [s for s in SECTIONS if s in content or s in sections] + [s for s in sections if s not in SECTIONS]
    reports = {name: SectionReport(name, checked=name in sections) for name in names}
    loaded: dict[str, list[dict]] = {}
    for name in names:
        report = reports[name]
        try:
            loaded[name] = load_datalist(path, name)
        except DatalistError as err:  # a section that is not a list, or entries without a readable 'image'
            if report.checked:
                report.problems.extend(err.problems)
                if isinstance(content[name], list):
                    report.entries, report.bad_entries = len(content[name]), len(err.problems)
            continue
        report.entries = len(loaded[name])
        if not loaded[name] and report.checked and name != "validation":
            lists = section_sizes(content)
            report.problems.append(f"{name!r} is missing or empty (the datalist's lists: {lists})")

    to_check = [(name, i, entry) for name in sections if name in loaded for i, entry in enumerate(loaded[name])]
    found = dict(zip([(name, i) for name, i, _ in to_check], _check_files(check, [e for _, _, e in to_check])))
    for (name, i), problem in _repeat_problems(loaded, sections).items():
        found.setdefault((name, i), []).append(problem)
    for name, entries in loaded.items():
        report = reports[name]
        for i, entry in enumerate(entries):
            if found.get((name, i)):
                report.bad_entries += 1
                report.problems.append(_entry_line(f"{name}[{i}]", entry, "image", found[(name, i)]))
        if report.checked and task == "classification":
            counts = Counter(_class_name(entry.get("label"), class_names) for entry in entries)
            report.class_counts = {c: counts[c] for c in class_names if counts[c]}
    ordered = [reports[name] for name in sections] + [r for r in reports.values() if not r.checked and r.problems]
    return DatalistReport(path, task, ordered)


def validate_datalist(
    datalist_path: str | os.PathLike,
    task: str,
    sections: Sequence[str] = TRAINING_SECTIONS,
    decode: bool = False,
    class_names: Sequence[str] | None = None,
) -> str:
    """Check a datalist before training (or evaluation) starts; stop with one error naming every problem.

    What training start-up and ``evaluate.json`` run; ``scripts/validate_datalist.py`` runs the same checks
    (:func:`check_datalist`) and prints them. Arguments as :func:`check_datalist`.

    Returns:
        ``datalist_path``, as a string, so a config can chain it.

    Raises:
        DatalistError: the file cannot be read, or any problem: every one is a line of the message naming its entry
            (``training[3] /data/images/a.png: file not found``), the first fifty in the message and all of them in
            its ``problems``.
        ValueError: on an unknown ``task``, or a classification check without ``class_names``.
    """
    error = check_datalist(datalist_path, task, sections, decode, class_names).error()
    if error is not None:
        raise error
    return str(datalist_path)
