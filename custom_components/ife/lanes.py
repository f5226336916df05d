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
    "lanes_found",
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
#: least distance of neighbouring lane centres in pixels (a lane is wider than a letter stroke or a frame line)
_LEAST_PITCH = 8
#: weight of the share of the width the grid spans in its score
_SPAN_PRIOR = 0.1
#: the column profile saturates at this share of its top before the lanes are placed on it
_SATURATION = 0.1
#: a lane whose mean stain (over the gel rows, above the gaps) is under this share of the strongest lane's counts as
#: blank: its place comes from the grid of the stained lanes, not from its own edges
_STAINED = 0.35
#: the stain between two stained lanes must fall under this share of the fainter lane's mean somewhere
_GAP = 0.6
#: stained lanes needed to fix the pitch and position of the lanes (fewer: the layout is a guess, raise instead)
_LEAST_STAINED = 3
#: least correlation of the column profile with the lanes found; below it the profile is not six lanes
_LEAST_FIT = 0.3
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
        confidence: in (0, 1]: the correlation of the (saturated) column profile with the found lanes' mask
            (1: the columns are stain exactly where the lanes are and light elsewhere; real gels with blank
            immunofixation lanes score 0.4-0.6; below 0.3 :func:`find_lanes` raises instead).
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


def _opened(dark: np.ndarray) -> np.ndarray:
    """(H, W) darkness with thin lines and letter strokes opened away.

    A grey opening with a rectangle of 1.5 % of the height by 2.5 % of the width removes whatever is thinner than
    that in either direction: frame lines around the gel and around each lane (1-5 px), the strokes of printed
    lane letters, dust; lanes (wider than 5 % of the width) and their bands keep their shape.
    """
    height, width = dark.shape
    return ndimage.grey_opening(dark, size=(_odd(0.015 * height), _odd(0.025 * width)))


def _stain(opened: np.ndarray) -> np.ndarray:
    """The lanes' stain: the opened darkness above each row's 10th percentile (a gap between lanes, or the
    margin), which removes what runs across the whole width (a dark header strip, an application mark, an
    illumination gradient along the lanes)."""
    return np.clip(opened - np.percentile(opened, 10, axis=1, keepdims=True), 0.0, None)


def _column_profile(stain: np.ndarray, rows: tuple[int, int]) -> np.ndarray:
    """(W,) stain of each column over ``rows`` (inclusive) above the lower envelope of the gaps.

    The mean, not the median, over the rows: a lane whose only stain is one band (an immunofixation lane with a
    monoclonal band and little polyclonal background, common on real gels) still stands out. The lower envelope
    (an opening wider than any lane, the image outside counting as background so that a lane at the image's edge
    stays a lane) removes a gradient across the width.
    """
    raw = stain[rows[0] : rows[1] + 1].mean(axis=0)
    width = raw.size
    envelope = ndimage.grey_opening(raw, size=_odd(width / 5), mode="constant", cval=0.0)
    return raw - ndimage.uniform_filter1d(envelope, _odd(width / 10))


def _correlation(inside: np.ndarray, covered: np.ndarray, total: float, spread: float, width: int) -> np.ndarray:
    """Pearson correlation of a (W,) profile with a 0/1 lane mask, from the mask's sums: ``inside`` (the profile
    summed over the mask), ``covered`` (columns in the mask), ``total`` and ``spread`` (the profile's sum and sum of
    squared deviations)."""
    mask_spread = np.maximum(covered - covered**2 / width, 1e-9)
    return (inside - total * covered / width) / np.sqrt(spread * mask_spread)


