# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""ResNet18 with horizontal attention for IFE classification (Shi et al., MICCAI 2023).

Two networks share the same building blocks:

- :class:`MultiTaskIFEResNet`: stem and the first ``shared_stages`` residual stages shared, the remaining
  stages duplicated into a *severe* branch (heavy chain: None/G/A/M) and a *mild* branch (light chain:
  None/kappa/lambda), each with its own global average pooling and linear classifier.
- :class:`IFEResNet`: the plain 9-class baseline ("Multi-class" in the paper's tables).

Both are trained from scratch. ``forward`` returns one (B, 9) tensor of class probabilities, so the networks
work with ``verify_net_in_out``, TorchScript export and MONAI Label; ``forward_heads`` returns the logits and
the attention maps that the losses need (wrap the network in :class:`ForwardHeads` for training).

Every residual block has a :class:`HorizontalAttention` after its second convolution + normalisation and before
the residual addition (CBAM placement, as in the authors' code). Spatial sizes for an (H, W) input: the stem
(7x7 stride-2 convolution, 3x3 stride-2 max-pool) gives H/4, the stages give H/4, H/8, H/16, H/32 rows, e.g.
56, 28, 14 and 7 at 224 px.

The four stage widths are ``channels`` (default ``(64, 128, 256, 512)``, ResNet18's); the stem has ``channels[0]``
outputs and the heads read ``channels[3]`` pooled features. Narrower widths, e.g. ``(8, 16, 32, 64)``, keep the
architecture (depths, strides, attention) for quick experiments and tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

import torch
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from torch import nn

from custom_components.ife.horizontal_attention import HorizontalAttention, UniformAttention
from custom_components.ife.classes import fuse_subtask_probabilities

__all__ = [
    "RESNET18_CHANNELS",
    "ATTENTION_STRIDES",
    "INITIALISATIONS",
    "IFEBasicBlock",
    "IFEResStage",
    "MultiTaskIFEResNet",
    "IFEResNet",
    "ForwardHeads",
]

# ResNet18: BasicBlock, two blocks per stage; the default stage widths
RESNET18_CHANNELS = (64, 128, 256, 512)
#: the weights' initialisations of the IFE networks (:func:`_init_weights`): this bundle's and the authors'
INITIALISATIONS = ("kaiming", "authors")
_STAGE_DEPTHS = (2, 2, 2, 2)
_STAGE_STRIDES = (1, 2, 2, 2)

#: total stride along the height of each attention map that ``forward_heads`` returns with the default
#: ``stage4_row_stride=2`` (stem 4, then the stages' strides; ``attention_strides()`` of a network gives its own):
#: map row ``j`` is centred on network-input row ``j * stride`` (see :mod:`custom_components.ife.attention`)
ATTENTION_STRIDES = {
    "attention_severe": 32,
    "attention_mild": 32,
    "attention": 32,
    "attention_shared": 16,
    "attention_severe_stage3": 16,
    "attention_mild_stage3": 16,
}


def _check_positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_channels(channels: Sequence[int]) -> tuple[int, int, int, int]:
    """``channels`` as a tuple of four positive integers (a list from a JSON config is fine)."""
    if (
        isinstance(channels, (str, bytes))
        or not isinstance(channels, Sequence)
        or len(channels) != len(RESNET18_CHANNELS)
        or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels)
    ):
        raise ValueError(
            f"channels must be {len(RESNET18_CHANNELS)} positive integers (the stage widths, ResNet18: "
            f"{list(RESNET18_CHANNELS)}), got {channels!r}."
        )
    return tuple(channels)  # type: ignore[return-value]


class IFEBasicBlock(nn.Module):
    """ResNet basic block with horizontal attention before the residual addition.

    ``conv3x3 -> norm -> act -> conv3x3 -> norm -> attention -> (+ shortcut) -> act``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first convolution (and of the 1x1 projection shortcut), an int or (rows, columns).
        attention: use :class:`HorizontalAttention`; if False, :class:`UniformAttention` (identity, map of ones).
        attention_kernel_size: taps of the attention convolution along the height.
        act: activation name or (name, args), as :func:`monai.networks.layers.utils.get_act_layer`.
        norm: normalisation name or (name, args), as :func:`monai.networks.layers.utils.get_norm_layer`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int | tuple[int, int] = 1,
        attention: bool = True,
        attention_kernel_size: int = 7,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = get_norm_layer(norm, spatial_dims=2, channels=out_channels)
        self.act1 = get_act_layer(act)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = get_norm_layer(norm, spatial_dims=2, channels=out_channels)
        self.attention: nn.Module = (
            HorizontalAttention(attention_kernel_size) if attention else UniformAttention()
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                get_norm_layer(norm, spatial_dims=2, channels=out_channels),
            )
        self.act2 = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (B, in_channels, H, W).

        Returns:
            features (B, out_channels, H / stride, W / stride) and the attention map (B, H / stride).
        """
        out = self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))
        out, att = self.attention(out)
        return self.act2(out + self.shortcut(x)), att


