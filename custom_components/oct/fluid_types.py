# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The fluid classes a model segments: one "fluid" class (the paper's protocol) or the three types a retina
clinic reads apart, intraretinal fluid (IRF), subretinal fluid (SRF) and pigment epithelial detachment (PED).

A mask file stores one value per pixel. RETOUCH's convention (MICCAI 2017) is followed: 0 background, 1 IRF,
2 SRF, 3 PED. A binary mask stores 0 and one other value (1 or 255). The network has one output channel per class
(a sigmoid each, the paper's loss per channel); its prediction is made exclusive per pixel
(:func:`exclusive_masks`), so a predicted mask can be written back as one label map with the same values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
import torch

__all__ = [
    "BINARY_FLUID",
    "FLUID_TYPES",
    "FLUID_TYPE_NAMES",
    "check_fluid_classes",
    "fluid_classes_of_masks",
    "label_map",
    "one_hot_channels",
    "exclusive_masks",
]

logger = logging.getLogger(__name__)

#: the paper's protocol: every kind of fluid is one class
BINARY_FLUID: tuple[str, ...] = ("fluid",)
#: the three fluid types, in the order of their mask values 1, 2, 3 (RETOUCH)
FLUID_TYPES: tuple[str, ...] = ("IRF", "SRF", "PED")
#: what a report or a DICOM SEG calls each class
FLUID_TYPE_NAMES: dict[str, str] = {
    "fluid": "retinal fluid",
    "IRF": "intraretinal fluid",
    "SRF": "subretinal fluid",
    "PED": "pigment epithelial detachment",
}


def check_fluid_classes(classes: Sequence[str]) -> tuple[str, ...]:
    """``classes`` as a tuple, checked: ``("fluid",)`` or ``("IRF", "SRF", "PED")``.

    Raises:
        ValueError: for anything else, naming the two valid choices.
    """
    classes = tuple(str(c) for c in classes)
    if classes not in (BINARY_FLUID, FLUID_TYPES):
        raise ValueError(f"fluid classes must be {list(BINARY_FLUID)} or {list(FLUID_TYPES)}, got {list(classes)}.")
    return classes


def fluid_classes_of_masks(values: Iterable[Iterable[int]]) -> tuple[str, ...]:
    """Which classes a data set's masks hold, from the set of values of each mask.

    Masks with a 2 or a 3 are typed (RETOUCH values, :data:`FLUID_TYPES`); otherwise the masks are binary
    (:data:`BINARY_FLUID`), whether fluid is stored as 1 or as 255. A typed data set with only IRF (values 0 and 1)
    cannot be told from a binary one: set the classes explicitly for it.

    Raises:
        ValueError: when values of both conventions (255 beside 2 or 3) occur: the masks disagree.
    """
    seen: set[int] = set()
    for mask_values in values:
        seen.update(int(v) for v in mask_values)
    typed = bool(seen & {2, 3})
    if typed and seen - {0, 1, 2, 3}:
        raise ValueError(
            f"the masks mix fluid-type values (1 IRF, 2 SRF, 3 PED) with {sorted(seen - {0, 1, 2, 3})}: "
            "a typed data set stores only 0-3."
        )
    return FLUID_TYPES if typed else BINARY_FLUID


def one_hot_channels(label: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """The target channels of a mask: ``(1, *spatial)`` values to ``(len(classes), *spatial)`` 0/1 floats.

    Binary classes: fluid where the value is > 0.5 (any fluid type, 1 or 255: the union of the types). Typed
    classes: channel ``k`` where the value is ``k + 1``.
    """
    classes = check_fluid_classes(classes)
    if label.shape[0] != 1:
        raise ValueError(f"a mask has one channel of values, got shape {tuple(label.shape)}.")
    if classes == BINARY_FLUID:
        return (label > 0.5).to(torch.float32)
    values = torch.arange(1, len(classes) + 1, device=label.device, dtype=label.dtype)
    return (label.round() == values.view(-1, *([1] * (label.ndim - 1)))).to(torch.float32)


def exclusive_masks(probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-channel probabilities ``(C, *spatial)`` to masks of the same shape with at most one class per pixel.

    One channel: ``probability >= threshold`` (as ``AsDiscrete(threshold=...)``). Several: the most probable class
    where its probability reaches the threshold, nothing elsewhere.
    """
    if probabilities.shape[0] == 1:
        return (probabilities >= threshold).to(probabilities.dtype)
    best = probabilities.argmax(dim=0, keepdim=True)
    found = probabilities.gather(0, best) >= threshold
    masks = torch.zeros_like(probabilities)
    return masks.scatter_(0, best, found.to(probabilities.dtype))


def label_map(masks: np.ndarray | torch.Tensor) -> np.ndarray:
    """Exclusive masks ``(C, *spatial)`` to one ``uint8`` label map ``(*spatial)``: 0 background, ``k + 1`` where
    channel ``k`` is set (1 for the binary class; 1 IRF, 2 SRF, 3 PED for the types)."""
    masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
    values = np.arange(1, masks.shape[0] + 1, dtype=np.uint8).reshape(-1, *([1] * (masks.ndim - 1)))
    return ((masks > 0.5) * values).max(axis=0).astype(np.uint8)
