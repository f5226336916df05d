"""custom_components.oct.etdrs and the report around it (custom_components.oct.fluid_report,
scripts/fluid_change.py): ETDRS sector volumes against analytic cylinders, laterality, unknown spacings, the change
table and the one-page PNG."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from custom_components.oct.etdrs import (
    ETDRS_SECTORS,
    REPORT_COLUMNS,
    en_face_thickness,
    fluid_volumes,
    sector_masks,
    sector_names,
    volume_centre_fovea,
)
from custom_components.oct.fluid_report import (
    CHANGE_COLUMNS,
    ChangeTableError,
    change_table,
    plot_fluid_report,
    read_report_csv,
    write_report_csv,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fluid_change.py"

#: (axial, lateral, inter-B-scan) mm: anisotropic like a Spectralis raster, B-scans 2.5x the A-scan distance
SPACING = (0.0039, 0.012, 0.03)
#: (rows, columns, B-scans): 4.8 x 3.6 mm en face, enough for the 1 and 3 mm circles around the fovea
SHAPE = (10, 400, 120)
#: off-centre and between voxels on purpose
FOVEA = (57.4, 212.7)


def _cylinder(centre_mm, radius_mm, rows=(2, 8), shape=SHAPE, spacing=SPACING, fovea=FOVEA, superior_up=True):
    """Mask of a vertical cylinder (along depth) of ``radius_mm`` whose axis is at ``centre_mm`` = (right, up) mm
    from the fovea on the en-face image (right = increasing column; up = increasing B-scan when ``superior_up``)."""
    b = (np.arange(shape[2]) - fovea[0]) * spacing[2] * (1 if superior_up else -1)
    c = (np.arange(shape[1]) - fovea[1]) * spacing[1]
    up, right = np.meshgrid(b, c, indexing="ij")  # (B-scans, columns)
    disc = (right - centre_mm[0]) ** 2 + (up - centre_mm[1]) ** 2 < radius_mm**2
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1]] = disc.T[None]  # (rows, columns, B-scans)
    return mask


def _nl(area_mm2, rows=6, spacing=SPACING):
    return area_mm2 * rows * spacing[0] * 1000.0  # 1 mm^3 = 1000 nL


def _lens(R, r, d):
    """Area of the intersection of circles of radii R and r whose centres are d apart (d < R + r)."""
    a = r * r * math.acos((d * d + r * r - R * R) / (2 * d * r))
    b = R * R * math.acos((d * d + R * R - r * r) / (2 * d * R))
    return a + b - 0.5 * math.sqrt((-d + r + R) * (d + r - R) * (d - r + R) * (d + r + R))


def _by_sector(rows):
    return {r["sector"]: r for r in rows}


def test_cylinder_at_the_fovea_is_all_central_and_matches_pi_r2_h():
    mask = _cylinder((0.0, 0.0), 0.4)
    rows = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OD", "file header", fovea_source="user"))
    expected = _nl(math.pi * 0.4**2)  # 1.1762 nL
    assert rows["C0"]["volume_nl"] == pytest.approx(expected, rel=0.02)
    assert rows["total"]["volume_nl"] == pytest.approx(expected, rel=0.02)
    assert rows["total"]["voxels"] == int(mask.sum())
    assert rows["total"]["area_mm2"] == pytest.approx(math.pi * 0.4**2, rel=0.02)
    assert all(rows[s]["volume_nl"] == 0.0 for s in ETDRS_SECTORS[1:])
    assert {r["provenance"] for r in rows.values()} == {"file header"}
    assert rows["C0"]["fovea_bscan"] == 57.4 and rows["C0"]["fovea_column"] == 212.7
    assert rows["C0"]["fovea_source"] == "user" and rows["C0"]["spacing_mm"] == "0.0039x0.012x0.03"


def test_cylinder_straddling_the_central_border_is_split_by_area():
    # centred 0.5 mm right of the fovea (on the 1 mm circle), radius 0.3: part in C0, the rest in the right quadrant
    # of the inner ring (0.3 < 0.5 sin 45 deg, so it stays within that quadrant)
    mask = _cylinder((0.5, 0.0), 0.3)
    central = _nl(_lens(0.5, 0.3, 0.5))
    ring = _nl(math.pi * 0.3**2) - central
    od = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OD", "file header"))
    assert od["C0"]["volume_nl"] == pytest.approx(central, rel=0.02)
    assert od["N1"]["volume_nl"] == pytest.approx(ring, rel=0.02)  # OD: the examiner's right is nasal
    assert od["T1"]["volume_nl"] == 0.0
    # the sectors add up to the total (every voxel lies inside the grid)
    assert sum(od[s]["volume_nl"] for s in ETDRS_SECTORS) == pytest.approx(od["total"]["volume_nl"], rel=1e-6)
    os_ = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OS", "file header"))
    assert os_["T1"]["volume_nl"] == pytest.approx(od["N1"]["volume_nl"], rel=1e-9)  # OS: the right is temporal
    assert os_["N1"]["volume_nl"] == 0.0 and os_["C0"]["volume_nl"] == od["C0"]["volume_nl"]


@pytest.mark.parametrize("first_bscan, sector", [("inferior", "S1"), ("superior", "I1")])
def test_which_bscan_end_is_superior(first_bscan, sector):
    mask = _cylinder((0.0, 1.0), 0.25)  # 1 mm towards higher B-scan indices: inner ring, vertical quadrant
    rows = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OD", "file header", first_bscan=first_bscan))
    assert rows[sector]["volume_nl"] == pytest.approx(_nl(math.pi * 0.25**2), rel=0.02)
    other = "I1" if sector == "S1" else "S1"
    assert rows[other]["volume_nl"] == 0.0


def test_outer_ring_and_the_fovea_moved():
    # the same physical cylinder, 2.2 mm left of a fovea placed elsewhere in the scan: outer temporal for OD
    fovea = (80.0, 300.0)
    mask = _cylinder((-2.2, 0.0), 0.3, fovea=fovea, shape=(10, 480, 160))
    rows = _by_sector(fluid_volumes(mask, SPACING, fovea, "OD", "file header"))
    assert rows["T2"]["volume_nl"] == pytest.approx(_nl(math.pi * 0.09), rel=0.02)
    assert rows["N2"]["volume_nl"] == 0.0 and rows["C0"]["volume_nl"] == 0.0


def test_sector_areas_match_the_grid_geometry():
    sx, sy = 0.011, 0.047
    masks = sector_masks((140, 600), sx, sy, (69.5, 299.5), "OD")
    assert tuple(masks) == ETDRS_SECTORS
    pixel = sx * sy
    assert masks["C0"].sum() * pixel == pytest.approx(math.pi * 0.25, rel=0.01)
    quadrant1 = math.pi * (1.5**2 - 0.5**2) / 4
    for name in ("S1", "N1", "I1", "T1"):
        assert masks[name].sum() * pixel == pytest.approx(quadrant1, rel=0.01)
    total = sum(m for m in masks.values())
    assert total.max() <= 1.0 + 1e-6 and total.min() >= 0.0
    assert total.sum() * pixel == pytest.approx(math.pi * 9.0, rel=0.01)  # the 6 mm disc (it fits in the scan)


def test_no_spacing_gives_voxel_counts_and_provenance_unknown_never_nl():
    mask = _cylinder((0.0, 0.0), 0.4)
    rows = fluid_volumes(mask, None, FOVEA, "OD", "unknown")
    assert [r["sector"] for r in rows] == ["total", *ETDRS_SECTORS]
    assert rows[0]["voxels"] == int(mask.sum()) and rows[0]["volume_nl"] is None and rows[0]["area_mm2"] is None
    assert all(r["provenance"] == "unknown" and r["volume_nl"] is None for r in rows)
    assert all(r["voxels"] is None and "no ETDRS grid" in r["note"] for r in rows[1:])  # the grid is in mm
    assert set(rows[0]) == set(REPORT_COLUMNS)


def test_axial_spacing_unknown_gives_sector_voxels_and_areas_but_no_nl():
    mask = _cylinder((0.0, 0.0), 0.4)
    rows = _by_sector(fluid_volumes(mask, (None, SPACING[1], SPACING[2]), FOVEA, "OS", "file header"))
    assert rows["C0"]["voxels"] == pytest.approx(mask.sum(), rel=1e-6)
    assert rows["C0"]["area_mm2"] == pytest.approx(math.pi * 0.16, rel=0.02)
    assert rows["C0"]["volume_nl"] is None and rows["total"]["volume_nl"] is None
    assert rows["C0"]["provenance"] == "unknown"  # incomplete spacing: no volume may be read from this report
    assert "axial spacing unknown" in rows["total"]["note"]


def test_unknown_laterality_names_the_horizontal_quadrants_by_image_side():
    assert sector_names(None) == ("C0", "S1", "R1", "I1", "L1", "S2", "R2", "I2", "L2")
    mask = _cylinder((0.5, 0.0), 0.3)
    rows = _by_sector(fluid_volumes(mask, SPACING, FOVEA, None, "user override"))
    od = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OD", "user override"))
    assert rows["R1"]["volume_nl"] == od["N1"]["volume_nl"] and "N1" not in rows
    assert "laterality unknown" in rows["R1"]["note"] and rows["R1"]["provenance"] == "user override"


def test_no_fovea_counts_only_the_total():
    rows = fluid_volumes(_cylinder((0.0, 0.0), 0.4), SPACING, None, "OD", "file header")
    assert rows[0]["volume_nl"] == pytest.approx(_nl(math.pi * 0.16), rel=0.02)
    assert all(r["volume_nl"] is None and r["note"] == "no ETDRS grid: no fovea" for r in rows[1:])


def test_volume_centre_and_en_face_thickness():
    assert volume_centre_fovea((49, 512)) == (24.0, 255.5)
    mask = np.zeros((5, 4, 3), bool)
    mask[1:4, 2, 1] = True
    thickness = en_face_thickness(mask)
    assert thickness.shape == (3, 4) and thickness[1, 2] == 3 and thickness.sum() == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"laterality": "right"}, "laterality must be 'OD'"),
        ({"spacing_mm": (0.1, -0.2, 0.3)}, "spacing_mm lateral must be a positive number"),
        ({"spacing_mm": (0.1, 0.2)}, r"spacing_mm must be \(axial, lateral, inter_bscan\)"),
        ({"spacing_source": "guess"}, "spacing_source must be one of"),
        ({"spacing_source": "unknown"}, "spacing_source is 'unknown' but a spacing is given"),
        ({"first_bscan": "top"}, "first_bscan must be 'inferior', 'superior' or None"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    args = {"spacing_mm": SPACING, "fovea": (1.0, 1.0), "laterality": "OD", "spacing_source": "file header", **kwargs}
    with pytest.raises(ValueError, match=message):
        fluid_volumes(np.zeros((2, 3, 4), bool), **args)


def test_bad_mask_shape_and_sector_mask_arguments():
    with pytest.raises(ValueError, match=r"mask must be a \(rows, columns, B-scans\) volume, got shape \(3, 4\)"):
        fluid_volumes(np.zeros((3, 4)), SPACING, None, "OD", "file header")
    with pytest.raises(ValueError, match="supersample must be >= 1"):
        sector_masks((4, 4), 0.1, 0.1, (1, 1), "OD", supersample=0)
    with pytest.raises(ValueError, match="fovea must be"):
        sector_masks((4, 4), 0.1, 0.1, (1, float("nan")), "OD")


def _report(volumes, laterality="OD", date="2024-01-10", image="/d/a.nii.gz", spacing="0.0039x0.012x0.03"):
    return [
        {"image": image, "scan_date": date, "laterality": laterality, "sector": s, "region": s, "voxels": v,
         "volume_nl": v / 10 if v is not None else None, "spacing_mm": spacing, "provenance": "file header"}
        for s, v in volumes.items()
    ]  # fmt: skip


def test_change_table_orders_by_date_and_computes_nl_and_percent():
    later = _report({"total": 300.0, "C0": 100.0, "N1": 50.0}, date="2024-03-01", image="/d/b.nii.gz")
    earlier = _report({"total": 200.0, "C0": 0.0, "N1": 100.0})
    rows = {r["sector"]: r for r in change_table(later, earlier)}  # given in the wrong order
    assert rows["total"]["image_before"] == "/d/a.nii.gz" and rows["total"]["scan_date_after"] == "2024-03-01"
    assert rows["total"]["volume_nl_before"] == 20.0 and rows["total"]["volume_nl_after"] == 30.0
    assert rows["total"]["change_nl"] == 10.0 and rows["total"]["change_percent"] == 50.0
    assert rows["N1"]["change_nl"] == -5.0 and rows["N1"]["change_percent"] == -50.0
    assert rows["C0"]["change_nl"] == 10.0 and rows["C0"]["change_percent"] is None  # no fluid before
    assert rows["C0"]["voxels_before"] == 0.0 and rows["C0"]["note"] == ""


def test_change_table_refuses_other_eyes_and_unknown_laterality():
    with pytest.raises(ChangeTableError, match="is OD but /d/b.nii.gz is OS"):
        change_table(_report({"total": 1.0}), _report({"total": 1.0}, laterality="OS", image="/d/b.nii.gz"))
    with pytest.raises(ChangeTableError, match="laterality unknown"):
        change_table(_report({"total": 1.0}, laterality=None), _report({"total": 1.0}))
    two = _report({"total": 1.0}) + _report({"total": 1.0}, image="/d/c.nii.gz")
    with pytest.raises(ChangeTableError, match="must describe one volume, it holds 2"):
        change_table(two, _report({"total": 1.0}))


def test_change_table_without_spacing_or_dates_says_so():
    a = _report({"total": 10.0}, date=None, spacing="?x?x?")
    for row in a:
        row["volume_nl"] = None
    b = _report({"total": 20.0}, date=None, image="/d/b.nii.gz")
    (row,) = change_table(a, b)
    assert row["change_nl"] is None and row["image_before"] == "/d/a.nii.gz"  # the order given
    assert "scan date unknown" in row["note"] and "no change in nL" in row["note"]
    assert "voxel counts not comparable" in row["note"] and row["voxels_before"] is None


def _change_script():
    """``scripts/fluid_change.py`` as a module."""
    spec = importlib.util.spec_from_file_location("fluid_change_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def _read_change(path) -> dict:
    """A change table's rows by sector."""
    with open(path, newline="") as f:
        return {r["sector"]: r for r in csv.DictReader(f)}


