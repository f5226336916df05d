# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""One reader for every OCT input of the fluid bundle: vendor files, DICOM OCT and the plain image formats.

:func:`read_oct_volume` turns any supported file into an :class:`OCTVolume`: the B-scans as one
``(rows, columns, B-scans)`` array plus what the file says about them (voxel spacing in mm, laterality, scan date,
vendor). :class:`LoadOCTVolumed` is the MONAI transform the bundle's preprocessing uses in place of ``LoadImaged``.

No format is parsed here: the vendor files go through the libraries that already read them.

==================  ======================  =================================================================
format              file                    read by; tested in ``tests/unit/test_oct_volumes.py`` with
==================  ======================  =================================================================
``heidelberg_vol``  ``.vol``                eyepy ``HeVolReader`` (behind ``eyepy.import_heyex_vol``); a
                                            3-B-scan file built with eyepy's own ``vol_format`` definition
                                            (eyepy 0.21's ``HeVolWriter`` cannot write dates): pixels, spacing,
                                            laterality, date, B-scan order, identifiers
``heidelberg_e2e``  ``.e2e``                ``eyepy.import_heyex_e2e`` (the first OCT volume of the file); not
                                            tested here: neither library writes E2E
``heidelberg_xml``  ``.xml``                ``eyepy.import_heyex_xml`` (the B-scan images beside the XML); an
                                            XML with eyepy's ``xml_format`` elements and PNG B-scans
``topcon_fda``      ``.fda``                oct-converter ``FDA``; chunks built with oct-converter's
                                            ``fda_binary`` structs (raw ``@IMG_MOT_COMP_03`` B-scans; the
                                            JPEG-compressed ``@IMG_JPEG`` variant is not tested)
``topcon_fds``      ``.fds``                oct-converter ``FDS``; chunks built with its ``fds_binary`` structs
``zeiss_img``       ``.img``                oct-converter ``IMG`` (Cirrus raw cube: no header, no spacing); a
                                            bare 1024 x 512 x 2 byte cube
``dicom_oct``       ``.dcm``, DICOM magic   pydicom (Ophthalmic Tomography Image Storage,
                                            1.2.840.10008.5.1.4.1.1.77.1.5.4); a pydicom-written multi-frame
                                            object, also without extension
``dicom``           ``.dcm``, DICOM magic   pydicom (any other DICOM image: its frames as B-scans); untested
``nifti``           ``.nii``, ``.nii.gz``   nibabel (axes by ``bscan_axes``, as ``BScanLayoutd``); mm and
                                            micron headers, and one without qform/sform
``png`` ...         ``.png`` ``.tif`` ...   Pillow (one B-scan per page, 16-bit kept); a 16-bit PNG and a
                                            3-page 16-bit TIFF
==================  ======================  =================================================================

Conventions of :attr:`OCTVolume.data` (all formats):

- axis 0: B-scan rows, the axial direction (depth), as the reading library gives them: the vitreous at row 0 for
  the Heidelberg, Topcon, DICOM and image formats; a Zeiss IMG cube is given as stored, which was not checked here
  against a real Cirrus export (check an overlay of the first result);
- axis 1: columns, the A-scans of one B-scan (lateral), in the order the file stores them;
- axis 2: the B-scans. Where the file gives every B-scan's position on the localizer (Heidelberg VOL, E2E and
  XML), the volume is reordered so that **B-scan 0 is the most inferior** one (the fluid report's default
  ``first_bscan="inferior"``) and :attr:`OCTVolume.first_bscan` says ``"inferior"``. The other formats give no
  position (Topcon FDA/FDS, Zeiss IMG, DICOM without a localizer reference, NIfTI, images): their B-scans stay in
  the stored order and ``first_bscan`` is None (unknown); set the report's ``first_bscan`` for them.

Intensities are those a vendor viewer shows: Heidelberg VOL stores linear reflectivity as float32 and eyepy maps it
to 8 bits with its ``vol`` intensity transform (logarithmic, the look of Heyex exports); every other format is taken
as stored (8 or 16 bits). The bundle's intensity scaling follows the reader.

Spacing (:attr:`OCTVolume.spacing_mm`, axial, lateral, inter-B-scan in mm):

- Heidelberg VOL / E2E / XML: eyepy's ``scale_y`` / ``scale_x`` / ``scale_z`` (VOL header fields ``scale_y``,
  ``scale_x``, ``distance``; XML has no B-scan distance: eyepy estimates it from the B-scan positions);
