"""IFE lane layout: lanes found against the generator's known positions, the canonical layout, band patterns."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from custom_components.ife.synthetic import render_gel
from custom_components.ife.classes import IFE_CLASSES
from custom_components.ife.lanes import (
    IFEBandPatternd,
    LaneLayout,
    LaneLayoutError,
    NormaliseLaneLayoutd,
    detect_band_pattern,
    detect_orientation,
    find_lanes,
)

SIZE = (120, 180)  # rows, columns
ORIENTATIONS = ("albumin_bottom", "albumin_top")
STYLES = {
    "plain": "plain",
    "classic": "classic",
    "headers": {"headers": True},
    "frame": {"frame": True},
    "margin": {"margin": True},
    "uneven": {"uneven_lanes": True},
    "real": "real",
}


def _gel(seed, class_name="IgG-kappa", orientation="albumin_bottom", style="classic", size=SIZE, **kwargs):
    image, info = render_gel(
        np.random.default_rng(seed), class_name, size, return_info=True, orientation=orientation, style=style, **kwargs
    )
    return image.transpose(2, 0, 1).astype(np.float32), info  # (3, H, W) as after EnsureChannelFirstd


@pytest.mark.parametrize("orientation", ORIENTATIONS)
@pytest.mark.parametrize("style", list(STYLES))
def test_lanes_and_gel_rows_match_the_generator(style, orientation):
    # tolerance: lane centres within 3 % of the lane pitch, widths within 20 %, gel rows within 3 % of the height
    for seed in range(4):
        image, info = _gel(seed, ["Negative", "IgA-lambda", "kappa", "biclonal"][seed], orientation, STYLES[style])
        layout = find_lanes(image)
        pitch = float(np.mean(np.diff(info["lane_centres"])))
        assert len(layout.columns) == 6 and 0 < layout.confidence <= 1
        np.testing.assert_allclose(layout.centres, info["lane_centres"], atol=0.03 * pitch, err_msg=f"seed {seed}")
        found_widths = [right - left + 1 for left, right in layout.columns]
        np.testing.assert_allclose(found_widths, info["lane_widths"], rtol=0.2, err_msg=f"seed {seed}")
        np.testing.assert_allclose(layout.rows, info["gel_rows"], atol=0.03 * SIZE[0], err_msg=f"seed {seed}")


def test_lanes_of_a_hand_drawn_gel_are_exact():
    image = np.full((100, 150), 230.0)
    columns = [(10, 25), (32, 45), (52, 69), (76, 91), (98, 113), (120, 137)]
    for k, (left, right) in enumerate(columns):
        image[20:90, left : right + 1] = 150.0 + 10 * k  # lanes of different strength
    image[5:12, 12:24] = 40.0  # a header letter above the first lane
    image[15, 5:145] = image[94, 5:145] = 30.0  # a frame: two thin lines across the width ...
    image[15:95, 5] = image[15:95, 144] = 30.0  # ... and down both sides
    layout = find_lanes(image)
    assert layout.columns == tuple(columns) and layout.rows == (20, 89)
    assert layout.centres[0] == pytest.approx(17.5)


@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_normalised_gel_has_the_band_at_the_mapped_row_and_albumin_at_the_bottom(orientation):
    height, width = 64, 96
    transform = NormaliseLaneLayoutd("image", (height, width), orientation=orientation)
    for seed in range(3):
        image, info = _gel(seed, "IgG-kappa", orientation, "real")
        layout = find_lanes(image)
        out = transform({"image": MetaTensor(torch.as_tensor(image), meta={"filename_or_obj": "gel.png"})})["image"]
        assert isinstance(out, MetaTensor) and out.shape == (3, height, width) and out.dtype == torch.float32
        assert out.meta["filename_or_obj"] == "gel.png" and out.meta["lane_layout"]["rows"] == list(layout.rows)
        top, bottom = layout.rows
        # band row through the layout: crop, resize (pixel centres), flip when the input has albumin at the top
        expected = (info["band_row"] - top + 0.5) * height / (bottom - top + 1) - 0.5
        if orientation == "albumin_top":
            expected = height - 1 - expected
        gray = out.mean(dim=0)
        lanes = [gray[:, k * 16 + 4 : k * 16 + 12].mean(dim=1) for k in range(6)]  # 16 output columns per lane
        for k in (1, 4):  # G and K hold the IgG-kappa band
            assert abs(int(torch.argmin(lanes[k])) - expected) <= 0.03 * height + 1, (seed, k)
    negative, _ = _gel(0, "Negative", orientation, "real")
    elp = transform({"image": negative})["image"].mean(dim=0)[:, 4:12].mean(dim=1)
    assert int(torch.argmin(elp)) > 0.75 * height  # the albumin band, ELP's darkest, near the bottom


def test_orientation_flips_the_rows_and_lane_gap_holds_background():
    image, _ = _gel(5, "IgA-kappa", "albumin_top", "plain")
    bottom = NormaliseLaneLayoutd("image", (48, 72), orientation="albumin_bottom")({"image": image})["image"]
    top = NormaliseLaneLayoutd("image", (48, 72), orientation="albumin_top")({"image": image})["image"]
    assert not isinstance(top, MetaTensor) and top.shape == (3, 48, 72)
    torch.testing.assert_close(top, torch.flip(bottom, dims=(1,)))
    gapped = NormaliseLaneLayoutd("image", (48, 72), lane_gap=3)
    assert gapped.lane_widths == [10, 9, 9, 10, 10, 9]  # 72 - 5 * 3 = 57 columns shared out, 9.5 each
    out = gapped({"image": image})["image"]
    ends = np.cumsum(gapped.lane_widths) + 3 * np.arange(6)  # first column after each lane
    gaps = [out[:, :, ends[k] : ends[k] + 3] for k in range(5)]
    assert all(torch.equal(g, gaps[0]) and (g.std(dim=(1, 2)) == 0).all() for g in gaps)  # one colour per channel
    assert out[:, :, -3:].std() > 0  # the last lane reaches the right edge: no trailing gap
    assert (gaps[0][:, 0, 0] > out.mean(dim=(1, 2))).all()  # background, brighter than the stained average


def test_auto_orientation_reads_the_albumin_end_from_elp():
    for seed, class_name in enumerate(("Negative", "IgG-kappa", "lambda", "IgA-lambda", "IgM-kappa", "biclonal")):
        for orientation in ORIENTATIONS:
            image, _ = _gel(seed, class_name, orientation, "mixed")
            assert detect_orientation(image) == orientation, (class_name, orientation)
    image, _ = _gel(1, "IgG-kappa", "albumin_top", "real")
    auto = NormaliseLaneLayoutd("image", (48, 72), orientation="auto")
    given = NormaliseLaneLayoutd("image", (48, 72), orientation="albumin_top")
    tagged = MetaTensor(torch.as_tensor(image), meta={"filename_or_obj": "gel.png"})
    out = auto({"image": tagged})["image"]
    torch.testing.assert_close(out.as_tensor(), given({"image": image})["image"])
    assert out.meta["lane_layout"]["orientation"] == "albumin_top"
    with pytest.raises(ValueError, match="end must be in"):
        detect_orientation(image, end=0.7)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.full((3, 90, 135), 231.0), "no lanes"),
        (np.pad(np.full((3, 60, 8), 120.0), ((0, 0), (15, 15), (20, 107)), constant_values=231.0), "into 6 lanes"),
    ],
)
def test_a_gel_without_six_lanes_raises_an_error_naming_the_file_when_asked_to(image, message):
    tagged = MetaTensor(torch.as_tensor(image), meta={"filename_or_obj": "/data/scan_17.png"})
    with pytest.raises(LaneLayoutError, match=message) as error:
        NormaliseLaneLayoutd("image", (32, 48), on_failure="raise")({"image": tagged})
    assert str(error.value).startswith("/data/scan_17.png: cannot normalise the lane layout")
    assert isinstance(error.value, ValueError)  # the bundles' skip-and-report path catches ValueErrors too


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="spatial_size"):
        NormaliseLaneLayoutd("image", (64,))
    with pytest.raises(ValueError, match="orientation"):
        NormaliseLaneLayoutd("image", (64, 96), orientation="upside_down")
    with pytest.raises(ValueError, match="lane_gap"):
        NormaliseLaneLayoutd("image", (64, 96), lane_gap=-1)
    with pytest.raises(ValueError, match="leaves 1 columns for 6 lanes"):
        NormaliseLaneLayoutd("image", (64, 16), lane_gap=3)
    with pytest.raises(ValueError, match="num_lanes"):
        find_lanes(np.ones((50, 50)), num_lanes=0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        find_lanes(np.ones((2, 3, 50, 50)))
    with pytest.raises(ValueError, match="one image key"):
        IFEBandPatternd(["image", "mask"])
    with pytest.raises(ValueError, match="on_failure"):
        IFEBandPatternd("image", on_failure="skip")
    with pytest.raises(ValueError, match="band_width"):
        detect_band_pattern(np.ones((50, 50)), band_width=(0.2, 0.1))


@pytest.mark.parametrize(
    "components, reason",
    [
        (("IgG-kappa", "IgG-lambda"), "kappa and lambda bands at different heights"),
        (("IgG-kappa", "IgA-kappa"), "two heavy-chain bands at different heights (G, A)"),
        (("IgA-lambda", "IgM-kappa"), "two heavy-chain bands at different heights (A, M)"),
    ],
)
def test_biclonal_gels_are_flagged_with_the_reason(components, reason):
    for seed in range(3):
        image, info = _gel(seed, "biclonal", ORIENTATIONS[seed % 2], "mixed", components=components)
        pattern = detect_band_pattern(image)
        assert pattern.outside_nine is not None and reason in pattern.outside_nine, (seed, pattern)
        first, second = info["components"]
        assert abs(first["band_row"] - second["band_row"]) > 0.1 * (info["gel_rows"][1] - info["gel_rows"][0])


def test_nine_class_gels_are_not_flagged_and_their_bands_are_found():
    for class_name in IFE_CLASSES:
        for seed in range(3):
            image, info = _gel(seed, class_name, ORIENTATIONS[seed % 2], "mixed")
            pattern = detect_band_pattern(image)
            assert pattern.outside_nine is None, (class_name, seed, pattern)
            if class_name == "Negative" or info["faint"]:
                continue
            for lane in info["band_lanes"][1:]:  # the immunofixation lanes holding the band
                assert any(abs(row - info["band_row"]) <= 0.04 * SIZE[0] for row in pattern.bands[lane]), (
                    class_name, seed, lane, pattern.bands, info["band_row"],
                )  # fmt: skip


def test_a_line_across_every_lane_is_not_a_band():
    image = np.full((100, 150), 230.0)
    columns = [(10, 25), (32, 45), (52, 69), (76, 91), (98, 113), (120, 137)]
    for left, right in columns:
        image[10:90, left : right + 1] = 200.0
    image[48:52, 5:145] = 120.0  # a crease across the gel, as thick as a band
    pattern = detect_band_pattern(image)
    assert pattern.outside_nine is None and all(not pattern.bands[n] for n in ("G", "A", "M", "K", "L"))
    image[30:34, 32:46] = image[66:70, 76:92] = 120.0  # now bands in G and M, at different heights
    layout = LaneLayout(columns=tuple(columns), rows=(10, 89))
    pattern = detect_band_pattern(image, layout)
    assert pattern.bands["G"] == [31] and pattern.bands["M"] == [67]
    assert pattern.outside_nine == "two heavy-chain bands at different heights (G, M)"


def test_band_pattern_transform_adds_a_string_and_reports_or_raises_on_failure():
    negative, _ = _gel(0, "IgG-lambda")
    biclonal, _ = _gel(1, "biclonal", components=("IgM-kappa", "IgM-lambda"))
    transform = IFEBandPatternd("image")
    assert transform({"image": negative})["band_pattern"] == ""
    assert "kappa and lambda bands at different heights" in transform({"image": biclonal})["band_pattern"]
    blank = MetaTensor(torch.full((3, 60, 90), 231.0), meta={"filename_or_obj": "blank.png"})
    with pytest.raises(LaneLayoutError, match="^blank.png: cannot read the band pattern: no lanes"):
        transform({"image": blank})
    reported = IFEBandPatternd("image", output_key="refer", on_failure="report")({"image": blank})
    assert reported["refer"].startswith("lanes not found: no lanes")


def test_lanes_are_found_once_when_band_pattern_and_normalisation_both_run(monkeypatch):
    import custom_components.ife.lanes as ife_lanes

    calls = []
    real_find_lanes = ife_lanes.find_lanes
    monkeypatch.setattr(ife_lanes, "find_lanes", lambda *a, **k: calls.append(1) or real_find_lanes(*a, **k))
    image, _ = _gel(0, "IgG-kappa", "albumin_top", "real")
    gel = MetaTensor(torch.as_tensor(image), meta={"filename_or_obj": "gel.png"})
    data = IFEBandPatternd("image")({"image": gel})
    assert len(calls) == 1 and "found_lane_layout" not in gel.meta  # the input's meta is left alone
    out = NormaliseLaneLayoutd("image", (64, 96), orientation="auto")(data)["image"]
    assert len(calls) == 1  # reused, not found again
    layout = real_find_lanes(image)
    assert out.meta["lane_layout"]["rows"] == list(layout.rows) and "found_lane_layout" not in out.meta
    assert out.meta["lane_layout"]["image_shape"] == list(SIZE)
    assert out.meta["lane_layout"]["orientation"] == "albumin_top"  # the one "auto" detected, not "auto"
    # a layout left by the detector on an image of another size is not reused
    stale = MetaTensor(torch.as_tensor(image[:, :, :40]), meta=dict(data["image"].meta))  # two lanes left
    calls.clear()
    with pytest.raises(LaneLayoutError, match="^gel.png: cannot normalise"):  # searched afresh, and not six lanes
        NormaliseLaneLayoutd("image", (64, 96), on_failure="raise")({"image": stale})
    assert len(calls) == 1


@pytest.mark.parametrize("orientation, flipped", [("albumin_bottom", False), ("albumin_top", True), ("auto", False)])
def test_a_gel_whose_lanes_cannot_be_read_falls_back_to_the_whole_image(orientation, flipped, caplog):
    """Not dropped: the whole image at the output size (the paper's raw protocol), flipped when the orientation
    is known to be albumin_top, flagged in the layout record with the reason, and named in the log."""
    rows = torch.linspace(0, 1, 40)[:, None].expand(40, 60)
    image = MetaTensor(torch.stack([rows * 255] * 3), meta={"filename_or_obj": "smear.png"})  # no lanes at all
    with caplog.at_level(logging.WARNING):
        out = NormaliseLaneLayoutd("image", (20, 30), orientation=orientation)({"image": image})["image"]
    assert out.shape == (3, 20, 30)
    column = out[0, :, 15]
    assert bool(column[0] > column[-1]) is flipped  # the ramp runs down the rows, reversed only when flipped
    record = out.meta["lane_layout"]
    assert record["lanes_found"] is False and record["reason"]
    assert record["rows"] == [0, 39] and record["image_shape"] == [40, 60] and len(record["columns"]) == 6
    assert record["orientation"] == ("unknown" if orientation == "auto" else orientation)
    assert any("smear.png: lanes not read" in m and "whole image is used" in m for m in caplog.messages)
    found = NormaliseLaneLayoutd("image", (64, 96))({"image": MetaTensor(torch.as_tensor(_gel(0, "Negative")[0]))})
    assert found["image"].meta["lane_layout"]["lanes_found"] is True and found["image"].meta["lane_layout"]["reason"] == ""


def test_on_failure_is_checked():
    with pytest.raises(ValueError, match="on_failure must be 'whole_image' or 'raise'"):
        NormaliseLaneLayoutd("image", (64, 96), on_failure="skip")


# --- real-scan layouts, drawn here (the real gels of the issue carry no licence: none of them is in the repository)


def _real_layout_gel(
    columns,
    gel_rows=(10, 109),
    size=(120, 180),
    albumin="bottom",
    blank=("A", "M"),
    background=(236, 236, 236),
    stain=(1.0, 1.0, 1.0),
    frames=False,
    letters=False,
    header=None,
    seed=0,
):
    """A scan laid out like the real gels that broke the old finder: ELP with albumin (its darkest band) at one
    end, G K L with a smear or a band, ``blank`` lanes without stain (an antiserum without antigen), optional
    thin frames around each lane with a thin letter printed inside at the top, or a ``header`` strip
    (``"bold"``: bold letters above a line across the width); ``stain`` is the absorbance per RGB channel
    (coloured dye), ``background`` the paper's colour. Returns (3, H, W) float32."""
    rng = np.random.default_rng(seed)
    height, width = size
    top, bottom = gel_rows
    t = (np.arange(height) - top) / (bottom - top)  # 0..1 over the gel, albumin end at 1 for "bottom"
    if albumin == "top":
        t = 1 - t
    inside = (t >= 0) & (t <= 1)
    absorb = np.zeros(size)
    for name, (left, right) in zip(("ELP", "G", "A", "M", "K", "L"), columns):
        if name in blank:
            continue
        if name == "ELP":
            along = 0.08 + 1.6 * np.exp(-(((t - 0.9) / 0.035) ** 2))  # albumin
            along += sum(a * np.exp(-(((t - c) / 0.04) ** 2)) for c, a in ((0.7, 0.3), (0.55, 0.35), (0.4, 0.3)))
            along += 0.25 * np.exp(-(((t - 0.2) / 0.12) ** 2))  # gamma smear
        elif name in ("G", "K"):
            along = 0.05 + 0.7 * np.exp(-(((t - 0.25) / 0.03) ** 2))  # a monoclonal band
        else:
            along = 0.05 + 0.2 * np.exp(-(((t - 0.25) / 0.12) ** 2))  # polyclonal smear
        absorb[:, left : right + 1] += (along * inside)[:, None]
    image = np.asarray(background, float)[:, None, None] * np.exp(-np.asarray(stain, float)[:, None, None] * absorb)
    line = 25.0  # printed lines and letters: near black
    if frames:
        for left, right in columns:
            image[:, top - 14 : bottom + 3, left - 2] = image[:, top - 14 : bottom + 3, right + 2] = line
            image[:, top - 14, left - 2 : right + 3] = image[:, bottom + 2, left - 2 : right + 3] = line
            if letters:  # a thin "L" and a thin "T" side by side, inside the frame above the stain
                middle = (left + right) // 2
                image[:, top - 11 : top - 3, middle - 3] = line
                image[:, top - 4, middle - 3 : middle] = line
                image[:, top - 11, middle + 1 : middle + 6] = line
                image[:, top - 11 : top - 3, middle + 3] = line
    if header == "bold":  # a boxed header strip: bold letters (strokes thicker than the opening) above a line
        image[:, top - 4, 2 : width - 2] = line
        for left, right in columns:
            middle = (left + right) // 2
            image[:, 3 : top - 7, middle - 5 : middle] = line  # the stem of a bold "L"
            image[:, top - 11 : top - 7, middle - 5 : middle + 5] = line  # and its foot
    image += rng.normal(0, 1.5, image.shape)
    return np.clip(image, 0, 255).astype(np.float32)


def _even_columns(first, pitch, width, count=6):
    return [(int(first + k * pitch), int(first + k * pitch + width - 1)) for k in range(count)]


def _assert_lanes(layout, columns, gel_rows, rows_tolerance=0.04, height=120):
    pitch = float(np.mean(np.diff([(a + b) / 2 for a, b in columns])))
    expected = [(a + b) / 2 for a, b in columns]
    np.testing.assert_allclose(layout.centres, expected, atol=0.1 * pitch)
    assert all(np.diff(layout.centres) > 0)
    np.testing.assert_allclose(layout.rows, gel_rows, atol=rows_tolerance * height + 1)


@pytest.mark.parametrize("albumin", ["bottom", "top"])
def test_frames_with_letters_inside_and_blank_lanes(albumin):
    # the old finder: frame lines and letters split the lanes, blank A and M lanes left fewer than six runs
    columns = _even_columns(12, 27, 19)
    image = _real_layout_gel(columns, gel_rows=(24, 110), albumin=albumin, frames=True, letters=True)
    layout = find_lanes(image)
    _assert_lanes(layout, columns, (24, 110))
    assert detect_orientation(image, layout) == f"albumin_{albumin}"


def test_bold_header_letters_are_not_gel():
    # bold letters survive the opening that removes thin strokes: the line under the header keeps them apart
    columns = _even_columns(10, 28, 20)
    image = _real_layout_gel(columns, gel_rows=(22, 112), header="bold", blank=("A", "M", "L"))
    _assert_lanes(find_lanes(image), columns, (22, 112))


def test_tight_crop_with_the_outer_lanes_cut_by_the_image_edges():
    # ELP starts at column 0 and L ends at the last column (the crop cuts both): no margin, no gap outside
    columns = [(0, 22), (34, 57), (68, 91), (102, 125), (136, 159), (170, 179)]
    image = _real_layout_gel(columns, gel_rows=(0, 119), size=(120, 180), albumin="top")
    layout = find_lanes(image)
    _assert_lanes(layout, columns, (0, 119))
    assert layout.columns[0][0] == 0 and layout.columns[-1][1] == 179


def test_uneven_lane_widths_and_spacing():
    columns = [(8, 30), (40, 56), (70, 88), (95, 117), (128, 145), (152, 173)]
    image = _real_layout_gel(columns, blank=("M",))
    _assert_lanes(find_lanes(image), columns, (10, 109))


def test_coloured_stain_on_a_tinted_background():
    # purple dye (absorbs green most, red least) on pink paper, lanes faint but for ELP
    columns = _even_columns(14, 26, 17)
    image = _real_layout_gel(columns, background=(245, 215, 225), stain=(0.35, 1.0, 0.2), blank=("A",))
    layout = find_lanes(image)
    _assert_lanes(layout, columns, (10, 109))
    assert detect_orientation(image, layout) == "albumin_bottom"
    assert 0 < layout.confidence <= 1


def test_too_few_stained_lanes_raise_an_error_naming_the_problem():
    # only ELP and one immunofixation lane show stain: pitch and position of the six lanes are a guess
    columns = _even_columns(12, 27, 19)
    image = _real_layout_gel(columns, blank=("G", "A", "M", "L"))
    with pytest.raises(LaneLayoutError, match=r"into 6 lanes: 2 lane\(s\) stand out of the gaps, 3 are needed"):
        find_lanes(image)
    with pytest.raises(LaneLayoutError, match="40 columns are too few for 6 lanes"):
        find_lanes(image[:, :, :40])
