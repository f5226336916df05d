"""Synthetic IFE gels: determinism, layout and its options, the co-located monoclonal band, biclonal gels, class
mix and the datalist."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from custom_components.ife.synthetic import (
    APPEARANCES,
    BICLONAL,
    DEFAULT_CLASS_FRACTIONS,
    LANES,
    STYLES,
    render_gel,
    resolve_style,
    sample_labels,
    synthesize_ife_dataset,
)
from custom_components.ife.classes import IFE_CLASSES

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
    # proteins migrate along the rows: in ELP the albumin band (the darkest row) sits in the bottom quarter of the
    # gel by default, as on real scans
    gray = image.astype(float).mean(axis=2)
    elp = gray[top:bottom, int(centres[0]) - 2 : int(centres[0]) + 3].mean(axis=1)
    assert np.argmin(elp) > 0.75 * (bottom - top) and info["orientation"] == "albumin_bottom"
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

    Rows outside the gel area (the label strip) are zero. The running median spans 81 rows, over twice a band's
    full width (at most 8 % of a 340-row gel area).
    """
    column, (top, bottom) = int(round(centre)), gel_rows
    darkness = 255 - image[:, column - 2 : column + 3].astype(float).mean(axis=(1, 2))
    residual = darkness - ndimage.median_filter(darkness, size=81, mode="nearest")
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
        profiles = {lane: _residual_profile(image, centres[lane], info["gel_rows"]) for lane in LANES[1:]}
        for lane in expected[1:]:  # the band is the densest feature of an immunofixation lane, at the ELP row
            profile = profiles[lane]
            # its centre: the centroid of the stain within a half-width (the flat top has no single maximum)
            near = np.arange(row - int(info["band_half_width"]), row + int(info["band_half_width"]) + 1)
            weights = np.clip(profile[near], 0, None)
            centroid = float((near * weights).sum() / weights.sum())
            assert abs(centroid - row) <= 2, (seed, lane, centroid, row)
            assert abs(int(np.argmax(profile)) - row) <= info["band_half_width"], (seed, lane)
            assert profile[row - 1 : row + 2].max() > 20, (seed, lane)
        weakest = min(profiles[lane][row - 1 : row + 2].max() for lane in expected[1:])
        for lane in set(LANES[1:]) - set(expected):  # only the diffuse smear (and at most a faint application mark)
            assert profiles[lane][row - 1 : row + 2].max() < max(12, weakest / 2), (seed, lane, weakest)
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


def _elp_darkest_fraction(image, info):
    """Where ELP's darkest row (the albumin band of a Negative gel) sits, as a fraction of the gel height from its
    top."""
    top, bottom = info["gel_rows"]
    centre = int(round(info["lane_centres"][0]))
    elp = image[top : bottom + 1, centre - 2 : centre + 3].astype(float).mean(axis=(1, 2))
    return int(np.argmin(elp)) / (bottom - top)


def test_orientation_mirrors_the_migration_axis_within_the_gel_area():
    bottom_image, bottom = render_gel(np.random.default_rng(4), "IgG-lambda", SMALL, True, "albumin_bottom")
    top_image, top = render_gel(np.random.default_rng(4), "IgG-lambda", SMALL, True, "albumin_top")
    assert bottom["gel_rows"] == top["gel_rows"] and bottom["lane_centres"] == top["lane_centres"]
    # the same draws: the band sits at mirrored rows of the gel area
    assert abs(bottom["band_row"] + top["band_row"] - sum(top["gel_rows"])) <= 1
    assert top["orientation"] == "albumin_top"
    for seed in range(3):
        image, info = render_gel(np.random.default_rng(seed), "Negative", (120, 180), True, "albumin_top")
        assert _elp_darkest_fraction(image, info) < 0.25
        image, info = render_gel(np.random.default_rng(seed), "Negative", (120, 180), True, "albumin_bottom")
        assert _elp_darkest_fraction(image, info) > 0.75