- Topcon FDA / FDS: oct-converter's ``pixel_spacing`` from the ``@PARAM_SCAN_04`` (or ``_02``) chunk;
- Zeiss Cirrus IMG: the file is a bare byte cube with no header, and oct-converter gives no spacing: all three are
  unknown (a 512 x 128 macular cube is nominally 6 x 6 x 2 mm, but nothing in the file says which cube it is, so
  give ``spacing_mm`` yourself). oct-converter takes laterality and date from the file name as Cirrus exports name
  it (``..._OD_...``, ``MM-DD-YYYY_HH-MM-SS``). The ``.img`` ending is also Analyze's: such files are refused by
  their size or fail to read, and are skipped and reported;
- DICOM: ``PixelSpacing`` (rows = axial, columns = lateral) and ``SpacingBetweenSlices`` (else
  ``SliceThickness``) of the shared, else the first per-frame, functional groups' ``PixelMeasuresSequence``, else
  the top-level attributes. Zeiss Cirrus DICOM exports whose pixel data Zeiss scrambles are not readable: the
  reader for them is not in oct-converter 0.6.1 (the last release that accepts pydicom 2);
- NIfTI: the header (qform/sform and ``xyzt_units``; see
  :func:`custom_components.handlers.oct.nifti_spacing_mm`), permuted by ``bscan_axes``;
- PNG, TIFF, JPEG, BMP: unknown.

A user ``spacing_mm`` replaces the file's values (``spacing_source="user override"``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from custom_components.data.image_files import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    OCT_VENDOR_EXTENSIONS,
    is_dicom_file,
    is_nifti,
    printable_path,
)
from custom_components.transforms.oct import BScanLayoutd, BScanToGrayscale

__all__ = [
    "OCTMetadata",
    "read_oct_metadata",
    "OCT_FORMATS",
    "SPACING_SOURCES",
    "DICOM_OCT_SOP_CLASS",
    "OCTVolume",
    "read_oct_volume",
    "LoadOCTVolumed",
]

logger = logging.getLogger(__name__)

#: the ``format`` values of :class:`OCTVolume`
OCT_FORMATS = (
    "heidelberg_vol",
    "heidelberg_e2e",
    "heidelberg_xml",
    "topcon_fda",
    "topcon_fds",
    "zeiss_img",
    "dicom_oct",
    "dicom",
    "nifti",
    "png",
    "tiff",
    "jpeg",
    "bmp",
)
#: where :attr:`OCTVolume.spacing_mm` came from (the values of ``ProvenanceSource`` in the fluid report)
SPACING_SOURCES = ("file header", "user override", "unknown")
#: SOP Class UID of DICOM Ophthalmic Tomography Image Storage
DICOM_OCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
#: 2D image formats: one B-scan per page, loaded as ``(1, H, W)`` like the bundle's PNG path
_PLANAR_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp"}
#: Zeiss Cirrus IMG cubes: (A-scans per B-scan, B-scans) of the scan patterns whose raw cube oct-converter reads,
#: every A-scan 1024 samples deep. The file has no header: the pattern is known from its size only.
_ZEISS_CUBES = ((512, 128), (200, 200))
_ZEISS_DEPTH = 1024
_AXES = ("axial", "lateral", "inter_bscan")


class OCTMetadata(dict):
    """The public metadata of one volume (:meth:`OCTVolume.public_metadata`): a plain dict of JSON values, typed so
    that :func:`~custom_components.data.collate_skipping_failures` knows to batch it as JSON text.

    PyTorch's collation refuses None (an unknown spacing or laterality), and ``monai.data.decollate_batch`` would
    take a collated dict of lists apart value by value (a spacing list becomes its first number). JSON text goes
    through both unchanged; :func:`read_oct_metadata` turns either form back into a dict.
    """


def read_oct_metadata(value: Any) -> dict[str, Any]:
    """The metadata dict from what an item or a batch of one holds: the dict itself, its JSON text (after
    collation and decollation), or a one-element list of either; ``{}`` for None.

    Raises:
        ValueError: on any other value, or a list of more than one (a batch: decollate it first).
    """
    if value is None:
        return {}
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"expected the metadata of one volume, got a list of {len(value)} (decollate first).")
        value = value[0]
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, Mapping):
        raise ValueError(f"OCT metadata must be a dict or its JSON text, got {type(value).__name__}.")
    return dict(value)


