# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Where does a horizontal attention map look? Geometry of the maps and band-localisation statistics.

A horizontal attention map has one weight per feature row (Shi et al., MICCAI 2023, Fig. 3). Two questions make it
checkable against the monoclonal band that the synthetic generator drew (``band_row`` and ``band_half_width`` in
``synthesis.json``):

- **Which image row does a map row stand for?** :func:`map_row_centres`. The ResNet's strided layers (7x7 stem
  convolution, 3x3 max-pool, 3x3 stage convolutions, each with stride 2 and "same" padding ``k // 2``) centre
  output row ``i`` on input row ``2 i``, so row ``j`` of a map of total stride ``s`` is centred on network-input row
  ``j * s``: the top of its cell, not its middle (reading it as the middle shifts every peak half a map row, 16
  input rows at stride 32, downwards). The network input is the image resized along the height without cropping,
  so input row ``y`` (pixel centre ``y + 0.5``) is image row ``(y + 0.5) * image_rows / network_rows - 0.5``.
- **Is the peak at the band?** :func:`localisation_report`. A positive gel's peak counts as *in the band* when its
  image row is within the tolerance of the band's centre: half a map row (the best a map of that resolution can
  do) or the band's half-width, whichever is larger. Because bands sit in a limited range of heights, the report
  also gives the share that the best *fixed* row would reach (``fixed_row_share``): a map that ignores the image
  and always peaks at that row scores exactly that, so only a share above it shows localisation.

Profile contrast is ``max / mean`` of a map (1 for a flat map). A map is *saturated* when every row is within
``0.05`` of the same end of the sigmoid's range (all about 0 or all about 1), the degenerate state in which a map
carries no information.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SATURATION_MARGIN",
    "network_to_image_rows",
    "image_to_network_rows",
    "map_row_centres",
    "peak_row",
    "profile_contrast",
    "is_saturated",
    "tolerance_rows",
    "localisation_report",
    "aligned_profiles",
    "profiles_by_height",
    "read_profiles",
    "read_band_truth",
    "read_marked_bands",
    "report_from_files",
]

