# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Output writers of the OCT fluid segmentation bundle.

- :class:`FluidPredictionWriter` (inference, and overlays in evaluation): per input a mask file (PNG for a PNG,
  JPEG or TIFF B-scan, NIfTI with the input's axis order, affine and header for a NIfTI file), an overlay PNG
  (predicted fluid in colour, the ground truth outline when known), and ``fluid_measurements.csv``: fluid area per
  B-scan and fluid volume per volume, in mm^2 / mm^3 when the spacing is known (NIfTI header, or
  ``pixel_spacing_mm`` for PNGs), in pixels otherwise. With ``fluid_report=True`` also the fluid report: per volume
  the fluid in nL in the whole scan and per ETDRS sector (:mod:`custom_components.oct.etdrs`) as
  ``reports/<name>_fluid_report.csv`` and a one-page PNG (:mod:`custom_components.oct.fluid_report`), all
  inputs' rows in ``fluid_report.csv``, and for a DICOM input a DICOM SEG referencing it (highdicom).
- :class:`SegmentationReport` (evaluation): the evaluator's fluid metrics (pooled and fluid-scan Dice and Jaccard,
  false fluid rate) merged into one JSON file under a prefix, so the clean and the noisy evaluation share
  ``metrics.json``, and the per-scan table behind them.

