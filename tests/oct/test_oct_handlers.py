"""Tests of custom_components.oct.handlers: the prediction writer (driven by hand: started / write_item or __call__ /
completed, or by an ignite engine) and the metrics report (on an ignite engine with the bundle's own metrics).
The overlays themselves are tested in test_visualize.py."""

from __future__ import annotations

import csv
import json
import logging
import os
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from custom_components.oct.handlers import (
    MEASUREMENT_COLUMNS,
    PER_SCAN_COLUMNS,
    FluidPredictionWriter,
    SegmentationReport,
)

BUNDLE_CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "bundles", "oct_fluid_seg", "configs")


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ---------------------------------------------------------------- FluidPredictionWriter


def _item_2d(name="/data/scan_01.png"):
    image = MetaTensor(torch.rand(1, 8, 10), meta={"filename_or_obj": name})
    pred = torch.zeros(1, 8, 10)
    pred[0, 2:4, 3:6] = 1  # 6 pixels
    label = torch.zeros(1, 8, 10)
    label[0, 2:5, 3:6] = 1
    return {"image": image, "pred": pred, "label": label}


def test_writer_2d_item(tmp_path):
    out = str(tmp_path / "out")
    writer = FluidPredictionWriter(out, pixel_spacing_mm=(0.01, 0.02))
    writer.started()
    assert os.path.isfile(writer.csv_path + ".partial") and not os.path.exists(writer.csv_path)
    writer.write_item(_item_2d())
    assert not os.path.exists(writer.csv_path)  # only renamed on completion
    writer.completed()
    assert os.path.isfile(writer.csv_path) and not os.path.exists(writer.csv_path + ".partial")

    mask = np.asarray(Image.open(os.path.join(out, "masks", "scan_01_fluid.png")))
    assert mask.shape == (8, 10) and set(np.unique(mask)) == {0, 255}
    assert (mask == 255).sum() == 6 and np.all(mask[2:4, 3:6] == 255)
    overlay = np.asarray(Image.open(os.path.join(out, "overlays", "scan_01_overlay.png")))
    assert overlay.shape == (8, 10, 3)
    # bottom edge of the truth, not predicted: the green outline; predicted fluid: orange; elsewhere grey
    r, g, b = overlay[4, 4].astype(int)
    assert g == 255 and r < 30 and b < 30
    r, g, b = overlay[2, 4].astype(int)  # predicted, on the truth's top edge: outline drawn over the fill
    assert g == 255 and r < 30 and b < 30
    r, g, b = overlay[3, 4].astype(int)  # predicted, inside the truth
    assert r > g > b
    assert np.all(overlay[6:, :, 0] == overlay[6:, :, 1]) and np.all(overlay[6:, :, 1] == overlay[6:, :, 2])

    rows = _read_csv(writer.csv_path)
    assert tuple(rows[0]) == MEASUREMENT_COLUMNS
    assert rows[1:] == [["/data/scan_01.png", "", "6", str(round(6 * 0.01 * 0.02, 6)), "", "0.01x0.02", "pixel_spacing_mm"]]
    assert float(rows[1][3]) == pytest.approx(0.0012)


def test_writer_2d_unknown_spacing_and_scalar_spacing(tmp_path):
    writer = FluidPredictionWriter(str(tmp_path), save_masks=False, save_overlays=False)
    writer.started()
    writer.write_item(_item_2d("/d/a.jpeg"))
    writer.completed()
    assert _read_csv(writer.csv_path)[1] == ["/d/a.jpeg", "", "6", "", "", "", "unknown"]
    assert not os.path.exists(tmp_path / "masks") and not os.path.exists(tmp_path / "overlays")
    assert FluidPredictionWriter(str(tmp_path), pixel_spacing_mm=0.5).pixel_spacing_mm == (0.5, 0.5)


@pytest.mark.parametrize("spacing", [(0.1, 0.0), (0.1, 0.2, 0.3), -1.0])
def test_writer_bad_spacing(tmp_path, spacing):
    with pytest.raises(ValueError, match="pixel_spacing_mm must be one or two positive numbers"):
        FluidPredictionWriter(str(tmp_path), pixel_spacing_mm=spacing)


def test_writer_3d_nifti_item(tmp_path):
    affine = np.array([[0.5, 0, 0, 10.0], [0, 0.25, 0, -3.0], [0, 0, 2.0, 7.0], [0, 0, 0, 1]])
    image = MetaTensor(torch.rand(1, 6, 8, 3), affine=torch.as_tensor(affine), meta={"filename_or_obj": "/v/eye.nii.gz"})
    pred = torch.zeros(1, 6, 8, 3)
    pred[0, 1:3, 2:5, 0] = 1  # 6 voxels in slice 0
    pred[0, 0:4, 0:4, 2] = 1  # 16 voxels in slice 2
    out = str(tmp_path)
    writer = FluidPredictionWriter(out, pixel_spacing_mm=(9.0, 9.0))  # ignored: the header wins for NIfTI
    writer.started()
    writer.write_item({"image": image, "pred": pred})
    writer.completed()

    saved = nib.load(os.path.join(out, "masks", "eye_fluid.nii.gz"))
    data = np.asarray(saved.dataobj)
    assert data.shape == (6, 8, 3)
    assert np.array_equal(data, pred[0].numpy().astype(np.uint8))
    assert np.allclose(saved.affine, affine)
    # overlay of the slice with the most fluid (2)
    assert os.path.isfile(os.path.join(out, "overlays", "eye_slice002_overlay.png"))

    rows = _read_csv(writer.csv_path)[1:]
    area = 0.5 * 0.25
    assert rows == [
        ["/v/eye.nii.gz", "0", "6", str(round(6 * area, 6)), "", "0.5x0.25x2", "nifti_header"],
        ["/v/eye.nii.gz", "1", "0", "0.0", "", "0.5x0.25x2", "nifti_header"],
        ["/v/eye.nii.gz", "2", "16", str(round(16 * area, 6)), "", "0.5x0.25x2", "nifti_header"],
        ["/v/eye.nii.gz", "all", "22", "", str(round(22 * 0.5 * 0.25 * 2.0, 6)), "0.5x0.25x2", "nifti_header"],
    ]
    assert float(rows[-1][4]) == pytest.approx(5.5)


