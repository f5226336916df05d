"""Image files: rows first as a viewer shows the file, (C, H, W) after the bundles' loading, screening (every file of
the corpus of bad and odd inputs, ``tests/bad_inputs.py``), high-depth gels, names that are not UTF-8."""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import bad_inputs
import nibabel as nib
import numpy as np
import pytest
from monai.data import PILReader
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from PIL import Image, ImageFile

from custom_components.core.image_files import (
    IMAGE_EXTENSIONS,
    MAX_IMAGE_PIXELS,
    MIN_IMAGE_SIDE,
    PIL_MODES,
    PILConvert,
    image_shape,
    printable_path,
    read_array,
    screen_image_file,
)
from custom_components.core.inputs import scan_inputs
from custom_components.oct.transforms import BScanToGrayscale, MaskToSingleChannel

# screening opens the corpus's 12000 x 12000 header with Pillow, which warns (before screening refuses it)
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

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


# ---------------------------------------------------------------- the corpus of bad and odd files (tests/bad_inputs.py)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return bad_inputs.write_corpus(tmp_path_factory.mktemp("corpus"))


def _verdict_matches(verdict: str | None, case: bad_inputs.Case) -> bool:
    return verdict is None if case.usable else verdict is not None and verdict.startswith(case.problem)


@pytest.mark.parametrize("case", bad_inputs.CASES, ids=lambda c: ascii(c.name))
def test_screening_gives_every_corpus_file_its_verdict(corpus, case):
    # decode=True: what inference and evaluation run
    assert _verdict_matches(screen_image_file(corpus[case.name], decode=True), case), screen_image_file(
        corpus[case.name], decode=True
    )
    if "ife" in case.kinds:  # a 2D file: training's header-level check (decode=False) gives the same verdict
        assert _verdict_matches(screen_image_file(corpus[case.name]), case), screen_image_file(corpus[case.name])
    else:  # a volume is no training image
        assert screen_image_file(corpus[case.name], extensions=IMAGE_EXTENSIONS).startswith("unsupported file type")


def test_oversized_images_are_refused_from_the_header_without_decoding(corpus, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    monkeypatch.setattr(ImageFile.ImageFile, "verify", no_decoding)
    # 20000 x 20000 is over twice Pillow's own limit (it raises); 12000 x 12000 is between once and twice (it only
    # warns and would decode 144 MB): both are over MAX_IMAGE_PIXELS, and refused the same way
    for name, shown in (("bomb_20000x20000.png", "400,000,000 pixels"), ("large_12000x12000.png", "144,000,000 pixels")):
        for decode in (False, True):
            verdict = screen_image_file(corpus[name], decode=decode)
            assert verdict.startswith(f"too large: {shown}") and f"limit of {MAX_IMAGE_PIXELS:,}" in verdict
    assert MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS  # ours is the limit that counts: Pillow's is not reached


@pytest.mark.parametrize("shape, refused", [((8, 8), False), ((7, 40), True), ((40, 7), True), ((1, 1), True)])
def test_minimum_side(tmp_path, shape, refused):
    Image.fromarray(np.full(shape, 100, np.uint8)).save(tmp_path / "x.png")
    verdict = screen_image_file(tmp_path / "x.png")
    assert (verdict == f"too small: {shape[0]} x {shape[1]} pixels; a gel or B-scan needs at least 8 x 8") == refused
    assert (verdict is None) != refused
    assert MIN_IMAGE_SIDE == 8


def test_a_volume_needs_the_minimum_in_its_bscan_plane_only(tmp_path):
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 8, 1, 1), np.float32), np.eye(4)), tmp_path / "a.nii")
    assert screen_image_file(tmp_path / "a.nii", decode=True) is None  # one B-scan of 40 x 8
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((40, 6, 2), np.float32), np.eye(4)), tmp_path / "b.nii")
    assert screen_image_file(tmp_path / "b.nii", decode=True).startswith("too small: 40 x 6 x 2 voxels")


def test_scan_inputs_over_the_corpus_lists_every_refused_file_in_valid_utf8(corpus, tmp_path):
    folder = next(iter(corpus.values())).parent
    report = tmp_path / "skipped.csv"
    entries = scan_inputs(folder, skipped_report=report)
    assert sorted(os.path.basename(e["image"]) for e in entries) == sorted(c.name for c in bad_inputs.cases(usable=True))
    with open(report, newline="", encoding="utf-8") as f:  # strict UTF-8
        reasons = {os.path.basename(r["image"]): r["error"] for r in csv.DictReader(f)}
    refused = {printable_path(c.name): c.problem for c in bad_inputs.cases(usable=False)}
    assert reasons.keys() == refused.keys()
    assert all(reasons[name].startswith(problem) for name, problem in refused.items())
    assert reasons["broken_\\xff.png"].startswith("unreadable image")


def test_printable_path_escapes_bytes_that_are_not_utf8():
    name = os.fsdecode(b"/data/gel_\xff.png")  # how os.listdir gives that name
    with pytest.raises(UnicodeEncodeError):
        name.encode("utf-8")
    assert printable_path(name) == "/data/gel_\\xff.png"
    assert printable_path(b"/data/gel_\xff.png") == "/data/gel_\\xff.png"
    assert printable_path(Path("/data/gel_é.png")) == "/data/gel_é.png"  # valid UTF-8 unchanged
    assert printable_path("x\ud800y") == "x\\ud800y"  # a surrogate no file name byte gives


