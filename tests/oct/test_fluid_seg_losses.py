"""Tests of custom_components.oct.losses: focal Tversky, weighted BCE, the combined loss and the name switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, TverskyLoss

from custom_components.oct.losses import (
    FluidLossName,
    FluidSegLoss,
    FocalTverskyLoss,
    WeightedBCELoss,
    fluid_loss,
)

# ---------------------------------------------------------------- focal Tversky


def _probs_case():
    # one sample, one channel, 2x2 pixels: probabilities and target
    p = torch.tensor([[[[0.9, 0.2], [0.6, 0.1]]]])
    g = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # TP = 0.9 + 0.2 = 1.1; FN = 0.1 + 0.8 = 0.9; FP = 0.6 + 0.1 = 0.7
    ti = 1.1 / (1.1 + 0.7 * 0.9 + 0.3 * 0.7)  # = 1.1 / 1.94
    return p, g, ti


def test_focal_tversky_hand_computed():
    p, g, ti = _probs_case()
    loss = FocalTverskyLoss(sigmoid=False, smooth=0.0)(p, g)
    assert loss.item() == pytest.approx((1 - ti) ** 0.75, rel=1e-5)
    assert loss.item() == pytest.approx((0.84 / 1.94) ** 0.75, rel=1e-5)


def test_focal_tversky_weights_say_what_they_weigh():
    p, g, _ = _probs_case()
    # fn_weight=1, fp_weight=0: TI = TP / (TP + FN) = 1.1 / 2.0
    loss = FocalTverskyLoss(fn_weight=1.0, fp_weight=0.0, gamma=1.0, sigmoid=False, smooth=0.0)(p, g)
    assert loss.item() == pytest.approx(1 - 1.1 / 2.0, rel=1e-5)
    # fn_weight=0, fp_weight=1: TI = TP / (TP + FP) = 1.1 / 1.8
    loss = FocalTverskyLoss(fn_weight=0.0, fp_weight=1.0, gamma=1.0, sigmoid=False, smooth=0.0)(p, g)
    assert loss.item() == pytest.approx(1 - 1.1 / 1.8, rel=1e-5)


def test_focal_tversky_gamma_raises_small_losses():
    p, g, ti = _probs_case()
    plain = FocalTverskyLoss(gamma=1.0, sigmoid=False, smooth=0.0)(p, g).item()
    focal = FocalTverskyLoss(gamma=0.75, sigmoid=False, smooth=0.0)(p, g).item()
    assert plain == pytest.approx(1 - ti, rel=1e-5)
    assert focal > plain  # (x ** 0.75 > x for x in (0, 1))


def test_focal_tversky_perfect_prediction_is_zero():
    g = torch.zeros(2, 1, 8, 8)
    g[:, :, 2:5, 3:6] = 1
    logits = (g * 2 - 1) * 50.0
    loss = FocalTverskyLoss()(logits, g)
    assert loss.item() == pytest.approx(0.0, abs=1e-4)


def test_focal_tversky_empty_target_empty_prediction_no_nan():
    g = torch.zeros(2, 1, 8, 8)
    probs = torch.zeros(2, 1, 8, 8)
    loss = FocalTverskyLoss(sigmoid=False)(probs, g)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # and the gradient at that point is finite too, also where the sigmoid underflows to exactly 0 (TI exactly 1,
    # the base of (1 - TI) ** 0.75 exactly 0)
    for value in (-30.0, -200.0):
        logits = torch.full((2, 1, 8, 8), value, requires_grad=True)
        FocalTverskyLoss()(logits, g).backward()
        assert torch.isfinite(logits.grad).all()


def test_focal_tversky_gamma_1_is_monai_tversky_with_swapped_names():
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 8, 8)
    target = (torch.rand(3, 1, 8, 8) > 0.7).float()
    ours = FocalTverskyLoss(fn_weight=0.7, fp_weight=0.3, gamma=1.0)(logits, target)
    monai = TverskyLoss(alpha=0.3, beta=0.7, sigmoid=True)(logits, target)
    assert torch.allclose(ours, monai, atol=1e-6)
    # the other mapping differs (target is unbalanced, so FN and FP weights matter)
    swapped = TverskyLoss(alpha=0.7, beta=0.3, sigmoid=True)(logits, target)
    assert not torch.allclose(ours, swapped, atol=1e-4)


def test_focal_tversky_reduction_shapes():
    logits = torch.randn(3, 2, 4, 4)
    target = (torch.rand(3, 2, 4, 4) > 0.5).float()
    none = FocalTverskyLoss(reduction="none")(logits, target)
    assert none.shape == (3, 2)
    assert FocalTverskyLoss(reduction="mean")(logits, target).item() == pytest.approx(none.mean().item(), rel=1e-6)
    assert FocalTverskyLoss(reduction="sum")(logits, target).item() == pytest.approx(none.sum().item(), rel=1e-6)
    assert FocalTverskyLoss(reduction="none", batch=True)(logits, target).shape == (1, 2)


def test_focal_tversky_per_sample_values():
    # sample 0 is perfect, sample 1 predicts nothing on a non-empty target (TI ~ 0 -> loss ~ 1)
    g = torch.zeros(2, 1, 4, 4)
    g[:, :, 1:3, 1:3] = 1
    p = torch.zeros(2, 1, 4, 4)
    p[0] = g[0]
    loss = FocalTverskyLoss(sigmoid=False, reduction="none")(p, g)
    assert loss[0, 0].item() == pytest.approx(0.0, abs=1e-5)
    assert loss[1, 0].item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gamma=0), "gamma must be a number > 0"),
        (dict(gamma=-1.0), "gamma must be a number > 0"),
        (dict(gamma=True), "gamma must be a number > 0"),
        (dict(fn_weight=-0.1), "fn_weight must be a number >= 0"),
        (dict(fp_weight=-0.1), "fp_weight must be a number >= 0"),
    ],
)
def test_focal_tversky_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FocalTverskyLoss(**kwargs)


def test_bad_reduction_and_shape_mismatch():
    with pytest.raises(ValueError):
        FocalTverskyLoss(reduction="median")
    with pytest.raises(ValueError, match=r"same shape, got \(1, 1, 4, 4\) and \(1, 1, 4, 3\)"):
        FocalTverskyLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 3))
    with pytest.raises(ValueError, match="same shape"):
        WeightedBCELoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 3))
    with pytest.raises(ValueError, match="same shape"):
        FluidSegLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 3))


# ---------------------------------------------------------------- weighted BCE


def test_wbce_batch_weight_hand_computed():
    target = torch.zeros(1, 1, 4, 4)
    target[0, 0, 0, 0] = target[0, 0, 2, 3] = 1  # 2 positives, 14 negatives -> weight 7
    loss = WeightedBCELoss()
    assert loss.batch_pos_weight(target).item() == pytest.approx(7.0)
    torch.manual_seed(0)
    logits = torch.randn(1, 1, 4, 4)
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(7.0))
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # by hand: mean of -7 * log(sigmoid(x)) on positives and -log(1 - sigmoid(x)) on negatives
    s = torch.sigmoid(logits)
    manual = torch.where(target > 0, -7.0 * torch.log(s), -torch.log(1 - s)).mean()
    assert loss(logits, target).item() == pytest.approx(manual.item(), rel=1e-5)


def test_wbce_batch_weight_pools_the_batch_and_clamps():
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, :2] = 1  # 2 positives in 32 pixels -> 30 / 2 = 15
    assert WeightedBCELoss().batch_pos_weight(target).item() == pytest.approx(15.0)
    assert WeightedBCELoss(max_pos_weight=5).batch_pos_weight(target).item() == pytest.approx(5.0)
    # more positives than negatives: clamped up to 1
    assert WeightedBCELoss().batch_pos_weight(torch.ones(1, 1, 4, 4)).item() == pytest.approx(1.0)


def test_wbce_no_fluid_batch_weight_1_and_finite():
    target = torch.zeros(2, 1, 4, 4)
    loss = WeightedBCELoss()
    assert loss.batch_pos_weight(target).item() == pytest.approx(1.0)
    logits = torch.randn(2, 1, 4, 4)
    value = loss(logits, target)
    assert torch.isfinite(value)
    assert value.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)


def test_wbce_numeric_pos_weight_and_reductions():
    torch.manual_seed(1)
    logits = torch.randn(2, 1, 4, 4)
    target = (torch.rand(2, 1, 4, 4) > 0.5).float()
    for reduction in ("mean", "sum", "none"):
        ours = WeightedBCELoss(pos_weight=3, reduction=reduction)(logits, target)
        ref = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(3.0), reduction=reduction)
        assert ours.shape == ref.shape
        assert torch.allclose(ours, ref, atol=1e-6)
    # pos_weight=0 ignores the positives entirely
    only_neg = WeightedBCELoss(pos_weight=0, reduction="none")(logits, target)
    assert torch.all(only_neg[target > 0] == 0)


def test_wbce_gradient_does_not_flow_into_weight():
    target = torch.zeros(1, 1, 4, 4)
    target[..., 0, 0] = 1
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    WeightedBCELoss()(logits, target).backward()
    # d/dx of mean BCE at x=0: (sigmoid(0) * (1 + (w - 1) * y) - w * y) / N, w = 15
    grad = logits.grad[0, 0]
    assert grad[0, 0].item() == pytest.approx((0.5 * 15 - 15) / 16, rel=1e-5)
    assert grad[1, 1].item() == pytest.approx(0.5 / 16, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pos_weight=-1), "pos_weight must be a number >= 0"),
        (dict(pos_weight="auto"), "pos_weight must be a number >= 0 or 'batch'"),
        (dict(pos_weight=True), "pos_weight must be a number >= 0"),
        (dict(max_pos_weight=0.5), "max_pos_weight must be >= 1"),
    ],
)
def test_wbce_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WeightedBCELoss(**kwargs)


# ---------------------------------------------------------------- combined loss


def _batch():
    torch.manual_seed(2)
    logits = torch.randn(2, 1, 8, 8)
    target = torch.zeros(2, 1, 8, 8)
    target[0, 0, 2:5, 2:6] = 1  # second sample has no fluid
    return logits, target


def test_combined_equals_weighted_parts():
    logits, target = _batch()
    loss = FluidSegLoss(alpha=0.5, beta=2.0, gamma=0.25)
    total = loss(logits, target)
    dice = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)(logits, target)
    ft = FocalTverskyLoss(batch=True)(logits, target)
    wbce = WeightedBCELoss(max_pos_weight=5.0)(logits, target)
    assert total.item() == pytest.approx((0.5 * dice + 2.0 * ft + 0.25 * wbce).item(), rel=1e-6)
    assert set(loss.last_terms) == {"dice", "focal_tversky", "wbce", "total"}
    assert loss.last_terms["dice"].item() == pytest.approx(dice.item(), rel=1e-6)
    assert loss.last_terms["focal_tversky"].item() == pytest.approx(ft.item(), rel=1e-6)
    assert loss.last_terms["wbce"].item() == pytest.approx(wbce.item(), rel=1e-6)
    assert loss.last_terms["total"].item() == pytest.approx(total.item(), rel=1e-6)
    assert not any(t.requires_grad for t in loss.last_terms.values())


def test_combined_default_max_pos_weight_is_5():
    # 12 positives in 128 pixels -> 116 / 12 = 9.67, capped at 5 by the combined loss
    _, target = _batch()
    assert FluidSegLoss().wbce.batch_pos_weight(target).item() == pytest.approx(5.0)


def test_combined_is_differentiable():
    logits, target = _batch()
    logits.requires_grad_(True)
    FluidSegLoss()(logits, target).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


def test_zero_weight_skips_the_term():
    logits, target = _batch()
    loss = FluidSegLoss(alpha=1.0, beta=0.0, gamma=0.0)
    value = loss(logits, target)
    assert set(loss.last_terms) == {"dice", "total"}
    assert value.item() == pytest.approx(
        DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)(logits, target).item(), rel=1e-6
    )
    loss = FluidSegLoss(alpha=0.0, beta=1.0, gamma=3.0)
    loss(logits, target)
    assert set(loss.last_terms) == {"focal_tversky", "wbce", "total"}


def test_all_zero_weights_raise():
    with pytest.raises(ValueError, match="at least one of alpha, beta, gamma must be > 0"):
        FluidSegLoss(alpha=0, beta=0, gamma=0)


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
def test_negative_weight_raises(name):
    with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
        FluidSegLoss(**{name: -1.0})


def test_perfect_prediction_combined_is_small():
    _, target = _batch()
    logits = (target * 2 - 1) * 30.0
    loss = FluidSegLoss()
    assert loss(logits, target).item() == pytest.approx(0.0, abs=1e-4)


# ---------------------------------------------------------------- by name


def test_fluid_loss_by_name():
    logits, target = _batch()
    combined = fluid_loss("combined", alpha=2.0)
    assert isinstance(combined, FluidSegLoss) and combined.alpha == 2.0 and combined.beta == 1.0
    assert isinstance(fluid_loss(), FluidSegLoss) and fluid_loss().gamma == 1.0

    dice = fluid_loss("dice")
    assert (dice.alpha, dice.beta, dice.gamma) == (1.0, 0.0, 0.0)

    tversky = fluid_loss("tversky")
    assert (tversky.alpha, tversky.beta, tversky.gamma) == (0.0, 1.0, 0.0)
    assert tversky.focal_tversky.gamma == 1.0
    plain = TverskyLoss(alpha=0.3, beta=0.7, sigmoid=True, batch=True, smooth_nr=1e-5, smooth_dr=1e-5)
    assert tversky(logits, target).item() == pytest.approx(plain(logits, target).item(), rel=1e-5)

    focal = fluid_loss(FluidLossName.FOCAL_TVERSKY)
    assert (focal.alpha, focal.beta, focal.gamma) == (0.0, 1.0, 0.0)
    assert focal.focal_tversky.gamma == 0.75

    wbce = fluid_loss("wbce")
    assert (wbce.alpha, wbce.beta, wbce.gamma) == (0.0, 0.0, 1.0)
    wbce(logits, target)
    assert set(wbce.last_terms) == {"wbce", "total"}


def test_fluid_loss_unknown_name_lists_options():
    with pytest.raises(ValueError) as err:
        fluid_loss("hinge")
    message = str(err.value)
    assert "hinge" in message
    for name in ("combined", "dice", "tversky", "focal_tversky", "wbce"):
        assert name in message


def test_fluid_loss_passes_other_arguments_to_single_losses():
    logits, target = _batch()
    dice = fluid_loss("dice", smooth=1.0, batch=False)
    expected = DiceLoss(sigmoid=True, smooth_nr=1.0, smooth_dr=1.0, batch=False)(logits, target)
    assert dice(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    wbce = fluid_loss("wbce", pos_weight=2.0)
    expected = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(2.0))
    assert wbce(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    tversky = fluid_loss("tversky", fn_weight=0.5, fp_weight=0.5)
    assert (tversky.focal_tversky.tversky.alpha, tversky.focal_tversky.tversky.beta) == (0.5, 0.5)


@pytest.mark.parametrize(
    "name, kwargs", [("dice", {"beta": 1.0}), ("wbce", {"gamma": 2.0}), ("tversky", {"focal_gamma": 0.75})]
)
def test_fluid_loss_refuses_to_override_what_the_name_fixes(name, kwargs):
    key = next(iter(kwargs))
    with pytest.raises(ValueError, match=rf"loss '{name}' fixes \['{key}'\]"):
        fluid_loss(name, **kwargs)


@pytest.mark.parametrize("name", [n.value for n in FluidLossName])
def test_every_loss_is_finite_on_an_empty_batch_and_zero_when_perfect(name):
    target = torch.zeros(2, 1, 8, 8)
    logits = torch.full((2, 1, 8, 8), -30.0, requires_grad=True)
    loss = fluid_loss(name)
    value = loss(logits, target)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert value.item() == pytest.approx(0.0, abs=1e-4)
