# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""One inferer for B-scans of any size and for OCT volumes, at the pixel scale the network was trained at."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import StrEnum, look_up_option

__all__ = ["BScanGeometry", "BScanInferer"]


class BScanGeometry(StrEnum):
    """How B-scans reach the network; training, evaluation and inference of one model use one geometry.

    - ``resize`` (the paper's protocol): every B-scan is resized to the training size as a whole; the network sees
      the full B-scan, squashed to a square whatever its native size and aspect.
    - ``native``: the network is trained on crops of the training size at the scans' native pixel scale and
      segments whole B-scans with a sliding window, so thin fluid keeps its pixels.
    """

    RESIZE = "resize"
    NATIVE = "native"


class BScanInferer(Inferer):
    """Run a 2D network on B-scans (``(B, C, H, W)``) or volumes (``(B, C, H, W, S)``, B-scans along the last
    axis) at the pixel scale of its training ``geometry``; outputs have the input's own size.

    - ``geometry="resize"``: each B-scan is resized to ``roi_size`` (bilinear, no anti-aliasing: exactly what the
      bundle's training ``Resized`` does), segmented whole, and the network's output is resized back to the
      B-scan's own size (bilinear) before any thresholding, so masks are drawn at native resolution without
      blocky steps. Interpolating logits gives the same decision as interpolating probabilities at the network's
      own pixels and a smoother boundary between them.
    - ``geometry="native"``: :class:`monai.inferers.SlidingWindowInferer` with ``roi_size`` windows over the
      native pixels (smaller B-scans are padded).

    The B-scans of a volume are moved into the batch, so both geometries segment ``sw_batch_size`` B-scans (or
    windows) per forward pass.

    Args:
        roi_size: (H, W) the network was trained at.
        geometry: ``"resize"`` or ``"native"`` (:class:`BScanGeometry`).
        sw_batch_size: B-scans (``resize``) or windows (``native``) per forward pass.
        overlap: window overlap in [0, 1) (``native``).
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"`` (``native``).
        kwargs: passed to :class:`SlidingWindowInferer` (e.g. ``padding_mode``, ``sw_device``).

    Raises:
        ValueError: on a ``roi_size`` that is not two positive numbers, an unknown ``geometry`` (listing the
            valid ones) or ``sw_batch_size < 1``; (when called) on inputs that are neither 4D nor 5D.

    Example::

        inferer = BScanInferer(roi_size=(512, 512))  # the paper's protocol
        inferer(torch.rand(1, 1, 496, 1024), net)  # resized to 512 x 512 and back: (1, 1, 496, 1024) logits
        inferer(torch.rand(1, 1, 496, 512, 49), net)  # 49 B-scans: (1, 1, 496, 512, 49)
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        geometry: str = BScanGeometry.RESIZE,
        sw_batch_size: int = 4,
        overlap: float = 0.25,
        mode: str = "gaussian",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        roi = tuple(int(s) for s in roi_size)
        if len(roi) != 2 or min(roi) < 1:
            raise ValueError(f"roi_size must be two positive numbers (H, W), got {roi_size!r}.")
        if int(sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size!r}.")
        self.roi_size = roi
        self.geometry = BScanGeometry(look_up_option(geometry, BScanGeometry))
        self.sw_batch_size = int(sw_batch_size)
        self.window = SlidingWindowInferer(
            roi_size=roi, sw_batch_size=self.sw_batch_size, overlap=overlap, mode=mode, **kwargs
        )

    def _resized(self, bscans: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        """(N, C, H, W) -> network at ``roi_size`` -> (N, C', H, W), ``sw_batch_size`` B-scans at a time."""
        size = tuple(bscans.shape[-2:])
        outputs = []
        for chunk in bscans.split(self.sw_batch_size):
            if size != self.roi_size:
                chunk = F.interpolate(chunk, size=self.roi_size, mode="bilinear", align_corners=False)
            out = network(chunk, *args, **kwargs)
            if size != self.roi_size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            outputs.append(out)
        return torch.cat(outputs)

    def _bscans(self, bscans: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if self.geometry == BScanGeometry.RESIZE:
            return self._resized(bscans, network, *args, **kwargs)
        return self.window(bscans, network, *args, **kwargs)

    def __call__(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """Segment ``inputs`` with ``network`` (a 2D network: (N, C, h, w) -> (N, C', h, w)).

        Args:
            inputs: (B, C, H, W) B-scans or (B, C, H, W, S) volumes (B-scans along the last axis).
            network: the 2D network.
            args, kwargs: passed on to ``network``.

        Returns:
            (B, C', H, W) or (B, C', H, W, S): the network's outputs at the input's size.
        """
        if inputs.ndim == 4:
            return self._bscans(inputs, network, *args, **kwargs)
        if inputs.ndim == 5:
            batch, channels, height, width, slices = inputs.shape
            # (B, C, H, W, S) -> (B * S, C, H, W): every B-scan of every volume is one item
            bscans = inputs.permute(0, 4, 1, 2, 3).reshape(batch * slices, channels, height, width)
            out = self._bscans(bscans, network, *args, **kwargs)
            return out.reshape(batch, slices, *out.shape[1:]).permute(0, 2, 3, 4, 1)  # back to (B, C', H, W, S)
        raise ValueError(
            f"expected a batch of B-scans (B, C, H, W) or of volumes (B, C, H, W, S), got shape {tuple(inputs.shape)}."
        )