@dataclasses.dataclass
class OCTVolume:
    """An OCT scan as the bundle sees it, whatever file it came from (see the module docstring for the conventions).

    Attributes:
        data: ``(rows, columns, B-scans)``: rows are the axial direction (depth), columns the A-scans, the last axis
            the B-scans (B-scan 0 the most inferior where ``first_bscan`` says so). A 2D image is ``(H, W, 1)``.
        spacing_mm: (axial, lateral, inter_bscan) in mm, each a float or None when unknown.
        spacing_source: ``"file header"``, ``"user override"`` (any axis given by the user) or ``"unknown"``.
        laterality: ``"OD"`` (right eye), ``"OS"`` (left eye) or None.
        scan_date: ISO date (``YYYY-MM-DD``) of the acquisition, or None.
        vendor: who made the device or wrote the file (``"Heidelberg Engineering"``, ``"Topcon"``, ``"Carl Zeiss
            Meditec"``, a DICOM ``Manufacturer``, or ``""`` for plain images).
        format: one of :data:`OCT_FORMATS`.
        fovea: (B-scan index, column) of the fovea where the file stores it (in the volume's order), else None.
            None for every format today: neither eyepy 0.21 nor oct-converter 0.6.1 exposes a foveal position from
            these files, and the fluid report then falls back to the user's fovea or the volume centre.
        fovea_source: ``"file"`` when ``fovea`` is set, else None.
        first_bscan: ``"inferior"`` when the file's B-scan positions showed the order (B-scan 0 is then the most
            inferior), None when the B-scans are in stored order of unknown direction.
        identifiers: patient and study identifiers found in the file (patient ID, study/series/SOP instance UIDs,
            ...); kept for writers that must reference the source (a DICOM SEG), never logged, not in ``repr`` nor
            in :meth:`public_metadata`.
        source_path: the file read.
    """

    data: np.ndarray
    spacing_mm: tuple[float | None, float | None, float | None]
    spacing_source: str
    laterality: str | None
    scan_date: str | None
    vendor: str
    format: str
    source_path: str
    fovea: tuple[int, int] | None = None
    fovea_source: str | None = None
    first_bscan: str | None = None
    identifiers: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"{self.source_path}: data must be (rows, columns, B-scans), got shape {self.data.shape}.")
        if self.spacing_source not in SPACING_SOURCES:
            raise ValueError(f"spacing_source must be one of {SPACING_SOURCES}, got {self.spacing_source!r}.")
        if self.format not in OCT_FORMATS:
            raise ValueError(f"format must be one of {OCT_FORMATS}, got {self.format!r}.")

    def __repr__(self) -> str:  # the dataclass repr would print the whole array
        return (
            f"{type(self).__name__}(shape={tuple(self.data.shape)}, dtype={self.data.dtype}, "
            f"spacing_mm={self.spacing_mm}, spacing_source={self.spacing_source!r}, laterality={self.laterality!r}, "
            f"scan_date={self.scan_date!r}, vendor={self.vendor!r}, format={self.format!r}, fovea={self.fovea!r}, "
            f"first_bscan={self.first_bscan!r}, source_path={self.source_path!r})"
        )

    def public_metadata(self) -> OCTMetadata:
        """Everything but the pixels and the identifiers, as JSON-serialisable values (lists, strings, numbers,
        None): ``spacing_mm``, ``spacing_source``, ``laterality``, ``scan_date``, ``vendor``, ``format``,
        ``fovea``, ``fovea_source``, ``first_bscan``, ``shape`` (rows, columns, B-scans) and ``source_path``."""
        return OCTMetadata({
            "spacing_mm": [None if s is None else float(s) for s in self.spacing_mm],
            "spacing_source": self.spacing_source,
            "laterality": self.laterality,
            "scan_date": self.scan_date,
            "vendor": self.vendor,
            "format": self.format,
            "fovea": None if self.fovea is None else [int(self.fovea[0]), int(self.fovea[1])],
            "fovea_source": self.fovea_source,
            "first_bscan": self.first_bscan,
            "shape": [int(s) for s in self.data.shape],
            "source_path": printable_path(self.source_path),
        })


# ----------------------------------------------------------------------------------------------------------------
# small helpers shared by the readers


