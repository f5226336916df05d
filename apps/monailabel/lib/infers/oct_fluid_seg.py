"""OCT fluid segmentation: a {0, 255} mask PNG the size of the B-scan, and the fluid area in the JSON."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np
import torch
from monailabel.interfaces.tasks.infer_v2 import InferType
from PIL import Image

from lib.infers.bundle_task import LocalBundleInferTask
from lib.validation import read_image_size

__all__ = ["OCTFluidSegInfer", "fluid_mask", "fluid_result"]

#: pixel value of fluid in the answered mask (the project's mask convention: {0, 255})
FLUID_VALUE = 255


def fluid_mask(pred: Any, image_hw: tuple[int, int] | None) -> np.ndarray:
    """Turn the bundle's postprocessed prediction into a mask the size of the input.

    Args:
        pred: (1, H', W') or (H', W') prediction after the bundle's postprocessing (sigmoid + threshold gives
            {0, 1}; anything above 0.5 is fluid).
        image_hw: ``(height, width)`` of the input image, or None to keep the prediction's size. When the
            bundle's preprocessing resized the image, the mask is resized back (nearest neighbour).

    Returns:
        (H, W) uint8 mask with values {0, ``FLUID_VALUE``}.

    Raises:
        ValueError: when ``pred`` is not one 2D map.
    """
    array = pred.detach().cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected one 2D fluid map, got a prediction of shape {list(array.shape)}.")
    mask = np.where(array > 0.5, FLUID_VALUE, 0).astype(np.uint8)
    if image_hw is not None and tuple(mask.shape) != tuple(image_hw):
        # PIL sizes are (width, height)
        mask = np.asarray(Image.fromarray(mask).resize((image_hw[1], image_hw[0]), Image.Resampling.NEAREST))
    return mask


def fluid_result(mask: np.ndarray) -> dict[str, Any]:
    """Fluid measurements of one B-scan.

    Args:
        mask: (H, W) mask, fluid where > 0.

    Returns:
        ``fluid_area_px`` (pixels; a PNG carries no physical spacing), ``fluid_fraction`` (of the B-scan's
        pixels), ``image_size`` ([H, W]) and ``mask_values`` (pixel value of background and fluid in the mask).
    """
    area = int(np.count_nonzero(mask))
    return {
        "fluid_area_px": area,
        "fluid_fraction": round(area / mask.size, 6),
        "image_size": [int(mask.shape[0]), int(mask.shape[1])],
        "mask_values": {"background": 0, "fluid": FLUID_VALUE},
    }


class OCTFluidSegInfer(LocalBundleInferTask):
    """Segmentation task for ``bundles/oct_fluid_seg``.

    Preprocessing, sliding-window inferer and postprocessing (sigmoid, threshold) come from the bundle. MONAI
    Label's own restore step and writer are not used: both assume MONAI's default x-first (width, height) axis
    order, while the bundles load PNGs rows-first (``PILReader(reverse_indexing=False)``), so they would
    transpose non-square B-scans. The mask is written as a PNG that overlays the B-scan in any viewer.

    Args:
        path: bundle folder.
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(
            path, conf, type=InferType.SEGMENTATION, labels={"fluid": FLUID_VALUE}, add_post_restore=False
        )

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[str, dict[str, Any]]:
        path = data.get("image_path")
        image_hw = read_image_size(path) if isinstance(path, str) and os.path.isfile(path) else None
        mask = fluid_mask(data[self.output_label_key], image_hw)
        with tempfile.NamedTemporaryFile(suffix=".png", delete=False) as f:
            Image.fromarray(mask).save(f, format="PNG")
        return f.name, fluid_result(mask)
