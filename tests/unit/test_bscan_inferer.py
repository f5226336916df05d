"""Tests of custom_components.inferers.slice_or_window.SliceOrWindowInferer."""

from __future__ import annotations

import pytest
import torch

from custom_components.inferers.slice_or_window import SliceOrWindowInferer


def _conv():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(0.5)
    return net.eval()


def _checking_net(calls):
    """A 2D-only network recording its input shapes (refuses anything but 4D windows of 32 x 32)."""

    def net(x):
        assert x.ndim == 4 and x.shape[-2:] == (32, 32), x.shape
        calls.append(tuple(x.shape))
        return 3 * x - 1

    return net


def test_2d_sliding_window_shape_and_values():
    x = torch.rand(1, 1, 40, 70)
    calls = []
    inferer = SliceOrWindowInferer(roi_size=(32, 32), sw_batch_size=2)
    with torch.no_grad():
        y = inferer(x, _checking_net(calls))
    assert y.shape == (1, 1, 40, 70)
    # a pointwise network is reproduced exactly by the blended windows
    assert torch.allclose(y, 3 * x - 1, atol=1e-5)
    assert len(calls) >= 2  # tiled: more than one window


def test_2d_image_smaller_than_roi_is_padded():
    x = torch.rand(2, 1, 20, 24)
    with torch.no_grad():
        y = SliceOrWindowInferer(roi_size=(32, 32))(x, _checking_net([]))
    assert y.shape == (2, 1, 20, 24)
    assert torch.allclose(y, 3 * x - 1, atol=1e-5)


def test_2d_conv_network():
    x = torch.rand(1, 1, 40, 70)
    net = _conv()
    with torch.no_grad():
        y = SliceOrWindowInferer(roi_size=(32, 32), mode="constant")(x, net)
    assert y.shape == (1, 1, 40, 70)
    assert torch.allclose(y, 2 * x + 0.5, atol=1e-5)


def test_volume_slice_by_slice():
    torch.manual_seed(1)
    x = torch.rand(1, 1, 20, 24, 3)
    net = _conv()
    calls = []

    def network(t):
        calls.append(tuple(t.shape))
        return net(t)

    with torch.no_grad():
        y = SliceOrWindowInferer(roi_size=(32, 32), sw_batch_size=1)(x, network)
        expected = torch.stack([net(x[..., s]) for s in range(3)], dim=-1)
    assert y.shape == (1, 1, 20, 24, 3)
    assert torch.allclose(y, expected, atol=1e-5)
    assert all(len(shape) == 4 for shape in calls)  # the network only sees 2D batches
    assert len(calls) == 3  # one 32 x 32 window per slice with sw_batch_size=1


def test_volume_slices_are_not_mixed():
    # a network whose output depends on the whole window (its mean) shows slices are processed separately
    x = torch.zeros(1, 1, 20, 24, 3)
    x[..., 1] = 1.0

    def network(t):
        return t.mean(dim=(-2, -1), keepdim=True).expand_as(t) + 0 * t

    with torch.no_grad():
        y = SliceOrWindowInferer(roi_size=(20, 24), mode="constant")(x, network)
    assert torch.allclose(y[..., 0], torch.zeros(1, 1, 20, 24))
    assert torch.allclose(y[..., 1], torch.ones(1, 1, 20, 24))
    assert torch.allclose(y[..., 2], torch.zeros(1, 1, 20, 24))


def test_volume_other_slice_axis():
    x = torch.rand(1, 1, 3, 20, 24)
    with torch.no_grad():
        y = SliceOrWindowInferer(roi_size=(32, 32), slice_axis=0)(x, _checking_net([]))
    assert y.shape == x.shape
    assert torch.allclose(y, 3 * x - 1, atol=1e-5)


@pytest.mark.parametrize("shape", [(1, 1, 8), (1, 8), (1, 1, 2, 4, 4, 4)])
def test_bad_input_rank_names_shape(shape):
    with pytest.raises(ValueError) as err:
        SliceOrWindowInferer(roi_size=(32, 32))(torch.zeros(*shape), _conv())
    assert str(tuple(shape)) in str(err.value)
    assert "(B, C, H, W)" in str(err.value)


@pytest.mark.parametrize("roi", [(32,), (32, 32, 32), (), (0, 32)])
def test_bad_roi_size(roi):
    with pytest.raises(ValueError, match="roi_size must be two positive numbers"):
        SliceOrWindowInferer(roi_size=roi)


@pytest.mark.parametrize("axis", [3, -1])
def test_bad_slice_axis(axis):
    with pytest.raises(ValueError, match=f"slice_axis must be 0, 1 or 2 .*got {axis}"):
        SliceOrWindowInferer(roi_size=(32, 32), slice_axis=axis)
