# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Output writers of the OCT fluid segmentation bundle.

- :class:`FluidPredictionWriter` (inference, and overlays in evaluation): per input a mask file (PNG for a 2D
  B-scan, NIfTI with the input's affine for a volume), an overlay PNG (predicted fluid in colour, the ground truth
  outline when known), and ``fluid_measurements.csv``: fluid area per B-scan and fluid volume per volume, in
  mm^2 / mm^3 when the spacing is known (NIfTI header, or ``pixel_spacing_mm`` for PNGs), in pixels otherwise.
- :class:`SegmentationReport` (evaluation): Dice and Jaccard per image and their means, merged into one JSON file
  under a prefix, so the clean and the noisy evaluation share ``metrics.json``.

Conventions: arrays are channel-first, rows first (``(1, H, W)`` for B-scans, ``(1, H, W, S)`` for volumes whose
last axis indexes the B-scans), exactly as loaded by the bundle's configs; masks are binary after post-processing.
Files are written on ``save_rank`` only and never appear half-written: masks and overlays are written to a temporary
name and renamed into place, the CSV is written to ``*.partial`` as rows come (flushed per iteration) and renamed
when the run completes, and the JSON report is replaced atomically.
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
from monai.data import MetaTensor, decollate_batch
from monai.metrics import compute_dice, compute_iou
from monai.utils import IgniteInfo, min_version, optional_import
from PIL import Image

from custom_components.handlers.atomic import write_json_atomic
from custom_components.transforms.io import is_nifti

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["MEASUREMENT_COLUMNS", "overlay_image", "FluidPredictionWriter", "SegmentationReport"]

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