def test_writer_close_leaves_partial(tmp_path):
    writer = FluidPredictionWriter(str(tmp_path), save_masks=False, save_overlays=False)
    writer.started()
    writer.write_item(_item_2d())
    writer.close()
    assert os.path.isfile(writer.csv_path + ".partial") and not os.path.exists(writer.csv_path)
    assert len(_read_csv(writer.csv_path + ".partial")) == 2
    writer.completed()  # nothing open: no rename
    assert not os.path.exists(writer.csv_path)


def test_writer_on_an_engine_renames_on_completion_and_keeps_partial_on_error(tmp_path):
    from ignite.engine import Engine

    items = [[_item_2d("/d/a.png")], [_item_2d("/d/b.png")], [{"pred": torch.zeros(1, 8, 10)}]]  # no image: error
    engine = Engine(lambda e, batch: batch)
    writer = FluidPredictionWriter(str(tmp_path), save_masks=False, save_overlays=False)
    writer.attach(engine)
    engine.run(items[:2], max_epochs=1)
    assert [r[0] for r in _read_csv(writer.csv_path)[1:]] == ["/d/a.png", "/d/b.png"]
    os.remove(writer.csv_path)
    with pytest.raises(KeyError, match="image"):  # the error reaches the caller, it is not swallowed
        engine.run(items, max_epochs=1)
    assert not os.path.exists(writer.csv_path)
    assert [r[0] for r in _read_csv(writer.csv_path + ".partial")[1:]] == ["/d/a.png", "/d/b.png"]


def test_writer_call_decollates_batch(tmp_path):
    a, b = _item_2d("/d/a.png"), _item_2d("/d/b.png")
    writer = FluidPredictionWriter(str(tmp_path), save_overlays=False)
    writer.started()
    writer(SimpleNamespace(state=SimpleNamespace(output=[a, b])))
    writer.completed()
    assert sorted(os.listdir(tmp_path / "masks")) == ["a_fluid.png", "b_fluid.png"]
    assert [r[0] for r in _read_csv(writer.csv_path)[1:]] == ["/d/a.png", "/d/b.png"]


def test_writer_same_file_names_do_not_overwrite(tmp_path, caplog):
    writer = FluidPredictionWriter(str(tmp_path), save_overlays=False)
    writer.started()
    with caplog.at_level(logging.WARNING):
        for name in ("/p1/b001.png", "/p2/b001.png", "/p1/b001.png", "/p3/b001.tif"):
            writer.write_item(_item_2d(name))
    writer.completed()
    # the same source again reuses its name; other sources of the same stem get _2, _3
    assert sorted(os.listdir(tmp_path / "masks")) == ["b001_2_fluid.png", "b001_3_fluid.png", "b001_fluid.png"]
    assert "/p2/b001.png shares its name with /p1/b001.png" in caplog.text
    writer.started()  # a new run starts naming afresh
    writer.write_item(_item_2d("/p2/b001.png"))
    assert writer._stems == {"b001": "/p2/b001.png"}


