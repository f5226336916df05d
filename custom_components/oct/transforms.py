# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""OCT transforms MONAI lacks.

- :class:`BScanToGrayscale` / :class:`MaskToSingleChannel`: Pillow converters for ``PILReader(converter=...)`` that
  give one channel without losing information (16-bit B-scans keep their depth, palette masks keep their indices).
- :class:`ScaleIntensityPerBScand`: min-max scaling of each B-scan on its own, also inside a volume, so a volume is
  scaled exactly as the single B-scans the network was trained on.
- :class:`FluidClassChannelsd` / :class:`ExclusiveFluidMasksd`: a mask file's values to one target channel per fluid
  class, and the network's per-class probabilities to masks with one class per pixel (``fluid_types``).
- :class:`ClearBlankBScansd`: no fluid on a B-scan that holds no image (one value throughout).
- :class:`BScanLayoutd`: a volume's axes to (rows, columns, B-scans), whatever order its file stores them in.
- :func:`geometry_crops`: the training crop that matches the inference geometry (resize or native scale).
- :class:`SeededGaussianNoised`: reproducible Gaussian noise for the paper's robustness test.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    AsDiscrete,
    MapTransform,
    RandScaleCropd,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
    Transpose,
)
from monai.utils import look_up_option
from PIL import Image, ImageChops

from custom_components.oct.fluid_types import BINARY_FLUID, check_fluid_classes, exclusive_masks
from custom_components.oct.inferer import BScanGeometry

logger = logging.getLogger(__name__)

