"""Tests of custom_components.handlers.segmentation: overlays, the prediction writer and the Dice/Jaccard report,
driven without an ignite engine (started / write_item or __call__ / completed by hand)."""

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

from custom_components.handlers.segmentation import (
    MEASUREMENT_COLUMNS,
    FluidPredictionWriter,
    SegmentationReport,
    overlay_image,
)

ORANGE = np.array([255.0, 140.0, 0.0])
GREEN = (40, 230, 60)


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# ---------------------------------------------------------------- overlay_image


def test_overlay_fill_and_outline_colours():
    bscan = np.array([[0.0, 10.0, 20.0], [0.0, 10.0, 20.0], [0.0, 10.0, 20.0]])  # scaled to 0, 127.5, 255
    pred = np.zeros((3, 3), np.uint8)
    pred[0, 1] = 1
    rgb = overlay_image(bscan, pred)
    assert rgb.shape == (3, 3, 3) and rgb.dtype == np.uint8
    # background: gray, min-max scaled
    assert tuple(rgb[1, 0]) == (0, 0, 0)
    assert tuple(rgb[1, 2]) == (255, 255, 255)
    assert np.all(np.abs(rgb[1, 1].astype(int) - 127) <= 1)
    # fill: 0.45 * gray + 0.55 * orange
    expected = 0.45 * 127.5 + 0.55 * ORANGE
    assert np.all(np.abs(rgb[0, 1].astype(float) - expected) <= 1)


def test_overlay_truth_outline_is_green_and_drawn_over_fill():
    bscan = np.random.default_rng(0).random((7, 7))
    truth = np.zeros((7, 7), np.uint8)
    truth[1:6, 1:6] = 1  # 5x5 square: 16 border pixels, 3x3 interior
    pred = truth.copy()
    rgb = overlay_image(bscan, pred, truth)
    border = truth.astype(bool).copy()
    border[2:5, 2:5] = False
    assert border.sum() == 16
    assert np.all(rgb[border] == GREEN)
    # interior: orange-tinted fill, not green
    interior = rgb[2:5, 2:5].reshape(-1, 3).astype(float)
    assert np.all(interior[:, 0] >= 0.55 * 255 - 1) and np.all(interior[:, 2] <= 0.45 * 255 + 1)
    assert not np.any(np.all(interior == GREEN, axis=1))
    # outside: gray (R = G = B)
    outside = ~truth.astype(bool)
    assert np.all(rgb[outside][:, 0] == rgb[outside][:, 1]) and np.all(rgb[outside][:, 1] == rgb[outside][:, 2])


def test_overlay_flat_image_and_empty_masks():
    rgb = overlay_image(np.full((4, 5), 3.0), np.zeros((4, 5)), np.zeros((4, 5)))
    assert rgb.shape == (4, 5, 3)
    assert np.all(rgb == 0)


def test_overlay_single_pixel_truth_is_its_own_outline():
    truth = np.zeros((3, 3), np.uint8)
    truth[1, 1] = 1
    rgb = overlay_image(np.zeros((3, 3)), np.zeros((3, 3)), truth)
    assert tuple(rgb[1, 1]) == GREEN
    assert (np.all(rgb == GREEN, axis=2)).sum() == 1


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
    assert tuple(overlay[4, 4]) == GREEN  # bottom edge of the truth, not predicted

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


def test_writer_volume_with_bscans_along_the_first_axis(tmp_path):
    affine = np.diag([2.0, 0.5, 0.25, 1.0])  # slice spacing 2 mm along axis 0, in-plane 0.5 x 0.25
    image = MetaTensor(torch.rand(1, 3, 6, 8), affine=torch.as_tensor(affine), meta={"filename_or_obj": "/v/x.nii"})
    pred = torch.zeros(1, 3, 6, 8)
    pred[0, 1, 0:2, 0:5] = 1  # 10 pixels in B-scan 1
    writer = FluidPredictionWriter(str(tmp_path), slice_axis=0)
    writer.started()
    writer.write_item({"image": image, "pred": pred})
    writer.completed()
    rows = _read_csv(writer.csv_path)[1:]
    assert [(r[1], r[2], r[3]) for r in rows[:3]] == [("0", "0", "0.0"), ("1", "10", "1.25"), ("2", "0", "0.0")]
    assert rows[3][1:3] == ["all", "10"] and float(rows[3][4]) == pytest.approx(10 * 2.0 * 0.5 * 0.25)
    overlay = np.asarray(Image.open(tmp_path / "overlays" / "x_slice001_overlay.png"))
    assert overlay.shape == (6, 8, 3)
    assert nib.load(tmp_path / "masks" / "x_fluid.nii.gz").shape == (3, 6, 8)  # the input's axes


@pytest.mark.parametrize("axis", [-1, 3])
def test_writer_bad_slice_axis(tmp_path, axis):
    with pytest.raises(ValueError, match="slice_axis must be 0, 1 or 2"):
        FluidPredictionWriter(str(tmp_path), slice_axis=axis)


# ---------------------------------------------------------------- SegmentationReport


