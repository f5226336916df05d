# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Reading image files the way both bundles see them.

Convention (the whole project): a 2D image is an array with rows first, ``(H, W)`` or ``(H, W, C)``, exactly as
an ordinary image viewer shows the file. MONAI's ``PILReader`` transposes by default (it returns ``(W, H)``),
so configs load 2D files with ``LoadImaged(reader="PILReader", reverse_indexing=False)``; the helpers here follow
the same convention for validation and reporting.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "is_nifti",
    "is_supported",
    "image_shape",
    "read_array",
    "check_readable",
]

#: 2D formats read through Pillow
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
#: volumes read through nibabel
NIFTI_EXTENSIONS = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` files (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def is_supported(path: str | Path) -> bool:
    """True for the 2D image and NIfTI extensions this project reads."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS + NIFTI_EXTENSIONS)


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


def check_readable(path: str | Path, decode: bool = False) -> str | None:
    """Check that a file exists and parses as an image.

    Args:
        path: image file.
        decode: also decode every pixel (slower; catches truncated files that a header check misses).

    Returns:
        ``None`` when the file is readable, otherwise a one-line description of the problem.
    """
    path = Path(path)
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "not a file"
    if not is_supported(path):
        return f"unsupported file type {path.suffix!r} (expected one of {IMAGE_EXTENSIONS + NIFTI_EXTENSIONS})"
    try:
        if is_nifti(path):
            import nibabel as nib

            img = nib.load(str(path))
            if decode:
                np.asarray(img.dataobj)
        else:
            from PIL import Image

            with Image.open(path) as img:
                if decode:
                    img.load()
                else:
                    img.verify()  # checks the structure (PNG chunk CRCs) without decoding the pixels
    except Exception as err:  # any decoder error means "unreadable"; the message says which
        return f"unreadable image ({type(err).__name__}: {err})"
    return None