def test_style_options_draw_headers_frames_margins_and_uneven_lanes():
    size = (120, 180)
    plain, info = render_gel(np.random.default_rng(0), "Negative", size, True, style="plain")
    assert info["header_rows"] is None and info["label_strip"] is None and info["style"]["frame_kind"] is None
    assert len(set(info["lane_widths"])) == 1  # even lanes
    gray = plain.astype(float).mean(axis=2)
    assert gray[: info["gel_rows"][0]].min() > 150  # above the gel: background only, no text
    for seed in range(4):
        image, info = render_gel(np.random.default_rng(seed), "kappa", size, True, style="real")
        assert info["style"] == {"headers": True, "frame": True, "margin": True, "uneven_lanes": True,
                                 "frame_kind": info["style"]["frame_kind"]}  # fmt: skip
        gray = image.astype(float).mean(axis=2)
        (h0, h1), (g0, g1) = info["header_rows"], info["gel_rows"]
        assert h1 < g0 or g1 < h0  # the header strip is outside the gel area
        assert gray[h0 : h1 + 1].min() < 120  # dark text in the header strip
        # the frame: a dark line spanning the gel area's width just outside its rows, where the gel has none
        above = gray[max(0, g0 - 6) : g0, info["lane_bounds"][0][0] : info["lane_bounds"][-1][1]]
        assert (np.median(above, axis=1) < 120).any(), seed
        assert gray[: int(0.04 * size[0])].min() > 150  # a blank margin of at least 4 % on top
        widths = np.array(info["lane_widths"])
        assert widths.std() / widths.mean() > 0.03  # uneven lanes
        assert info["lane_names"][0] in ("ELP", "SP") and len(info["lane_names"]) == 6
        for (left, right), centre in zip(info["lane_bounds"], info["lane_centres"]):
            assert abs((left + right) / 2 - centre) <= 1
        assert all(a[1] < b[0] for a, b in zip(info["lane_bounds"][:-1], info["lane_bounds"][1:]))  # no overlap


def test_resolve_style_names_mappings_and_mixed():
    assert resolve_style(None) == dict(STYLES["classic"]) == resolve_style("classic")
    assert resolve_style({"frame": True}) == {**STYLES["classic"], "frame": True}
    drawn = [resolve_style("mixed", np.random.default_rng(seed)) for seed in range(20)]
    assert all(set(d) == set(STYLES["plain"]) for d in drawn) and len({tuple(d.values()) for d in drawn}) > 5
    with pytest.raises(ValueError, match="unknown style 'fancy'"):
        resolve_style("fancy")
    with pytest.raises(ValueError, match=r"unknown style options \['shadow'\]"):
        resolve_style({"shadow": True})
    with pytest.raises(ValueError, match="'frame' must be a bool"):
        resolve_style({"frame": "yes"})
    with pytest.raises(ValueError, match="pass rng"):
        resolve_style("mixed")


def test_biclonal_gel_has_two_components_at_different_heights():
    for seed in range(6):
        _, info = render_gel(np.random.default_rng(seed), BICLONAL, (120, 180), return_info=True, style="mixed")
        first, second = info["components"]
        assert first["class"] != second["class"] and info["band_rows"] == [first["band_row"], second["band_row"]]
        span = info["gel_rows"][1] - info["gel_rows"][0]
        assert abs(first["band_row"] - second["band_row"]) >= 0.1 * span
        assert info["band_row"] == first["band_row"] and set(info["band_lanes"]) == set(
            first["band_lanes"] + second["band_lanes"]
        )
    _, info = render_gel(np.random.default_rng(0), BICLONAL, return_info=True, components=("IgG-kappa", "IgG-lambda"))
    assert [c["class"] for c in info["components"]] == ["IgG-kappa", "IgG-lambda"]
    assert info["band_lanes"] == ["ELP", "K", "G", "L"]
    # a band is several percent of the lane height: two standard deviations of a Gaussian band of 3-8 % full width
    span = info["gel_rows"][1] - info["gel_rows"][0]
    assert all(0.015 * span < c["band_half_width"] < 0.045 * span for c in info["components"])


