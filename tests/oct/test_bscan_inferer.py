"""Tests of custom_components.oct.inferer.BScanInferer (resize and native geometries)."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Resize

from custom_components.oct.inferer import BScanGeometry, BScanInferer


def _conv():
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.bias.fill_(0.5)
    return net.eval()


def _checking_net(calls, size=(32, 32)):
    """A 2D-only network recording its input shapes (refuses anything but 4D inputs of ``size``)."""

    def net(x):
        assert x.ndim == 4 and tuple(x.shape[-2:]) == size, x.shape
        calls.append(tuple(x.shape))
        return 3 * x - 1

    return net


# --- native geometry: a sliding window over the native pixels


def test_native_sliding_window_shape_and_values():
    x = torch.rand(1, 1, 40, 70)
    calls = []
    with torch.no_grad():
        y = BScanInferer(roi_size=(32, 32), geometry="native", sw_batch_size=2)(x, _checking_net(calls))
    assert y.shape == (1, 1, 40, 70)
    assert torch.allclose(y, 3 * x - 1, atol=1e-5)  # a pointwise network is reproduced by the blended windows
    assert len(calls) >= 2  # tiled: more than one window


def test_native_image_smaller_than_roi_is_padded():
    x = torch.rand(2, 1, 20, 24)
    with torch.no_grad():
        y = BScanInferer(roi_size=(32, 32), geometry="native")(x, _checking_net([]))
    assert y.shape == (2, 1, 20, 24)
    assert torch.allclose(y, 3 * x - 1, atol=1e-5)


def test_native_conv_network():
    x = torch.rand(1, 1, 40, 70)
    with torch.no_grad():
        y = BScanInferer(roi_size=(32, 32), geometry="native", mode="constant")(x, _conv())
    assert torch.allclose(y, 2 * x + 0.5, atol=1e-5)


# --- resize geometry: each B-scan resized to the training size and the output back


def test_resize_feeds_the_network_exactly_what_training_resized():
    """The network sees what the training transform ``Resized(mode="bilinear")`` makes of the B-scan."""
    x = torch.rand(1, 1, 48, 80)
    seen = []

    def net(t):
        seen.append(t.clone())
        return t

    with torch.no_grad():
        BScanInferer(roi_size=(32, 32))(x, net)
    expected = Resize((32, 32), mode="bilinear")(x[0])
    assert len(seen) == 1 and seen[0].shape == (1, 1, 32, 32)
    torch.testing.assert_close(seen[0][0], torch.as_tensor(expected))


def test_resize_output_has_the_input_size_and_follows_a_pointwise_network():
    x = torch.rand(1, 1, 48, 80)
    with torch.no_grad():
        y = BScanInferer(roi_size=(32, 32))(x, _conv())
    assert y.shape == (1, 1, 48, 80)
    # an affine pointwise network commutes with bilinear resampling: down and up again blurs x, nothing else
    blurred = torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(x, (32, 32), mode="bilinear"), (48, 80), mode="bilinear"
    )
    torch.testing.assert_close(y, 2 * blurred + 0.5)


def test_resize_at_the_training_size_is_exactly_the_network():
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        y = BScanInferer(roi_size=(32, 32))(x, _checking_net([]))
    torch.testing.assert_close(y, 3 * x - 1)


def test_resize_batches_bscans_by_sw_batch_size():
    calls = []
    with torch.no_grad():
        BScanInferer(roi_size=(32, 32), sw_batch_size=2)(torch.rand(5, 1, 64, 40), _checking_net(calls))
    assert [c[0] for c in calls] == [2, 2, 1]


# --- volumes: B-scans along the last axis, moved into the batch


@pytest.mark.parametrize("geometry", ["resize", "native"])
def test_volume_bscan_by_bscan(geometry):
    x = torch.rand(1, 1, 20, 24, 3)
    net = _conv()
    calls = []

    def network(t):
        calls.append(tuple(t.shape))
        return net(t)

    inferer = BScanInferer(roi_size=(32, 32), geometry=geometry, sw_batch_size=2)
    with torch.no_grad():
        y = inferer(x, network)
        expected = torch.stack([inferer(x[..., s], net) for s in range(3)], dim=-1)
    assert y.shape == (1, 1, 20, 24, 3)
    torch.testing.assert_close(y, expected)
    assert all(len(shape) == 4 for shape in calls)  # the network only sees 2D batches


def test_volume_bscans_are_not_mixed():
    # a network whose output depends on the whole B-scan (its mean) shows B-scans are processed separately
    x = torch.zeros(2, 1, 20, 24, 3)
    x[..., 1] = 1.0
    x[1] += 2.0

    def network(t):
        return t.mean(dim=(-2, -1), keepdim=True).expand_as(t).clone()

    with torch.no_grad():
        y = BScanInferer(roi_size=(20, 24), sw_batch_size=4)(x, network)
    torch.testing.assert_close(y, x)


# --- arguments


@pytest.mark.parametrize("shape", [(1, 1, 8), (1, 8), (1, 1, 2, 4, 4, 4)])
def test_bad_input_rank_names_shape(shape):
    with pytest.raises(ValueError) as err:
        BScanInferer(roi_size=(32, 32))(torch.zeros(*shape), _conv())
    assert str(tuple(shape)) in str(err.value)
    assert "(B, C, H, W)" in str(err.value)


@pytest.mark.parametrize("roi", [(32,), (32, 32, 32), (), (0, 32)])
def test_bad_roi_size(roi):
    with pytest.raises(ValueError, match="roi_size must be two positive numbers"):
        BScanInferer(roi_size=roi)


def test_bad_geometry_lists_the_valid_ones():
    with pytest.raises(ValueError, match="resize"):
        BScanInferer(roi_size=(32, 32), geometry="tiles")


def test_geometry_names():
    assert [g.value for g in BScanGeometry] == ["resize", "native"]
    assert BScanInferer(roi_size=(32, 32), geometry="native").geometry == BScanGeometry.NATIVE
