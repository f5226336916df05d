# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Inference inputs: a folder, one file or a datalist section, screened so one bad file costs only itself.

Screening (:func:`scan_inputs`) refuses what the loaders would fail on before the run starts. A file that fails later
anyway (changed on disk after screening, or failing in a transform) costs only itself too: :class:`SkippingDataset`
turns its failure into a record, :func:`collate_skipping_failures` sets the records aside from the batch, and
:class:`custom_components.core.skipped_inputs.SkippedInputsReport` adds them to the same skipped-inputs CSV.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from monai.data import Dataset, list_data_collate

from custom_components.core.datalist import DatalistError, load_datalist, read_datalist_object, section_sizes
from custom_components.core.image_files import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    is_dicom_file,
    printable_path,
    screen_image_file,
)
from custom_components.core.validation import listed_problems
from custom_components.core.atomic import write_csv_atomic

__all__ = [
    "FAILED_INPUTS",
    "JSONRecord",
    "register_export_members",
    "list_images",
    "scan_inputs",
    "SkippingDataset",
    "collate_skipping_failures",
]

#: batch key of the inputs that failed while loading: a list of ``{"image": path, "error": message}``
FAILED_INPUTS = "failed_inputs"

logger = logging.getLogger(__name__)


#: for a file format that is one input made of several files (an export and the images it names), by lower-case
#: ending: the files that belong to such a file, which a folder listing leaves out. The OCT wing registers the
#: Heidelberg XML export (:func:`custom_components.oct.volumes.heidelberg_xml_members`); this module knows none.
_EXPORT_MEMBERS: dict[str, Callable[[Path], set[Path]]] = {}


def register_export_members(extension: str, members: Callable[[Path], set[Path]]) -> None:
    """Have :func:`list_images` leave out the files that a file ending in ``extension`` names as its own parts:
    ``members(path)`` returns their resolved paths (empty for a file that is no such export)."""
    _EXPORT_MEMBERS[extension.lower()] = members


class JSONRecord(dict):
    """A dict of JSON values that :func:`collate_skipping_failures` batches as its JSON text, one per item, so that
    None values survive collation and ``decollate_batch`` hands each item its record back whole. A domain types its
    per-item records with it (:class:`~custom_components.oct.volumes.OCTMetadata`) and parses the text back."""


def list_images(
    folder_or_file: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS
) -> list[str]:
    """The image files of a folder (searched recursively) or a single file, without opening them.

    Args:
        folder_or_file: a folder, or one file (returned whatever its ending).
        extensions: file endings to pick up in a folder, case-insensitive (``.nii.gz`` works as one ending); with
            ``.dcm`` among them, files without extension whose content is DICOM too. The files an export names
            (a registered format, :func:`register_export_members`: e.g. the B-scans of a Heidelberg XML export)
            belong to it and are not listed on their own.

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
    # DICOM exports often name files without an extension: with DICOM accepted, such a file counts when its content
    # is DICOM (132 bytes read per extensionless file)
    dicom = DICOM_EXTENSIONS[0] in endings

    def wanted(p: Path) -> bool:
        if not p.is_file():
            return False
        return p.name.lower().endswith(endings) or (dicom and not p.suffix and is_dicom_file(p))

    found = {p.resolve() for p in source.rglob("*") if wanted(p)}
    # an export is one input: e.g. a Heidelberg XML, with the B-scan and localizer images it names beside it
    exports = [p for p in found if p.suffix.lower() in _EXPORT_MEMBERS]
    members = set().union(*(_EXPORT_MEMBERS[p.suffix.lower()](p) for p in exports))
    return sorted(str(p) for p in found - members)


def scan_inputs(
    source: str | os.PathLike,
    extensions: Iterable[str] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS,
    skipped_report: str | os.PathLike | None = None,
    section: str = "testing",
    decode: bool = True,
    strict: bool = False,
) -> list[dict]:
    """The one way both bundles list inference inputs: a folder, a single file or a datalist section, screened.

    Every entry is screened the same way (:func:`~custom_components.core.image_files.screen_image_file`: missing, not a
    file, wrong type for this bundle, empty, unreadable or truncated, no pixels, a NIfTI that is neither one B-scan
    nor one volume, too small, too large, NaN or infinite values). One bad file never stops inference over the
    others: it is logged with its problem, listed in ``skipped_report`` (CSV with ``image,error``, UTF-8; a file name
    that is not valid UTF-8 shows its other bytes as ``\\xNN``, see
    :func:`~custom_components.core.image_files.printable_path`) and left out of the returned list.

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
            sections = section_sizes(read_datalist_object(source))
            raise DatalistError(f"datalist {source} has no entries in {section!r}; its lists: {sections}.")
    else:
        entries = [{"image": path} for path in list_images(source, extensions)]
    if not entries:
        raise DatalistError(f"no images ({', '.join(extensions)}) found in {source}.")

    with ThreadPoolExecutor(max_workers=min(8, len(entries))) as pool:
        errors = list(pool.map(lambda e: screen_image_file(e["image"], decode=decode, extensions=extensions), entries))
    # names that are not valid UTF-8 (and errors quoting them) shown with \xNN escapes, so the UTF-8 report and
    # the log can hold them
    skipped = [(printable_path(e["image"]), printable_path(error)) for e, error in zip(entries, errors) if error]
    for image, error in skipped:
        logger.warning("Skipping %s: %s", image, error)
    if skipped_report is not None:
        write_csv_atomic(skipped_report, ["image", "error"], [{"image": i, "error": e} for i, e in skipped])
    if skipped:
        where = f" (listed in {skipped_report})" if skipped_report else ""
        logger.warning("%d of %d inputs skipped as unusable%s.", len(skipped), len(entries), where)
        if strict or len(skipped) == len(entries):
            why = "strict mode stops on any" if strict else "no usable input is left after"
            raise DatalistError(
                f"{why} unusable input: {len(skipped)} of {len(entries)} inference inputs cannot be used:\n"
                + listed_problems([f"{image}: {error}" for image, error in skipped])
            )
    return [entry for entry, error in zip(entries, errors) if not error]


