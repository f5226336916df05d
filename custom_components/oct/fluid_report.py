# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The OCT fluid report: per-volume CSV and one-page PNG, and the change table of two scans of one eye.

- :func:`write_report_csv` / :func:`read_report_csv`: the rows of
  :func:`custom_components.oct.etdrs.fluid_volumes` (columns
  :data:`~custom_components.oct.etdrs.REPORT_COLUMNS`) as a CSV, written atomically, and back.
- :func:`plot_fluid_report`: one page per volume: a header (file, laterality, scan date, spacing and where it came
  from, fovea and where it came from, total fluid), the en-face fluid thickness map with the ETDRS grid drawn and each
  sector's volume written in it (superior up, nasal/temporal labelled by laterality), and the B-scan through the fovea
  with its fluid overlay (:func:`custom_components.oct.overlay.overlay_image`).
- :func:`change_table`: two reports of the same eye, ordered by scan date, the change per region in nL and percent.

With fluid types (IRF, SRF, PED, :mod:`custom_components.oct.fluid_types`) a report has each type's columns beside the
totals (:func:`~custom_components.oct.etdrs.report_columns`), the page a map per type below the total's, and the
change table each type's change beside the total's (:func:`change_columns`).

Figures use matplotlib's Agg canvas (no pyplot state) and are written atomically, as the IFE figures are.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from custom_components.oct.etdrs import ETDRS_DIAMETERS_MM, SECTOR_DESCRIPTIONS, TYPE_REPORT_COLUMNS, report_columns
from custom_components.core.atomic import save_atomic, write_csv_atomic
from custom_components.oct.fluid_types import BINARY_FLUID, FLUID_TYPE_NAMES, FLUID_TYPES, check_fluid_classes
from custom_components.oct.overlay import FLUID_TYPE_COLOURS, fluid_hues, overlay_image

__all__ = [
    "CHANGE_COLUMNS",
    "TYPE_CHANGE_COLUMNS",
    "change_columns",
    "report_fluid_classes",
    "write_report_csv",
    "read_report_csv",
    "plot_fluid_report",
    "change_table",
    "ChangeTableError",
]

#: columns of :func:`change_table`'s rows.
CHANGE_COLUMNS = (
    "sector",
    "region",
    "image_before",
    "image_after",
    "scan_date_before",
    "scan_date_after",
    "volume_nl_before",
    "volume_nl_after",
    "change_nl",
    "change_percent",
    "voxels_before",
    "voxels_after",
    "provenance_before",
    "provenance_after",
    "note",
)
#: what a change table of reports with fluid types adds per type, as ``<type>_<column>`` (``IRF_change_nl``)
TYPE_CHANGE_COLUMNS = ("volume_nl_before", "volume_nl_after", "change_nl", "change_percent")


def change_columns(fluid_classes: Sequence[str] = BINARY_FLUID) -> tuple[str, ...]:
    """The columns of :func:`change_table`'s rows: :data:`CHANGE_COLUMNS` (the totals), then for fluid types
    :data:`TYPE_CHANGE_COLUMNS` per type (``IRF_volume_nl_before IRF_volume_nl_after IRF_change_nl ...``)."""
    classes = check_fluid_classes(fluid_classes)
    per_type = () if classes == BINARY_FLUID else tuple(f"{t}_{c}" for t in classes for c in TYPE_CHANGE_COLUMNS)
    return CHANGE_COLUMNS + per_type


class ChangeTableError(ValueError):
    """Two reports that cannot be compared (different eyes, unknown laterality, not one volume each, fluid types in
    one and not in the other)."""


