# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Losses of the OCT fluid segmentation (Darooei et al., J Med Signals Sens 2023, Eq. 5).

``L = alpha * Dice + beta * focal Tversky + gamma * weighted BCE`` on fluid logits ``(B, C, H, W)``: one channel
for the paper's one fluid class, one per fluid type (IRF, SRF, PED) otherwise; every term is computed per channel
and averaged over them.
Dice and Tversky come from MONAI; focal Tversky and weighted BCE are built on them / on PyTorch.

Naming, to avoid a classic mix-up: Abraham and Khan (ISBI 2019) weigh false negatives 0.7 and false positives
0.3. MONAI's :class:`~monai.losses.TverskyLoss` calls the false-positive weight ``alpha`` and the false-negative
weight ``beta``, so the same setting there is ``alpha=0.3, beta=0.7``. Here the arguments say what they weigh:
``fn_weight=0.7, fp_weight=0.3``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, TverskyLoss
from monai.utils import LossReduction, StrEnum, look_up_option
from torch.nn.modules.loss import _Loss

__all__ = ["FocalTverskyLoss", "WeightedBCELoss", "FluidSegLoss", "FluidLossName", "fluid_loss"]


def _check_weight(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a number >= 0, got {value!r}.")
    return float(value)


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.shape != target.shape:
        raise ValueError(
            f"logits and target must have the same shape, got {tuple(logits.shape)} and {tuple(target.shape)}."
        )


class FocalTverskyLoss(_Loss):
    """Focal Tversky loss, Abraham and Khan, "A Novel Focal Tversky Loss Function with Improved Attention U-Net for
    Lesion Segmentation", ISBI 2019.

    Per sample and channel, ``TI = (TP + s) / (TP + fn_weight * FN + fp_weight * FP + s)`` over the spatial
    dimensions, and the loss is ``(1 - TI) ** gamma``. ``gamma < 1`` raises the loss of hard, low-TI cases (small
    fluid pockets) relative to easy ones.

    Args:
        fn_weight: weight of false negatives (0.7 in the paper; MONAI ``TverskyLoss``'s ``beta``).
        fp_weight: weight of false positives (0.3 in the paper; MONAI ``TverskyLoss``'s ``alpha``).
        gamma: focal exponent, > 0 (0.75 in the paper; 1 gives the plain Tversky loss).
        sigmoid: apply a sigmoid to the input (logits in, as the networks produce).
        smooth: added to numerator and denominator; an empty mask predicted empty gives TI = 1, loss 0, not NaN.
        batch: pool TP/FN/FP over the whole batch before the ratio (one TI per channel) instead of one per sample.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` ((B, C), or (1, C) with ``batch``).

    Raises:
        ValueError: on negative weights, ``gamma <= 0`` or an unknown reduction.
    """

    def __init__(
        self,
        fn_weight: float = 0.7,
        fp_weight: float = 0.3,
        gamma: float = 0.75,
        sigmoid: bool = True,
        smooth: float = 1e-5,
        batch: bool = False,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0:
            raise ValueError(f"gamma must be a number > 0, got {gamma!r}.")
        self.gamma = float(gamma)
        # MONAI's Tversky loss returns 1 - TI per sample and channel; its alpha weighs FP, its beta FN
        self.tversky = TverskyLoss(
            sigmoid=sigmoid,
            alpha=_check_weight(fp_weight, "fp_weight"),
            beta=_check_weight(fn_weight, "fn_weight"),
            smooth_nr=smooth,
            smooth_dr=smooth,
            batch=batch,
            reduction=LossReduction.NONE,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (B, C, H, W[, D]) network outputs (probabilities if ``sigmoid=False``).
            target: binary ground truth of the same shape.

        Returns:
            a scalar, or (B, C) ((1, C) with ``batch``) for ``reduction="none"``.

        Raises:
            ValueError: when the shapes differ.
        """
        _check_shapes(logits, target)
        one_minus_ti = self.tversky(logits, target).reshape(-1, logits.shape[1])  # (B, C), or (1, C) pooled
        loss = one_minus_ti.clamp(min=0) ** self.gamma
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss


class WeightedBCELoss(_Loss):
    """Binary cross-entropy on logits with the positive (fluid) class up-weighted.

    Args:
        pos_weight: a number >= 0, or ``"batch"`` to use the batch's ``negatives / positives`` pixel ratio, clamped
            to ``[1, max_pos_weight]`` (a batch without fluid gets weight 1, never a division by zero).
        max_pos_weight: upper bound of the batch weight (fluid can be under 0.1 % of the pixels).
        reduction: ``"mean"`` (over pixels), ``"sum"`` or ``"none"`` (per pixel).

    Raises:
        ValueError: on a negative number, an unknown string or ``max_pos_weight < 1``.
    """

    def __init__(
        self,
        pos_weight: float | str = "batch",
        max_pos_weight: float = 100.0,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=look_up_option(reduction, LossReduction).value)
        if isinstance(pos_weight, str):
            if pos_weight != "batch":
                raise ValueError(f"pos_weight must be a number >= 0 or 'batch', got {pos_weight!r}.")
        else:
            pos_weight = _check_weight(pos_weight, "pos_weight")
        if not max_pos_weight >= 1:
            raise ValueError(f"max_pos_weight must be >= 1, got {max_pos_weight!r}.")
        self.pos_weight = pos_weight
        self.max_pos_weight = float(max_pos_weight)

    def batch_pos_weight(self, target: torch.Tensor) -> torch.Tensor:
        """``negatives / positives`` of each channel of ``target`` (B, C, ...), clamped to ``[1, max_pos_weight]`` (1
        for a channel without fluid): shape (C, 1, ...), to broadcast over the batch and the pixels. Per channel, so
        a rare fluid type (PED beside common IRF) is weighed by its own rarity."""
        dims = [0, *range(2, target.ndim)]
        positives = target.sum(dim=dims)
        negatives = target.numel() // target.shape[1] - positives
        ratio = negatives / positives.clamp(min=1)
        ratio = torch.where(positives > 0, ratio, torch.ones_like(ratio))
        return ratio.clamp(1.0, self.max_pos_weight).detach().reshape(-1, *([1] * (target.ndim - 2)))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (B, C, H, W[, D]) network outputs (no sigmoid).
            target: binary ground truth of the same shape.

        Raises:
            ValueError: when the shapes differ.
        """
        _check_shapes(logits, target)
        target = target.to(logits.dtype)
        if self.pos_weight == "batch":
            weight = self.batch_pos_weight(target)
        else:
            weight = torch.tensor(self.pos_weight, device=logits.device)
        return F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=weight.to(logits.dtype), reduction=self.reduction
        )


class FluidSegLoss(_Loss):
    """``alpha * Dice + beta * focal Tversky + gamma * weighted BCE`` (Darooei et al. 2023, Eq. 5).

    The paper gives no values for alpha, beta and gamma; the default weighs the three terms equally. The defaults
    are what the ``oct_fluid_seg`` bundle trains with (``configs/train.json``: ``fluid_loss("combined")``, no other
    argument). Dice and focal
    Tversky are computed over the whole batch by default (``batch=True``): per sample, a B-scan without fluid would
    add a loss of about 1 whatever the network predicts (any non-zero probability mass makes its Dice 0), which
    drowns the signal of the scans with fluid when about half the data has none. Terms with a
    zero weight are not computed, so ``FluidSegLoss(alpha=1, beta=0, gamma=0)`` is exactly the Dice loss (see
    :func:`fluid_loss` for the paper's single-loss comparisons by name).

    Args:
        alpha: weight of the Dice loss, >= 0.
        beta: weight of the focal Tversky loss, >= 0.
        gamma: weight of the weighted BCE, >= 0.
        fn_weight, fp_weight, focal_gamma: of :class:`FocalTverskyLoss`.
        pos_weight: of :class:`WeightedBCELoss`.
        max_pos_weight: of :class:`WeightedBCELoss`. Lower than the class's default: with fluid in about 1 % of the
            pixels, a weight near 100 pushes every background probability up and the masks bleed (best validation Dice
            on synthetic 96 px B-scans, 15 epochs, one run each: 0.52 with a cap of 100, 0.69 with 10, 0.81 with 5).
        smooth: smoothing of the Dice and Tversky ratios (empty masks give 0 loss, never NaN).
        batch: compute Dice and Tversky over the batch rather than per sample (see above).

    Raises:
        ValueError: on a negative weight or when all three are 0.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        fn_weight: float = 0.7,
        fp_weight: float = 0.3,
        focal_gamma: float = 0.75,
        pos_weight: float | str = "batch",
        max_pos_weight: float = 5.0,
        smooth: float = 1e-5,
        batch: bool = True,
    ) -> None:
        super().__init__()
        self.alpha = _check_weight(alpha, "alpha")
        self.beta = _check_weight(beta, "beta")
        self.gamma = _check_weight(gamma, "gamma")
        if self.alpha + self.beta + self.gamma == 0:
            raise ValueError("at least one of alpha, beta, gamma must be > 0.")
        self.dice = DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, batch=batch)
        self.focal_tversky = FocalTverskyLoss(
            fn_weight=fn_weight, fp_weight=fp_weight, gamma=focal_gamma, smooth=smooth, batch=batch
        )
        self.wbce = WeightedBCELoss(pos_weight=pos_weight, max_pos_weight=max_pos_weight)
        self.last_terms: dict[str, torch.Tensor] = {}

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: (B, C, H, W) fluid logits, one channel per fluid class.
            target: (B, C, H, W) binary mask per fluid class.

        Returns:
            the scalar loss; ``last_terms`` then holds the unweighted terms (detached tensors) for logging.

        Raises:
            ValueError: when the shapes differ.
        """
        _check_shapes(logits, target)
        terms = {}
        total = logits.new_zeros(())
        parts = (
            ("dice", self.alpha, self.dice),
            ("focal_tversky", self.beta, self.focal_tversky),
            ("wbce", self.gamma, self.wbce),
        )
        for name, weight, fn in parts:
            if weight > 0:
                value = fn(logits, target)
                terms[name] = value.detach()
                total = total + weight * value
        terms["total"] = total.detach()
        self.last_terms = terms
        return total


class FluidLossName(StrEnum):
    """The losses of the paper's comparison (Tables 3 and 4)."""

    COMBINED = "combined"
    DICE = "dice"
    TVERSKY = "tversky"
    FOCAL_TVERSKY = "focal_tversky"
    WBCE = "wbce"


# the single-loss settings of the paper's comparison; the factory refuses to override them
_SINGLE_LOSS_WEIGHTS: dict[str, dict[str, float]] = {
    FluidLossName.DICE.value: {"alpha": 1.0, "beta": 0.0, "gamma": 0.0},
    FluidLossName.TVERSKY.value: {"alpha": 0.0, "beta": 1.0, "gamma": 0.0, "focal_gamma": 1.0},
    FluidLossName.FOCAL_TVERSKY.value: {"alpha": 0.0, "beta": 1.0, "gamma": 0.0},
    FluidLossName.WBCE.value: {"alpha": 0.0, "beta": 0.0, "gamma": 1.0},
}


def fluid_loss(name: FluidLossName | str = FluidLossName.COMBINED, **kwargs) -> FluidSegLoss:
    """Build one of the paper's losses by name, for a config switch (``"loss_name": "dice"``).

    Every name gives a :class:`FluidSegLoss` (same ``last_terms`` logging, same batch pooling), with the weights of
    the other terms set to 0 for the single losses.

    Args:
        name: ``"combined"`` (Eq. 5), ``"dice"``, ``"tversky"`` (Tversky, i.e. focal Tversky with exponent 1),
            ``"focal_tversky"`` or ``"wbce"``.
        kwargs: further arguments of :class:`FluidSegLoss` (``smooth``, ``batch``, ``fn_weight``, ``pos_weight``,
            ...). For the single losses the weights ``alpha``, ``beta``, ``gamma`` (and ``focal_gamma`` for
            ``"tversky"``) are fixed by the name.

    Raises:
        ValueError: on an unknown name (the message lists the valid ones), or a keyword the name fixes.
    """
    name = look_up_option(name, FluidLossName).value
    fixed = _SINGLE_LOSS_WEIGHTS.get(name, {})
    clash = sorted(set(kwargs) & set(fixed))
    if clash:
        raise ValueError(f"loss {name!r} fixes {clash}; use name 'combined' to set them, got {kwargs}.")
    return FluidSegLoss(**{**kwargs, **fixed})
