# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Real Heidelberg Spectralis VOL exports read whole, whatever their scan pattern (issue 28).

The fixtures (``tests/data/heidelberg_vol``, MIT, see its README) are a line scan and a circle scan that eyepy's
``EyeVolume`` refuses. Expected values are the header's own bytes, read here with ``struct`` at the offsets of the
VOL layout (the 2048-byte file header, then the SLO image, then per B-scan its header and float32 pixels), not
through eyepy. A radial scan (pattern 5, several B-scans) is built with ``tests/oct_files.py`` and its header's
pattern code set by hand. The fluid report's answer to a scan that is not a cube is tested on the real circle scan
through the bundle's own inference preprocessing, and on hand-made items.
"""

from __future__ import annotations

import csv
import datetime
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor, decollate_batch

from oct_files import write_heidelberg_vol

from custom_components.core import SkippingDataset, collate_skipping_failures
from custom_components.oct.etdrs import ScanPattern, fluid_volumes, no_grid_reason
from custom_components.oct.handlers import FluidPredictionWriter
from custom_components.oct.volumes import LoadOCTVolumed, OCTVolume, read_oct_metadata, read_oct_volume

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "heidelberg_vol"
LINE = FIXTURES / "Willis_B_716_0.vol"
CIRCLE = FIXTURES / "Willis_B_716_2.vol"
BUNDLE_CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "oct_fluid_seg" / "configs"

#: offsets in the 2048-byte VOL file header (Heyex's VOL export layout, as eyepy's ``vol_format`` and the Java reader
#: of spectralis-raw-data both read it): version text, then size_x, n_bscans, size_y (uint32), scale_x, distance,
#: scale_y (float64), ..., scan_position (4 chars) at 84, exam_time (uint64, 100 ns since 1601) at 88, scan_pattern
#: (int32) at 96, bscan_hdr_size (uint32) at 100
HEADER = 2048


def _header(path: Path) -> dict:
    raw = path.read_bytes()[:HEADER]
    size_x, n_bscans, size_y, scale_x, distance, scale_y = struct.unpack_from("<3I3d", raw, 12)
    size_x_slo, size_y_slo = struct.unpack_from("<2I", raw, 48)
    (ticks,) = struct.unpack_from("<Q", raw, 88)
    (pattern,) = struct.unpack_from("<i", raw, 96)
    (bscan_header,) = struct.unpack_from("<I", raw, 100)
    return {
        "version": raw[:12].rstrip(b"\0").decode(), "size_x": size_x, "n_bscans": n_bscans, "size_y": size_y,
        "scale_x": scale_x, "distance": distance, "scale_y": scale_y, "slo": (size_y_slo, size_x_slo),
        "eye": raw[84:88].rstrip(b"\0").decode(), "exam": datetime.datetime(1601, 1, 1) + datetime.timedelta(
            microseconds=ticks // 10), "pattern": pattern, "bscan_header": bscan_header,
    }  # fmt: skip


def _first_bscan_reflectivity(path: Path) -> np.ndarray:
    """B-scan 0's float32 reflectivity straight from the file: after the header, the SLO image (one byte per pixel)
    and B-scan 0's own header."""
    h = _header(path)
    offset = HEADER + h["slo"][0] * h["slo"][1] + h["bscan_header"]
    return np.frombuffer(path.read_bytes(), "<f4", count=h["size_y"] * h["size_x"], offset=offset).reshape(
        h["size_y"], h["size_x"]
    )


# ---------------------------------------------------------------- the real files, read whole


def test_the_fixtures_are_the_documented_files():
    # the README's table, byte for byte: a line scan and a circle scan of one Spectralis session
    assert [(p.name, p.stat().st_size) for p in (LINE, CIRCLE)] == [(LINE.name, 2171012), (CIRCLE.name, 2171012)]
    line, circle = _header(LINE), _header(CIRCLE)
    assert (line["version"], line["pattern"], circle["pattern"]) == ("HSF-OCT-103", 1, 2)
    assert (line["exam"].date(), line["eye"]) == (datetime.date(2017, 1, 11), "OD")
    assert "MIT" in (FIXTURES / "README.md").read_text() and "Permission is hereby granted" in (
        FIXTURES / "LICENSE"
    ).read_text()


