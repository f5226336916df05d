"""Checks on what REST clients send: datastore ids, image files, OCT masks and IFE class labels.

MONAI Label 0.8.5 passes an ``image`` request value that names an existing file straight to the model, answers
500 for an unknown model or an unreadable upload, and lets a label tag or image id with ``..`` reach
``os.path.join``. The functions here raise ``ValueError`` (usable anywhere, the training subprocess included);
:func:`http_errors` turns them into HTTP 4xx answers at the server's edge.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from fastapi import HTTPException
from PIL import Image

from custom_components.core.image_files import IMAGE_EXTENSIONS, image_shape, screen_image_file
from custom_components.core.validation import mask_value_problem
from custom_components.ife.classes import IFE_CLASSES

__all__ = [
    "IMAGE_EXTENSIONS",
    "LABEL_JSON_EXTENSION",
    "check_identifier",
    "is_server_upload",
    "read_image_size",
    "check_fluid_mask",
    "parse_class_label",
    "http_errors",
    "upload_removed_on_error",
]

#: IFE class labels are JSON label files: ``{"label": "<one of the nine class names>"}``.
LABEL_JSON_EXTENSION = ".json"

# tempfile.NamedTemporaryFile names: "tmp" + 8 characters from this alphabet, then the suffix MONAI Label
# copies from the uploaded file name.
_UPLOAD_NAME = re.compile(r"tmp[a-z0-9_]{8}(\.[A-Za-z0-9._-]{1,32})?")


def check_identifier(value: object, what: str = "image id") -> str:
    """Check that ``value`` is a plain datastore name, not a path.

    Args:
        value: the id (or label tag) sent by the client.
        what: how to name it in the error message.

    Returns:
        ``value`` unchanged.

    Raises:
        ValueError: when ``value`` is not a non-empty string, is an absolute path, or contains ``/``, ``\\``,
            a NUL byte, or is ``.`` or ``..``.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}.")
    if os.path.isabs(value) or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} {value!r} is an absolute path; use the datastore id (GET /datastore/?output=all).")
    if any(c in value for c in ("/", "\\", "\x00")) or value in (".", ".."):
        raise ValueError(
            f"{what} {value!r} is not a datastore id: ids are plain names without '/', '\\' or '..' "
            "(GET /datastore/?output=all lists them)."
        )
    return value


def is_server_upload(path: str) -> bool:
    """Whether ``path`` is a file that MONAI Label's ``/infer`` endpoint itself stored for an upload.

    ``/infer`` with ``-F file=@...`` saves the upload under a ``tempfile.NamedTemporaryFile`` name in the system
    temporary folder and puts that absolute path in the request, where it looks like any other path. Only names
    of that exact form, directly in that folder, are accepted; every other absolute path is refused.

    Args:
        path: the ``image`` value of an inference request.

    Returns:
        True for an existing upload file.
    """
    if not os.path.isabs(path):
        return False
    folder, name = os.path.split(path)
    return (
        os.path.realpath(folder) == os.path.realpath(tempfile.gettempdir())
        and _UPLOAD_NAME.fullmatch(name) is not None
        and os.path.isfile(path)
    )


def read_image_size(path: str, what: str = "image") -> tuple[int, int]:
    """Screen a 2D image file the way the bundles' inputs are screened, decode it completely, and return its size.

    The project's :func:`~custom_components.core.image_files.screen_image_file` refuses, before anything reaches
    a model: a type other than :data:`IMAGE_EXTENSIONS` (by name; the content picks the decoder), an empty,
    truncated or undecodable file, a side under 8 pixels (a 1 x 1 placeholder) and, from the header alone, more
    than 50 megapixels. Pillow itself only refuses over twice its own limit (179 megapixels): a PNG of a few
    hundred bytes declaring 12000 x 12000 pixels used to pass here and make the server decode 144 megapixels and
    run the model on them (11 GB of memory, minutes of a blocked event loop).

    Args:
        path: image file.
        what: how to name the file in the error message.

    Returns:
        ``(height, width)`` in pixels (rows, columns as a viewer shows them).

    Raises:
        ValueError: naming the problem, when the file is not a usable 2D image.
    """
    problem = screen_image_file(path, decode=True, extensions=IMAGE_EXTENSIONS)
    if problem:
        raise ValueError(f"{what} is not a readable 2D image (PNG, JPEG, TIFF or BMP): {problem}")
    return image_shape(path)