def _engine(pairs):
    return SimpleNamespace(state=SimpleNamespace(output=[{"pred": p, "label": l} for p, l in pairs]))


def _mask(cells, shape=(4, 4)):
    m = torch.zeros(1, *shape)
    for r, c in cells:
        m[0, r, c] = 1
    return m


def _pairs():
    # image 0: pred 2 px, truth 3 px, 2 overlap -> Dice 4/5, Jaccard 2/3
    # image 1: empty truth, empty prediction -> 1, 1
    # image 2: empty truth, 1 px predicted -> 0, 0
    # image 3: truth 2 px, nothing predicted -> 0, 0
    return [
        (_mask([(0, 0), (0, 1)]), _mask([(0, 0), (0, 1), (0, 2)])),
        (_mask([]), _mask([])),
        (_mask([(3, 3)]), _mask([])),
        (_mask([]), _mask([(1, 1), (2, 2)])),
    ]


def _run(report, pairs):
    report.started()
    report(_engine(pairs))
    report.completed()


def test_report_per_image_and_means(tmp_path):
    path = str(tmp_path / "metrics.json")
    report = SegmentationReport(path, extra={"noise_sigma": 0.0})
    _run(report, _pairs())
    data = json.loads(open(path).read())
    dice = [r["dice"] for r in data["per_image"]]
    jaccard = [r["jaccard"] for r in data["per_image"]]
    assert dice == pytest.approx([0.8, 1.0, 0.0, 0.0])
    assert jaccard == pytest.approx([2 / 3, 1.0, 0.0, 0.0])
    assert [r["has_fluid"] for r in data["per_image"]] == [True, False, False, True]
    assert data["dice"] == pytest.approx(1.8 / 4)
    assert data["jaccard"] == pytest.approx((2 / 3 + 1) / 4)
    assert data["dice_fluid_scans"] == pytest.approx(0.4)  # images 0 and 3 only
    assert data["jaccard_fluid_scans"] == pytest.approx(1 / 3)
    assert data["num_images"] == 4 and data["num_fluid_images"] == 2
    assert data["noise_sigma"] == 0.0


def test_report_no_fluid_scans_gives_none(tmp_path):
    path = str(tmp_path / "m.json")
    report = SegmentationReport(path)
    _run(report, [(_mask([]), _mask([]))])
    data = json.loads(open(path).read())
    assert data["dice"] == 1.0 and data["jaccard"] == 1.0
    assert data["dice_fluid_scans"] is None and data["num_fluid_images"] == 0


def test_report_image_names_from_meta(tmp_path):
    path = str(tmp_path / "m.json")
    pred = MetaTensor(_mask([(0, 0)]), meta={"filename_or_obj": "/d/x.png"})
    _run(SegmentationReport(path), [(pred, _mask([(0, 0)]))])
    assert json.loads(open(path).read())["per_image"][0]["image"] == "/d/x.png"


def test_report_started_resets_rows(tmp_path):
    path = str(tmp_path / "m.json")
    report = SegmentationReport(path)
    _run(report, _pairs())
    _run(report, _pairs()[:1])
    assert json.loads(open(path).read())["num_images"] == 1


def test_report_prefix_merge_and_overwrite(tmp_path):
    path = str(tmp_path / "metrics.json")
    _run(SegmentationReport(path, overwrite=True), _pairs()[:2])
    _run(SegmentationReport(path, prefix="noisy_", extra={"noise_sigma": 0.1}), _pairs()[2:])
    data = json.loads(open(path).read())
    assert data["dice"] == pytest.approx(0.9) and data["num_images"] == 2
    assert data["noisy_dice"] == pytest.approx(0.0) and data["noisy_num_images"] == 2
    assert len(data["per_image"]) == 2 and len(data["noisy_per_image"]) == 2
    assert data["noise_sigma"] == 0.1
    # a new run starting with overwrite=True drops the old keys
    _run(SegmentationReport(path, overwrite=True), _pairs()[1:2])
    data = json.loads(open(path).read())
    assert "noisy_dice" not in data and "noise_sigma" not in data
    assert data["dice"] == 1.0 and data["num_images"] == 1
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_report_volumes(tmp_path):
    path = str(tmp_path / "m.json")
    pred = torch.zeros(1, 4, 4, 2)
    label = torch.zeros(1, 4, 4, 2)
    pred[0, 0, 0, 0] = label[0, 0, 0, 0] = 1
    label[0, 1, 1, 1] = 1  # Dice 2*1/(1+2) over the whole volume
    _run(SegmentationReport(path), [(pred, label)])
    assert json.loads(open(path).read())["dice"] == pytest.approx(2 / 3)


def test_report_log_shows_zero_dice_not_nan(tmp_path, caplog):
    path = str(tmp_path / "m.json")
    with caplog.at_level(logging.INFO, logger="custom_components.handlers.segmentation"):
        _run(SegmentationReport(path), [(_mask([]), _mask([(0, 0)]))])
    assert json.loads(open(path).read())["dice"] == 0.0
    assert "Dice 0.0000" in caplog.text
