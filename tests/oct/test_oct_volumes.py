# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""``custom_components.oct.volumes``: every input kind read back with its spacing, written here in small files.

The files are written by ``tests/oct_files.py`` (how each is made: its docstring).
"""

from __future__ import annotations


import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, MetaTensor, decollate_batch
from PIL import Image

from oct_files import write_dicom_oct, write_heidelberg_vol, write_heidelberg_xml, write_topcon

from custom_components.core import DatalistError, SkippingDataset, collate_skipping_failures, scan_inputs
from custom_components.core.image_files import IMAGE_EXTENSIONS, screen_image_file
from custom_components.oct.volumes import OCT_EXTENSIONS
from custom_components.oct.volumes import (
    LoadOCTVolumed,
    OCTMetadata,
    read_oct_metadata,
    read_oct_volume,
)

ROWS, COLUMNS, BSCANS = 64, 48, 3


def _volume(dtype=np.uint8, bscans: int = BSCANS, seed: int = 0) -> np.ndarray:
    """(B-scans, rows, columns) of random intensities, as the writers take them."""
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, info.max, (bscans, ROWS, COLUMNS), endpoint=True).astype(dtype)


def test_dicom_oct_round_trip_with_spacing_laterality_date_and_no_identifiers(tmp_path):
    frames = _volume(np.uint16)
    path = write_dicom_oct(tmp_path / "scan.dcm", frames, spacing=(0.0039, 0.0117, 0.12), laterality="L")
    volume = read_oct_volume(path)
    assert volume.format == "dicom_oct" and volume.vendor == "Test Vendor"
    assert volume.data.shape == (ROWS, COLUMNS, BSCANS) and volume.data.dtype == np.uint16
    np.testing.assert_array_equal(volume.data, np.moveaxis(frames, 0, -1))  # frame k is B-scan k
    assert volume.spacing_mm == pytest.approx((0.0039, 0.0117, 0.12)) and volume.spacing_source == "file header"
    assert (volume.laterality, volume.scan_date, volume.first_bscan) == ("OS", "2022-03-15", None)
    assert not hasattr(volume, "identifiers")  # the SEG writer reads its source again: nothing kept in memory
    public = volume.public_metadata()
    assert "PAT-DICOM-1" not in repr(volume) and "PAT-DICOM-1" not in str(public)
    assert public["source_path"] == str(path) and public["shape"] == [ROWS, COLUMNS, BSCANS]


def test_dicom_without_extension_is_found_by_its_content(tmp_path):
    frames = _volume()
    folder = tmp_path / "in"
    folder.mkdir()
    write_dicom_oct(folder / "IM000001", frames)
    (folder / "notes").write_text("not dicom")
    entries = scan_inputs(folder, extensions=OCT_EXTENSIONS)
    assert [e["image"] for e in entries] == [str((folder / "IM000001").resolve())]
    with pytest.raises(DatalistError, match="no images"):  # the default extensions (both bundles' own) are unchanged
        scan_inputs(folder)
    assert read_oct_volume(folder / "IM000001").format == "dicom_oct"
    assert screen_image_file(folder / "IM000001", extensions=IMAGE_EXTENSIONS).startswith("unsupported file type")


def test_heidelberg_vol_round_trip_keeps_the_file_order_and_says_which_end_is_down(tmp_path):
    bscans = _volume()
    path = write_heidelberg_vol(tmp_path / "scan.vol", bscans, ys=(1.0, 2.0, 3.0))  # stored superior first
    volume = read_oct_volume(path)
    assert volume.format == "heidelberg_vol" and volume.vendor == "Heidelberg Engineering"
    assert volume.spacing_mm == pytest.approx((0.0039, 0.0113, 0.12)) and volume.spacing_source == "file header"
    assert (volume.laterality, volume.scan_date, volume.first_bscan) == ("OS", "2021-03-04", "superior")
    # eyepy's 8-bit display mapping inverts the float reflectivity written: the values come back exactly, in the
    # file's B-scan order (B-scan k is Heyex's B-scan k, so a fovea in its numbering stays right)
    np.testing.assert_array_equal(volume.data, np.moveaxis(bscans, 0, -1))
    assert volume.raster is None and "PAT-123" not in repr(volume) and "PAT-123" not in str(volume.public_metadata())

    kept = read_oct_volume(write_heidelberg_vol(tmp_path / "kept.vol", bscans, ys=(3.0, 2.0, 1.0)))
    np.testing.assert_array_equal(kept.data, np.moveaxis(bscans, 0, -1))
    assert kept.first_bscan == "inferior"


@pytest.mark.parametrize(
    "positions",
    [
        [(3.0, 0.5, 3.0, 5.5), (2.0, 0.5, 2.0, 5.5), (1.0, 0.5, 1.0, 5.5)],  # a vertical raster
        [(0.5, 3.0, 5.5, 3.0), (1.2, 1.2, 4.8, 4.8), (3.0, 0.5, 3.0, 5.5)],  # radial B-scans through one centre
    ],
)
def test_heidelberg_vol_that_is_not_a_horizontal_raster_is_flagged(tmp_path, positions):
    volume = read_oct_volume(write_heidelberg_vol(tmp_path / "scan.vol", _volume(), positions=positions))
    assert volume.first_bscan is None and volume.raster == "not horizontal"
    assert volume.public_metadata()["raster"] == "not horizontal"


def test_heidelberg_xml_export_round_trip(tmp_path):
    bscans = _volume()
    path = write_heidelberg_xml(tmp_path / "export", bscans, ys=(3.0, 2.5, 2.0), laterality="R")
    volume = read_oct_volume(path)
    assert volume.format == "heidelberg_xml"
    np.testing.assert_array_equal(volume.data, np.moveaxis(bscans, 0, -1))
    # the XML has no B-scan distance: eyepy takes it from the B-scan positions (0.5 mm apart)
    assert volume.spacing_mm == pytest.approx((0.0039, 0.0113, 0.5))
    assert (volume.laterality, volume.scan_date, volume.first_bscan) == ("OD", "2019-07-08", "inferior")
    # listing the export folder gives one input, the XML: its B-scan and localizer images belong to it
    Image.fromarray(bscans[0]).save(tmp_path / "export" / "other.png")  # an image the XML does not name
    listed = [e["image"] for e in scan_inputs(tmp_path / "export", extensions=OCT_EXTENSIONS)]
    assert listed == [str((tmp_path / "export" / name).resolve()) for name in ("other.png", "scan.xml")]


@pytest.mark.parametrize("kind", ["fda", "fds"])
def test_topcon_round_trip_with_spacing_from_param_scan(tmp_path, kind):
    bscans = _volume(np.uint16)
    path = write_topcon(tmp_path / f"scan.{kind}", kind, bscans, size_mm=(6.0, 6.0), z_um=2.6, eye=1)
    volume = read_oct_volume(path)
    assert volume.format == f"topcon_{kind}" and volume.vendor == "Topcon"
    np.testing.assert_array_equal(volume.data, np.moveaxis(bscans, 0, -1))
    # oct-converter: lateral = 6 mm / 48 A-scans, between B-scans = 6 mm / 3 B-scans, axial = 2.6 um
    assert volume.spacing_mm == pytest.approx((0.0026, 6.0 / COLUMNS, 2.0))
    assert (volume.laterality, volume.scan_date, volume.first_bscan) == ("OS", "2020-05-06", None)
    assert "PAT-TOPCON" not in str(volume.public_metadata())


def test_zeiss_img_has_no_spacing(tmp_path):
    cube = np.random.default_rng(1).integers(0, 255, (1024, 512, 2), endpoint=True).astype(np.uint8)
    path = tmp_path / "P123_Macular Cube 512x128_01-02-2018_10-11-12_OD_sn1_cube_raw.img"
    path.write_bytes(cube.tobytes(order="F"))  # oct-converter reads the bare cube in Fortran order
    volume = read_oct_volume(path)
    assert volume.format == "zeiss_img" and volume.data.shape == (1024, 512, 2)
    np.testing.assert_array_equal(volume.data, cube)
    assert volume.spacing_mm == (None, None, None) and volume.spacing_source == "unknown"
    assert (volume.laterality, volume.scan_date) == ("OD", "2018-01-02")  # oct-converter reads them from the name


def test_png_keeps_16_bits_and_has_no_spacing(tmp_path):
    bscan = (np.arange(ROWS * COLUMNS).reshape(ROWS, COLUMNS) * 17).astype(np.uint16)
    Image.fromarray(bscan).save(tmp_path / "b.png")
    volume = read_oct_volume(tmp_path / "b.png")
    assert volume.format == "png" and volume.data.dtype == np.uint16 and volume.data.shape == (ROWS, COLUMNS, 1)
    np.testing.assert_array_equal(volume.data[..., 0], bscan)
    assert volume.spacing_mm == (None, None, None) and volume.spacing_source == "unknown"


def test_multipage_16_bit_tiff_is_a_volume(tmp_path):
    pages = _volume(np.uint16)
    first, *rest = [Image.fromarray(p) for p in pages]
    first.save(tmp_path / "v.tif", save_all=True, append_images=rest)
    volume = read_oct_volume(tmp_path / "v.tif")
    assert volume.format == "tiff" and volume.data.dtype == np.uint16
    np.testing.assert_array_equal(volume.data, np.moveaxis(pages, 0, -1))


def test_nifti_spacing_from_the_header_follows_bscan_axes(tmp_path):
    stored = _volume().astype(np.float32)  # stored as (B-scans, rows, columns)
    image = nib.Nifti1Image(stored, np.diag([0.12, 0.0039, 0.0113, 1.0]))
    image.header.set_xyzt_units("mm")
    nib.save(image, tmp_path / "v.nii.gz")
    volume = read_oct_volume(tmp_path / "v.nii.gz", bscan_axes=(1, 2, 0))
    np.testing.assert_array_equal(volume.data, np.transpose(stored, (1, 2, 0)))
    assert volume.spacing_mm == pytest.approx((0.0039, 0.0113, 0.12)) and volume.spacing_source == "file header"
    micron = nib.Nifti1Image(stored, np.diag([120.0, 3.9, 11.3, 1.0]))
    micron.header.set_xyzt_units("micron")
    nib.save(micron, tmp_path / "um.nii.gz")
    assert read_oct_volume(tmp_path / "um.nii.gz", bscan_axes=(1, 2, 0)).spacing_mm == pytest.approx(
        (0.0039, 0.0113, 0.12)
    )
    nib.save(nib.Nifti1Image(stored, None), tmp_path / "plain.nii")  # no qform/sform: the 1 mm pixdim means nothing
    assert read_oct_volume(tmp_path / "plain.nii").spacing_source == "unknown"


def test_dicom_inter_bscan_spacing_is_never_the_slice_thickness(tmp_path):
    # without SpacingBetweenSlices: the median step between the frames' positions, not the nominal thickness
    path = write_dicom_oct(tmp_path / "a.dcm", _volume(), spacing=(0.0039, 0.0117, 0.12), between=False,
                           slice_thickness=0.5)  # fmt: skip
    assert read_oct_volume(path).spacing_mm == pytest.approx((0.0039, 0.0117, 0.12))
    given = write_dicom_oct(tmp_path / "b.dcm", _volume(), spacing=(0.0039, 0.0117, 0.12), slice_thickness=0.5)
    assert read_oct_volume(given).spacing_mm == pytest.approx((0.0039, 0.0117, 0.12))  # SpacingBetweenSlices
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PerFrameFunctionalGroupsSequence
    ds.save_as(tmp_path / "c.dcm")
    assert read_oct_volume(tmp_path / "c.dcm").spacing_mm[2] is None  # no positions either: unknown


def test_unknown_missing_and_truncated_files_raise_naming_the_file(tmp_path):
    (tmp_path / "scan.oct").write_bytes(b"12345")
    with pytest.raises(ValueError, match=r"scan\.oct: unknown OCT file type '\.oct'"):
        read_oct_volume(tmp_path / "scan.oct")
    with pytest.raises(ValueError, match=r"gone\.vol: OCT file not found"):
        read_oct_volume(tmp_path / "gone.vol")
    full = write_heidelberg_vol(tmp_path / "full.vol", _volume())
    (tmp_path / "cut.vol").write_bytes(full.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut\.vol: cannot read it as heidelberg vol \(StreamError"):
        read_oct_volume(tmp_path / "cut.vol")
    dicom = write_dicom_oct(tmp_path / "scan.dcm", _volume())
    (tmp_path / "cut.dcm").write_bytes(dicom.read_bytes()[:-2000])
    with pytest.raises(ValueError, match=r"cut\.dcm: cannot read it as dicom"):
        read_oct_volume(tmp_path / "cut.dcm")


def test_screening_vendor_files_is_cheap_and_checks_magic_bytes(tmp_path, monkeypatch):
    good = write_heidelberg_vol(tmp_path / "good.vol", _volume())
    (tmp_path / "fake.vol").write_bytes(b"PNG-NOT-A-VOL" * 20)
    (tmp_path / "fake.dcm").write_bytes(b"\x00" * 200)
    (tmp_path / "fake.fda").write_bytes(b"XXXX" * 10)
    (tmp_path / "empty.e2e").write_bytes(b"")
    (tmp_path / "odd.img").write_bytes(b"\x00" * 1000)
    import eyepy.io.he.vol_reader as vol_reader

    monkeypatch.setattr(vol_reader, "HeVolReader", None)  # screening must not parse
    assert screen_image_file(good, extensions=OCT_EXTENSIONS) is None
    fake_vol = screen_image_file(tmp_path / "fake.vol", extensions=OCT_EXTENSIONS)
    assert "does not begin with 'HSF-OCT-' or 'ep-v'" in fake_vol
    assert "not a DICOM file" in screen_image_file(tmp_path / "fake.dcm", extensions=OCT_EXTENSIONS)
    assert "'FOCT'" in screen_image_file(tmp_path / "fake.fda", extensions=OCT_EXTENSIONS)
    assert screen_image_file(tmp_path / "empty.e2e", extensions=OCT_EXTENSIONS) == "empty file (0 bytes)"
    assert "Zeiss Cirrus raw cube" in screen_image_file(tmp_path / "odd.img", extensions=OCT_EXTENSIONS)
    # the IFE bundle's extensions refuse vendor files by type
    assert screen_image_file(good, extensions=IMAGE_EXTENSIONS).startswith("unsupported file type '.vol'")


# ---------------------------------------------------------------------------------------------------------------
# the transform in the bundle's data path


def test_load_oct_volumed_shapes_affine_and_metadata(tmp_path):
    path = write_dicom_oct(tmp_path / "scan.dcm", _volume(), spacing=(0.0039, 0.0117, 0.12))
    Image.fromarray(_volume()[0]).save(tmp_path / "b.png")
    out = LoadOCTVolumed("image")({"image": str(path)})
    image = out["image"]
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32
    assert tuple(image.shape) == (1, ROWS, COLUMNS, BSCANS)
    np.testing.assert_allclose(image.affine.numpy(), np.diag([0.0039, 0.0117, 0.12, 1.0]))
    assert image.meta["filename_or_obj"] == str(path) and image.meta["bscan_axes"] == [0, 1, 2]
    assert isinstance(out["oct_meta"], OCTMetadata) and out["oct_meta"]["laterality"] == "OS"
    assert "PAT-DICOM-1" not in str(out["oct_meta"])
    planar = LoadOCTVolumed("image")({"image": str(tmp_path / "b.png")})
    # a 2D file stays (1, H, W), as the bundle's LoadImaged path gives it (no spacing: unit affine)
    assert tuple(planar["image"].shape) == (1, ROWS, COLUMNS)
    np.testing.assert_allclose(planar["image"].affine.numpy(), np.eye(3))
    # so does a single-frame DICOM: one B-scan, not a volume of one
    single = LoadOCTVolumed("image")({"image": str(write_dicom_oct(tmp_path / "one.dcm", _volume(bscans=1)))})
    assert tuple(single["image"].shape) == (1, ROWS, COLUMNS)
    np.testing.assert_allclose(single["image"].affine.numpy(), np.diag([0.0039, 0.0117, 1.0]))
    with pytest.raises(ValueError, match="bscan_axes"):
        LoadOCTVolumed("image", bscan_axes=(0, 1, 1))


def test_load_oct_volumed_records_nifti_axes_and_warns_on_a_transposed_volume(tmp_path, caplog):
    stored = np.zeros((BSCANS, ROWS, COLUMNS), np.float32)  # (B-scans, rows, columns) on disk
    nib.save(nib.Nifti1Image(stored, np.diag([0.12, 0.0039, 0.0113, 1.0])), tmp_path / "v.nii.gz")
    load = LoadOCTVolumed("image", bscan_axes=[1, 2, 0], expected_aspect=ROWS / COLUMNS)
    with caplog.at_level("WARNING"):
        image = load({"image": str(tmp_path / "v.nii.gz")})["image"]
    assert tuple(image.shape) == (1, ROWS, COLUMNS, BSCANS) and image.meta["bscan_axes"] == [1, 2, 0]
    np.testing.assert_allclose(image.affine.numpy(), np.diag([0.0039, 0.0113, 0.12, 1.0]), rtol=1e-6)
    assert "looks transposed" not in caplog.text
    swapped = LoadOCTVolumed("image", bscan_axes=[2, 1, 0], expected_aspect=ROWS / COLUMNS)
    with caplog.at_level("WARNING"):
        swapped({"image": str(tmp_path / "v.nii.gz")})
    assert "v.nii.gz" in caplog.text and "looks transposed" in caplog.text
    assert repr(load) == "LoadOCTVolumed(keys=['image'], bscan_axes=[1, 2, 0], meta_key='oct_meta')"


def test_metadata_survives_collate_and_decollate_and_broken_files_are_skipped(tmp_path):
    good = write_heidelberg_vol(tmp_path / "good.vol", _volume())
    (tmp_path / "cut.vol").write_bytes(good.read_bytes()[:3000])
    png = tmp_path / "b.png"
    Image.fromarray(_volume()[0]).save(png)
    data = [{"image": str(p)} for p in (good, tmp_path / "cut.vol", png)]
    dataset = SkippingDataset(data, LoadOCTVolumed("image"))
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate_skipping_failures)
    batches = list(loader)
    failed = batches[1]["failed_inputs"]
    assert "image" not in batches[1] and failed[0]["image"] == str(tmp_path / "cut.vol")
    assert "cut.vol: cannot read it as heidelberg vol" in failed[0]["error"]
    assert "LoadOCTVolumed(keys=['image']" in failed[0]["error"]  # the transform named, not an address
    item = decollate_batch(batches[0], detach=True)[0]
    metadata = read_oct_metadata(item["oct_meta"])
    assert metadata["spacing_mm"] == pytest.approx([0.0039, 0.0113, 0.12]) and metadata["first_bscan"] == "inferior"
    assert metadata["format"] == "heidelberg_vol" and metadata["source_path"] == str(good)
    assert tuple(item["image"].shape) == (1, ROWS, COLUMNS, BSCANS)
    plain = decollate_batch(batches[2], detach=True)[0]
    assert read_oct_metadata(plain["oct_meta"])["spacing_mm"] == [None, None, None]
    # a batch without reader metadata collates exactly as before
    before = collate_skipping_failures([{"image": torch.zeros(1, 4, 4), "label": "a"}])
    assert set(before) == {"image", "label", "failed_inputs"} and before["label"] == ["a"]
