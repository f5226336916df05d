"""Tests of custom_components.oct.transforms: one-channel Pillow converters, mask values, per-B-scan
intensity scaling, no fluid on blank B-scans, volume axis order, geometry crops and file-seeded Gaussian noise."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import AsDiscreted, Compose, LoadImaged
from PIL import Image

from custom_components.core.validation import mask_value_problem
from custom_components.oct.transforms import (
    BScanLayoutd,
    BScanToGrayscale,
    ClearBlankBScansd,
    MaskToSingleChannel,
    ScaleIntensityPerBScand,
    SeededGaussianNoised,
    geometry_crops,
    source_name,
)


def _meta(array, name="/x/mask.png"):
    return MetaTensor(torch.as_tensor(array), meta={"filename_or_obj": name})


# ---------------------------------------------------------------- BScanToGrayscale, MaskToSingleChannel


def _load(path, converter):
    """The bundle's loader: PILReader rows first, with the converter."""
    return LoadImaged("x", reader="PILReader", reverse_indexing=False, converter=converter, image_only=True)(
        {"x": str(path)}
    )["x"]


def test_grayscale_keeps_16_bit_depth_and_orientation(tmp_path):
    # 3 rows x 2 columns, values far above 255: convert("L") would clip them all to 255
    array = np.array([[0, 1000], [20000, 40000], [65535, 300]], np.uint16)
    Image.fromarray(array).save(tmp_path / "b.tif")
    loaded = _load(tmp_path / "b.tif", BScanToGrayscale())
    assert loaded.shape == (3, 2)  # rows first, as a viewer shows the file
    assert np.array_equal(np.asarray(loaded), array.astype(np.float32))


def test_grayscale_converts_colour_and_drops_alpha():
    rgb = Image.fromarray(np.array([[[255, 0, 0], [255, 255, 255]]], np.uint8), "RGB")
    gray = BScanToGrayscale()(rgb)
    assert gray.mode == "L"
    assert np.array_equal(np.asarray(gray), np.asarray(rgb.convert("L")))  # ITU-R 601 luminance: red -> 76
    la = Image.fromarray(np.array([[[10, 0], [200, 255]]], np.uint8), "LA")
    assert np.array_equal(np.asarray(BScanToGrayscale()(la)), [[10, 200]])
    eight_bit = Image.fromarray(np.array([[1, 2]], np.uint8))
    assert BScanToGrayscale()(eight_bit) is eight_bit


def test_mask_palette_keeps_indices_not_colours():
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "L").convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0])  # index 1 drawn red: luminance 76
    out = MaskToSingleChannel()(palette)
    assert np.array_equal(np.asarray(out), [[0, 1], [1, 0]])


def test_mask_colour_is_max_over_colour_channels_alpha_dropped():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not count as fluid
    rgba[0, 0, 0] = 255  # red fluid
    rgba[1, 1, 2] = 255  # blue fluid
    out = MaskToSingleChannel()(Image.fromarray(rgba, "RGBA"))
    assert out.mode == "L"
    assert np.array_equal(np.asarray(out), [[255, 0], [0, 255]])
    la = Image.fromarray(np.array([[[0, 255], [1, 255]]], np.uint8), "LA")
    assert np.array_equal(np.asarray(MaskToSingleChannel()(la)), [[0, 1]])


def test_converters_pickle_for_worker_processes():
    for converter in (BScanToGrayscale(), MaskToSingleChannel()):
        clone = pickle.loads(pickle.dumps(converter))
        assert type(clone) is type(converter) and repr(clone) == repr(converter)


# ---------------------------------------------------------------- mask values


@pytest.mark.parametrize("fluid", [1, 255])
def test_masks_of_either_convention_binarise_alike(fluid):
    # what the OCT train.json does after the datalist checks: AsDiscreted(threshold=0.5)
    mask = torch.tensor([[[0, fluid], [fluid, 0]]], dtype=torch.uint8)
    assert mask_value_problem(mask.numpy()) is None
    out = AsDiscreted("label", threshold=0.5)({"label": mask.float()})["label"]
    assert torch.equal(out, torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]))