def test_report_csv_round_trip_png_and_change_script(tmp_path, capsys):
    mask = _cylinder((0.5, 0.0), 0.3)
    extra = {"image": "/d/visit1.nii.gz", "scan_date": "2024-01-10"}
    rows = fluid_volumes(mask, SPACING, FOVEA, "OD", "file header", fovea_source="file", extra=extra)
    write_report_csv(tmp_path / "a.csv", rows)
    back = read_report_csv(tmp_path / "a.csv")
    assert [r["sector"] for r in back] == [r["sector"] for r in rows]
    assert back[2]["volume_nl"] == pytest.approx(rows[2]["volume_nl"]) and back[0]["note"] is None

    k = int(round(FOVEA[0]))
    image = np.random.default_rng(0).random(SHAPE).astype(np.float32)
    plot_fluid_report(tmp_path / "a.png", rows, en_face_thickness(mask), image[:, :, k], mask[:, :, k], SPACING, FOVEA, k)
    png = Image.open(tmp_path / "a.png")
    assert png.format == "PNG" and 800 <= png.size[0] <= 2000 and 400 <= png.size[1] <= 1200
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]

    doubled = fluid_volumes(mask | _cylinder((0.0, 1.0), 0.25), SPACING, FOVEA, "OD", "file header",
                            extra={"image": "/d/visit2.nii.gz", "scan_date": "2024-02-10"})  # fmt: skip
    write_report_csv(tmp_path / "b.csv", doubled)
    script = _change_script()
    assert script.main([str(tmp_path / "b.csv"), str(tmp_path / "a.csv"), "--output", str(tmp_path / "c.csv")]) == 0
    printed = capsys.readouterr().out
    assert "before: /d/visit1.nii.gz (2024-01-10)" in printed and "S1" in printed
    change = _read_change(tmp_path / "c.csv")
    assert float(change["S1"]["change_nl"]) == pytest.approx(_nl(math.pi * 0.25**2), rel=0.02)
    assert float(change["N1"]["change_nl"]) == 0.0 and float(change["N1"]["change_percent"]) == 0.0
    other_eye = [dict(r, laterality="OS") for r in doubled]
    write_report_csv(tmp_path / "os.csv", other_eye)
    assert script.main([str(tmp_path / "a.csv"), str(tmp_path / "os.csv")]) == 1
    assert "a change table compares scans of one eye" in capsys.readouterr().err