def check_fluid_mask(path: str, expected_hw: tuple[int, int], what: str | None = None) -> np.ndarray:
    """Check that a segmentation label is a single-channel fluid mask of the image's size: binary, {0, 1} or
    {0, 255}, or a label map of fluid types within {0, 1, 2, 3} (RETOUCH's 1 IRF, 2 SRF, 3 PED; the values the
    typed model answers), as :func:`~custom_components.core.validation.mask_value_problem` decides for the bundle.

    Args:
        path: mask file (PNG, TIFF, BMP; JPEG is lossy and fails the value check).
        expected_hw: ``(height, width)`` of the image the label belongs to.
        what: how to name the file in the error message (default: ``mask <path>``).

    Returns:
        the mask as a (H, W) array of its stored values.

    Raises:
        ValueError: naming the file, when it is not an image, has colour channels, differs in size from the image,
            or holds other values.
    """
    what = what or f"mask {path}"
    read_image_size(path, what)
    with Image.open(path) as img:
        array = np.asarray(img)
    if array.ndim != 2:
        raise ValueError(f"{what} must be a single-channel mask, got an image of shape {list(array.shape)}.")
    if tuple(array.shape) != tuple(expected_hw):
        raise ValueError(
            f"{what} has size (H, W) = {tuple(array.shape)} but its image is {tuple(expected_hw)}; "
            "a mask must have the size of its image."
        )
    problem = mask_value_problem(array)
    if problem:
        raise ValueError(f"{what}: {problem}.")
    return array


def parse_class_label(path: str, what: str = "label") -> str:
    """Read an IFE class label file.

    Args:
        path: JSON file holding an object with a ``"label"`` key whose value is one of the nine class names
            (``Negative, kappa, lambda, IgG-kappa, IgG-lambda, IgA-kappa, IgA-lambda, IgM-kappa, IgM-lambda``).
        what: how to name the file in the error message.

    Returns:
        the class name.

    Raises:
        ValueError: when the file is not such a JSON object or the name is not one of the nine classes.
    """
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{what} is not a JSON file: {type(e).__name__}: {e}") from e
    if not isinstance(content, dict) or "label" not in content:
        raise ValueError(f'{what} must be a JSON object like {{"label": "IgG-kappa"}}, got {str(content)[:80]!r}.')
    name = content["label"]
    if name not in IFE_CLASSES:
        raise ValueError(f"{what} names the class {name!r}, which is not one of {', '.join(IFE_CLASSES)}.")
    return name


@contextmanager
def http_errors(status_code: int) -> Iterator[None]:
    """Re-raise ``ValueError`` raised inside the block as ``HTTPException(status_code, str(error))``.

    FastAPI answers an ``HTTPException`` raised anywhere below an endpoint with that status and
    ``{"detail": message}``, and the server goes on serving.

    Args:
        status_code: the 4xx code to answer with.

    Raises:
        HTTPException: for a ``ValueError`` inside the block.
    """
    try:
        yield
    except ValueError as e:
        raise HTTPException(status_code=status_code, detail=str(e)) from e


@contextmanager
def upload_removed_on_error(path: object) -> Iterator[None]:
    """Delete the server's own upload file ``path`` when the block raises.

    MONAI Label's ``/infer`` and ``/datastore`` endpoints copy an upload to a temporary file and delete it in a
    background task, which FastAPI only runs after a successful response: every refused upload (4xx) or failed
    inference stayed in the temporary folder, a disk leak as large as the uploads. Only files that
    :func:`is_server_upload` recognises are deleted, never a file a caller of the datastore API passed in.

    Args:
        path: the file the request refers to (anything else than an upload is left alone).
    """
    try:
        yield
    except Exception:
        if isinstance(path, str) and is_server_upload(path):
            with contextlib.suppress(OSError):  # already gone: the request's own error is what the client must see
                os.remove(path)
        raise