def report_fluid_classes(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The fluid classes report rows measure: :data:`~custom_components.oct.fluid_types.FLUID_TYPES` when every row
    has each type's volume column (``IRF_volume_nl``, ...: :func:`~custom_components.oct.etdrs.report_columns`), the
    one binary class otherwise."""
    per_type = {f"{t}_volume_nl" for t in FLUID_TYPES}
    return FLUID_TYPES if rows and all(per_type <= set(row) for row in rows) else BINARY_FLUID


def write_report_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write report rows to ``path`` atomically, with the columns of their fluid classes
    (:func:`~custom_components.oct.etdrs.report_columns`: the per-type columns when the rows have them); None is an
    empty cell."""
    columns = report_columns(report_fluid_classes(rows))
    clean = [{k: ("" if v is None else v) for k, v in row.items() if k in columns} for row in rows]
    write_csv_atomic(path, columns, clean)


#: the report columns that hold numbers, per-type ones included
_NUMBER_COLUMNS = ("voxels", "area_mm2", "volume_nl", "fovea_bscan", "fovea_column") + tuple(
    f"{t}_{c}" for t in FLUID_TYPES for c in TYPE_REPORT_COLUMNS
)


def _number(text: Any) -> float | None:
    if text is None or (isinstance(text, str) and text.strip() == ""):
        return None
    return float(text)


def read_report_csv(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a report CSV, numbers (per-type ones too) as floats and empty cells as None.

    Raises:
        ValueError: when the file lacks a report column, naming the file and the missing columns.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("image", "sector", "voxels", "volume_nl", "laterality") if c not in header]
        if missing:
            raise ValueError(f"{os.fspath(path)}: not a fluid report CSV, missing column(s) {', '.join(missing)}.")
        rows = []
        for row in reader:
            out: dict[str, Any] = {k: (None if v == "" else v) for k, v in row.items()}
            for key in _NUMBER_COLUMNS:
                if key in out:
                    out[key] = _number(out[key])
            rows.append(out)
    return rows


def _single_volume(report: Sequence[Mapping[str, Any]], name: str) -> tuple[str, dict[str, Mapping[str, Any]]]:
    images = sorted({str(r.get("image")) for r in report})
    if len(images) != 1:
        raise ChangeTableError(
            f"report {name} must describe one volume, it holds {len(images)} ({', '.join(images[:4])}"
            f"{', ...' if len(images) > 4 else ''}); use the per-volume CSVs (reports/<name>_fluid_report.csv)."
        )
    return images[0], {str(r["sector"]): r for r in report}


def _fmt_date(value: Any) -> str:
    return "" if value is None else str(value)


def change_table(
    report_a: Sequence[Mapping[str, Any]], report_b: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The change of fluid per region between two scans of one eye.

    The two reports (rows of :func:`~custom_components.oct.etdrs.fluid_volumes` or :func:`read_report_csv`, one
    volume each) are put in time order by their ``scan_date`` (ISO dates compare as text; when either lacks a date
    they stay in the order given and every row says so). Per region present in both: the volumes before and after,
    ``change_nl`` (after - before) and ``change_percent`` (relative to before; None when there was no fluid
    before). A change in nL needs both volumes; voxel counts are compared only when both scans have the same
    spacing, since a voxel is not a unit otherwise. When both reports have fluid types (:func:`report_fluid_classes`)
    each type's volumes, change and percent are given too, computed as the totals'.

    Args:
        report_a, report_b: the two reports, in either order.

    Returns:
        one dict per region (:func:`change_columns` of the reports' fluid classes), ``total`` first, in the first
        report's order.

    Raises:
        ChangeTableError: when a report holds other than one volume, when one has fluid types and the other not
            (naming both scans), when a laterality is unknown (sectors of unknown eyes cannot be paired: give
            ``laterality``), when the lateralities differ, or when the reports name their sectors differently
            (``S``/``I`` in one, ``F``/``E`` of an unknown B-scan direction in the other).
    """
    image_a, by_a = _single_volume(report_a, "A")
    image_b, by_b = _single_volume(report_b, "B")
    classes = _common_fluid_classes(report_a, image_a, report_b, image_b)
    types = () if classes == BINARY_FLUID else classes
    side_a = next(iter(by_a.values())).get("laterality")
    side_b = next(iter(by_b.values())).get("laterality")
    for image, side in ((image_a, side_a), (image_b, side_b)):
        if side not in ("OD", "OS"):
            raise ChangeTableError(
                f"{image}: laterality unknown; a change table pairs the sectors of one eye, so both scans need it "
                "(read from the file, or the bundle's 'laterality' override)."
            )
    if side_a != side_b:
        raise ChangeTableError(
            f"{image_a} is {side_a} but {image_b} is {side_b}: a change table compares scans of one eye."
        )
    # the quadrant letters (S N I T; F E of an unknown B-scan direction): S against F is not the same region
    naming_a, naming_b = ({s[0] for s in by if s not in ("total", "C0")} & set("SIFE") for by in (by_a, by_b))
    if naming_a and naming_b and (naming_a <= set("SI")) != (naming_b <= set("SI")):
        raise ChangeTableError(
            f"{image_a} names its sectors {'/'.join(sorted(naming_a))} but {image_b} "
            f"{'/'.join(sorted(naming_b))}: regions named differently are not the same regions (F/E: the B-scan "
            "direction is unknown; set first_bscan for both scans, so that both name S and I)."
        )
    date_a = next(iter(by_a.values())).get("scan_date")
    date_b = next(iter(by_b.values())).get("scan_date")
    dated = date_a is not None and date_b is not None
    if dated and str(date_b) < str(date_a):
        (image_a, by_a, date_a), (image_b, by_b, date_b) = (image_b, by_b, date_b), (image_a, by_a, date_a)
    order_note = "" if dated else "scan date unknown: taken in the order given"
    rows = []
    for sector, before in by_a.items():
        after = by_b.get(sector)
        if after is None:
            continue
        v0, v1 = _number(before.get("volume_nl")), _number(after.get("volume_nl"))
        n0, n1 = _number(before.get("voxels")), _number(after.get("voxels"))
        notes = [order_note] if order_note else []
        change, percent = _change(v0, v1)
        if change is None:
            notes.append("no change in nL: a spacing is unknown")
        same_grid = before.get("spacing_mm") == after.get("spacing_mm")
        if not same_grid:
            notes.append("different spacings: voxel counts not comparable")
        rows.append(
            {
                "sector": sector,
                "region": before.get("region") or SECTOR_DESCRIPTIONS.get(sector, ""),
                "image_before": image_a,
                "image_after": image_b,
                "scan_date_before": _fmt_date(date_a),
                "scan_date_after": _fmt_date(date_b),
                "volume_nl_before": v0,
                "volume_nl_after": v1,
                "change_nl": change,
                "change_percent": percent,
                "voxels_before": n0 if same_grid else None,
                "voxels_after": n1 if same_grid else None,
                "provenance_before": before.get("provenance"),
                "provenance_after": after.get("provenance"),
                "note": "; ".join(notes),
                **{k: v for t in types for k, v in _type_change(before, after, t).items()},
            }
        )
    return rows


def _common_fluid_classes(
    report_a: Sequence[Mapping[str, Any]], image_a: str, report_b: Sequence[Mapping[str, Any]], image_b: str
) -> tuple[str, ...]:
    """The fluid classes two reports (of the scans ``image_a`` and ``image_b``) share.

    Raises:
        ChangeTableError: when one report has fluid types and the other one fluid class, naming both.
    """
    classes_a, classes_b = report_fluid_classes(report_a), report_fluid_classes(report_b)
    if classes_a != classes_b:
        images = {"A": image_a, "B": image_b}
        typed, binary = ("A", "B") if classes_a != BINARY_FLUID else ("B", "A")
        raise ChangeTableError(
            f"report {typed} ({images[typed]}) has fluid types ({', '.join(FLUID_TYPES)}) but report {binary} "
            f"({images[binary]}) one fluid class: a change table compares reports of one kind; report both scans "
            "with the same model (or compare their totals by hand)."
        )
    return classes_a


def _change(before: float | None, after: float | None) -> tuple[float | None, float | None]:
    """``after - before`` in nL and in percent of ``before``: (None, None) without both volumes, the percent None
    when there was no fluid before."""
    if before is None or after is None:
        return None, None
    change = round(after - before, 6)
    return change, round(100.0 * change / before, 3) if before > 0 else None


def _type_change(before: Mapping[str, Any], after: Mapping[str, Any], fluid: str) -> dict[str, Any]:
    """One region's :data:`TYPE_CHANGE_COLUMNS` for the fluid type ``fluid`` (``IRF_change_nl``, ...)."""
    v0, v1 = _number(before.get(f"{fluid}_volume_nl")), _number(after.get(f"{fluid}_volume_nl"))
    change, percent = _change(v0, v1)
    values = {"volume_nl_before": v0, "volume_nl_after": v1, "change_nl": change, "change_percent": percent}
    return {f"{fluid}_{k}": v for k, v in values.items()}


def _sector_label_positions(
    laterality: str | None, first_bscan: str | None = "inferior"
) -> dict[str, tuple[float, float]]:
    """Where each sector's value is written, in mm (examiner's right, up) from the fovea; up is superior, or the
    last B-scan's side (``E``) when the B-scan direction is unknown."""
    d0, d1, d2 = ETDRS_DIAMETERS_MM
    inner, outer = (d0 + d1) / 4, (d1 + d2) / 4  # mid-radius of each ring
    right = {"OD": "N", "OS": "T", None: "R"}[laterality]
    left = {"OD": "T", "OS": "N", None: "L"}[laterality]
    up, down = ("S", "I") if first_bscan is not None else ("E", "F")
    positions = {"C0": (0.0, 0.0)}
    for ring, radius in (("1", inner), ("2", outer)):
        positions.update({f"{up}{ring}": (0.0, radius), f"{down}{ring}": (0.0, -radius)})
        positions.update({f"{right}{ring}": (radius, 0.0), f"{left}{ring}": (-radius, 0.0)})
    return positions


def _value_text(row: Mapping[str, Any], prefix: str = "") -> str:
    """A row's fluid as written on the page: nL when known, else voxels; ``prefix`` (``"IRF_"``) reads a type's."""
    volume, voxels = _number(row.get(f"{prefix}volume_nl")), _number(row.get(f"{prefix}voxels"))
    if volume is not None:
        return f"{volume:.1f} nL" if volume < 100 else f"{volume:.0f} nL"
    return "" if voxels is None else f"{voxels:.0f} vox"


#: where the page's parts go (figure fractions): the binary page; with fluid types a taller page
#: whose top half is the binary page's (total map, B-scan) and whose bottom row has a map per type
_LAYOUTS: dict[str, dict[str, Any]] = {
    "binary": {
        "figsize": (11.0, 6.2),
        "header": (0.975, 0.93, 0.855),
        "map": (0.06, 0.08, 0.40, 0.69),
        "bscan": (0.61, 0.12, 0.37, 0.62),
        "types": (),
    },
    "typed": {
        "figsize": (11.0, 10.4),
        "header": (0.985, 0.958, 0.914),
        "map": (0.06, 0.47, 0.40, 0.395),
        "bscan": (0.61, 0.5, 0.37, 0.36),
        "types": ((0.055, 0.05, 0.2, 0.31), (0.375, 0.05, 0.2, 0.31), (0.695, 0.05, 0.2, 0.31)),
    },
}


def plot_fluid_report(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    thickness: np.ndarray,
    bscan: np.ndarray | None,
    bscan_mask: np.ndarray | None,
    spacing_mm: Sequence[float | None] | None,
    fovea: Sequence[float] | None,
    bscan_index: int | None = None,
    first_bscan: str | None = "inferior",
    title: str | None = None,
    dpi: int = 110,
    no_grid: str | None = None,
    type_thickness: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Draw the one-page fluid report of one volume and write it to ``path`` (PNG) atomically.

    Args:
        path: the PNG file.
        rows: the volume's report rows (:func:`~custom_components.oct.etdrs.fluid_volumes`): header values and
            the sector volumes written on the grid come from them (each type's from its ``<type>_`` columns).
        thickness: ``(B-scans, columns)`` fluid voxels per A-scan
            (:func:`~custom_components.oct.etdrs.en_face_thickness`); shown in um when the axial spacing is
            known, in voxels otherwise.
        bscan: ``(rows, columns)`` intensities of the B-scan shown (through the fovea), or None for no B-scan panel.
        bscan_mask: its ``(rows, columns)`` fluid mask; with ``type_thickness``, its label map (1 IRF, 2 SRF, 3 PED),
            each type drawn in its colour (:data:`~custom_components.oct.overlay.FLUID_TYPE_COLOURS`).
        spacing_mm: ``(axial, lateral, inter_bscan)`` in mm, entries None when unknown; the map is drawn in mm
            around the fovea, with the grid, only when lateral and inter-B-scan spacings are known.
        fovea: ``(bscan, column)`` or None (no grid).
        bscan_index: index of the B-scan shown, for its title.
        first_bscan: ``"inferior"`` or ``"superior"``: which end of the B-scan axis is drawn at the bottom; None
            (unknown): B-scan 0 at the bottom, the vertical sectors labelled ``F``/``E`` as in the rows.
        title: first header line (default: the ``image`` of the rows).
        dpi: resolution of the PNG.
        no_grid: why no ETDRS grid is drawn, written above the map (the scan is not a cube:
            :func:`~custom_components.oct.etdrs.no_grid_reason`), or None: the grid is drawn when the rows have
            sector values, and otherwise the reason is the spacing's, the fovea's or the sector rows' note.
        type_thickness: with fluid types, ``{type: (B-scans, columns) thickness}`` of each type in
            :data:`~custom_components.oct.fluid_types.FLUID_TYPES` order: the page grows a row with one map per type
            (on one colour scale, so that the types compare), the total's map above them; None: the binary page.

    Raises:
        ValueError: on a ``thickness`` (or a type's) that is not 2D, or a B-scan and mask of different shapes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    thickness = np.asarray(thickness, dtype=np.float64)
    typed = {t: np.asarray(m, dtype=np.float64) for t, m in (type_thickness or {}).items()}
    for name, array in (("thickness", thickness), *((f"{t} thickness", m) for t, m in typed.items())):
        if array.ndim != 2:
            raise ValueError(f"{name} must be a (B-scans, columns) en-face map, got shape {array.shape}.")
    if bscan is not None and (bscan_mask is None or np.shape(bscan) != np.shape(bscan_mask)):
        raise ValueError(f"bscan and bscan_mask must have one shape, got {np.shape(bscan)} and {np.shape(bscan_mask)}.")
    layout = _LAYOUTS["typed" if typed else "binary"]
    by_sector = {str(r["sector"]): r for r in rows}
    first = rows[0] if rows else {}
    laterality = first.get("laterality")

    fig = Figure(figsize=layout["figsize"], dpi=dpi)
    FigureCanvasAgg(fig)
    total = by_sector.get("total", {})
    header = [
        title or f"{os.path.basename(str(first.get('image', '')))}  -  fluid report",
        f"eye {laterality or 'unknown'}   scan date {first.get('scan_date') or 'unknown'}   "
        f"spacing (axial x lateral x B-scan) {first.get('spacing_mm', '?')} mm  [{first.get('provenance', 'unknown')}]",
        f"fovea {'not set' if fovea is None else f'B-scan {fovea[0]:g}, column {fovea[1]:g}'}"
        f"  [{first.get('fovea_source') or 'none'}]   total fluid {_value_text(total) or '-'}"
        + (f" ({total.get('area_mm2'):.3f} mm2 en face)" if _number(total.get("area_mm2")) is not None else "")
        + "".join(f", {t} {_value_text(total, f'{t}_') or '-'}" for t in typed),
    ]
    title_y, text_y, warning_y = layout["header"]
    fig.text(0.02, title_y, header[0], fontsize=12, weight="bold", va="top")
    fig.text(0.02, text_y, header[1] + "\n" + header[2], fontsize=8.5, va="top")
    if first.get("provenance") == "unknown":
        warning = "spacing unknown: voxel counts only, no nL or mm"
        if no_grid:  # the axial and lateral spacings are known: it is the pattern that has no volume
            warning = "no volume: the B-scans are not a parallel stack (fluid per B-scan in fluid_measurements.csv)"
        fig.text(0.02, warning_y, warning, fontsize=8.5, color="tab:red", va="top")

    draw = {"rows": rows, "spacing_mm": spacing_mm, "fovea": fovea, "first_bscan": first_bscan, "no_grid": no_grid}
    # the thickest type sets every type map's scale: equal colours are equal thickness across the types
    top = max((float(m.max()) for m in typed.values() if m.size), default=0.0) or None
    ax = fig.add_axes(layout["map"])
    # the B-scans of a scan that is not a cube do not tile the fundus: the map is one row per B-scan, not en face
    heading = "fluid thickness per B-scan (not an en-face map)" if no_grid else "en-face fluid thickness, ETDRS sectors"
    if typed:
        heading = f"all fluid: {heading}"
    _draw_map(fig, ax, thickness, heading=heading, **draw)
    for (fluid, fluid_thickness), rect in zip(typed.items(), layout["types"]):
        heading = f"{fluid} ({FLUID_TYPE_NAMES[fluid]}): {_value_text(total, f'{fluid}_') or '-'}"
        _draw_map(fig, fig.add_axes(rect), fluid_thickness, heading=heading, prefix=f"{fluid}_", small=True, top=top,
                  **draw)  # fmt: skip

    if bscan is not None:
        bx = fig.add_axes(layout["bscan"])
        hues = fluid_hues(tuple(typed)) if typed else None  # each type in its colour
        bx.imshow(overlay_image(bscan, bscan_mask, hues=hues), aspect="auto", interpolation="nearest")
        if fovea is not None:
            bx.axvline(fovea[1], color="tab:cyan", lw=0.8, ls="--")
        which = "" if bscan_index is None else f" {bscan_index}"
        colours = ", ".join(f"{t} {FLUID_TYPE_COLOURS[t]}" for t in typed) if typed else "fluid in orange"
        bx.set_title(f"B-scan{which} through the fovea, {colours}", fontsize=9.5)
        bx.set_xlabel("column (A-scan)")
        bx.set_ylabel("row (depth)")
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    save_atomic(path, lambda tmp: fig.savefig(tmp, format=extension))


def _draw_map(
    fig: Any,
    ax: Any,
    thickness: np.ndarray,
    rows: Sequence[Mapping[str, Any]],
    spacing_mm: Sequence[float | None] | None,
    fovea: Sequence[float] | None,
    first_bscan: str | None,
    no_grid: str | None,
    heading: str,
    prefix: str = "",
    small: bool = False,
    top: float | None = None,
) -> None:
    """One en-face thickness map of the page on ``ax``, with its colour bar and title: in mm around the fovea with
    the ETDRS grid and each sector's value (the rows' ``<prefix>volume_nl``, or voxels) when the grid applies, in
    B-scans and columns with the reason otherwise (see :func:`plot_fluid_report`). ``small``: the smaller print of a
    type's map; ``top``: the thickness in voxels at the top of its colour scale (None: the map's own maximum)."""
    from matplotlib.patches import Circle

    axial, lateral, between = (list(spacing_mm) if spacing_mm is not None else [None] * 3)
    by_sector = {str(r["sector"]): r for r in rows}
    laterality = (rows[0] if rows else {}).get("laterality")
    nb, nc = thickness.shape
    um = axial is not None
    values = thickness * (axial * 1000.0 if um else 1.0)
    vmax = None if top is None else top * (axial * 1000.0 if um else 1.0)
    grid = lateral is not None and between is not None and fovea is not None
    grid = grid and any(r.get("sector") != "total" and r.get("voxels") is not None for r in rows)  # grid refused
    grid = grid and not no_grid
    # rows of the drawn map run inferior -> superior, so origin="lower" puts superior up
    view = values[::-1] if first_bscan == "superior" else values
    shown = np.ma.masked_less_equal(view, 0.0)
    ax.set_facecolor("0.92")
    if grid:
        fb = nb - 1 - fovea[0] if first_bscan == "superior" else fovea[0]
        # pixel edges in mm from the fovea: (left, right, bottom, top)
        x0, x1 = (-0.5 - fovea[1]) * lateral, (nc - 0.5 - fovea[1]) * lateral
        extent = (x0, x1, (-0.5 - fb) * between, (nb - 0.5 - fb) * between)
        image = ax.imshow(
            shown, cmap="inferno_r", origin="lower", extent=extent, aspect="equal", interpolation="nearest", vmin=0.0,
            vmax=vmax,
        )  # fmt: skip
        for diameter in ETDRS_DIAMETERS_MM:
            ax.add_patch(Circle((0.0, 0.0), diameter / 2, fill=False, color="tab:cyan", lw=1.0))
        r0, r1 = ETDRS_DIAMETERS_MM[0] / 2, ETDRS_DIAMETERS_MM[2] / 2
        for angle in (45, 135, 225, 315):
            c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
            ax.plot([r0 * c, r1 * c], [r0 * s, r1 * s], color="tab:cyan", lw=1.0)
        for sector, (x, y) in _sector_label_positions(laterality, first_bscan).items():
            row = by_sector.get(sector)
            if row is None:
                continue
            ax.text(x, y, f"{sector}\n{_value_text(row, prefix)}", ha="center", va="center",
                    fontsize=5.5 if small else 7.5, color="navy",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7, "lw": 0})  # fmt: skip
        right = {"OD": "nasal", "OS": "temporal"}.get(laterality, "right (laterality unknown)")
        left = {"OD": "temporal", "OS": "nasal"}.get(laterality, "left (laterality unknown)")
        reach = max(r1 * 1.08, abs(extent[0]), abs(extent[1]), abs(extent[2]), abs(extent[3]))
        reach = min(reach, r1 * 1.25)
        ax.set_xlim(-reach, reach)
        ax.set_ylim(-reach, reach)
        side = 6.5 if small else 8
        ax.text(reach * 0.97, 0, right, rotation=90, ha="right", va="center", fontsize=side)
        ax.text(-reach * 0.97, 0, left, rotation=90, ha="left", va="center", fontsize=side)
        up, down = ("superior", "inferior") if first_bscan is not None else ("last B-scan", "first B-scan")
        ax.text(0, reach * 0.97, up, ha="center", va="top", fontsize=side)
        ax.text(0, -reach * 0.97, down, ha="center", va="bottom", fontsize=side)
        ax.set_xlabel("mm from the fovea (examiner's view)")
    else:
        image = ax.imshow(
            shown, cmap="inferno_r", origin="lower", aspect="auto", interpolation="nearest", vmin=0.0, vmax=vmax
        )
        ax.set_xlabel("column (A-scan)")
        ax.set_ylabel("B-scan")
        refused = [str(r.get("note")) for r in rows if r.get("sector") != "total" and r.get("note")]
        if no_grid:  # the scan pattern's reason first: a radial scan has no inter-B-scan spacing because of it
            reason = no_grid
        elif lateral is None or between is None:
            reason = "spacing unknown"
        elif fovea is None:
            reason = "no fovea"
        else:  # the rows say why (e.g. not a horizontal raster)
            reason = refused[0].removeprefix("no ETDRS grid: ") if refused else "not computed"
        ax.text(0.5, 1.01, f"no ETDRS grid: {reason}", transform=ax.transAxes, ha="center", va="bottom", fontsize=8,
                color="tab:red")  # fmt: skip
    colourbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    colourbar.set_label("fluid thickness (um)" if um else "fluid thickness (voxels)")
    ax.set_title(heading, fontsize=9.5, pad=14)
