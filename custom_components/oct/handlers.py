# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Output writers of the OCT fluid segmentation bundle.

- :class:`FluidPredictionWriter` (inference, and overlays in evaluation): per input a mask file (PNG for a PNG,
  JPEG or TIFF B-scan, NIfTI with the input's axis order, affine and header for a NIfTI file), an overlay PNG
  (predicted fluid in colour, the ground truth outline when known), and ``fluid_measurements.csv``: fluid area per
  B-scan and fluid volume per volume, in mm^2 / mm^3 when the spacing is known (NIfTI header, or
  ``pixel_spacing_mm`` for PNGs), in pixels otherwise. With ``fluid_report=True`` also the fluid report: per volume
  the fluid in nL in the whole scan and per ETDRS sector (:mod:`custom_components.oct.etdrs`) as
  ``reports/<name>_fluid_report.csv`` and a one-page PNG (:mod:`custom_components.oct.fluid_report`), all
  inputs' rows in ``fluid_report.csv``, and for a DICOM input a DICOM SEG referencing it (highdicom). With fluid
  types (``fluid_classes`` IRF, SRF, PED) every output has them apart: a label map as mask, a colour per type,
  per-type columns, a map per type and a SEG segment per type.
- :class:`SegmentationReport` (evaluation): the evaluator's fluid metrics (pooled and fluid-scan Dice and Jaccard,
  false fluid rate) merged into one JSON file under a prefix, so the clean and the noisy evaluation share
  ``metrics.json``, and the per-scan table behind them.

Conventions: arrays are channel-first, rows first (``(1, H, W)`` for B-scans, ``(1, H, W, S)`` for volumes whose
last axis indexes the B-scans), exactly as loaded by the bundle's configs; predictions are one 0/1 channel per fluid
class after post-processing, at most one set per pixel (``(C, H, W[, S])``).
Files are written on ``save_rank`` only and never appear half-written: masks, overlays, the per-scan table and the
JSON report go through :mod:`custom_components.core.atomic` (a temporary file renamed into place), and the
measurements CSV is written to ``*.partial`` as rows come and renamed when the run completes
(:class:`~custom_components.core.prediction_writer.PredictionWriter`). Overlays are drawn by
:func:`custom_components.oct.overlay.overlay_image`.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import IgniteInfo, convert_to_numpy, min_version, optional_import, string_list_all_gather
from PIL import Image

from custom_components.core.image_files import (
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    is_nifti,
    nifti_spacing_mm,
    printable_path,
)
from custom_components.oct.volumes import read_oct_metadata
from custom_components.core.prediction_writer import PredictionWriter
from custom_components.oct.etdrs import (
    REPORT_COLUMNS,
    SECTOR_DESCRIPTIONS,
    report_columns,
    ProvenanceSource,
    ScanPattern,
    check_spacing_mm,
    en_face_thickness,
    fluid_volumes,
    no_grid_reason,
    volume_centre_fovea,
)
from custom_components.core.atomic import save_atomic, write_csv_atomic, write_json_atomic
from custom_components.core.events import attach_once
from custom_components.oct.export import fluid_dicom_seg, is_dicom_source, mask_nifti
from custom_components.oct.overlay import fluid_hues, overlay_image
from custom_components.oct.fluid_types import BINARY_FLUID, check_fluid_classes, label_map
from custom_components.oct.transforms import stored_bscan_axes
from custom_components.oct.fluid_report import plot_fluid_report, write_report_csv

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "MEASUREMENT_COLUMNS",
    "TYPE_MEASUREMENT_COLUMNS",
    "measurement_columns",
    "PER_SCAN_COLUMNS",
    "FluidPredictionWriter",
    "SegmentationReport",
    "VolumeGeometry",
]

logger = logging.getLogger(__name__)

MEASUREMENT_COLUMNS = (
    "image",
    "slice",
    "fluid_pixels",
    "fluid_area_mm2",
    "fluid_volume_mm3",
    "spacing_mm",
    "spacing_source",
)
"""Columns of ``fluid_measurements.csv``: one row per B-scan (``slice`` is its index in a volume, empty for a 2D
file) with the fluid pixel count and area, plus one row per volume (``slice`` = ``all``) with the fluid voxel
count and volume. Physical columns are empty when the spacing is unknown (``spacing_source`` = ``unknown``)."""
#: what ``fluid_measurements.csv`` adds per fluid type, as ``<type>_<column>`` (``IRF_area_mm2``): the type's share of
#: the fluid columns, measured the same way
TYPE_MEASUREMENT_COLUMNS = ("pixels", "area_mm2", "volume_mm3")


def measurement_columns(fluid_classes: Sequence[str] = BINARY_FLUID) -> tuple[str, ...]:
    """The columns of ``fluid_measurements.csv``: :data:`MEASUREMENT_COLUMNS` (the ``fluid_`` columns count all
    fluid), then with fluid types :data:`TYPE_MEASUREMENT_COLUMNS` per type (``IRF_pixels IRF_area_mm2
    IRF_volume_mm3 SRF_pixels ...``)."""
    classes = check_fluid_classes(fluid_classes)
    per_type = () if classes == BINARY_FLUID else tuple(f"{t}_{c}" for t in classes for c in TYPE_MEASUREMENT_COLUMNS)
    return MEASUREMENT_COLUMNS + per_type


def _measured(count: int, spacing: Sequence[float | None] | None, whole_volume: bool) -> list[Any]:
    """The three measurement cells of ``count`` fluid pixels: ``[pixels, area mm^2, ""]`` for one B-scan, ``[voxels,
    "", volume mm^3]`` for a whole volume (``whole_volume``); a physical cell is empty when its spacing is unknown."""
    if whole_volume:
        complete = spacing is not None and len(spacing) >= 3 and None not in spacing[:3]
        return [count, "", round(count * spacing[0] * spacing[1] * spacing[2], 6) if complete else ""]
    area = float(spacing[0] * spacing[1]) if spacing and None not in spacing[:2] else None
    return [count, "" if area is None else round(float(count) * area, 6), ""]