def _positive_or_none(value: Any) -> float | None:
    """A spacing as a positive finite float, or None (a missing, zero, negative or non-numeric header value)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _laterality(value: Any) -> str | None:
    """``"OD"``/``"OS"`` from the ways files spell it (``OD``, ``R``, ``right``, ``OS``, ``L``, ``left``, with padding
    or a terminating NUL), None for anything else (``"OU"``, empty, unknown)."""
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip().upper()
    if text in ("OD", "R", "RIGHT"):
        return "OD"
    if text in ("OS", "L", "LEFT"):
        return "OS"
    return None


def _iso_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from a ``date``/``datetime`` or DICOM ``DA``/``DT`` text, None when absent or unparsable."""
    if value is None:
        return None
    day = None
    if isinstance(value, (datetime.datetime, datetime.date)):
        day = value.date() if isinstance(value, datetime.datetime) else value
    else:
        text = str(value).strip()
        try:  # ISO text, as eyepy decodes Heidelberg dates ("2021-03-04T00:00:00")
            day = datetime.datetime.fromisoformat(text).date()
        except ValueError:
            if len(text) >= 8 and text[:8].isdigit():  # DICOM DA / DT: YYYYMMDD[HHMMSS...]
                try:
                    day = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
                except ValueError:
                    day = None
    # eyepy fills a missing XML date with 0001-01-01 and Heyex's zero date is 1601-01-01 / 1899-12-30: placeholders
    return day.isoformat() if day is not None and day.year >= 1900 else None


def _check_spacing_override(spacing_mm: Any) -> dict[str, float] | None:
    """The user's spacing as ``{axis: mm}`` (axes of :data:`_AXES`), from three values or a dict of some axes."""
    if spacing_mm is None:
        return None
    if isinstance(spacing_mm, Mapping):
        unknown = sorted(str(k) for k in spacing_mm if k not in _AXES)
        if unknown or not spacing_mm:
            raise ValueError(f"spacing_mm as a dict takes the keys {_AXES} (one or more), got {dict(spacing_mm)!r}.")
        values = dict(spacing_mm)
    else:
        if np.ndim(spacing_mm) != 1 or len(spacing_mm) != 3:
            raise ValueError(
                f"spacing_mm must be three values (axial, lateral, inter_bscan) in mm or a dict per axis, "
                f"got {spacing_mm!r}."
            )
        values = dict(zip(_AXES, spacing_mm))
    checked = {axis: _positive_or_none(v) for axis, v in values.items()}
    bad = {axis: values[axis] for axis, v in checked.items() if v is None}
    if bad:
        raise ValueError(f"spacing_mm values must be positive numbers of mm, got {bad!r}.")
    return checked  # type: ignore[return-value]


def _apply_spacing(volume: OCTVolume, override: dict[str, float] | None) -> OCTVolume:
    """The volume with the user's spacing in place of the file's, and the provenance to match."""
    header = tuple(_positive_or_none(s) for s in volume.spacing_mm)
    if override:
        spacing = tuple(override.get(axis, header[i]) for i, axis in enumerate(_AXES))
        return dataclasses.replace(volume, spacing_mm=spacing, spacing_source="user override")
    source = "file header" if any(s is not None for s in header) else "unknown"
    return dataclasses.replace(volume, spacing_mm=header, spacing_source=source)


def _inferior_first(positions_y: Sequence[float] | None) -> bool | None:
    """Whether B-scan 0 is the most inferior one, from the B-scans' vertical positions on the localizer (mm, growing
    downwards as image rows do, so inferior = larger). None when there are fewer than two or they do not differ."""
    if positions_y is None or len(positions_y) < 2:
        return None
    first, last = float(positions_y[0]), float(positions_y[-1])
    if not (math.isfinite(first) and math.isfinite(last)) or first == last:
        return None
    return first > last


# ----------------------------------------------------------------------------------------------------------------
# the readers: each returns an OCTVolume with the file's own spacing (the override is applied afterwards)


def _from_eyepy(path: str, fmt: str, volume: Any, identifiers: dict[str, str]) -> OCTVolume:
    """An eyepy ``EyeVolume`` (data ``(B-scans, rows, columns)``) as an :class:`OCTVolume`, inferior B-scan first."""
    data = np.moveaxis(np.asarray(volume.data), 0, -1)  # (B-scans, rows, columns) -> (rows, columns, B-scans)
    meta = volume.meta
    unit = str(meta["scale_unit"] if "scale_unit" in meta else "mm")
    scales = (meta.get("scale_y"), meta.get("scale_x"), meta.get("scale_z")) if hasattr(meta, "get") else ()
    spacing = tuple(_positive_or_none(s) if unit == "mm" else None for s in scales) or (None, None, None)
    bscan_meta = meta["bscan_meta"] if "bscan_meta" in meta else []
    try:
        ys = [float(b["start_pos"][1]) for b in bscan_meta]
    except (KeyError, TypeError, IndexError):
        ys = None
    inferior_first = _inferior_first(ys)
    if inferior_first is False:  # the file starts at the top: reverse so that B-scan 0 is the most inferior
        data = data[:, :, ::-1]
    when = None
    for key in ("exam_time", "visit_date"):
        when = when or (_iso_date(meta[key]) if key in meta else None)
    return OCTVolume(
        data=np.ascontiguousarray(data),
        spacing_mm=spacing,  # type: ignore[arg-type]
        spacing_source="file header",
        laterality=_laterality(meta["laterality"] if "laterality" in meta else None),
        scan_date=when,
        vendor="Heidelberg Engineering",
        format=fmt,
        source_path=path,
        first_bscan=None if inferior_first is None else "inferior",
        identifiers=identifiers,
    )