def test_writer_leaves_no_temporary_files(tmp_path, monkeypatch):
    writer = FluidPredictionWriter(str(tmp_path), save_measurements=False)
    writer.started()
    writer.write_item(_item_2d("/d/a.png"))
    assert sorted(os.listdir(tmp_path / "masks")) == ["a_fluid.png"]
    assert sorted(os.listdir(tmp_path / "overlays")) == ["a_overlay.png"]

    def broken_save(self, fp, *args, **kwargs):  # a crash half-way through writing the file
        with open(fp, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        writer.write_item(_item_2d("/d/b.png"))
    assert sorted(os.listdir(tmp_path / "masks")) == ["a_fluid.png"]  # no half-written b_fluid.png, no temp file


def test_writer_volume_stored_bscans_first_is_written_back_in_its_own_order(tmp_path):
    # the file stores (B-scans, rows, columns) with 2 mm between B-scans and 0.5 x 0.25 mm pixels
    affine = np.array([[2.0, 0, 0, 5.0], [0, 0.5, 0, -1.0], [0, 0, 0.25, 3.0], [0, 0, 0, 1]])
    source = tmp_path / "x.nii"
    header = nib.Nifti1Image(np.zeros((3, 6, 8), np.int16), affine)
    header.header.set_xyzt_units("mm", "sec")
    header.header["descrip"] = b"vendor export"
    nib.save(header, source)
    # what BScanLayoutd makes of it: (1, rows, columns, B-scans), the file's affine, the permutation recorded
    image = MetaTensor(
        torch.rand(1, 6, 8, 3), affine=torch.as_tensor(affine), meta={"filename_or_obj": str(source), "bscan_axes": [1, 2, 0]}
    )
    pred = torch.zeros(1, 6, 8, 3)
    pred[0, 0:2, 0:5, 1] = 1  # 10 pixels in B-scan 1
    writer = FluidPredictionWriter(str(tmp_path / "out"))
    writer.started()
    writer.write_item({"image": image, "pred": pred})
    writer.completed()
    rows = _read_csv(writer.csv_path)[1:]
    assert [(r[1], r[2], r[3]) for r in rows[:3]] == [("0", "0", "0.0"), ("1", "10", "1.25"), ("2", "0", "0.0")]
    assert rows[0][5] == "0.5x0.25x2"  # rows, columns, B-scans
    assert rows[3][1:3] == ["all", "10"] and float(rows[3][4]) == pytest.approx(10 * 2.0 * 0.5 * 0.25)
    overlay = np.asarray(Image.open(tmp_path / "out" / "overlays" / "x_slice001_overlay.png"))
    assert overlay.shape == (6, 8, 3)
    saved = nib.load(tmp_path / "out" / "masks" / "x_fluid.nii.gz")
    assert saved.shape == (3, 6, 8)  # the input's own axis order
    assert np.array_equal(np.asarray(saved.dataobj), pred[0].permute(2, 0, 1).numpy().astype(np.uint8))
    assert np.allclose(saved.affine, affine)
    assert saved.header.get_xyzt_units() == ("mm", "sec") and saved.header["descrip"] == b"vendor export"
    assert saved.get_data_dtype() == np.uint8


def test_writer_2d_nifti_bscan_gets_a_nifti_mask_in_its_space(tmp_path):
    affine = np.diag([0.0039, 0.0117, 1.0, 1.0])
    source = tmp_path / "bscan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 8), np.float32), affine), source)
    image = MetaTensor(torch.rand(1, 6, 8), affine=torch.as_tensor(affine), meta={"filename_or_obj": str(source)})
    pred = torch.zeros(1, 6, 8)
    pred[0, 2:4, 1:3] = 1
    writer = FluidPredictionWriter(str(tmp_path / "out"))
    writer.started()
    writer.write_item({"image": image, "pred": pred})
    writer.completed()
    saved = nib.load(tmp_path / "out" / "masks" / "bscan_fluid.nii.gz")
    assert saved.shape == (6, 8) and np.allclose(saved.affine, affine)
    assert np.array_equal(np.asarray(saved.dataobj), pred[0].numpy().astype(np.uint8))
    assert not (tmp_path / "out" / "masks" / "bscan_fluid.png").exists()


# ---------------------------------------------------------------- FluidPredictionWriter: the fluid report


def _volume_item(name="/v/oct.e2e", meta=None, shape=(6, 40, 10)):
    """A (1, rows, columns, B-scans) volume whose fluid is 2 rows deep on B-scans 4-5, columns 18-21 (16 voxels)."""
    image = MetaTensor(torch.rand(1, *shape), meta={"filename_or_obj": name})
    pred = torch.zeros(1, *shape)
    pred[0, 2:4, 18:22, 4:6] = 1
    item = {"image": image, "pred": pred}
    if meta is not None:
        item["oct_meta"] = meta
    return item


#: what the OCT reader's ``public_metadata()`` gives for a scan with everything known
READER_META = {
    "spacing_mm": [0.004, 0.01, 0.05], "spacing_source": "file header", "laterality": "OS", "scan_date": "2024-05-02",
    "vendor": "test", "format": "heidelberg_e2e", "first_bscan": None, "raster": None, "source_path": "/v/oct.e2e",
}  # fmt: skip


def _report_rows(writer):
    with open(writer.report_path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_uses_the_readers_metadata_and_writes_csv_png_and_overlays(tmp_path):
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True, overlay_bscans=2)
    writer.started()
    writer.write_item(_volume_item(meta=json.dumps(READER_META)))  # JSON text, as it survives a DataLoader
    writer.completed()
    rows = _report_rows(writer)
    # the file did not say which B-scan is inferior: nothing assumed, the vertical quadrants named by B-scan end
    assert [r["sector"] for r in rows] == ["total", "C0", "E1", "N1", "F1", "T1", "E2", "N2", "F2", "T2"]
    total = rows[0]
    assert total["image"] == "/v/oct.e2e" and total["laterality"] == "OS" and total["scan_date"] == "2024-05-02"
    assert total["voxels"] == "16" and float(total["volume_nl"]) == pytest.approx(16 * 0.004 * 0.01 * 0.05 * 1000)
    assert (total["provenance"], total["fovea_source"], total["fovea_bscan"]) == ("file header", "volume centre", "4.5")
    assert total["first_bscan"] == "" and "B-scan direction unknown" in rows[2]["note"]
    # all the fluid lies within 0.05 mm of the fovea (columns 18-21 at 0.01 mm, B-scans 4-5 at 0.05 mm): C0
    assert float(rows[1]["volume_nl"]) == pytest.approx(float(total["volume_nl"]))
    assert (tmp_path / "reports" / "oct_fluid_report.png").is_file()
    assert len(list(csv.DictReader(open(tmp_path / "reports" / "oct_fluid_report.csv")))) == 10
    # overlays: the fovea's B-scan (round(4.5) = 4) and the two with the most fluid (4 and 5)
    assert sorted(os.listdir(tmp_path / "overlays")) == ["oct_slice004_overlay.png", "oct_slice005_overlay.png"]
    # a volume that is not NIfTI gets a NIfTI mask with the reader's spacing as voxel size
    mask = nib.load(tmp_path / "masks" / "oct_fluid.nii.gz")
    assert mask.shape == (6, 40, 10) and mask.header.get_zooms() == pytest.approx((0.004, 0.01, 0.05))
    measured = _read_csv(writer.csv_path)[-1]
    assert measured[1:3] == ["all", "16"] and measured[-1] == "file_header"


def test_report_user_overrides_win_and_no_spacing_means_voxels_only(tmp_path):
    writer = FluidPredictionWriter(
        str(tmp_path), fluid_report=True, spacing_mm=[0.005, 0.02, 0.1], fovea=[5, 20], laterality="od"
    )
    writer.started()
    writer.write_item(_volume_item(meta={**READER_META, "first_bscan": "inferior"}))  # a plain dict works too
    writer.write_item(_volume_item(name="/v/bare.e2e"))  # no metadata at all
    writer.completed()
    rows = _report_rows(writer)
    first = [r for r in rows if r["image"] == "/v/oct.e2e"]
    assert {(r["provenance"], r["laterality"], r["fovea_source"]) for r in first} == {("user override", "OD", "user")}
    assert first[0]["note"] == "" and first[2]["sector"] == "S1"  # the reader's metadata says where B-scan 0 is
    assert float(first[0]["volume_nl"]) == pytest.approx(16 * 0.005 * 0.02 * 0.1 * 1000)

    plain = FluidPredictionWriter(str(tmp_path / "plain"), fluid_report=True)
    plain.started()
    plain.write_item(_volume_item(name="/v/bare.e2e"))
    plain.completed()
    bare = _report_rows(plain)
    assert bare[0]["voxels"] == "16" and bare[0]["volume_nl"] == "" and bare[0]["area_mm2"] == ""
    assert {r["provenance"] for r in bare} == {"unknown"} and bare[0]["fovea_source"] == "volume centre"
    assert bare[0]["fovea_bscan"] == "4.5" and bare[0]["fovea_column"] == "19.5"
    assert _read_csv(plain.csv_path)[-1][-1] == "unknown"
    saved = nib.load(tmp_path / "plain" / "masks" / "bare_fluid.nii.gz")
    assert int(saved.header["sform_code"]) == int(saved.header["qform_code"]) == 0  # no spacing claimed


def test_report_nifti_without_spatial_header_is_unknown(tmp_path):
    source = tmp_path / "bare.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 40, 10), np.float32), None), source)
    spaced = tmp_path / "spaced.nii"
    nifti = nib.Nifti1Image(np.zeros((6, 40, 10), np.float32), np.diag([4.0, 10.0, 50.0, 1.0]))
    nifti.header.set_xyzt_units("micron")
    nib.save(nifti, spaced)
    writer = FluidPredictionWriter(str(tmp_path / "out"), fluid_report=True)
    writer.started()
    writer.write_item(_volume_item(name=str(source)))
    writer.write_item(_volume_item(name=str(spaced)))
    writer.completed()
    rows = _report_rows(writer)
    bare = [r for r in rows if r["image"] == str(source)]
    assert {r["provenance"] for r in bare} == {"unknown"} and bare[0]["volume_nl"] == ""
    micron = [r for r in rows if r["image"] == str(spaced)][0]
    assert micron["spacing_mm"] == "0.004x0.01x0.05" and micron["provenance"] == "file header"  # microns -> mm
    assert float(micron["volume_nl"]) == pytest.approx(16 * 0.004 * 0.01 * 0.05 * 1000)
    measured = {r[0]: r for r in _read_csv(writer.csv_path)[1:] if r[1] == "all"}
    assert measured[str(source)][4] == "" and measured[str(source)][6] == "unknown"
    assert measured[str(spaced)][6] == "nifti_header"


def test_report_row_of_a_single_bscan_has_no_grid(tmp_path):
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True, pixel_spacing_mm=(0.01, 0.02))
    writer.started()
    writer.write_item(_item_2d("/d/a.png"))
    writer.completed()
    (row,) = _report_rows(writer)
    assert (row["sector"], row["voxels"], row["provenance"]) == ("total", "6", "user override")
    assert float(row["area_mm2"]) == pytest.approx(6 * 0.01 * 0.02) and row["volume_nl"] == ""
    assert "no ETDRS grid" in row["note"] and not (tmp_path / "reports").exists()


