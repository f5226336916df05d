"""A local datastore that refuses ids that are paths and labels that cannot be trained on."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag

from custom_components.core.image_files import printable_path
from lib.validation import (
    IMAGE_EXTENSIONS,
    LABEL_JSON_EXTENSION,
    check_fluid_mask,
    check_identifier,
    http_errors,
    parse_class_label,
    read_image_size,
    upload_removed_on_error,
)

__all__ = ["CheckedLocalDatastore", "image_patterns"]

logger = logging.getLogger(__name__)


def image_patterns() -> list[str]:
    """fnmatch patterns of the image files the datastore lists (lower and upper case)."""
    return [f"*{ext}" for ext in IMAGE_EXTENSIONS] + [f"*{ext.upper()}" for ext in IMAGE_EXTENSIONS]


class CheckedLocalDatastore(LocalDatastore):
    """:class:`LocalDatastore` over a folder of 2D images with checks at the REST boundary.

    One folder holds OCT B-scans and IFE gels side by side; the label decides which model trains on an image:

    - a single-channel PNG/TIFF/BMP mask of the image's size with values {0, 1} or {0, 255}, or a label map of
      fluid types within {0, 1, 2, 3} (1 IRF, 2 SRF, 3 PED): an OCT fluid label;
    - a ``.json`` file ``{"label": "<class name>"}``: an IFE class label.

    Both are saved with ``PUT /datastore/label?image=<id>&tag=final``. Saving checks the label against its image
    (size, values, class name) and answers 422 when it is unusable, instead of failing the next training run.
    Image ids and label tags must be plain names (400 otherwise); unknown images answer 404.

    Args:
        datastore_path: the studies folder.
        auto_reload: watch the folder for files added or removed by hand.
        read_only: do not reconcile the datastore file with the folder.
    """

    def __init__(self, datastore_path: str, auto_reload: bool = True, read_only: bool = False) -> None:
        self._unlisted: set[tuple[str, str]] = set()  # files left out for their names, warned about once
        super().__init__(datastore_path, extensions=image_patterns(), auto_reload=auto_reload, read_only=read_only)

    def _list_files(self, path: str, patterns: list[str]) -> dict[str, str]:
        # LocalDatastore lists label folders with the image patterns; IFE labels are JSON files, which must not
        # be listed as images (the studies folder may hold a datalist.json) but must survive a reconcile.
        # Private hook and image folder: LocalDatastore 0.8.5 has no public label patterns or image folder.
        if os.path.realpath(path) != os.path.realpath(self._datastore.image_path()):
            patterns = [*patterns, f"*{LABEL_JSON_EXTENSION}"]
        files = super()._list_files(path, patterns)
        # A file name that is not valid UTF-8 (bytes such as b"scan_\xff.png" on Linux) becomes an id holding a
        # lone surrogate. datastore_v2.json then holds "\udcff", which LocalDatastore's own reader (pydantic)
        # refuses: every training run (a subprocess that reads that file) failed, a restart would too, and
        # GET /datastore/?output=all answered 500. Such files are left out of the datastore, untouched on disk,
        # with a warning that names them.
        unnamed = [name for name in files if not _is_utf8(name)]
        for name in unnamed:
            if (path, name) not in self._unlisted:
                self._unlisted.add((path, name))
                logger.warning(
                    f"left out of the datastore: {printable_path(os.path.join(path, name))}: the file name is not "
                    "valid UTF-8, so it cannot be an image id; rename the file to serve it."
                )
        return {name: file for name, file in files.items() if name not in unnamed}

    def _require_image(self, image_id: str) -> str:
        path = self.get_image_uri(image_id)
        if not path or not os.path.isfile(path):
            raise HTTPException(
                status_code=404,
                detail=f"image id {image_id!r} is not in the datastore ({len(self.list_images())} images; "
                "GET /datastore/?output=all lists them).",
            )
        return path

    def get_image_uri(self, image_id: str) -> str:
        with http_errors(400):
            check_identifier(image_id, "image id")
        return super().get_image_uri(image_id)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        with upload_removed_on_error(image_filename):  # refused: FastAPI never runs the endpoint's clean-up
            return self._checked_add_image(image_id, image_filename, image_info)

    def _checked_add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        if image_id:
            with http_errors(400):
                check_identifier(image_id, "image id")
        if not image_filename.lower().endswith(IMAGE_EXTENSIONS):
            raise HTTPException(
                status_code=415,
                detail=f"uploaded image must be one of {', '.join(IMAGE_EXTENSIONS)}, got {os.path.basename(image_filename)!r}.",
            )
        with http_errors(415):
            read_image_size(image_filename, "uploaded image")
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        with upload_removed_on_error(label_filename):  # refused: FastAPI never runs the endpoint's clean-up
            return self._checked_save_label(image_id, label_filename, label_tag, label_info)

    def _checked_save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]
    ) -> str:
        image_path = self._require_image(image_id)
        with http_errors(400):
            check_identifier(label_tag or DefaultLabelTag.FINAL.value, "label tag")
        name = label_filename.lower()
        if name.endswith(LABEL_JSON_EXTENSION):
            with http_errors(422):
                parse_class_label(label_filename, f"label for {image_id!r}")
        elif name.endswith(IMAGE_EXTENSIONS):
            with http_errors(422):
                image_hw = read_image_size(image_path, f"image {image_id!r}")
                check_fluid_mask(label_filename, image_hw, f"mask label for {image_id!r}")
        else:
            raise HTTPException(
                status_code=415,
                detail=f"label must be a mask image ({', '.join(IMAGE_EXTENSIONS)}) for OCT or a {LABEL_JSON_EXTENSION} "
                f'file {{"label": "<class>"}} for IFE, got {os.path.basename(label_filename)!r}.',
            )
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id: str) -> None:
        self._require_image(image_id)
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        with http_errors(400):
            check_identifier(label_id, "label id")
            check_identifier(label_tag, "label tag")
        super().remove_label(label_id, label_tag)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        self._require_image(image_id)
        super().update_image_info(image_id, info)


def _is_utf8(name: str) -> bool:
    """Whether a file name as ``os.listdir`` gives it was valid UTF-8 (an invalid byte comes back as a lone
    surrogate, which UTF-8 cannot encode)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
