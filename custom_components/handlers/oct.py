# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Output writers of the OCT fluid segmentation bundle.

- :class:`FluidPredictionWriter` (inference, and overlays in evaluation): per input a mask file (PNG for a PNG,
  JPEG or TIFF B-scan, NIfTI with the input's axis order, affine and header for a NIfTI file), an overlay PNG
  (predicted fluid in colour, the ground truth outline when known), and ``fluid_measurements.csv``: fluid area per
  B-scan and fluid volume per volume, in mm^2 / mm^3 when the spacing is known (NIfTI header, or
  ``pixel_spacing_mm`` for PNGs), in pixels otherwise.
- :class:`SegmentationReport` (evaluation): the evaluator's fluid metrics (pooled and fluid-scan Dice and Jaccard,
  false fluid rate) merged into one JSON file under a prefix, so the clean and the noisy evaluation share
  ``metrics.json``, and the per-scan table behind them.

Conventions: arrays are channel-first, rows first (``(1, H, W)`` for B-scans, ``(1, H, W, S)`` for volumes whose
last axis indexes the B-scans), exactly as loaded by the bundle's configs; masks are binary after post-processing.
Files are written on ``save_rank`` only and never appear half-written: masks, overlays, the per-scan table and the
JSON report go through :mod:`custom_components.utils.atomic` (a temporary file renamed into place), and the
measurements CSV is written to ``*.partial`` as rows come and renamed when the run completes
(:class:`~custom_components.handlers.prediction_writer.PredictionWriter`). Overlays are drawn by
:func:`custom_components.visualize.overlay_image`.
"""

from __future__ import annotations

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

from custom_components.data.image_files import IMAGE_EXTENSIONS, NIFTI_EXTENSIONS, is_nifti, printable_path
from custom_components.handlers.prediction_writer import PredictionWriter
from custom_components.utils.atomic import save_atomic, write_csv_atomic, write_json_atomic
from custom_components.utils.events import attach_once
from custom_components.visualize.oct import overlay_image

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["MEASUREMENT_COLUMNS", "PER_SCAN_COLUMNS", "FluidPredictionWriter", "SegmentationReport"]

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


def _bscan_axes(image: Any) -> list[int]:
    """(rows, columns, B-scans) axes of the stored volume (:class:`~custom_components.transforms.oct.BScanLayoutd`)."""
    axes = image.meta.get("bscan_axes") if isinstance(image, MetaTensor) else None
    return [int(a) for a in axes] if axes is not None else [0, 1, 2]


def _spacing(
    item_image: Any, source: str, pixel_spacing_mm: Sequence[float] | None
) -> tuple[tuple[float, ...] | None, str]:
    """Voxel spacing in mm (rows, columns[, B-scans]) and where it came from."""
    if is_nifti(source) and isinstance(item_image, MetaTensor):
        affine = convert_to_numpy(item_image.affine)  # the file's own: BScanLayoutd leaves it untouched
        sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        order = _bscan_axes(item_image) if item_image.ndim == 4 else [0, 1]
        return tuple(float(sizes[a]) for a in order), "nifti_header"
    if pixel_spacing_mm is not None:
        return tuple(float(s) for s in pixel_spacing_mm), "pixel_spacing_mm"
    return None, "unknown"


def _mask_nifti(mask: np.ndarray, image: Any, source: str):
    """The (rows, columns[, B-scans]) mask as a NIfTI image in the source file's own axis order, with its affine
    and header (units, qform/sform codes, descriptions), stored as uint8 {0, 1}."""
    import nibabel as nib

    stored = (np.transpose(mask, np.argsort(_bscan_axes(image))) if mask.ndim == 3 else mask).astype(np.uint8)
    if is_nifti(source) and os.path.isfile(source):
        original = nib.load(source)  # the header only; the voxels are not read
        header = original.header.copy()
        header.set_data_dtype(np.uint8)
        header.set_slope_inter(1.0, 0.0)
        stored = stored.reshape(stored.shape + (1,) * (len(original.shape) - stored.ndim))  # trailing 1s kept
        return type(original)(stored, original.affine, header)
    affine = convert_to_numpy(image.affine) if isinstance(image, MetaTensor) else np.eye(4)
    return nib.Nifti1Image(stored, affine)


def _stem(source: str) -> str:
    name = os.path.basename(source)
    for ending in NIFTI_EXTENSIONS + IMAGE_EXTENSIONS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return os.path.splitext(name)[0]


class FluidPredictionWriter(PredictionWriter):
    """Write masks, overlays and fluid measurements for every item an engine processes.

    The run's events, the rank that writes and the ``fluid_measurements.csv`` life cycle (``.partial`` until the run
    completes) are those of :class:`~custom_components.handlers.prediction_writer.PredictionWriter`.

    Args:
        output_dir: destination; masks go to ``masks/<name>_fluid.png`` (2D image files) or ``.nii.gz`` (NIfTI
            inputs, with their affine and header), overlays to
            ``overlays/<name>[_sliceK]_overlay.png``, the CSV to the folder itself (``<name>``: the input's file name
            without its ending, with ``_2``, ``_3``, ... for later inputs of the same name).
        pixel_spacing_mm: (row, column) spacing of 2D inputs in mm, when known (PNG/JPEG/TIFF files carry none);
            a single number means square pixels. NIfTI volumes always use their header.
        save_masks: write mask files.
        save_overlays: write overlay PNGs (for a volume: the B-scan with the most fluid).
        save_measurements: write ``fluid_measurements.csv``.
        image_key, pred_key, label_key: keys of the decollated items; ``label_key`` is optional per item.
        output_transform: maps ``engine.state.output`` to the list of item dicts (default: as is, decollating a
            batch dict if needed).
        save_rank: the rank that writes.

    Volumes arrive as (1, rows, columns, B-scans) (:class:`~custom_components.transforms.oct.BScanLayoutd`); the
    mask volume is written back in the file's own axis order, with its affine and header.

    Raises:
        ValueError: on a spacing that is not one number or two positive numbers.
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
        super().__init__(
            output_dir,
            filename="fluid_measurements.csv" if save_measurements else None,
            columns=MEASUREMENT_COLUMNS,
            output_transform=output_transform,
            save_rank=save_rank,
        )
        self.pixel_spacing_mm = pixel_spacing_mm
        self.save_masks, self.save_overlays, self.save_measurements = save_masks, save_overlays, save_measurements
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key

    def summary(self) -> str:
        measured = f"fluid measurements in {self.csv_path}; " if self.csv_path is not None else ""
        return f"{measured}masks and overlays in {self.output_dir}"

    def write_item(self, item: Mapping) -> None:
        """Write the outputs of one decollated item (``image`` (1, H, W[, S]), ``pred`` same shape, binary)."""
        image, pred = item[self.image_key], item[self.pred_key]
        source = str(image.meta.get("filename_or_obj", "image")) if isinstance(image, MetaTensor) else "image"
        stem = self.unique_stem(_stem(source), source)
        bscans = convert_to_numpy(image)[0].astype(np.float32)
        mask = convert_to_numpy(pred)[0] > 0.5
        truth = item.get(self.label_key)
        has_truth = isinstance(truth, (torch.Tensor, np.ndarray)) and np.ndim(truth) == np.ndim(pred)
        truth = convert_to_numpy(truth)[0] > 0.5 if has_truth else None
        spacing, spacing_source = _spacing(image, source, self.pixel_spacing_mm)
        volume = mask.ndim == 3  # (rows, columns, B-scans)
        in_plane = (0, 1)

        if self.save_masks:
            if volume or is_nifti(source):  # a NIfTI input gets a NIfTI mask, in its own space
                path = os.path.join(self.output_dir, "masks", f"{stem}_fluid.nii.gz")
                nifti = _mask_nifti(mask, image, source)
                save_atomic(path, lambda tmp: nifti.to_filename(tmp))
            else:
                png = Image.fromarray(mask.astype(np.uint8) * 255)
                save_atomic(os.path.join(self.output_dir, "masks", f"{stem}_fluid.png"), png.save)

        if self.save_overlays:
            k = int(mask.sum(axis=in_plane).argmax()) if volume else None  # the B-scan with the most fluid
            pick = (lambda a: a[:, :, k]) if volume else (lambda a: a)
            rgb = overlay_image(pick(bscans), pick(mask), None if truth is None else pick(truth))
            suffix = f"_slice{k:03d}" if volume else ""
            save_atomic(
                os.path.join(self.output_dir, "overlays", f"{stem}{suffix}_overlay.png"), Image.fromarray(rgb).save
            )

        if self.save_measurements:
            spacing_text = "x".join(f"{s:g}" for s in spacing) if spacing else ""
            area = float(np.prod([spacing[a] for a in in_plane])) if spacing else None
            per_slice = mask.sum(axis=in_plane) if volume else [mask.sum()]
            for k, pixels in enumerate(per_slice):
                mm2 = "" if area is None else round(float(pixels) * area, 6)
                self.write_row([source, k if volume else "", int(pixels), mm2, "", spacing_text, spacing_source])
            if volume:
                voxels = int(mask.sum())
                cubic = spacing[0] * spacing[1] * spacing[2] if spacing and len(spacing) >= 3 else None
                mm3 = "" if cubic is None else round(voxels * cubic, 6)
                self.write_row([source, "all", voxels, "", mm3, spacing_text, spacing_source])


class SegmentationReport:
    """The evaluator's fluid metrics as a JSON summary under a prefix, and the per-scan table behind them (CSV).

    The numbers are those of the evaluator's own metrics (``engine.state.metrics``, computed by MONAI and
    gathered across ranks; see :mod:`custom_components.metrics.segmentation` for what each means). The per-scan
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