#: the report's provenance (:class:`~custom_components.oct.etdrs.ProvenanceSource`) as written in the
#: ``spacing_source`` column of ``fluid_measurements.csv`` (whose NIfTI and PNG labels predate the report)
_MEASUREMENT_SOURCE = {
    ("nifti", ProvenanceSource.FILE_HEADER): "nifti_header",
    ("nifti", ProvenanceSource.USER_OVERRIDE): "spacing_mm",
    ("other", ProvenanceSource.FILE_HEADER): "file_header",
    ("other", ProvenanceSource.USER_OVERRIDE): "spacing_mm",
}


def _nifti_sizes(image: Any, source: str) -> tuple[float, ...] | None:
    """Voxel sizes in mm along the stored axes of a NIfTI input: its header
    (:func:`~custom_components.core.image_files.nifti_spacing_mm`), or for an in-memory item named after a file
    that is not there, its affine; None when neither gives them."""
    if os.path.isfile(source):
        return nifti_spacing_mm(source)
    if isinstance(image, MetaTensor):  # an in-memory item: its affine is all there is
        affine = convert_to_numpy(image.affine)
        return tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return None


def _spacing(
    item_image: Any, source: str, pixel_spacing_mm: Sequence[float] | None, metadata: Mapping[str, Any] | None = None
) -> tuple[tuple[float, ...] | None, str]:
    """Pixel spacing in mm (rows, columns) of a 2D input and where it came from (``fluid_measurements.csv``): a
    NIfTI header, the reader's file header (a single-frame DICOM's ``PixelSpacing``), else ``pixel_spacing_mm``."""
    if is_nifti(source) and isinstance(item_image, MetaTensor):
        sizes = _nifti_sizes(item_image, source)
        if sizes is not None:
            return (float(sizes[0]), float(sizes[1])), "nifti_header"
    read = (metadata or {}).get("spacing_mm") or [None, None]
    if not is_nifti(source) and read[0] is not None and read[1] is not None:
        return (float(read[0]), float(read[1])), "file_header"
    if pixel_spacing_mm is not None:
        return tuple(float(s) for s in pixel_spacing_mm), "pixel_spacing_mm"
    return None, "unknown"


def _volume_metadata(value: Any) -> dict[str, Any]:
    """The reader's public metadata of an item (``OCTVolume.public_metadata()``): the dict, or the JSON text it
    travels as through a DataLoader (:func:`~custom_components.oct.volumes.read_oct_metadata`); {} when
    absent."""
    return read_oct_metadata(value)


class VolumeGeometry:
    """What the fluid report needs to know about one volume besides its mask, with where each value came from.

    Args:
        spacing_mm: (axial, lateral, inter-B-scan) in mm, each a float or None.
        spacing_source: ``"file header"``, ``"user override"`` or ``"unknown"``.
        laterality: ``"OD"``, ``"OS"`` or None.
        fovea: (bscan, column) or None; fovea_source: ``"user"``, ``"volume centre"`` or None.
        scan_date: ISO date text or None.
        first_bscan: ``"inferior"`` or ``"superior"``: which end of the B-scan axis is down; None when nobody
            said: nothing is assumed, the report names the vertical quadrants by B-scan end (``F``/``E``, see
            :func:`~custom_components.oct.etdrs.sector_names`).
        raster: ``"not horizontal"`` when the reader found the B-scans are not a horizontal parallel raster
            (vertical, radial or tilted B-scans): the ETDRS grid is then refused; None otherwise.
        scan_pattern: the reader's scan pattern (:class:`~custom_components.oct.etdrs.ScanPattern`), or None when
            the metadata has none: a pattern that is not a cube (line, circle, radial) gets no ETDRS grid and no
            volume (:func:`~custom_components.oct.etdrs.fluid_volumes`).
    """

    def __init__(
        self,
        spacing_mm: Sequence[float | None] = (None, None, None),
        spacing_source: str = ProvenanceSource.UNKNOWN,
        laterality: str | None = None,
        fovea: Sequence[float] | None = None,
        fovea_source: str | None = None,
        scan_date: str | None = None,
        first_bscan: str | None = None,
        raster: str | None = None,
        scan_pattern: str | None = None,
    ) -> None:
        self.first_bscan = first_bscan
        self.raster = raster
        self.scan_pattern = scan_pattern
        self.spacing_mm = tuple(None if s is None else float(s) for s in spacing_mm)
        known = any(s is not None for s in self.spacing_mm)
        self.spacing_source = spacing_source if known else ProvenanceSource.UNKNOWN
        self.laterality, self.scan_date = laterality, scan_date
        self.fovea = None if fovea is None else (float(fovea[0]), float(fovea[1]))
        self.fovea_source = fovea_source if fovea is not None else None

    @property
    def complete(self) -> bool:
        """All three spacings known."""
        return None not in self.spacing_mm

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(spacing_mm={self.spacing_mm}, spacing_source={self.spacing_source!r}, "
            f"laterality={self.laterality!r}, fovea={self.fovea}, fovea_source={self.fovea_source!r}, "
            f"first_bscan={self.first_bscan!r}, raster={self.raster!r}, scan_pattern={self.scan_pattern!r})"
        )


def _stem(source: str) -> str:
    name = os.path.basename(source)
    for ending in NIFTI_EXTENSIONS + IMAGE_EXTENSIONS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return os.path.splitext(name)[0]


