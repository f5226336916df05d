# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""IFE gel lane layout: find the six lanes in a scan, resample them into one canonical layout, read band patterns.

Scans of different systems differ in everything around the lanes: a header strip with the lane names, frames
around the gel and around each lane, blank margins, lanes of unequal width and spacing, the albumin end at the top
or at the bottom. :func:`find_lanes` finds the lanes from the image itself (no fixed pixel positions);
:class:`NormaliseLaneLayoutd` crops each lane's columns and the gel's rows and resamples the lanes side by side at
the network's size, albumin at the bottom (as real scans show it), so the network always sees one layout.
:func:`detect_band_pattern` / :class:`IFEBandPatternd` find narrow dense (monoclonal) bands per lane and name a
pattern none of the nine IFE classes describes (two heavy-chain bands, kappa and lambda bands, two bands in one
lane), for the refer-to-expert rule.

All three work on the *darkness* of the scan, ``log(background) - log(luminance)``: the stain's absorbance up to
the dye's colour, so a tinted background, the overall brightness and the image's value range (0..255 or 0..1)
drop out. Why our own profile analysis: MONAI and scikit-image offer no lane finder, and the problem is 1D (a
column profile and a row profile), which numpy/scipy's filters and ``scipy.signal.find_peaks`` handle directly.
"""

from __future__ import annotations

import logging

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_numpy
from scipy import ndimage, signal

__all__ = [
    "LANE_NAMES",
    "LANES_NOT_FOUND",
    "LAYOUT_ORIENTATIONS",
    "BandPattern",
    "LaneLayout",
    "LaneLayoutError",
    "find_lanes",
    "detect_band_pattern",
    "detect_orientation",
    "NormaliseLaneLayoutd",
    "IFEBandPatternd",
]

#: the lanes of an IFE gel, left to right (as :data:`custom_components.ife.synthetic.LANES`)
LANE_NAMES = ("ELP", "G", "A", "M", "K", "L")
#: orientation of an input gel: albumin (ELP's strongest band) near the bottom or near the top
LAYOUT_ORIENTATIONS = ("albumin_bottom", "albumin_top")
#: how :class:`IFEBandPatternd` (``on_failure="report"``) starts its text when the lanes cannot be found, so that the
#: refer rule (:func:`custom_components.ife.referral.refer_decisions`) tells a failed detector from a pattern
LANES_NOT_FOUND = "lanes not found"
#: meta key under which :class:`IFEBandPatternd` leaves the layout it found for :class:`NormaliseLaneLayoutd`
_FOUND_LAYOUT_KEY = "found_lane_layout"
_HEAVY = ("G", "A", "M")
_LIGHT = ("K", "L")

logger = logging.getLogger(__name__)


class LaneLayoutError(ValueError):
    """The lanes of a gel cannot be found (no lanes, another number of lanes, no gel rows)."""


@dataclass(frozen=True)
class LaneLayout:
    """Where the lanes of a gel are, in image pixels.

    Attributes:
        columns: per lane (left to right) the first and last column, inclusive.
        rows: first and last row of the gel area (the lanes' stain, without header, frame or margins), inclusive.
        confidence: in (0, 1]: the share of the tried column thresholds that split the profile into exactly the
            expected number of lanes (1: any threshold would do; near 0: the lanes barely stand out).
    """

    columns: tuple[tuple[int, int], ...]
    rows: tuple[int, int]
    confidence: float = 1.0

    @property
    def centres(self) -> list[float]:
        """Column of each lane's centre."""
        return [(left + right) / 2 for left, right in self.columns]


@dataclass(frozen=True)
class BandPattern:
    """Narrow dense bands found per lane, and whether the pattern is outside the nine IFE classes.

    Attributes:
        bands: lane name -> image rows of the bands found in it (top to bottom); ELP lists its strong normal bands
            too (albumin, ...) and is not used for the pattern.
        outside_nine: a short reason when the immunofixation lanes show a pattern none of the nine classes
            describes (e.g. ``"two heavy-chain bands at different heights (G, A)"``), else ``None``.
    """

    bands: dict[str, list[int]] = field(default_factory=dict)
    outside_nine: str | None = None


def _darkness(image: Any) -> np.ndarray:
    """(C, H, W) channel-first or (H, W) image -> (H, W) float darkness, 0 on the background."""
    array = convert_to_numpy(image, dtype=np.float64)
    if array.ndim == 3:
        if not 1 <= array.shape[0] <= 4:
            raise ValueError(f"expected a channel-first (C, H, W) image with 1-4 channels, got {array.shape}.")
        array = array[:3].mean(axis=0)  # an alpha channel is not stain
    elif array.ndim != 2:
        raise ValueError(f"expected a (C, H, W) or (H, W) image, got shape {array.shape}.")
    if min(array.shape) < 16:
        raise LaneLayoutError(f"image of {array.shape[0]} x {array.shape[1]} pixels is too small for a gel.")
    # the background is the brightest part of a gel scan: a high percentile ignores hot pixels
    background = float(np.percentile(array, 99))
    if not np.isfinite(background) or background <= 0:
        raise LaneLayoutError(f"image has no bright background (99th percentile {background}).")
    return np.log(background) - np.log(np.maximum(array, background * 1e-3))


def _odd(value: float, minimum: int = 3) -> int:
    size = max(minimum, int(round(value)))
    return size if size % 2 else size + 1


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True, inclusive."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def _lane_columns(
    dark: np.ndarray, num_lanes: int, min_contrast: float
) -> tuple[list[tuple[int, int]], float, np.ndarray]:
    """Lane columns, confidence and the (W,) mask of thin vertical line columns."""
    width = dark.shape[1]
    # median over rows: the lanes fill most rows, headers, bands and horizontal frame lines only a few
    raw = np.median(dark, axis=0)
    # frame lines are a few pixels thin: an opening narrower than any lane removes them and keeps the lanes
    profile = ndimage.grey_opening(raw, size=_odd(0.012 * width))
    lines = raw - profile > 0.05  # columns of vertical frame lines, kept out of the gap reference below
    # the lower envelope (an opening wider than a lane) follows the gaps: illumination and tint gradients go
    baseline = ndimage.uniform_filter1d(ndimage.grey_opening(profile, size=_odd(width / 5)), _odd(width / 10))
    contrast = profile - baseline
    p = ndimage.uniform_filter1d(contrast, 3)  # counting runs: noise must not split a lane
    top = float(p.max())
    if top < min_contrast:
        raise LaneLayoutError(
            f"no lanes: the columns differ in darkness by at most {top:.3f} (min_contrast={min_contrast})."
        )
    min_width = max(2, int(0.15 * width / num_lanes))  # a lane is wider than a letter stroke or a frame
    fractions = np.linspace(0.05, 0.95, 91)
    counts = []
    for fraction in fractions:
        counts.append(sum(1 for a, b in _runs(p > fraction * top) if b - a + 1 >= min_width))
    good = np.array(counts) == num_lanes
    if not good.any():
        found = sorted(set(counts))
        raise LaneLayoutError(
            f"cannot split the column profile into {num_lanes} lanes: thresholds give {found} lane-like runs."
        )
    # the longest stretch of thresholds giving exactly num_lanes runs; its middle is the most stable split
    stretches = [(b - a, a, b) for a, b in _runs(good)]
    _, a, b = max(stretches)
    threshold = fractions[(a + b) // 2] * top
    runs = [(a, b) for a, b in _runs(p > threshold) if b - a + 1 >= min_width]
    columns = []
    for left, right in runs:
        # each lane's edges where its own stain falls to 30 % of its plateau: lanes of different strength get
        # edges defined alike, and the generator's nominal edge (a quarter of the plateau) is within a pixel
        # (on the unsmoothed contrast, so the edges stay where they are)
        level = 0.3 * float(np.percentile(contrast[left : right + 1], 90))
        columns.append(_edges_at(contrast, left, right, level))
    return columns, float(good.sum() / good.size), lines


def _edges_at(profile: np.ndarray, first: int, last: int, level: float) -> tuple[int, int]:
    """Move the ends of the run ``first..last`` of ``profile`` to where it crosses ``level``: outwards while the
    neighbour is above it, inwards while the end is not (the run keeps at least one sample)."""
    while first > 0 and profile[first - 1] > level:
        first -= 1
    while first < last and profile[first] <= level:
        first += 1
    while last < profile.size - 1 and profile[last + 1] > level:
        last += 1
    while last > first and profile[last] <= level:
        last -= 1
    return int(first), int(last)


def _lane_centre_columns(left: int, right: int) -> slice:
    """The middle half of a lane: clear of its soft edges, of frame lines and of the band's smile."""
    quarter = (right - left + 1) // 4
    return slice(left + quarter, right - quarter + 1)


def _gel_rows(dark: np.ndarray, columns: Sequence[tuple[int, int]], lines: np.ndarray) -> tuple[int, int]:
    height = dark.shape[0]
    # each lane's middle minus the gaps beside it, row by row: illumination and tint gradients and lines across
    # the whole width cancel. Gap columns exclude the lanes' soft edges (a sixth of the gap on each side) and the
    # vertical frame lines (a lane box's sides may fall into a narrow gap).
    gap_columns = []
    for (_, right), (left, _) in zip(columns[:-1], columns[1:]):
        inner = max(0, (left - right - 1) // 6)
        cols = np.arange(right + 1 + inner, left - inner)
        gap_columns.append(cols[~lines[cols]] if cols.size else cols)
    differences = []
    for k, (a, b) in enumerate(columns):
        beside = [g for g in gap_columns[max(0, k - 1) : k + 1] if g.size]
        if not beside:
            continue
        reference = np.median(dark[:, np.concatenate(beside)], axis=1)
        differences.append(np.median(dark[:, _lane_centre_columns(a, b)], axis=1) - reference)
    if not differences:
        raise LaneLayoutError("no gaps between the lanes: cannot tell the gel rows from the background.")
    r = np.median(np.stack(differences, axis=1), axis=1)
    r = ndimage.grey_opening(r, size=_odd(0.012 * height))  # thin lines along the rows (lane boxes) go
    noise = 1.4826 * float(np.median(np.abs(np.diff(r) - np.median(np.diff(r))))) / np.sqrt(2)
    floor = max(5 * noise, 0.01)
    runs = _runs(r > floor)
    if not runs:
        raise LaneLayoutError(f"no gel rows: the lanes are nowhere darker than the gaps by {floor:.3f}.")
    first, last = max(runs, key=lambda run: run[1] - run[0])
    # refine at half the stain of the lane ends (their faint background stain): the rows where the gel begins
    level = max(floor, 0.5 * float(np.percentile(r[first : last + 1], 10)))
    first, last = _edges_at(r, first, last, level)
    if last - first + 1 < 0.2 * height:
        raise LaneLayoutError(
            f"the gel rows found ({first}-{last}) cover less than a fifth of the {height} rows: no gel lanes."
        )
    return int(first), int(last)


def find_lanes(image: Any, num_lanes: int = 6, min_contrast: float = 0.02) -> LaneLayout:
    """Find the lanes and the gel rows of an IFE gel scan from the image itself.

    The column profile of the darkness (median over rows, thin frame lines opened away, the lower envelope of the
    gaps subtracted) is split into ``num_lanes`` runs at the threshold in the middle of the longest range of
    thresholds that gives exactly that many; each lane's edges are where its stain falls to 30 % of its own
    plateau. The gel rows are the longest run of rows where the lanes' middles are darker than the gaps between
    them (header text, frame lines and margins are not).

    Args:
        image: (C, H, W) channel-first or (H, W) gel scan, any value range with a bright background (numpy array
            or tensor); rows along the migration direction, lanes side by side along the width.
        num_lanes: number of lanes to find, >= 1.
        min_contrast: least darkness (log units) by which the lanes must stand out of the gaps.

    Returns:
        the :class:`LaneLayout`.

    Raises:
        ValueError: on a bad shape or argument.
        LaneLayoutError: when ``num_lanes`` lanes or the gel rows cannot be found.
    """
    if isinstance(num_lanes, bool) or int(num_lanes) != num_lanes or num_lanes < 1:
        raise ValueError(f"num_lanes must be a positive integer, got {num_lanes!r}.")
    if not min_contrast > 0:
        raise ValueError(f"min_contrast must be > 0, got {min_contrast}.")
    dark = _darkness(image)
    columns, confidence, lines = _lane_columns(dark, int(num_lanes), float(min_contrast))
    rows = _gel_rows(dark, columns, lines)
    return LaneLayout(columns=tuple(columns), rows=rows, confidence=confidence)


def detect_band_pattern(
    image: Any,
    layout: LaneLayout | None = None,
    min_contrast: float = 0.15,
    band_width: tuple[float, float] = (0.02, 0.12),
    same_height: float = 0.04,
) -> BandPattern:
    """Find narrow dense bands per lane and say whether the pattern is outside the nine IFE classes.

    Per lane, the darkness of its middle half (median across columns) over the gel rows, minus a running median
    over 22 % of the gel height (the diffuse polyclonal smear and the lane's background), leaves the bands;
    peaks above ``min_contrast`` whose width at half height is within ``band_width`` are bands. A row where all
    five immunofixation lanes have a band is a line across the gel (an application mark, a crease), not a
    protein, and is dropped. The pattern is outside the nine when, among G, A, M, K, L: two heavy-chain lanes
    have bands, both light-chain lanes have bands, or one lane has two bands at different heights. (A heavy-chain
    band without a light-chain band is not reported here: the nine classes call it Negative.)

    Args:
        image: (C, H, W) channel-first or (H, W) gel scan (raw values, before resizing).
        layout: the lanes, default :func:`find_lanes` of ``image`` (six lanes, ``ELP G A M K L`` order).
        min_contrast: least darkness of a band above the local background (log units; a faint monoclonal band
            is about 0.2, an application mark below 0.1).
        band_width: (least, most) width at half height of a band, as fractions of the gel height.
        same_height: bands closer than this fraction of the gel height count as the same height.

    Returns:
        the :class:`BandPattern` (band rows in image rows).

    Raises:
        ValueError: on bad arguments or a layout without six lanes.
        LaneLayoutError: when ``layout`` is None and the lanes cannot be found.
    """
    if not min_contrast > 0:
        raise ValueError(f"min_contrast must be > 0, got {min_contrast}.")
    if len(band_width) != 2 or not 0 < band_width[0] < band_width[1] < 1:
        raise ValueError(f"band_width must be (least, most) fractions with 0 < least < most < 1, got {band_width}.")
    if not 0 < same_height < 1:
        raise ValueError(f"same_height must be a fraction in (0, 1), got {same_height}.")
    dark = _darkness(image)
    if layout is None:
        layout = LaneLayout(*_layout_parts(dark))
    if len(layout.columns) != len(LANE_NAMES):
        raise ValueError(f"expected a layout of {len(LANE_NAMES)} lanes, got {len(layout.columns)}.")
    top, bottom = layout.rows
    height = bottom - top + 1
    tolerance = same_height * height
    bands: dict[str, list[int]] = {}
    for name, (left, right) in zip(LANE_NAMES, layout.columns):
        profile = np.median(dark[top : bottom + 1, _lane_centre_columns(left, right)], axis=1)
        profile = ndimage.gaussian_filter1d(profile, max(0.5, 0.004 * height))
        residual = profile - ndimage.median_filter(profile, size=_odd(0.22 * height), mode="nearest")
        peaks, _ = signal.find_peaks(
            residual, height=min_contrast, prominence=0.7 * min_contrast, distance=max(1, int(tolerance)),
            width=(band_width[0] * height, band_width[1] * height),
        )  # fmt: skip
        bands[name] = [int(top + p) for p in peaks]
    immuno = [n for n in LANE_NAMES if n != "ELP"]
    # a line across every immunofixation lane at one height is an artefact, not a protein
    for row in list(bands["G"]):
        if all(any(abs(row - other) <= tolerance for other in bands[n]) for n in immuno[1:]):
            for n in immuno:
                bands[n] = [r for r in bands[n] if abs(r - row) > tolerance]
    return BandPattern(bands=bands, outside_nine=_outside_nine(bands, tolerance))


def detect_orientation(image: Any, layout: LaneLayout | None = None, end: float = 0.35) -> str:
    """Which end of the gel the albumin is at: ``"albumin_bottom"`` or ``"albumin_top"``.

    Albumin stains in ELP only (no antiserum of the immunofixation lanes fixes it), and it is ELP's strongest
    band. Per end of the gel (``end`` of the gel rows), the score is the largest amount by which ELP is darker than
    the darkest immunofixation lane at the same row; the albumin end scores high, the gamma end low (there
    the polyclonal smear and any monoclonal band are at least as dark in the immunofixation lanes as in ELP).

    Args:
        image: (C, H, W) channel-first or (H, W) gel scan.
        layout: the lanes (ELP first), default :func:`find_lanes` of ``image``.
        end: fraction of the gel rows at each end that is compared, in (0, 0.5].

    Returns:
        ``"albumin_bottom"`` or ``"albumin_top"``.

    Raises:
        ValueError: on a bad ``end``; LaneLayoutError when the lanes cannot be found.
    """
    if not 0 < end <= 0.5:
        raise ValueError(f"end must be in (0, 0.5], got {end}.")
    dark = _darkness(image)
    if layout is None:
        layout = LaneLayout(*_layout_parts(dark))
    top, bottom = layout.rows
    lanes = [np.median(dark[top : bottom + 1, _lane_centre_columns(a, b)], axis=1) for a, b in layout.columns]
    excess = lanes[0] - np.max(np.stack(lanes[1:]), axis=0)  # ELP minus the darkest immunofixation lane, per row
    rows = max(1, int(end * excess.size))
    return "albumin_top" if excess[:rows].max() > excess[-rows:].max() else "albumin_bottom"


def _layout_parts(dark: np.ndarray) -> tuple[tuple[tuple[int, int], ...], tuple[int, int], float]:
    columns, confidence, lines = _lane_columns(dark, len(LANE_NAMES), 0.02)
    return tuple(columns), _gel_rows(dark, columns, lines), confidence


def _outside_nine(bands: Mapping[str, list[int]], tolerance: float) -> str | None:
    reasons = []
    for name in (*_HEAVY, *_LIGHT):
        rows = bands[name]
        if len(rows) >= 2 and rows[-1] - rows[0] > tolerance:
            reasons.append(f"two bands at different heights in lane {name}")

    def differ(a: str, b: str) -> bool:
        return all(abs(x - y) > tolerance for x in bands[a] for y in bands[b])

    heavy = [n for n in _HEAVY if bands[n]]
    if len(heavy) >= 2:
        pairs = [(a, b) for i, a in enumerate(heavy) for b in heavy[i + 1 :]]
        where = "at different heights" if all(differ(a, b) for a, b in pairs) else "in more than one lane"
        reasons.append(f"two heavy-chain bands {where} ({', '.join(heavy)})")
    if bands["K"] and bands["L"]:
        where = "at different heights" if differ("K", "L") else "at the same height"
        reasons.append(f"kappa and lambda bands {where}")
    return "; ".join(reasons) if reasons else None


def _layout_record(layout: LaneLayout, image_shape: Sequence[int], reason: str = "") -> dict[str, Any]:
    """A :class:`LaneLayout` as plain lists (collatable metadata: every gel's record has the same keys and shapes),
    with the (H, W) of the image it was found on; ``lanes_found`` false and the ``reason`` when the layout is the
    whole image (:class:`NormaliseLaneLayoutd`'s fallback)."""
    return {"columns": [list(c) for c in layout.columns], "rows": list(layout.rows),
            "confidence": float(layout.confidence), "image_shape": [int(s) for s in image_shape],
            "lanes_found": not reason, "reason": reason}  # fmt: skip


def _whole_image_layout(height: int, width: int, num_lanes: int) -> LaneLayout:
    """The layout the whole-image fallback stands for: every row, the width cut into ``num_lanes`` equal strips
    (nominal: the network sees the image as it is, the paper's raw protocol), confidence 0."""
    edges = np.round(np.linspace(0, width, num_lanes + 1)).astype(int)
    columns = tuple((int(a), int(max(a, b - 1))) for a, b in zip(edges[:-1], edges[1:]))
    return LaneLayout(columns=columns, rows=(0, height - 1), confidence=0.0)


def _reusable_layout(image: Any, num_lanes: int) -> LaneLayout | None:
    """The layout :class:`IFEBandPatternd` found on this image (same (H, W) and lane count), else None."""
    meta = getattr(image, "meta", None)
    record = meta.get(_FOUND_LAYOUT_KEY) if isinstance(meta, Mapping) else None
    if not isinstance(record, Mapping) or len(record.get("columns", ())) != num_lanes:
        return None
    if [int(s) for s in record.get("image_shape", ())] != [int(s) for s in np.shape(image)[-2:]]:
        return None  # found on another image (the key survived a resize, a crop ...): find the lanes afresh
    columns = tuple((int(a), int(b)) for a, b in record["columns"])
    return LaneLayout(columns=columns, rows=(int(record["rows"][0]), int(record["rows"][1])),
                      confidence=float(record["confidence"]))  # fmt: skip


def _source(image: Any) -> str:
    meta = getattr(image, "meta", None)
    name = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
    return str(name) if name else "<image without file name>"


class NormaliseLaneLayoutd(MapTransform):
    """Resample the six lanes of an IFE gel side by side into one canonical layout at the network's size.

    Finds the lanes with :func:`find_lanes`, crops each lane's columns and the gel rows (header, frames and
    margins drop out), resamples each lane to ``(H, lane width)`` with torch's anti-aliased bilinear resampling
    (``torch.nn.functional.interpolate``, ``antialias=True``) and places them left to right in ``ELP G A M K L``
    order, ``lane_gap`` columns of background apart. The output always has albumin at the bottom (the layout of
    real scans): an input with ``orientation="albumin_top"`` is flipped along the rows.

    Runs on the raw channel-first image (after ``LoadImaged``/``EnsureChannelFirstd``, before ``Resized`` and
    intensity scaling). The metadata of a :class:`~monai.data.MetaTensor` input is kept (``filename_or_obj``,
    ``spatial_shape`` of the file ...) and the found layout added as ``meta["lane_layout"]`` (``columns``,
    ``rows``, ``confidence``, the input's ``image_shape`` (H_in, W_in) and ``orientation``, the one actually
    used: as given, or as detected for ``"auto"``). Output row ``r`` of a height-``H`` resampling (this one, or a
    later ``Resized`` of it) is input row ``top + (r + 0.5) * (bottom - top + 1) / H - 0.5`` (``bottom - ...`` for
    ``albumin_top``), which :class:`~custom_components.ife.handlers.IFEPredictionWriter` uses to place attention
    peaks on the file. The layout is not an affine map, so the affine is left as it was and the transform is not
    invertible. The lanes are found once per gel: a layout that :class:`IFEBandPatternd` found on the same image
    (left in its metadata) is reused.

    Args:
        keys: keys of (C, H_in, W_in) images.
        spatial_size: ``(H, W)`` of the output; ``W`` at least 6 + 5 * ``lane_gap``.
        orientation: orientation of the INPUT gels, one of :data:`LAYOUT_ORIENTATIONS`, or ``"auto"``: decided
            per gel by :func:`detect_orientation` (albumin stains in ELP only; on 600 generated gels of all ten
            patterns, both orientations and mixed styles, at 120 x 180 and 400 x 600, it was right every time).
        lane_gap: background columns between neighbouring lanes in the output, >= 0.
        num_lanes: lanes to find (6 for ``ELP G A M K L``).
        on_failure: when the lanes cannot be found: ``"whole_image"`` (default) resamples the whole image to
            ``spatial_size`` instead (the paper's raw protocol; flipped for ``orientation="albumin_top"``, as is
            for ``"auto"``, which needs the lanes), logs a warning naming the file and the reason, and records
            ``lanes_found`` false and the ``reason`` in ``meta["lane_layout"]`` (rows: the whole height), so the
            gel is trained on and answered, flagged, never dropped; ``"raise"``: a :class:`LaneLayoutError`.
        allow_missing_keys: do not raise if a key is absent.

    Returns (per key):
        a (C, H, W) float32 tensor (MetaTensor for a MetaTensor input), values in the input's range.

    Raises:
        ValueError: on bad arguments; with ``on_failure="raise"``, a :class:`LaneLayoutError` naming the file
            (``meta["filename_or_obj"]``) and the problem when the lanes cannot be found.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        orientation: str = "albumin_bottom",
        lane_gap: int = 0,
        num_lanes: int = 6,
        on_failure: str = "whole_image",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if on_failure not in ("whole_image", "raise"):
            raise ValueError(f"on_failure must be 'whole_image' or 'raise', got {on_failure!r}.")
        self.on_failure = on_failure
        if len(spatial_size) != 2 or any(int(s) != s or s < 1 for s in spatial_size):
            raise ValueError(f"spatial_size must be two positive integers (H, W), got {spatial_size!r}.")
        if orientation not in (*LAYOUT_ORIENTATIONS, "auto"):
            raise ValueError(f"orientation must be one of {(*LAYOUT_ORIENTATIONS, 'auto')}, got {orientation!r}.")
        if isinstance(lane_gap, bool) or int(lane_gap) != lane_gap or lane_gap < 0:
            raise ValueError(f"lane_gap must be an integer >= 0, got {lane_gap!r}.")
        if isinstance(num_lanes, bool) or int(num_lanes) != num_lanes or num_lanes < 1:
            raise ValueError(f"num_lanes must be a positive integer, got {num_lanes!r}.")
        self.spatial_size = (int(spatial_size[0]), int(spatial_size[1]))
        self.orientation = orientation
        self.lane_gap = int(lane_gap)
        self.num_lanes = int(num_lanes)
        free = self.spatial_size[1] - (self.num_lanes - 1) * self.lane_gap
        if free < self.num_lanes:
            raise ValueError(
                f"spatial_size width {self.spatial_size[1]} leaves {free} columns for {self.num_lanes} lanes with "
                f"lane_gap={self.lane_gap}: at least one column per lane needed."
            )
        # lane widths in the output: the free columns shared out as evenly as integers allow
        edges = np.round(np.linspace(0, free, self.num_lanes + 1)).astype(int)
        self.lane_widths = np.diff(edges).tolist()

    def normalise(self, image: Any, layout: LaneLayout | None = None) -> torch.Tensor:
        """(C, H_in, W_in) image -> (C, H, W) canonical layout; ``layout`` default :func:`find_lanes`."""
        source = _source(image)
        img = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image).float()
        if img.ndim != 3:
            raise ValueError(f"{source}: expected a channel-first (C, H, W) image, got shape {tuple(img.shape)}.")
        if layout is None:
            layout = _reusable_layout(image, self.num_lanes)
        reason = ""
        if layout is None:
            try:
                layout = find_lanes(img, num_lanes=self.num_lanes)
            except LaneLayoutError as err:
                if self.on_failure == "raise":
                    raise LaneLayoutError(f"{source}: cannot normalise the lane layout: {err}") from err
                reason = str(err)
                logger.warning("%s: lanes not read (%s): the whole image is used.", source, reason)
                return self._whole_image(image, img, reason)
        orientation = self.orientation
        if orientation == "auto":
            orientation = detect_orientation(img, layout)
        top, bottom = layout.rows
        height = self.spatial_size[0]
        if self.lane_gap:
            # the background between lanes: the brightest part of the gel rows, per channel (numpy: torch.quantile
            # refuses tensors of over 16 M values, a large scan)
            gel = img[:, top : bottom + 1].reshape(img.shape[0], -1).numpy()
            fill = torch.as_tensor(np.percentile(gel, 99, axis=1), dtype=torch.float32)
        pieces = []
        for index, ((left, right), width) in enumerate(zip(layout.columns, self.lane_widths)):
            lane = img[:, top : bottom + 1, left : right + 1]
            # torch's anti-aliased bilinear resampling (a triangle filter widened by the scale when shrinking) rather
            # than MONAI's Resize(anti_aliasing=True) (Gaussian pre-blur): mean difference under a grey level on
            # a 400 x 600 gel, a sixth of the time
            pieces.append(F.interpolate(lane[None], size=(height, width), mode="bilinear", antialias=True)[0])
            if self.lane_gap and index < self.num_lanes - 1:
                pieces.append(fill[:, None, None].expand(-1, height, self.lane_gap))
        out = torch.cat(pieces, dim=2)
        if orientation == "albumin_top":
            out = torch.flip(out, dims=(1,))  # canonical: albumin at the bottom
        return self._with_record(image, out, _layout_record(layout, img.shape[-2:]), orientation)

    def _whole_image(self, image: Any, img: torch.Tensor, reason: str) -> torch.Tensor:
        """The fallback: the whole (C, H_in, W_in) image at the output size, albumin at the bottom when known."""
        out = F.interpolate(img[None], size=self.spatial_size, mode="bilinear", antialias=True)[0]
        orientation = "unknown" if self.orientation == "auto" else self.orientation  # "auto" needs the lanes
        if orientation == "albumin_top":
            out = torch.flip(out, dims=(1,))
        layout = _whole_image_layout(img.shape[-2], img.shape[-1], self.num_lanes)
        return self._with_record(image, out, _layout_record(layout, img.shape[-2:], reason), orientation)

    @staticmethod
    def _with_record(image: Any, out: torch.Tensor, record: dict[str, Any], orientation: str) -> torch.Tensor:
        """``out`` with the input's metadata and the layout record (a plain tensor for a plain input)."""
        if not isinstance(image, MetaTensor):
            return out
        meta = dict(image.meta)
        meta.pop(_FOUND_LAYOUT_KEY, None)  # consumed: it describes the input, not the output
        meta["lane_layout"] = dict(record, orientation=orientation)
        return MetaTensor(out, meta=meta)  # meta holds the input's affine

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalise(d[key])
        return d


class IFEBandPatternd(MapTransform):
    """Add the band-pattern reason of :func:`detect_band_pattern` to the data as a string.

    Put it on the raw image (after ``LoadImaged``/``EnsureChannelFirstd``, before resizing): bands are a few
    percent of the gel height, fine detail that resizing blurs. On a :class:`~monai.data.MetaTensor` the lanes
    found are left in its metadata (``meta["found_lane_layout"]``), so that a following
    :class:`NormaliseLaneLayoutd` does not find them again.

    Args:
        keys: key of the (C, H, W) image (one key).
        output_key: where the reason goes: ``""`` when the pattern is one of the nine classes or no band is
            found, else e.g. ``"kappa and lambda bands at different heights"``.
        on_failure: ``"raise"`` (a :class:`LaneLayoutError` naming the file) or ``"report"`` (the reason
            ``"lanes not found: <why>"`` in ``output_key``, :data:`LANES_NOT_FOUND` first) when the lanes cannot
            be found.
        allow_missing_keys: do not raise if the key is absent.
        kwargs: passed to :func:`detect_band_pattern` (``min_contrast``, ``band_width``, ``same_height``).

    Raises:
        ValueError: on more than one key or an unknown ``on_failure``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str = "band_pattern",
        on_failure: str = "raise",
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"IFEBandPatternd reads one image key, got {list(self.keys)}.")
        if not output_key:
            raise ValueError("output_key must be a non-empty string.")
        if on_failure not in ("raise", "report"):
            raise ValueError(f"on_failure must be 'raise' or 'report', got {on_failure!r}.")
        unknown = set(kwargs) - {"min_contrast", "band_width", "same_height"}
        if unknown:
            raise ValueError(f"unknown detect_band_pattern arguments {sorted(unknown)}.")
        self.output_key = output_key
        self.on_failure = on_failure
        self.kwargs = kwargs

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                layout = find_lanes(d[key], num_lanes=len(LANE_NAMES))
                pattern = detect_band_pattern(d[key], layout, **self.kwargs)
            except LaneLayoutError as err:
                if self.on_failure == "raise":
                    raise LaneLayoutError(f"{_source(d[key])}: cannot read the band pattern: {err}") from err
                d[self.output_key] = f"{LANES_NOT_FOUND}: {err}"
                continue
            if isinstance(d[key], MetaTensor):
                # same pixels (shared storage), own meta dict: the caller's image keeps its metadata unchanged
                image = MetaTensor(d[key].as_tensor(), meta=dict(d[key].meta),
                                   applied_operations=list(d[key].applied_operations))
                image.meta[_FOUND_LAYOUT_KEY] = _layout_record(layout, np.shape(d[key])[-2:])
                d[key] = image
            d[self.output_key] = pattern.outside_nine or ""
        return d
