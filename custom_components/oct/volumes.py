# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""One reader for every OCT input of the fluid bundle: vendor files, DICOM OCT and the plain image formats.

:func:`read_oct_volume` turns any supported file into an :class:`OCTVolume`: the B-scans as one
``(rows, columns, B-scans)`` array plus what the file says about them (voxel spacing in mm, laterality, scan date,
vendor). :class:`LoadOCTVolumed` is the MONAI transform the bundle's preprocessing uses in place of ``LoadImaged``.

No format is parsed here: the vendor files go through the libraries that already read them.

==================  ======================  =================================================================
format              file                    read by; tested in ``tests/oct/test_oct_volumes.py`` with
==================  ======================  =================================================================
``heidelberg_vol``  ``.vol``                eyepy ``HeVolReader`` (behind ``eyepy.import_heyex_vol``; its
                                            parsed B-scans for the circle and radial scans ``EyeVolume``
                                            refuses); a 3-B-scan file built with eyepy's own ``vol_format``
                                            definition (eyepy 0.21's ``HeVolWriter`` cannot write dates): pixels,
                                            spacing, laterality, date, B-scan direction and raster; real Spectralis
                                            line and circle exports (``tests/data/heidelberg_vol``, tested in
                                            ``tests/oct/test_vendor_vol_fixtures.py``)
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
- axis 2: the B-scans, always **in the file's order** (B-scan ``k`` is the vendor viewer's B-scan ``k``, so a
  ``fovea`` given in its numbering and the NIfTI mask's B-scans match it). Where the file gives every B-scan's
  position on the localizer (Heidelberg VOL, E2E and XML), :attr:`OCTVolume.first_bscan` says which end is down:
  ``"inferior"`` when B-scan 0 is the lowest, ``"superior"`` when it is the top one; when those positions show
  B-scans that are not a horizontal parallel raster (vertical raster, radial or tilted B-scans) ``first_bscan`` is
  None and :attr:`OCTVolume.raster` is ``"not horizontal"``, and the fluid report refuses the ETDRS grid. The other
  formats give no position (Topcon FDA/FDS, Zeiss IMG, DICOM, NIfTI, images): ``first_bscan`` is None (unknown) and
  the report names the vertical quadrants by B-scan end; set the report's ``first_bscan`` for S/I names.

Scan pattern (:attr:`OCTVolume.scan_pattern`: ``cube``, ``line``, ``circle``, ``radial`` or ``unknown``; see
:class:`~custom_components.oct.etdrs.ScanPattern`): how the B-scans lie on the fundus, which decides whether the
fluid report lays an ETDRS grid (a cube only) and computes a volume:

- Heidelberg VOL: the header's ``ScanPattern`` code (:data:`HEYEX_SCAN_PATTERNS`: 1 line, 2 circle, 3 and 4 cube,
  5 radial; 0 and any other code unknown). A scan that is not a cube gets no inter-B-scan spacing;
- Zeiss Cirrus IMG, Topcon FDA/FDS and DICOM Ophthalmic Tomography of more than one B-scan: ``cube`` (the readers'
  volumes; none of these files gives a pattern to check, so a radial DICOM or Topcon export would be called a cube,
  and gets the grid as before the pattern was read);
- Heidelberg E2E and XML, NIfTI, other DICOM images, one-B-scan files, PNG, TIFF, JPEG, BMP: ``unknown``. A B-scan
  image does not say whether it is a line scan, one B-scan of a cube or an unrolled circle scan, so it is not
  called ``line``; the XML export has no pattern, and eyepy does not know the E2E field's codes to be VOL's (eyepy
  0.21 still refuses E2E files whose field says circle or radial: they are skipped and reported).

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
- DICOM: ``PixelSpacing`` (rows = axial, columns = lateral) of the shared, else the first per-frame, functional
  groups' ``PixelMeasuresSequence``, else the top-level attribute; between B-scans ``SpacingBetweenSlices`` (same
  places), else the median distance between consecutive frames' ``ImagePositionPatient``
  (``PlanePositionSequence`` per frame), else unknown. ``SliceThickness`` is not used: in an Ophthalmic
  Tomography object it is the nominal thickness of a B-scan, not the distance between B-scans. Zeiss Cirrus
  DICOM exports whose pixel data Zeiss scrambles are not readable: the reader for them is not in oct-converter
  0.6.1 (the last release that accepts pydicom 2);