def test_biclonal_gels_go_to_their_own_section_with_the_same_bytes_again(tmp_path):
    kwargs = dict(count=10, seed=2, image_size=SMALL, style="mixed", biclonal_fraction=0.2)
    a = synthesize_ife_dataset(tmp_path / "a", **kwargs)
    b = synthesize_ife_dataset(tmp_path / "b", **kwargs)
    assert _digest(a.parent) == _digest(b.parent) and a.read_text() == b.read_text()
    datalist = json.loads(a.read_text())
    assert [e["label"] for e in datalist["biclonal"]] == [BICLONAL, BICLONAL]
    nine = [e for name in ("training", "validation", "testing") for e in datalist[name]]
    assert len(nine) == 8 and all(e["label"] in IFE_CLASSES for e in nine)
    summary = json.loads((a.parent / "synthesis.json").read_text())
    assert summary["class_counts"][BICLONAL] == 2 and summary["split_counts"]["biclonal"] == 2
    assert summary["orientation"] == "albumin_bottom" and summary["style"] == "mixed"
    for detail in summary["images"]:
        assert len(detail["band_rows"]) == (2 if detail["label"] == BICLONAL else int(detail["label"] != "Negative"))
        assert len(detail["lane_bounds"]) == 6 and set(detail["style"]) >= set(STYLES["plain"])
        assert (detail["split"] == "biclonal") == (detail["label"] == BICLONAL)
    assert len({json.dumps(d["style"], sort_keys=True) for d in summary["images"]}) > 1  # drawn per image


def test_an_image_does_not_change_when_count_does(tmp_path):
    small = synthesize_ife_dataset(tmp_path / "a", count=3, seed=5, image_size=SMALL, style="real").parent
    large = synthesize_ife_dataset(tmp_path / "b", count=5, seed=5, image_size=SMALL, style="real").parent
    assert _digest(small).items() <= _digest(large).items()


def test_bad_layout_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="orientation must be one of"):
        render_gel(np.random.default_rng(0), "kappa", orientation="sideways")
    with pytest.raises(ValueError, match="components is for class_name='biclonal' only"):
        render_gel(np.random.default_rng(0), "kappa", components=("IgG-kappa", "IgA-kappa"))
    with pytest.raises(ValueError, match="components must be two positive IFE classes"):
        render_gel(np.random.default_rng(0), BICLONAL, components=("IgG-kappa", "Negative"))
    with pytest.raises(ValueError, match="biclonal_fraction must be in"):
        synthesize_ife_dataset(tmp_path, count=3, biclonal_fraction=1.0)
    with pytest.raises(ValueError, match="orientation"):
        synthesize_ife_dataset(tmp_path, count=3, orientation="albumin_left")
    with pytest.raises(ValueError, match="unknown style"):
        synthesize_ife_dataset(tmp_path, count=3, style="fancy")
    assert not (tmp_path / "images").exists()  # nothing written before the arguments are checked


def test_prepare_dataset_passes_generator_options_through(tmp_path):
    from custom_components.core.synthetic import prepare_dataset

    options = {"style": "plain", "orientation": "albumin_top"}
    datalist = prepare_dataset(tmp_path / "gels", synthesize_ife_dataset, 4, 1, SMALL, generator_options=options)
    summary = json.loads((tmp_path / "gels" / "synthesis.json").read_text())
    assert datalist == str(tmp_path / "gels" / "datalist.json")
    assert summary["orientation"] == "albumin_top" and summary["style"] == "plain"
    assert summary["image_size"] == list(SMALL) and summary["count"] == 4


def test_difficulty_makes_the_bands_fainter_and_thinner_and_the_noise_stronger():
    """The same random stream at difficulty 1 and 2: the band at the same place, weaker and thinner at 2; the
    default (1) is exactly the gel of the generator without the argument."""
    fainter = 0
    for seed in range(6):
        easy, info = render_gel(np.random.default_rng(seed), "IgG-kappa", return_info=True)
        assert np.array_equal(easy, render_gel(np.random.default_rng(seed), "IgG-kappa", difficulty=1.0))
        hard, hard_info = render_gel(np.random.default_rng(seed), "IgG-kappa", return_info=True, difficulty=2.0)
        assert hard_info["band_half_width"] < info["band_half_width"]
        row = info["band_row"]
        assert abs(hard_info["band_row"] - row) <= 1
        strength = []
        for image, meta in ((easy, info), (hard, hard_info)):
            centre = dict(zip(LANES, meta["lane_centres"]))["G"]
            strength.append(_residual_profile(image, centre, meta["gel_rows"])[row - 1 : row + 2].max())
        fainter += strength[1] < 0.75 * strength[0]
    assert fainter == 6
    # sensor noise: the background above the gel area (no stain, no header in the plain style) is rougher
    rough = []
    for difficulty in (1.0, 3.0):
        image, meta = render_gel(np.random.default_rng(0), "Negative", return_info=True, style="plain",
                                 difficulty=difficulty)  # fmt: skip
        strip = image[2 : meta["gel_rows"][0] - 4, 20:-20].astype(float).mean(axis=2)
        rough.append(np.abs(np.diff(strip, axis=1)).mean())
    assert rough[1] > 2 * rough[0]