class SkippingDataset(Dataset):
    """MONAI's ``Dataset`` that returns a failure record instead of raising when an item fails to load or transform.

    The record is ``{FAILED_INPUTS: {"image": path, "error": message}}`` (the path as
    :func:`~custom_components.core.image_files.printable_path` shows it, the message naming the exception and the
    transform that raised); it is logged as a warning, in the process that loads it (a DataLoader worker too).
    Batch it with :func:`collate_skipping_failures`.

    Args:
        data: the entries (``[{"image": path, ...}]``).
        transform: the preprocessing.
        image_key: key of the path named in the record.
    """

    def __init__(self, data: Sequence, transform: Callable | None = None, image_key: str = "image") -> None:
        super().__init__(data, transform)
        self.image_key = image_key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as err:  # any failure of one input is that input's, never the run's
            image = printable_path(str(self.data[index].get(self.image_key)))
            cause = err.__cause__ or err  # MONAI wraps what a transform raised: name the transform, then the cause
            where = f"{err}: " if cause is not err else ""
            error = printable_path(f"failed while loading ({where}{type(cause).__name__}: {cause})")
            logger.warning("Skipping %s: %s", image, error)
            return {FAILED_INPUTS: {"image": image, "error": error}}


def collate_skipping_failures(batch: Sequence[Mapping]) -> dict:
    """``list_data_collate`` of the items that loaded, with the failure records of :class:`SkippingDataset` under
    ``FAILED_INPUTS`` (a plain list, possibly empty). A batch whose every item failed holds only that list.

    A :class:`JSONRecord` value (such as the OCT reader's metadata) is batched as a list of its JSON texts, one per
    item: it may hold None, which PyTorch's collation refuses, and ``decollate_batch`` gives each item its text back
    intact (a collated dict of lists would come back mangled). Every other value is collated as before.
    """
    failed = [item[FAILED_INPUTS] for item in batch if FAILED_INPUTS in item]
    loaded = [item for item in batch if FAILED_INPUTS not in item]
    texts = {
        key: [json.dumps(item[key]) for item in loaded]
        for key in (loaded[0] if loaded else {})
        if all(isinstance(item.get(key), JSONRecord) for item in loaded)
    }
    loaded = [{k: v for k, v in item.items() if k not in texts} for item in loaded] if texts else loaded
    collated = list_data_collate(loaded) if loaded else {}
    collated.update(texts)
    collated[FAILED_INPUTS] = failed
    return collated