@pytest.mark.parametrize("fovea", [(24.0, 255.5), (24.3, 255.7), (24.5, 250.0)])
def test_fractional_coverage_keeps_sector_volumes_exact_at_spectralis_spacing(fovea):
    # fluid everywhere, 2 voxels deep, B-scans 0.12 mm apart: each sector's volume is its area x 2 voxels; assigning
    # border pixels whole (supersample=1) is off by up to about 2 % here, the fractional coverage by under 0.2 %
    spacing = (0.0039, 0.0117, 0.12)
    mask = np.zeros((4, 512, 49), bool)
    mask[1:3] = True
    rows = _by_sector(fluid_volumes(mask, spacing, fovea, "OD", "file header"))
    depth_nl = 2 * spacing[0] * 1000
    assert rows["C0"]["volume_nl"] == pytest.approx(math.pi * 0.25 * depth_nl, rel=0.002)
    for name in ("S1", "N1", "I1", "T1"):
        assert rows[name]["volume_nl"] == pytest.approx(math.pi * (1.5**2 - 0.25) / 4 * depth_nl, rel=0.002)


def test_unknown_bscan_direction_names_the_vertical_quadrants_by_bscan_end():
    assert sector_names("OD", None) == ("C0", "E1", "N1", "F1", "T1", "E2", "N2", "F2", "T2")
    assert sector_names(None, None) == ("C0", "E1", "R1", "F1", "L1", "E2", "R2", "F2", "L2")
    mask = _cylinder((0.0, 1.0), 0.25)  # 1 mm towards higher B-scan indices: the last B-scan's side
    rows = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OD", "file header", first_bscan=None))
    known = _by_sector(fluid_volumes(mask, SPACING, FOVEA, "OD", "file header", first_bscan="inferior"))
    assert rows["E1"]["volume_nl"] == known["S1"]["volume_nl"] and rows["F1"]["volume_nl"] == 0.0
    assert "S1" not in rows and rows["total"]["first_bscan"] is None
    assert "B-scan direction unknown" in rows["E1"]["note"]


