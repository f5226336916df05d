# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""custom_components.oct.overlay: fluid in colour over a grey B-scan, the ground truth's outline over it."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from custom_components.oct.overlay import FLUID_HUE, OVERLAY_COLORMAP, TRUTH_HUE, overlay_image


def _colour(hue):
    """The 8-bit RGB that blend_images paints for ``hue`` at full opacity."""
    return np.rint(255 * np.array(matplotlib.colormaps[OVERLAY_COLORMAP](hue)[:3]))


ORANGE, GREEN = _colour(FLUID_HUE), _colour(TRUTH_HUE)


def _is_grey(pixels):
    pixels = np.asarray(pixels).reshape(-1, 3)
    return bool(np.all(pixels[:, 0] == pixels[:, 1]) and np.all(pixels[:, 1] == pixels[:, 2]))


def test_overlay_colours_and_grey_background():
    bscan = np.array([[0.0, 10.0, 20.0], [0.0, 10.0, 20.0], [0.0, 10.0, 20.0]])  # scaled to 0, 127.5, 255
    pred = np.zeros((3, 3), np.uint8)
    pred[0, 1] = 1
    rgb = overlay_image(bscan, pred)
    assert rgb.shape == (3, 3, 3) and rgb.dtype == np.uint8
    # background: grey, min-max scaled
    assert tuple(rgb[1, 0]) == (0, 0, 0)
    assert tuple(rgb[1, 2]) == (255, 255, 255)
    assert _is_grey(rgb[pred == 0]) and np.all(np.abs(rgb[1, 1].astype(int) - 127) <= 1)
    # fluid: 0.45 * grey + 0.55 * orange, so red dominates and blue is dimmed
    expected = 0.45 * 127.5 + 0.55 * ORANGE
    assert np.all(np.abs(rgb[0, 1].astype(float) - expected) <= 1)
    r, g, b = rgb[0, 1].astype(int)
    assert r > g > b and r - b > 100


def test_overlay_truth_outline_is_green_and_drawn_over_fill():
    bscan = np.random.default_rng(0).random((7, 7))
    truth = np.zeros((7, 7), np.uint8)
    truth[1:6, 1:6] = 1  # 5x5 square: 16 border pixels, 3x3 interior
    rgb = overlay_image(bscan, truth.copy(), truth)
    border = truth.astype(bool).copy()
    border[2:5, 2:5] = False
    assert border.sum() == 16
    assert np.all(rgb[border] == GREEN)
    # interior: orange-tinted fill, not green
    interior = rgb[2:5, 2:5].reshape(-1, 3).astype(float)
    assert np.all(interior[:, 0] >= 0.55 * 255 - 1) and np.all(interior[:, 2] <= 0.45 * 255 + 1)
    assert not np.any(np.all(interior == GREEN, axis=1))
    # outside: grey (R = G = B)
    assert _is_grey(rgb[~truth.astype(bool)])


def test_overlay_flat_image_and_empty_masks():
    rgb = overlay_image(np.full((4, 5), 3.0), np.zeros((4, 5)), np.zeros((4, 5)))
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8
    assert np.all(rgb == 0)


def test_overlay_single_pixel_truth_is_its_own_outline_and_tensors_work():
    truth = torch.zeros(3, 3)
    truth[1, 1] = 1
    rgb = overlay_image(torch.zeros(3, 3), torch.zeros(3, 3), truth)
    assert tuple(rgb[1, 1]) == tuple(GREEN)
    assert (np.all(rgb == GREEN, axis=2)).sum() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros((1, 3, 3)), np.zeros((3, 3))), "bscan"),
        ((np.zeros((3, 3)), np.zeros((3, 4))), "prediction"),
        ((np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((2, 3))), "truth"),
    ],
)
def test_overlay_bad_shapes(args, message):
    with pytest.raises(ValueError, match=message):
        overlay_image(*args)
    with pytest.raises(ValueError, match="fill_alpha"):
        overlay_image(np.zeros((3, 3)), np.zeros((3, 3)), fill_alpha=0.0)


def test_overlay_fluid_types_each_in_its_colour():
    from custom_components.oct.fluid_types import BINARY_FLUID, FLUID_TYPES
    from custom_components.oct.overlay import FLUID_TYPE_HUES, fluid_hues

    assert fluid_hues(BINARY_FLUID) is None and fluid_hues(FLUID_TYPES) == tuple(FLUID_TYPE_HUES.values())
    bscan = np.full((3, 4), 7.0)  # flat: black
    labels = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [1, 1, 0, 0]])
    truth = np.zeros((3, 4))
    truth[2, 0] = 1
    rgb = overlay_image(bscan, labels, truth, hues=fluid_hues(FLUID_TYPES))
    # on black, a fill is 0.55 x its colour: IRF red, SRF yellow, PED blue
    for column, fluid in ((1, "IRF"), (2, "SRF"), (3, "PED")):
        assert np.all(np.abs(rgb[0, column].astype(float) - 0.55 * _colour(FLUID_TYPE_HUES[fluid])) <= 1)
    red, yellow, blue = rgb[0, 1].astype(int), rgb[0, 2].astype(int), rgb[0, 3].astype(int)
    assert red[0] > 100 > red[1] and min(yellow[:2]) > 100 > yellow[2] and blue[2] > 100 > blue[0]
    assert np.all(rgb[1] == 0) and tuple(rgb[2, 0]) == tuple(GREEN)  # background; the truth's outline over a fill
    # the binary overlay is unchanged: every fluid label orange
    assert np.array_equal(overlay_image(bscan, labels > 0), overlay_image(bscan, labels))
    with pytest.raises(ValueError, match="prediction labels must be 0 to 3"):
        overlay_image(bscan, labels + 1, hues=fluid_hues(FLUID_TYPES))