def test_report_metadata_reaches_the_writer_through_an_engine_batch(tmp_path):
    """On an evaluator the reader's metadata stays in ``engine.state.batch``; the writer pairs it with the outputs."""
    from ignite.engine import Engine
    from monai.data import list_data_collate

    item = _volume_item(meta=json.dumps(READER_META))
    batch = list_data_collate([{"image": item["image"], "oct_meta": item["oct_meta"]}])
    engine = Engine(lambda e, b: {"image": b["image"], "pred": item["pred"][None]})
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True, save_overlays=False)
    writer.attach(engine)
    engine.run([batch], max_epochs=1)
    assert _report_rows(writer)[0]["laterality"] == "OS" and os.path.isfile(writer.report_path)
    assert not os.path.exists(writer.report_path + ".partial")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spacing_mm": [0.1, 0.2]}, "spacing_mm must be three positive numbers"),
        ({"fovea": [1, 2, 3]}, r"fovea must be \(bscan, column\)"),
        ({"laterality": "left"}, "laterality must be 'OD', 'OS' or None"),
        ({"first_bscan": "top"}, "first_bscan must be 'inferior', 'superior' or None"),
        ({"overlay_bscans": -1}, "overlay_bscans must be >= 0"),
    ],
)
def test_report_arguments_are_checked(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        FluidPredictionWriter(str(tmp_path), **kwargs)


def test_dicom_seg_needs_the_sources_geometry(tmp_path):
    pytest.importorskip("highdicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from custom_components.oct.export import fluid_dicom_seg

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.77.1.5.4", generate_uid()
    ds.Rows, ds.Columns, ds.NumberOfFrames = 4, 5, 3
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(str(tmp_path / "a.dcm"), write_like_original=False)
    with pytest.raises(ValueError, match=r"a.dcm: the fluid mask .* \(4, 5, 2\) does not match the DICOM's \(4, 5, 3\)"):
        fluid_dicom_seg(np.zeros((4, 5, 2)), str(tmp_path / "a.dcm"))
    with pytest.raises(ValueError, match="lacks FrameOfReferenceUID, a shared PlaneOrientationSequence"):
        fluid_dicom_seg(np.zeros((4, 5, 3)), str(tmp_path / "a.dcm"))


def test_a_dicom_seg_the_source_cannot_carry_is_reported_and_costs_nothing_else(tmp_path, caplog):
    """highdicom raises AttributeError for a source without a type-2 attribute (here PatientBirthDate): the writer
    logs it with the file name and returns; the NIfTI mask and the report are written by the caller regardless."""
    pytest.importorskip("highdicom")
    import pydicom
    from oct_files import write_dicom_oct

    path = write_dicom_oct(tmp_path / "eye.dcm", np.zeros((3, 8, 6), np.uint8))
    ds = pydicom.dcmread(path)
    del ds.PatientBirthDate
    ds.save_as(str(path), write_like_original=False)
    writer = FluidPredictionWriter(str(tmp_path / "out"))
    with caplog.at_level(logging.WARNING):
        writer._write_dicom_seg("eye", str(path), np.ones((8, 6, 3), bool))
    assert "eye.dcm: no DICOM SEG: AttributeError" in caplog.text
    assert not (tmp_path / "out" / "dicom_seg").exists()


@pytest.mark.parametrize("error", [NotImplementedError("JPEG 2000 pixel data"), RuntimeError("no decoder")])
def test_any_dicom_seg_failure_is_logged_and_the_run_goes_on(tmp_path, caplog, monkeypatch, error):
    """pydicom and highdicom raise NotImplementedError, RuntimeError, InvalidDicomError ... on sources they cannot
    handle (compressed pixel data): the SEG is skipped with the file name and the error type, nothing else."""
    from oct_files import write_dicom_oct

    import custom_components.oct.handlers as oct_handlers

    def failing(mask, source, software_version="1"):
        raise error

    monkeypatch.setattr(oct_handlers, "fluid_dicom_seg", failing)
    path = write_dicom_oct(tmp_path / "eye.dcm", np.zeros((3, 6, 40), np.uint8))
    writer = FluidPredictionWriter(str(tmp_path / "out"), fluid_report=True)
    writer.started()
    with caplog.at_level(logging.WARNING):
        writer.write_item(_volume_item(name=str(path), meta={**READER_META, "format": "dicom_oct"}))
        writer.write_item(_volume_item(name="/v/next.e2e"))  # the next input is still written
    writer.completed()
    assert f"eye.dcm: no DICOM SEG: {type(error).__name__}" in caplog.text
    assert (tmp_path / "out" / "masks" / "eye_fluid.nii.gz").is_file()
    assert (tmp_path / "out" / "masks" / "next_fluid.nii.gz").is_file()
    assert {r["image"] for r in _report_rows(writer)} == {str(path), "/v/next.e2e"}


def test_a_failed_volume_report_is_logged_recorded_and_costs_nothing_else(tmp_path, caplog, monkeypatch):
    import custom_components.oct.handlers as oct_handlers

    def failing(path, *args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(oct_handlers, "plot_fluid_report", failing)
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True)
    writer.started()
    with caplog.at_level(logging.WARNING):
        writer.write_item(_volume_item(meta=READER_META))
        writer.write_item(_volume_item(name="/v/next.e2e"))
    writer.completed()
    assert "/v/oct.e2e: no fluid report: RuntimeError: no display" in caplog.text
    rows = _report_rows(writer)
    assert [(r["image"], r["sector"]) for r in rows] == [("/v/oct.e2e", "total"), ("/v/next.e2e", "total")]
    assert all("fluid report failed (RuntimeError: no display)" in r["note"] for r in rows)
    assert (tmp_path / "masks" / "oct_fluid.nii.gz").is_file() and (tmp_path / "masks" / "next_fluid.nii.gz").is_file()
    assert [r[1] for r in _read_csv(writer.csv_path)[1:]].count("all") == 2  # the measurements too


def test_a_scan_that_is_not_a_horizontal_raster_gets_no_etdrs_grid(tmp_path):
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True, first_bscan="inferior")
    writer.started()
    writer.write_item(_volume_item(meta={**READER_META, "raster": "not horizontal"}))
    writer.completed()
    rows = _report_rows(writer)
    assert rows[0]["voxels"] == "16" and rows[0]["volume_nl"] != ""
    assert [r["sector"] for r in rows[1:3]] == ["C0", "E1"]  # the user's first_bscan cannot name a vertical scan
    assert all(r["voxels"] == "" and "not a horizontal parallel raster" in r["note"] for r in rows[1:])
    assert (tmp_path / "reports" / "oct_fluid_report.png").is_file()


# ---------------------------------------------------------------- FluidPredictionWriter: fluid types (IRF, SRF, PED)

TYPES = ("IRF", "SRF", "PED")


def _typed_item_2d(name="/data/typed.png"):
    """A B-scan with 6 px of IRF (rows 2-3, columns 3-5), 4 of SRF (row 6, columns 0-3), 2 of PED (row 0, columns
    8-9), one exclusive channel each; the truth is IRF at rows 2-4, columns 3-5, as one label channel (value 1)."""
    image = MetaTensor(torch.rand(1, 8, 10), meta={"filename_or_obj": name})
    pred = torch.zeros(3, 8, 10)
    pred[0, 2:4, 3:6] = 1
    pred[1, 6, 0:4] = 1
    pred[2, 0, 8:10] = 1
    label = torch.zeros(1, 8, 10)
    label[0, 2:5, 3:6] = 1
    return {"image": image, "pred": pred, "label": label}


def test_writer_fluid_types_label_map_measurements_overlay_and_report_row(tmp_path):
    from custom_components.oct.etdrs import report_columns
    from custom_components.oct.handlers import measurement_columns

    writer = FluidPredictionWriter(str(tmp_path), pixel_spacing_mm=(0.01, 0.02), fluid_report=True, fluid_classes=TYPES)
    writer.started()
    writer.write_item(_typed_item_2d())
    writer.completed()

    # the mask is the label map of RETOUCH's values, readable as a training label
    mask = np.asarray(Image.open(tmp_path / "masks" / "typed_fluid.png"))
    expected = np.zeros((8, 10), np.uint8)
    expected[2:4, 3:6], expected[6, 0:4], expected[0, 8:10] = 1, 2, 3
    assert mask.dtype == np.uint8 and np.array_equal(mask, expected)

    rows = _read_csv(writer.csv_path)
    assert tuple(rows[0]) == measurement_columns(TYPES) and tuple(rows[0][:7]) == MEASUREMENT_COLUMNS
    area = 0.01 * 0.02
    assert rows[1] == [
        "/data/typed.png", "", "12", str(round(12 * area, 6)), "", "0.01x0.02", "pixel_spacing_mm",
        "6", str(round(6 * area, 6)), "", "4", str(round(4 * area, 6)), "", "2", str(round(2 * area, 6)), "",
    ]  # fmt: skip

    (row,) = _report_rows(writer)
    assert list(row) == list(report_columns(TYPES))
    assert (row["voxels"], row["IRF_voxels"], row["SRF_voxels"], row["PED_voxels"]) == ("12", "6", "4", "2")
    assert float(row["PED_area_mm2"]) == pytest.approx(2 * area) and row["IRF_volume_nl"] == ""

    # each type's fill over the grey B-scan (which adds the same to every channel): 0.55 x its colour apart
    overlay = np.asarray(Image.open(tmp_path / "overlays" / "typed_overlay.png")).astype(int)
    r, g, b = overlay[3, 4]  # IRF inside the truth: red
    assert r - g > 100 and r - b > 100
    r, g, b = overlay[6, 1]  # SRF: yellow
    assert r - b > 100 and g - b > 100
    r, g, b = overlay[0, 8]  # PED: blue
    assert b - r > 100 and b - g > 30
    r, g, b = overlay[4, 4]  # the truth's outline, where nothing is predicted: green
    assert g == 255 and r < 30 and b < 30


def test_writer_fluid_types_of_a_volume_report_nl_per_type_and_a_label_map_nifti(tmp_path):
    writer = FluidPredictionWriter(str(tmp_path), fluid_report=True, fluid_classes=TYPES)
    item = _volume_item(meta=READER_META)
    pred = torch.zeros(3, 6, 40, 10)
    pred[0, 2, 18:22, 4:6] = 1  # 8 voxels of IRF above 8 of SRF, on the same A-scans; no PED
    pred[1, 3, 18:22, 4:6] = 1
    writer.started()
    writer.write_item({**item, "pred": pred})
    writer.completed()

    voxel_nl = 0.004 * 0.01 * 0.05 * 1000
    rows = {r["sector"]: r for r in _report_rows(writer)}
    for sector in ("total", "C0"):  # all of it within 0.05 mm of the fovea
        assert float(rows[sector]["IRF_volume_nl"]) == pytest.approx(8 * voxel_nl)
        assert float(rows[sector]["SRF_volume_nl"]) == pytest.approx(8 * voxel_nl)
        assert float(rows[sector]["PED_volume_nl"]) == 0.0
        assert float(rows[sector]["volume_nl"]) == pytest.approx(16 * voxel_nl)
    assert rows["total"]["IRF_voxels"] == "8" and float(rows["total"]["IRF_area_mm2"]) == pytest.approx(8 * 0.01 * 0.05)
    with open(tmp_path / "reports" / "oct_fluid_report.csv", newline="") as f:
        assert [r["SRF_voxels"] for r in csv.DictReader(f)][:2] == ["8", "8.0"]
    assert (tmp_path / "reports" / "oct_fluid_report.png").is_file()

    saved = nib.load(tmp_path / "masks" / "oct_fluid.nii.gz")
    labels = np.asarray(saved.dataobj)
    assert saved.get_data_dtype() == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 1).sum() == 8 and np.all(labels[3, 18:22, 4:6] == 2)
    measured = _read_csv(writer.csv_path)
    whole = measured[-1]
    assert whole[:3] == ["/v/oct.e2e", "all", "16"] and whole[7] == "8" and whole[10] == "8" and whole[13] == "0"
    assert float(whole[9]) == pytest.approx(8 * 0.004 * 0.01 * 0.05)  # IRF mm^3
    assert measured[5][1] == "4" and measured[5][7] == "4"  # B-scan 4: 4 pixels of IRF