def test_grid_refused_with_a_reason_leaves_the_sectors_empty():
    rows = fluid_volumes(_cylinder((0.0, 0.0), 0.4), SPACING, FOVEA, "OD", "file header", no_grid="not a raster")
    assert rows[0]["volume_nl"] == pytest.approx(_nl(math.pi * 0.16), rel=0.02)
    assert all(r["voxels"] is None and r["note"] == "no ETDRS grid: not a raster" for r in rows[1:])


def test_check_spacing_mm_is_the_one_spacing_check():
    from custom_components.oct.etdrs import check_spacing_mm

    assert check_spacing_mm(None) == (None, None, None)
    assert check_spacing_mm(0.5) == (0.5, 0.5, 0.5)
    assert check_spacing_mm([0.1, None, 0.2]) == (0.1, None, 0.2)
    with pytest.raises(ValueError, match="three positive numbers"):
        check_spacing_mm([0.1, None, 0.2], allow_unknown=False)
    with pytest.raises(ValueError, match="spacing_mm inter_bscan must be a positive number"):
        check_spacing_mm([0.1, 0.1, -1.0], allow_unknown=False)


def test_change_table_refuses_sectors_named_differently():
    known = _report({"total": 1.0, "C0": 1.0, "S1": 1.0, "N1": 1.0})
    unknown = _report({"total": 1.0, "C0": 1.0, "E1": 1.0, "N1": 1.0}, image="/d/b.nii.gz")
    with pytest.raises(ChangeTableError, match="named differently"):
        change_table(known, unknown)
    both = _report({"total": 1.0, "E1": 2.0}, date="2024-03-01", image="/d/c.nii.gz")
    assert {r["sector"] for r in change_table(unknown, both)} == {"total", "E1"}


