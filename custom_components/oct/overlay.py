# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Fluid overlays of OCT B-scans, drawn with MONAI's ``blend_images`` and ``LabelToContour``.

The predicted fluid is a translucent orange fill on the grey B-scan; the ground truth, when known, is its outline
in opaque green on top, so misses (green without orange) and false fluid (orange without green) stand out. With fluid
types (:data:`~custom_components.oct.fluid_types.FLUID_TYPES`) each type has its own fill: intraretinal fluid (IRF)
red, subretinal fluid (SRF) yellow, pigment epithelial detachment (PED) blue (:data:`FLUID_TYPE_HUES`,
:data:`FLUID_TYPE_COLOURS`); the truth's outline stays green, around its fluid of every type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.transforms import LabelToContour
from monai.transforms.utils import rescale_array
from monai.visualize import blend_images

from custom_components.oct.fluid_types import BINARY_FLUID, check_fluid_classes

__all__ = [
    "FLUID_HUE",
    "FLUID_TYPE_COLOURS",
    "FLUID_TYPE_HUES",
    "TRUTH_HUE",
    "OVERLAY_COLORMAP",
    "fluid_hues",
    "overlay_image",
]

#: matplotlib colour map that ``blend_images`` colours labels with (its default).
OVERLAY_COLORMAP = "hsv"
#: value of predicted fluid in :data:`OVERLAY_COLORMAP`: orange, about (255, 136, 0).
FLUID_HUE = 0.09
#: value of the ground-truth outline in :data:`OVERLAY_COLORMAP`: green, about (8, 255, 0).
TRUTH_HUE = 1.0 / 3.0
#: value of each fluid type in :data:`OVERLAY_COLORMAP`: far apart from each other and from the truth's green, and
#: none 0 (``blend_images`` leaves a label of 0 transparent): IRF red (255, 0, 36), SRF yellow (255, 224, 0), PED
#: blue (0, 116, 255)
FLUID_TYPE_HUES: dict[str, float] = {"IRF": 0.99, "SRF": 0.15, "PED": 0.6}
#: the colour of each fluid type's fill in words, for legends and titles
FLUID_TYPE_COLOURS: dict[str, str] = {"IRF": "red", "SRF": "yellow", "PED": "blue"}


def fluid_hues(classes: Sequence[str]) -> tuple[float, ...] | None:
    """The fill hue of each class, for :func:`overlay_image`'s ``hues``: None for the one binary class (its fluid is
    orange, :data:`FLUID_HUE`), :data:`FLUID_TYPE_HUES` in class order for the fluid types."""
    classes = check_fluid_classes(classes)
    return None if classes == BINARY_FLUID else tuple(FLUID_TYPE_HUES[c] for c in classes)


def _plane(value: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    if array.ndim != 2 or (shape is not None and array.shape != shape):
        expected = f"{shape}" if shape is not None else "(H, W)"
        raise ValueError(f"{name} must be a 2D {expected} array, got shape {array.shape}.")
    return array


def overlay_image(
    bscan: Any,
    prediction: Any,
    truth: Any | None = None,
    fill_alpha: float = 0.55,
    hues: Sequence[float] | None = None,
) -> np.ndarray:
    """Colour overlay of one B-scan: predicted fluid filled in orange (or each type in its colour), the ground truth
    outlined in green.

    The B-scan is min-max scaled to grey (a flat image is black). ``blend_images`` mixes the fill into it with weight
    ``fill_alpha``; the outline is the truth's boundary pixels (``LabelToContour``: truth pixels with a background
    pixel among their 8 neighbours, or on the image border) drawn opaque over the fill.

    Args:
        bscan: (H, W) intensities (array or tensor, any range).
        prediction: (H, W) predicted fluid, non-zero = fluid; with ``hues``, a label map: value ``k`` (1 to
            ``len(hues)``) is filled with ``hues[k - 1]``, 0 is background.
        truth: optional (H, W) ground truth, non-zero = fluid (of any type: one outline around all of it).
        fill_alpha: weight of the fill colour, in (0, 1].
        hues: the :data:`OVERLAY_COLORMAP` value of each label of ``prediction`` (:func:`fluid_hues`), or None: every
            non-zero pixel orange (:data:`FLUID_HUE`).

    Returns:
        (H, W, 3) uint8 RGB, channels last (as Pillow writes a PNG).

    Raises:
        ValueError: on arrays that are not 2D of one shape, a ``fill_alpha`` outside (0, 1], or with ``hues`` a
            label outside 0 to ``len(hues)``.
    """
    if not 0.0 < float(fill_alpha) <= 1.0:
        raise ValueError(f"fill_alpha must be in (0, 1], got {fill_alpha!r}.")
    grey = _plane(bscan, "bscan").astype(np.float32)
    predicted = _plane(prediction, "prediction", grey.shape)
    # channel-first (1, H, W) as blend_images expects; colour map values are given directly (rescale_arrays=False)
    image = rescale_array(grey[None], 0.0, 1.0)
    fill = _fill(predicted, hues)[None]
    rgb = blend_images(image, fill, alpha=fill_alpha, cmap=OVERLAY_COLORMAP, rescale_arrays=False)
    if truth is not None:
        edge = LabelToContour()(_plane(truth, "truth", grey.shape).astype(bool)[None].astype(np.float32))
        outline = np.asarray(edge) * np.float32(TRUTH_HUE)
        rgb = blend_images(rgb, outline, alpha=1.0, cmap=OVERLAY_COLORMAP, rescale_arrays=False)
    return np.clip(np.rint(np.moveaxis(np.asarray(rgb), 0, -1) * 255.0), 0, 255).astype(np.uint8)


def _fill(prediction: np.ndarray, hues: Sequence[float] | None) -> np.ndarray:
    """The (H, W) colour map values of the fill: :data:`FLUID_HUE` on fluid, or each label's hue; 0 (transparent)
    on background."""
    if hues is None:
        return (prediction.astype(bool) * FLUID_HUE).astype(np.float32)
    labels = np.rint(prediction).astype(np.int64)
    if labels.min() < 0 or labels.max() > len(hues):
        raise ValueError(
            f"prediction labels must be 0 to {len(hues)} (one per hue), got {labels.min()} to {labels.max()}."
        )
    lookup = np.asarray([0.0, *hues], dtype=np.float32)  # label 0: background, left transparent by blend_images
    return lookup[labels]