class FluidPredictionWriter(PredictionWriter):
    """Write masks, overlays, fluid measurements and the fluid report for every item an engine processes.

    The run's events, the rank that writes and the CSV life cycle (``.partial`` until the run completes) are those
    of :class:`~custom_components.core.prediction_writer.PredictionWriter`.

    Outputs per input (``<name>``: the input's file name without its ending, with ``_2``, ``_3``, ... for later
    inputs of the same name):

    - ``masks/<name>_fluid.png`` (2D image files) or ``.nii.gz`` (NIfTI inputs, with their affine and header;
      other volumes with the reader's spacing as voxel size). The one binary class (``fluid_classes`` ``("fluid",)``,
      the paper's protocol) is stored as it always was: PNG 0 / 255, NIfTI uint8 0 / 1. Fluid types (``("IRF",
      "SRF", "PED")``) are stored as one uint8 label map with RETOUCH's values, 0 background, 1 IRF, 2 SRF, 3 PED
      (:func:`~custom_components.oct.fluid_types.label_map`), in the PNG and the NIfTI alike, so that a predicted
      mask reads back as a training label;
    - ``overlays/<name>[_sliceK]_overlay.png``: for a volume the ``overlay_bscans`` B-scans with the most fluid,
      and the B-scan through the fovea when the report is on; fluid in orange, or each type in its colour (IRF red,
      SRF yellow, PED blue: :data:`~custom_components.oct.overlay.FLUID_TYPE_COLOURS`), the truth outlined in green;
    - a row per B-scan and per volume in ``fluid_measurements.csv`` (:func:`measurement_columns`: with fluid types,
      each type's pixels, area and volume beside the totals);
    - with ``fluid_report``: ``reports/<name>_fluid_report.csv`` (rows of
      :func:`custom_components.oct.etdrs.fluid_volumes`: whole scan and nine ETDRS sectors, nL when every
      spacing is known, voxel counts and ``provenance=unknown`` otherwise) and ``reports/<name>_fluid_report.png``
      (:func:`custom_components.oct.fluid_report.plot_fluid_report`; with fluid types each type's nL per sector
      in the rows, and a map per type on the page) for a volume, one ``total`` row (pixels,
      cross-sectional mm^2 when the pixel spacing is known, no grid) for a single B-scan (a 2D file, a
      single-frame DICOM); every row also goes to ``fluid_report.csv`` for the run. A volume whose report fails
      (any error) is logged with its file name and gets one ``total`` row whose ``note`` says why; its mask,
      overlays and measurements are written, and the run goes on;
    - a DICOM input (``format`` ``dicom`` in its metadata, or a ``.dcm`` file): ``dicom_seg/<name>_fluid_seg.dcm``
      referencing it (:func:`fluid_dicom_seg`: one segment, or one per fluid type); any error (highdicom not
      installed, a source it cannot carry) is logged with the file name and error type, and skips only the SEG.

    Where the report's numbers come from, per volume (``VolumeGeometry``):

    - spacing: ``spacing_mm`` (``user override``), else the reader's metadata (``meta_key``: ``spacing_mm`` and
      ``spacing_source``), else a NIfTI header with spatial information (``file header``), else ``unknown``;
    - laterality: ``laterality``, else the metadata's; fovea: ``fovea`` (``user``), else the centre of the scan
      (``volume centre``, see :func:`custom_components.oct.etdrs.volume_centre_fovea`; no reader gives a
      foveal position); scan date: the metadata's;
    - B-scan direction: ``first_bscan``, else the metadata's; unknown otherwise (the report then names the
      vertical quadrants ``F``/``E`` by B-scan end); a scan the reader found not to be a horizontal raster
      (metadata ``raster``) gets no ETDRS grid;
    - scan pattern: the metadata's ``scan_pattern``. A line, circle or radial scan gets no ETDRS grid and no volume
      (its ``total`` row alone, with the fluid voxels and a note saying why; a single B-scan's row names the pattern
      in its note), and no inter-B-scan spacing, not even from ``spacing_mm`` (its B-scans are not parallel): the
      per-B-scan areas of ``fluid_measurements.csv`` are its measure.

    Args:
        output_dir: destination folder.
        pixel_spacing_mm: (row, column) spacing of 2D inputs in mm, when known (PNG/JPEG/TIFF files carry none);
            a single number means square pixels. NIfTI files use their header.
        save_masks: write mask files.
        save_overlays: write overlay PNGs.
        save_measurements: write ``fluid_measurements.csv``.
        image_key, pred_key, label_key: keys of the decollated items; ``label_key`` is optional per item.
        output_transform: maps ``engine.state.output`` to the list of item dicts (default: as is, decollating a
            batch dict if needed).
        save_rank: the rank that writes.
        fluid_report: write the fluid report (per-volume CSV and PNG, ``fluid_report.csv``).
        spacing_mm: user override of every volume's (axial, lateral, inter_bscan) spacing in mm, or None.
        fovea: user-given (bscan, column) of the fovea for every volume of the run, or None.
        laterality: user override ``"OD"`` / ``"OS"`` for every volume of the run, or None.
        first_bscan: ``"inferior"`` (B-scan 0 is the lowest) or ``"superior"`` for every volume of the run; None
            (default): what the reader's metadata says (``first_bscan``, set where the file gives the B-scans'
            positions), else unknown (quadrants ``F``/``E`` instead of ``S``/``I``).
        overlay_bscans: how many B-scans with the most fluid get an overlay per volume, >= 0.
        save_dicom_seg: write a DICOM SEG for DICOM inputs.
        meta_key: key of the reader's metadata dict (or its JSON text) in the input items
            (``LoadOCTVolumed``'s ``meta_key``).
        batch_transform: maps ``engine.state.batch`` to the list of per-item input dicts; default: the items'
            ``meta_key`` values, when the batch has them.
        fluid_classes: the classes of ``pred``'s channels, ``("fluid",)`` (default, the paper's binary protocol) or
            ``("IRF", "SRF", "PED")`` (:mod:`custom_components.oct.fluid_types`).

    Raises:
        ValueError: on a ``pixel_spacing_mm`` that is not one or two positive numbers, a ``spacing_mm`` that is not
            three, a ``fovea`` that is not two numbers, a ``laterality`` other than OD/OS, an unknown
            ``first_bscan``, a negative ``overlay_bscans`` or other ``fluid_classes``; when writing, on a ``pred``
            whose channels are not one per class.
    """

    def __init__(
        self,
        output_dir: str,
        pixel_spacing_mm: float | Sequence[float] | None = None,
        save_masks: bool = True,
        save_overlays: bool = True,
        save_measurements: bool = True,
        image_key: str = "image",
        pred_key: str = "pred",
        label_key: str = "label",
        output_transform: Callable[[Any], Any] = lambda x: x,
        save_rank: int = 0,
        fluid_report: bool = False,
        spacing_mm: float | Sequence[float] | None = None,
        fovea: Sequence[float] | None = None,
        laterality: str | None = None,
        first_bscan: str | None = None,
        overlay_bscans: int = 1,
        save_dicom_seg: bool = True,
        meta_key: str = "oct_meta",
        batch_transform: Callable[[Any], Any] | None = None,
        fluid_classes: Sequence[str] = BINARY_FLUID,
    ) -> None:
        fluid_classes = check_fluid_classes(fluid_classes)
        if pixel_spacing_mm is not None:
            if np.isscalar(pixel_spacing_mm):
                spacing = [float(pixel_spacing_mm)] * 2
            else:
                spacing = [float(s) for s in pixel_spacing_mm]
            if len(spacing) != 2 or min(spacing) <= 0:
                raise ValueError(
                    f"pixel_spacing_mm must be one or two positive numbers (rows, columns), got {pixel_spacing_mm!r}."
                )
            pixel_spacing_mm = tuple(spacing)
        if fovea is not None and (np.ndim(fovea) != 1 or len(fovea) != 2 or not np.all(np.isfinite(fovea))):
            raise ValueError(f"fovea must be (bscan, column), two numbers, or None; got {fovea!r}.")
        if laterality is not None and str(laterality).upper() not in ("OD", "OS"):
            raise ValueError(f"laterality must be 'OD', 'OS' or None, got {laterality!r}.")
        if first_bscan not in (None, "inferior", "superior"):
            raise ValueError(f"first_bscan must be 'inferior', 'superior' or None, got {first_bscan!r}.")
        if int(overlay_bscans) < 0:
            raise ValueError(f"overlay_bscans must be >= 0, got {overlay_bscans!r}.")
        super().__init__(
            output_dir,
            filename="fluid_measurements.csv" if save_measurements else None,
            columns=measurement_columns(fluid_classes),
            output_transform=output_transform,
            batch_transform=batch_transform if batch_transform is not None else _MetadataOfBatch(meta_key),
            save_rank=save_rank,
        )
        self.pixel_spacing_mm = pixel_spacing_mm
        self.save_masks, self.save_overlays, self.save_measurements = save_masks, save_overlays, save_measurements
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.fluid_report = fluid_report
        self.spacing_mm = None if spacing_mm is None else check_spacing_mm(spacing_mm, allow_unknown=False)
        self.fovea = None if fovea is None else (float(fovea[0]), float(fovea[1]))
        self.laterality = None if laterality is None else str(laterality).upper()
        self.first_bscan = first_bscan
        self.overlay_bscans = int(overlay_bscans)
        self.save_dicom_seg = save_dicom_seg
        self.meta_key = meta_key
        self.fluid_classes = fluid_classes
        self._report_writer: Any = None

    @property
    def typed(self) -> bool:
        """Whether the classes are the fluid types (else the one binary class)."""
        return self.fluid_classes != BINARY_FLUID

    @property
    def report_path(self) -> str | None:
        """Final path of the run's ``fluid_report.csv`` (None without the report)."""
        return os.path.join(self.output_dir, "fluid_report.csv") if self.fluid_report else None

    def started(self, engine: Engine | None = None) -> None:
        super().started(engine)
        self._report_writer = None
        if self.fluid_report and self.is_writer():
            self._report_writer = csv.DictWriter(
                self.open_partial("fluid_report.csv", newline=""),
                fieldnames=list(report_columns(self.fluid_classes)),
                restval="",
            )
            self._report_writer.writeheader()
            self.flush()

    def items(self, engine: Engine) -> list[Mapping]:
        """The iteration's items, with the reader's metadata from the batch when it has some (see the base class)."""
        if getattr(engine.state, "batch", None) is None:  # a state without inputs (the handler driven by hand)
            return self._as_list(self.output_transform(engine.state.output))
        return super().items(engine)

    def summary(self) -> str:
        measured = f"fluid measurements in {self.csv_path}; " if self.csv_path is not None else ""
        report = f"fluid report in {self.report_path} and {self.output_dir}/reports; " if self.fluid_report else ""
        return f"{measured}{report}masks and overlays in {self.output_dir}"

    def geometry(self, image: Any, source: str, metadata: Mapping[str, Any]) -> VolumeGeometry:
        """The spacing, laterality, fovea and scan date of one volume (``(1, rows, columns, B-scans)`` image), with
        where each came from (see the class docstring for the order)."""
        spacing: Sequence[float | None] = (None, None, None)
        source_of_spacing = ProvenanceSource.UNKNOWN
        if self.spacing_mm is not None:
            spacing, source_of_spacing = self.spacing_mm, ProvenanceSource.USER_OVERRIDE
        elif metadata.get("spacing_mm") is not None and any(s is not None for s in metadata["spacing_mm"]):
            # the reader returns the spacing along (rows, columns, B-scans), the axes it gave the image
            spacing = list(metadata["spacing_mm"])
            source_of_spacing = metadata.get("spacing_source") or ProvenanceSource.FILE_HEADER
        elif is_nifti(source):
            sizes = _nifti_sizes(image, source)
            if sizes is not None and len(sizes) >= 3:
                spacing, source_of_spacing = [sizes[a] for a in stored_bscan_axes(image)], ProvenanceSource.FILE_HEADER
        laterality = self.laterality or metadata.get("laterality")
        shape = tuple(int(s) for s in image.shape[-3:])  # rows, columns, B-scans
        if self.fovea is not None:
            fovea, fovea_source = self.fovea, "user"
        else:
            fovea, fovea_source = volume_centre_fovea((shape[2], shape[1])), "volume centre"
        raster = metadata.get("raster")
        # a user first_bscan cannot make a vertical or radial scan a horizontal raster: it stays unknown there
        first_bscan = None if raster == "not horizontal" else self.first_bscan or metadata.get("first_bscan")
        scan_pattern = metadata.get("scan_pattern")
        if scan_pattern in ScanPattern.NOT_A_CUBE and len(spacing) == 3:
            # no distance between B-scans that are not parallel: a run-wide spacing_mm meant for the cubes of a
            # mixed folder must not give a radial scan a volume
            spacing = [spacing[0], spacing[1], None]
        return VolumeGeometry(
            spacing,
            source_of_spacing,
            laterality,
            fovea,
            fovea_source,
            metadata.get("scan_date"),
            first_bscan,
            raster,
            scan_pattern,
        )

    def write_item(self, item: Mapping) -> None:
        """Write the outputs of one decollated item (``image`` (1, H, W[, S]), ``pred`` (C, H, W[, S]): a 0/1 mask
        per class of ``fluid_classes``, at most one set per pixel)."""
        image, pred = item[self.image_key], item[self.pred_key]
        metadata = _volume_metadata(item.get(self.meta_key))
        source = str(image.meta.get("filename_or_obj", "")) if isinstance(image, MetaTensor) else ""
        source = source or str(metadata.get("source_path") or "image")  # the file itself, for reading its header
        stem = self.unique_stem(_stem(source), source)
        bscans = convert_to_numpy(image)[0].astype(np.float32)
        masks = self._class_masks(pred, source)
        mask = masks.any(axis=0)  # all fluid, whatever its type
        # what the mask files, overlays and report show: the fluid, or with types their label map (1 IRF, 2 SRF, 3 PED)
        shown = label_map(masks) if self.typed else mask
        truth = item.get(self.label_key)
        has_truth = isinstance(truth, (torch.Tensor, np.ndarray)) and np.ndim(truth) == np.ndim(pred)
        # all true fluid, one outline whatever its type: a label of type values in one channel, or one channel each
        truth = (convert_to_numpy(truth) > 0.5).any(axis=0) if has_truth else None
        volume = mask.ndim == 3  # (rows, columns, B-scans)
        in_plane = (0, 1)
        if volume:
            geometry = self.geometry(image, source, metadata)
            spacing = geometry.spacing_mm if geometry.spacing_source != ProvenanceSource.UNKNOWN else None
            kind = "nifti" if is_nifti(source) else "other"
            spacing_source = _MEASUREMENT_SOURCE.get((kind, geometry.spacing_source), "unknown")
        else:
            geometry = None
            spacing, spacing_source = _spacing(image, source, self.pixel_spacing_mm, metadata)

        if self.save_masks:
            if volume or is_nifti(source):  # a volume or a NIfTI input gets a NIfTI mask
                path = os.path.join(self.output_dir, "masks", f"{stem}_fluid.nii.gz")
                nifti = mask_nifti(shown, image, source, geometry.spacing_mm if geometry is not None else None)
                save_atomic(path, lambda tmp: nifti.to_filename(tmp))
            else:
                # binary: 0 / 255, visible in any viewer; types: the label map's own values, a training label
                png = Image.fromarray(shown if self.typed else mask.astype(np.uint8) * 255)
                save_atomic(os.path.join(self.output_dir, "masks", f"{stem}_fluid.png"), png.save)

        if self.save_overlays:
            self._write_overlays(stem, bscans, mask, truth, geometry, shown)

        if self.save_measurements:
            spacing_text = "x".join("?" if s is None else f"{s:g}" for s in spacing) if spacing else ""
            # all fluid, then each type's (its columns follow the totals')
            measured = [mask, *masks] if self.typed else [mask]
            per_slice = [m.sum(axis=in_plane) if volume else [m.sum()] for m in measured]
            for k in range(len(per_slice[0])):
                cells = [c for counts in per_slice for c in _measured(int(counts[k]), spacing, whole_volume=False)]
                self.write_row([source, k if volume else "", *cells[:3], spacing_text, spacing_source, *cells[3:]])
            if volume:
                cells = [c for m in measured for c in _measured(int(m.sum()), spacing, whole_volume=True)]
                self.write_row([source, "all", *cells[:3], spacing_text, spacing_source, *cells[3:]])

        if self.fluid_report:
            try:
                if volume:
                    self._write_volume_report(stem, source, bscans, shown, geometry, metadata)
                else:
                    self._write_bscan_report(source, shown, spacing, spacing_source, metadata)
            except Exception as error:  # one volume's report (grid, CSV, figure) must not end the run
                self._report_failed(source, metadata, error)

        if self.save_dicom_seg and is_dicom_source(source, metadata) and os.path.isfile(source):
            self._write_dicom_seg(stem, source, shown if volume else shown[..., None])  # a single frame: one B-scan

    def _class_masks(self, pred: Any, source: str) -> np.ndarray:
        """``pred`` as one boolean mask per fluid class, ``(C, H, W[, S])``.

        Raises:
            ValueError: when ``pred`` has not one channel per class (a model of other classes than the writer's),
                naming the file.
        """
        masks = convert_to_numpy(pred) > 0.5
        if masks.shape[0] != len(self.fluid_classes):
            raise ValueError(
                f"{printable_path(source)}: the prediction has {masks.shape[0]} channel(s) but the writer's "
                f"fluid_classes are {list(self.fluid_classes)}: set fluid_classes to the model's classes."
            )
        return masks

    def _overlay_indices(self, mask: np.ndarray, geometry: VolumeGeometry | None) -> list[int]:
        """The B-scans of a volume to overlay: the fovea's (with the report on) and the most fluid ones."""
        per_bscan = mask.sum(axis=(0, 1))
        chosen: list[int] = []
        if self.fluid_report and geometry is not None and geometry.fovea is not None:
            k = int(round(geometry.fovea[0]))
            if 0 <= k < mask.shape[2]:
                chosen.append(k)
        # stable: among equal fluid the lower index first; at least one overlay per volume, as before
        order = np.argsort(-per_bscan, kind="stable")
        for k in order[: max(self.overlay_bscans, 0 if chosen else 1)]:
            if int(k) not in chosen:
                chosen.append(int(k))
        return chosen

    def _write_overlays(self, stem: str, bscans, mask, truth, geometry, shown) -> None:
        """The overlay PNGs of one input: ``shown`` (the fluid ``mask``, or the types' label map) in colour over the
        B-scans, ``truth`` outlined; a volume's B-scans chosen by :meth:`_overlay_indices` on ``mask``."""
        hues = fluid_hues(self.fluid_classes)  # None: the binary fluid's orange
        if mask.ndim == 2:
            rgb = overlay_image(bscans, shown, truth, hues=hues)
            save_atomic(os.path.join(self.output_dir, "overlays", f"{stem}_overlay.png"), Image.fromarray(rgb).save)
            return
        for k in self._overlay_indices(mask, geometry):
            rgb = overlay_image(bscans[:, :, k], shown[:, :, k], None if truth is None else truth[:, :, k], hues=hues)
            path = os.path.join(self.output_dir, "overlays", f"{stem}_slice{k:03d}_overlay.png")
            save_atomic(path, Image.fromarray(rgb).save)

    def _report_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self._report_writer is not None:
            for row in rows:
                self._report_writer.writerow(
                    {k: "" if v is None else (printable_path(v) if isinstance(v, str) else v) for k, v in row.items()}
                )

    def _write_volume_report(self, stem, source, bscans, shown, geometry: VolumeGeometry, metadata) -> None:
        """The fluid report of one volume (``shown``: its fluid mask, or the types' label map): its CSV and page,
        and its rows in ``fluid_report.csv``."""
        extra = {"image": printable_path(source), "scan_date": geometry.scan_date}
        mask = shown > 0  # all fluid
        rows = fluid_volumes(
            shown,
            geometry.spacing_mm,
            geometry.fovea,
            geometry.laterality,
            geometry.spacing_source,
            fovea_source=geometry.fovea_source,
            first_bscan=geometry.first_bscan,
            extra=extra,
            no_grid="the B-scans are not a horizontal parallel raster" if geometry.raster == "not horizontal" else None,
            scan_pattern=geometry.scan_pattern,
            fluid_classes=self.fluid_classes,
        )
        folder = os.path.join(self.output_dir, "reports")
        write_report_csv(os.path.join(folder, f"{stem}_fluid_report.csv"), rows)
        k = None
        if geometry.fovea is not None:
            k = int(np.clip(round(geometry.fovea[0]), 0, mask.shape[2] - 1))
        plot_fluid_report(
            os.path.join(folder, f"{stem}_fluid_report.png"),
            rows,
            en_face_thickness(mask),
            None if k is None else bscans[:, :, k],
            None if k is None else shown[:, :, k],
            geometry.spacing_mm,
            geometry.fovea,
            bscan_index=k,
            first_bscan=geometry.first_bscan,
            no_grid=no_grid_reason(geometry.scan_pattern),
            type_thickness=self._type_thickness(shown),
        )
        self._report_rows(rows)

    def _type_thickness(self, labels: np.ndarray) -> dict[str, np.ndarray] | None:
        """Each fluid type's en-face thickness from a volume's label map, for the report's page; None (binary)."""
        if not self.typed:
            return None
        return {t: en_face_thickness(labels == k + 1) for k, t in enumerate(self.fluid_classes)}

    def _write_bscan_report(self, source, shown, spacing, spacing_source, metadata) -> None:
        """The fluid report's one ``total`` row of a single B-scan (``shown``: its fluid mask, or the types' label
        map): pixels and cross-sectional mm^2, with fluid types each type's too."""
        pixels = int((shown > 0).sum())
        known = spacing is not None and None not in spacing[:2]
        provenance = {
            "nifti_header": ProvenanceSource.FILE_HEADER,
            "file_header": ProvenanceSource.FILE_HEADER,
            "pixel_spacing_mm": ProvenanceSource.USER_OVERRIDE,
        }
        # a line or circle scan says so; a B-scan of unknown pattern (an image file) keeps the note it always had
        pattern = no_grid_reason(metadata.get("scan_pattern"))
        note = f"{pattern}; single B-scan: no volume" if pattern else "single B-scan: no ETDRS grid, no volume"
        row = {column: None for column in report_columns(self.fluid_classes)}
        row.update(
            image=printable_path(source),
            scan_date=metadata.get("scan_date"),
            laterality=self.laterality or metadata.get("laterality"),
            sector="total",
            region="single B-scan (cross-section)",
            voxels=pixels,
            area_mm2=round(pixels * spacing[0] * spacing[1], 6) if known else None,
            spacing_mm="x".join(f"{s:g}" for s in spacing[:2]) if known else "?x?",
            provenance=provenance.get(spacing_source, ProvenanceSource.UNKNOWN),
            note=f"{note}; area_mm2 is the fluid's cross-sectional area" + ("" if known else "; pixel spacing unknown"),
        )
        for k, fluid in enumerate(self.fluid_classes if self.typed else ()):
            count = int((shown == k + 1).sum())
            row[f"{fluid}_voxels"] = count
            row[f"{fluid}_area_mm2"] = round(count * spacing[0] * spacing[1], 6) if known else None
        self._report_rows([row])

    def _report_failed(self, source: str, metadata: Mapping[str, Any], error: Exception) -> None:
        """Log a volume's failed fluid report and record it as a ``total`` row of ``fluid_report.csv``."""
        why = f"{type(error).__name__}: {error}"
        self.logger.warning("%s: no fluid report: %s", printable_path(source), why)
        row = {column: None for column in REPORT_COLUMNS}
        row.update(
            image=printable_path(source),
            scan_date=metadata.get("scan_date"),
            sector="total",
            region=SECTOR_DESCRIPTIONS["total"],
            note=f"fluid report failed ({why}); the mask and measurements are written",
        )
        self._report_rows([row])

    def _write_dicom_seg(self, stem: str, source: str, shown: np.ndarray) -> None:
        """The DICOM SEG of one DICOM input (``shown``: its ``(rows, columns, frames)`` fluid mask, or the types'
        label map), or a warning saying why there is none."""
        # the binary SEG is called for as it always was; fluid types name their classes
        classes = {"fluid_classes": self.fluid_classes} if self.typed else {}
        try:
            segmentation = fluid_dicom_seg(shown, source, **classes)
            path = os.path.join(self.output_dir, "dicom_seg", f"{stem}_fluid_seg.dcm")
            save_atomic(path, lambda tmp: segmentation.save_as(tmp, write_like_original=False))
        except Exception as error:
            # the mask and the NIfTI are written; a SEG the source cannot carry (highdicom and pydicom raise
            # AttributeError for a missing type-2 attribute, NotImplementedError or RuntimeError for compressed
            # pixel data, InvalidDicomError, ...) is reported, and costs no other output
            self.logger.warning("%s: no DICOM SEG: %s: %s", printable_path(source), type(error).__name__, error)