def test_writer_fluid_types_dicom_seg_has_a_coded_segment_per_type_and_round_trips(tmp_path):
    hd = pytest.importorskip("highdicom")
    import pydicom
    from oct_files import write_dicom_oct

    from custom_components.oct.export import FLUID_TYPE_CODES
    from custom_components.oct.volumes import LoadOCTVolumed

    path = write_dicom_oct(tmp_path / "eye.dcm", np.zeros((3, 6, 40), np.uint8))
    item = LoadOCTVolumed("image")({"image": str(path)})
    pred = torch.zeros(3, 6, 40, 3)
    pred[0, 1:3, 5:10, 0] = 1
    pred[1, 4, 10:20, 1] = 1
    pred[2, 5, 0:3, 2] = pred[2, 5, 30:35, 0] = 1
    writer = FluidPredictionWriter(str(tmp_path / "out"), fluid_classes=TYPES)
    writer.started()
    writer.write_item({**item, "pred": pred})
    writer.completed()

    seg = hd.seg.segread(str(tmp_path / "out" / "dicom_seg" / "eye_fluid_seg.dcm"))
    assert seg.number_of_segments == 3
    coded = [(d.SegmentNumber, d.SegmentLabel, d.segmented_property_type) for d in seg.SegmentSequence]
    assert [(n, label) for n, label, _ in coded] == [
        (1, "intraretinal fluid (IRF)"), (2, "subretinal fluid (SRF)"), (3, "pigment epithelial detachment (PED)"),
    ]  # fmt: skip
    for (_, _, code), fluid in zip(coded, TYPES):
        assert (code.scheme_designator, code.value, code.meaning) == ("SCT", *FLUID_TYPE_CODES[fluid])
    assert {d.anatomic_regions[0].value for d in seg.SegmentSequence} == {"5665001"}  # the retina
    source = pydicom.dcmread(path)
    frames = seg.get_pixels_by_source_frame(
        source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=[1, 2, 3], segment_numbers=[1, 2, 3]
    )  # (frames, rows, columns, segments)
    for k in range(3):
        assert np.array_equal(np.moveaxis(frames[..., k], 0, -1) > 0, pred[k].numpy() > 0)
    # the NIfTI beside it holds the same label map
    labels = np.asarray(nib.load(tmp_path / "out" / "masks" / "eye_fluid.nii.gz").dataobj)
    assert np.array_equal(labels, (pred.numpy() * np.arange(1, 4).reshape(3, 1, 1, 1)).max(axis=0))


