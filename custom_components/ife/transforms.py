# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The IFE call: 9-class probabilities to a class index, by the paper's per-head rule or the plain argmax.

Datalist labels become indices with MONAI's ``Lambdad`` over :func:`custom_components.ife.classes.label_to_index`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor

from custom_components.ife.classes import IFE_CLASSES, call_from_probabilities

__all__ = ["IFECalld"]


class IFECalld(MapTransform):
    """Turn 9-class probabilities into a class index (the "call").

    With ``multitask=True`` (fused output of :class:`~custom_components.ife.networks.MultiTaskIFEResNet`)
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
        if probs.ndim not in (1, 2) or probs.shape[-1] != len(IFE_CLASSES):
            raise ValueError(f"expected (9,) or (B, 9) probabilities, got shape {tuple(probs.shape)}.")
        batch = probs.reshape(-1, len(IFE_CLASSES))
        calls = call_from_probabilities(batch) if self.multitask else batch.argmax(dim=1)
        return calls[0] if probs.ndim == 1 else calls

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            out_key = key if self.output_postfix is None else f"{key}_{self.output_postfix}"
            d[out_key] = self.call(d[key])
        return d
