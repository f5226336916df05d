# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Fluid volume per ETDRS sector of a macular OCT volume, from a fluid mask and the voxel spacing.

The ETDRS grid (Early Treatment Diabetic Retinopathy Study, Report 10, Ophthalmology 1991;98:786-806) is centred
on the fovea: a central subfield of 1 mm diameter (``C0``), an inner ring from 1 to 3 mm and an outer ring from 3 to
6 mm diameter, each ring cut by the two diagonals (lines at 45 degrees) into a superior, nasal, inferior and temporal
quadrant. Sector names, as OCT devices print them: ``C0``; ``S1 N1 I1 T1`` (inner ring); ``S2 N2 I2 T2`` (outer
ring); :data:`ETDRS_SECTORS` lists them and :data:`SECTOR_DESCRIPTIONS` spells them out.

Conventions (stated once, used everywhere in the bundle):

- A volume is ``(rows, columns, B-scans)``: rows are axial (depth, top = vitreous), columns are lateral (the fast
  scan direction, along each B-scan), B-scans are the slow direction.
- The **en-face** image is ``(B-scans, columns)``: one row per B-scan, one column per A-scan. It is the fundus view
  as the examiner sees it (not mirrored): increasing column is to the examiner's right. Most devices export B-scans
  in this orientation (a Spectralis horizontal raster shows the fundus this way on its SLO image).
- **Nasal** is toward the optic disc: for a right eye (``OD``) it is the examiner's right of the fovea (increasing
  column), for a left eye (``OS``) the examiner's left (decreasing column). Temporal is the other side.
- **Superior**: ``first_bscan="inferior"`` when B-scan 0 is the most *inferior* B-scan (the index grows upwards),
  ``"superior"`` when it is the top one. With ``first_bscan=None`` (the file does not say which) the vertical
  quadrants are not named S/I but by the end of the B-scan axis they lie toward: ``F1``/``F2`` on the side of the
  *first* B-scan (index 0), ``E1``/``E2`` on the side of the *end* (last) B-scan; figures then draw B-scan 0 at
  the bottom. Figures draw superior up whenever it is known.
- The fovea is given as ``(bscan, column)`` in (possibly fractional) voxel indices.

Sub-voxel accuracy: an en-face pixel (``spacing_bscan_mm`` by ``spacing_lateral_mm`` of retina) cut by a sector
border is shared between the sectors by the fraction of its area that each one covers, estimated by supersampling
the pixel on a regular ``supersample`` x ``supersample`` grid (pixels away from every border are assigned whole,
so the cost stays near one pass over the en-face image). With B-scans 0.12 mm apart a whole-pixel assignment moves
up to 0.06 mm of fluid across the 0.5 mm central border, i.e. errors of several percent in ``C0``; the fractional
coverage keeps it well under 1 %.

Why not ``eyepy``'s circular-grid quantification (``EyeVolumePixelAnnotation.quantification``, eyepy 0.21): it works
in the pixels of the localizer (SLO) image, which a NIfTI or DICOM volume without a localizer lacks, it scales the
radii by one pixel size (square pixels; the en-face of a raster scan is typically 10x anisotropic), shifts the grid
to the fovea by image interpolation, and splits border pixels only with an optional 5x-supersampled whole-image mask.
The grid below is built directly in millimetres on the volume's own en-face image instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from custom_components.oct.fluid_types import BINARY_FLUID, check_fluid_classes

__all__ = [
    "ETDRS_SECTORS",
    "ETDRS_DIAMETERS_MM",
    "SECTOR_DESCRIPTIONS",
    "REPORT_COLUMNS",
    "TYPE_REPORT_COLUMNS",
    "report_columns",
    "ProvenanceSource",
    "ScanPattern",
    "no_grid_reason",
    "check_spacing_mm",
    "sector_masks",
    "sector_names",
    "en_face_thickness",
    "fluid_volumes",
    "volume_centre_fovea",
]