def test_writer_refuses_a_prediction_of_other_classes(tmp_path):
    with pytest.raises(ValueError, match="fluid classes must be"):
        FluidPredictionWriter(str(tmp_path), fluid_classes=("IRF", "SRF"))
    writer = FluidPredictionWriter(str(tmp_path), save_overlays=False)
    writer.started()
    with pytest.raises(ValueError, match=r"typed.png: the prediction has 3 channel\(s\) but the writer's fluid_classes"):
        writer.write_item(_typed_item_2d())
    writer = FluidPredictionWriter(str(tmp_path), save_overlays=False, fluid_classes=TYPES)
    with pytest.raises(ValueError, match=r"a.png: the prediction has 1 channel\(s\)"):
        writer.write_item(_item_2d("/d/a.png"))


# ---------------------------------------------------------------- SegmentationReport


def _mask(cells, shape=(4, 4)):
    m = torch.zeros(1, *shape)
    for r, c in cells:
        m[0, r, c] = 1
    return m


def _scans():
    """(name, prediction, truth) of four hand-made 4 x 4 scans, with what each contributes:

    - a.png: truth 4 px, half found (2 px, both right): TP 2, FN 2 -> Dice 2/3, Jaccard 1/2
    - b.png: no fluid, nothing predicted -> a normal scan without false fluid
    - c.png: no fluid, one false pixel: FP 1 -> false fluid
    - d.png: truth 2 px, nothing predicted: FN 2 -> Dice 0, Jaccard 0
    """
    return [
        ("/d/a.png", _mask([(0, 0), (0, 1)]), _mask([(0, 0), (0, 1), (0, 2), (0, 3)])),
        ("/d/b.png", _mask([]), _mask([])),
        ("/d/c.png", _mask([(3, 3)]), _mask([])),
        ("/d/d.png", _mask([]), _mask([(1, 1), (2, 2)])),
    ]