#: a map whose rows all lie within this distance of 0 (or all of 1) is saturated
SATURATION_MARGIN = 0.05


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _profile(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.all(np.isfinite(array)):
        raise ValueError(f"an attention profile must hold at least one finite value, got {np.asarray(values)!r}.")
    return array


def network_to_image_rows(
    rows: Any, network_rows: int, image_rows: int, lane_layout: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Image rows (pixel-index coordinates) of network-input rows.

    Without ``lane_layout`` the network input is the image resized along the height: row ``y`` is image row
    ``(y + 0.5) * image_rows / network_rows - 0.5``. With the ``lane_layout`` record of a lane-normalised gel
    (``rows``: the gel's first and last image row; ``orientation``: where albumin was in the file), only the gel rows
    were resampled, and flipped when albumin was at the top: row ``y`` is ``(y + 0.5) * (bottom - top + 1) /
    network_rows - 0.5`` into the gel, from its top, or from its bottom for ``albumin_top``.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if lane_layout is None:
        return (rows + 0.5) * image_rows / network_rows - 0.5
    top, bottom = lane_layout["rows"]
    offset = (rows + 0.5) * (bottom - top + 1) / network_rows - 0.5
    return bottom - offset if lane_layout["orientation"] == "albumin_top" else top + offset


def image_to_network_rows(
    rows: Any, network_rows: int, image_rows: int, lane_layout: Mapping[str, Any] | None = None
) -> np.ndarray:
    """The inverse of :func:`network_to_image_rows` (image rows outside a normalised gel land outside
    ``[-0.5, network_rows - 0.5]``)."""
    rows = np.asarray(rows, dtype=np.float64)
    if lane_layout is None:
        return (rows + 0.5) * network_rows / image_rows - 0.5
    top, bottom = lane_layout["rows"]
    offset = bottom - rows if lane_layout["orientation"] == "albumin_top" else rows - top
    return (offset + 0.5) * network_rows / (bottom - top + 1) - 0.5


def _image_rows_per_network_row(network_rows: int, image_rows: int, lane_layout: Mapping[str, Any] | None) -> float:
    if lane_layout is None:
        return image_rows / network_rows
    top, bottom = lane_layout["rows"]
    return (bottom - top + 1) / network_rows


def _interp(at: np.ndarray, centres: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation between map row centres, in either order (a flipped gel's run upwards); NaN outside."""
    order = np.argsort(centres)
    return np.interp(at, centres[order], values[order], left=np.nan, right=np.nan)


def map_row_centres(
    map_rows: int, stride: int, network_rows: int, image_rows: int, lane_layout: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Image-row coordinate of the centre of every map row.

    Args:
        map_rows: rows of the attention map (``ceil(network_rows / stride)`` for this ResNet).
        stride: total stride of the map's stage along the height (4, 8, 16 or 32 for stages 1-4).
        network_rows: rows of the network input (the resized image).
        image_rows: rows of the image as read from its file.
        lane_layout: the ``lane_layout`` record of a lane-normalised gel (:func:`network_to_image_rows`), or None.

    Returns:
        (map_rows,) float64, in image pixel-index coordinates (row ``r`` spans ``[r - 0.5, r + 0.5]``).

    Raises:
        ValueError: on a non-positive count or a map with more rows than the input could give at that stride.
    """
    map_rows = _positive_int(map_rows, "map_rows")
    stride = _positive_int(stride, "stride")
    network_rows = _positive_int(network_rows, "network_rows")
    image_rows = _positive_int(image_rows, "image_rows")
    if (map_rows - 1) * stride >= network_rows:
        raise ValueError(
            f"a map of {map_rows} rows at stride {stride} needs at least {(map_rows - 1) * stride + 1} input rows, "
            f"got network_rows={network_rows}."
        )
    network_centres = np.arange(map_rows, dtype=np.float64) * stride  # input row of each map row's centre
    return network_to_image_rows(network_centres, network_rows, image_rows, lane_layout)


def peak_row(
    profile: Any, stride: int, network_rows: int, image_rows: int, lane_layout: Mapping[str, Any] | None = None
) -> int:
    """The image row at the centre of the map row with the highest attention (the first one on ties).

    Args:
        profile: (h,) attention values.
        stride, network_rows, image_rows, lane_layout: as in :func:`map_row_centres`.

    Returns:
        an image row in ``[0, image_rows - 1]``.
    """
    values = _profile(profile)
    centres = map_row_centres(values.size, stride, network_rows, image_rows, lane_layout)
    return int(np.clip(np.round(centres[int(np.argmax(values))]), 0, image_rows - 1))


def profile_contrast(profile: Any) -> float:
    """``max / mean`` of a profile: 1 for a flat map, ``h`` for one row holding everything; NaN if the mean is 0."""
    values = _profile(profile)
    mean = float(values.mean())
    return float(values.max() / mean) if mean > 0 else float("nan")


def is_saturated(profile: Any, margin: float = SATURATION_MARGIN) -> bool:
    """Whether every row is within ``margin`` of 0, or every row within ``margin`` of 1."""
    values = _profile(profile)
    return bool(values.max() <= margin or values.min() >= 1 - margin)


def tolerance_rows(
    stride: int,
    network_rows: int,
    image_rows: int,
    band_half_width: float | None,
    lane_layout: Mapping[str, Any] | None = None,
) -> float:
    """How far (image rows) a peak may sit from the band's centre and still count as in the band.

    Half the spacing of the map rows (``stride`` input rows, in image rows), or the band's half-width when that is
    larger.
    """
    _positive_int(image_rows, "image_rows")
    spacing = _positive_int(stride, "stride") * _image_rows_per_network_row(
        _positive_int(network_rows, "network_rows"), image_rows, lane_layout
    )
    return max(spacing / 2, float(band_half_width or 0.0))


def localisation_report(records: Sequence[Mapping[str, Any]], name: str) -> dict[str, Any]:
    """Band-localisation statistics of one attention map over a set of gels.

    Args:
        records: one mapping per gel with ``values`` (the map, (h,)), ``stride``, ``network_rows``,
            ``image_rows``, ``band_row`` / ``band_half_width`` (None for a gel without a band) and, for a
            lane-normalised gel, ``lane_layout`` (:func:`network_to_image_rows`).
        name: the map's name, for messages.

    Returns:
        ``map_rows`` (a list of the distinct row counts seen), ``positives``, ``negatives``, ``peak_in_band``
        (count), ``peak_in_band_share`` (of positives; None without positives), ``fixed_row_share`` (the best
        share a constant peak row would reach), ``tolerance_rows`` (median over positives), ``median_peak_offset``
        (peak minus band row, image rows), ``contrast_positive`` / ``contrast_negative`` (mean ``max / mean``),
        ``saturated`` (count of saturated maps, all gels) and ``gels``.

    Raises:
        ValueError: on an empty ``records`` or a malformed record.
    """
    if not records:
        raise ValueError(f"no gels to report for the attention map {name!r}.")
    hits, offsets, tolerances, contrast_pos, contrast_neg = [], [], [], [], []
    positives: list[tuple[float, float, np.ndarray]] = []  # (band row, tolerance, every map row's centre)
    saturated, map_rows = 0, set()
    for record in records:
        values = _profile(record["values"])
        map_rows.add(values.size)
        saturated += is_saturated(values)
        contrast = profile_contrast(values)
        if record.get("band_row") is None:
            contrast_neg.append(contrast)
            continue
        contrast_pos.append(contrast)
        stride, network_rows, image_rows = record["stride"], record["network_rows"], record["image_rows"]
        layout = record.get("lane_layout")
        band = float(record["band_row"])
        tolerance = tolerance_rows(stride, network_rows, image_rows, record.get("band_half_width"), layout)
        peak = peak_row(values, stride, network_rows, image_rows, layout)
        hits.append(abs(peak - band) <= tolerance)
        offsets.append(peak - band)
        tolerances.append(tolerance)
        centres = map_row_centres(values.size, stride, network_rows, image_rows, layout)
        positives.append((band, tolerance, np.round(centres)))
    fixed_share = None
    if positives and len(map_rows) == 1:
        # the best constant answer: every gel's peak at map row j, for the j that is in the band most often
        rows = positives[0][2].size
        fixed_share = max(np.mean([abs(c[j] - b) <= t for b, t, c in positives]) for j in range(rows))
    return {
        "map": name,
        "map_rows": sorted(map_rows),
        "gels": len(records),
        "positives": len(hits),
        "negatives": len(contrast_neg),
        "peak_in_band": int(sum(hits)),
        "peak_in_band_share": float(np.mean(hits)) if hits else None,
        "fixed_row_share": None if fixed_share is None else float(fixed_share),
        "tolerance_rows": float(np.median(tolerances)) if tolerances else None,
        "median_peak_offset": float(np.median(offsets)) if offsets else None,
        "contrast_positive": float(np.nanmean(contrast_pos)) if contrast_pos else None,
        "contrast_negative": float(np.nanmean(contrast_neg)) if contrast_neg else None,
        "saturated": int(saturated),
    }


def aligned_profiles(records: Sequence[Mapping[str, Any]], offsets: Sequence[float]) -> np.ndarray:
    """Every positive gel's map, read at ``band_row + offsets`` (image rows): the rows of Fig. 3 aligned on the band.

    Each map is linearly interpolated between its row centres (:func:`map_row_centres`); offsets beyond the first
    or last centre give NaN. Records without a band are skipped.

    Returns:
        (positives, len(offsets)) float64.
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    rows = []
    for record in records:
        if record.get("band_row") is None:
            continue
        values = _profile(record["values"])
        centres = map_row_centres(values.size, record["stride"], record["network_rows"], record["image_rows"],
                                  record.get("lane_layout"))  # fmt: skip
        rows.append(_interp(float(record["band_row"]) + offsets, centres, values))
    return np.array(rows).reshape(len(rows), offsets.size)


def profiles_by_height(records: Sequence[Mapping[str, Any]], fractions: Sequence[float], band: bool) -> np.ndarray:
    """The maps of the gels with (``band=True``) or without a band, read at ``fractions`` of the image height.

    Returns:
        (gels, len(fractions)) float64; NaN above the first and below the last row centre.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    rows = []
    for record in records:
        if (record.get("band_row") is not None) != band:
            continue
        values = _profile(record["values"])
        centres = map_row_centres(values.size, record["stride"], record["network_rows"], record["image_rows"],
                                  record.get("lane_layout"))  # fmt: skip
        at = fractions * record["image_rows"] - 0.5
        rows.append(_interp(at, centres, values))
    return np.array(rows).reshape(len(rows), fractions.size)


def read_profiles(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The lines of an inference run's ``attention_profiles.jsonl`` (see ``IFEPredictionWriter``).

    Raises:
        ValueError: naming the file and line, on a line that is not a JSON object with ``image`` and ``maps``.
    """
    lines = []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {number}: not JSON ({e.msg}).") from None
            if not isinstance(line, dict) or "image" not in line or not isinstance(line.get("maps"), dict):
                raise ValueError(f"{path}, line {number}: expected an object with 'image' and 'maps'.")
            lines.append(line)
    return lines


def read_band_truth(synthesis_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{absolute image path: {"label", "band_row", "band_half_width"}}`` from a generator's ``synthesis.json``.

    Raises:
        ValueError: naming the file, when it lists no images with band rows (not a ``synthesis.json`` of the IFE
            generator, or one written before band rows were recorded).
    """
    synthesis_path = Path(synthesis_path)
    images = json.loads(synthesis_path.read_text(encoding="utf-8")).get("images")
    if not isinstance(images, list) or not images or "band_row" not in images[0]:
        raise ValueError(f"{synthesis_path} lists no IFE gels with band rows (expected the IFE generator's file).")
    root = synthesis_path.parent
    return {
        os.path.realpath(root / entry["image"]): {
            "label": entry.get("label"),
            "band_row": entry["band_row"],
            "band_half_width": entry.get("band_half_width"),
        }
        for entry in images
    }


def read_marked_bands(marks_path: str | os.PathLike, images_root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{absolute image path: {"label", "band_row", "band_half_width": None}}`` from hand marks of real gels
    (``docs/real_gels/mpcadms_lane_marks.json``: per gel ``image`` relative to ``images_root``, ``label`` and
    ``band_rows`` ``{"heavy": row or None, "light": row}`` in image rows).

    A gel's band row is its light-chain band's (every monoclonal gel has one; a heavy-chain band, where there is
    one, migrates with it); a gel without a marked band (Negative) has ``band_row`` None. No half-width is marked,
    so a peak counts as in the band within half a map row (:func:`tolerance_rows`).

    Raises:
        ValueError: naming the file, when it lists no gels with marked band rows.
    """
    marks = json.loads(Path(marks_path).read_text(encoding="utf-8")).get("gels")
    if not isinstance(marks, list) or not any((gel.get("band_rows") or {}).get("light") is not None for gel in marks):
        raise ValueError(f"{marks_path} lists no gels with marked band rows (expected mpcadms_lane_marks.json).")
    return {
        os.path.realpath(Path(images_root) / gel["image"]): {
            "label": gel.get("label"),
            "band_row": (gel.get("band_rows") or {}).get("light"),
            "band_half_width": None,
        }
        for gel in marks
    }


def report_from_files(
    profiles_path: str | os.PathLike | Sequence[str | os.PathLike],
    truth: str | os.PathLike | Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Join inference runs' attention profiles with the band rows and report every map.

    Args:
        profiles_path: one ``attention_profiles.jsonl``, or several (the held-out folds of a cross-validation).
        truth: the generator's ``synthesis.json`` (:func:`read_band_truth`), or what a reader of band rows returns
            (:func:`read_marked_bands`, for hand-marked real gels).

    Images are matched by their real path; images without band rows in ``truth`` are left out and counted.

    Returns:
        ``(report, records)``: the report ``{"gels", "unmatched", "maps": {key: localisation_report(...)}}`` and
        the joined records per map key (for figures).

    Raises:
        ValueError: when no profiled image has band rows in ``truth``.
    """
    if not isinstance(truth, Mapping):
        truth = read_band_truth(truth)
    paths = [profiles_path] if isinstance(profiles_path, (str, os.PathLike)) else list(profiles_path)
    records: dict[str, list[dict[str, Any]]] = {}
    matched, unmatched = 0, 0
    for line in (line for path in paths for line in read_profiles(path)):
        gel = truth.get(os.path.realpath(line["image"]))
        if gel is None:
            unmatched += 1
            continue
        matched += 1
        for key, entry in line["maps"].items():
            records.setdefault(key, []).append(
                {
                    "image": line["image"],
                    "values": entry["values"],
                    "stride": entry["stride"],
                    "network_rows": line["network_rows"],
                    "image_rows": line["image_rows"],
                    "lane_layout": line.get("lane_layout"),
                    **gel,
                }
            )
    if not matched:
        raise ValueError(f"none of the images in {', '.join(map(str, paths))} has band rows to compare with.")
    report = {
        "gels": matched,
        "unmatched": unmatched,
        "maps": {key: localisation_report(rows, key) for key, rows in records.items()},
    }
    return report, records
