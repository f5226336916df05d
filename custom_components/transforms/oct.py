# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""OCT transforms MONAI lacks: strict mask binarisation and reproducible Gaussian noise for the robustness test."""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["BinarizeMaskd", "SeededGaussianNoised", "source_name"]


def source_name(data: Mapping, key: str) -> str:
    """The file an item came from (``filename_or_obj`` of its metadata), for error messages and seeding."""
    value = data.get(key)
    if isinstance(value, MetaTensor):
        return str(value.meta.get("filename_or_obj", "<in-memory image>"))
    return str(data.get(f"{key}_meta_dict", {}).get("filename_or_obj", "<in-memory image>"))


class BinarizeMaskd(MapTransform):
    """Turn a {0, 1} or {0, 255} mask into a float {0, 1} mask; anything else is an error naming the file.

    Masks exported by annotation tools come as 0/1 or 0/255; a mask with other values (anti-aliased edges, a
    multi-label map, a grayscale image given by mistake) would silently train the wrong target, so it is refused.

    Args:
        keys: mask keys.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: (when called) on values other than {0, 1} or {0, 255}, naming the mask file.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            values = set(torch.unique(torch.as_tensor(mask)).tolist())
            if values <= {0, 1}:
                scale = 1.0
            elif values <= {0, 255}:
                scale = 255.0
            else:
                shown = sorted(values)[:10]
                raise ValueError(
                    f"{source_name(d, key)}: mask values must be {{0, 1}} or {{0, 255}}, found {shown}"
                    + (" ..." if len(values) > 10 else "")
                )
            d[key] = (mask / scale).float() if isinstance(mask, torch.Tensor) else np.asarray(mask, np.float32) / scale
        return d


class SeededGaussianNoised(MapTransform):
    """Add zero-mean Gaussian noise whose draw depends only on ``seed`` and the image's file name.

    The paper's robustness test evaluates on "the same images with added Gaussian noise"; seeding by file makes
    that noisy test set identical across runs, models and machines, so numbers are comparable. Apply it after
    intensity scaling, so ``sigma`` is a fraction of the intensity range.

    Args:
        keys: image keys.
        sigma: standard deviation of the noise, >= 0 (0 leaves the image unchanged).
        seed: base seed.
        clip: clip the result to [0, 1] (the scaled intensity range).
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: on a negative ``sigma``.
    """

    def __init__(
        self, keys: KeysCollection, sigma: float = 0.1, seed: int = 0, clip: bool = True, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {sigma!r}.")
        self.sigma, self.seed, self.clip = float(sigma), int(seed), clip

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            rng = np.random.default_rng([self.seed, zlib.crc32(source_name(d, key).encode())])
            noise = torch.as_tensor(rng.normal(0.0, self.sigma, tuple(image.shape)), dtype=torch.float32)
            noisy = torch.as_tensor(image, dtype=torch.float32) + noise.to(torch.as_tensor(image).device)
            if self.clip:
                noisy = noisy.clamp(0.0, 1.0)
            if isinstance(image, MetaTensor):
                noisy = MetaTensor(noisy, meta=image.meta)
            d[key] = noisy
        return d
