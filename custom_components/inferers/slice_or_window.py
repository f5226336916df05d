# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""One inferer for B-scans of any size and for OCT volumes, so one inference config serves both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer

__all__ = ["SliceOrWindowInferer"]


class SliceOrWindowInferer(Inferer):
    """Run a 2D network on a 2D image with a sliding window, or on a volume B-scan by B-scan.

    - ``(B, C, H, W)`` input (a PNG/JPEG/TIFF B-scan of any size): :class:`monai.inferers.SlidingWindowInferer`
      with windows of ``roi_size`` (the training size); smaller images are padded, larger ones tiled.
    - ``(B, C, H, W, S)`` input (a NIfTI volume whose last axis indexes the B-scans): :class:`SliceInferer` over
      that axis, each B-scan again through the sliding window.

    Args:
        roi_size: (H, W) window, the network's training size.
        sw_batch_size: windows (or slices' windows) per forward pass.
        overlap: window overlap in [0, 1).
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"``.
        slice_axis: spatial axis of a volume that indexes the B-scans (0, 1 or 2; default 2, the last).
        kwargs: passed to both inferers (e.g. ``padding_mode``, ``sw_device``, ``device``).

    Raises:
        ValueError: on a ``roi_size`` that is not two positive numbers or a ``slice_axis`` not in 0..2; (when
            called) on inputs that are neither 4D nor 5D, naming the shape.

    Example::

        inferer = SliceOrWindowInferer(roi_size=(512, 512), sw_batch_size=4)
        inferer(torch.rand(1, 1, 496, 1024), net)  # a wide B-scan: (1, 1, 496, 1024) logits
        inferer(torch.rand(1, 1, 496, 512, 49), net)  # a volume of 49 B-scans: (1, 1, 496, 512, 49)
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        slice_axis: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        roi = tuple(int(s) for s in roi_size)
        if len(roi) != 2 or min(roi) < 1:
            raise ValueError(f"roi_size must be two positive numbers (H, W), got {roi_size!r}.")
        if slice_axis not in (0, 1, 2):
            raise ValueError(f"slice_axis must be 0, 1 or 2 (a spatial axis of a volume), got {slice_axis!r}.")
        common = {"roi_size": roi, "sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode, **kwargs}
        self.window = SlidingWindowInferer(**common)
        self.slices = SliceInferer(spatial_dim=slice_axis, **common)

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Segment ``inputs`` with ``network`` (a 2D network: (N, C, h, w) -> (N, C', h, w)).

        Args:
            inputs: (B, C, H, W) B-scans or (B, C, H, W, S) volumes (B-scans along ``slice_axis``).
            network: the 2D network.
            args, kwargs: passed on to ``network``.

        Returns:
            (B, C', H, W) or (B, C', H, W, S): the network's outputs stitched at the input's size.
        """
        if inputs.ndim == 4:
            return self.window(inputs, network, *args, **kwargs)
        if inputs.ndim == 5:
            return self.slices(inputs, network, *args, **kwargs)
        raise ValueError(
            f"expected a batch of B-scans (B, C, H, W) or of volumes (B, C, H, W, S), got shape {tuple(inputs.shape)}."
        )
