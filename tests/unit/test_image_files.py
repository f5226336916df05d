"""Image reading helpers: rows first as a viewer shows the file, (C, H, W) after loading, clear errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from monai.transforms import Compose
from PIL import Image

from custom_components.data.image_files import (
    PILConvert,
    screen_image_file,
    image_shape,
    load_2d_image_transforms,
    read_image_2d,
)

# 3 rows x 5 columns, every pixel distinct, so a transpose or a flip changes the array
RGB = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5
GRAY = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10


@pytest.fixture
def files(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    Image.fromarray(GRAY).save(tmp_path / "gray.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return tmp_path


def test_read_image_2d_keeps_rows_first(files):
    np.testing.assert_array_equal(read_image_2d(files / "rgb.png"), RGB)
    np.testing.assert_array_equal(read_image_2d(files / "gray.png"), GRAY)
    assert read_image_2d(files / "gray.png", mode="RGB").shape == (3, 5, 3)
    assert image_shape(files / "rgb.png") == (3, 5)


def test_read_image_2d_errors_name_the_file(files):
    with pytest.raises(FileNotFoundError, match="missing.png not found"):
        read_image_2d(files / "missing.png")
    with pytest.raises(ValueError, match="corrupt.png: unreadable image"):
        read_image_2d(files / "corrupt.png")
    (files / "volume.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match="not a 2D image file"):
        read_image_2d(files / "volume.nii.gz")
    assert screen_image_file(files / "corrupt.png").startswith("unreadable image")
    assert screen_image_file(files / "missing.png") == "file not found"


@pytest.mark.parametrize(
    "mode, rgb_shape, gray_shape",
    [(None, (3, 3, 5), (1, 3, 5)), ("RGB", (3, 3, 5), (3, 3, 5)), ("L", (1, 3, 5), (1, 3, 5))],
)
def test_load_2d_image_transforms_give_channel_first_rows_first(files, mode, rgb_shape, gray_shape):
    load = Compose(load_2d_image_transforms(["image", "label"], mode=mode, allow_missing_keys=True))
    rgb = load({"image": str(files / "rgb.png")})["image"]
    gray = load({"image": str(files / "gray.png"), "label": str(files / "gray.png")})
    assert tuple(rgb.shape) == rgb_shape and tuple(gray["image"].shape) == gray_shape
    assert tuple(gray["label"].shape) == gray_shape
    if mode is None:  # pixel for pixel the file as a viewer shows it, channels moved first
        np.testing.assert_array_equal(rgb.numpy(), RGB.transpose(2, 0, 1).astype(np.float32))
        np.testing.assert_array_equal(gray["image"][0].numpy(), GRAY.astype(np.float32))
    pickle.dumps(load)  # DataLoader workers receive the transforms pickled


def test_pil_convert_validates_its_mode():
    assert PILConvert("L")(Image.fromarray(RGB)).mode == "L"
    with pytest.raises(ValueError, match="Pillow mode"):
        PILConvert("")
