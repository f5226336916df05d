# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""A corpus of bad and odd input files, written by the tests (never committed), with what each must get.

Every case is a file that a user may well hand a bundle: truncated and zero-byte PNG/JPEG/TIFF, a text file named
``.png``, JPEG bytes behind a ``.png`` name, 16-bit, palette, RGBA, grayscale and RGB images (each bundle expects
one of the two), a 1 x 1 image, PNG headers declaring 20000 x 20000 and 12000 x 12000 pixels (decompression bombs:
a few hundred bytes on disk), an image mode no bundle converts (LAB), float images with NaN and Inf, names that
are not valid UTF-8; NIfTI volumes with NaN/Inf, all-constant, 4D, truncated, or a header declaring 4 billion
voxels; fluid masks of another size or with values outside {0, 1} / {0, 255}.

Each :class:`Case` says what screening answers (``problem``: the start of the message, or ``None`` for a file that
is used, with the conversion the bundles' docs describe) and which bundles read its type. ``tests/conftest.py``
puts this folder on ``sys.path``, so test modules anywhere under ``tests/`` use ``import bad_inputs``.

Usage::

    paths = bad_inputs.write_corpus(tmp_path / "corpus")          # {case name: path}
    for case in bad_inputs.cases("oct"):                          # the cases an OCT folder scan picks up
        ...
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = [
    "SHAPE", "NON_UTF8", "NON_UTF8_BROKEN", "Case", "CASES", "MASK_CASES", "base_image", "cases", "write_corpus",
    "write_masks",
]  # fmt: skip

#: (rows, columns) of every usable 2D image of the corpus: small, not square (a transpose would show)
SHAPE = (40, 56)


def base_image() -> np.ndarray:
    """The 8-bit grayscale picture every usable 2D case is made of: smooth bands and a dark pocket (not constant)."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    picture = 120 + 80 * np.sin(rows / 4.0) * np.cos(cols / 9.0)
    picture[12:22, 20:34] = 15  # a dark pocket, as fluid looks on OCT
    return np.clip(picture, 0, 255).astype(np.uint8)


def _rgb() -> np.ndarray:
    gray = base_image()
    return np.stack([gray, np.roll(gray, 3, axis=1), 255 - gray], axis=-1)


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height`` 8-bit grayscale pixels, a tiny IDAT and IEND:
    a few hundred bytes that a reader trusting the header would turn into ``width * height`` bytes of memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 2)  # two rows of the declared width
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _nifti(array: np.ndarray) -> bytes:
    return gzip.compress(nib.Nifti1Image(array, np.diag([0.004, 0.012, 0.12, 1.0])).to_bytes())


def _volume() -> np.ndarray:
    bscans = [base_image(), np.flipud(base_image()), np.roll(base_image(), 5, axis=0)]
    return np.stack(bscans, axis=-1).astype(np.float32)


def _nan_volume() -> np.ndarray:
    volume = _volume()
    volume[3, 4, 0], volume[5, 6, 1], volume[7, 8, 2] = np.nan, np.nan, np.inf
    return volume


def _huge_nifti_header() -> bytes:
    """An uncompressed NIfTI whose header declares 2000 x 2000 x 1000 uint8 voxels, followed by almost no data."""
    header = nib.Nifti1Header()
    header.set_data_shape((2000, 2000, 1000))
    header.set_data_dtype(np.uint8)
    header.set_qform(np.eye(4), code=1)
    return header.binaryblock + b"\0" * 4 + b"\0" * 64


def _float_with_nan() -> bytes:
    picture = base_image().astype(np.float32)
    picture[0, 0], picture[1, 1] = np.nan, np.inf
    return _encoded(picture, "TIFF")


def _palette() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_rgb()).quantize(16).save(buffer, "PNG")  # mode P: 16 palette colours
    return buffer.getvalue()


def _lab() -> bytes:
    buffer = io.BytesIO()
    Image.new("LAB", SHAPE[::-1], (50, 0, 0)).save(buffer, "TIFF")
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    """One corpus file and what the bundles must make of it.

    Attributes:
        name: the file name (a ``str``; a name that is not valid UTF-8 holds lone surrogates, as ``os.listdir``
            gives it).
        content: makes the file's bytes.
        problem: the start of the screening message (``screen_image_file``, the skipped CSV, the error before
            training), or ``None`` when the file is used.
        conversion: for a used file, what the bundles make of it (what the docs say).
        kinds: the bundles whose inputs include this file type: ``"ife"`` (gels: 2D files only) and/or ``"oct"``.
    """

    name: str
    content: Callable[[], bytes]
    problem: str | None
    conversion: str = ""
    kinds: tuple[str, ...] = ("ife", "oct")

    @property
    def usable(self) -> bool:
        return self.problem is None


def _file(array: Callable[[], np.ndarray], fmt: str = "PNG") -> Callable[[], bytes]:
    """The bytes of ``array()`` saved by Pillow in ``fmt``, made when the corpus is written."""
    return lambda: _encoded(array(), fmt)


#: a file name that is not valid UTF-8 (the byte 0xff), as Python holds it
NON_UTF8 = os.fsdecode(b"gel_\xff.png")
NON_UTF8_BROKEN = os.fsdecode(b"broken_\xff.png")

CASES: tuple[Case, ...] = (
    # usable, with the conversion each bundle applies
    Case("gray.png", _file(base_image), None, "IFE: grayscale copied into R, G and B; OCT: as is"),
    Case("rgb.png", _file(_rgb), None, "IFE: as is; OCT: ITU-R 601 luminance (L = 0.299 R + 0.587 G + 0.114 B)"),
    Case("gray16.png", _file(lambda: base_image().astype(np.uint16) * 257), None,
         "IFE: 16-bit scaled to 8 bits as round(value / 257), then as gray.png; OCT: kept at 16 bits, min-max scaled"),
    Case("gray16.tif", _file(lambda: base_image().astype(np.uint16) * 257, fmt="TIFF"), None, "as gray16.png"),
    Case("palette.png", _palette, None, "IFE: palette colours to RGB; OCT: their luminance"),
    Case("rgba.png", _file(lambda: np.dstack([_rgb(), np.full(SHAPE, 128, np.uint8)])), None,
         "alpha dropped (the colour values as stored), then as rgb.png"),
    Case("jpeg_named.png", _file(_rgb, fmt="JPEG"), None, "read as the JPEG it is (the content picks the decoder)"),
    Case(NON_UTF8, _file(base_image), None, "as gray.png; named gel_\\xff.png in the CSVs (backslash escape)"),
    # refused at screening
    Case("truncated.png", lambda: _half(_encoded(base_image(), "PNG")), "unreadable image"),
    Case("truncated.jpg", lambda: _half(_encoded(_rgb(), "JPEG")), "unreadable image"),
    Case("truncated.tif", lambda: _half(_encoded(base_image(), "TIFF")), "unreadable image"),
    Case("zero.png", lambda: b"", "empty file (0 bytes)"),
    Case("zero.jpg", lambda: b"", "empty file (0 bytes)"),
    Case("zero.tif", lambda: b"", "empty file (0 bytes)"),
    Case("text.png", lambda: b"a text file, not an image\n", "unreadable image (UnidentifiedImageError"),
    Case(NON_UTF8_BROKEN, lambda: b"not an image either\n", "unreadable image (UnidentifiedImageError"),
    Case("one_pixel.png", _file(lambda: np.full((1, 1), 128, np.uint8)), "too small: 1 x 1 pixels"),
    Case("bomb_20000x20000.png", lambda: _png_header_only(20000, 20000), "too large: 400,000,000 pixels"),
    Case("large_12000x12000.png", lambda: _png_header_only(12000, 12000),
         "too large: 144,000,000 pixels (12000 x 12000)"),
    Case("lab.tif", _lab, "unsupported pixel mode 'LAB'"),
    Case("float_nan.tif", _float_with_nan, "NaN or infinite values: 1 NaN and 1 infinite of 2,240 pixels"),
    # volumes: OCT inference only (a gel folder is not searched for them)
    Case("volume.nii.gz", lambda: _nifti(_volume()), None, "OCT: each B-scan min-max scaled on its own", ("oct",)),
    Case("constant.nii.gz", lambda: _nifti(np.full((*SHAPE, 3), 7, np.int16)), None,
         "OCT: no image content: an all-zero mask, with a warning naming the file", ("oct",)),
    Case("nan_inf.nii.gz", lambda: _nifti(_nan_volume()), "NaN or infinite values: 2 NaN and 1 infinite of 6,720 voxels", kinds=("oct",)),
    Case("series_4d.nii.gz", lambda: _nifti(np.zeros((*SHAPE, 3, 2), np.float32)),
         "expected a 2D B-scan or a 3D volume, got a 4D array", kinds=("oct",)),
    Case("truncated.nii.gz", lambda: _half(_nifti(_volume())), "unreadable image", kinds=("oct",)),
    Case("huge_header.nii", _huge_nifti_header, "too large: 4,000,000,000 voxels (2000 x 2000 x 1000)", kinds=("oct",)),
)  # fmt: skip


#: fluid masks for OCT training, each paired with ``gray.png``: (file name, mask array, the start of the problem)
MASK_CASES: tuple[tuple[str, np.ndarray, str | None], ...] = (
    ("mask_ok.png", np.pad(np.full((10, 14), 255, np.uint8), ((12, 18), (20, 22))), None),
    ("mask_other_size.png", np.zeros((SHAPE[0] - 2, SHAPE[1]), np.uint8), "mask size (38, 56) differs from image size (40, 56)"),
    ("mask_values.png", np.pad(np.full((10, 14), 128, np.uint8), ((12, 18), (20, 22))), "mask values must be {0, 1} or {0, 255} (binary), or within {0, 1, 2, 3} (fluid types), found 0, 128"),
)  # fmt: skip


def cases(kind: str | None = None, usable: bool | None = None) -> list[Case]:
    """The cases a bundle's inputs include (``kind`` ``"ife"`` or ``"oct"``; ``None``: all), optionally only the
    usable (``True``) or the refused (``False``) ones."""
    return [c for c in CASES if (kind is None or kind in c.kinds) and (usable is None or c.usable == usable)]


def write_corpus(folder: str | os.PathLike, kind: str | None = None, usable: bool | None = None) -> dict[str, Path]:
    """Write the corpus files into ``folder`` (created): all of them, or those :func:`cases` selects.

    Returns:
        ``{case name: path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases(kind, usable):
        path = folder / case.name
        path.write_bytes(case.content())
        paths[case.name] = path
    return paths


def write_masks(folder: str | os.PathLike) -> dict[str, Path]:
    """Write the fluid masks of :data:`MASK_CASES` into ``folder`` (created); returns ``{name: path}``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, mask, _ in MASK_CASES:
        Image.fromarray(mask).save(folder / name)
        paths[name] = folder / name
    return paths