#: ETDRS grid diameters in mm: central subfield, inner ring, outer ring.
ETDRS_DIAMETERS_MM = (1.0, 3.0, 6.0)
#: sector names in report order: the central subfield, then the inner (1) and outer (2) rings, S N I T each.
ETDRS_SECTORS = ("C0", "S1", "N1", "I1", "T1", "S2", "N2", "I2", "T2")
#: what each report row measures.
SECTOR_DESCRIPTIONS = {
    "total": "whole scan",
    "C0": "central subfield (0-1 mm)",
    "S1": "inner superior (1-3 mm)",
    "N1": "inner nasal (1-3 mm)",
    "I1": "inner inferior (1-3 mm)",
    "T1": "inner temporal (1-3 mm)",
    "S2": "outer superior (3-6 mm)",
    "N2": "outer nasal (3-6 mm)",
    "I2": "outer inferior (3-6 mm)",
    "T2": "outer temporal (3-6 mm)",
    # laterality unknown: the horizontal quadrants named by the side of the en-face image they lie on
    "R1": "inner, examiner's right of the fovea (1-3 mm); nasal for OD, temporal for OS",
    "L1": "inner, examiner's left of the fovea (1-3 mm); temporal for OD, nasal for OS",
    "R2": "outer, examiner's right of the fovea (3-6 mm); nasal for OD, temporal for OS",
    "L2": "outer, examiner's left of the fovea (3-6 mm); temporal for OD, nasal for OS",
    # B-scan direction unknown: the vertical quadrants named by the end of the B-scan axis they lie toward
    "F1": "inner, toward the first B-scan (1-3 mm); inferior or superior: B-scan direction unknown",
    "E1": "inner, toward the last B-scan (1-3 mm); superior or inferior: B-scan direction unknown",
    "F2": "outer, toward the first B-scan (3-6 mm); inferior or superior: B-scan direction unknown",
    "E2": "outer, toward the last B-scan (3-6 mm); superior or inferior: B-scan direction unknown",
}

#: columns of a fluid report (one row per region), as :func:`fluid_volumes` returns them.
REPORT_COLUMNS = (
    "image",
    "scan_date",
    "laterality",
    "sector",
    "region",
    "voxels",
    "area_mm2",
    "volume_nl",
    "spacing_mm",
    "provenance",
    "fovea_bscan",
    "fovea_column",
    "fovea_source",
    "first_bscan",
    "note",
)
#: what a report with fluid types adds per type, as ``<type>_<column>`` (``IRF_volume_nl``): the type's share of
#: ``voxels``, ``area_mm2`` and ``volume_nl``, measured the same way
TYPE_REPORT_COLUMNS = ("voxels", "area_mm2", "volume_nl")


def report_columns(fluid_classes: Sequence[str] = BINARY_FLUID) -> tuple[str, ...]:
    """The columns of a fluid report: :data:`REPORT_COLUMNS` (the totals: all fluid, whatever its type), then for
    fluid types :data:`TYPE_REPORT_COLUMNS` per type, ``IRF_voxels IRF_area_mm2 IRF_volume_nl SRF_voxels ...``."""
    classes = check_fluid_classes(fluid_classes)
    per_type = () if classes == BINARY_FLUID else tuple(f"{t}_{c}" for t in classes for c in TYPE_REPORT_COLUMNS)
    return REPORT_COLUMNS + per_type


class ProvenanceSource:
    """Where a spacing came from (the ``provenance`` column): the file's header, the user, or nobody."""

    FILE_HEADER = "file header"
    USER_OVERRIDE = "user override"
    UNKNOWN = "unknown"
    ALL = (FILE_HEADER, USER_OVERRIDE, UNKNOWN)


class ScanPattern:
    """How a scan's B-scans lie on the fundus (the ``scan_pattern`` of the OCT reader's metadata,
    :attr:`custom_components.oct.volumes.OCTVolume.scan_pattern`), and which patterns carry an ETDRS grid.

    The grid and a fluid volume need a *cube*: parallel B-scans a known distance apart, so that the en-face image
    is a map of the macula. A line scan is one cross-section, a circle scan (peripapillary) a cross-section along a
    circle, and a radial scan's B-scans cross at its centre (the centre is sampled by every B-scan, the periphery
    sparsely): none of them has an en-face map to lay the grid on, nor a volume per voxel. ``unknown`` (the file
    does not say: NIfTI, plain images, a Heyex export without the field) refuses nothing: the report does what it
    did before the pattern was read.
    """

    CUBE = "cube"  # a raster of parallel B-scans (macular volume; Heyex "volume scan", "fast volume scan")
    LINE = "line"  # one B-scan along a line
    CIRCLE = "circle"  # a B-scan along a circle (Heyex "circular scan", the peripapillary protocol)
    RADIAL = "radial"  # B-scans through one centre at different angles (Heyex "radial scan", the star pattern)
    UNKNOWN = "unknown"
    ALL = (CUBE, LINE, CIRCLE, RADIAL, UNKNOWN)
    #: the patterns known not to be a cube: no ETDRS grid, no volume
    NOT_A_CUBE = (LINE, CIRCLE, RADIAL)


