# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Reading image files the way both bundles see them.

Convention (the whole project): a 2D image is an array with rows first, ``(H, W)`` or ``(H, W, C)``, exactly as
an ordinary image viewer shows the file. MONAI's ``PILReader`` transposes by default (it returns ``(W, H)``),
so configs load 2D files with ``LoadImaged(reader="PILReader", reverse_indexing=False)`` then
``EnsureChannelFirstd``, giving ``(C, H, W)`` tensors, with a Pillow converter (:class:`PILConvert` for gels, the OCT
converters of :mod:`custom_components.oct.transforms` for B-scans and masks) that gives every file one channel
layout. The plain readers here (:func:`read_array`, :func:`image_shape`) follow the same convention for screening
and validation.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "IMAGE_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "DICOM_EXTENSIONS",
    "MIN_IMAGE_SIDE",
    "MAX_IMAGE_PIXELS",
    "MAX_VOLUME_VOXELS",
    "PIL_MODES",
    "is_nifti",
    "is_dicom_file",
    "nifti_spacing_mm",
    "image_shape",
    "read_array",
    "printable_path",
    "register_format_screener",
    "screen_image_file",
    "PILConvert",
]

#: 2D formats read through Pillow; a GIF (the format some public gel sets ship in) is read as its first frame, which
#: is what Pillow opens
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
#: volumes read through nibabel
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
#: DICOM files by name; a file without an extension is DICOM when its content says so (:func:`is_dicom_file`)
DICOM_EXTENSIONS = (".dcm", ".dicom")
#: cheap screeners of the formats a domain reads with a loader of its own, by lower-case file ending: each takes the
#: path and returns ``None`` when the file looks like its format, else the problem. The OCT wing registers its
#: vendor formats (:func:`custom_components.oct.volumes.screen_vendor_file`); this module knows none of them.
_FORMAT_SCREENERS: dict[str, Callable[[Path], str | None]] = {}
#: the shortest side (pixels) a gel or a B-scan may have: real ones have hundreds of pixels (gels about 400 x 600,
#: B-scans 496 x 512 and more); a 1 x 1 or 4 x 4 file is a broken export or a placeholder, and the networks would
#: only see it blown up to their input size. A volume needs it in its two largest axes (its B-scan plane; the
#: number of B-scans may be anything).
MIN_IMAGE_SIDE = 8
#: the most pixels a 2D file may have (50 megapixels, 150 MB as 8-bit RGB; an 8000 x 6000 scan). Checked from the
#: header, before any pixel is decoded: a PNG or TIFF of a few kilobytes can declare 20000 x 20000 pixels (a
#: "decompression bomb"), and Pillow only warns up to twice its own ``Image.MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = 50_000_000
#: the most voxels a NIfTI volume may have (2**29, 2 GiB as float32; 1024 x 1024 x 512), from its header
MAX_VOLUME_VOXELS = 2**29
#: the Pillow modes both bundles convert (to RGB for gels, to one channel for B-scans and masks); anything else
#: (e.g. ``LAB`` TIFFs) has no conversion and is refused at screening rather than failing in the data loader
PIL_MODES = frozenset(
    ("1", "L", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LA", "PA", "I", "F")
    + ("I;16", "I;16L", "I;16B", "I;16N")
)


def is_nifti(path: str | Path) -> bool:
    """True for ``.nii`` and ``.nii.gz`` files (case-insensitive)."""
    return str(path).lower().endswith(NIFTI_EXTENSIONS)


def is_dicom_file(path: str | Path) -> bool:
    """True when the file has the DICOM Part 10 preamble: ``DICM`` at byte 128 (reads 132 bytes, never raises)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


#: a NIfTI header's spatial unit (as nibabel names it) in mm; "unknown" is read as mm, NIfTI's usual unit
_NIFTI_UNIT_MM = {"mm": 1.0, "meter": 1000.0, "micron": 0.001, "unknown": 1.0}


def nifti_spacing_mm(path: str | os.PathLike) -> tuple[float, ...] | None:
    """Voxel sizes in mm of a NIfTI file along its stored axes (2 or 3 of them), or None when the header gives none.

    A header whose qform and sform codes are both 0 has no spatial information: its ``pixdim`` is a placeholder
    (nibabel writes 1 for an image saved without an affine), so the spacing is unknown rather than 1 mm. Units are
    converted from the header's ``xyzt_units`` (metres and microns too). Only the header is read. The one reading
    of a NIfTI spacing in the project (the OCT reader's and the fluid writer's).
    """
    import nibabel as nib

    header = nib.load(os.fspath(path)).header
    if int(header["qform_code"]) == 0 and int(header["sform_code"]) == 0:
        return None
    scale = _NIFTI_UNIT_MM.get(header.get_xyzt_units()[0], 1.0)
    affine = header.get_best_affine()
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0)) * scale
    spatial = min(3, len(header.get_data_shape()[:3]))
    return tuple(float(s) for s in sizes[:spatial])


def register_format_screener(extensions: Iterable[str], screen: Callable[[Path], str | None]) -> None:
    """Have :func:`screen_image_file` screen files of ``extensions`` (lower case, with the dot) with ``screen``: a
    cheap check (size, first bytes) of a format whose parsing is left to a domain's loader, returning ``None`` for a
    file that looks right and the problem otherwise. A domain registers its formats when its reader is imported."""
    for extension in extensions:
        _FORMAT_SCREENERS[extension.lower()] = screen


def _screen_dicom(path: Path) -> str | None:
    """Cheap screening of a DICOM file: the ``DICM`` marker only."""
    return None if is_dicom_file(path) else "not a DICOM file (no 'DICM' marker at byte 128)"


def _squeezed(shape) -> tuple[int, ...]:
    """A NIfTI shape without its trailing dimensions of size 1 (the bundles' NIfTI reader squeezes them too)."""
    shape = tuple(int(n) for n in shape)
    while len(shape) > 2 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def image_shape(path: str | Path) -> tuple[int, ...]:
    """Spatial shape of an image from its header, without decoding the pixels.

    Returns:
        ``(H, W)`` for a 2D image (rows first, whatever the channels), the array shape of a NIfTI file
        (trailing singleton dimensions dropped).
    """
    if is_nifti(path):
        import nibabel as nib

        return _squeezed(nib.load(str(path)).shape)
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


def printable_path(path: str | bytes | os.PathLike) -> str:
    """``path`` as text that a UTF-8 file (a CSV, a log) can hold, each byte of the name that is not UTF-8 shown as
    ``\\xNN``.

    A file name is bytes on POSIX; Python keeps the bytes that are not UTF-8 (``b"gel_\\xff.png"``) as lone surrogates
    (``"gel_\\udcff.png"``), which a UTF-8 writer refuses with ``UnicodeEncodeError``. Valid names come back
    unchanged; so does any other text, which makes it fit for messages that quote such a name too.

    Args:
        path: a file path (``str``, ``bytes`` or path-like) or a message.

    Returns:
        valid UTF-8 text, e.g. ``gel_\\xff.png`` (a backslash, then ``xff``) for that name.
    """
    text = os.fspath(path)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name byte gives: shown as \udXXX
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _size_problem(shape: tuple[int, ...] | None, count: int, what: str = "pixels") -> str | None:
    """Too many pixels or voxels (``count``, from the header), or a side under :data:`MIN_IMAGE_SIDE` (the two
    largest axes of ``shape``; ``None`` when only the count is known)."""
    limit = MAX_IMAGE_PIXELS if what == "pixels" else MAX_VOLUME_VOXELS
    dims = "" if shape is None else f" ({' x '.join(map(str, shape))})"
    if count > limit:
        return (
            f"too large: {count:,} {what}{dims}, above the limit of {limit:,}; refused from the header without "
            "decoding (a possible decompression bomb)"
        )
    if shape is not None and min(sorted(shape)[-2:]) < MIN_IMAGE_SIDE:
        least = f"{MIN_IMAGE_SIDE} x {MIN_IMAGE_SIDE}"
        return f"too small: {' x '.join(map(str, shape))} {what}; a gel or B-scan needs at least {least}"
    return None


def _finite_problem(values: np.ndarray, what: str) -> str | None:
    """NaN or infinite values in a floating-point image: they would turn the scaled input, hence the result, to NaN."""
    if values.dtype.kind != "f":
        return None
    nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    if not nan and not inf:
        return None
    return f"NaN or infinite values: {nan} NaN and {inf} infinite of {values.size:,} {what}; not a valid scan"


def _screen_nifti(path: Path, decode: bool) -> str | None:
    import nibabel as nib

    img = nib.load(str(path))
    shape = _squeezed(img.shape)
    if min(shape, default=0) < 1:
        return f"image has no pixels (shape {shape})"
    if len(shape) not in (2, 3):
        return f"expected a 2D B-scan or a 3D volume, got a {len(shape)}D array of shape {shape}"
    # the minimum holds in a volume's two largest axes (its B-scan plane, whatever its axis order; the number of
    # B-scans is free)
    size = _size_problem(shape, int(np.prod(shape)), "voxels" if len(shape) == 3 else "pixels")
    if size:
        return size
    dtype = img.get_data_dtype()
    if dtype.kind not in "biuf":  # RGB or complex voxels: the reader gives no grayscale intensities
        return f"voxel type {dtype} is not a grayscale intensity (expected integer or floating-point voxels)"
    if decode:  # the voxels as the reader gives them (scl_slope applied): NaN and Inf only show here
        return _finite_problem(np.asarray(img.dataobj), "voxels")
    return None


def _screen_2d(path: Path, decode: bool) -> str | None:
    from PIL import Image

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as err:  # over twice Pillow's own limit: refused before any decoding
        found = re.search(r"\((\d+) pixels\)", str(err))
        count = int(found.group(1)) if found else 2 * (Image.MAX_IMAGE_PIXELS or MAX_IMAGE_PIXELS) + 1
        return _size_problem(None, count)
    with img:
        shape = (img.height, img.width)
        if min(shape) < 1:
            return f"image has no pixels (shape {shape})"
        size = _size_problem(shape, shape[0] * shape[1])
        if size:
            return size
        if img.mode not in PIL_MODES:
            return f"unsupported pixel mode {img.mode!r} (no conversion to RGB or grayscale)"
        # verify() checks every PNG chunk's CRC to the end of the file without decoding pixels; for JPEG, TIFF and
        # BMP it checks next to nothing (a truncated JPEG passes), so those are decoded whatever ``decode`` says, as
        # are float images, whose NaN and Inf only show in the pixels
        if decode or img.format != "PNG" or img.mode == "F":
            img.load()
            return _finite_problem(np.asarray(img), "pixels") if img.mode == "F" else None
        img.verify()
    return None


def screen_image_file(
    path: str | Path, decode: bool = False, extensions: tuple[str, ...] = IMAGE_EXTENSIONS + NIFTI_EXTENSIONS
) -> str | None:
    """Screen one input file: can the bundles' loaders read it, and is it a plausible gel, B-scan or volume?

    The checks, in order: the file exists and is a regular file; its type is one of ``extensions`` (by name; the content
    decides the decoder, so JPEG bytes behind a ``.png`` name are read as the JPEG they are); it is not empty (zero
    bytes); its header parses; it has pixels; its size, from the header, is within [:data:`MIN_IMAGE_SIDE`,
    :data:`MAX_IMAGE_PIXELS`] (a volume: :data:`MAX_VOLUME_VOXELS`, and the minimum in its two largest axes), so a
    decompression bomb is refused before any pixel is allocated; a 2D file has a Pillow mode the bundles convert
    (:data:`PIL_MODES`); a NIfTI file holds one B-scan or one volume (2 or 3 dimensions after dropping trailing
    dimensions of size 1, which the bundles' NIfTI reader squeezes too) of integer or floating-point voxels; finally the
    pixels decode (a truncated file fails here) and hold no NaN or infinite value. PNGs are checked without decoding
    unless ``decode`` (their chunk checksums catch truncation); JPEG, TIFF, BMP and float images are always decoded, as
    their headers vouch for nothing. Every mode of :data:`PIL_MODES` passes: the bundles convert it (:class:`PILConvert`
    for gels, ``custom_components.oct.transforms`` for B-scans). DICOM files and the formats a domain registered
    (:func:`register_format_screener`: the OCT vendor files) are screened cheaply: not empty, and the ``DICM`` marker or
    the registered check (first bytes, size); parsing them is left to the loader, whose errors are skipped and reported
    like any other load failure. A file without extension is accepted as DICOM when ``.dcm`` is among ``extensions`` and
    its content is DICOM.

    Args:
        path: image file.
        decode: also decode every pixel of PNG and NIfTI files (slower; catches a PNG whose compressed data is
            corrupt under valid checksums, and NaN or Inf in a NIfTI volume).
        extensions: file endings accepted (lower case; a gel classifier takes no NIfTI).

    Returns:
        ``None`` when the file is usable, otherwise a one-line description of the problem (``"empty file (0
        bytes)"``, ``"unreadable image (<error>)"``, ``"too small: ..."``, ``"too large: ..."``, ...).
    """
    path = Path(path)
    if not path.exists():
        return "file not found"
    if not path.is_file():
        return "not a file"
    suffix = "nifti" if is_nifti(path) else path.suffix.lower()
    # a DICOM file without extension (as PACS exports name them) counts when DICOM is accepted
    dicom_without_extension = suffix == "" and DICOM_EXTENSIONS[0] in extensions and is_dicom_file(path)
    if not dicom_without_extension and not str(path).lower().endswith(tuple(extensions)):
        kind = "".join(path.suffixes[-2:]) if is_nifti(path) else path.suffix
        return f"unsupported file type {kind!r} (expected one of {', '.join(extensions)})"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    try:
        if dicom_without_extension or suffix in DICOM_EXTENSIONS:
            return _screen_dicom(path)
        if suffix in _FORMAT_SCREENERS:
            return _FORMAT_SCREENERS[suffix](path)
        return _screen_nifti(path, decode) if is_nifti(path) else _screen_2d(path, decode)
    except Exception as err:  # any decoder error means "unreadable"; the message says which
        return f"unreadable image ({type(err).__name__}: {err})"


def _is_high_depth(mode: str) -> bool:
    """Pillow modes of more than 8 bits per value: 16-bit (``I;16*``), 32-bit integer (``I``) and float (``F``)."""
    return mode in ("I", "F") or mode.startswith("I;16")


class PILConvert:
    """Pillow converter for ``PILReader(converter=...)``: ``image.convert(mode)`` when the mode differs, with
    high-depth grayscale scaled rather than clipped.

    Pillow's own conversion of a 16-bit (``I;16*``) or 32-bit integer (``I``) image to an 8-bit mode clips: every
    value above 255 becomes white, so a 16-bit gel would come out almost blank. Those images are first brought to
    8 bits over the full 16-bit range, ``round(value / 257)`` (0 -> 0, 65535 -> 255; 32-bit values outside
    0-65535 are clipped to it), then converted. Float (``F``) images keep Pillow's conversion (values taken as
    0-255). A class rather than a lambda so that datasets holding the reader pickle (DataLoader workers,
    ``spawn``).

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
        if image.mode == self.mode:
            return image
        if image.mode != "F" and _is_high_depth(image.mode) and not _is_high_depth(self.mode):
            from PIL import Image

            values = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")
        return image if image.mode == self.mode else image.convert(self.mode)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mode!r})"