def _bundle_metrics():
    """The OCT bundle's own validation metrics, built from its train.json."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(os.path.join(BUNDLE_CONFIGS, "train.json"))
    return {**parser.get_parsed_content("validate#key_metric"), **parser.get_parsed_content("validate#additional_metrics")}


def _evaluate(report, scans, batch_size=2):
    """Run an ignite engine over ``scans`` with the bundle's metrics and ``report`` attached, as an evaluator does."""
    from ignite.engine import Engine

    items = [
        {"image": MetaTensor(torch.zeros_like(p), meta={"filename_or_obj": n}), "pred": p, "label": t}
        for n, p, t in scans
    ]
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    engine = Engine(lambda e, batch: batch)
    engine.state.metric_details = {}
    for name, metric in _bundle_metrics().items():
        metric.attach(engine, name)
    report.attach(engine)
    engine.run(batches)
    return engine


def test_report_pooled_and_fluid_scan_metrics_against_hand_computed_values(tmp_path):
    path = str(tmp_path / "metrics.json")
    _evaluate(SegmentationReport(path, extra={"noise_sigma": 0.0}), _scans())
    data = json.loads(open(path).read())
    # pooled over the set: TP 2, FP 1, FN 4
    assert data["dice"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 4))
    assert data["jaccard"] == pytest.approx(2 / (2 + 1 + 4))
    # per-scan means over a.png and d.png, the scans with fluid
    assert data["dice_fluid_scans"] == pytest.approx((2 / 3 + 0) / 2)
    assert data["jaccard_fluid_scans"] == pytest.approx((1 / 2 + 0) / 2)
    assert data["false_fluid_rate"] == pytest.approx(1 / 2)  # c.png of the two normal scans
    assert (data["num_scans"], data["num_fluid_scans"], data["num_normal_scans"]) == (4, 2, 2)
    assert data["noise_sigma"] == 0.0 and data["per_scan_csv"] == "per_scan.csv"

    with open(tmp_path / "per_scan.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(PER_SCAN_COLUMNS)
    assert [r["image"] for r in rows] == ["/d/a.png", "/d/b.png", "/d/c.png", "/d/d.png"]
    assert [(r["fluid_pixels_true"], r["fluid_pixels_predicted"], r["true_positive_pixels"]) for r in rows] == [
        ("4", "2", "2"), ("0", "0", "0"), ("0", "1", "0"), ("2", "0", "0"),
    ]  # fmt: skip
    assert [r["dice"] for r in rows] == ["0.666667", "", "", "0.0"]  # undefined without fluid
    assert [r["false_fluid"] for r in rows] == ["", "0", "1", ""]
    # the table is what the summary is made of
    fluid = [float(r["dice"]) for r in rows if r["dice"]]
    assert np.mean(fluid) == pytest.approx(data["dice_fluid_scans"])


def _typed(*channels):
    """(3, 4, 4) masks of IRF, SRF, PED from the cells of each."""
    return torch.cat([_mask(cells) for cells in channels])


def test_report_per_fluid_type_against_hand_computed_values(tmp_path):
    """RETOUCH's measures per type:

    - a.png: IRF truth 2 px, 1 found and 1 called SRF; SRF truth 0; PED truth 3, found 3
    - b.png: SRF truth 2 px, nothing predicted; one false PED pixel
    IRF: TP 1, FP 0, FN 1 -> Dice 2/3; |pred - true| per scan: a 1, b 0 -> 0.5
    SRF: TP 0, FP 1, FN 2 -> Dice 0; differences a 1, b 2 -> 1.5
    PED: TP 3, FP 1, FN 0 -> Dice 6/7; differences a 0, b 1 -> 0.5
    """
    scans = [
        ("/d/a.png", _typed([(0, 0)], [(0, 1)], [(3, 0), (3, 1), (3, 2)]),
         _typed([(0, 0), (0, 1)], [], [(3, 0), (3, 1), (3, 2)])),
        ("/d/b.png", _typed([], [], [(0, 0)]), _typed([], [(2, 2), (2, 3)], [])),
    ]  # fmt: skip
    path = str(tmp_path / "metrics.json")
    _evaluate(SegmentationReport(path, classes=("IRF", "SRF", "PED")), scans)
    data = json.loads(open(path).read())
    assert data["dice_IRF"] == pytest.approx(2 / 3) and data["dice_SRF"] == 0.0 and data["dice_PED"] == pytest.approx(6 / 7)
    assert [data[f"abs_area_difference_{t}"] for t in ("IRF", "SRF", "PED")] == pytest.approx([0.5, 1.5, 0.5])
    assert [data[f"num_scans_{t}"] for t in ("IRF", "SRF", "PED")] == [1, 1, 1]
    # pooled over the types, a pixel of the wrong type is no true positive: TP 4, FP 2, FN 3
    assert data["dice"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 3))
    with open(tmp_path / "per_scan.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[: len(PER_SCAN_COLUMNS)] == list(PER_SCAN_COLUMNS)
    assert [(r["IRF_pixels_true"], r["IRF_pixels_predicted"], r["IRF_dice"]) for r in rows] == [
        ("2", "1", "0.666667"), ("0", "0", ""),
    ]  # fmt: skip
    assert [r["true_positive_pixels"] for r in rows] == ["4", "0"] and rows[1]["SRF_dice"] == "0.0"
    # a type neither drawn nor predicted anywhere has no Dice
    _evaluate(SegmentationReport(path, classes=("IRF", "SRF", "PED")), scans[:1])
    assert json.loads(open(path).read())["dice_SRF"] == 0.0
    no_srf = [(n, p, t) for n, p, t in scans[:1]]
    no_srf[0][1][1].zero_()
    _evaluate(SegmentationReport(path, classes=("IRF", "SRF", "PED")), no_srf)
    assert json.loads(open(path).read())["dice_SRF"] is None


def test_report_without_normal_or_fluid_scans_gives_none(tmp_path):
    path = str(tmp_path / "m.json")
    _evaluate(SegmentationReport(path), [s for s in _scans() if s[2].sum() > 0])
    assert json.loads(open(path).read())["false_fluid_rate"] is None  # no normal scan: undefined, not 0
    _evaluate(SegmentationReport(path), [s for s in _scans() if s[2].sum() == 0])
    data = json.loads(open(path).read())
    assert data["dice_fluid_scans"] is None and data["num_fluid_scans"] == 0
    assert data["false_fluid_rate"] == pytest.approx(0.5)


def test_report_prefix_merge_and_overwrite(tmp_path):
    path = str(tmp_path / "metrics.json")
    _evaluate(SegmentationReport(path, overwrite=True), _scans()[:2])
    _evaluate(SegmentationReport(path, prefix="noisy_", extra={"noise_sigma": 0.1}), _scans()[2:])
    data = json.loads(open(path).read())
    assert data["dice"] == pytest.approx(2 / 3) and data["num_scans"] == 2
    assert data["noisy_dice"] == pytest.approx(0.0) and data["noisy_num_scans"] == 2
    assert data["noise_sigma"] == 0.1
    assert (tmp_path / "per_scan.csv").is_file() and (tmp_path / "noisy_per_scan.csv").is_file()
    # a new run starting with overwrite=True drops the old keys
    _evaluate(SegmentationReport(path, overwrite=True), _scans()[1:2])
    data = json.loads(open(path).read())
    assert "noisy_dice" not in data and "noise_sigma" not in data
    assert data["num_scans"] == 1 and data["false_fluid_rate"] == 0.0
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


def test_report_volumes(tmp_path):
    path = str(tmp_path / "m.json")
    pred = torch.zeros(1, 4, 4, 2)
    label = torch.zeros(1, 4, 4, 2)
    pred[0, 0, 0, 0] = label[0, 0, 0, 0] = 1
    label[0, 1, 1, 1] = 1  # Dice 2*1/(1+2) over the whole volume
    _evaluate(SegmentationReport(path), [("/v.nii.gz", pred, label)])
    assert json.loads(open(path).read())["dice"] == pytest.approx(2 / 3)


def test_report_needs_the_confusion_details(tmp_path):
    from ignite.engine import Engine

    engine = Engine(lambda e, b: b)
    engine.state.metric_details, engine.state.metrics = {}, {}
    with pytest.raises(RuntimeError, match="save_details=True"):
        SegmentationReport(str(tmp_path / "m.json")).completed(engine)


def test_report_log_shows_zero_dice_not_nan(tmp_path, caplog):
    path = str(tmp_path / "m.json")
    with caplog.at_level(logging.INFO, logger="custom_components.oct.handlers"):
        _evaluate(SegmentationReport(path), [_scans()[3]])
    assert json.loads(open(path).read())["dice"] == 0.0
    assert "dice 0.0000" in caplog.text


def test_a_single_frame_dicom_is_one_bscan_with_its_pixel_spacing_and_no_grid(tmp_path):
    from oct_files import write_dicom_oct

    from custom_components.oct.volumes import LoadOCTVolumed

    path = write_dicom_oct(tmp_path / "one.dcm", np.zeros((1, 6, 8), np.uint8), spacing=(0.01, 0.02, 0.1))
    item = LoadOCTVolumed("image")({"image": str(path)})
    assert tuple(item["image"].shape) == (1, 6, 8)  # one B-scan, not a volume of one
    pred = torch.zeros(1, 6, 8)
    pred[0, 2:4, 1:4] = 1
    writer = FluidPredictionWriter(str(tmp_path / "out"), fluid_report=True)
    writer.started()
    writer.write_item({**item, "pred": pred})
    writer.completed()
    (row,) = _report_rows(writer)
    assert (row["sector"], row["voxels"], row["provenance"]) == ("total", "6", "file header")
    assert float(row["area_mm2"]) == pytest.approx(6 * 0.01 * 0.02) and "no ETDRS grid" in row["note"]
    assert (tmp_path / "out" / "masks" / "one_fluid.png").is_file()
    assert _read_csv(writer.csv_path)[1][-1] == "file_header"