def _array(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a binary (H, W) mask (4-neighbourhood)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def overlay_image(bscan: np.ndarray, prediction: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    """Colour overlay of one B-scan.

    Args:
        bscan: (H, W) intensities (any range; min-max scaled for display).
        prediction: (H, W) binary predicted fluid, drawn as a translucent orange fill.
        truth: optional (H, W) binary ground truth, drawn as a green outline.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    gray = bscan.astype(np.float32)
    span = float(gray.max() - gray.min())
    gray = (gray - gray.min()) / span if span > 0 else np.zeros_like(gray)
    rgb = np.repeat(gray[..., None] * 255.0, 3, axis=2)
    fluid = prediction.astype(bool)
    rgb[fluid] = 0.45 * rgb[fluid] + 0.55 * np.array([255.0, 140.0, 0.0])
    if truth is not None:
        rgb[_outline(truth.astype(bool))] = (40.0, 230.0, 60.0)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _spacing(
    item_image: Any, source: str, pixel_spacing_mm: Sequence[float] | None
) -> tuple[tuple[float, ...] | None, str]:
    """Voxel spacing in mm (rows, columns[, slices]) and where it came from."""
    if is_nifti(source) and isinstance(item_image, MetaTensor):
        affine = _array(item_image.affine)
        sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
        return tuple(float(s) for s in sizes[: item_image.ndim - 1]), "nifti_header"
    if pixel_spacing_mm is not None:
        return tuple(float(s) for s in pixel_spacing_mm), "pixel_spacing_mm"
    return None, "unknown"


def _save_atomic(path: str, save: Callable[[str], None]) -> None:
    """Call ``save(temporary path)`` then rename it to ``path``: a reader sees the old file, none, or the whole new one.

    The temporary name keeps the file's ending (``.png``, ``.nii.gz``), because Pillow and nibabel choose the
    format from it.
    """
    folder, name = os.path.split(path)
    stem = _stem(name)
    tmp = os.path.join(folder, f".{stem}.{os.getpid()}.tmp{name[len(stem):]}")
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _stem(source: str) -> str:
    name = os.path.basename(source)
    for ending in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"):
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return os.path.splitext(name)[0]


class FluidPredictionWriter:
    """Write masks, overlays and fluid measurements for every item an engine processes.

    Args:
        output_dir: destination; masks go to ``masks/<name>_fluid.png|.nii.gz``, overlays to
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
        slice_axis: spatial axis of a volume that indexes its B-scans (0, 1 or 2; the inferer's ``slice_axis``):
            per-B-scan rows and the overlay follow it; the mask volume keeps the input's axes and affine.
        save_rank: the rank that writes.

    Raises:
        ValueError: on a spacing that is not one number or two positive numbers, or a ``slice_axis`` not in 0..2.
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
        slice_axis: int = 2,
        save_rank: int = 0,
    ) -> None:
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (a spatial axis of a volume), got {slice_axis!r}.")
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
        self.output_dir = output_dir
        self.pixel_spacing_mm = pixel_spacing_mm
        self.save_masks, self.save_overlays, self.save_measurements = save_masks, save_overlays, save_measurements
        self.image_key, self.pred_key, self.label_key = image_key, pred_key, label_key
        self.output_transform = output_transform
        self.slice_axis = slice_axis
        self.save_rank = save_rank
        self._file = None
        self._writer = None
        self._stems: dict[str, str] = {}

    @property
    def csv_path(self) -> str:
        return os.path.join(self.output_dir, "fluid_measurements.csv")

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)
        if not engine.has_event_handler(self.close, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.close)

    def _is_writer(self) -> bool:
        return idist.get_rank() == self.save_rank

    def started(self, engine: Engine | None = None) -> None:
        if not self._is_writer():
            return
        os.makedirs(self.output_dir, exist_ok=True)
        self._stems = {}
        if self.save_measurements:
            self._file = open(self.csv_path + ".partial", "w", newline="")
            self._writer = csv.writer(self._file)
            self._writer.writerow(MEASUREMENT_COLUMNS)

    def close(self, engine: Engine | None = None, error: Exception | None = None) -> None:
        """Close the CSV, leaving it as ``*.partial`` (the run did not complete)."""
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
            logger.warning("Run stopped early: measurements so far are in %s.partial", self.csv_path)

    def completed(self, engine: Engine | None = None) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None
            os.replace(self.csv_path + ".partial", self.csv_path)
            logger.info("Fluid measurements: %s", self.csv_path)
        if self._is_writer():
            logger.info("Masks and overlays: %s", self.output_dir)

    def _items(self, engine: Engine) -> list[Mapping]:
        data = self.output_transform(engine.state.output)
        if isinstance(data, Mapping):
            data = decollate_batch(data)
        return list(data)

    def __call__(self, engine: Engine) -> None:
        if not self._is_writer():
            return
        for item in self._items(engine):
            self.write_item(item)
        if self._file is not None:
            self._file.flush()

    def _unique_stem(self, source: str) -> str:
        """Output name stem of ``source``; inputs sharing a file name (``p1/b001.png``, ``p2/b001.png``, ``b001.tif``)
        get ``_2``, ``_3``, ... in processing order instead of overwriting each other's outputs."""
        stem, n = _stem(source), 1
        candidate = stem
        while self._stems.get(candidate, source) != source:
            n += 1
            candidate = f"{stem}_{n}"
        if candidate != stem and candidate not in self._stems:
            logger.warning("%s shares its name with %s: its outputs are named %s_*", source, self._stems[stem], candidate)
        self._stems[candidate] = source
        return candidate

    def write_item(self, item: Mapping) -> None:
        """Write the outputs of one decollated item (``image`` (1, H, W[, S]), ``pred`` same shape, binary)."""
        image, pred = item[self.image_key], item[self.pred_key]
        source = str(image.meta.get("filename_or_obj", "image")) if isinstance(image, MetaTensor) else "image"
        stem = self._unique_stem(source)
        bscans = _array(image)[0].astype(np.float32)
        mask = _array(pred)[0] > 0.5
        truth = item.get(self.label_key)
        has_truth = isinstance(truth, (torch.Tensor, np.ndarray)) and np.ndim(truth) == np.ndim(pred)
        truth = _array(truth)[0] > 0.5 if has_truth else None
        spacing, spacing_source = _spacing(image, source, self.pixel_spacing_mm)
        volume = mask.ndim == 3
        in_plane = tuple(a for a in range(3) if a != self.slice_axis) if volume else (0, 1)

        if self.save_masks:
            os.makedirs(os.path.join(self.output_dir, "masks"), exist_ok=True)
            if volume:
                import nibabel as nib

                affine = _array(image.affine) if isinstance(image, MetaTensor) else np.eye(4)
                nifti = nib.Nifti1Image(mask.astype(np.uint8), affine)
                path = os.path.join(self.output_dir, "masks", f"{stem}_fluid.nii.gz")
                _save_atomic(path, lambda tmp: nib.save(nifti, tmp))
            else:
                png = Image.fromarray(mask.astype(np.uint8) * 255)
                _save_atomic(os.path.join(self.output_dir, "masks", f"{stem}_fluid.png"), png.save)

        if self.save_overlays:
            os.makedirs(os.path.join(self.output_dir, "overlays"), exist_ok=True)
            k = int(mask.sum(axis=in_plane).argmax()) if volume else None  # the B-scan with the most fluid
            pick = (lambda a: np.take(a, k, axis=self.slice_axis)) if volume else (lambda a: a)
            rgb = overlay_image(pick(bscans), pick(mask), None if truth is None else pick(truth))
            suffix = f"_slice{k:03d}" if volume else ""
            _save_atomic(
                os.path.join(self.output_dir, "overlays", f"{stem}{suffix}_overlay.png"), Image.fromarray(rgb).save
            )

        if self._writer is not None:
            spacing_text = "x".join(f"{s:g}" for s in spacing) if spacing else ""
            area = float(np.prod([spacing[a] for a in in_plane])) if spacing else None
            per_slice = mask.sum(axis=in_plane) if volume else [mask.sum()]
            for k, pixels in enumerate(per_slice):
                mm2 = "" if area is None else round(float(pixels) * area, 6)
                self._writer.writerow([source, k if volume else "", int(pixels), mm2, "", spacing_text, spacing_source])
            if volume:
                voxels = int(mask.sum())
                cubic = spacing[0] * spacing[1] * spacing[2] if spacing and len(spacing) >= 3 else None
                mm3 = "" if cubic is None else round(voxels * cubic, 6)
                self._writer.writerow([source, "all", voxels, "", mm3, spacing_text, spacing_source])


class SegmentationReport:
    """Dice and Jaccard per image and their means, merged into a JSON file under ``prefix``.

    Two means are reported, because about half of a fluid data set may be scans without fluid: ``dice`` over all
    images (an image with no fluid scores 1 if nothing is predicted, else 0) and ``dice_fluid_scans`` over the
    images whose ground truth has fluid (likewise for Jaccard).

    Args:
        output_path: the JSON file; existing keys of other prefixes are kept unless ``overwrite``.
        prefix: key prefix, e.g. ``""`` for clean images and ``"noisy_"`` for the noise test.
        extra: constant entries to add (e.g. ``{"noise_sigma": 0.1}``).
        output_transform: maps ``engine.state.output`` to ``(preds, labels)`` lists of (1, H, W) binary tensors.
        save_rank: the rank that writes.
        overwrite: start a new file instead of merging into an existing one (the first report of a run).
    """

    def __init__(
        self,
        output_path: str,
        prefix: str = "",
        extra: Mapping[str, Any] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
        save_rank: int = 0,
        overwrite: bool = False,
    ) -> None:
        from monai.handlers import from_engine

        self.output_path, self.prefix = output_path, prefix
        self.extra = dict(extra or {})
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.save_rank = save_rank
        self.overwrite = overwrite
        self._rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine | None = None) -> None:
        self._rows = []

    def __call__(self, engine: Engine) -> None:
        preds, labels = self.output_transform(engine.state.output)
        for pred, label in zip(preds, labels):
            y_pred, y = (torch.as_tensor(t)[None].float() for t in (pred, label))  # (1, 1, H, W[, S])
            source = pred.meta.get("filename_or_obj", "") if isinstance(pred, MetaTensor) else ""
            self._rows.append(
                {
                    "image": str(source),
                    "dice": float(compute_dice(y_pred, y, ignore_empty=False)[0, 0]),
                    "jaccard": float(compute_iou(y_pred, y, ignore_empty=False)[0, 0]),
                    "has_fluid": bool(y.sum() > 0),
                }
            )

    def summary(self) -> dict[str, Any]:
        """The means over all images and over the images with fluid (``None`` where there are none)."""

        def mean(key: str, rows: list[dict]) -> float | None:
            return float(np.mean([r[key] for r in rows])) if rows else None

        fluid = [r for r in self._rows if r["has_fluid"]]
        return {
            "dice": mean("dice", self._rows),
            "jaccard": mean("jaccard", self._rows),
            "dice_fluid_scans": mean("dice", fluid),
            "jaccard_fluid_scans": mean("jaccard", fluid),
            "num_images": len(self._rows),
            "num_fluid_images": len(fluid),
        }

    def completed(self, engine: Engine | None = None) -> None:
        if idist.get_rank() != self.save_rank:
            return
        report = {}
        if os.path.isfile(self.output_path) and not self.overwrite:
            with open(self.output_path) as f:
                report = json.load(f)
        report.update({f"{self.prefix}{k}": v for k, v in self.summary().items()})
        report.update(self.extra)
        report[f"{self.prefix}per_image"] = self._rows
        write_json_atomic(report, self.output_path)
        summary = self.summary()
        nan = float("nan")  # no images: the means are None
        logger.info(
            "%s: Dice %.4f, Jaccard %.4f over %d images -> %s",
            self.prefix.rstrip("_") or "clean",
            nan if summary["dice"] is None else summary["dice"],
            nan if summary["jaccard"] is None else summary["jaccard"],
            summary["num_images"],
            self.output_path,
        )