@pytest.mark.parametrize("difficulty", [0, -1.0, float("nan"), float("inf")])
def test_a_difficulty_that_is_not_a_finite_positive_number_is_refused(tmp_path, difficulty):
    with pytest.raises(ValueError, match="difficulty must be a finite positive number"):
        render_gel(np.random.default_rng(0), "Negative", SMALL, difficulty=difficulty)
    with pytest.raises(ValueError, match="difficulty must be a finite positive number"):
        synthesize_ife_dataset(tmp_path / "x", count=3, image_size=SMALL, difficulty=difficulty)
    assert not (tmp_path / "x").exists()


def test_min_per_class_tops_up_every_class_for_the_validation_and_test_splits(tmp_path):
    path = synthesize_ife_dataset(tmp_path, count=120, seed=0, image_size=SMALL, min_per_class=10, difficulty=1.5)
    datalist = json.loads(path.read_text())
    summary = json.loads((tmp_path / "synthesis.json").read_text())
    assert summary["min_per_class"] == 10 and summary["difficulty"] == 1.5
    assert min(summary["class_counts"].values()) == 10
    for section in ("validation", "testing"):  # 10 % and 20 % of ten gels: at least one, and two
        counts = Counter(entry["label"] for entry in datalist[section])
        assert set(counts) == set(IFE_CLASSES), section
    assert min(Counter(entry["label"] for entry in datalist["testing"]).values()) >= 2


def test_the_published_look_is_the_same_gel_on_white_with_strong_bands_and_faint_lanes():
    """The same rng gives the same gel in both looks (lanes, class, band rows), on a white background, with a denser
    band and fainter polyclonal lanes; the classic look is what it always was."""
    assert APPEARANCES == ("classic", "published")
    for index, label in enumerate(["IgG-kappa", "lambda", "IgA-lambda", "IgM-kappa"]):
        classic, a = render_gel(np.random.default_rng([5, 2, index]), label, (200, 300), return_info=True)
        published, b = render_gel(np.random.default_rng([5, 2, index]), label, (200, 300), return_info=True,
                                  appearance="published")  # fmt: skip
        assert a["band_rows"] == b["band_rows"] and a["lane_bounds"] == b["lane_bounds"]
        assert a["gel_rows"] == b["gel_rows"]
        assert a["stain"] == "violet" and b["appearance"] == "published" and b["stain"] in ("blue", "violet", "grey")
        assert b["band_half_width"] > a["band_half_width"]  # wider bands
        assert np.percentile(published, 75) > 243 and np.percentile(classic, 75) < 243  # the page is white
        light = 4 if "kappa" in label else 5  # the light-chain lane's index in LANES
        left, right = b["lane_bounds"][light]
        middle = slice(left + (right - left) // 4, right - (right - left) // 4)
        band = slice(b["band_row"] - 1, b["band_row"] + 2)
        top, bottom = b["gel_rows"]
        away = slice(top + 2, top + (bottom - top) // 4)  # the albumin end: no band, polyclonal stain only
        darkness = lambda image, rows: 255 - image[rows, middle].mean()  # noqa: E731
        # the band's contrast against the rest of its lane is larger in the published look
        assert darkness(published, band) - darkness(published, away) > darkness(classic, band) - darkness(classic, away)
    with pytest.raises(ValueError, match="appearance must be one of"):
        render_gel(np.random.default_rng(0), "Negative", SMALL, appearance="glossy")


def test_a_published_data_set_records_its_look_and_the_classic_one_is_unchanged(tmp_path):
    classic = synthesize_ife_dataset(tmp_path / "c", count=9, seed=3, image_size=SMALL).parent
    published = synthesize_ife_dataset(tmp_path / "p", count=9, seed=3, image_size=SMALL, appearance="published").parent
    summary = json.loads((published / "synthesis.json").read_text())
    assert summary["appearance"] == "published" and all("stain" in image for image in summary["images"])
    plain = json.loads((classic / "synthesis.json").read_text())
    assert "appearance" not in plain and all("stain" not in image for image in plain["images"])
    assert (classic / "datalist.json").read_text() == (published / "datalist.json").read_text()
    assert _digest(classic) != _digest(published)