def no_grid_reason(scan_pattern: str | None) -> str | None:
    """Why a scan of ``scan_pattern`` gets no ETDRS grid (``"circle scan: the ETDRS grid needs a macular cube"``),
    or None when the pattern does not refuse it (``cube``, ``unknown`` or None).

    Raises:
        ValueError: on a value that is not one of :attr:`ScanPattern.ALL` or None.
    """
    if scan_pattern is not None and scan_pattern not in ScanPattern.ALL:
        raise ValueError(f"scan_pattern must be one of {ScanPattern.ALL} or None, got {scan_pattern!r}.")
    if scan_pattern in ScanPattern.NOT_A_CUBE:
        return f"{scan_pattern} scan: the ETDRS grid needs a macular cube"
    return None


_LATERALITIES = ("OD", "OS")
_FIRST_BSCAN = ("inferior", "superior")


def _check_laterality(laterality: str | None) -> str | None:
    if laterality is None:
        return None
    value = str(laterality).strip().upper()
    if value not in _LATERALITIES:
        raise ValueError(f"laterality must be 'OD' (right eye), 'OS' (left eye) or None, got {laterality!r}.")
    return value


def _check_first_bscan(first_bscan: str | None) -> str | None:
    if first_bscan is not None and first_bscan not in _FIRST_BSCAN:
        raise ValueError(f"first_bscan must be 'inferior', 'superior' or None (unknown), got {first_bscan!r}.")
    return first_bscan