- NIfTI: the header (qform/sform and ``xyzt_units``; see
  :func:`custom_components.core.image_files.nifti_spacing_mm`), permuted by ``bscan_axes``;
- PNG, TIFF, JPEG, BMP: unknown.

The reader gives the file's values only (``spacing_source`` ``"file header"`` or ``"unknown"``); a user spacing is
set on the fluid writer (``FluidPredictionWriter(spacing_mm=...)``, provenance ``"user override"``).

Patient and study identifiers are not read into memory: the DICOM SEG writer reads its source file again.
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

from custom_components.core.image_files import (
    DICOM_EXTENSIONS,
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    is_dicom_file,
    is_nifti,
    nifti_spacing_mm,
    printable_path,
    register_format_screener,
)
from custom_components.core.inputs import JSONRecord, register_export_members
from custom_components.oct.etdrs import ProvenanceSource, ScanPattern
from custom_components.oct.transforms import BScanLayoutd, BScanToGrayscale

__all__ = [
    "OCT_VENDOR_EXTENSIONS",
    "OCT_EXTENSIONS",
    "ZEISS_CUBES",
    "ZEISS_DEPTH",
    "screen_vendor_file",
    "heidelberg_xml_members",
    "OCTMetadata",
    "read_oct_metadata",
    "OCT_FORMATS",
    "HEYEX_SCAN_PATTERNS",
    "DICOM_OCT_SOP_CLASS",
    "OCTVolume",
    "read_oct_volume",
    "LoadOCTVolumed",
]

logger = logging.getLogger(__name__)

#: OCT vendor files: Heidelberg VOL, E2E and XML export, Topcon FDA and FDS, Zeiss Cirrus IMG
OCT_VENDOR_EXTENSIONS = (".vol", ".e2e", ".xml", ".fda", ".fds", ".img")
#: Zeiss Cirrus IMG cubes: (A-scans per B-scan, B-scans) of the scan patterns whose raw cube oct-converter reads,
#: every A-scan :data:`ZEISS_DEPTH` samples deep. The file has no header: the pattern is known from its size only.
ZEISS_CUBES = ((512, 128), (200, 200))
ZEISS_DEPTH = 1024
#: everything the OCT fluid bundle reads through ``LoadOCTVolumed`` (the IFE bundle passes ``IMAGE_EXTENSIONS``)
OCT_EXTENSIONS = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS + OCT_VENDOR_EXTENSIONS + DICOM_EXTENSIONS
#: the first bytes of each vendor format, checked at screening (cheap: no parsing; the full parse comes at load
#: time, and its errors go through the skip-and-report path). Heidelberg VOL files begin with their version text,
#: "HSF-OCT-1xx" from Heyex, "ep-v" when eyepy's ``HeVolWriter`` wrote them; E2E with the "CMDb" magic of its
#: version header; Topcon FDA/FDS with "FOCT" (then the file type, "FDA" or "FAA", which FDS files share). XML is
#: checked for an XML start; a Zeiss IMG cube has no header, so only its size is checked (whole
#: :data:`ZEISS_DEPTH`-deep B-scans of a :data:`ZEISS_CUBES` width).
_VENDOR_MAGIC = {
    ".vol": (b"HSF-OCT-", b"ep-v"),
    ".e2e": (b"CMDb",),
    ".fda": (b"FOCT",),
    ".fds": (b"FOCT",),
}