def test_mask_value_problem_lists_what_it_found():
    assert mask_value_problem(np.zeros((3, 3), np.uint8)) is None  # a scan without fluid
    assert mask_value_problem(np.array([0, 2, 3], np.uint8)) is None  # fluid types: 2 SRF, 3 PED
    assert mask_value_problem(np.array([0, 1, 255])) == (
        "mask values must be {0, 1} or {0, 255} (binary), or within {0, 1, 2, 3} (fluid types), found 0, 1, 255"
    )
    assert mask_value_problem(np.arange(20)).endswith("found 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 ...")


def test_source_name_fallback():
    assert source_name({"image": torch.zeros(1)}, "image") == "<in-memory image>"
    assert source_name({"image": MetaTensor(torch.zeros(1))}, "image") == "<in-memory image>"


# ---------------------------------------------------------------- ScaleIntensityPerBScand


def test_scale_2d_matches_whole_image_min_max():
    image = torch.tensor([[[2.0, 4.0], [6.0, 10.0]]])
    out = ScaleIntensityPerBScand("image")({"image": image})["image"]
    assert torch.allclose(out, torch.tensor([[[0.0, 0.25], [0.5, 1.0]]]))


def test_scale_volume_each_bscan_on_its_own_keeps_meta():
    volume = torch.zeros(1, 2, 2, 3)
    volume[..., 0] = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    volume[..., 1] = torch.tensor([[100.0, 300.0], [200.0, 100.0]])  # a bright B-scan must not darken the others
    volume[..., 2] = 7.0  # constant: minv
    affine = torch.diag(torch.tensor([0.004, 0.012, 0.12, 1.0], dtype=torch.float64))
    image = MetaTensor(volume, affine=affine, meta={"filename_or_obj": "/v/vol.nii.gz"})
    out = ScaleIntensityPerBScand("image", minv=-1.0, maxv=1.0)({"image": image})["image"]
    assert torch.allclose(out[0, ..., 0], torch.tensor([[-1.0, -0.5], [0.0, 1.0]]))
    assert torch.allclose(out[0, ..., 1], torch.tensor([[-1.0, 1.0], [0.0, -1.0]]))
    assert torch.equal(out[0, ..., 2], torch.full((2, 2), -1.0))
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "/v/vol.nii.gz"
    assert torch.allclose(out.affine, affine)


def test_scale_volume_numpy():
    volume = np.zeros((1, 3, 3, 2), np.float32)
    volume[..., 0] = 5.0
    volume[..., 1] = np.arange(9.0).reshape(3, 3)  # B-scans along the last axis
    out = ScaleIntensityPerBScand("image")({"image": volume})["image"]
    assert isinstance(out, np.ndarray)
    assert np.array_equal(out[..., 0], np.zeros((1, 3, 3)))
    assert np.allclose(out[..., 1], np.arange(9.0).reshape(1, 3, 3) / 8)


def test_scale_bad_arguments_and_shape():
    with pytest.raises(ValueError, match="maxv must be greater than minv"):
        ScaleIntensityPerBScand("image", minv=1.0, maxv=1.0)
    with pytest.raises(ValueError, match=r"/x/mask.png: expected a B-scan .* got shape \(4, 4\)"):
        ScaleIntensityPerBScand("image")({"image": _meta(torch.zeros(4, 4))})


# ---------------------------------------------------------------- ClearBlankBScansd


def test_blank_bscans_of_a_volume_get_no_fluid_and_a_warning(caplog):
    volume = torch.rand(1, 4, 5, 3)
    volume[..., 1] = 7.0  # one B-scan with no image (a padding B-scan)
    image = MetaTensor(volume, meta={"filename_or_obj": "/v/eye.nii.gz"})
    scaled = ScaleIntensityPerBScand("image")({"image": image})["image"]  # as the bundle's network sees it
    assert torch.isfinite(scaled).all() and not scaled[..., 1].any()  # a constant B-scan: zeros, no 0/0
    pred = torch.ones(1, 4, 5, 3)  # a network that calls everything fluid (dark, as fluid is on OCT)
    with caplog.at_level("WARNING"):
        out = ClearBlankBScansd("pred")({"image": scaled, "pred": pred})["pred"]
    assert torch.equal(out[..., 1], torch.zeros(1, 4, 5))
    assert torch.equal(out[..., [0, 2]], torch.ones(1, 4, 5, 2))  # the others untouched
    assert torch.equal(pred, torch.ones(1, 4, 5, 3))  # the input prediction is not modified in place
    assert "/v/eye.nii.gz: B-scan(s) [1] of 3 hold no image" in caplog.text


