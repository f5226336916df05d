# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""IFE dictionary transforms over the label algebra of :mod:`custom_components.ife_classes`."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from custom_components.ife_classes import _NUM_CLASSES, _check_index, call_from_probabilities, class_index

__all__ = ["IFELabelToIndexd", "IFECalld"]


def _describe_source(data: Mapping[Hashable, Any], image_key: str | None) -> str:
    """Name the entry in error messages: its image path, or the file a loaded image came from."""
    if image_key is None or image_key not in data:
        return "<entry without image path>"
    image = data[image_key]
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    meta = getattr(image, "meta", None)
    if isinstance(meta, Mapping) and "filename_or_obj" in meta:
        return str(meta["filename_or_obj"])
    return "<entry without image path>"


class IFELabelToIndexd(MapTransform):
    """Convert IFE class names (``"IgG-kappa"``) to 9-class indices (``np.int64``).

    Integer labels already in ``0..8`` pass through, so the transform is safe to apply twice.

    Args:
        keys: keys of the labels to convert.
        image_key: key of the entry's image, used only to name the entry in error messages.
        allow_missing_keys: do not raise if a key is absent (e.g. unlabelled images at inference).

    Raises:
        ValueError: on an unknown class name or an out-of-range index; the message names the entry's image
            path and lists the valid class names.
    """

    def __init__(
        self, keys: KeysCollection, image_key: str | None = "image", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def _convert(self, value: Any) -> np.int64:
        # a collated or tensor-converted label arrives as a one-element array/tensor
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        elif isinstance(value, (np.ndarray, np.generic)) and np.size(value) == 1:
            value = value.item()
        if isinstance(value, str):
            return np.int64(class_index(value))
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        return np.int64(_check_index(value, _NUM_CLASSES, "class index"))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            try:
                d[key] = self._convert(d[key])
            except ValueError as err:
                raise ValueError(
                    f"bad IFE label {d[key]!r} under key {key!r} for image {_describe_source(d, self.image_key)}: "
                    f"{err}"
                ) from None
        return d


class IFECalld(MapTransform):
    """Turn 9-class probabilities into a class index (the "call").

    With ``multitask=True`` (fused output of :class:`~custom_components.networks.ife_resnet.MultiTaskIFEResNet`)
    the call follows the paper's per-head argmax rule (:func:`call_from_probabilities`); with
    ``multitask=False`` (the 9-class baseline) it is the plain argmax. The two differ: the fused argmax can
    pick a class whose heads are not each at their maximum.

    Args:
        keys: keys of (9,) or (B, 9) probability tensors/arrays.
        multitask: use the per-head rule (True) or the plain argmax (False).
        output_postfix: if given, write the call to ``f"{key}_{output_postfix}"`` and keep the probabilities;
            if None, replace them.
        allow_missing_keys: do not raise if a key is absent.

    Returns (per key):
        a 0-d (for a (9,) input) or (B,) long tensor on the input's device.

    Raises:
        ValueError: when the last dimension is not 9.
    """

    def __init__(
        self,
        keys: KeysCollection,
        multitask: bool = True,
        output_postfix: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.multitask = bool(multitask)
        if output_postfix is not None and not output_postfix:
            raise ValueError("output_postfix must be None or a non-empty string, got ''.")
        self.output_postfix = output_postfix

    def call(self, probs: Any) -> torch.Tensor:
        """Call one (9,) or (B, 9) probability array; returns a 0-d or (B,) long tensor."""
        probs = convert_to_tensor(probs, track_meta=False)
        if probs.ndim not in (1, 2) or probs.shape[-1] != _NUM_CLASSES:
            raise ValueError(f"expected (9,) or (B, 9) probabilities, got shape {tuple(probs.shape)}.")
        batch = probs.reshape(-1, _NUM_CLASSES)
        calls = call_from_probabilities(batch) if self.multitask else batch.argmax(dim=1)
        return calls[0] if probs.ndim == 1 else calls

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            out_key = key if self.output_postfix is None else f"{key}_{self.output_postfix}"
            d[out_key] = self.call(d[key])
        return d
