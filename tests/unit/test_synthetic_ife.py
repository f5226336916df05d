"""Synthetic IFE gels: determinism, layout, the co-located monoclonal band, class mix and the datalist."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from custom_components.data.synthetic.ife import (
    DEFAULT_CLASS_FRACTIONS,
    LANES,
    render_gel,
    sample_labels,
    synthesize_ife_dataset,
)
from custom_components.ife_classes import IFE_CLASSES

SMALL = (60, 90)  # rows, columns: landscape 3:2 like the default 400 x 600


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "images").iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = synthesize_ife_dataset(tmp_path / "a", count=6, seed=7, image_size=SMALL).parent
    b = synthesize_ife_dataset(tmp_path / "b", count=6, seed=7, image_size=SMALL).parent
    c = synthesize_ife_dataset(tmp_path / "c", count=6, seed=8, image_size=SMALL).parent
    assert len(_digest(a)) == 6
    assert _digest(a) == _digest(b)
    assert (a / "datalist.json").read_text() == (b / "datalist.json").read_text()
    assert (a / "synthesis.json").read_text() == (b / "synthesis.json").read_text()
    assert set(_digest(a).values()).isdisjoint(_digest(c).values())


def test_render_gel_is_deterministic_and_returns_an_array_by_default():
    first = render_gel(np.random.default_rng(3), "IgA-kappa", SMALL)
    again, info = render_gel(np.random.default_rng(3), "IgA-kappa", SMALL, return_info=True)
    assert isinstance(first, np.ndarray)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, render_gel(np.random.default_rng(4), "IgA-kappa", SMALL))
    assert info["band_lanes"] == ["ELP", "K", "A"]


def test_gel_is_landscape_rgb_with_ordered_lanes_on_a_light_background():
    image, info = render_gel(np.random.default_rng(0), "Negative", return_info=True)
    assert image.shape == (400, 600, 3) and image.dtype == np.uint8  # (H, W, RGB), wider than high
    assert np.median(image) > 200  # near-white background
    assert info["band_row"] is None and info["band_lanes"] == [] and not info["faint"]
    assert info["band_half_width"] is None
    centres = info["lane_centres"]
    assert len(centres) == len(LANES) and np.all(np.diff(centres) > info["lane_width"])  # side by side, no overlap
    top, bottom = info["gel_rows"]
    assert 0 <= top < bottom <= 400
    # proteins migrate along the rows: in ELP the albumin band (the darkest row) sits in the top quarter of the gel
    gray = image.astype(float).mean(axis=2)
    elp = gray[top:bottom, int(centres[0]) - 2 : int(centres[0]) + 3].mean(axis=1)
    assert np.argmin(elp) < 0.25 * (bottom - top)
    # blue-violet stain: in the stained lanes blue is the brightest channel, red and green absorbed more
    lane = image[top:bottom, int(centres[1]) - 2 : int(centres[1]) + 3].reshape(-1, 3).astype(float).mean(axis=0)
    assert lane[2] > lane[0] > lane[1]


def test_light_background_is_tinted_not_pure_white():
    for seed in range(5):
        image, info = render_gel(np.random.default_rng(seed), "Negative", return_info=True)
        top, _ = info["gel_rows"]
        corner = image[top : top + 20, :10].reshape(-1, 3).mean(axis=0)  # left margin, left of every lane
        assert 200 < corner.mean() < 252


def _residual_profile(image, centre, gel_rows):
    """Darkness along the rows of a lane's middle columns, minus its slowly varying smear (bands stand out).

    Rows outside the gel area (the label strip) are zero.
    """
    column, (top, bottom) = int(round(centre)), gel_rows
    darkness = 255 - image[:, column - 2 : column + 3].astype(float).mean(axis=(1, 2))
    residual = darkness - ndimage.median_filter(darkness, size=41, mode="nearest")
    residual[:top], residual[bottom:] = 0, 0
    return residual


@pytest.mark.parametrize("class_name", ["IgG-kappa", "IgG-lambda", "IgA-lambda", "IgM-kappa", "kappa", "lambda"])
def test_monoclonal_band_sits_at_the_same_row_in_elp_heavy_and_light_lanes(class_name):
    heavy = {"IgG": "G", "IgA": "A", "IgM": "M"}.get(class_name.split("-")[0])
    light = "K" if class_name.endswith("kappa") else "L"
    expected = ["ELP", light] + ([heavy] if heavy else [])
    checked = 0
    for seed in range(12):
        image, info = render_gel(np.random.default_rng(seed), class_name, return_info=True)
        assert info["band_lanes"] == expected
        if info["faint"]:
            continue  # the strong bands make the contrast test unambiguous
        checked += 1
        row = info["band_row"]
        assert 1.0 < info["band_half_width"] < 0.05 * image.shape[0]  # two sigma: a few rows of a 400-row gel
        centres = dict(zip(LANES, info["lane_centres"]))
        for lane in LANES[1:]:
            profile = _residual_profile(image, centres[lane], info["gel_rows"])
            if lane in expected:  # the band is the sharpest feature of an immunofixation lane, at the ELP row
                assert abs(int(np.argmax(profile)) - row) <= 2, (seed, lane, int(np.argmax(profile)), row)
                assert profile[row - 1 : row + 2].max() > 20, (seed, lane)
            else:  # only the diffuse smear (and at most a faint application mark)
                assert profile[row - 1 : row + 2].max() < 12, (seed, lane, profile[row - 1 : row + 2])
        elp = _residual_profile(image, centres["ELP"], info["gel_rows"])
        assert elp[row - 1 : row + 2].max() > 15, (seed, elp[row - 1 : row + 2])
    assert checked >= 5


def test_default_class_mix_follows_the_paper_imbalance():
    n = 20000
    counts = Counter(sample_labels(np.random.default_rng(0), n, min_per_class=0))
    for name, p in DEFAULT_CLASS_FRACTIONS.items():  # binomial: within 4 standard deviations
        assert abs(counts[name] / n - p) < 4 * np.sqrt(p * (1 - p) / n), (name, counts[name])
    assert DEFAULT_CLASS_FRACTIONS["Negative"] == pytest.approx(0.70)
    assert min(DEFAULT_CLASS_FRACTIONS, key=DEFAULT_CLASS_FRACTIONS.get) == "kappa"
    assert sum(DEFAULT_CLASS_FRACTIONS.values()) == pytest.approx(1.0)
    # the paper's imbalance ratios: overall 63 / 10,178; light chain lambda / Negative 0.188; heavy chain
    # IgM / (Negative + kappa + lambda) 0.042
    f = DEFAULT_CLASS_FRACTIONS
    assert f["kappa"] / f["Negative"] == pytest.approx(63 / 10178, abs=5e-4)
    lambda_total = sum(v for k, v in f.items() if k.endswith("lambda"))
    assert lambda_total / f["Negative"] == pytest.approx(0.188, abs=0.002)
    assert (f["IgM-kappa"] + f["IgM-lambda"]) / (f["Negative"] + f["kappa"] + f["lambda"]) == pytest.approx(
        0.042, abs=0.002
    )


@pytest.mark.parametrize("count", [9, 10, 20, 30])
def test_every_class_is_drawn_at_least_min_3_and_count_div_9_times(count):
    for seed in range(4):
        counts = Counter(sample_labels(np.random.default_rng(seed), count))
        assert sum(counts.values()) == count
        assert set(counts) == set(IFE_CLASSES) and min(counts.values()) >= min(3, count // 9), (count, seed, counts)


def test_nine_gels_put_every_class_into_training(tmp_path):
    datalist = json.loads(synthesize_ife_dataset(tmp_path, count=9, seed=3, image_size=SMALL).read_text())
    assert sorted(e["label"] for e in datalist["training"]) == sorted(IFE_CLASSES)


def test_small_sets_hold_every_class_in_training_and_testing_and_record_the_parameters(tmp_path):
    datalist = json.loads(synthesize_ife_dataset(tmp_path, count=40, seed=0, image_size=SMALL).read_text())
    assert set(e["label"] for e in datalist["training"]) == set(IFE_CLASSES)
    assert set(e["label"] for e in datalist["testing"]) == set(IFE_CLASSES)
    entries = [e for split in datalist.values() for e in split]
    assert len(entries) == 40 and len({e["image"] for e in entries}) == 40
    for entry in entries:
        assert entry["image"].startswith("images/") and entry["label"] in IFE_CLASSES
        with Image.open(tmp_path / entry["image"]) as img:
            assert img.mode == "RGB" and img.size == (SMALL[1], SMALL[0])  # Pillow: (width, height)
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["seed"] == 0 and summary["count"] == 40 and summary["image_size"] == list(SMALL)
    assert summary["class_counts"] == dict(Counter(e["label"] for e in entries)) | {
        c: 0 for c in IFE_CLASSES if c not in {e["label"] for e in entries}
    }
    assert summary["split_counts"] == {k: len(v) for k, v in datalist.items()}
    for detail in summary["images"]:
        assert (detail["band_row"] is None) == (detail["label"] == "Negative")
        assert (detail["band_half_width"] is None) == (detail["label"] == "Negative")


def test_class_fractions_and_splits_are_honoured(tmp_path):
    fractions = {"Negative": 1.0, "IgG-kappa": 1.0}
    datalist = json.loads(
        synthesize_ife_dataset(
            tmp_path, count=10, seed=1, image_size=SMALL, class_fractions=fractions, splits=(0.8, 0.0, 0.2)
        ).read_text()
    )
    labels = [e["label"] for split in datalist.values() for e in split]
    assert set(labels) == {"Negative", "IgG-kappa"} and datalist["validation"] == []
    assert Counter(e["label"] for e in datalist["testing"]) == {
        k: round(v * 0.2) for k, v in Counter(labels).items()
    }


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown class"):
        render_gel(np.random.default_rng(0), "IgD-kappa")
    with pytest.raises(ValueError, match="at least"):
        render_gel(np.random.default_rng(0), "kappa", (20, 30))
    with pytest.raises(ValueError, match="count"):
        synthesize_ife_dataset(tmp_path, count=0)
    with pytest.raises(ValueError, match="splits"):
        synthesize_ife_dataset(tmp_path, count=3, splits=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="unknown class"):
        sample_labels(np.random.default_rng(0), 10, {"IgE-kappa": 1.0})
    with pytest.raises(ValueError, match="min_per_class=2 for 9 classes needs at least 18"):
        sample_labels(np.random.default_rng(0), 10, min_per_class=2)


def test_a_generation_that_fails_half_way_leaves_no_datalist_and_no_torn_gel(tmp_path, monkeypatch):
    synthesize_ife_dataset(tmp_path, count=3, seed=0, image_size=SMALL)  # an earlier data set in the same folder
    save, calls = Image.Image.save, []

    def disk_full_at_the_fifth_gel(image, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 5:
            with open(fp, "wb") as f:
                f.write(b"\x89PNG\r\n\x1a\n")  # the start of a PNG, then the disk is full
            raise OSError("No space left on device")
        return save(image, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full_at_the_fifth_gel)
    with pytest.raises(OSError, match="No space"):
        synthesize_ife_dataset(tmp_path, count=8, seed=1, image_size=SMALL)
    # the old datalist and record are gone (the folder no longer holds a complete data set), no new ones came
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]
    gels = sorted((tmp_path / "images").iterdir())
    assert "ife_00004.png" not in [p.name for p in gels] and not [p for p in gels if p.name.startswith(".")]
    for path in gels:  # the others, written before or after the failed one, are whole
        with Image.open(path) as image:
            image.load()