def test_eyepy_refuses_the_circle_scan_on_its_own():
    """What the fallback is for: if a later eyepy reads circle scans, this fails and the fallback can go."""
    import eyepy

    with pytest.raises(ValueError, match="scan pattern 2"):
        eyepy.import_heyex_vol(CIRCLE)
    assert eyepy.import_heyex_vol(LINE).data.shape == (1, 496, 768)


@pytest.mark.parametrize(
    ("path", "pattern"),
    [(LINE, ScanPattern.LINE), (CIRCLE, ScanPattern.CIRCLE)],
)
def test_real_vol_files_are_read_with_header_spacing_laterality_date_and_scan_pattern(path, pattern):
    h = _header(path)
    volume = read_oct_volume(path)
    assert isinstance(volume, OCTVolume) and volume.format == "heidelberg_vol"
    assert volume.data.shape == (h["size_y"], h["size_x"], h["n_bscans"]) == (496, 768, 1)
    assert volume.data.dtype == np.uint8
    # eyepy's display mapping uses the whole 8-bit range on a real scan, and the retina is brighter than the rest
    assert (volume.data.min(), volume.data.max()) == (0, 255) and 20 < volume.data.mean() < 120
    # spacing: the header's scale_y and scale_x; no distance between B-scans (one B-scan, the header says 0)
    assert volume.spacing_mm == (h["scale_y"], h["scale_x"], None) and volume.spacing_source == "file header"
    assert volume.spacing_mm[0] == pytest.approx(0.0038716697599738836)
    assert (volume.laterality, volume.scan_date) == (h["eye"], h["exam"].date().isoformat()) == ("OD", "2017-01-11")
    assert volume.scan_pattern == pattern and volume.public_metadata()["scan_pattern"] == pattern
    assert volume.vendor == "Heidelberg Engineering" and volume.first_bscan is None and volume.raster is None
    assert "01234" not in repr(volume) and "01234" not in json.dumps(volume.public_metadata())  # the patient ID


def test_circle_scan_pixels_are_the_files_reflectivity_through_eyepys_own_vol_mapping():
    from eyepy.core.utils import from_vol_intensity

    raw = _first_bscan_reflectivity(CIRCLE)
    assert raw.dtype == np.float32 and 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0  # linear reflectivity
    np.testing.assert_array_equal(read_oct_volume(CIRCLE).data[..., 0], from_vol_intensity(raw.copy()))


def test_the_fallback_gives_exactly_what_eyepys_eyevolume_gives(monkeypatch):
    """The line scan is read by ``EyeVolume``; refused as a circle would be, the fallback must give the same volume."""
    from eyepy.io.he import vol_reader

    through_eyevolume = read_oct_volume(LINE)

    def refuse(self):
        raise ValueError("The EyeVolume object does not support scan pattern 1 (forced by the test).")

    monkeypatch.setattr(vol_reader.HeVolReader, "volume", property(refuse))
    fallback = read_oct_volume(LINE)
    np.testing.assert_array_equal(fallback.data, through_eyevolume.data)
    assert fallback.data.dtype == through_eyevolume.data.dtype
    assert repr(fallback) == repr(through_eyevolume)  # spacing, laterality, date, direction, pattern, path

    def broken(self):
        raise ValueError("something else")

    monkeypatch.setattr(vol_reader.HeVolReader, "volume", property(broken))
    with pytest.raises(ValueError, match="Willis_B_716_0.vol: cannot read it as heidelberg vol.*something else"):
        read_oct_volume(LINE)  # only a refused scan pattern falls back: a broken file is reported as broken


