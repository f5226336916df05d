"""Synthetic IFE gels: determinism, layout, the co-located monoclonal band, class mix and the datalist."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest

from custom_components.data.synthetic.ife import (
    DEFAULT_CLASS_FRACTIONS,
    LANES,
    render_gel,
    sample_labels,
    synthesize_ife_dataset,
)
from custom_components.transforms.ife_labels import IFE_CLASSES


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synthesize_ife_dataset(tmp_path / "a", count=6, seed=7, image_size=(60, 90)).parent
    b = synthesize_ife_dataset(tmp_path / "b", count=6, seed=7, image_size=(60, 90)).parent
    c = synthesize_ife_dataset(tmp_path / "c", count=6, seed=8, image_size=(60, 90)).parent
    assert _digest(a) == _digest(b)
    assert (a / "datalist.json").read_text() == (b / "datalist.json").read_text()
    assert _digest(a) != _digest(c)


def test_gel_is_landscape_rgb_on_a_light_background():
    image, info = render_gel(np.random.default_rng(0), "Negative")
    assert image.shape == (400, 600, 3) and image.dtype == np.uint8
    assert np.median(image) > 200  # near-white background
    assert info["band_row"] is None and info["band_lanes"] == []
    assert len(info["lane_centres"]) == len(LANES) and np.all(np.diff(info["lane_centres"]) > 0)


def _lane_darkness(image, centre, row, half=3):
    column = int(round(centre))
    gray = image[..., :3].astype(float).mean(axis=2)
    return 255 - gray[row - half : row + half + 1, column - 2 : column + 3].mean()


@pytest.mark.parametrize("class_name", ["IgG-kappa", "IgA-lambda", "IgM-kappa", "kappa", "lambda"])
def test_monoclonal_band_sits_at_the_same_height_in_elp_heavy_and_light_lanes(class_name):
    # a strong band (not the faint variant) so the contrast test is unambiguous
    for seed in range(50):
        image, info = render_gel(np.random.default_rng(seed), class_name)
        if not info["faint"]:
            break
    heavy = {"IgG": "G", "IgA": "A", "IgM": "M"}.get(class_name.split("-")[0])
    light = "K" if class_name.endswith("kappa") else "L"
    expected = ["ELP", light] + ([heavy] if heavy else [])
    assert info["band_lanes"] == expected
    row = info["band_row"]
    centres = dict(zip(LANES, info["lane_centres"]))
    for lane in LANES:
        at_band = _lane_darkness(image, centres[lane], row)
        away = _lane_darkness(image, centres[lane], row + 25)
        if lane in expected:
            assert at_band > away + 25, (lane, at_band, away)  # a dense band at that row
        elif lane != "ELP":
            assert at_band < away + 25, (lane, at_band, away)  # only the diffuse smear


def test_default_class_mix_follows_the_paper_imbalance():
    labels = Counter(sample_labels(np.random.default_rng(0), 20000, min_per_class=0))
    assert labels["Negative"] / 20000 == pytest.approx(0.70, abs=0.01)
    assert labels["kappa"] / 20000 == pytest.approx(0.004, abs=0.0015)
    assert min(labels, key=labels.get) == "kappa"
    assert sum(DEFAULT_CLASS_FRACTIONS.values()) == pytest.approx(1.0)


def test_small_sets_still_hold_every_class_in_training_and_testing(tmp_path):
    datalist = json.loads(synthesize_ife_dataset(tmp_path, count=40, seed=0, image_size=(48, 72)).read_text())
    assert set(e["label"] for e in datalist["training"]) == set(IFE_CLASSES)
    assert set(e["label"] for e in datalist["testing"]) == set(IFE_CLASSES)
    assert all((tmp_path / e["image"]).is_file() for split in datalist.values() for e in split)
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["count"] == 40 and sum(summary["class_counts"].values()) == 40


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown class"):
        render_gel(np.random.default_rng(0), "IgD-kappa")
    with pytest.raises(ValueError, match="at least"):
        render_gel(np.random.default_rng(0), "kappa", (20, 30))
    with pytest.raises(ValueError, match="count"):
        synthesize_ife_dataset(tmp_path, count=0)
    with pytest.raises(ValueError, match="unknown class"):
        sample_labels(np.random.default_rng(0), 10, {"IgE-kappa": 1.0})
