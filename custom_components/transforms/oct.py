# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""OCT transforms MONAI lacks.

- :class:`BScanToGrayscale` / :class:`MaskToSingleChannel`: Pillow converters for ``PILReader(converter=...)`` that
  give one channel without losing information (16-bit B-scans keep their depth, palette masks keep their indices).
- :class:`BinarizeMaskd`: {0, 1} or {0, 255} masks to float {0, 1}; anything else is an error naming the file.
- :class:`ScaleIntensityPerBScand`: min-max scaling of each B-scan on its own, also inside a volume, so a volume is
  scaled exactly as the single B-scans the network was trained on.
- :class:`SeededGaussianNoised`: reproducible Gaussian noise for the paper's robustness test.
"""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from PIL import Image, ImageChops

__all__ = [
    "BScanToGrayscale",
    "MaskToSingleChannel",
    "BinarizeMaskd",
    "ScaleIntensityPerBScand",
    "SeededGaussianNoised",
    "source_name",
]


def _is_single_channel(mode: str) -> bool:
    """Pillow modes holding one value per pixel: bilevel, 8-bit, 32-bit int/float and the 16-bit variants."""
    return mode in ("1", "L", "I", "F") or mode.startswith("I;16")


class BScanToGrayscale:
    """Pillow converter giving a one-channel B-scan: colour and palette files become luminance ("L"), grayscale
    files of any depth are kept as they are.

    ``image.convert("L")`` alone clips 16-bit TIFF/PNG B-scans at 255 (every value above 255 becomes white), so
    single-channel modes (``L``, ``I;16*``, ``I``, ``F``, ``1``) are returned untouched and the intensity scaling
    that follows maps their full range to [0, 1]. ``LA`` drops its alpha channel. A class rather than a lambda, so
    that readers holding it pickle into DataLoader worker processes.

    Example::

        LoadImaged("image", reader=PILReader(reverse_indexing=False, converter=BScanToGrayscale()))
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        if _is_single_channel(image.mode):
            return image
        if image.mode == "LA":
            return image.getchannel("L")
        return image.convert("L")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MaskToSingleChannel:
    """Pillow converter giving a one-channel mask whose values are those stored in the file.

    - single-channel modes are kept; for a palette (``P``) mask that means the palette *indices* (0/1), which is
      what annotation tools store and what ``custom_components.data.datalist.validate_segmentation_entries``
      checks, not the luminance of the palette colours (a red index 1 would become 76);
    - ``LA`` / ``PA``: the first channel (alpha dropped);
    - colour masks (``RGB``, ``RGBA``, ...): the maximum over the colour channels, alpha dropped, so fluid drawn in
      any pure colour on black reads as 255.

    Values are not checked here; :class:`BinarizeMaskd` does that with the file named.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        if _is_single_channel(image.mode) or image.mode == "P":
            return image
        if image.mode in ("LA", "PA"):
            return image.getchannel(0)
        red, green, blue = image.convert("RGB").split()
        return ImageChops.lighter(ImageChops.lighter(red, green), blue)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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


class ScaleIntensityPerBScand(MapTransform):
    """Min-max scale each B-scan to ``[minv, maxv]`` on its own.

    A 2D image ``(C, H, W)`` is scaled as a whole, exactly like MONAI's ``ScaleIntensityd`` (what training uses);
    a volume ``(C, H, W, S)`` is scaled slice by slice along ``slice_axis``, so that every B-scan of a volume
    reaches the network scaled as the single B-scans it was trained on, whatever the other slices hold (one
    saturated B-scan would otherwise darken the whole volume). A constant B-scan becomes ``minv``.

    Args:
        keys: image keys.
        minv: lowest output value.
        maxv: highest output value, > ``minv``.
        slice_axis: spatial axis of a volume indexing its B-scans (0, 1 or 2; -1 = the last, as the inferer uses).
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: on ``maxv <= minv`` or a ``slice_axis`` outside [-3, 2]; (when called) on an input that is not
            ``(C, H, W)`` or ``(C, H, W, S)``, naming its shape.
    """

    def __init__(
        self,
        keys: KeysCollection,
        minv: float = 0.0,
        maxv: float = 1.0,
        slice_axis: int = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not maxv > minv:
            raise ValueError(f"maxv must be greater than minv, got minv={minv!r}, maxv={maxv!r}.")
        if slice_axis not in (-3, -2, -1, 0, 1, 2):
            raise ValueError(f"slice_axis must be a spatial axis of a volume (0, 1, 2 or -3..-1), got {slice_axis!r}.")
        self.minv, self.maxv, self.slice_axis = float(minv), float(maxv), int(slice_axis)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            x = (image if isinstance(image, torch.Tensor) else torch.as_tensor(np.asarray(image))).float()
            if x.ndim not in (3, 4):
                raise ValueError(
                    f"{source_name(d, key)}: expected a B-scan (C, H, W) or a volume (C, H, W, S), "
                    f"got shape {tuple(x.shape)}."
                )
            plain = x.as_tensor() if isinstance(x, MetaTensor) else x
            if x.ndim == 3:
                reduce = (0, 1, 2)
            else:  # keep the slice axis, reduce over channels and the two in-plane axes
                kept = 1 + self.slice_axis % 3
                reduce = tuple(a for a in range(4) if a != kept)
            low, high = plain.amin(dim=reduce, keepdim=True), plain.amax(dim=reduce, keepdim=True)
            span = high - low
            scale = torch.where(span > 0, (self.maxv - self.minv) / span.clamp_min(torch.finfo(span.dtype).tiny), 0.0)
            out = (x - low) * scale + self.minv  # MetaTensor arithmetic keeps the metadata (affine, file name)
            d[key] = out if isinstance(image, torch.Tensor) else out.numpy()
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
        self,
        keys: KeysCollection,
        sigma: float = 0.1,
        seed: int = 0,
        clip: bool = True,
        allow_missing_keys: bool = False,
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
