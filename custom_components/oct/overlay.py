# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Fluid overlays of OCT B-scans, drawn with MONAI's ``blend_images`` and ``LabelToContour``.

The predicted fluid is a translucent orange fill on the grey B-scan; the ground truth, when known, is its outline
in opaque green on top, so misses (green without orange) and false fluid (orange without green) stand out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from monai.transforms import LabelToContour
from monai.transforms.utils import rescale_array
from monai.visualize import blend_images

__all__ = ["FLUID_HUE", "TRUTH_HUE", "OVERLAY_COLORMAP", "overlay_image"]

#: matplotlib colour map that ``blend_images`` colours labels with (its default).
OVERLAY_COLORMAP = "hsv"
#: value of predicted fluid in :data:`OVERLAY_COLORMAP`: orange, about (255, 136, 0).
FLUID_HUE = 0.09
#: value of the ground-truth outline in :data:`OVERLAY_COLORMAP`: green, about (8, 255, 0).
TRUTH_HUE = 1.0 / 3.0


def _plane(value: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        expected = f"{shape}" if shape is not None else "(H, W)"
        raise ValueError(f"{name} must be a 2D {expected} array, got shape {array.shape}.")
    return array


def overlay_image(
    bscan: Any, prediction: Any, truth: Any | None = None, fill_alpha: float = 0.55
) -> np.ndarray:
    """Colour overlay of one B-scan: predicted fluid filled in orange, the ground truth outlined in green.

    The B-scan is min-max scaled to grey (a flat image is black). ``blend_images`` mixes the fill into it with weight
    ``fill_alpha``; the outline is the truth's boundary pixels (``LabelToContour``: truth pixels with a background
    pixel among their 8 neighbours, or on the image border) drawn opaque over the fill.

    Args:
        bscan: (H, W) intensities (array or tensor, any range).
        prediction: (H, W) predicted fluid, non-zero = fluid.
        truth: optional (H, W) ground truth, non-zero = fluid.
        fill_alpha: weight of the fill colour, in (0, 1].

    Returns:
        (H, W, 3) uint8 RGB, channels last (as Pillow writes a PNG).

    Raises:
        ValueError: on arrays that are not 2D of one shape, or a ``fill_alpha`` outside (0, 1].
    """
    if not 0.0 < float(fill_alpha) <= 1.0:
        raise ValueError(f"fill_alpha must be in (0, 1], got {fill_alpha!r}.")
    grey = _plane(bscan, "bscan").astype(np.float32)
    fluid = _plane(prediction, "prediction", grey.shape).astype(bool)
    # channel-first (1, H, W) as blend_images expects; colour map values are given directly (rescale_arrays=False)
    image = rescale_array(grey[None], 0.0, 1.0)
    fill = (fluid * FLUID_HUE)[None].astype(np.float32)
    rgb = blend_images(image, fill, alpha=fill_alpha, cmap=OVERLAY_COLORMAP, rescale_arrays=False)
    if truth is not None:
        edge = LabelToContour()(_plane(truth, "truth", grey.shape).astype(bool)[None].astype(np.float32))
        outline = np.asarray(edge) * np.float32(TRUTH_HUE)
        rgb = blend_images(rgb, outline, alpha=1.0, cmap=OVERLAY_COLORMAP, rescale_arrays=False)
    return np.clip(np.rint(np.moveaxis(np.asarray(rgb), 0, -1) * 255.0), 0, 255).astype(np.uint8)