def test_a_radial_scan_of_several_bscans_is_read_and_gets_no_inter_bscan_spacing(tmp_path):
    import eyepy

    rng = np.random.default_rng(3)
    bscans = rng.integers(0, 256, (3, 64, 48)).astype(np.uint8)
    radial = [(0.5, 3.0, 5.5, 3.0), (1.2, 1.2, 4.8, 4.8), (3.0, 0.5, 3.0, 5.5)]  # through one centre
    path = write_heidelberg_vol(tmp_path / "radial.vol", bscans, positions=radial)
    cube = read_oct_volume(path)  # written as a volume scan (pattern 3)
    raw = bytearray(path.read_bytes())
    assert struct.unpack_from("<i", raw, 96) == (3,)
    struct.pack_into("<i", raw, 96, 5)  # Heyex's radial scan (star pattern)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="scan pattern 5"):
        eyepy.import_heyex_vol(path)
    volume = read_oct_volume(path)
    np.testing.assert_array_equal(volume.data, np.moveaxis(bscans, 0, -1))  # B-scans in the file's order
    assert (volume.scan_pattern, cube.scan_pattern) == ("radial", "cube")
    assert volume.spacing_mm == pytest.approx((0.0039, 0.0113, None)) and cube.spacing_mm[2] == pytest.approx(0.12)
    assert (volume.raster, volume.laterality, volume.scan_date) == ("not horizontal", "OS", "2021-03-04")
    for code, expected in ((0, "unknown"), (4, "cube"), (1, "line"), (2, "circle"), (7, "unknown")):
        struct.pack_into("<i", raw, 96, code)
        path.write_bytes(bytes(raw))
        assert read_oct_volume(path).scan_pattern == expected


# ---------------------------------------------------------------- the bundle's inference preprocessing