__all__ = [
    "BScanToGrayscale",
    "MaskToSingleChannel",
    "ScaleIntensityPerBScand",
    "FluidClassChannelsd",
    "ExclusiveFluidMasksd",
    "ClearBlankBScansd",
    "BScanLayoutd",
    "geometry_crops",
    "SeededGaussianNoised",
    "source_name",
    "stored_bscan_axes",
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
      what annotation tools store and what ``custom_components.core.validation.validate_datalist``
      checks, not the luminance of the palette colours (a red index 1 would become 76);
    - ``LA`` / ``PA``: the first channel (alpha dropped);
    - colour masks (``RGB``, ``RGBA``, ...): the maximum over the colour channels, alpha dropped, so fluid drawn in
      any pure colour on black reads as 255.

    Values are not checked here: the datalist checks do that before training, with the file named
    (:func:`custom_components.core.validation.mask_value_problem`), and ``AsDiscreted(threshold=0.5)`` binarises.
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


class ScaleIntensityPerBScand(MapTransform):
    """Min-max scale each B-scan to ``[minv, maxv]`` on its own.

    A 2D image ``(C, H, W)`` is scaled as a whole, exactly like MONAI's ``ScaleIntensityd`` (what training uses);
    a volume ``(C, H, W, S)`` (B-scans along the last axis, see :class:`BScanLayoutd`) is scaled B-scan by B-scan,
    so that every B-scan of a volume reaches the network scaled as the single B-scans it was trained on, whatever
    the other B-scans hold (one saturated B-scan would otherwise darken the whole volume). A constant B-scan
    becomes ``minv``.

    Args:
        keys: image keys.
        minv: lowest output value.
        maxv: highest output value, > ``minv``.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: on ``maxv <= minv``; (when called) on an input that is not ``(C, H, W)`` or ``(C, H, W, S)``,
            naming the file and its shape.
    """

    def __init__(
        self, keys: KeysCollection, minv: float = 0.0, maxv: float = 1.0, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not maxv > minv:
            raise ValueError(f"maxv must be greater than minv, got minv={minv!r}, maxv={maxv!r}.")
        self.minv, self.maxv = float(minv), float(maxv)

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
            reduce = (0, 1, 2)  # channels and the two in-plane axes; a volume keeps its B-scan axis
            low, high = plain.amin(dim=reduce, keepdim=True), plain.amax(dim=reduce, keepdim=True)
            span = high - low
            scale = torch.where(span > 0, (self.maxv - self.minv) / span.clamp_min(torch.finfo(span.dtype).tiny), 0.0)
            out = (x - low) * scale + self.minv  # MetaTensor arithmetic keeps the metadata (affine, file name)
            d[key] = out if isinstance(image, torch.Tensor) else out.numpy()
        return d


class FluidClassChannelsd(MapTransform):
    """A mask's values ``(1, H, W)`` to one 0/1 target channel per fluid class ``(C, H, W)``.

    Binary classes (``("fluid",)``, the paper's protocol): fluid wherever the value reaches 0.5, so a 0/1 mask, a
    0/255 mask and a fluid-type label map (the union of its types) all train the one channel; this is MONAI's
    ``AsDiscrete(threshold=0.5)``, the transform the bundle used before fluid types. Fluid types (``("IRF", "SRF",
    "PED")``): MONAI's one-hot of the values 0-3 with the background channel dropped (the network has a sigmoid
    channel per type and none for the background); a mask with any other value is refused, naming its file.

    Args:
        keys: mask keys.
        classes: the fluid classes (:func:`~custom_components.oct.fluid_types.check_fluid_classes`).
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(
        self, keys: KeysCollection, classes: Sequence[str] = BINARY_FLUID, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.classes = check_fluid_classes(classes)
        binary = self.classes == BINARY_FLUID
        self.discrete = AsDiscrete(threshold=0.5) if binary else AsDiscrete(to_onehot=len(self.classes) + 1)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            if self.classes != BINARY_FLUID:
                values = torch.unique(torch.as_tensor(d[key]))
                if bool(((values < 0) | (values > len(self.classes)) | (values != values.round())).any()):
                    raise ValueError(
                        f"{source_name(d, key)}: a mask of the fluid types {', '.join(self.classes)} holds the values "
                        f"0-{len(self.classes)} (1 IRF, 2 SRF, 3 PED), got {values.tolist()}: a binary fluid mask "
                        "(such as 0/255) trains and scores the one fluid class (fluid_classes ['fluid'])."
                    )
            channels = self.discrete(d[key])
            d[key] = channels if self.classes == BINARY_FLUID else channels[1:]
        return d


class ExclusiveFluidMasksd(MapTransform):
    """Per-class fluid probabilities ``(C, H, W[, S])`` to masks with at most one class per pixel.

    One channel: ``probability >= threshold``, exactly MONAI's ``AsDiscrete(threshold=...)``. Fluid types: the most
    probable type where it reaches the threshold (a pixel is IRF, SRF or PED, never two), so the masks can be
    written as one label map (:func:`~custom_components.oct.fluid_types.label_map`).

    Args:
        keys: probability keys (after a sigmoid).
        threshold: the probability at which a pixel is fluid.
        allow_missing_keys: do not raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = float(threshold)
        self.binary = AsDiscrete(threshold=self.threshold)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            probabilities = d[key]
            if probabilities.shape[0] == 1:
                d[key] = self.binary(probabilities)
            else:
                d[key] = exclusive_masks(probabilities, self.threshold)
        return d


class ClearBlankBScansd(MapTransform):
    """Clear the prediction on every B-scan whose input holds no image (one value throughout), as a blank export or
    the padding B-scans of a volume do.

    Such a B-scan has nothing to segment, but :class:`ScaleIntensityPerBScand` makes it an all-zero input, and
    fluid is dark on OCT: a network may well call the whole B-scan fluid. Its prediction is set to 0 (no fluid) and
    a warning names the file (and, in a volume, the B-scans). Runs on the decollated items of the postprocessing,
    where the network input and the prediction are both at hand (same spatial shape: the bundle's inferer returns
    the prediction at the input's size).

    Args:
        keys: prediction keys, ``(C, H, W)`` or ``(C, H, W, S)``.
        image_key: key of the network input, of the prediction's spatial shape.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: (when called) on a prediction whose spatial shape differs from the input's, naming the file.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image = torch.as_tensor(d[self.image_key])
        plain = image.as_tensor() if isinstance(image, MetaTensor) else image
        flat = plain.movedim(-1, 0).flatten(1) if plain.ndim == 4 else plain.flatten()[None]
        blank = (flat.amax(dim=1) == flat.amin(dim=1)).cpu()  # one flag per B-scan
        if not blank.any():
            return d
        name = source_name(d, self.image_key)
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key])
            if tuple(pred.shape[1:]) != tuple(image.shape[1:]):
                raise ValueError(
                    f"{name}: prediction {key!r} of shape {tuple(pred.shape)} does not match the input's "
                    f"{tuple(image.shape)}."
                )
            pred = pred.clone()
            if image.ndim == 4:
                pred[..., blank.to(pred.device)] = 0
            else:
                pred.zero_()
            d[key] = pred
        if image.ndim == 4:
            logger.warning(
                "%s: B-scan(s) %s of %d hold no image (one value throughout): no fluid is reported there.",
                name, blank.nonzero().flatten().tolist(), blank.numel(),
            )  # fmt: skip
        else:
            logger.warning("%s holds no image (one value throughout): no fluid is reported.", name)
        return d


class BScanLayoutd(MapTransform):
    """Bring a volume's axes into the order the bundle works in: ``(C, rows, columns, B-scans)``.

    Converted OCT volumes store their axes in different orders: (axial, lateral, B-scan) is the bundle's own, many
    converters write (lateral, axial, B-scan), some put the B-scans first. ``bscan_axes`` names, in the stored
    array (channel axis excluded), the axis of a B-scan's rows (axial, top to bottom), of its columns (lateral)
    and the axis that indexes the B-scans; the volume is transposed accordingly (MONAI's ``Transpose``, which
    leaves the affine as the file has it). The permutation is recorded in the metadata under ``"bscan_axes"`` so
    that the mask is written back in the file's own axis order with the file's own affine and header. 2D images
    (PNG, TIFF, ...) are rows-first already and pass unchanged.

    When ``expected_aspect`` (rows / columns of the B-scans the model was trained on) is known, a volume whose
    B-scans would fit it clearly better transposed gets a warning naming the file: its axes are probably swapped.

    Args:
        keys: image keys.
        bscan_axes: (rows axis, columns axis, B-scan axis) of a stored volume, a permutation of (0, 1, 2).
        expected_aspect: rows / columns of the training B-scans, or ``None`` to skip the check.
        allow_missing_keys: do not raise for absent keys.

    Raises:
        ValueError: on ``bscan_axes`` that is not a permutation of (0, 1, 2) or an ``expected_aspect`` <= 0.
    """

    def __init__(
        self,
        keys: KeysCollection,
        bscan_axes: Sequence[int] = (0, 1, 2),
        expected_aspect: float | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        axes = [int(a) for a in bscan_axes]
        if sorted(axes) != [0, 1, 2]:
            raise ValueError(
                f"bscan_axes must list the (rows, columns, B-scans) axes of a volume, a permutation of (0, 1, 2); "
                f"got {bscan_axes!r}."
            )
        if expected_aspect is not None and not expected_aspect > 0:
            raise ValueError(f"expected_aspect must be a positive rows/columns ratio or None, got {expected_aspect!r}.")
        self.bscan_axes = axes
        self.expected_aspect = expected_aspect
        self.transpose = Transpose([0] + [1 + a for a in axes])

    def _check_aspect(self, name: str, rows: int, columns: int) -> None:
        if self.expected_aspect is None:
            return
        # compare on a log scale: how far the B-scan's aspect is from the training one, as is and transposed
        as_is = abs(math.log(rows / columns) - math.log(self.expected_aspect))
        transposed = abs(math.log(columns / rows) - math.log(self.expected_aspect))
        if transposed + math.log(1.25) < as_is:
            logger.warning(
                "%s: its B-scans are %d x %d (rows x columns) with bscan_axes=%s, but the model was trained on "
                "B-scans of aspect %.2f (rows/columns); the volume looks transposed. Check bscan_axes.",
                name, rows, columns, self.bscan_axes, self.expected_aspect,
            )  # fmt: skip

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 4:  # (C, H, W): a 2D image, rows first by the project's convention
                continue
            out = self.transpose(image)
            if isinstance(out, MetaTensor):
                out.meta["bscan_axes"] = list(self.bscan_axes)
            self._check_aspect(source_name(d, key), int(out.shape[1]), int(out.shape[2]))
            d[key] = out
        return d


def geometry_crops(
    geometry: str,
    image_size: Sequence[int],
    keys: KeysCollection = ("image", "label"),
    min_crop_fraction: float = 0.8,
) -> list[MapTransform]:
    """The random crop that shows the network training B-scans at the pixel scale of its inference geometry.

    - ``"resize"``: a random crop of ``min_crop_fraction`` to all of each side (scale augmentation), resized to
      ``image_size`` like every B-scan at inference.
    - ``"native"``: a random ``image_size`` crop of the native pixels (B-scans smaller than that are zero-padded),
      matching the sliding window at inference.

    Args:
        geometry: ``"resize"`` or ``"native"`` (:class:`custom_components.oct.inferer.BScanGeometry`).
        image_size: (H, W) the network is trained at.
        keys: image and mask keys (images resized bilinearly, the mask by nearest neighbour).
        min_crop_fraction: smallest crop side as a fraction of the B-scan's (``resize`` only), in (0, 1].

    Returns:
        the transforms, to run after the cached deterministic ones.

    Raises:
        ValueError: on an unknown ``geometry`` or a ``min_crop_fraction`` outside (0, 1].
    """
    geometry = look_up_option(geometry, BScanGeometry)
    if not 0 < min_crop_fraction <= 1:
        raise ValueError(f"min_crop_fraction must be in (0, 1], got {min_crop_fraction!r}.")
    size = [int(s) for s in image_size]
    keys = [keys] if isinstance(keys, str) else list(keys)
    if geometry == BScanGeometry.RESIZE:
        modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
        return [
            RandScaleCropd(keys, roi_scale=min_crop_fraction, max_roi_scale=1.0, random_size=True),
            Resized(keys, spatial_size=size, mode=modes),
        ]
    return [SpatialPadd(keys, spatial_size=size), RandSpatialCropd(keys, roi_size=size, random_size=False)]


class SeededGaussianNoised(MapTransform):
    """Add zero-mean Gaussian noise whose draw depends only on ``seed`` and the image's file name.

    The paper's robustness test evaluates on "the same images with added Gaussian noise"; seeding by the file's name
    (its base name, not its folder, so a data set copied elsewhere draws the same noise; two files of one name in
    different folders get the same draw) makes
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
            name = os.path.basename(source_name(d, key))
            rng = np.random.default_rng([self.seed, zlib.crc32(os.fsencode(name))])
            noise = torch.as_tensor(rng.normal(0.0, self.sigma, tuple(image.shape)), dtype=torch.float32)
            noisy = torch.as_tensor(image, dtype=torch.float32) + noise.to(torch.as_tensor(image).device)
            if self.clip:
                noisy = noisy.clamp(0.0, 1.0)
            if isinstance(image, MetaTensor):
                noisy = MetaTensor(noisy, meta=image.meta)
            d[key] = noisy
        return d


def stored_bscan_axes(image: Any) -> list[int]:
    """The (rows, columns, B-scans) axes of a volume as stored in its file, which :class:`BScanLayoutd` records in
    the image's ``bscan_axes`` meta; ``[0, 1, 2]`` when it recorded none."""
    axes = image.meta.get("bscan_axes") if isinstance(image, MetaTensor) else None
    return [int(a) for a in axes] if axes is not None else [0, 1, 2]