def test_a_blank_bscan_gets_no_fluid_and_others_pass_unchanged(caplog):
    blank = {"image": _meta(torch.full((1, 4, 5), 0.0), "/x/blank.png"), "pred": torch.ones(1, 4, 5)}
    with caplog.at_level("WARNING"):
        assert not ClearBlankBScansd("pred")(blank)["pred"].any()
    assert "/x/blank.png holds no image" in caplog.text
    scan = {"image": _meta(torch.rand(1, 4, 5)), "pred": torch.ones(1, 4, 5)}
    assert ClearBlankBScansd("pred")(scan)["pred"] is scan["pred"]
    with pytest.raises(ValueError, match=r"/x/blank.png: prediction 'pred' of shape \(1, 4, 4\)"):
        ClearBlankBScansd("pred")({"image": blank["image"], "pred": torch.ones(1, 4, 4)})


# ---------------------------------------------------------------- BScanLayoutd


@pytest.mark.parametrize("axes", [(0, 1, 2), (1, 0, 2), (2, 0, 1), (1, 2, 0)])
def test_layout_brings_any_stored_order_to_rows_columns_bscans(axes):
    canonical = torch.arange(4 * 6 * 3, dtype=torch.float32).reshape(1, 4, 6, 3)  # (C, rows, columns, B-scans)
    stored = canonical.permute(0, *[1 + int(np.argsort(axes)[i]) for i in range(3)])  # axis axes[k] holds dim k
    affine = torch.diag(torch.tensor([0.01, 0.02, 0.1, 1.0]))
    image = MetaTensor(stored, affine=affine, meta={"filename_or_obj": "/v.nii.gz"})
    out = BScanLayoutd("image", bscan_axes=axes)({"image": image})["image"]
    assert torch.equal(out.as_tensor(), canonical)
    assert out.meta["bscan_axes"] == list(axes)
    torch.testing.assert_close(out.affine, affine.double())  # the file's own affine, for writing the mask back


def test_layout_leaves_2d_images_alone():
    image = _meta(torch.rand(1, 5, 7))
    out = BScanLayoutd("image", bscan_axes=(1, 0, 2))({"image": image})["image"]
    assert torch.equal(out, image) and "bscan_axes" not in out.meta


def test_layout_warns_when_the_volume_looks_transposed(caplog):
    wide = _meta(torch.zeros(1, 64, 40, 3), "/data/lateral_first.nii.gz")  # 64 x 40 B-scans
    with caplog.at_level("WARNING"):
        BScanLayoutd("image", expected_aspect=40 / 64)({"image": wide})  # trained on 40 x 64 B-scans
    assert "lateral_first.nii.gz" in caplog.text and "looks transposed" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        BScanLayoutd("image", expected_aspect=40 / 64)({"image": _meta(torch.zeros(1, 40, 64, 3))})
        BScanLayoutd("image", expected_aspect=1.0)({"image": wide})  # square training scans: nothing to tell
        BScanLayoutd("image")({"image": wide})  # aspect unknown
    assert "looks transposed" not in caplog.text


@pytest.mark.parametrize("axes", [(0, 1), (0, 1, 1), (0, 1, 3)])
def test_layout_bad_axes(axes):
    with pytest.raises(ValueError, match="permutation of \\(0, 1, 2\\)"):
        BScanLayoutd("image", bscan_axes=axes)


# ---------------------------------------------------------------- geometry_crops


def test_geometry_crops_resize_gives_the_training_size_from_any_scan():
    from monai.utils import set_determinism

    set_determinism(0)
    crops = Compose(geometry_crops("resize", (32, 32)))
    mask = torch.zeros(1, 50, 90)
    mask[:, 20:30] = 1
    out = crops({"image": torch.rand(1, 50, 90), "label": mask})
    assert out["image"].shape == out["label"].shape == (1, 32, 32)
    assert set(torch.unique(out["label"]).tolist()) <= {0.0, 1.0}  # masks by nearest neighbour


