# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Horizontal (row-wise) attention for IFE gels (Shi et al., MICCAI 2023, Sect. 2.2).

Proteins migrate along the image height, and a monoclonal band shows as dense spots in several lanes *at the
same row*. The attention therefore weighs rows only: one weight per row, shared by all channels and all
columns (lanes), in the spirit of CBAM's spatial attention restricted to one axis.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HorizontalAttention", "UniformAttention"]


class HorizontalAttention(nn.Module):
    """Row attention ``M(F) = sigmoid(Conv([AvgPool(F); MaxPool(F)]))`` with pooling over channels and width.

    The two pooled profiles form a (B, 2, H, 1) map, which a 2 -> 1 channel convolution with ``kernel_size``
    taps along the height (zero padding ``kernel_size // 2``, no bias) turns into one logit per row. The
    authors' code uses a 7x7 ``Conv2d`` on that width-1 map; with padding 3 only the kernel's centre column
    ever meets non-zero input, so a ``kernel_size``-tap 1-D convolution computes exactly the same function
    with 2 * kernel_size weights instead of 2 * kernel_size**2 (the others would never get a gradient).

    Args:
        kernel_size: number of taps along the height; odd, so the map keeps the input height.

    Raises:
        ValueError: when ``kernel_size`` is not a positive odd integer.

    Example::

        att = HorizontalAttention()
        y, m = att(torch.rand(2, 64, 56, 56))  # y: (2, 64, 56, 56), m: (2, 56) in (0, 1)
    """

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: features (B, C, H, W), H = image rows (migration direction), W = across the lanes.

        Returns:
            ``(x * M, M)``: the re-weighted features (B, C, H, W) and the attention map M (B, H), values in (0, 1).
        """
        # (B, C, H, W) -> (B, 2, H): channel-and-width average and maximum of each row
        pooled = torch.stack([x.mean(dim=(1, 3)), x.amax(dim=(1, 3))], dim=1)
        att = torch.sigmoid(self.conv(pooled)).squeeze(1)  # (B, H)
        return x * att[:, None, :, None], att


class UniformAttention(nn.Module):
    """Stand-in for :class:`HorizontalAttention` when attention is disabled.

    Returns the input unchanged and a map of ones, so networks keep the same outputs (attention keys) with or
    without attention. A constant map is uniform after the softmax over the height, so both IFE regularisers
    are exactly zero on it.
    """

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: features (B, C, H, W).

        Returns:
            ``(x, ones (B, H))``.
        """
        return x, x.new_ones((x.shape[0], x.shape[2]))