# ---------------------------------------------------------------- fluid types (IRF, SRF, PED)

TYPES = ("IRF", "SRF", "PED")


def _typed_label_map():
    """(rows 4, columns 5, B-scans 3) label map, 0.01 x 0.02 x 0.05 mm voxels (0.01 nL each):

    - IRF (1): rows 0-2 of A-scan (B-scan 0, column 1): 3 voxels, 1 A-scan
    - SRF (2): row 3 of columns 1-4 on B-scan 1: 4 voxels, 4 A-scans
    - PED (3): row 3 of (B-scan 0, column 1), under the IRF, and of (B-scan 2, column 0): 2 voxels, 2 A-scans
    All of it lies within 0.15 mm of the fovea (B-scan 1, column 2): in C0.
    """
    labels = np.zeros((4, 5, 3), np.uint8)
    labels[0:3, 1, 0] = 1
    labels[3, 1:5, 1] = 2
    labels[3, 1, 0] = labels[3, 0, 2] = 3
    return labels


def test_fluid_volumes_per_type_against_hand_computed_values():
    from custom_components.oct.etdrs import report_columns

    spacing, pixel_mm2 = (0.01, 0.02, 0.05), 0.02 * 0.05
    rows = _by_sector(fluid_volumes(_typed_label_map(), spacing, (1.0, 2.0), "OD", "file header", fluid_classes=TYPES))
    total = rows["total"]
    assert set(total) == set(report_columns(TYPES))
    assert list(report_columns(TYPES))[len(REPORT_COLUMNS):] == [
        f"{t}_{c}" for t in TYPES for c in ("voxels", "area_mm2", "volume_nl")
    ]
    assert [total[f"{t}_voxels"] for t in TYPES] == [3, 4, 2] and total["voxels"] == 9
    assert [total[f"{t}_volume_nl"] for t in TYPES] == pytest.approx([0.03, 0.04, 0.02])
    assert total["volume_nl"] == pytest.approx(0.09)  # the volumes add up over the types
    assert [total[f"{t}_area_mm2"] for t in TYPES] == pytest.approx([1 * pixel_mm2, 4 * pixel_mm2, 2 * pixel_mm2])
    assert total["area_mm2"] == pytest.approx(6 * pixel_mm2)  # 6 A-scans hold fluid: IRF and PED share one
    assert [rows["C0"][f"{t}_volume_nl"] for t in TYPES] == pytest.approx([0.03, 0.04, 0.02])
    for sector in ETDRS_SECTORS[1:]:
        assert [rows[sector][f"{t}_volume_nl"] for t in TYPES] == [0.0, 0.0, 0.0]
    # the totals are those of the binary report of the same fluid
    binary = _by_sector(fluid_volumes(_typed_label_map() > 0, spacing, (1.0, 2.0), "OD", "file header"))
    assert {k: binary["C0"][k] for k in REPORT_COLUMNS} == {k: rows["C0"][k] for k in REPORT_COLUMNS}
    assert "IRF_volume_nl" not in binary["C0"]