def _interp_unit(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``np.interp(x, arange(table.size), table)`` for ``x`` in ``[0, table.size - 1]``, by indexing instead of a
    binary search (the same arithmetic, so the same values bit for bit; the grid search calls it a thousand times
    per gel, where ``np.interp`` took half of the lane finding's time)."""
    below = np.minimum(x.astype(np.int64), table.size - 2)
    value = table[below] + (x - below) * (table[below + 1] - table[below])
    return np.where(x >= table.size - 1, table[-1], value)


def _fit_grids(profile: np.ndarray, num_lanes: int) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """Regular grids of ``num_lanes`` lanes (one pitch, one width) matched to the column profile, best first.

    Searches pitches from 1/(2.4 n) of the width (the lanes span 42 % of it) to 1/(n - 0.7) (a tight crop that
    cuts into the outer lanes), lane widths of 35-90 % of the pitch and every position that keeps the outer
    lanes' centres inside the image. The score is the correlation of the profile with the grid's lane mask over
    the columns outside the grid's blank lanes (mean stain under :data:`_STAINED` of the strongest lane's): an
    immunofixation lane without antigen is nearly blank on real gels and says nothing about where it is, so it
    neither counts against a grid nor pulls the grid away from it; the stained lanes fix pitch and position, and
    a grid with fewer than :data:`_LEAST_STAINED` of them is not considered.

    Returns:
        per pitch searched, the best (correlation, lefts, rights) (lane edges as float columns, half-open), sorted
        by correlation, best first.
    """
    width = profile.size
    cumulative = np.concatenate([[0.0], np.cumsum(profile)])
    squares = np.concatenate([[0.0], np.cumsum(profile**2)])
    fractions = np.linspace(0.35, 0.9, 12)[:, None, None]
    index = np.arange(num_lanes)[None, None, :]
    if num_lanes == 1:
        pitches = np.array([float(width)])  # one lane: no pitch to search
    else:
        least, most = max(width / (2.4 * num_lanes), _LEAST_PITCH), width / (num_lanes - 0.7)
        if least > most:
            raise LaneLayoutError(
                f"cannot split the column profile into {num_lanes} lanes: {width} columns are too few for "
                f"{num_lanes} lanes {_LEAST_PITCH} or more columns apart."
            )
        pitches = np.geomspace(least, most, 120)
    grids = []
    for pitch in pitches:
        first = np.arange(0.0, max(width - (num_lanes - 1) * pitch, 0.0) + 1e-9, max(0.5, width / 600))
        centres = first[None, :, None] + index * pitch
        half = fractions * pitch / 2
        lefts, rights = np.clip(centres - half, 0, width), np.clip(centres + half, 0, width)
        sums = _interp_unit(rights, cumulative) - _interp_unit(lefts, cumulative)
        sizes = rights - lefts
        means = sums / np.maximum(sizes, 1e-9)
        blank = means < _STAINED * means.max(axis=-1, keepdims=True)
        # the profile's statistics over the columns outside the blank lanes
        kept = width - (sizes * blank).sum(-1)
        total = cumulative[-1] - (sums * blank).sum(-1)
        blank_squares = _interp_unit(rights, squares) - _interp_unit(lefts, squares)
        spread = squares[-1] - (blank_squares * blank).sum(-1) - total**2 / kept
        covered = (sizes * ~blank).sum(-1)
        inside = (sums * ~blank).sum(-1)
        score = (inside - total * covered / kept) / np.sqrt(
            np.maximum(spread, 1e-12) * np.maximum(covered - covered**2 / kept, 1e-9)
        )
        score = score + _SPAN_PRIOR * (rights[..., -1] - lefts[..., 0]) / width
        score = np.where((~blank).sum(-1) >= min(_LEAST_STAINED, num_lanes), score, -np.inf)
        f, o = np.unravel_index(int(np.argmax(score)), score.shape)
        grids.append((float(score[f, o]), lefts[f, o], rights[f, o]))
    return sorted(grids, key=lambda grid: -grid[0])


def _refine_lanes(
    profile: np.ndarray, lefts: np.ndarray, rights: np.ndarray, stained: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Let each stained lane of the grid move and change width on its own (lanes of unequal width and spacing).

    Two sweeps of coordinate ascent on the correlation of the profile with the whole lane mask: lane by lane, its
    edges within 30 % of the pitch of the grid's, its width within 50-150 % of the grid's, never overlapping its
    neighbours. Lanes without stain keep the grid's edges (nothing in the profile says where they are).

    Returns:
        (lefts, rights) integer column edges, half-open.
    """
    width = profile.size
    cumulative = np.concatenate([[0.0], np.cumsum(profile)])
    total = float(cumulative[-1])
    spread = float(((profile - total / width) ** 2).sum())
    grid_lefts, grid_rights = np.round(lefts).astype(int), np.round(rights).astype(int)
    lefts, rights = grid_lefts.copy(), grid_rights.copy()
    pitch = float(np.mean(np.diff(grid_lefts))) if lefts.size > 1 else float(width)
    reach = max(1, int(round(0.3 * pitch)))
    for _ in range(2):
        for k in np.flatnonzero(stained):
            grid_width = grid_rights[k] - grid_lefts[k]
            low = rights[k - 1] + 1 if k > 0 else 0
            high = lefts[k + 1] - 1 if k + 1 < lefts.size else width
            starts = np.arange(max(low, grid_lefts[k] - reach), min(high, grid_lefts[k] + reach) + 1)
            ends = np.arange(max(low, grid_rights[k] - reach), min(high, grid_rights[k] + reach) + 1)
            start, end = np.meshgrid(starts, ends, indexing="ij")
            span = end - start
            valid = (span >= 0.5 * grid_width) & (span <= 1.5 * grid_width)
            if not valid.any():
                continue
            others = np.arange(lefts.size) != k
            inside = (cumulative[rights[others]] - cumulative[lefts[others]]).sum()
            inside += cumulative[end] - cumulative[start]
            covered = (rights[others] - lefts[others]).sum() + span
            score = np.where(valid, _correlation(inside, covered, total, spread, width), -np.inf)
            i, j = np.unravel_index(int(np.argmax(score)), score.shape)
            lefts[k], rights[k] = int(start[i, j]), int(end[i, j])
    return lefts, rights


def _lane_columns(
    stain: np.ndarray, rows: tuple[int, int], num_lanes: int, min_contrast: float
) -> tuple[list[tuple[int, int]], np.ndarray, float]:
    """Lane columns (inclusive, left to right), which lanes show stain, and the confidence, from ``rows``."""
    profile = _column_profile(stain, rows)
    top = float(profile.max())
    if top < min_contrast:
        raise LaneLayoutError(
            f"no lanes: the columns differ in darkness by at most {top:.3f} (min_contrast={min_contrast})."
        )
    # the lanes are placed on the profile saturated at a tenth of its top: ELP's bands are often twenty times
    # darker than a faint immunofixation lane, and on the plain profile a grid that splits ELP alone into several
    # narrow lanes scores best; saturated, every lane with visible stain weighs alike
    evidence = np.clip(profile / (_SATURATION * top), 0.0, 1.0)
    cumulative = np.concatenate([[0.0], np.cumsum(evidence)])
    for _, grid_lefts, grid_rights in _fit_grids(evidence, num_lanes):
        lo, hi = np.round(grid_lefts).astype(int), np.round(grid_rights).astype(int)
        strength = (cumulative[hi] - cumulative[lo]) / np.maximum(hi - lo, 1)
        stained = strength >= _STAINED * strength.max()
        # two stained neighbours need a light valley between their centres: else the grid has split one lane
        # (ELP, whose bands outweigh the rest) into several; take the best grid at another pitch
        middles = np.round((lo + hi) / 2).astype(int)
        valleys = np.array([evidence[a : b + 1].min() for a, b in zip(middles[:-1], middles[1:])])
        both = stained[1:] & stained[:-1]
        if not np.any(both & (valleys > _GAP * np.minimum(strength[1:], strength[:-1]))):
            break
    else:
        raise LaneLayoutError(
            f"cannot split the column profile into {num_lanes} lanes: no grid of {num_lanes} lanes leaves light "
            "valleys between its stained lanes."
        )
    needed = min(_LEAST_STAINED, num_lanes)
    if stained.sum() < needed:
        raise LaneLayoutError(
            f"cannot split the column profile into {num_lanes} lanes: {int(stained.sum())} lane(s) stand out of "
            f"the gaps, {needed} are needed to fix the lanes' pitch and position."
        )
    lefts, rights = _refine_lanes(evidence, grid_lefts, grid_rights, stained)
    # a blank lane sits where the grid puts it, shifted as its stained neighbours moved, as wide as they are
    index = np.arange(num_lanes)
    moved = (lefts + rights)[stained] / 2 - ((lo + hi) / 2)[stained]
    centres = (lo + hi) / 2 + np.interp(index, index[stained], moved)
    half_width = float(np.median((rights - lefts)[stained])) / 2
    columns = []
    for k in index:
        low = rights[k - 1] if k > 0 else 0  # first column clear of the left neighbour (half-open edges)
        high = lefts[k + 1] - 1 if k + 1 < num_lanes else profile.size - 1
        if stained[k]:
            # where the lane's stain falls to 30 % of its plateau: lanes of different strength get edges defined
            # alike (the generator's nominal edge, a quarter of the plateau, is within a pixel)
            level = 0.3 * float(np.percentile(profile[lefts[k] : rights[k]], 90))
            columns.append(_edges_at(profile, lefts[k], rights[k] - 1, level, low, high))
        else:
            first = int(np.clip(round(centres[k] - half_width), low, high))
            columns.append((first, int(np.clip(round(centres[k] + half_width) - 1, first, high))))
    covered = np.zeros(profile.size, dtype=bool)
    for first, last in columns:
        covered[first : last + 1] = True
    total = float(evidence.sum())
    spread = float(((evidence - total / evidence.size) ** 2).sum())
    fit = float(_correlation(evidence[covered].sum(), np.float64(covered.sum()), total, spread, evidence.size))
    if fit < _LEAST_FIT:
        raise LaneLayoutError(
            f"cannot split the column profile into {num_lanes} lanes: the best {num_lanes} lanes explain it "
            f"poorly (correlation {fit:.2f} < {_LEAST_FIT})."
        )
    return columns, stained, fit


def _edges_at(
    profile: np.ndarray, first: int, last: int, level: float, low: int = 0, high: int | None = None
) -> tuple[int, int]:
    """Move the ends of the run ``first..last`` of ``profile`` to where it crosses ``level``: outwards while the
    neighbour is above it (not beyond ``low``..``high``, default the whole profile), inwards while the end is not
    (the run keeps at least one sample)."""
    high = profile.size - 1 if high is None else high
    first, last = max(first, low), min(last, high)
    while first > low and profile[first - 1] > level:
        first -= 1
    while first < last and profile[first] <= level:
        first += 1
    while last < high and profile[last + 1] > level:
        last += 1
    while last > first and profile[last] <= level:
        last -= 1
    return int(first), int(last)


def _lane_centre_columns(left: int, right: int) -> slice:
    """The middle half of a lane: clear of its soft edges, of frame lines and of the band's smile."""
    quarter = (right - left + 1) // 4
    return slice(left + quarter, right - quarter + 1)


def _gel_rows(
    dark: np.ndarray, opened: np.ndarray, columns: Sequence[tuple[int, int]], stained: np.ndarray
) -> tuple[int, int]:
    """First and last row of the gel: the longest stretch of rows where a stained lane is darker than the gaps.

    Per row and stained lane, the median of the lane's middle minus the median of the gaps beside it (``opened``:
    the darkness with thin lines and strokes opened away); per row the largest of these: any lane's stain makes a
    row part of the gel, so blank immunofixation lanes do not shorten it, while a header strip or a row of lane
    letters, set apart from the gel by a few blank rows and darker in the gaps too, holds less stain. The noise
    floor comes from ``dark`` (the opening flattens the noise it would be measured on).
    """
    height = opened.shape[0]
    gap_columns = [np.arange(right + 1, left) for (_, right), (left, _) in zip(columns[:-1], columns[1:])]
    gap_columns = [np.arange(0, columns[0][0]), *gap_columns, np.arange(columns[-1][1] + 1, opened.shape[1])]
    lanes, noises = [], []
    for k, (a, b) in enumerate(columns):
        beside = [g for g in gap_columns[k : k + 2] if g.size] or [g for g in gap_columns if g.size]
        if not stained[k] or not beside:
            continue
        gaps, middle = np.concatenate(beside), _lane_centre_columns(a, b)
        lanes.append(np.median(opened[:, middle], axis=1) - np.median(opened[:, gaps], axis=1))
        raw = np.median(dark[:, middle], axis=1) - np.median(dark[:, gaps], axis=1)
        noises.append(1.4826 * float(np.median(np.abs(np.diff(raw) - np.median(np.diff(raw))))) / np.sqrt(2))
    if not lanes:
        raise LaneLayoutError("no gaps between the lanes: cannot tell the gel rows from the background.")
    lanes = np.stack(lanes)
    r = lanes.max(axis=0)
    floor = max(5 * float(np.median(noises)), 0.01)
    runs = _runs(r > floor)
    if not runs:
        raise LaneLayoutError(f"no gel rows: the lanes are nowhere darker than the gaps by {floor:.3f}.")
    # the runs are one gel unless a thin line across the width (a frame's edge) lies between them: on real gels
    # the light zones between bands fall below the floor, and blank immunofixation lanes leave ELP's bands alone
    # (albumin a third of the height away from the globulins); runs with little stain (under a quarter of the
    # darkest row's and of the largest run's stain) are the faint rest of a header or a margin, not joined
    mass = [float(r[a : b + 1].sum()) for a, b in runs]
    runs = [
        run for run, m in zip(runs, mass) if r[run[0] : run[1] + 1].max() >= 0.25 * r.max() or m >= 0.25 * max(mass)
    ]
    thin = dark - ndimage.grey_opening(dark, size=(_odd(0.015 * height), 1))
    line_rows = np.mean(thin > 0.1, axis=1) > 0.5
    merged = [runs[0]]
    for first, last in runs[1:]:
        if not line_rows[merged[-1][1] : first].any():
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    first, last = max(merged, key=lambda run: float(r[run[0] : run[1] + 1].sum()))
    # refine at half the faintest lane's background stain (the trace of dye a washed lane keeps to its ends):
    # the rows where the gel begins
    level = max(floor, 0.5 * float(np.percentile(lanes[:, first : last + 1], 10, axis=1).min()))
    first, last = _edges_at(r, first, last, level)
    if last - first + 1 < 0.2 * height:
        raise LaneLayoutError(
            f"the gel rows found ({first}-{last}) cover less than a fifth of the {height} rows: no gel lanes."
        )
    return int(first), int(last)


def _find_layout(dark: np.ndarray, num_lanes: int, min_contrast: float) -> LaneLayout:
    opened = _opened(dark)
    stain = _stain(opened)
    # first over all rows, then again over the gel rows alone: a header strip, lane letters or a margin that the
    # opening left no longer weigh on the column profile
    columns, stained, _ = _lane_columns(stain, (0, stain.shape[0] - 1), num_lanes, min_contrast)
    rows = _gel_rows(dark, opened, columns, stained)
    columns, stained, confidence = _lane_columns(stain, rows, num_lanes, min_contrast)
    rows = _gel_rows(dark, opened, columns, stained)
    return LaneLayout(columns=tuple(columns), rows=rows, confidence=confidence)


def find_lanes(image: Any, num_lanes: int = 6, min_contrast: float = 0.02) -> LaneLayout:
    """Find the lanes and the gel rows of an IFE gel scan from the image itself.

    Built for real scans: frames around the lanes with letters inside, header strips, tight crops that cut the
    outer lanes, uneven lanes, grey or coloured stain, and immunofixation lanes that are nearly blank (an
    antiserum without its antigen). Thin lines and letter strokes are opened away and each row's gap level
    removed (:func:`_opened`, :func:`_stain`); the column profile (mean stain over the rows, saturated at a tenth
    of its top so that a faint lane weighs like ELP) is matched by regular grids of ``num_lanes`` lanes, scored by
    correlation without counting their blank lanes (:func:`_fit_grids`); the best grid with a light valley between
    every two stained neighbours is taken, its stained lanes move and resize on their own (uneven lanes) and get
    their edges where their stain falls to 30 % of their plateau, its blank lanes stay where the grid and their
    neighbours put them. The gel rows are the rows where a stained lane is darker than the gaps; then the lanes
    are found again over the gel rows alone (a header or margin no longer weighs on them).

    Measured on 59 hand-marked real gels of the MP-CADMS repository (``scripts/experiments/ife_real_lanes.py``,
    ``docs/results/ife_real_lanes.md``): see there; a gel is refused (:class:`LaneLayoutError`) rather than
    guessed when fewer than three lanes show stain.

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
    return _find_layout(_darkness(image), int(num_lanes), float(min_contrast))


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
        layout = _find_layout(dark, len(LANE_NAMES), 0.02)
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
        layout = _find_layout(dark, len(LANE_NAMES), 0.02)
    top, bottom = layout.rows
    lanes = [np.median(dark[top : bottom + 1, _lane_centre_columns(a, b)], axis=1) for a, b in layout.columns]
    excess = lanes[0] - np.max(np.stack(lanes[1:]), axis=0)  # ELP minus the darkest immunofixation lane, per row
    rows = max(1, int(end * excess.size))
    return "albumin_top" if excess[:rows].max() > excess[-rows:].max() else "albumin_bottom"


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

    Runs on the raw channel-first image (after ``LoadImaged``/``EnsureChannelFirstd``, before ``Resized`` and intensity
    scaling). The metadata of a :class:`~monai.data.MetaTensor` input is kept (``filename_or_obj``, ``spatial_shape`` of
    the file ...) and the found layout added as ``meta["lane_layout"]`` (``columns``, ``rows``, ``confidence``, the
    input's ``image_shape`` (H_in, W_in), ``orientation``, the one actually used: as given, or as detected for
    ``"auto"`` (``"unknown"`` when ``"auto"`` had no lanes to detect it from), ``lanes_found`` and the ``reason`` they
    were not (empty when they were; read with :func:`lanes_found`)). Output row ``r`` of a height-``H`` resampling (this
    one, or a later ``Resized`` of it) is input row ``top + (r + 0.5) * (bottom - top + 1) / H - 0.5`` (``bottom - ...``
    for ``albumin_top``), which :class:`~custom_components.ife.handlers.IFEPredictionWriter` uses to place attention
    peaks on the file. The layout is not an affine map, so the affine is left as it was and the transform is not
    invertible. The lanes are found once per gel: a layout that :class:`IFEBandPatternd` found on the same image (left
    in its metadata) is reused.

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
        if layout is None:
            try:
                layout = find_lanes(img, num_lanes=self.num_lanes)
            except LaneLayoutError as err:
                if self.on_failure == "raise":
                    raise LaneLayoutError(f"{source}: cannot normalise the lane layout: {err}") from err
                logger.warning("%s: lanes not read (%s): the whole image is used.", source, err)
                return self._whole_image(image, img, str(err))
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


def lanes_found(image: Any) -> bool | None:
    """Whether :class:`NormaliseLaneLayoutd` found the lanes of the gel it turned into ``image``: the
    ``lanes_found`` of its ``meta["lane_layout"]`` record (a bool, or a 0-d tensor after collation and
    decollation); None when the image was not lane-normalised (no record)."""
    meta = getattr(image, "meta", None)
    layout = meta.get("lane_layout") if isinstance(meta, Mapping) else None
    if not isinstance(layout, Mapping):
        return None
    value = layout.get("lanes_found", True)  # records written before the fallback existed had found their lanes
    return bool(torch.as_tensor(value).reshape(-1)[0])