class _MetadataOfBatch:
    """``batch_transform`` of :class:`FluidPredictionWriter`: the per-item reader metadata of a batch
    (``[{meta_key: ...}, ...]``), or ``[]`` when the batch has none (then the outputs are used alone).

    :func:`~custom_components.core.inputs.collate_skipping_failures` batches the metadata as a list of JSON texts (one
    text for a batch of one): each item's text is passed on as is, for :func:`_volume_metadata` to read."""

    def __init__(self, meta_key: str) -> None:
        self.meta_key = meta_key

    def __call__(self, batch: Any) -> list[dict[str, Any]]:
        if isinstance(batch, Mapping):
            values = batch.get(self.meta_key)
            if values is None:
                return []
            return [{self.meta_key: v} for v in ([values] if isinstance(values, (str, Mapping)) else values)]
        if isinstance(batch, (list, tuple)):
            return [{self.meta_key: b.get(self.meta_key)} for b in batch if isinstance(b, Mapping)]
        return []


class SegmentationReport:
    """The evaluator's fluid metrics as a JSON summary under a prefix, and the per-scan table behind them (CSV).

    The numbers are those of the evaluator's own metrics (``engine.state.metrics``, computed by MONAI and
    gathered across ranks; see :mod:`custom_components.oct.metrics` for what each means). The per-scan
    table comes from the per-scan confusion counts (TP, FP, TN, FN) that the pooled Dice metric keeps in
    ``engine.state.metric_details``, with every scan's file name gathered in the same rank order, so a
    multi-process evaluation writes the same files as one process.

    ``<output_path>``: ``{prefix}{name}`` for every metric (``metric_prefix`` removed from the engine's names),
    ``{prefix}num_scans``, ``{prefix}num_fluid_scans``, ``{prefix}num_normal_scans``, ``{prefix}per_scan_csv``,
    plus ``extra``; reports of other prefixes in the same file are kept unless ``overwrite``. An undefined value
    (a fluid-scan mean without fluid scans, a false fluid rate without normal scans) is ``null``, never 0.
    ``<prefix>per_scan.csv`` beside it: ``image, fluid_pixels_true, fluid_pixels_predicted, true_positive_pixels,
    dice, jaccard`` (empty on scans without fluid, where they are undefined) and ``false_fluid`` (1 when fluid is
    predicted on a scan without any).

    With fluid types (``classes`` IRF, SRF, PED: one metric channel each) the totals above count a pixel as a true
    positive only when its type is right, and RETOUCH's two measures are added per type: ``{prefix}dice_<type>``,
    the Dice pooled over every pixel of the scans, and ``{prefix}abs_area_difference_<type>``, the mean over scans of
    the absolute difference between the predicted and the true fluid pixels of the type (RETOUCH's absolute volume
    difference, per B-scan and in pixels: an evaluation has no spacing), with ``{prefix}num_scans_<type>``, the scans
    whose ground truth shows the type; and per-scan columns ``<type>_pixels_true``, ``<type>_pixels_predicted``,
    ``<type>_dice``.

    Args:
        output_path: the JSON file.
        prefix: key and file prefix, e.g. ``""`` for clean images and ``"noisy_"`` for the noise test.
        details_metric: the engine metric holding per-scan confusion counts (a ``ConfusionMatrixMetric`` with
            ``save_details=True``).
        metric_prefix: removed from the engine's metric names in the report (``"val_dice"`` -> ``"dice"``).
        extra: constant entries to add (e.g. ``{"noise_sigma": 0.1}``).
        batch_transform: maps ``engine.state.batch`` to the list of source file names of the batch.
        save_rank: the rank that writes.
        overwrite: start a new file instead of merging into an existing one (the first report of a run).
        classes: the fluid classes of the metric channels, ``("fluid",)`` or ``("IRF", "SRF", "PED")``.
    """

    def __init__(
        self,
        output_path: str,
        prefix: str = "",
        details_metric: str = "val_dice",
        metric_prefix: str = "val_",
        extra: Mapping[str, Any] | None = None,
        batch_transform: Callable[[Any], Sequence[str]] | None = None,
        save_rank: int = 0,
        overwrite: bool = False,
        classes: Sequence[str] = BINARY_FLUID,
    ) -> None:
        self.output_path, self.prefix = output_path, prefix
        self.classes = check_fluid_classes(classes)
        self.details_metric, self.metric_prefix = details_metric, metric_prefix
        self.extra = dict(extra or {})
        self.batch_transform = batch_transform or _source_names
        self.save_rank = save_rank
        self.overwrite = overwrite
        self._names: list[str] = []

    @property
    def table_path(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(self.output_path)), f"{self.prefix}per_scan.csv")

    def attach(self, engine: Engine) -> None:
        events = (Events.STARTED, self.started), (Events.ITERATION_COMPLETED, self), (Events.COMPLETED, self.completed)
        attach_once(engine, *events)

    def started(self, engine: Engine | None = None) -> None:
        self._names = []

    def __call__(self, engine: Engine) -> None:
        self._names.extend(str(n) for n in self.batch_transform(engine.state.batch))

    @property
    def typed(self) -> bool:
        return self.classes != BINARY_FLUID

    @property
    def columns(self) -> tuple[str, ...]:
        """The per-scan table's columns: :data:`PER_SCAN_COLUMNS`, then per fluid type with types."""
        per_type = [f"{t}_{c}" for t in self.classes for c in PER_TYPE_COLUMNS] if self.typed else []
        return (*PER_SCAN_COLUMNS, *per_type)

    def per_scan_rows(self, counts: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
        """Table rows from (N, C, 4) confusion counts (TP, FP, TN, FN per scan and class) and the N file names."""
        counts = counts.reshape(len(names), -1, 4)
        rows = []
        for name, per_class in zip(names, counts.tolist()):
            tp, fp, _, fn = (sum(column) for column in zip(*per_class))
            has_fluid = tp + fn > 0
            row = {
                "image": printable_path(name),  # a name that is not UTF-8 shown as \\xNN in the UTF-8 CSV
                "fluid_pixels_true": int(tp + fn),
                "fluid_pixels_predicted": int(tp + fp),
                "true_positive_pixels": int(tp),
                "dice": round(2 * tp / (2 * tp + fp + fn), 6) if has_fluid else "",
                "jaccard": round(tp / (tp + fp + fn), 6) if has_fluid else "",
                "false_fluid": "" if has_fluid else int(tp + fp > 0),
            }
            if self.typed:
                for fluid, (tp, fp, _, fn) in zip(self.classes, per_class):
                    row[f"{fluid}_pixels_true"], row[f"{fluid}_pixels_predicted"] = int(tp + fn), int(tp + fp)
                    row[f"{fluid}_dice"] = round(2 * tp / (2 * tp + fp + fn), 6) if tp + fn > 0 else ""
            rows.append(row)
        return rows

    def per_type_summary(self, counts: torch.Tensor) -> dict[str, float | int | None]:
        """RETOUCH's measures per fluid type from (N, C, 4) confusion counts: the pooled Dice (``None`` when neither
        the truth nor the prediction has the type anywhere), the mean absolute pixel difference per scan, and the
        number of scans whose truth has the type."""
        counts = counts.reshape(counts.shape[0], -1, 4).double()
        tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 3]  # (N, C)
        summary: dict[str, float | int | None] = {}
        for k, fluid in enumerate(self.classes):
            pooled = (2 * tp[:, k].sum() + fp[:, k].sum() + fn[:, k].sum()).item()
            summary[f"dice_{fluid}"] = 2 * tp[:, k].sum().item() / pooled if pooled > 0 else None
            difference = (fp[:, k] - fn[:, k]).abs()  # predicted - true = (TP + FP) - (TP + FN)
            summary[f"abs_area_difference_{fluid}"] = difference.mean().item() if len(difference) else None
            summary[f"num_scans_{fluid}"] = int(((tp[:, k] + fn[:, k]) > 0).sum().item())
        return summary

    def completed(self, engine: Engine) -> None:
        # collectives first, on every rank: the names in the order MONAI gathers the metric buffers (rank by rank)
        names = string_list_all_gather(self._names)
        if idist.get_rank() != self.save_rank:
            return
        counts = engine.state.metric_details.get(self.details_metric)
        if counts is None:
            raise RuntimeError(
                f"metric {self.details_metric!r} has no per-scan details: attach it as an IgniteMetricHandler with "
                "save_details=True (the pooled Dice of the bundle's validate#key_metric)."
            )
        if len(names) != counts.shape[0]:
            raise RuntimeError(f"{len(names)} file names for {counts.shape[0]} scans of {self.details_metric!r}.")
        rows = self.per_scan_rows(torch.as_tensor(counts).cpu(), names)
        summary = {
            name[len(self.metric_prefix):] if name.startswith(self.metric_prefix) else name: _number(value)
            for name, value in engine.state.metrics.items()
        }
        num_fluid = sum(1 for r in rows if r["dice"] != "")
        if num_fluid == 0:  # MONAI's mean over no scan (all NaN) is 0; a mean over no fluid scan is undefined
            summary.update({k: None for k in summary if k.endswith("_fluid_scans")})
        summary.update(num_scans=len(rows), num_fluid_scans=num_fluid, num_normal_scans=len(rows) - num_fluid)
        summary["per_scan_csv"] = os.path.basename(self.table_path)

        if self.typed:
            summary.update(self.per_type_summary(torch.as_tensor(counts).cpu()))
        write_csv_atomic(self.table_path, self.columns, rows)
        report = {}
        if os.path.isfile(self.output_path) and not self.overwrite:
            with open(self.output_path) as f:
                report = json.load(f)
        report.update({f"{self.prefix}{k}": v for k, v in summary.items()})
        report.update(self.extra)
        write_json_atomic(report, self.output_path)
        shown = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if isinstance(v, float))
        logger.info(
            "%s: %s over %d scans (%d with fluid) -> %s",
            self.prefix.rstrip("_") or "clean", shown, len(rows), num_fluid, self.output_path,
        )  # fmt: skip


#: columns of the per-scan table written by :class:`SegmentationReport`
PER_SCAN_COLUMNS = (
    "image",
    "fluid_pixels_true",
    "fluid_pixels_predicted",
    "true_positive_pixels",
    "dice",
    "jaccard",
    "false_fluid",
)
#: per-type columns of that table with fluid types, each ``<type>_<column>``
PER_TYPE_COLUMNS = ("pixels_true", "pixels_predicted", "dice")


def _number(value: Any) -> float | None:
    """A metric value as a JSON number; NaN (undefined, e.g. no scan without fluid) becomes ``None``."""
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return None if np.isnan(value) else value


def _source_names(batch: Any) -> list[str]:
    """File names of a collated batch's images (``filename_or_obj`` of their metadata)."""
    images = batch["image"] if isinstance(batch, Mapping) else [item["image"] for item in batch]
    if isinstance(images, MetaTensor):
        names = images.meta.get("filename_or_obj", [""] * images.shape[0])
        return [str(n) for n in ([names] if isinstance(names, str) else names)]
    return [str(getattr(i, "meta", {}).get("filename_or_obj", "")) for i in images]
