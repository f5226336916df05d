# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""2D TransUNet of Darooei et al., "Loss-Modified Transformer-Based U-Net for Accurate Segmentation of Fluids in
OCT Images of Retinal Diseases", J Med Signals Sens 2023 (after Chen et al., TransUNet, arXiv:2102.04306, 2021).

A convolutional U-Net encoder, a vision transformer on patch tokens of the deepest feature map, and a U-Net
decoder with skip connections::

    x (B, C, H, W)
    -> encoder level 0..L-1: num_down_convs x [conv3x3 - norm - act], max-pool between levels
       (filters[i] channels at H / 2**i)
    -> tokens: conv with kernel = stride = patch_size, filters[-1] -> embed_dim, (B, N, D), N = h*w
       + learned position embedding (bilinearly interpolated when the token grid differs from ``img_size``'s)
    -> num_transformer_blocks x pre-LN [multi-head self-attention, MLP with GELU], final LayerNorm
    -> back to a (B, D, h, w) map, 1x1 conv to filters[-1], upsampled by patch_size to the bottleneck grid,
       added to the deepest CNN features
    -> decoder level L-2..0: 2x up-convolution, concatenation with the skip, num_up_convs x [conv - norm - act]
    -> 1x1 conv: logits (B, out_channels, H, W)

Every number of the paper's Table 2 is an argument with the paper's value as default (5 filter levels, 2 convs
per down and per up level, 2 transformer blocks, 2 heads, MLP of 384 with GELU, embedding width 96). The paper
leaves the filter widths open; see ``filters``, and ``docs/oct_method_notes.md`` for the choices and their
measurements. Input sides must be divisible by ``2 ** (len(filters) - 1) * patch_size``.

The building blocks are MONAI's: ``Convolution`` (conv - norm - act), ``SABlock`` and ``MLPBlock`` inside the
pre-LN block, ``UpSample`` (transposed convolution). MONAI's ``TransformerBlock`` is not used because it always
creates a cross-attention LayerNorm whose parameters never receive a gradient, which breaks DDP without
``find_unused_parameters``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution, MLPBlock, SABlock, UpSample
from torch import nn

__all__ = ["TransUNet", "TransformerEncoderBlock"]


def _conv_stack(
    in_channels: int, out_channels: int, num_convs: int, act: str | tuple, norm: str | tuple
) -> nn.Sequential:
    """``num_convs`` x [conv3x3 - norm - act]; no conv bias, the normalisation that follows has one."""
    return nn.Sequential(
        *[
            Convolution(
                spatial_dims=2,
                in_channels=in_channels if i == 0 else out_channels,
                out_channels=out_channels,
                kernel_size=3,
                act=act,
                norm=norm,
                bias=False,
            )
            for i in range(num_convs)
        ]
    )


class TransformerEncoderBlock(nn.Module):
    """Pre-LN transformer block: ``z' = MSA(LN(z)) + z``, ``z = MLP(LN(z')) + z'`` (the paper's Eqs. 3-4).

    Args:
        embed_dim: token width D.
        num_heads: attention heads (must divide ``embed_dim``).
        mlp_dim: hidden width of the MLP (GELU).
        dropout: dropout in attention and MLP.

    Raises:
        ValueError: when ``num_heads`` does not divide ``embed_dim`` or ``dropout`` is outside [0, 1].
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1], got {dropout}.")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        self.norm1 = nn.LayerNorm(embed_dim)
        # scaled_dot_product_attention: same result as the explicit softmax, without a (B, heads, N, N) buffer
        self.attn = SABlock(embed_dim, num_heads, dropout_rate=dropout, qkv_bias=True, use_flash_attention=True)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = MLPBlock(embed_dim, mlp_dim, dropout_rate=dropout, act="GELU")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, D)."""
        z = z + self.attn(self.norm1(z))
        return z + self.mlp(self.norm2(z))


class TransUNet(nn.Module):
    """2D TransUNet for binary fluid segmentation (logits out; apply a sigmoid for probabilities).

    Example::

        net = TransUNet()  # the paper's Table 2, 512 x 512 grayscale B-scans, one fluid logit; 31,556,385 parameters
        logits = net(torch.zeros(1, 1, 512, 512))  # (1, 1, 512, 512)

    Args:
        spatial_dims: must be 2 (OCT B-scans; volumes are segmented slice by slice).
        in_channels: input channels (1 for grayscale B-scans).
        out_channels: output channels (1: the fluid logit).
        filters: channels of the encoder levels, one per level ("filter number 5" of Table 2: five levels). The
            default 64-1024 doubling is the U-Net convention, also used by the paper's other U-Nets.
        num_down_convs: conv layers per encoder level (Table 2: 2).
        num_up_convs: conv layers per decoder level after concatenation (Table 2: 2).
        patch_size: side of the patches the deepest feature map is cut into. 1 (default) gives one token per
            bottleneck position, as keras-unet-collection's ``transunet_2d`` whose parameter names Table 2 uses:
            a 32 x 32 grid at 512 px, so small cysts keep their own tokens. 4 (the paper's text) gives 8 x 8 tokens
            of 64 x 64 input pixels each, adds 1.4 M parameters (the 4 x 4 patch projection) and makes inputs
            divide by 64. See ``docs/oct_method_notes.md`` for the comparison.
        embed_dim: token width D (Table 2's "embedding dimensions": 96, so the MLP of 384 is the usual 4 x D).
        num_transformer_blocks: transformer layers (Table 2: 2).
        num_heads: attention heads (Table 2: 2).
        mlp_dim: MLP hidden width in each transformer block (Table 2: 384).
        dropout: dropout in the transformer.
        img_size: (H, W) the position embedding is created for; other sizes interpolate it.
        act: activation of the convolutions, a name or (name, args) (``monai.networks.layers.Act``).
        norm: normalisation of the convolutions, a name or (name, args) (``monai.networks.layers.Norm``).

    Raises:
        ValueError: on ``spatial_dims != 2``, fewer than 2 levels, a count or width < 1, ``embed_dim`` not
            divisible by ``num_heads``, or an ``img_size`` whose sides do not divide by the total down-sampling.
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        filters: Sequence[int] = (64, 128, 256, 512, 1024),
        num_down_convs: int = 2,
        num_up_convs: int = 2,
        patch_size: int = 1,
        embed_dim: int = 96,
        num_transformer_blocks: int = 2,
        num_heads: int = 2,
        mlp_dim: int = 384,
        dropout: float = 0.0,
        img_size: Sequence[int] = (512, 512),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims != 2:
            raise ValueError(
                f"TransUNet is 2D (volumes are segmented slice by slice); got spatial_dims={spatial_dims}."
            )
        filters = [int(f) for f in filters]
        if len(filters) < 2:
            raise ValueError(f"filters needs at least 2 levels, got {filters}.")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("num_down_convs", num_down_convs),
            ("num_up_convs", num_up_convs),
            ("patch_size", patch_size),
            ("embed_dim", embed_dim),
            ("num_transformer_blocks", num_transformer_blocks),
            ("num_heads", num_heads),
            ("mlp_dim", mlp_dim),
            ("smallest filter", min(filters)),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        self.divisor = 2 ** (len(filters) - 1) * patch_size
        img_size = [int(s) for s in img_size]
        if len(img_size) != 2 or img_size[0] % self.divisor or img_size[1] % self.divisor or min(img_size) < 1:
            raise ValueError(f"img_size must be two sides divisible by {self.divisor}, got {img_size}.")
        self.patch_size = patch_size
        self.grid = (img_size[0] // self.divisor, img_size[1] // self.divisor)

        self.encoder = nn.ModuleList(
            [
                _conv_stack(in_channels if i == 0 else filters[i - 1], f, num_down_convs, act, norm)
                for i, f in enumerate(filters)
            ]
        )
        self.patch_embed = nn.Conv2d(filters[-1], embed_dim, kernel_size=patch_size, stride=patch_size)
        # stored as a map, not a sequence, so that a different token grid is a plain bilinear resize
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, self.grid[0], self.grid[1]))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            [TransformerEncoderBlock(embed_dim, num_heads, mlp_dim, dropout) for _ in range(num_transformer_blocks)]
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.project = nn.Conv2d(embed_dim, filters[-1], kernel_size=1)

        self.upsample = nn.ModuleList(
            [
                UpSample(2, filters[i + 1], filters[i], scale_factor=2, kernel_size=2, mode="deconv")
                for i in reversed(range(len(filters) - 1))
            ]
        )
        self.decoder = nn.ModuleList(
            [
                _conv_stack(2 * filters[i], filters[i], num_up_convs, act, norm)
                for i in reversed(range(len(filters) - 1))
            ]
        )
        self.head = nn.Conv2d(filters[0], out_channels, kernel_size=1)

    def _position_embedding(self, h: int, w: int) -> torch.Tensor:
        """(1, D, h, w) position embedding, bilinearly resized when the token grid is not the one it was made for."""
        if h == self.grid[0] and w == self.grid[1]:
            return self.pos_embed
        return F.interpolate(self.pos_embed, size=(h, w), mode="bilinear", align_corners=False)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        # A checkpoint trained at another image size (a CPU demo at 96 px, MONAI Label fine-tuning on small crops)
        # has a position embedding for another token grid; resize it to this network's grid, as forward() would,
        # so any TransUNet checkpoint loads into a network of the same widths whatever img_size each was built for.
        key = prefix + "pos_embed"
        stored = state_dict.get(key)
        if isinstance(stored, torch.Tensor) and stored.ndim == 4 and stored.shape[:2] == self.pos_embed.shape[:2]:
            if stored.shape[2:] != self.pos_embed.shape[2:]:
                state_dict[key] = F.interpolate(
                    stored.float(), size=self.grid, mode="bilinear", align_corners=False
                ).to(stored.dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, in_channels, H, W) with H and W divisible by ``2 ** (len(filters) - 1) * patch_size``.

        Returns:
            logits (B, out_channels, H, W).

        Raises:
            ValueError: when H or W is not divisible, naming the size and the divisor.
        """
        height, width = x.shape[-2], x.shape[-1]
        if height % self.divisor != 0 or width % self.divisor != 0:
            # string concatenation, not an f-string: TorchScript compiles this method
            raise ValueError(
                "TransUNet input sides must be divisible by " + str(self.divisor)
                + " (2**(levels-1) * patch_size), got " + str(height) + "x" + str(width)
                + "; pad or resize the image, or use a sliding-window inferer."
            )
        skips: list[torch.Tensor] = []
        for i, level in enumerate(self.encoder):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = level(x)
            skips.append(x)  # (B, filters[i], H / 2**i, W / 2**i)

        tokens = self.patch_embed(x)  # (B, D, h, w), h = H / divisor
        h, w = tokens.shape[-2], tokens.shape[-1]
        tokens = (tokens + self._position_embedding(h, w)).flatten(2).transpose(1, 2)  # (B, N = h*w, D), row-major
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens).transpose(1, 2).reshape(x.shape[0], -1, h, w)  # (B, D, h, w), same order back
        context = self.project(tokens)  # (B, filters[-1], h, w)
        if self.patch_size > 1:
            context = F.interpolate(context, size=(x.shape[-2], x.shape[-1]), mode="bilinear", align_corners=False)
        # a residual: the decoder keeps the convolutional features when the transformer contributes little
        x = x + context  # (B, filters[-1], H / 2**(L-1), W / 2**(L-1))

        for j, (up, level) in enumerate(zip(self.upsample, self.decoder)):
            skip = skips[len(skips) - 2 - j]  # (B, filters[L-2-j], ...)
            x = level(torch.cat([up(x), skip], dim=1))
        return self.head(x)
