"""OCT fluid segmentation: a mask PNG the size of the B-scan, and the fluid area (per type) in the JSON.

The served model segments the classes of its checkpoint's recipe (``fluid_classes``,
:mod:`custom_components.oct.fluid_types`): one ``fluid`` class (the paper's protocol), answered as a {0, 255} mask,
or the three types IRF, SRF and PED, answered as a label map with RETOUCH's values 1, 2, 3, the values a typed
training mask holds, so that a corrected answer saved back as the final label trains the model as it is.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferType
from PIL import Image

from custom_components.oct.fluid_types import BINARY_FLUID, FLUID_TYPE_NAMES, check_fluid_classes, label_map
from lib.infers.bundle_task import LocalBundleInferTask
from lib.validation import read_image_size

__all__ = ["OCTFluidSegInfer", "fluid_labels", "fluid_mask", "fluid_result"]

#: pixel value of fluid in the answered mask of a binary model (the project's mask convention: {0, 255})
FLUID_VALUE = 255


def fluid_labels(classes: Sequence[str]) -> dict[str, int]:
    """Label name -> pixel value in the answered mask, in the network's channel order.

    Args:
        classes: the model's fluid classes, ``("fluid",)`` or ``("IRF", "SRF", "PED")``.

    Returns:
        ``{"fluid": 255}`` for the binary model; ``{"IRF": 1, "SRF": 2, "PED": 3}`` (RETOUCH's values, those of
        :func:`~custom_components.oct.fluid_types.label_map`) for the typed one.

    Raises:
        ValueError: for other classes.
    """
    classes = check_fluid_classes(classes)
    if classes == BINARY_FLUID:
        return {"fluid": FLUID_VALUE}
    return {name: k + 1 for k, name in enumerate(classes)}


def fluid_mask(pred: Any, image_hw: tuple[int, int] | None, classes: Sequence[str] = BINARY_FLUID) -> np.ndarray:
    """Turn the bundle's postprocessed prediction into a mask the size of the input.

    Args:
        pred: ``(C, H', W')`` prediction after the bundle's postprocessing, one channel per class of ``classes``
            (sigmoid, then at most one class per pixel: {0, 1} values; anything above 0.5 is set); a binary
            model's may also be ``(H', W')``.
        image_hw: ``(height, width)`` of the input image, or None to keep the prediction's size. When the
            bundle's preprocessing resized the image, the mask is resized back (nearest neighbour).
        classes: the model's fluid classes (:func:`fluid_labels`).

    Returns:
        (H, W) uint8 mask: {0, ``FLUID_VALUE``} for the binary model; for the typed one a label map, 0 for
        background and each type's value of :func:`fluid_labels` (1 IRF, 2 SRF, 3 PED).

    Raises:
        ValueError: when ``pred`` is not one 2D map per class.
    """
    classes = check_fluid_classes(classes)
    array = pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)
    if array.ndim == 2 and classes == BINARY_FLUID:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != len(classes):
        raise ValueError(
            f"expected one 2D fluid map per class ({len(classes)}: {', '.join(classes)}), got a prediction of shape "
            f"{list(array.shape)}."
        )
    if classes == BINARY_FLUID:
        mask = np.where(array[0] > 0.5, FLUID_VALUE, 0).astype(np.uint8)
    else:
        mask = label_map(array)  # channel k -> k + 1, the values fluid_labels gives
    if image_hw is not None and tuple(mask.shape) != tuple(image_hw):
        # PIL sizes are (width, height)
        mask = np.asarray(Image.fromarray(mask).resize((image_hw[1], image_hw[0]), Image.Resampling.NEAREST))
    return mask


def fluid_result(mask: np.ndarray, labels: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Fluid measurements of one B-scan.

    Args:
        mask: (H, W) mask as :func:`fluid_mask` answers it.
        labels: label name -> pixel value (:func:`fluid_labels`); default the binary model's ``{"fluid": 255}``.

    Returns:
        ``fluid_area_px`` (all fluid, pixels; a PNG carries no physical spacing), ``fluid_fraction`` (of the
        B-scan's pixels), ``image_size`` ([H, W]) and ``mask_values`` (pixel value of background and of each
        label). With fluid types also ``fluid_types``: per type its ``name`` (e.g. intraretinal fluid), ``area_px``
        and ``fraction``.
    """
    labels = dict(labels or {"fluid": FLUID_VALUE})
    area = int(np.count_nonzero(mask))
    result: dict[str, Any] = {"fluid_area_px": area, "fluid_fraction": round(area / mask.size, 6)}
    if list(labels) != list(BINARY_FLUID):
        # the binary answer keeps exactly its keys from before fluid types
        result["fluid_types"] = {}
        for name, value in labels.items():
            typed = int(np.count_nonzero(mask == value))
            result["fluid_types"][name] = {
                "name": FLUID_TYPE_NAMES[name],
                "area_px": typed,
                "fraction": round(typed / mask.size, 6),
            }
    result["image_size"] = [int(mask.shape[0]), int(mask.shape[1])]
    result["mask_values"] = {"background": 0, **labels}
    return result


class OCTFluidSegInfer(LocalBundleInferTask):
    """Segmentation task for ``bundles/oct_fluid_seg``.

    Preprocessing, sliding-window inferer and postprocessing (sigmoid, one class per pixel) come from the bundle.
    The labels are those of the network built from the checkpoint's recipe (:func:`fluid_labels` of the
    ``classes`` of ``inference.json``): ``{"fluid": 255}`` or ``{"IRF": 1, "SRF": 2, "PED": 3}``, and they follow a
    new checkpoint of other classes. MONAI Label's own restore step and writer are not used: both assume MONAI's
    default x-first (width, height) axis order, while the bundles load PNGs rows-first
    (``PILReader(reverse_indexing=False)``), so they would transpose non-square B-scans. The mask is written as a
    PNG that overlays the B-scan in any viewer.

    Args:
        path: bundle folder.
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, type=InferType.SEGMENTATION, labels=self.recipe_labels, add_post_restore=False)

    def recipe_labels(self) -> dict[str, int]:
        """The labels of the network :attr:`bundle_config` builds (its ``classes``, read from the recipe)."""
        return fluid_labels(self.bundle_config.get_parsed_content("classes"))

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        path = data.get("image_path")
        image_hw = read_image_size(path) if isinstance(path, str) and os.path.isfile(path) else None
        # the labels' names are the network's classes, in channel order (fluid_labels)
        mask = fluid_mask(data[self.output_label_key], image_hw, tuple(self.labels))
        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
            Image.fromarray(mask).save(f, format="PNG")
        return f.name, fluid_result(mask, self.labels)
