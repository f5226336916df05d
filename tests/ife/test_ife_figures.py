# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""custom_components.ife.figures: attention profiles, the attention figure and alignment plot, the confusion matrix,
the reliability diagram and the coverage-accuracy curve; figures written whole or not at all."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from custom_components.ife.figures import (
    attention_profile,
    plot_attention_alignment,
    plot_attention_figure,
    plot_confusion_matrix,
    plot_coverage_accuracy,
    plot_reliability_diagram,
)


def _is_png(path) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- IFE: attention profiles and figures

# attention_profile: (map, height, expected) -- feature row j covers image rows [j H/h, (j+1) H/h)


PROFILE_CASES = [
    ([0.5], 3, [0.5, 0.5, 0.5]),  # one row: constant
    ([0.0, 1.0], 4, [0.0, 0.25, 0.75, 1.0]),  # centres at rows 1 and 3; rows 0.5 and 3.5 clamp
    ([[0.2, 0.2, 0.8]], 3, [0.2, 0.2, 0.8]),  # (1, h) accepted; H == h is the identity
]


@pytest.mark.parametrize("attention, height, expected", PROFILE_CASES)
def test_attention_profile(attention, height, expected):
    np.testing.assert_allclose(attention_profile(torch.tensor(attention), height), expected)


def test_attention_profile_at_the_map_rows_true_centres():
    # stride 32 at 128 network rows onto 400 image rows: centres at image rows 1.0625, 101.0625, 201.0625, 301.0625
    profile = attention_profile(torch.tensor([0.0, 0.0, 1.0, 0.0]), 400, stride=32, network_rows=128)
    assert int(np.argmax(profile)) == 201
    assert profile[151] == pytest.approx(0.5, abs=0.01) and profile[399] == 0.0 and profile[0] == 0.0


@pytest.mark.parametrize(
    "attention, height, message",
    [([], 3, "non-empty"), ([[0.1, 0.2], [0.3, 0.4]], 3, r"\(h,\)"), ([0.1], 0, "height")],
)
def test_attention_profile_errors(attention, height, message):
    with pytest.raises(ValueError, match=message):
        attention_profile(np.asarray(attention), height)


def test_plot_attention_alignment(tmp_path):
    def record(values, band_row):
        return {"values": values, "stride": 32, "network_rows": 128, "image_rows": 400, "band_row": band_row,
                "band_half_width": 6.0 if band_row is not None else None}  # fmt: skip

    records = {"severe": [record([0, 0, 1, 0], 201), record([0, 1, 0, 0], 101), record([0.5] * 4, None)]}
    plot_attention_alignment(records, tmp_path / "aligned.png", title="paper")
    assert _is_png(tmp_path / "aligned.png")
    with pytest.raises(ValueError, match="at least one attention map"):
        plot_attention_alignment({}, tmp_path / "none.png")


def test_plot_attention_figure(tmp_path):
    gel = np.full((40, 60, 3), 230, np.uint8)
    path = tmp_path / "fig.png"
    plot_attention_figure(gel, {"severe": torch.rand(5), "mild": torch.rand(5)}, path, "title")
    assert _is_png(path)
    # channel-first network input (normalised to [-1, 1]) is accepted too, and a bfloat16 map (numpy has none)
    maps = {"attention": torch.rand(1, dtype=torch.bfloat16)}
    plot_attention_figure(torch.rand(3, 32, 32) * 2 - 1, maps, tmp_path / "b.png")
    assert _is_png(tmp_path / "b.png")
    with pytest.raises(ValueError, match="profiles"):
        plot_attention_figure(gel, {}, tmp_path / "c.png")


def test_plot_confusion_matrix(tmp_path):
    plot_confusion_matrix(np.eye(9, dtype=int) * 3, tmp_path / "cm.png", title="t")
    assert _is_png(tmp_path / "cm.png")
    plot_confusion_matrix([[1] * 9] * 9, tmp_path / "list.png")  # nested lists, as in metrics.json
    assert _is_png(tmp_path / "list.png")
    with pytest.raises(ValueError, match=r"\(9, 9\)"):
        plot_confusion_matrix(np.eye(3), tmp_path / "bad.png")


ALIGNMENT_RECORDS = {"severe": [{"values": [0, 1], "stride": 32, "network_rows": 64, "image_rows": 100,
                                  "band_row": 40, "band_half_width": 3.0}]}  # fmt: skip
#: each figure writer, called with its output path


FIGURES = {
    "attention": lambda path: plot_attention_figure(np.zeros((20, 30, 3)), {"severe": torch.rand(3)}, path),
    "alignment": lambda path: plot_attention_alignment(ALIGNMENT_RECORDS, path),
    "confusion": lambda path: plot_confusion_matrix(np.eye(9, dtype=int), path),
}


@pytest.mark.parametrize("figure", sorted(FIGURES))
def test_a_figure_that_fails_half_written_leaves_the_old_file_and_nothing_else(figure, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    def torn_savefig(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")  # the start of a PNG, then the disk is full
        raise OSError("No space left on device")

    path = tmp_path / "figure.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(Figure, "savefig", torn_savefig)
    with pytest.raises(OSError, match="No space"):
        FIGURES[figure](path)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["figure.png"]


@pytest.mark.parametrize("figure", sorted(FIGURES))
def test_a_figure_appears_complete_under_its_own_name(figure, tmp_path):
    FIGURES[figure](tmp_path / "new" / "figure")  # no extension: a PNG all the same, under that very name
    assert os.listdir(tmp_path / "new") == ["figure"] and _is_png(tmp_path / "new" / "figure")
    with Image.open(tmp_path / "new" / "figure") as image:
        image.load()


def test_plot_reliability_diagram_and_coverage_accuracy(tmp_path):
    from custom_components.ife.referral import coverage_accuracy_curve
    from custom_components.ife.calibration.temperature import reliability_bins

    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(30, 9, generator=g) * 3, dim=1)
    labels = torch.randint(0, 9, (30,), generator=g)
    flatter = probs**0.5 / (probs**0.5).sum(1, keepdim=True)
    panels = {"uncalibrated": reliability_bins(probs, labels), "calibrated": reliability_bins(flatter, labels)}
    plot_reliability_diagram(panels, tmp_path / "reliability.png", title="n=30")
    with Image.open(tmp_path / "reliability.png") as img:
        assert img.width > img.height  # two panels side by side
    curves = {"calibrated": coverage_accuracy_curve(probs, labels)}
    plot_coverage_accuracy(curves, tmp_path / "coverage.png", (0.75, 0.2))
    assert (tmp_path / "coverage.png").stat().st_size > 0
    with pytest.raises(ValueError, match="lacks"):
        plot_reliability_diagram({"x": {"edges": [0, 1]}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="equal lengths"):
        plot_coverage_accuracy({"x": {"coverage": [1.0], "accuracy": []}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="at least one"):
        plot_coverage_accuracy({}, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