def _read_heidelberg(path: str, fmt: str) -> OCTVolume:
    import eyepy
    from eyepy.io.he import HeVolReader

    identifiers: dict[str, str] = {}
    if fmt == "heidelberg_vol":
        reader = HeVolReader(path)
        header = reader.parsed_file
        for key in ("patient_id", "pid", "id", "visit_id", "reference_id"):
            value = str(header.get(key, "")).replace("\x00", "").strip()
            if value:
                identifiers[key] = value
        volume = reader.volume
    elif fmt == "heidelberg_e2e":
        volume = eyepy.import_heyex_e2e(path)
    else:
        volume = eyepy.import_heyex_xml(path)
    if fmt != "heidelberg_vol":  # eyepy keeps the XML's (and some E2E) patient ids in meta["patient"]
        meta = volume.meta
        patient = meta["patient"] if "patient" in meta and isinstance(meta["patient"], Mapping) else {}
        for key in ("patient_id", "pid"):
            value = patient.get(key, meta[key] if key in meta else None)
            if value not in (None, ""):
                identifiers[key] = str(value)
    return _from_eyepy(path, fmt, volume, identifiers)


def _from_oct_converter(path: str, fmt: str, oct_volume: Any, spacing: Sequence[Any] | None, vendor: str) -> OCTVolume:
    """An oct-converter ``OCTVolumeWithMetaData`` (a list of ``(rows, columns)`` B-scans) as an :class:`OCTVolume`.

    oct-converter's ``pixel_spacing`` is ordered (lateral, inter-B-scan, axial) (``FDS.read_scan_params``)."""
    data = np.stack([np.asarray(b) for b in oct_volume.volume], axis=-1)
    axial = lateral = between = None
    if spacing is not None and len(spacing) == 3:
        lateral, between, axial = (_positive_or_none(s) for s in spacing)
    identifiers = {}
    for key in ("patient_id", "volume_id"):
        value = getattr(oct_volume, key, None)
        if value not in (None, ""):
            identifiers[key] = str(value)
    return OCTVolume(
        data=data,
        spacing_mm=(axial, lateral, between),
        spacing_source="file header",
        laterality=_laterality(getattr(oct_volume, "laterality", None)),
        scan_date=_iso_date(getattr(oct_volume, "acquisition_date", None)),
        vendor=vendor,
        format=fmt,
        source_path=path,
        identifiers=identifiers,
    )


def _read_topcon(path: str, fmt: str) -> OCTVolume:
    from oct_converter.readers import FDA, FDS

    with warnings.catch_warnings():  # oct-converter 0.6.1 reads with the deprecated np.fromstring
        warnings.simplefilter("ignore", DeprecationWarning)
        reader = FDA(path, printing=False) if fmt == "topcon_fda" else FDS(path)
        oct_volume = reader.read_oct_volume()
    return _from_oct_converter(path, fmt, oct_volume, oct_volume.pixel_spacing, "Topcon")


def _zeiss_columns(path: str) -> int:
    """A-scans per B-scan of a Zeiss Cirrus raw cube, from its size (the file has no header)."""
    size = os.path.getsize(path)
    for columns, bscans in _ZEISS_CUBES:  # the exact size of a known cube first
        if size == _ZEISS_DEPTH * columns * bscans:
            return columns
    for columns, _ in _ZEISS_CUBES:
        if size % (_ZEISS_DEPTH * columns) == 0:
            return columns
    cubes = ", ".join(f"{c} x {b}" for c, b in _ZEISS_CUBES)
    raise ValueError(
        f"{size:,} bytes is not a whole number of {_ZEISS_DEPTH}-deep B-scans of any Cirrus cube pattern ({cubes}); "
        "not a Zeiss Cirrus raw cube"
    )


def _read_zeiss(path: str) -> OCTVolume:
    from oct_converter.readers import IMG

    oct_volume = IMG(path).read_oct_volume(rows=_ZEISS_DEPTH, cols=_zeiss_columns(path))
    # no spacing: the raw cube has no header and oct-converter does not derive one from the pattern
    return _from_oct_converter(path, "zeiss_img", oct_volume, None, "Carl Zeiss Meditec")


