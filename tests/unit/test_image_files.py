"""Image files: rows first as a viewer shows the file, (C, H, W) after the bundles' loading, screening."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from monai.data import PILReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image

from custom_components.data.image_files import PILConvert, image_shape, read_array, screen_image_file

# 3 rows x 5 columns, every pixel distinct, so a transpose or a flip changes the array
RGB = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3) * 5
GRAY = np.arange(15, dtype=np.uint8).reshape(3, 5) * 10


@pytest.fixture
def files(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "rgb.png")
    Image.fromarray(GRAY).save(tmp_path / "gray.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    return tmp_path


def test_plain_reads_keep_rows_first(files):
    np.testing.assert_array_equal(read_array(files / "rgb.png"), RGB)
    np.testing.assert_array_equal(read_array(files / "gray.png"), GRAY)
    assert image_shape(files / "rgb.png") == (3, 5)
    assert screen_image_file(files / "corrupt.png").startswith("unreadable image")
    assert screen_image_file(files / "missing.png") == "file not found"


@pytest.mark.parametrize("mode, rgb_shape, gray_shape", [("RGB", (3, 3, 5), (3, 3, 5)), ("L", (1, 3, 5), (1, 3, 5))])
def test_bundle_loading_gives_channel_first_rows_first(files, mode, rgb_shape, gray_shape):
    # how the IFE configs load gels: PILReader without its transpose, every file converted to one mode
    reader = PILReader(reverse_indexing=False, converter=PILConvert(mode))
    load = Compose([LoadImaged("image", reader=reader, image_only=True), EnsureChannelFirstd("image")])
    rgb = load({"image": str(files / "rgb.png")})["image"]
    gray = load({"image": str(files / "gray.png")})["image"]
    assert tuple(rgb.shape) == rgb_shape and tuple(gray.shape) == gray_shape
    if mode == "RGB":  # pixel for pixel the file as a viewer shows it, channels moved first
        np.testing.assert_array_equal(rgb.numpy(), RGB.transpose(2, 0, 1).astype(np.float32))
        np.testing.assert_array_equal(gray[0].numpy(), GRAY.astype(np.float32))
    pickle.dumps(load)  # DataLoader workers receive the transforms pickled


def test_pil_convert_validates_its_mode():
    assert PILConvert("L")(Image.fromarray(RGB)).mode == "L"
    with pytest.raises(ValueError, match="Pillow mode"):
        PILConvert("")