class IFEResStage(nn.Module):
    """A ResNet stage: ``depth`` :class:`IFEBasicBlock` s, the first one with ``stride``.

    Args:
        in_channels: input channels.
        out_channels: output channels of every block.
        depth: number of blocks.
        stride: stride of the first block.
        kwargs: passed to :class:`IFEBasicBlock` (attention, attention_kernel_size, act, norm).
    """

    def __init__(
        self, in_channels: int, out_channels: int, depth: int, stride: int | tuple[int, int], **kwargs
    ) -> None:
        super().__init__()
        _check_positive_int(depth, "depth")
        self.blocks = nn.ModuleList(
            [
                IFEBasicBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, **kwargs)
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: (B, in_channels, H, W).

        Returns:
            features (B, out_channels, H / stride, W / stride) and the attention map (B, H / stride) of the
            stage's LAST block (the map the regularisers and the figures use).
        """
        att: Optional[torch.Tensor] = None
        for block in self.blocks:
            x, att = block(x)
        assert att is not None  # depth >= 1 is validated in __init__; the assert refines the type for TorchScript
        return x, att


def _make_stem(in_channels: int, width: int, act: str | tuple, norm: str | tuple) -> nn.Sequential:
    # (B, C, H, W) -> (B, width, H/4, W/4)
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
        get_norm_layer(norm, spatial_dims=2, channels=width),
        get_act_layer(act),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def _make_stages(
    first: int, last: int, channels: tuple[int, int, int, int], stage4_row_stride: int = 2, **kwargs
) -> nn.ModuleList:
    """Stages ``first .. last - 1`` (0-based) of ResNet18, stage ``i`` with ``channels[i]`` outputs; the fourth stage
    strides ``(stage4_row_stride, 2)`` (rows, columns)."""
    strides: list = list(_STAGE_STRIDES[:3]) + [(stage4_row_stride, 2)]
    return nn.ModuleList(
        [
            IFEResStage(channels[i - 1] if i > 0 else channels[0], channels[i], _STAGE_DEPTHS[i], strides[i], **kwargs)
            for i in range(first, last)
        ]
    )


def _check_row_stride(stage4_row_stride: int) -> int:
    if stage4_row_stride not in (1, 2) or isinstance(stage4_row_stride, bool):
        raise ValueError(f"stage4_row_stride must be 1 or 2, got {stage4_row_stride!r}.")
    return int(stage4_row_stride)


_STAGE4_MAPS = ("attention_severe", "attention_mild", "attention")


def _attention_strides(stage4_row_stride: int) -> dict[str, int]:
    return {**ATTENTION_STRIDES, **{key: 16 * stage4_row_stride for key in _STAGE4_MAPS}}


def _check_init(init: str) -> str:
    if init not in INITIALISATIONS:
        raise ValueError(f"init must be one of {INITIALISATIONS}, got {init!r}.")
    return init


def _init_weights(module: nn.Module, zero_init_last: bool, init: str = "kaiming") -> None:
    """The weights' initialisation (:data:`INITIALISATIONS`); optional zero last gamma.

    ``"kaiming"``: Kaiming-normal (fan-out) convolutions of the ResNet, as torchvision's ResNet (He et al. 2015);
    the attention keeps PyTorch's default. ``"authors"``: every layer as PyTorch constructs it, which is what the
    authors' code trains from (its ResNet convolutions' weight std is 1 / 2.45 of Kaiming fan-out's), and the
    attention convolution drawn as their 7x7 ``Conv2d`` over 2 channels would be, uniform within
    ``1 / sqrt(2 * 7 * 7)`` (0.10, against 0.27 for this module's 7-tap ``Conv1d``).
    """
    if init == "authors":
        for m in module.modules():
            if isinstance(m, HorizontalAttention):
                bound = 1.0 / math.sqrt(2 * m.kernel_size**2)  # fan-in of the authors' k x k Conv2d, 2 channels
                nn.init.uniform_(m.conv.weight, -bound, bound)
    else:
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm)):
                if getattr(m, "weight", None) is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
    if zero_init_last:
        for m in module.modules():
            if isinstance(m, IFEBasicBlock) and getattr(m.norm2, "weight", None) is not None:
                nn.init.zeros_(m.norm2.weight)


def _row_logits(features: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) features, (K, C) head weight -> (B, K, h): the head applied to every row's mean over the width,
    without its bias."""
    return torch.einsum("bch,kc->bkh", features.mean(dim=3), weight)


class MultiTaskIFEResNet(nn.Module):
    """Multi-task ResNet18 of Shi et al. (MICCAI 2023): severe and mild heads on a partly shared trunk.

    The stem and the first ``shared_stages`` stages are shared; the remaining stages exist twice, once per
    branch ("the first three blocks of the ResNet18 model are shared", i.e. ``shared_stages=3``, the paper's
    best setting). The severe head is ``Linear(channels[3], num_severe)`` (512 inputs for ResNet18) on the severe
    branch's pooled features, the mild head ``Linear(channels[3], num_mild)`` on the mild branch's. In the authors'
    code the duplicated blocks silently reuse the severe branch's attention and shortcut modules; here each branch
    owns all of its layers unless ``tie_attention`` shares the attention convolutions (and only those).

    Args:
        in_channels: image channels (3 for RGB gels).
        num_severe: severe classes (None/G/A/M). Fusion into 9 classes needs 4.
        num_mild: mild classes (None/kappa/lambda). Fusion into 9 classes needs 3.
        shared_stages: number of shared residual stages, 0..4 (0: only the stem is shared; 4: only the heads
            differ).
        attention: horizontal attention in every block; if False the blocks are plain ResNet blocks and the
            attention maps in :meth:`forward_heads` are all ones (so the regularisers are exactly zero).
        attention_kernel_size: taps of the attention convolution along the height (odd).
        act: activation, name or (name, args) as in MONAI.
        norm: normalisation, name or (name, args) as in MONAI.
        zero_init_last: initialise the last normalisation weight of every block to zero (off by default, as in
            the paper; when on, attention convolutions get zero gradients on the first step).
        init: the weights' initialisation, ``"kaiming"`` (default: torchvision's ResNet initialisation) or
            ``"authors"`` (PyTorch's defaults, as the authors' code, and the ``ife_multitask`` bundle's default
            since its 0.8.0; see :data:`INITIALISATIONS`).
        channels: output channels of the four stages, ``(C1, C2, C3, C4)`` (default ResNet18's
            ``(64, 128, 256, 512)``): the stem gives (B, C1, H/4, W/4), stage ``i`` (B, Ci, H/2^(i+1), W/2^(i+1)),
            each head reads C4 pooled features. E.g. ``(8, 16, 32, 64)`` for a narrow network in tests.
        tie_attention: the mild branch's blocks use the severe branch's attention convolutions (one set of
            attention weights for both branches, as the authors' code does by accident); the branches' maps still
            differ because their features do. No effect when ``shared_stages == 4`` or without attention.
        stage4_row_stride: stride of the fourth stage along the height, 2 (ResNet18) or 1, which keeps the third
            stage's rows: the last-stage features and attention maps get H/16 rows instead of H/32 (8 instead of 4
            at 128 px, 14 instead of 7 at 224 px), for 1.37 times the multiply-adds (0.99 instead of 0.73 GMAC for a
            128 px gel). The width is always halved.

    Raises:
        ValueError: on a bad ``shared_stages``, class counts, ``channels`` or ``attention_kernel_size``.

    Example::

        net = MultiTaskIFEResNet()
        probs = net(torch.rand(2, 3, 224, 224))  # (2, 9), rows sum to 1
        heads = net.forward_heads(torch.rand(2, 3, 224, 224))  # logits, probabilities, (2, 7)/(2, 14) maps
        narrow = MultiTaskIFEResNet(channels=(8, 16, 32, 64))  # same shapes out, about 1/64 of the weights
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_severe: int = 4,
        num_mild: int = 3,
        shared_stages: int = 3,
        attention: bool = True,
        attention_kernel_size: int = 7,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        zero_init_last: bool = False,
        init: str = "kaiming",
        channels: Sequence[int] = RESNET18_CHANNELS,
        tie_attention: bool = False,
        stage4_row_stride: int = 2,
    ) -> None:
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        channels = _check_channels(channels)
        self.stage4_row_stride = _check_row_stride(stage4_row_stride)
        if num_severe != 4 or num_mild != 3:
            raise ValueError(
                f"num_severe and num_mild must be 4 (None/G/A/M) and 3 (None/kappa/lambda) for the 9-class "
                f"fusion, got num_severe={num_severe!r}, num_mild={num_mild!r}."
            )
        if isinstance(shared_stages, bool) or not isinstance(shared_stages, int) or not 0 <= shared_stages <= 4:
            raise ValueError(f"shared_stages must be an integer in [0, 4], got {shared_stages!r}.")
        self.shared_stages = shared_stages
        self.channels = channels
        self.num_severe = num_severe
        self.num_mild = num_mild
        block_args = {"attention": attention, "attention_kernel_size": attention_kernel_size, "act": act, "norm": norm}

        self.stem = _make_stem(in_channels, channels[0], act, norm)
        self.shared = _make_stages(0, shared_stages, channels, self.stage4_row_stride, **block_args)
        self.severe_stages = _make_stages(shared_stages, 4, channels, self.stage4_row_stride, **block_args)
        self.mild_stages = _make_stages(shared_stages, 4, channels, self.stage4_row_stride, **block_args)
        self.tie_attention = bool(tie_attention)
        if self.tie_attention:
            for severe_stage, mild_stage in zip(self.severe_stages, self.mild_stages):
                for severe_block, mild_block in zip(severe_stage.blocks, mild_stage.blocks):
                    mild_block.attention = severe_block.attention
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.severe_head = nn.Linear(channels[-1], num_severe)
        self.mild_head = nn.Linear(channels[-1], num_mild)
        _init_weights(self, zero_init_last, _check_init(init))

    def attention_strides(self) -> dict[str, int]:
        """Total stride along the height of each attention map of :meth:`forward_heads`, by key."""
        return _attention_strides(self.stage4_row_stride)

    def forward_features(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Run the trunk and both branches.

        Args:
            x: images (B, in_channels, H, W), H = gel rows (migration direction).

        Returns:
            ``(severe_features, mild_features, severe_maps, mild_maps)``: the last-stage features of each branch,
            (B, channels[3], H/32, W/32), and each branch's four stage attention maps [(B, H/4), (B, H/8), (B, H/16),
            (B, H/32)] (the shared stages' maps are the same tensors in both lists).
        """
        x = self.stem(x)  # (B, channels[0], H/4, W/4)
        shared_maps: list[torch.Tensor] = []
        for stage in self.shared:
            x, att = stage(x)
            shared_maps.append(att)
        severe, mild = x, x
        severe_maps = list(shared_maps)
        mild_maps = list(shared_maps)
        for stage in self.severe_stages:
            severe, att = stage(severe)
            severe_maps.append(att)
        for stage in self.mild_stages:
            mild, att = stage(mild)
            mild_maps.append(att)
        return severe, mild, severe_maps, mild_maps

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits, fused probabilities and attention maps, for training and for figures.

        Args:
            x: images (B, in_channels, H, W).

        Returns:
            dict with ``severe_logits`` (B, 4), ``mild_logits`` (B, 3), ``severe_row_logits`` (B, 4, H/32) and
            ``mild_row_logits`` (B, 3, H/32) (each head applied to every feature row's mean over the width, without
            bias: their mean over the rows plus the bias is the head's logit), ``probabilities`` (B, 9) fused,
            ``attention_severe`` and ``attention_mild`` (B, H/32) of the last block of each branch's last stage,
            and the third stage's last-block map: ``attention_shared`` (B, H/16) when that stage is shared
            (``shared_stages >= 3``), else ``attention_severe_stage3`` and ``attention_mild_stage3``.
        """
        severe, mild, severe_maps, mild_maps = self.forward_features(x)
        severe_logits = self.severe_head(self.pool(severe).flatten(1))  # (B, 4)
        mild_logits = self.mild_head(self.pool(mild).flatten(1))  # (B, 3)
        probs = fuse_subtask_probabilities(torch.softmax(severe_logits, dim=1), torch.softmax(mild_logits, dim=1))
        heads: dict[str, torch.Tensor] = {
            "severe_logits": severe_logits,
            "mild_logits": mild_logits,
            "severe_row_logits": _row_logits(severe, self.severe_head.weight),
            "mild_row_logits": _row_logits(mild, self.mild_head.weight),
            "probabilities": probs,
            "attention_severe": severe_maps[3],
            "attention_mild": mild_maps[3],
        }
        if self.shared_stages >= 3:
            heads["attention_shared"] = severe_maps[2]
        else:
            heads["attention_severe_stage3"] = severe_maps[2]
            heads["attention_mild_stage3"] = mild_maps[2]
        return heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: images (B, in_channels, H, W).

        Returns:
            (B, 9) fused class probabilities in ``IFE_CLASSES`` order (rows sum to 1). Turn them into a call
            with :func:`~custom_components.ife.classes.call_from_probabilities` (the paper's rule).
        """
        return self.forward_heads(x)["probabilities"]


class IFEResNet(nn.Module):
    """Plain 9-class ResNet18 with the same horizontal attention (the paper's "Multi-class" baseline).

    Args:
        in_channels: image channels.
        num_classes: output classes (9 for IFE).
        attention: horizontal attention in every block (maps of ones when False).
        attention_kernel_size: taps of the attention convolution along the height (odd).
        act: activation, name or (name, args) as in MONAI.
        norm: normalisation, name or (name, args) as in MONAI.
        zero_init_last: zero-initialise the last normalisation weight of every block.
        init: the weights' initialisation, ``"kaiming"`` or ``"authors"`` (as :class:`MultiTaskIFEResNet`).
        channels: output channels of the four stages, ``(C1, C2, C3, C4)`` (default ResNet18's
            ``(64, 128, 256, 512)``): the stem gives (B, C1, H/4, W/4), stage ``i`` (B, Ci, H/2^(i+1), W/2^(i+1)),
            the head is ``Linear(C4, num_classes)``.
        stage4_row_stride: stride of the fourth stage along the height, 2 (ResNet18) or 1 (as in
            :class:`MultiTaskIFEResNet`).

    Raises:
        ValueError: on a bad channel/class count, ``channels`` or ``attention_kernel_size``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 9,
        attention: bool = True,
        attention_kernel_size: int = 7,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        zero_init_last: bool = False,
        init: str = "kaiming",
        channels: Sequence[int] = RESNET18_CHANNELS,
        stage4_row_stride: int = 2,
    ) -> None:
        super().__init__()
        _check_positive_int(in_channels, "in_channels")
        _check_positive_int(num_classes, "num_classes")
        channels = _check_channels(channels)
        self.stage4_row_stride = _check_row_stride(stage4_row_stride)
        self.num_classes = num_classes
        self.channels = channels
        block_args = {"attention": attention, "attention_kernel_size": attention_kernel_size, "act": act, "norm": norm}
        self.stem = _make_stem(in_channels, channels[0], act, norm)
        self.stages = _make_stages(0, 4, channels, self.stage4_row_stride, **block_args)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels[-1], num_classes)
        _init_weights(self, zero_init_last, _check_init(init))

    def attention_strides(self) -> dict[str, int]:
        """Total stride along the height of each attention map of :meth:`forward_heads`, by key."""
        return _attention_strides(self.stage4_row_stride)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """
        Args:
            x: images (B, in_channels, H, W).

        Returns:
            last-stage features (B, channels[3], H/32, W/32) and the four stage attention maps [(B, H/4) ... (B, H/32)].
        """
        x = self.stem(x)
        maps: list[torch.Tensor] = []
        for stage in self.stages:
            x, att = stage(x)
            maps.append(att)
        return x, maps

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: images (B, in_channels, H, W).

        Returns:
            dict with ``logits`` (B, num_classes), ``probabilities`` (B, num_classes) (softmax),
            ``attention`` (B, H/32) of the last stage and ``attention_shared`` (B, H/16) of the third stage
            (named as in the multi-task network so that figures and losses read the same keys).
        """
        features, maps = self.forward_features(x)
        logits = self.head(self.pool(features).flatten(1))
        return {
            "logits": logits,
            "probabilities": torch.softmax(logits, dim=1),
            "attention": maps[3],
            "attention_shared": maps[2],
        }

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: images (B, in_channels, H, W).

        Returns:
            (B, num_classes) softmax probabilities.
        """
        return self.forward_heads(x)["probabilities"]


class ForwardHeads(nn.Module):
    """Adapter whose ``forward`` is ``network.forward_heads``, optionally with calibrated probabilities.

    Training runs ``ForwardHeads(network)`` (DDP only synchronises gradients of what runs through ``forward``), so
    the engine sees the dict of logits and attention maps. The adapter has no parameters of its own; save and load
    ``network`` itself so that checkpoint keys are the same for training, evaluation, inference and export.

    With ``temperatures`` (temperature scaling, fitted after training by
    :class:`custom_components.ife.calibration.handler.IFECalibrator`) the ``probabilities`` entry is recomputed from
    tempered head logits: ``{"severe": Ts, "mild": Tm}`` fuses ``softmax(severe_logits / Ts)`` and
    ``softmax(mild_logits / Tm)`` (:func:`~custom_components.ife.classes.fuse_subtask_probabilities`) for
    :class:`MultiTaskIFEResNet`; ``{"classes": T}`` is ``softmax(logits / T)`` for :class:`IFEResNet`. The logit
    entries stay untempered (the losses and the head calls read them; a temperature does not move an argmax). The
    temperatures are a non-persistent buffer: they move with ``.to(device)`` and stay out of the state dict.

    Args:
        network: a module with a ``forward_heads(x) -> dict[str, Tensor]`` method.
        temperatures: None or ``{}`` (uncalibrated), ``{"severe": Ts, "mild": Tm}`` or ``{"classes": T}``, each > 0.

    Raises:
        ValueError: when ``network`` has no callable ``forward_heads``, on other temperature keys, on a temperature
            that is not a finite number > 0, or on keys that do not fit a known network kind.
    """

    def __init__(self, network: nn.Module, temperatures: Optional[Mapping[str, float]] = None) -> None:
        super().__init__()
        if not callable(getattr(network, "forward_heads", None)):
            raise ValueError(f"network must define forward_heads(x), got {type(network).__name__}.")
        self.network = network
        temperatures = dict(temperatures or {})
        keys = tuple(sorted(temperatures))
        if keys not in ((), ("mild", "severe"), ("classes",)):
            raise ValueError(f"temperatures must have the keys ('severe', 'mild') or ('classes',), got {keys}.")
        inner = getattr(network, "module", network)
        expected = {MultiTaskIFEResNet: ("mild", "severe"), IFEResNet: ("classes",)}.get(type(inner))
        if keys and expected is not None and keys != expected:
            raise ValueError(f"{type(inner).__name__} takes temperatures with the keys {expected}, got {keys}.")
        values = []
        for key in ("severe", "mild") if keys == ("mild", "severe") else keys:
            value = temperatures[key]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < float(value) < float("inf")
            if not ok:
                raise ValueError(f"temperature {key!r} must be a finite number > 0, got {value!r}.")
            values.append(float(value))
        self.multitask_temperatures = keys == ("mild", "severe")
        self.register_buffer("temperatures", torch.tensor(values, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``network.forward_heads(x)``; with temperatures, ``probabilities`` (B, 9) or (B, K) calibrated."""
        heads = self.network.forward_heads(x)
        if self.temperatures.numel() == 0:
            return heads
        heads = dict(heads)
        t = self.temperatures.to(dtype=torch.float32)
        if self.multitask_temperatures:
            # float32 softmax: under AMP the logits may be half precision
            severe = torch.softmax(heads["severe_logits"].float() / t[0], dim=1)  # (B, 4)
            mild = torch.softmax(heads["mild_logits"].float() / t[1], dim=1)  # (B, 3)
            heads["probabilities"] = fuse_subtask_probabilities(severe, mild)  # (B, 9)
        else:
            heads["probabilities"] = torch.softmax(heads["logits"].float() / t[0], dim=1)  # (B, K)
        return heads