def screen_vendor_file(path: Path) -> str | None:
    """Cheap screening of an OCT vendor file (registered with
    :func:`~custom_components.core.image_files.register_format_screener`, so that every screening of the project
    knows the vendor formats): its first bytes (see :data:`_VENDOR_MAGIC`) or, for a Zeiss IMG cube, its size.

    Returns:
        ``None`` when the file looks like its format, otherwise the problem.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    with open(path, "rb") as f:
        head = f.read(256)
    if suffix in _VENDOR_MAGIC:
        magic = _VENDOR_MAGIC[suffix]
        if not head.startswith(magic):
            expected = " or ".join(repr(m.decode()) for m in magic)
            return f"not a {suffix} OCT file: it does not begin with {expected}"
        return None
    if suffix == ".xml":
        text = head.lstrip(b"\xef\xbb\xbf").lstrip()
        return None if text.startswith(b"<") else "not an XML file (no '<' at its start)"
    if suffix == ".img":
        size = path.stat().st_size
        widths = [columns for columns, _ in ZEISS_CUBES]
        if not any(size % (ZEISS_DEPTH * columns) == 0 for columns in widths):
            return (
                f"not a Zeiss Cirrus raw cube: {size:,} bytes is not whole {ZEISS_DEPTH}-deep B-scans of "
                f"{' or '.join(str(w) for w in widths)} A-scans"
            )
    return None


register_format_screener(OCT_VENDOR_EXTENSIONS, screen_vendor_file)


def heidelberg_xml_members(xml_path: Path) -> set[Path]:
    """The image files a Heidelberg (Heyex) XML export names (``ImageData/ExamURL``, a Windows path whose file name
    is looked up beside the XML); empty for an XML that is not one or does not parse (its load fails and is reported
    then). Registered with :func:`~custom_components.core.inputs.register_export_members`, so that a folder listing
    takes the export as one input."""
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError):
        return set()
    names = {(url.text or "").replace("\\", "/").rsplit("/", 1)[-1] for url in root.iter("ExamURL")}
    return {(xml_path.parent / name).resolve() for name in names if name}


register_export_members(".xml", heidelberg_xml_members)

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
#: SOP Class UID of DICOM Ophthalmic Tomography Image Storage
DICOM_OCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.5.4"
#: 2D image formats: one B-scan per page, loaded as ``(1, H, W)`` like the bundle's PNG path
_PLANAR_FORMATS = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "bmp"}
#: a B-scan whose ends differ vertically by more than this fraction of its length is not horizontal
_TILT_TOLERANCE = 0.02
#: the Heyex VOL header's ``ScanPattern`` codes as :attr:`OCTVolume.scan_pattern` values. The codes as the VOL
#: export's specification gives them (quoted in eyepy 0.21's ``vol_format``): 0 unknown pattern, 1 single line scan
#: (one B-scan), 2 circular scan (one B-scan), 3 volume scan in ART mode, 4 fast volume scan, 5 radial scan (star
#: pattern). Any other code is ``"unknown"``. The real exports in ``tests/data/heidelberg_vol`` agree: the code-1 file
#: is a 9.08 mm straight B-scan (768 A-scans of ``scale_x`` from its start to its end point), the code-2 file a
#: B-scan whose 768 A-scans of ``scale_x`` are exactly the circumference of the circle its header centres on.
HEYEX_SCAN_PATTERNS = {
    1: ScanPattern.LINE,
    2: ScanPattern.CIRCLE,
    3: ScanPattern.CUBE,
    4: ScanPattern.CUBE,
    5: ScanPattern.RADIAL,
}


class OCTMetadata(JSONRecord):
    """The public metadata of one volume (:meth:`OCTVolume.public_metadata`): a plain dict of JSON values, typed so
    that :func:`~custom_components.core.inputs.collate_skipping_failures` knows to batch it as JSON text.

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
            the B-scans in the file's order. A 2D image is ``(H, W, 1)``.
        spacing_mm: (axial, lateral, inter_bscan) in mm, each a float or None when unknown.
        spacing_source: ``"file header"`` or ``"unknown"`` (a ``ProvenanceSource`` value).
        laterality: ``"OD"`` (right eye), ``"OS"`` (left eye) or None.
        scan_date: ISO date (``YYYY-MM-DD``) of the acquisition, or None.
        vendor: who made the device or wrote the file (``"Heidelberg Engineering"``, ``"Topcon"``, ``"Carl Zeiss
            Meditec"``, a DICOM ``Manufacturer``, or ``""`` for plain images).
        format: one of :data:`OCT_FORMATS`.
        first_bscan: ``"inferior"`` (B-scan 0 is the lowest) or ``"superior"`` (B-scan 0 is the top one) when the
            file's B-scan positions show it, None when the direction is unknown (or the scan is not a horizontal
            raster).
        raster: ``"not horizontal"`` when the file's B-scan positions show a raster that is not horizontal and
            parallel (vertical, radial or tilted B-scans: no ETDRS grid), else None (horizontal, or unknown).
        scan_pattern: how the B-scans lie on the fundus, one of
            :attr:`~custom_components.oct.etdrs.ScanPattern.ALL`: ``"cube"`` (a raster of parallel B-scans, the
            macular volume), ``"line"``, ``"circle"``, ``"radial"`` or ``"unknown"``. From the file where it says
            (the Heyex VOL header, :data:`HEYEX_SCAN_PATTERNS`); ``"cube"`` for the formats read as cubes (Zeiss
            Cirrus IMG, Topcon FDA/FDS and DICOM OCT of more than one B-scan); ``"unknown"`` otherwise (see the module
            docstring). Only ``cube`` and ``unknown`` scans get an ETDRS grid.
        source_path: the file read.

    No foveal position is read: neither eyepy 0.21 nor oct-converter 0.6.1 exposes one from these files, and the
    fluid report takes the user's fovea or the volume centre. No patient or study identifier is kept.
    """

    data: np.ndarray
    spacing_mm: tuple[float | None, float | None, float | None]
    spacing_source: str
    laterality: str | None
    scan_date: str | None
    vendor: str
    format: str
    source_path: str
    first_bscan: str | None = None
    raster: str | None = None
    scan_pattern: str = ScanPattern.UNKNOWN

    def __post_init__(self) -> None:
        if self.data.ndim != 3:
            raise ValueError(f"{self.source_path}: data must be (rows, columns, B-scans), got shape {self.data.shape}.")
        if self.spacing_source not in ProvenanceSource.ALL:
            raise ValueError(f"spacing_source must be one of {ProvenanceSource.ALL}, got {self.spacing_source!r}.")
        if self.format not in OCT_FORMATS:
            raise ValueError(f"format must be one of {OCT_FORMATS}, got {self.format!r}.")
        if self.scan_pattern not in ScanPattern.ALL:
            raise ValueError(f"scan_pattern must be one of {ScanPattern.ALL}, got {self.scan_pattern!r}.")

    def __repr__(self) -> str:  # the dataclass repr would print the whole array
        return (
            f"{type(self).__name__}(shape={tuple(self.data.shape)}, dtype={self.data.dtype}, "
            f"spacing_mm={self.spacing_mm}, spacing_source={self.spacing_source!r}, laterality={self.laterality!r}, "
            f"scan_date={self.scan_date!r}, vendor={self.vendor!r}, format={self.format!r}, "
            f"first_bscan={self.first_bscan!r}, raster={self.raster!r}, scan_pattern={self.scan_pattern!r}, "
            f"source_path={self.source_path!r})"
        )

    def public_metadata(self) -> OCTMetadata:
        """Everything but the pixels, as JSON-serialisable values (lists, strings, numbers, None): ``spacing_mm``,
        ``spacing_source``, ``laterality``, ``scan_date``, ``vendor``, ``format``, ``first_bscan``, ``raster``,
        ``scan_pattern``, ``shape`` (rows, columns, B-scans) and ``source_path``."""
        return OCTMetadata({
            "spacing_mm": [None if s is None else float(s) for s in self.spacing_mm],
            "spacing_source": self.spacing_source,
            "laterality": self.laterality,
            "scan_date": self.scan_date,
            "vendor": self.vendor,
            "format": self.format,
            "first_bscan": self.first_bscan,
            "raster": self.raster,
            "scan_pattern": self.scan_pattern,
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


def _checked_spacing(volume: OCTVolume) -> OCTVolume:
    """The volume with its spacing as positive floats or None, and the provenance to match."""
    header = tuple(_positive_or_none(s) for s in volume.spacing_mm)
    known = any(s is not None for s in header)
    source = ProvenanceSource.FILE_HEADER if known else ProvenanceSource.UNKNOWN
    return dataclasses.replace(volume, spacing_mm=header, spacing_source=source)


def _bscan_direction(
    starts: Sequence[Sequence[float]], ends: Sequence[Sequence[float]]
) -> tuple[str | None, str | None]:
    """``(first_bscan, raster)`` from every B-scan's start and end ``(x, y)`` on the localizer (mm, y growing
    downwards as image rows do, so inferior = larger y).

    A horizontal parallel raster (every B-scan's ends at one height, within :data:`_TILT_TOLERANCE` of its length,
    and the B-scans at different heights) gives ``("inferior", None)`` when B-scan 0 is the lowest, ``("superior",
    None)`` when it is the top one. B-scans that are vertical, radial or tilted give ``(None, "not horizontal")``;
    fewer than two B-scans, unusable positions or a first and last B-scan at one height give ``(None, None)``.
    """
    if len(starts) < 2 or len(starts) != len(ends):
        return None, None
    try:
        start, end = np.asarray(starts, dtype=np.float64)[:, :2], np.asarray(ends, dtype=np.float64)[:, :2]
    except (TypeError, ValueError, IndexError):
        return None, None
    if not (np.all(np.isfinite(start)) and np.all(np.isfinite(end))):
        return None, None
    length = np.hypot(end[:, 0] - start[:, 0], end[:, 1] - start[:, 1])
    tilted = np.abs(end[:, 1] - start[:, 1]) > _TILT_TOLERANCE * np.maximum(length, 1e-12)
    first, last = float(start[0, 1]), float(start[-1, 1])
    if np.any(tilted) or np.any(length <= 0):  # vertical, radial or tilted B-scans
        return None, "not horizontal"
    if first == last:  # repeated B-scans at one place: no direction
        return None, None
    return ("inferior" if first > last else "superior"), None


# ----------------------------------------------------------------------------------------------------------------
# the readers: each returns an OCTVolume with the file's own spacing (the override is applied afterwards)


def _from_eyepy(path: str, fmt: str, bscans: np.ndarray, meta: Any, scan_pattern: str | None = None) -> OCTVolume:
    """An eyepy volume as an :class:`OCTVolume`, B-scans in file order.

    Args:
        path, fmt: the file and its format.
        bscans: ``(B-scans, rows, columns)``, the intensities eyepy shows (``EyeVolume.data``).
        meta: eyepy's ``EyeVolumeMeta`` (``scale_x``/``scale_y``/``scale_z`` with ``scale_unit``, ``laterality``,
            ``exam_time``, ``visit_date``, ``bscan_meta`` with each B-scan's ``start_pos``/``end_pos``).
        scan_pattern: a :class:`~custom_components.oct.etdrs.ScanPattern` value, or None (unknown). A scan known
            not to be a cube gets no inter-B-scan spacing: its B-scans are not parallel (radial) or stand alone
            (line, circle), so no distance between them makes a voxel volume.
    """
    data = np.moveaxis(np.asarray(bscans), 0, -1)  # (B-scans, rows, columns) -> (rows, columns, B-scans)
    unit = str(meta["scale_unit"] if "scale_unit" in meta else "mm")
    scales = (meta.get("scale_y"), meta.get("scale_x"), meta.get("scale_z")) if hasattr(meta, "get") else ()
    spacing = tuple(_positive_or_none(s) if unit == "mm" else None for s in scales) or (None, None, None)
    pattern = scan_pattern or ScanPattern.UNKNOWN
    if pattern in ScanPattern.NOT_A_CUBE:
        spacing = (spacing[0], spacing[1], None)
    bscan_meta = meta["bscan_meta"] if "bscan_meta" in meta else []
    try:
        first_bscan, raster = _bscan_direction(
            [b["start_pos"] for b in bscan_meta], [b["end_pos"] for b in bscan_meta]
        )
    except (KeyError, TypeError, IndexError):
        first_bscan, raster = None, None
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
        first_bscan=first_bscan,
        raster=raster,
        scan_pattern=pattern,
    )


def _read_heidelberg_vol(path: str) -> OCTVolume:
    """A Heyex VOL file of any scan pattern.

    eyepy's ``import_heyex_vol`` is ``HeVolReader(path).volume``: the reader parses the whole file (header, B-scans,
    their positions), then ``volume`` builds an ``EyeVolume``, which eyepy 0.21 refuses for circle (2) and radial
    (5) scans with a ValueError naming the scan pattern, although their B-scans are parsed like any other. A
    clinic's folder mixes them with the macular cubes, so for a refused pattern the B-scans are taken from the
    parsed file and mapped to 8 bits by the very transform the ``EyeVolume`` would have applied (eyepy's
    ``intensity_transforms[meta["intensity_transform"]]``, ``"vol"``: the log mapping of Heyex's float
    reflectivity), and the spacing, laterality, dates and B-scan positions by the reader's own ``meta``; the same
    metadata the ``EyeVolume`` carries for the patterns it takes.
    """
    from eyepy.core.utils import intensity_transforms
    from eyepy.io.he.vol_reader import HeVolReader

    reader = HeVolReader(path)
    code = int(reader.parsed_file.scan_pattern)
    pattern = HEYEX_SCAN_PATTERNS.get(code, ScanPattern.UNKNOWN)
    try:
        volume = reader.volume  # eyepy.import_heyex_vol(path) without parsing the file a second time
    except ValueError as err:
        if "scan pattern" not in str(err):  # anything else is a broken file: reported as such
            raise
        logger.debug("%s: eyepy's EyeVolume refuses scan pattern %d (%s); B-scans read from the parsed file",
                     printable_path(path), code, pattern)  # fmt: skip
        meta = reader.meta
        transform = intensity_transforms[meta["intensity_transform"]]
        bscans = transform(np.stack([np.asarray(b.data) for b in reader.parsed_file.bscans], axis=0))
        return _from_eyepy(path, "heidelberg_vol", bscans, meta, pattern)
    return _from_eyepy(path, "heidelberg_vol", np.asarray(volume.data), volume.meta, pattern)


def _read_heidelberg(path: str, fmt: str) -> OCTVolume:
    import eyepy

    if fmt == "heidelberg_vol":
        return _read_heidelberg_vol(path)
    # E2E and XML: scan pattern unknown. eyepy's XML reader has none (the export does not give it), and the E2E
    # field's codes are not known to be the VOL codes (eyepy 0.21 documents it as an open question)
    volume = eyepy.import_heyex_e2e(path) if fmt == "heidelberg_e2e" else eyepy.import_heyex_xml(path)
    return _from_eyepy(path, fmt, np.asarray(volume.data), volume.meta)


def _from_oct_converter(path: str, fmt: str, oct_volume: Any, spacing: Sequence[Any] | None, vendor: str) -> OCTVolume:
    """An oct-converter ``OCTVolumeWithMetaData`` (a list of ``(rows, columns)`` B-scans) as an :class:`OCTVolume`.

    oct-converter's ``pixel_spacing`` is ordered (lateral, inter-B-scan, axial) (``FDS.read_scan_params``).

    Scan pattern ``"cube"`` when there are several B-scans: these readers read the 3D scans (a Cirrus cube, known by
    its size; Topcon's ``@IMG_...`` volume chunks), and oct-converter 0.6.1 gives no scan mode to check it against.
    One B-scan is ``"unknown"`` (as a planar image: which pattern it came from is not said)."""
    data = np.stack([np.asarray(b) for b in oct_volume.volume], axis=-1)
    axial = lateral = between = None
    if spacing is not None and len(spacing) == 3:
        lateral, between, axial = (_positive_or_none(s) for s in spacing)
    return OCTVolume(
        data=data,
        spacing_mm=(axial, lateral, between),
        spacing_source="file header",
        laterality=_laterality(getattr(oct_volume, "laterality", None)),
        scan_date=_iso_date(getattr(oct_volume, "acquisition_date", None)),
        vendor=vendor,
        format=fmt,
        source_path=path,
        scan_pattern=ScanPattern.CUBE if data.shape[2] > 1 else ScanPattern.UNKNOWN,
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
    for columns, bscans in ZEISS_CUBES:  # the exact size of a known cube first
        if size == ZEISS_DEPTH * columns * bscans:
            return columns
    for columns, _ in ZEISS_CUBES:
        if size % (ZEISS_DEPTH * columns) == 0:
            return columns
    cubes = ", ".join(f"{c} x {b}" for c, b in ZEISS_CUBES)
    raise ValueError(
        f"{size:,} bytes is not a whole number of {ZEISS_DEPTH}-deep B-scans of any Cirrus cube pattern ({cubes}); "
        "not a Zeiss Cirrus raw cube"
    )


def _read_zeiss(path: str) -> OCTVolume:
    from oct_converter.readers import IMG

    oct_volume = IMG(path).read_oct_volume(rows=ZEISS_DEPTH, cols=_zeiss_columns(path))
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


def _dicom_frame_step(ds: Any) -> float | None:
    """Median distance in mm between consecutive frames' ``ImagePositionPatient`` (per-frame
    ``PlanePositionSequence``), or None with fewer than two frames or any position missing."""
    positions = []
    for frame in getattr(ds, "PerFrameFunctionalGroupsSequence", None) or []:
        plane = getattr(frame, "PlanePositionSequence", None)
        position = getattr(plane[0], "ImagePositionPatient", None) if plane else None
        if position is None or len(position) != 3:
            return None
        positions.append([float(v) for v in position])
    if len(positions) < 2:
        return None
    steps = np.linalg.norm(np.diff(np.asarray(positions, dtype=np.float64), axis=0), axis=1)
    return _positive_or_none(float(np.median(steps)))


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
    if between is None:  # not SliceThickness: in an OPT object that is a B-scan's thickness, not the step between
        between = _dicom_frame_step(ds)
    laterality = _laterality(ds.get("ImageLaterality")) or _laterality(ds.get("Laterality"))
    when = None
    for tag in ("AcquisitionDateTime", "AcquisitionDate", "ContentDate", "SeriesDate", "StudyDate"):
        when = when or _iso_date(ds.get(tag))
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
        # a multi-frame Ophthalmic Tomography object is taken as the macular cube the bundle reads: the object has
        # no scan-pattern attribute to say otherwise. Any other DICOM image, or one frame, says nothing of a pattern
        scan_pattern=ScanPattern.CUBE if is_oct and data.shape[2] > 1 else ScanPattern.UNKNOWN,
    )


def _read_nifti(path: str, bscan_axes: Sequence[int]) -> OCTVolume:
    import nibabel as nib

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


def read_oct_volume(path: str | os.PathLike, bscan_axes: Sequence[int] = (0, 1, 2)) -> OCTVolume:
    """Read any supported OCT file (see the module docstring) into an :class:`OCTVolume`.

    Args:
        path: the file (for a Heidelberg XML export, its ``.xml`` file, with the B-scan images beside it).
        bscan_axes: for NIfTI only, the stored axes holding (rows, columns, B-scans), a permutation of (0, 1, 2)
            (the bundle's ``bscan_axes``; :class:`custom_components.oct.transforms.BScanLayoutd`).

    Returns:
        the volume, ``data`` of shape (rows, columns, B-scans) in the file's dtype (uint8, uint16, float32, ...).

    Raises:
        ValueError: on a bad ``bscan_axes``; on an unknown file type, a missing file or one the
            library cannot read, naming the file and the problem (the library's message included), so that
            :class:`~custom_components.core.inputs.SkippingDataset` skips and reports it.
    """
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
    volume = _checked_spacing(volume)
    logger.debug("read %s: %s", name, volume)  # the repr carries no identifier
    return volume


class LoadOCTVolumed(MapTransform):
    """Load any OCT file (:func:`read_oct_volume`) into ``(1, rows, columns, B-scans)`` float32 MetaTensors.

    Replaces ``LoadImaged`` + ``EnsureChannelFirstd`` + ``BScanLayoutd`` in the OCT bundle's preprocessing:

    - a volume (vendor file, DICOM, 3D NIfTI, multi-page TIFF) gives ``(1, rows, columns, B-scans)``;
    - a single B-scan, whatever the format (PNG, JPEG, BMP, one-page TIFF, 2D NIfTI, single-frame DICOM, a vendor
      file of one B-scan), gives ``(1, H, W)``, exactly what the bundle's ``LoadImaged`` path gives, so it keeps its
      2D outputs (a PNG mask, a one-row fluid report without ETDRS grid).

    The MetaTensor's affine is ``diag(axial, lateral, inter_bscan, 1)`` in mm (``diag(axial, lateral, 1)`` for 2D),
    with 1 standing in for an unknown spacing; its meta holds ``filename_or_obj`` (the file) and ``bscan_axes``: the
    stored axes that became (rows, columns, B-scans), ``bscan_axes`` for a NIfTI volume, ``[0, 1, 2]`` otherwise, so
    that the fluid writer stores a NIfTI input's mask in the file's own axis order (as after ``BScanLayoutd``).
    ``data[meta_key]`` receives :meth:`OCTVolume.public_metadata` (an :class:`OCTMetadata`, no identifiers), which
    :func:`~custom_components.core.inputs.collate_skipping_failures` batches as JSON text that survives
    ``monai.data.decollate_batch``; read it back with :func:`read_oct_metadata`.

    Args:
        keys: keys of the file paths; each is replaced by its image.
        bscan_axes: NIfTI axes holding (rows, columns, B-scans), a permutation of (0, 1, 2).
        expected_aspect: rows / columns of the training B-scans: a NIfTI volume whose B-scans fit it clearly better
            transposed gets :class:`~custom_components.oct.transforms.BScanLayoutd`'s warning (``bscan_axes`` is
            probably wrong); None to skip. The vendor formats' axes are fixed by their readers.
        meta_key: key receiving the public metadata (with several ``keys``: ``f"{key}_{meta_key}"`` for all but
            the first).
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: on a bad ``bscan_axes`` or ``expected_aspect``, an empty ``meta_key``; (when
            called) on any file :func:`read_oct_volume` cannot read, naming it.
    """

    def __init__(
        self,
        keys: KeysCollection,
        bscan_axes: Sequence[int] = (0, 1, 2),
        expected_aspect: float | None = None,
        meta_key: str = "oct_meta",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        # BScanLayoutd validates bscan_axes and expected_aspect, and holds the aspect check NIfTI volumes get
        self._layout = BScanLayoutd(keys, bscan_axes=bscan_axes, expected_aspect=expected_aspect)
        if not isinstance(meta_key, str) or not meta_key:
            raise ValueError(f"meta_key must be a non-empty string, got {meta_key!r}.")
        self.bscan_axes = list(self._layout.bscan_axes)
        self.expected_aspect = expected_aspect
        self.meta_key = meta_key

    def __repr__(self) -> str:  # MONAI names the transform in its errors: say which one, not an address
        return (
            f"{type(self).__name__}(keys={list(self.keys)}, bscan_axes={self.bscan_axes}, meta_key={self.meta_key!r})"
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for index, key in enumerate(self.key_iterator(d)):
            volume = read_oct_volume(d[key], bscan_axes=self.bscan_axes)
            # one B-scan is a 2D image whatever the format (one-page image, 2D NIfTI, single-frame DICOM, a
            # one-B-scan vendor file), as the bundle's PNG path gives it: no volume, no ETDRS grid
            planar = volume.data.shape[2] == 1
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