def test_geometry_crops_native_keeps_the_pixel_scale():
    image = torch.arange(50 * 90, dtype=torch.float32).reshape(1, 50, 90)
    out = Compose(geometry_crops("native", (32, 32)))({"image": image, "label": image.clone()})
    assert out["image"].shape == (1, 32, 32)
    assert torch.equal(out["image"], out["label"])  # image and mask cropped alike
    # a crop of the native pixels: neighbouring values differ by exactly one row / one column
    assert torch.all(out["image"][0, 1:, 0] - out["image"][0, :-1, 0] == 90)
    assert torch.all(out["image"][0, 0, 1:] - out["image"][0, 0, :-1] == 1)
    small = Compose(geometry_crops("native", (32, 32)))({"image": torch.ones(1, 20, 40), "label": torch.ones(1, 20, 40)})
    assert small["image"].shape == (1, 32, 32) and small["image"].sum() == 20 * 32  # zero-padded rows


def test_geometry_crops_bad_arguments():
    with pytest.raises(ValueError, match="native"):
        geometry_crops("tiles", (32, 32))
    with pytest.raises(ValueError, match="min_crop_fraction"):
        geometry_crops("resize", (32, 32), min_crop_fraction=0)


# ---------------------------------------------------------------- SeededGaussianNoised


def _image(name="/data/a.png", value=0.5, size=(1, 64, 64)):
    return {"image": _meta(torch.full(size, value), name)}


def test_noise_same_name_is_identical_across_calls_and_instances():
    a = SeededGaussianNoised("image", sigma=0.1, seed=3)(_image())["image"]
    b = SeededGaussianNoised("image", sigma=0.1, seed=3)(_image())["image"]
    t = SeededGaussianNoised("image", sigma=0.1, seed=3)
    c, d = t(_image())["image"], t(_image())["image"]
    assert torch.equal(a, b) and torch.equal(a, c) and torch.equal(c, d)
    assert not torch.equal(a, torch.full_like(a, 0.5))


def test_noise_depends_on_name_and_seed_not_on_the_folder():
    a = SeededGaussianNoised("image", sigma=0.1)(_image("/data/a.png"))["image"]
    b = SeededGaussianNoised("image", sigma=0.1)(_image("/data/b.png"))["image"]
    c = SeededGaussianNoised("image", sigma=0.1, seed=1)(_image("/data/a.png"))["image"]
    moved = SeededGaussianNoised("image", sigma=0.1)(_image("/elsewhere/copy/a.png"))["image"]
    assert not torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a, moved)  # a copied data set gets the very same noisy test images


def test_noise_sigma_zero_leaves_image_unchanged():
    image = torch.rand(1, 16, 16)
    out = SeededGaussianNoised("image", sigma=0.0)({"image": image})["image"]
    assert torch.equal(out, image)


def test_noise_is_clipped_to_unit_range():
    out = SeededGaussianNoised("image", sigma=0.5)(_image(value=0.9))["image"]
    assert out.min() >= 0 and out.max() <= 1
    assert (out == 1).any() and (out == 0).any()
    unclipped = SeededGaussianNoised("image", sigma=0.5, clip=False)(_image(value=0.9))["image"]
    assert unclipped.max() > 1 and unclipped.min() < 0
    assert torch.equal(out, unclipped.clamp(0, 1))  # same draw, only clipped


def test_noise_std_close_to_sigma():
    out = SeededGaussianNoised("image", sigma=0.05)(_image(value=0.5))["image"]
    noise = out - 0.5
    # 4096 samples: sample std within a few percent, mean near zero
    assert noise.std().item() == pytest.approx(0.05, rel=0.06)
    assert abs(noise.mean().item()) < 0.005


def test_noise_negative_sigma_raises():
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        SeededGaussianNoised("image", sigma=-0.1)


def test_noise_preserves_meta_and_dtype():
    data = _image("/data/scan.png")
    data["image"].meta["pixdim"] = [1.0, 0.5]
    out = SeededGaussianNoised("image", sigma=0.1)(data)["image"]
    assert isinstance(out, MetaTensor)
    assert out.meta["filename_or_obj"] == "/data/scan.png"
    assert out.meta["pixdim"] == [1.0, 0.5]
    assert out.dtype == torch.float32 and out.shape == (1, 64, 64)


def test_noise_on_numpy_and_plain_tensors():
    arr = np.full((1, 8, 8), 0.5, dtype=np.float32)
    out = SeededGaussianNoised("image", sigma=0.1)({"image": arr})["image"]
    assert isinstance(out, torch.Tensor) and out.shape == (1, 8, 8)
    # no file name: seeded by the fallback name, still reproducible
    again = SeededGaussianNoised("image", sigma=0.1)({"image": torch.full((1, 8, 8), 0.5)})["image"]
    assert torch.allclose(out, again)
