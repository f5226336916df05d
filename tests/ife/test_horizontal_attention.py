"""Tests of custom_components.ife.horizontal_attention."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from custom_components.ife.horizontal_attention import HorizontalAttention, UniformAttention


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


@pytest.mark.parametrize("shape", [(2, 8, 16, 12), (1, 1, 5, 3), (3, 4, 7, 1)])
def test_shapes_and_range(shape):
    x = torch.randn(*shape)
    y, att = HorizontalAttention()(x)
    assert y.shape == x.shape
    assert att.shape == (shape[0], shape[2])
    assert bool(((att > 0) & (att < 1)).all())


def test_hand_computed_kernel_1():
    # one sample, 2 channels, 2 rows, 2 columns
    x = torch.tensor([[[[1.0, 3.0], [0.0, -2.0]], [[-1.0, 1.0], [4.0, 2.0]]]])
    module = HorizontalAttention(kernel_size=1)
    with torch.no_grad():
        module.conv.weight.copy_(torch.tensor([[[0.5], [-0.25]]]))  # (out=1, in=2 [avg, max], k=1)
    y, att = module(x)
    # row 0: values 1, 3, -1, 1 -> mean 1, max 3; row 1: 0, -2, 4, 2 -> mean 1, max 4
    expected = [_sigmoid(0.5 * 1 - 0.25 * 3), _sigmoid(0.5 * 1 - 0.25 * 4)]
    assert torch.allclose(att, torch.tensor([expected]))
    assert torch.allclose(y, x * torch.tensor(expected).view(1, 1, 2, 1))


def test_hand_computed_kernel_3_zero_padding():
    # one channel, one column: avg = max = the value of each row
    values = [1.0, 2.0, -1.0]
    x = torch.tensor(values).view(1, 1, 3, 1)
    module = HorizontalAttention(kernel_size=3)
    with torch.no_grad():
        # taps (above, centre, below) for avg and for max
        module.conv.weight.copy_(torch.tensor([[[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]]]))
    _, att = module(x)
    padded = [0.0] + values + [0.0]
    logits = [
        sum(w * padded[h + j] for j, w in enumerate([1.0, 2.0, 3.0]))
        + sum(w * padded[h + j] for j, w in enumerate([0.5, 0.0, -1.0]))
        for h in range(3)
    ]
    assert torch.allclose(att, torch.tensor([[_sigmoid(v) for v in logits]]))


def test_equivalent_to_authors_square_kernel():
    # the authors' 7x7 Conv2d on the (B, 2, H, 1) pooled map only uses its centre column
    torch.manual_seed(0)
    module = HorizontalAttention(kernel_size=7)
    square = nn.Conv2d(2, 1, 7, padding=3, bias=False)
    with torch.no_grad():
        square.weight.normal_()
        module.conv.weight.copy_(square.weight[:, :, :, 3])
    x = torch.randn(2, 6, 11, 5)
    pooled = torch.cat([x.mean(dim=(1, 3), keepdim=True), x.amax(dim=(1, 3), keepdim=True)], dim=1)  # (B, 2, H, 1)
    reference = torch.sigmoid(square(pooled))[:, 0, :, 0]
    assert torch.allclose(module(x)[1], reference, atol=1e-6)


def test_rows_only():
    # permuting the columns (lanes) permutes the output the same way and leaves the map unchanged
    torch.manual_seed(1)
    x = torch.randn(2, 4, 9, 6)
    module = HorizontalAttention()
    perm = torch.randperm(6)
    y, att = module(x)
    y_perm, att_perm = module(x[..., perm])
    assert torch.allclose(att, att_perm)
    assert torch.allclose(y[..., perm], y_perm)


def test_gradients_reach_the_conv():
    module = HorizontalAttention()
    x = torch.randn(2, 3, 8, 4, requires_grad=True)
    y, att = module(x)
    (y.sum() + att.sum()).backward()
    assert module.conv.weight.grad is not None and bool(module.conv.weight.grad.abs().sum() > 0)
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert sum(p.numel() for p in module.parameters()) == 14


@pytest.mark.parametrize("kernel_size", [0, -3, 4, 2.0, True, "7"])
def test_bad_kernel_size(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be a positive odd integer"):
        HorizontalAttention(kernel_size=kernel_size)


def test_uniform_attention():
    x = torch.randn(2, 3, 5, 4)
    y, att = UniformAttention()(x)
    assert torch.equal(y, x)
    assert torch.equal(att, torch.ones(2, 5))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scriptable():
    module = HorizontalAttention(kernel_size=5)
    scripted = torch.jit.script(module)
    x = torch.randn(2, 3, 8, 4)
    for a, b in zip(scripted(x), module(x)):
        assert torch.allclose(a, b)
    assert torch.equal(torch.jit.script(UniformAttention())(x)[1], torch.ones(2, 8))