Conventions: arrays are channel-first, rows first (``(1, H, W)`` for B-scans, ``(1, H, W, S)`` for volumes whose
last axis indexes the B-scans), exactly as loaded by the bundle's configs; masks are binary after post-processing.
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
from custom_components.oct.overlay import overlay_image
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
      other volumes with the reader's spacing as voxel size);
    - ``overlays/<name>[_sliceK]_overlay.png``: for a volume the ``overlay_bscans`` B-scans with the most fluid,
      and the B-scan through the fovea when the report is on;
    - a row per B-scan and per volume in ``fluid_measurements.csv`` (``MEASUREMENT_COLUMNS``);
    - with ``fluid_report``: ``reports/<name>_fluid_report.csv`` (rows of
      :func:`custom_components.oct.etdrs.fluid_volumes`: whole scan and nine ETDRS sectors, nL when every
      spacing is known, voxel counts and ``provenance=unknown`` otherwise) and ``reports/<name>_fluid_report.png``
      (:func:`custom_components.oct.fluid_report.plot_fluid_report`) for a volume, one ``total`` row (pixels,
      cross-sectional mm^2 when the pixel spacing is known, no grid) for a single B-scan (a 2D file, a
      single-frame DICOM); every row also goes to ``fluid_report.csv`` for the run. A volume whose report fails
      (any error) is logged with its file name and gets one ``total`` row whose ``note`` says why; its mask,
      overlays and measurements are written, and the run goes on;
    - a DICOM input (``format`` ``dicom`` in its metadata, or a ``.dcm`` file): ``dicom_seg/<name>_fluid_seg.dcm``
      referencing it (:func:`fluid_dicom_seg`); any error (highdicom not installed, a source it cannot carry) is
      logged with the file name and error type, and skips only the SEG.

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

    Raises:
        ValueError: on a ``pixel_spacing_mm`` that is not one or two positive numbers, a ``spacing_mm`` that is not
            three, a ``fovea`` that is not two numbers, a ``laterality`` other than OD/OS, an unknown
            ``first_bscan`` or a negative ``overlay_bscans``.
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
    ) -> None:
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
            columns=MEASUREMENT_COLUMNS,
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
        self._report_writer: Any = None

    @property
    def report_path(self) -> str | None:
        """Final path of the run's ``fluid_report.csv`` (None without the report)."""
        return os.path.join(self.output_dir, "fluid_report.csv") if self.fluid_report else None

    def started(self, engine: Engine | None = None) -> None:
        super().started(engine)
        self._report_writer = None
        if self.fluid_report and self.is_writer():
            self._report_writer = csv.DictWriter(
                self.open_partial("fluid_report.csv", newline=""), fieldnames=list(REPORT_COLUMNS), restval=""
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
        """Write the outputs of one decollated item (``image`` (1, H, W[, S]), ``pred`` same shape, binary)."""
        image, pred = item[self.image_key], item[self.pred_key]
        metadata = _volume_metadata(item.get(self.meta_key))
        source = str(image.meta.get("filename_or_obj", "")) if isinstance(image, MetaTensor) else ""
        source = source or str(metadata.get("source_path") or "image")  # the file itself, for reading its header
        stem = self.unique_stem(_stem(source), source)
        bscans = convert_to_numpy(image)[0].astype(np.float32)
        mask = convert_to_numpy(pred)[0] > 0.5
        truth = item.get(self.label_key)
        has_truth = isinstance(truth, (torch.Tensor, np.ndarray)) and np.ndim(truth) == np.ndim(pred)
        truth = convert_to_numpy(truth)[0] > 0.5 if has_truth else None
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
                nifti = mask_nifti(mask, image, source, geometry.spacing_mm if geometry is not None else None)
                save_atomic(path, lambda tmp: nifti.to_filename(tmp))
            else:
                png = Image.fromarray(mask.astype(np.uint8) * 255)
                save_atomic(os.path.join(self.output_dir, "masks", f"{stem}_fluid.png"), png.save)

        if self.save_overlays:
            self._write_overlays(stem, bscans, mask, truth, geometry)

        if self.save_measurements:
            spacing_text = "x".join("?" if s is None else f"{s:g}" for s in spacing) if spacing else ""
            area = float(spacing[0] * spacing[1]) if spacing and None not in spacing[:2] else None
            per_slice = mask.sum(axis=in_plane) if volume else [mask.sum()]
            for k, pixels in enumerate(per_slice):
                mm2 = "" if area is None else round(float(pixels) * area, 6)
                self.write_row([source, k if volume else "", int(pixels), mm2, "", spacing_text, spacing_source])
            if volume:
                voxels = int(mask.sum())
                complete = spacing is not None and len(spacing) >= 3 and None not in spacing[:3]
                mm3 = round(voxels * spacing[0] * spacing[1] * spacing[2], 6) if complete else ""
                self.write_row([source, "all", voxels, "", mm3, spacing_text, spacing_source])

        if self.fluid_report:
            try:
                if volume:
                    self._write_volume_report(stem, source, bscans, mask, geometry, metadata)
                else:
                    self._write_bscan_report(source, mask, spacing, spacing_source, metadata)
            except Exception as error:  # one volume's report (grid, CSV, figure) must not end the run
                self._report_failed(source, metadata, error)

        if self.save_dicom_seg and is_dicom_source(source, metadata) and os.path.isfile(source):
            self._write_dicom_seg(stem, source, mask if volume else mask[..., None])  # a single frame: one B-scan

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

    def _write_overlays(self, stem: str, bscans, mask, truth, geometry) -> None:
        if mask.ndim == 2:
            rgb = overlay_image(bscans, mask, truth)
            save_atomic(os.path.join(self.output_dir, "overlays", f"{stem}_overlay.png"), Image.fromarray(rgb).save)
            return
        for k in self._overlay_indices(mask, geometry):
            rgb = overlay_image(bscans[:, :, k], mask[:, :, k], None if truth is None else truth[:, :, k])
            path = os.path.join(self.output_dir, "overlays", f"{stem}_slice{k:03d}_overlay.png")
            save_atomic(path, Image.fromarray(rgb).save)

    def _report_rows(self, rows: Sequence[Mapping[str, Any]]) -> None:
        if self._report_writer is not None:
            for row in rows:
                self._report_writer.writerow(
                    {k: "" if v is None else (printable_path(v) if isinstance(v, str) else v) for k, v in row.items()}
                )

    def _write_volume_report(self, stem, source, bscans, mask, geometry: VolumeGeometry, metadata) -> None:
        extra = {"image": printable_path(source), "scan_date": geometry.scan_date}
        rows = fluid_volumes(
            mask,
            geometry.spacing_mm,
            geometry.fovea,
            geometry.laterality,
            geometry.spacing_source,
            fovea_source=geometry.fovea_source,
            first_bscan=geometry.first_bscan,
            extra=extra,
            no_grid="the B-scans are not a horizontal parallel raster" if geometry.raster == "not horizontal" else None,
            scan_pattern=geometry.scan_pattern,
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
            None if k is None else mask[:, :, k],
            geometry.spacing_mm,
            geometry.fovea,
            bscan_index=k,
            first_bscan=geometry.first_bscan,
            no_grid=no_grid_reason(geometry.scan_pattern),
        )
        self._report_rows(rows)

    def _write_bscan_report(self, source, mask, spacing, spacing_source, metadata) -> None:
        pixels = int(mask.sum())
        known = spacing is not None and None not in spacing[:2]
        provenance = {
            "nifti_header": ProvenanceSource.FILE_HEADER,
            "file_header": ProvenanceSource.FILE_HEADER,
            "pixel_spacing_mm": ProvenanceSource.USER_OVERRIDE,
        }
        # a line or circle scan says so; a B-scan of unknown pattern (an image file) keeps the note it always had
        pattern = no_grid_reason(metadata.get("scan_pattern"))
        note = f"{pattern}; single B-scan: no volume" if pattern else "single B-scan: no ETDRS grid, no volume"
        row = {column: None for column in REPORT_COLUMNS}
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

    def _write_dicom_seg(self, stem: str, source: str, mask: np.ndarray) -> None:
        try:
            segmentation = fluid_dicom_seg(mask, source)
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
    ) -> None:
        self.output_path, self.prefix = output_path, prefix
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

    def per_scan_rows(self, counts: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
        """Table rows from (N, 1, 4) confusion counts (TP, FP, TN, FN per scan) and the N file names."""
        rows = []
        for name, (tp, fp, _, fn) in zip(names, counts.reshape(-1, 4).tolist()):
            has_fluid = tp + fn > 0
            rows.append(
                {
                    "image": printable_path(name),  # a name that is not UTF-8 shown as \\xNN in the UTF-8 CSV
                    "fluid_pixels_true": int(tp + fn),
                    "fluid_pixels_predicted": int(tp + fp),
                    "true_positive_pixels": int(tp),
                    "dice": round(2 * tp / (2 * tp + fp + fn), 6) if has_fluid else "",
                    "jaccard": round(tp / (tp + fp + fn), 6) if has_fluid else "",
                    "false_fluid": "" if has_fluid else int(tp + fp > 0),
                }
            )
        return rows

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

        write_csv_atomic(self.table_path, PER_SCAN_COLUMNS, rows)
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