def test_fluid_volumes_per_type_without_spacing_or_cube():
    rows = fluid_volumes(_typed_label_map(), None, (1.0, 2.0), "OD", "unknown", fluid_classes=TYPES)
    assert [rows[0][f"{t}_voxels"] for t in TYPES] == [3, 4, 2]
    assert all(rows[0][f"{t}_volume_nl"] is None for t in TYPES)
    assert all(r[f"{t}_voxels"] is None for r in rows[1:] for t in TYPES)  # no grid without the spacing
    (radial,) = fluid_volumes(_typed_label_map(), (0.01, 0.02, None), None, None, "file header",
                              scan_pattern="radial", fluid_classes=TYPES)  # fmt: skip
    assert [radial[f"{t}_voxels"] for t in TYPES] == [3, 4, 2] and radial["IRF_volume_nl"] is None
    with pytest.raises(ValueError, match="fluid classes must be"):
        fluid_volumes(_typed_label_map(), None, None, None, "unknown", fluid_classes=("IRF", "SRF"))


def _typed_report(volumes, laterality="OD", date="2024-01-10", image="/d/a.nii.gz"):
    """Report rows whose per-type volumes (nL) are ``volumes[sector]`` = (IRF, SRF, PED); the totals their sum."""
    rows = _report({s: 10.0 * sum(v) for s, v in volumes.items()}, laterality, date, image)
    for row in rows:
        row.update({f"{t}_volume_nl": v for t, v in zip(TYPES, volumes[row["sector"]])})
        row.update({f"{t}_voxels": 10.0 * v for t, v in zip(TYPES, volumes[row["sector"]])})
    return rows


def test_change_table_per_fluid_type():
    from custom_components.oct.fluid_report import change_columns

    earlier = _typed_report({"total": (4.0, 2.0, 0.0), "C0": (1.0, 2.0, 0.0)})
    later = _typed_report({"total": (1.0, 3.0, 0.5), "C0": (0.0, 2.0, 0.5)}, date="2024-03-01", image="/d/b.nii.gz")
    rows = {r["sector"]: r for r in change_table(later, earlier)}
    assert list(rows["total"]) == list(change_columns(TYPES))
    total = rows["total"]
    assert (total["volume_nl_before"], total["volume_nl_after"], total["change_nl"]) == (6.0, 4.5, -1.5)
    assert (total["IRF_volume_nl_before"], total["IRF_volume_nl_after"]) == (4.0, 1.0)
    assert (total["IRF_change_nl"], total["IRF_change_percent"]) == (-3.0, -75.0)
    assert (total["SRF_change_nl"], total["SRF_change_percent"]) == (1.0, 50.0)
    assert (total["PED_change_nl"], total["PED_change_percent"]) == (0.5, None)  # no PED before: no percent
    assert (rows["C0"]["IRF_change_nl"], rows["C0"]["SRF_change_nl"]) == (-1.0, 0.0)
    # binary reports keep the binary columns
    assert list(change_table(_report({"total": 1.0}), _report({"total": 2.0}, image="/d/b.nii.gz"))[0]) == list(
        CHANGE_COLUMNS
    )