def _dicom_pixel_measures(ds: Any) -> tuple[Any, Any]:
    """``PixelMeasuresSequence`` item to use (shared, else the first per-frame group's), and the dataset itself."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        sequence = getattr(ds, groups, None)
        if sequence:
            measures = getattr(sequence[0], "PixelMeasuresSequence", None)
            if measures:
                return measures[0], ds
    return None, ds


def _read_dicom(path: str) -> OCTVolume:
    import pydicom

    ds = pydicom.dcmread(path)
    if "PixelData" not in ds:
        raise ValueError(f"DICOM object of SOP class {ds.get('SOPClassUID', '?')} holds no image (no Pixel Data)")
    pixels = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ValueError(f"DICOM image has {samples} samples per pixel; an OCT B-scan has one (grayscale)")
    # pydicom gives (frames, rows, columns) for a multi-frame object and (rows, columns) for one frame
    data = np.moveaxis(pixels, 0, -1) if frames > 1 else pixels[..., None]
    measures, _ = _dicom_pixel_measures(ds)
    holder = measures if measures is not None else ds
    pixel_spacing = holder.get("PixelSpacing") or ds.get("PixelSpacing")
    axial = lateral = None
    if pixel_spacing is not None and len(pixel_spacing) == 2:  # (between rows, between columns)
        axial, lateral = _positive_or_none(pixel_spacing[0]), _positive_or_none(pixel_spacing[1])
    between = _positive_or_none(holder.get("SpacingBetweenSlices") or ds.get("SpacingBetweenSlices"))
    if between is None:
        between = _positive_or_none(holder.get("SliceThickness") or ds.get("SliceThickness"))
    laterality = _laterality(ds.get("ImageLaterality")) or _laterality(ds.get("Laterality"))
    when = None
    for tag in ("AcquisitionDateTime", "AcquisitionDate", "ContentDate", "SeriesDate", "StudyDate"):
        when = when or _iso_date(ds.get(tag))
    identifiers = {}
    for tag in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber"):
        value = ds.get(tag)
        if value not in (None, ""):
            identifiers[tag] = str(value)
    is_oct = str(ds.get("SOPClassUID", "")) == DICOM_OCT_SOP_CLASS
    return OCTVolume(
        data=data,
        spacing_mm=(axial, lateral, between),
        spacing_source="file header",
        laterality=laterality,
        scan_date=when,
        vendor=str(ds.get("Manufacturer", "") or ""),
        format="dicom_oct" if is_oct else "dicom",
        source_path=path,
        identifiers=identifiers,
    )


def _read_nifti(path: str, bscan_axes: Sequence[int]) -> OCTVolume:
    import nibabel as nib

    from custom_components.handlers.oct import nifti_spacing_mm  # the writer's reading of the same header

    image = nib.load(path)
    data = np.asarray(image.dataobj)
    while data.ndim > 2 and data.shape[-1] == 1:  # trailing singleton axes, as the bundle's NIfTI reader squeezes
        data = data[..., 0]
    sizes = nifti_spacing_mm(path)
    if data.ndim == 2:
        spacing = (None, None, None) if sizes is None else (sizes[0], sizes[1], None)
        return OCTVolume(data[..., None], spacing, "file header", None, None, "", "nifti", path)  # type: ignore
    if data.ndim != 3:
        raise ValueError(f"expected a 2D B-scan or a 3D volume, got a {data.ndim}D array of shape {data.shape}")
    axes = [int(a) for a in bscan_axes]
    spacing = (None, None, None) if sizes is None else tuple(sizes[a] for a in axes)
    return OCTVolume(np.transpose(data, axes), spacing, "file header", None, None, "", "nifti", path)  # type: ignore


def _read_planar(path: str, fmt: str) -> OCTVolume:
    from PIL import Image, ImageSequence

    convert = BScanToGrayscale()  # the bundle's own B-scan conversion: colour to luminance, 16-bit kept
    with Image.open(path) as img:
        pages = [np.asarray(convert(page.copy())) for page in ImageSequence.Iterator(img)]
    shapes = {p.shape for p in pages}
    if len(shapes) != 1:
        raise ValueError(f"its {len(pages)} pages differ in size ({sorted(shapes)}); one volume needs one B-scan size")
    return OCTVolume(np.stack(pages, axis=-1), (None, None, None), "unknown", None, None, "", fmt, path)


def _format_of(path: Path) -> str:
    """The format of ``path`` from its name, or from its content for DICOM without the ``.dcm`` ending."""
    name = path.name.lower()
    if is_nifti(name):
        return "nifti"
    suffix = path.suffix.lower()
    if suffix in _PLANAR_FORMATS:
        return _PLANAR_FORMATS[suffix]
    vendor = {".vol": "heidelberg_vol", ".e2e": "heidelberg_e2e", ".xml": "heidelberg_xml", ".fda": "topcon_fda"}
    vendor.update({".fds": "topcon_fds", ".img": "zeiss_img"})
    if suffix in vendor:
        return vendor[suffix]
    if suffix in DICOM_EXTENSIONS or is_dicom_file(path):
        return "dicom"
    known = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS + OCT_VENDOR_EXTENSIONS + DICOM_EXTENSIONS
    raise ValueError(f"{printable_path(path)}: unknown OCT file type {suffix or '(no extension)'!r} (expected one of "
                     f"{', '.join(known)}, or a DICOM file).")  # fmt: skip


def read_oct_volume(
    path: str | os.PathLike,
    spacing_mm: Sequence[float] | Mapping[str, float] | None = None,
    bscan_axes: Sequence[int] = (0, 1, 2),
) -> OCTVolume:
    """Read any supported OCT file (see the module docstring) into an :class:`OCTVolume`.

    Args:
        path: the file (for a Heidelberg XML export, its ``.xml`` file, with the B-scan images beside it).
        spacing_mm: user spacing replacing the file's: three values (axial, lateral, inter_bscan) in mm, or a dict
            with some of the keys ``axial``, ``lateral``, ``inter_bscan`` (the other axes keep the file's values);
            ``spacing_source`` is then ``"user override"``.
        bscan_axes: for NIfTI only, the stored axes holding (rows, columns, B-scans), a permutation of (0, 1, 2)
            (the bundle's ``bscan_axes``; :class:`custom_components.transforms.oct.BScanLayoutd`).

    Returns:
        the volume, ``data`` of shape (rows, columns, B-scans) in the file's dtype (uint8, uint16, float32, ...).

    Raises:
        ValueError: on a bad ``spacing_mm`` or ``bscan_axes``; on an unknown file type, a missing file or one the
            library cannot read, naming the file and the problem (the library's message included), so that
            :class:`~custom_components.data.SkippingDataset` skips and reports it.
    """
    override = _check_spacing_override(spacing_mm)
    axes = [int(a) for a in bscan_axes]
    if sorted(axes) != [0, 1, 2]:
        raise ValueError(f"bscan_axes must be a permutation of (0, 1, 2), got {bscan_axes!r}.")
    source = Path(path)
    name = printable_path(source)
    if not source.is_file():
        raise ValueError(f"{name}: OCT file not found (or not a file).")
    fmt = _format_of(source)
    try:
        if fmt.startswith("heidelberg"):
            volume = _read_heidelberg(str(source), fmt)
        elif fmt.startswith("topcon"):
            volume = _read_topcon(str(source), fmt)
        elif fmt == "zeiss_img":
            volume = _read_zeiss(str(source))
        elif fmt == "dicom":
            volume = _read_dicom(str(source))
        elif fmt == "nifti":
            volume = _read_nifti(str(source), axes)
        else:
            volume = _read_planar(str(source), fmt)
    except Exception as err:  # the libraries raise anything from struct errors to KeyError on a broken file
        reader = fmt.replace("_", " ")
        raise ValueError(f"{name}: cannot read it as {reader} ({type(err).__name__}: {err}).") from err
    if volume.data.size == 0 or min(volume.data.shape) < 1:
        raise ValueError(f"{name}: the {fmt} file holds no B-scan (shape {volume.data.shape}).")
    if volume.data.dtype.kind not in "biuf":
        raise ValueError(f"{name}: voxel type {volume.data.dtype} is not a grayscale intensity.")
    volume = _apply_spacing(volume, override)
    logger.debug("read %s: %s", name, volume)  # the repr carries no identifier
    return volume


class LoadOCTVolumed(MapTransform):
    """Load any OCT file (:func:`read_oct_volume`) into ``(1, rows, columns, B-scans)`` float32 MetaTensors.

    Replaces ``LoadImaged`` + ``EnsureChannelFirstd`` + ``BScanLayoutd`` in the OCT bundle's preprocessing:

    - a volume (vendor file, DICOM, 3D NIfTI, multi-page TIFF) gives ``(1, rows, columns, B-scans)``;
    - a 2D file (PNG, JPEG, BMP, one-page TIFF, 2D NIfTI) gives ``(1, H, W)``, exactly what the bundle's
      ``LoadImaged`` path gives, so it keeps its 2D outputs (a PNG mask for a PNG B-scan).

    The MetaTensor's affine is ``diag(axial, lateral, inter_bscan, 1)`` in mm (``diag(axial, lateral, 1)`` for 2D),
    with 1 standing in for an unknown spacing; its meta holds ``filename_or_obj`` (the file) and ``bscan_axes``: the
    stored axes that became (rows, columns, B-scans), ``bscan_axes`` for a NIfTI volume, ``[0, 1, 2]`` otherwise, so
    that the fluid writer stores a NIfTI input's mask in the file's own axis order (as after ``BScanLayoutd``).
    ``data[meta_key]`` receives :meth:`OCTVolume.public_metadata` (an :class:`OCTMetadata`, no identifiers), which
    :func:`~custom_components.data.collate_skipping_failures` batches as JSON text that survives
    ``monai.data.decollate_batch``; read it back with :func:`read_oct_metadata`.

    Args:
        keys: keys of the file paths; each is replaced by its image.
        spacing_mm: user spacing for every file (see :func:`read_oct_volume`), or None for the files' own.
        bscan_axes: NIfTI axes holding (rows, columns, B-scans), a permutation of (0, 1, 2).
        expected_aspect: rows / columns of the training B-scans: a NIfTI volume whose B-scans fit it clearly better
            transposed gets :class:`~custom_components.transforms.oct.BScanLayoutd`'s warning (``bscan_axes`` is
            probably wrong); None to skip. The vendor formats' axes are fixed by their readers.
        meta_key: key receiving the public metadata (with several ``keys``: ``f"{key}_{meta_key}"`` for all but
            the first).
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: on a bad ``spacing_mm``, ``bscan_axes`` or ``expected_aspect``, an empty ``meta_key``; (when
            called) on any file :func:`read_oct_volume` cannot read, naming it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spacing_mm: Sequence[float] | Mapping[str, float] | None = None,
        bscan_axes: Sequence[int] = (0, 1, 2),
        expected_aspect: float | None = None,
        meta_key: str = "oct_meta",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        _check_spacing_override(spacing_mm)
        # BScanLayoutd validates bscan_axes and expected_aspect, and holds the aspect check NIfTI volumes get
        self._layout = BScanLayoutd(keys, bscan_axes=bscan_axes, expected_aspect=expected_aspect)
        if not isinstance(meta_key, str) or not meta_key:
            raise ValueError(f"meta_key must be a non-empty string, got {meta_key!r}.")
        if spacing_mm is not None:
            spacing_mm = dict(spacing_mm) if isinstance(spacing_mm, Mapping) else [float(s) for s in spacing_mm]
        self.spacing_mm = spacing_mm
        self.bscan_axes = list(self._layout.bscan_axes)
        self.expected_aspect = expected_aspect
        self.meta_key = meta_key

    def __repr__(self) -> str:  # MONAI names the transform in its errors: say which one, not an address
        return (
            f"{type(self).__name__}(keys={list(self.keys)}, spacing_mm={self.spacing_mm}, "
            f"bscan_axes={self.bscan_axes}, meta_key={self.meta_key!r})"
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for index, key in enumerate(self.key_iterator(d)):
            volume = read_oct_volume(d[key], spacing_mm=self.spacing_mm, bscan_axes=self.bscan_axes)
            # a 2D file stays 2D, as the bundle's PNG path gives it (one-page image, 2D NIfTI)
            planar = volume.format in _PLANAR_FORMATS.values() or volume.format == "nifti"
            planar = planar and volume.data.shape[2] == 1
            array = volume.data[..., 0] if planar else volume.data
            spacing = [1.0 if s is None else float(s) for s in volume.spacing_mm][: array.ndim]
            affine = torch.diag(torch.tensor(spacing + [1.0], dtype=torch.float64))
            stored_axes = self.bscan_axes if volume.format == "nifti" and not planar else [0, 1, 2]
            if volume.format == "nifti" and not planar:
                self._layout._check_aspect(volume.source_path, int(array.shape[0]), int(array.shape[1]))
            meta = {"filename_or_obj": str(d[key]), "bscan_axes": list(stored_axes)}  # no None: meta is collated
            d[key] = MetaTensor(torch.as_tensor(array.astype(np.float32))[None], affine=affine, meta=meta)
            d[self.meta_key if index == 0 else f"{key}_{self.meta_key}"] = volume.public_metadata()
        return d
