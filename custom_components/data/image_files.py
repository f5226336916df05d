# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Reading image files the way both bundles see them.

Convention (the whole project): a 2D image is an array with rows first, ``(H, W)`` or ``(H, W, C)``, exactly as
an ordinary image viewer shows the file. MONAI's ``PILReader`` transposes by default (it returns ``(W, H)``),
so configs load 2D files with ``LoadImaged(reader="PILReader", reverse_indexing=False)`` then
``EnsureChannelFirstd``, giving ``(C, H, W)`` tensors, with a Pillow converter (:class:`PILConvert` for gels, the OCT
converters of :mod:`custom_components.transforms.oct` for B-scans and masks) that gives every file one channel
layout. The plain readers here (:func:`read_array`, :func:`image_shape`) follow the same convention for screening
and validation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "is_nifti",
    "image_shape",
    "read_array",
    "screen_image_file",
    "PILConvert",
]

#: 2D formats read through Pillow
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: volumes read through nibabel
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` files (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def image_shape(path: str | Path) -> tuple[int, ...]:
    """Spatial shape of an image from its header, without decoding the pixels.

    Returns:
        ``(H, W)`` for a 2D image (rows first, whatever the channels), the array shape of a NIfTI file
        (trailing singleton dimensions dropped).
    """
    if is_nifti(path):
        import nibabel as nib

        shape = tuple(int(s) for s in nib.load(str(path)).shape)
        while len(shape) > 2 and shape[-1] == 1:
            shape = shape[:-1]
        return shape
    from PIL import Image

    with Image.open(path) as img:
        width, height = img.size
    return (height, width)


def read_array(path: str | Path) -> np.ndarray:
    """Decode an image into a numpy array: ``(H, W)`` or ``(H, W, C)`` for 2D files, the voxel array for NIfTI."""
    if is_nifti(path):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img)


def screen_image_file(
    path: str | Path, decode: bool = False, extensions: tuple[str, ...] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS
) -> str | None:
    """Screen one input file: is it an image the bundles can use?

    The checks, in order: the file exists and is a regular file; its type is one of ``extensions``; it is not
    empty (zero bytes); it parses (with ``decode``: every pixel decodes); it has pixels; a NIfTI file holds one
    B-scan or one volume (2 or 3 dimensions after dropping trailing dimensions of size 1, which the bundles' NIfTI
    reader squeezes too: a 4D series is refused here, not in the data loader). 2D files of any Pillow mode pass:
    the bundles convert every mode to the channels they need (RGB for gels, grayscale for B-scans).

    Args:
        path: image file.
        decode: also decode every pixel (slower; catches truncated files that a header check misses).
        extensions: file endings accepted (lower case; a gel classifier takes no NIfTI).

    Returns:
        ``None`` when the file is usable, otherwise a one-line description of the problem.
    """
    path = Path(path)
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "not a file"
    if not str(path).lower().endswith(tuple(extensions)):
        kind = "".join(path.suffixes[-2:]) if is_nifti(path) else path.suffix
        return f"unsupported file type {kind!r} (expected one of {', '.join(extensions)})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        if is_nifti(path):
            import nibabel as nib

            img = nib.load(str(path))
            shape = image_shape(path)
            if decode:
                np.asarray(img.dataobj)
        else:
            from PIL import Image

            with Image.open(path) as img:
                shape = (img.height, img.width)
                if decode:
                    img.load()
                else:
                    img.verify()  # checks the structure (PNG chunk CRCs) without decoding the pixels
    except Exception as err:  # any decoder error means "unreadable"; the message says which
        return f"unreadable image ({type(err).__name__}: {err})"
    if min(shape, default=0) < 1:
        return f"image has no pixels (shape {shape})"
    if len(shape) not in (2, 3):
        return f"expected a 2D B-scan or a 3D volume, got a {len(shape)}D array of shape {shape}"
    return None


class PILConvert:
    """Pillow converter for ``PILReader(converter=...)``: ``image.convert(mode)`` when the mode differs.

    A class rather than a lambda so that datasets holding the reader pickle (DataLoader workers, ``spawn``).

    Args:
        mode: target Pillow mode, e.g. ``"L"`` (grayscale, one channel) or ``"RGB"`` (three channels; drops alpha,
            expands palette and grayscale files).

    Raises:
        ValueError: on an empty or non-string mode.
    """

    def __init__(self, mode: str) -> None:
        if not isinstance(mode, str) or not mode:
            raise ValueError(f"mode must be a Pillow mode such as 'L' or 'RGB', got {mode!r}.")
        self.mode = mode

    def __call__(self, image):
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"