def _inference_preprocessing():
    """The ``preprocessing`` of the OCT bundle's inference.json (LoadOCTVolumed, per-B-scan scaling, EnsureTyped);
    the trained recipe's aspect, normally read from the checkpoint, given here."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE_CONFIGS / "inference.json"))
    parser.update({"training_aspect": 1.0})
    return parser.get_parsed_content("preprocessing")


def test_the_inference_chain_loads_each_real_file_as_one_bscan_with_its_metadata():
    preprocessing = _inference_preprocessing()
    assert type(preprocessing.transforms[0]) is LoadOCTVolumed
    dataset = SkippingDataset([{"image": str(p)} for p in (LINE, CIRCLE)], preprocessing)
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_skipping_failures)
    for path, batch in zip((LINE, CIRCLE), loader):
        assert not batch["failed_inputs"]
        item = decollate_batch(batch, detach=True)[0]
        image = item["image"]
        # one B-scan is a 2D image, as the bundle's PNG path gives it; scaled to [0, 1] per B-scan
        assert isinstance(image, MetaTensor) and tuple(image.shape) == (1, 496, 768) and image.dtype == torch.float32
        assert float(image.min()) == 0.0 and float(image.max()) == 1.0
        h = _header(path)
        np.testing.assert_allclose(image.affine.numpy(), np.diag([h["scale_y"], h["scale_x"], 1.0]))
        meta = read_oct_metadata(item["oct_meta"])
        expected = {1: "line", 2: "circle"}[h["pattern"]]
        assert (meta["scan_pattern"], meta["laterality"], meta["format"]) == (expected, "OD", "heidelberg_vol")


def test_the_fluid_report_of_the_real_circle_scan_names_it_and_lays_no_grid(tmp_path):
    item = LoadOCTVolumed("image")({"image": str(CIRCLE)})
    pred = torch.zeros_like(item["image"])
    pred[0, 200:210, 100:140] = 1  # 10 rows x 40 A-scans of fluid
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True)
    writer.started()
    writer.write_item({**item, "pred": pred})
    writer.completed()
    with open(writer.report_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["sector"] == "total" and rows[0]["voxels"] == "400"
    h = _header(CIRCLE)
    assert float(rows[0]["area_mm2"]) == pytest.approx(400 * h["scale_y"] * h["scale_x"], abs=1e-6)
    assert rows[0]["note"].startswith("circle scan: the ETDRS grid needs a macular cube; single B-scan: no volume")
    assert rows[0]["laterality"] == "OD" and rows[0]["provenance"] == "file header"


# ---------------------------------------------------------------- the report of a scan that is not a cube


def _fluid():
    mask = np.zeros((6, 40, 10), bool)
    mask[2:4, 18:22, 4:6] = True  # 16 voxels at the centre
    return mask


SPACING = (0.004, 0.01, 0.05)


@pytest.mark.parametrize("pattern", ["line", "circle", "radial"])
def test_a_scan_that_is_not_a_cube_gets_its_total_alone_and_says_why(pattern):
    rows = fluid_volumes(_fluid(), SPACING, (4.5, 19.5), "OD", "file header", first_bscan="inferior",
                         scan_pattern=pattern)  # fmt: skip
    assert len(rows) == 1 and rows[0]["sector"] == "total" and rows[0]["voxels"] == 16
    # no en-face footprint and no volume, whatever the spacing: the B-scans are not parallel
    assert rows[0]["area_mm2"] is None and rows[0]["volume_nl"] is None
    assert rows[0]["note"].startswith(f"{pattern} scan: the ETDRS grid needs a macular cube; no volume")
    assert no_grid_reason(pattern) == f"{pattern} scan: the ETDRS grid needs a macular cube"


def test_a_cube_or_an_unknown_pattern_keeps_the_report_it_had():
    before = fluid_volumes(_fluid(), SPACING, (4.5, 19.5), "OD", "file header", first_bscan="inferior")
    assert len(before) == 10 and before[1]["volume_nl"] is not None
    for pattern in ("cube", "unknown", None):
        rows = fluid_volumes(_fluid(), SPACING, (4.5, 19.5), "OD", "file header", first_bscan="inferior",
                             scan_pattern=pattern)  # fmt: skip
        assert rows == before
        assert no_grid_reason(pattern) is None
    with pytest.raises(ValueError, match="scan_pattern must be one of"):
        fluid_volumes(_fluid(), SPACING, (4.5, 19.5), "OD", "file header", scan_pattern="star")


def _volume_item(meta):
    image = MetaTensor(torch.rand(1, 6, 40, 10), meta={"filename_or_obj": meta["source_path"]})
    pred = torch.as_tensor(_fluid()[None].astype(np.float32))
    return {"image": image, "pred": pred, "oct_meta": json.dumps(meta)}


RADIAL_META = {
    "spacing_mm": [0.004, 0.01, None], "spacing_source": "file header", "laterality": "OD", "scan_date": "2024-05-02",
    "vendor": "Heidelberg Engineering", "format": "heidelberg_vol", "first_bscan": None, "raster": "not horizontal",
    "scan_pattern": "radial", "source_path": "/v/radial.vol",
}  # fmt: skip


def test_the_writer_gives_a_radial_volume_one_row_and_no_volume_even_with_a_user_spacing(tmp_path):
    # a run-wide spacing_mm for the cubes of a mixed folder: the radial scan keeps no inter-B-scan spacing
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True, spacing_mm=[0.005, 0.02, 0.1])
    writer.started()
    writer.write_item(_volume_item(RADIAL_META))
    writer.write_item(_volume_item({**RADIAL_META, "scan_pattern": "cube", "raster": None, "source_path": "/v/c.vol"}))
    writer.completed()
    with open(writer.report_path, newline="") as f:
        rows = list(csv.DictReader(f))
    radial = [r for r in rows if r["image"] == "/v/radial.vol"]
    assert len(radial) == 1 and radial[0]["voxels"] == "16" and radial[0]["volume_nl"] == ""
    assert radial[0]["note"].startswith("radial scan: the ETDRS grid needs a macular cube")
    assert radial[0]["spacing_mm"] == "0.005x0.02x?"
    assert len(rows) - len(radial) == 10  # the cube: total and nine sectors, as before
    assert (tmp_path / "reports" / "radial_fluid_report.png").is_file()
    with open(writer.csv_path, newline="") as f:
        measured = list(csv.reader(f))
    per_bscan = [r for r in measured[1:] if r[0] == "/v/radial.vol" and r[1] not in ("all",)]
    assert [r[2] for r in per_bscan] == ["0", "0", "0", "0", "8", "8", "0", "0", "0", "0"]
    assert float(per_bscan[4][3]) == pytest.approx(8 * 0.005 * 0.02)  # cross-sectional mm^2 per B-scan
    whole = next(r for r in measured[1:] if r[0] == "/v/radial.vol" and r[1] == "all")
    assert whole[2] == "16" and whole[4] == ""  # no mm^3