@pytest.mark.parametrize("mode", sorted(PIL_MODES))
def test_every_mode_screening_accepts_converts_for_both_bundles(mode):
    # what the loaders will do with a file that passed screening: no mode may fail there, mid-run
    image = Image.new(mode, (16, 12))
    for converter in (PILConvert("RGB"), BScanToGrayscale(), MaskToSingleChannel()):
        values = np.asarray(converter(image))
        assert values.shape[:2] == (12, 16) and values.dtype.kind in "biuf", (converter, values.dtype)


# ---------------------------------------------------------------- PILConvert: high-depth gels scaled, not clipped


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_pil_convert_scales_high_depth_grayscale_to_8_bits(mode):
    values = np.array([[0, 257, 32896], [65535, 1000, 514]], np.uint16)
    image = Image.fromarray(values) if mode == "I;16" else Image.fromarray(values.astype(np.int32), "I")
    assert image.mode == mode
    expected = np.rint(values / 257).astype(np.uint8)  # 0, 1, 128, 255, 4, 2
    assert np.array_equal(np.asarray(PILConvert("L")(image)), expected)
    rgb = np.asarray(PILConvert("RGB")(image))
    assert rgb.shape == (2, 3, 3) and all(np.array_equal(rgb[..., c], expected) for c in range(3))
    assert np.asarray(image.convert("RGB")).max() == 255 and (np.asarray(image.convert("RGB"))[..., 0] == 255).sum() == 5
    assert PILConvert("I")(image).mode == "I"  # a high-depth target keeps the values


def test_a_16_bit_gel_loads_as_its_8_bit_original(tmp_path):
    gray = bad_inputs.base_image()
    Image.fromarray(gray).save(tmp_path / "gel8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "gel16.png")
    reader = PILReader(reverse_indexing=False, converter=PILConvert("RGB"))
    load = Compose([LoadImaged("image", reader=reader, image_only=True), EnsureChannelFirstd("image")])
    eight, sixteen = (load({"image": str(tmp_path / n)})["image"] for n in ("gel8.png", "gel16.png"))
    assert eight.shape == (3, *bad_inputs.SHAPE)
    assert np.array_equal(sixteen.numpy(), eight.numpy())


def test_nifti_spacing_mm_reads_units_and_refuses_a_header_without_space(tmp_path):
    from custom_components.core.image_files import nifti_spacing_mm

    micron = nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.diag([3.9, 11.7, 120.0, 1.0]))
    micron.header.set_xyzt_units("micron")
    nib.save(micron, tmp_path / "um.nii.gz")
    assert nifti_spacing_mm(tmp_path / "um.nii.gz") == pytest.approx((0.0039, 0.0117, 0.12))
    nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.diag([0.5, 0.25, 1.0, 1.0])), tmp_path / "b.nii")
    assert nifti_spacing_mm(tmp_path / "b.nii") == pytest.approx((0.5, 0.25))  # a 2D file: two sizes
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), None), tmp_path / "bare.nii")
    assert nifti_spacing_mm(tmp_path / "bare.nii") is None  # qform and sform codes 0: pixdim is a placeholder


def test_zeiss_cube_screening_uses_the_one_table_of_cube_sizes(tmp_path):
    from custom_components.core.image_files import screen_image_file
    from custom_components.oct.volumes import OCT_EXTENSIONS, ZEISS_CUBES, ZEISS_DEPTH

    for columns, _ in ZEISS_CUBES:
        (tmp_path / f"c{columns}.img").write_bytes(b"\x00" * (ZEISS_DEPTH * columns * 2))
        assert screen_image_file(tmp_path / f"c{columns}.img", extensions=OCT_EXTENSIONS) is None
    (tmp_path / "odd.img").write_bytes(b"\x00" * 1000)
    why = screen_image_file(tmp_path / "odd.img", extensions=OCT_EXTENSIONS)
    assert f"{ZEISS_DEPTH}-deep B-scans of 512 or 200 A-scans" in why


def test_a_gif_is_screened_and_loaded_as_its_first_frame(tmp_path):
    """Public gel sets ship as GIFs (palette images, sometimes animated): screening accepts them and the bundles'
    loading gives the first frame's colours, not palette indices."""
    first = np.zeros((24, 36, 3), np.uint8)
    first[:, :12] = (200, 40, 90)  # a stained lane on white
    first[:, 12:] = 255
    second = np.full_like(first, 30)
    path = tmp_path / "gel.gif"
    frames = [Image.fromarray(a).convert("P", palette=Image.Palette.ADAPTIVE) for a in (first, second)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert screen_image_file(path, decode=True, extensions=IMAGE_EXTENSIONS) is None
    load = LoadImaged("image", reader=PILReader(converter=PILConvert("RGB"), reverse_indexing=False), image_only=True)
    image = np.asarray(load({"image": str(path)})["image"])
    assert image.shape == (24, 36, 3)
    np.testing.assert_allclose(image[0, 0], (200, 40, 90), atol=8)  # palette quantisation, not an index
    np.testing.assert_array_equal(image[0, -1], (255, 255, 255))
    assert scan_inputs(tmp_path, extensions=IMAGE_EXTENSIONS) == [{"image": str(path)}]