def _positive(value: Any, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number of mm, got {value!r}.") from None
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive number of mm, got {value!r}.")
    return number


def sector_names(laterality: str | None, first_bscan: str | None = "inferior") -> tuple[str, ...]:
    """The nine sector names: :data:`ETDRS_SECTORS` when ``laterality`` and ``first_bscan`` are known.

    With an unknown laterality the horizontal quadrants are named by image side (``R1 L1 R2 L2``: right/left of the
    fovea on the en-face image), since nasal and temporal cannot be told apart without it; with an unknown
    ``first_bscan`` the vertical ones by B-scan end (``E1 F1 E2 F2``: toward the last / the first B-scan), since
    superior and inferior cannot. The order is always centre, then per ring the quadrants in S N I T positions.
    """
    known_side = _check_laterality(laterality) is not None
    right, left = ("N", "T") if known_side else ("R", "L")
    up, down = ("S", "I") if _check_first_bscan(first_bscan) is not None else ("E", "F")
    return ("C0",) + tuple(f"{q}{ring}" for ring in "12" for q in (up, right, down, left))


def _labels(nasal_mm: np.ndarray, superior_mm: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """Sector index per point (0..8 in :data:`ETDRS_SECTORS` order, -1 outside the grid) from coordinates in mm
    relative to the fovea, nasal and superior positive. Points on a diagonal go to S/I (a set of zero area)."""
    r = np.hypot(nasal_mm, superior_mm)
    # quadrant: 0 superior, 1 nasal, 2 inferior, 3 temporal (45-degree wedges around the axes)
    horizontal = np.abs(nasal_mm) > np.abs(superior_mm)
    quadrant = np.where(horizontal, np.where(nasal_mm > 0, 1, 3), np.where(superior_mm >= 0, 0, 2))
    labels = np.full(r.shape, -1, dtype=np.int8)
    labels[r < radii[2]] = 5 + quadrant[r < radii[2]]
    labels[r < radii[1]] = 1 + quadrant[r < radii[1]]
    labels[r < radii[0]] = 0
    return labels


def sector_masks(
    en_face_shape: Sequence[int],
    spacing_lateral_mm: float,
    spacing_bscan_mm: float,
    fovea: Sequence[float],
    laterality: str | None,
    first_bscan: str = "inferior",
    supersample: int = 8,
) -> dict[str, np.ndarray]:
    """Fractional coverage of every en-face pixel by each ETDRS sector.

    Args:
        en_face_shape: ``(B-scans, columns)`` of the en-face image.
        spacing_lateral_mm: distance between neighbouring A-scans (columns) in mm.
        spacing_bscan_mm: distance between neighbouring B-scans in mm.
        fovea: ``(bscan, column)`` of the foveal centre in voxel indices (fractions allowed; it may lie outside
            the scan, the grid is then clipped to the scanned area).
        laterality: ``"OD"``, ``"OS"`` or None (the horizontal quadrants are then named ``R``/``L`` by image side,
            see :func:`sector_names`).
        first_bscan: ``"inferior"`` (default: B-scan 0 is the lowest, the index grows upwards), ``"superior"``, or
            None when unknown (the vertical quadrants are then named ``F``/``E`` by B-scan end).
        supersample: sub-samples per pixel side for pixels cut by a sector border, >= 1 (1: each pixel goes wholly
            to the sector of its centre).

    Returns:
        ``{name: (B-scans, columns) float32 in [0, 1]}`` for the nine sectors in :func:`sector_names` order; the sum
        over the sectors is the pixel's coverage by the 6 mm grid (1 inside, 0 outside, fractions on its rim).

    Raises:
        ValueError: on a shape that is not two positive sizes, a spacing that is not a positive number, a fovea that
            is not two finite numbers, an unknown ``laterality`` or ``first_bscan``, or ``supersample < 1``.
    """
    shape = tuple(int(s) for s in en_face_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"en_face_shape must be (B-scans, columns), two positive sizes; got {en_face_shape!r}.")
    sx = _positive(spacing_lateral_mm, "spacing_lateral_mm")
    sy = _positive(spacing_bscan_mm, "spacing_bscan_mm")
    fovea = tuple(float(f) for f in fovea)
    if len(fovea) != 2 or not all(math.isfinite(f) for f in fovea):
        raise ValueError(f"fovea must be (bscan, column), two finite numbers; got {fovea!r}.")
    laterality = _check_laterality(laterality)
    first_bscan = _check_first_bscan(first_bscan)
    if int(supersample) < 1:
        raise ValueError(f"supersample must be >= 1, got {supersample!r}.")
    k = int(supersample)
    names = sector_names(laterality, first_bscan)
    nasal_sign = -1.0 if laterality == "OS" else 1.0  # OD (and unknown: "R" = right) grows with the column
    superior_sign = -1.0 if first_bscan == "superior" else 1.0  # unknown: "E" (last B-scan) in the S position
    radii = [d / 2.0 for d in ETDRS_DIAMETERS_MM]

    b = (np.arange(shape[0], dtype=np.float64) - fovea[0]) * sy * superior_sign
    c = (np.arange(shape[1], dtype=np.float64) - fovea[1]) * sx * nasal_sign
    superior, nasal = np.meshgrid(b, c, indexing="ij")  # pixel centres in mm, (B-scans, columns)
    centre = _labels(nasal, superior, radii)
    coverage = np.zeros((len(names),) + shape, dtype=np.float32)
    inside = np.nonzero(centre >= 0)
    coverage[centre[inside], inside[0], inside[1]] = 1.0
    if k == 1:
        return {name: coverage[i] for i, name in enumerate(names)}

    # pixels a border may cut: a circle within half a pixel diagonal of the centre, or a diagonal line
    # (|n| = |s|) within that distance; only those are supersampled
    half = 0.5 * math.hypot(sx, sy)
    r = np.hypot(nasal, superior)
    near_circle = np.zeros(shape, dtype=bool)
    for radius in radii:
        near_circle |= np.abs(r - radius) < half
    near_diagonal = (np.abs(np.abs(nasal) - np.abs(superior)) / math.sqrt(2.0) < half) & (r > radii[0] - half)
    near_diagonal &= r < radii[2] + half
    border = np.nonzero(near_circle | near_diagonal)
    if border[0].size:
        offsets = (np.arange(k, dtype=np.float64) + 0.5) / k - 0.5  # sub-pixel centres, in pixels
        ob, oc = np.meshgrid(offsets * sy * superior_sign, offsets * sx * nasal_sign, indexing="ij")
        sub_s = superior[border][:, None] + ob.ravel()[None]  # (border pixels, k * k)
        sub_n = nasal[border][:, None] + oc.ravel()[None]
        sub = _labels(sub_n, sub_s, radii)
        coverage[:, border[0], border[1]] = 0.0
        for i in range(len(names)):
            coverage[i, border[0], border[1]] = (sub == i).mean(axis=1)
    return {name: coverage[i] for i, name in enumerate(names)}


def en_face_thickness(mask: Any) -> np.ndarray:
    """Fluid voxels per A-scan: the ``(rows, columns, B-scans)`` mask summed over depth, as the ``(B-scans,
    columns)`` en-face image (multiply by the axial spacing for a thickness)."""
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(f"mask must be a (rows, columns, B-scans) volume, got shape {array.shape}.")
    return (array > 0).sum(axis=0, dtype=np.int64).T


def volume_centre_fovea(en_face_shape: Sequence[int]) -> tuple[float, float]:
    """The centre of the scanned area, ``((B-scans - 1) / 2, (columns - 1) / 2)``.

    The fallback when neither the user nor the file gives the fovea: a macular raster is acquired with the patient
    fixating the scanner's target, which puts the fovea near the scan centre; reports mark it
    ``fovea_source="volume centre"`` so that nobody takes it for a located fovea. It is not estimated from the image:
    locating the foveal pit needs the inner-retina and RPE boundaries, which this bundle does not segment, and a
    pit finder that fails quietly on a detached, fluid-filled macula would be worse than an honest centre.
    """
    shape = tuple(int(s) for s in en_face_shape)
    return ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)


def check_spacing_mm(
    spacing_mm: float | Sequence[float | None] | None, allow_unknown: bool = True
) -> tuple[float | None, float | None, float | None]:
    """The (axial, lateral, inter_bscan) spacing in mm as three positive floats (None for an unknown one).

    The one check of a volume spacing in the bundle (the report's, the writer's override). None gives three
    unknowns; a single number means the same spacing along every axis.

    Raises:
        ValueError: on other than three entries, an entry that is not a positive finite number (or None when
            ``allow_unknown``), naming the value.
    """
    if spacing_mm is None:
        return (None, None, None)
    values = [spacing_mm] * 3 if np.isscalar(spacing_mm) else list(spacing_mm)  # type: ignore[arg-type]
    if len(values) != 3 or (not allow_unknown and None in values):
        if allow_unknown:
            raise ValueError(
                f"spacing_mm must be (axial, lateral, inter_bscan) in mm, each a positive number or None; got "
                f"{spacing_mm!r}."
            )
        raise ValueError(
            f"spacing_mm must be three positive numbers (axial, lateral, inter_bscan) in mm, got {spacing_mm!r}."
        )
    names = ("axial", "lateral", "inter_bscan")
    return tuple(None if v is None else _positive(v, f"spacing_mm {n}") for v, n in zip(values, names))  # type: ignore


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def _amounts(
    thickness: np.ndarray, weight: np.ndarray | None, voxel_nl: float | None, pixel_mm2: float | None
) -> dict[str, Any]:
    """``voxels``, ``area_mm2`` and ``volume_nl`` of the fluid whose en-face thickness (voxels per A-scan) is
    ``thickness``, in a region given by its coverage ``weight`` (:func:`sector_masks`), or in the whole scan (None:
    a whole number of voxels); None where a spacing they need is unknown."""
    footprint = (thickness > 0).astype(np.float64)
    if weight is None:
        voxels = float(thickness.sum())
        area = footprint.sum() * pixel_mm2 if pixel_mm2 is not None else None
        return {
            "voxels": int(voxels),
            "area_mm2": _round(area),
            "volume_nl": _round(voxels * voxel_nl) if voxel_nl is not None else None,
        }
    counted = float((thickness * weight).sum())
    return {
        "voxels": _round(counted, 3),
        "area_mm2": _round(float((footprint * weight).sum()) * pixel_mm2),
        "volume_nl": _round(counted * voxel_nl) if voxel_nl is not None else None,
    }


def _typed_amounts(
    typed: Mapping[str, np.ndarray], weight: np.ndarray | None, voxel_nl: float | None, pixel_mm2: float | None
) -> dict[str, Any]:
    """:func:`_amounts` of every fluid type (``typed``: its en-face thickness per type) under the per-type column
    names (``IRF_voxels``, ...); {} without types."""
    return {
        f"{fluid}_{k}": v
        for fluid, thickness in typed.items()
        for k, v in _amounts(thickness, weight, voxel_nl, pixel_mm2).items()
    }


def fluid_volumes(
    mask: Any,
    spacing_mm: Sequence[float | None] | None,
    fovea: Sequence[float] | None,
    laterality: str | None,
    spacing_source: str,
    fovea_source: str | None = None,
    first_bscan: str | None = "inferior",
    supersample: int = 8,
    extra: Mapping[str, Any] | None = None,
    no_grid: str | None = None,
    scan_pattern: str | None = None,
    fluid_classes: Sequence[str] = BINARY_FLUID,
) -> list[dict[str, Any]]:
    """Fluid per ETDRS sector and in the whole scan, with where every number's scale came from.

    Rows: ``total`` (the whole scan), then the nine sectors (:func:`sector_names`). Per row:

    - ``voxels``: fluid voxels in the region; for a sector, the coverage-weighted count (border pixels shared by
      area, see :func:`sector_masks`), so it may be fractional.
    - ``area_mm2``: the en-face footprint of the fluid in the region (A-scans holding any fluid, times their
      coverage, times the A-scan's lateral x inter-B-scan area).
    - ``volume_nl``: ``voxels`` x the voxel volume in mm^3 x 1000 (1 mm^3 = 1000 nL); ``None`` whenever a spacing
      it needs is unknown: no area or volume is ever computed from a guessed scale.
    - ``provenance``: ``spacing_source``; ``unknown`` whenever one of the three spacings is unknown.
    - ``fovea_bscan``, ``fovea_column``, ``fovea_source``; ``first_bscan`` (which end of the B-scan axis is
      inferior, deciding S from I; empty when unknown, the quadrants are then ``F``/``E``); ``note`` says why a
      value is missing.

    Sector rows need the lateral and inter-B-scan spacings (the grid is defined in mm), a fovea and a horizontal
    parallel raster (``no_grid`` says when the scan is not one); without them the sector rows have empty values and
    a note, and only the total is counted.

    A scan whose ``scan_pattern`` is known not to be a cube (``line``, ``circle``, ``radial``:
    :attr:`ScanPattern.NOT_A_CUBE`) gets the ``total`` row only: its fluid voxels, no ``area_mm2`` and no
    ``volume_nl`` (neither an en-face footprint nor a voxel volume exists when the B-scans are not parallel, whatever
    the spacing), and a note saying why (``"radial scan: the ETDRS grid needs a macular cube; ..."``); the fluid
    per B-scan is the measurements' business (``fluid_measurements.csv``, cross-sectional mm^2).

    With fluid types (``fluid_classes`` IRF, SRF, PED) ``mask`` is their label map and every row also has each type's
    ``voxels``, ``area_mm2`` and ``volume_nl`` (``IRF_volume_nl``, ...: :func:`report_columns`), measured exactly as
    the totals on that type's voxels alone; the totals count all fluid. Volumes add up over the types (each voxel has
    one type); areas need not (an A-scan may hold two types).

    Args:
        mask: ``(rows, columns, B-scans)`` fluid mask (non-zero = fluid), or with fluid types their label map (value
            ``k + 1`` = ``fluid_classes[k]``, 0 background).
        spacing_mm: ``(axial, lateral, inter_bscan)`` in mm, each a number or None; or None (all unknown).
        fovea: ``(bscan, column)`` of the foveal centre, or None (sector rows are then left empty).
        laterality: ``"OD"``, ``"OS"`` or None.
        spacing_source: one of :class:`ProvenanceSource` (``"file header"``, ``"user override"``, ``"unknown"``).
        fovea_source: where the fovea came from (``"user"``, ``"file"``, ``"volume centre"``).
        first_bscan: ``"inferior"``, ``"superior"`` or None (unknown) (:func:`sector_masks`).
        supersample: sub-samples per pixel side at sector borders (:func:`sector_masks`).
        extra: constant columns to put in every row (``image``, ``scan_date``).
        no_grid: why the ETDRS grid does not apply to this scan (e.g. ``"the B-scans are not a horizontal parallel
            raster"``), or None; the sector rows are then left empty with that note.
        scan_pattern: the reader's :class:`ScanPattern` value, or None (unknown): a pattern that is not a cube gives
            the ``total`` row alone (see above); ``cube`` and ``unknown`` change nothing.
        fluid_classes: ``("fluid",)`` (default) or ``("IRF", "SRF", "PED")``.

    Returns:
        one dict per region with the keys of :func:`report_columns` (``extra`` filled in, the rest None).

    Raises:
        ValueError: on a mask that is not 3D, a spacing that is not three entries of positive numbers or None, an
            unknown ``spacing_source``, ``laterality``, ``scan_pattern`` or ``fluid_classes`` (and see
            :func:`sector_masks`).
    """
    array = np.asarray(mask)
    if array.ndim != 3:
        raise ValueError(f"mask must be a (rows, columns, B-scans) volume, got shape {array.shape}.")
    classes = check_fluid_classes(fluid_classes)
    if spacing_source not in ProvenanceSource.ALL:
        raise ValueError(f"spacing_source must be one of {ProvenanceSource.ALL}, got {spacing_source!r}.")
    axial, lateral, between = check_spacing_mm(spacing_mm)
    laterality = _check_laterality(laterality)
    not_a_cube = no_grid_reason(scan_pattern)
    complete = None not in (axial, lateral, between)
    provenance = spacing_source if complete else ProvenanceSource.UNKNOWN
    if spacing_source == ProvenanceSource.UNKNOWN and any(s is not None for s in (axial, lateral, between)):
        raise ValueError(f"spacing_source is 'unknown' but a spacing is given: {spacing_mm!r}.")
    voxel_nl = axial * lateral * between * 1000.0 if complete else None  # type: ignore[operator]
    pixel_mm2 = lateral * between if lateral is not None and between is not None else None
    thickness = en_face_thickness(array).astype(np.float64)  # (B-scans, columns) fluid voxels per A-scan
    # with fluid types, each type's own en-face thickness (label k + 1), measured as the total's
    types = () if classes == BINARY_FLUID else classes
    typed = {t: en_face_thickness(array == k + 1).astype(np.float64) for k, t in enumerate(types)}
    spacing_text = "x".join("?" if s is None else f"{s:g}" for s in (axial, lateral, between))
    base = {column: None for column in report_columns(classes)}
    base.update(dict(extra or {}))
    base.update(
        laterality=laterality,
        spacing_mm=spacing_text,
        provenance=provenance,
        fovea_bscan=None if fovea is None else _round(fovea[0], 3),
        fovea_column=None if fovea is None else _round(fovea[1], 3),
        fovea_source=fovea_source if fovea is not None else None,
        first_bscan=_check_first_bscan(first_bscan),
    )
    missing = [n for n, s in zip(("axial", "lateral", "inter-B-scan"), (axial, lateral, between)) if s is None]
    volume_note = f"no volume: {', '.join(missing)} spacing unknown" if missing else ""

    if not_a_cube:  # no grid and no volume, whatever the spacing: the total alone says how much fluid, and why
        why = f"{not_a_cube}; no volume: the B-scans are not a parallel stack"
        why += "; fluid per B-scan in fluid_measurements.csv"
        counts = {"voxels": int(thickness.sum())}
        counts.update({f"{t}_voxels": int(typed[t].sum()) for t in typed})
        return [{**base, "sector": "total", "region": SECTOR_DESCRIPTIONS["total"], **counts, "note": why}]
    rows = [
        {
            **base,
            "sector": "total",
            "region": SECTOR_DESCRIPTIONS["total"],
            **_amounts(thickness, None, voxel_nl, pixel_mm2),
            **_typed_amounts(typed, None, voxel_nl, pixel_mm2),
            "note": volume_note,
        }
    ]
    names = sector_names(laterality, first_bscan)
    if pixel_mm2 is None or fovea is None or no_grid:
        why = no_grid or ("lateral or inter-B-scan spacing unknown" if pixel_mm2 is None else "no fovea")
        for name in names:
            rows.append({**base, "sector": name, "region": SECTOR_DESCRIPTIONS[name], "note": f"no ETDRS grid: {why}"})
        return rows
    masks = sector_masks(thickness.shape, lateral, between, fovea, laterality, first_bscan, supersample)
    grid_notes = (
        "laterality unknown: R/L = right/left of the fovea on the en-face image" if laterality is None else "",
        "B-scan direction unknown: F/E = toward the first/last B-scan (set first_bscan)" if first_bscan is None else "",
    )
    for name in names:
        weight = masks[name].astype(np.float64)
        rows.append(
            {
                **base,
                "sector": name,
                "region": SECTOR_DESCRIPTIONS[name],
                **_amounts(thickness, weight, voxel_nl, pixel_mm2),
                **_typed_amounts(typed, weight, voxel_nl, pixel_mm2),
                "note": "; ".join(n for n in (volume_note,) + grid_notes if n),
            }
        )
    return rows