def test_change_table_refuses_a_typed_report_against_a_binary_one():
    typed = _typed_report({"total": (1.0, 2.0, 3.0)})
    binary = _report({"total": 10.0}, image="/d/b.nii.gz")
    message = r"report A \(/d/a.nii.gz\) has fluid types \(IRF, SRF, PED\) but report B \(/d/b.nii.gz\) one fluid class"
    with pytest.raises(ChangeTableError, match=message):
        change_table(typed, binary)
    with pytest.raises(ChangeTableError, match=r"report B \(/d/a.nii.gz\) has fluid types .* report A \(/d/b.nii.gz\)"):
        change_table(binary, typed)


def test_typed_report_csv_round_trip_png_and_change_script(tmp_path, capsys):
    from custom_components.oct.fluid_report import report_fluid_classes

    spacing, fovea = (0.01, 0.02, 0.05), (1.0, 2.0)
    labels = _typed_label_map()
    first = fluid_volumes(labels, spacing, fovea, "OD", "file header", fluid_classes=TYPES,
                          extra={"image": "/d/visit1.nii.gz", "scan_date": "2024-01-10"})  # fmt: skip
    write_report_csv(tmp_path / "a.csv", first)
    back = read_report_csv(tmp_path / "a.csv")
    assert report_fluid_classes(back) == TYPES and report_fluid_classes(_report({"total": 1.0})) == ("fluid",)
    assert back[0]["SRF_volume_nl"] == pytest.approx(0.04) and back[0]["SRF_voxels"] == 4.0

    k = int(fovea[0])
    thickness = {t: en_face_thickness(labels == i + 1) for i, t in enumerate(TYPES)}
    bscans = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    plot_fluid_report(tmp_path / "a.png", first, en_face_thickness(labels), bscans[:, :, k], labels[:, :, k], spacing,
                      fovea, k, type_thickness=thickness)  # fmt: skip
    png = Image.open(tmp_path / "a.png")
    # a taller page than the binary one (6.2 in at 110 dpi): a row of maps, one per type, below the total's
    assert png.format == "PNG" and png.size[1] > 1.5 * 6.2 * 110

    more = labels.copy()
    more[0, 4, 2] = 1  # one more IRF voxel at the second visit
    second = fluid_volumes(more, spacing, fovea, "OD", "file header", fluid_classes=TYPES,
                           extra={"image": "/d/visit2.nii.gz", "scan_date": "2024-02-10"})  # fmt: skip
    write_report_csv(tmp_path / "b.csv", second)
    script = _change_script()
    assert script.main([str(tmp_path / "b.csv"), str(tmp_path / "a.csv"), "--output", str(tmp_path / "c.csv")]) == 0
    printed = capsys.readouterr().out
    assert "intraretinal fluid (IRF) alone:" in printed and "pigment epithelial detachment (PED) alone:" in printed
    change = _read_change(tmp_path / "c.csv")
    assert float(change["total"]["IRF_change_nl"]) == pytest.approx(0.01)  # one voxel of 0.01 nL
    assert float(change["total"]["SRF_change_nl"]) == 0.0 and float(change["total"]["change_nl"]) == pytest.approx(0.01)

    binary = fluid_volumes(labels > 0, spacing, fovea, "OD", "file header",
                           extra={"image": "/d/visit3.nii.gz", "scan_date": "2024-03-10"})  # fmt: skip
    write_report_csv(tmp_path / "binary.csv", binary)
    assert script.main([str(tmp_path / "a.csv"), str(tmp_path / "binary.csv")]) == 1
    error = capsys.readouterr().err
    assert "/d/visit1.nii.gz" in error and "/d/visit3.nii.gz" in error and "one fluid class" in error
