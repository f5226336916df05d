# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import json
import os
import math

import numpy as np
import pytest
import torch
from torch import nn

from custom_components.ife.attention import (
    aligned_profiles,
    is_saturated,
    localisation_report,
    map_row_centres,
    peak_row,
    profile_contrast,
    profiles_by_height,
    read_marked_bands,
    report_from_files,
    tolerance_rows,
)
from custom_components.ife.networks import ATTENTION_STRIDES, MultiTaskIFEResNet


def _stage_rows(network_rows: int, stride: int) -> int:
    rows = network_rows
    for _ in range(int(math.log2(stride))):  # every stride-2 layer of the ResNet gives ceil(n / 2) rows
        rows = (rows + 1) // 2
    return rows


@pytest.mark.parametrize("network_rows", [64, 97, 128, 224, 255])
@pytest.mark.parametrize("image_rows", [48, 400, 401, 1023])
@pytest.mark.parametrize("stride", [4, 8, 16, 32])
def test_peak_row_of_a_hand_made_profile(network_rows, image_rows, stride):
    rows = _stage_rows(network_rows, stride)
    for j in range(rows):
        profile = np.full(rows, 0.2)
        profile[j] = 0.9
        # map row j is centred on network-input row j * stride (pixel centre j * stride + 0.5), scaled to the image
        expected = min(image_rows - 1, round((j * stride + 0.5) * image_rows / network_rows - 0.5))
        assert peak_row(profile, stride, network_rows, image_rows) == expected
    assert 0 <= peak_row(np.arange(rows), stride, network_rows, image_rows) < image_rows


def test_map_row_centres_hand_computed():
    # 400-row gel at 128 px, stage 4 (stride 32): network rows 0, 32, 64, 96 -> image rows (y + 0.5) * 3.125 - 0.5
    np.testing.assert_allclose(map_row_centres(4, 32, 128, 400), [1.0625, 101.0625, 201.0625, 301.0625])
    # identity scale: the centres are the network rows themselves
    np.testing.assert_allclose(map_row_centres(7, 32, 224, 224), [0, 32, 64, 96, 128, 160, 192])
    with pytest.raises(ValueError, match="needs at least 161 input rows"):
        map_row_centres(6, 32, 128, 400)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        map_row_centres(4, 0, 128, 400)


def test_map_row_centres_match_the_network_geometry():
    """A unit impulse at network-input row j * stride gives the strided layers' largest, symmetric response at map
    row j: the ResNet's strided layers (stem convolution, max-pool, stage convolutions) centre row i on input 2 i."""
    net = MultiTaskIFEResNet(channels=(8, 16, 32, 64))
    strided = [net.stem[0], net.stem[3]] + [stage.blocks[0].conv1 for stage in net.shared[1:]]
    strided += [net.severe_stages[0].blocks[0].conv1]
    layers = []
    for layer in strided:  # same kernel, stride and padding along the height, on one channel of ones
        if isinstance(layer, nn.MaxPool2d):
            layers.append(nn.AvgPool2d((layer.kernel_size, 1), (layer.stride, 1), (layer.padding, 0)))
        else:
            conv = nn.Conv2d(1, 1, (layer.kernel_size[0], 1), (layer.stride[0], 1), (layer.padding[0], 0), bias=False)
            nn.init.ones_(conv.weight)
            layers.append(conv)
    chain = nn.Sequential(*layers)
    for j in range(4):
        impulse = torch.zeros(1, 1, 128, 1)
        impulse[0, 0, j * 32] = 1.0
        with torch.no_grad():
            response = chain(impulse)[0, 0, :, 0]
        assert response.shape[0] == 4 and int(response.argmax()) == j
        if 0 < j < 3:
            assert response[j - 1] == pytest.approx(float(response[j + 1]))
    assert ATTENTION_STRIDES["attention_severe"] == 32 and ATTENTION_STRIDES["attention_shared"] == 16


def test_contrast_saturation_and_tolerance():
    assert profile_contrast([0.5, 0.5, 0.5]) == pytest.approx(1.0)
    assert profile_contrast([1.0, 0.0, 0.0, 0.0]) == pytest.approx(4.0)
    assert math.isnan(profile_contrast([0.0, 0.0]))
    assert is_saturated([0.99, 0.97, 1.0]) and is_saturated([0.0, 0.03, 0.01])
    assert not is_saturated([0.0, 1.0]) and not is_saturated([0.5, 0.5])
    # half a map row (32 network rows = 100 image rows at 128 -> 400) or the band's half-width if larger
    assert tolerance_rows(32, 128, 400, 6.0) == pytest.approx(50.0)
    assert tolerance_rows(4, 128, 400, 9.0) == pytest.approx(9.0)
    assert tolerance_rows(4, 128, 400, None) == pytest.approx(6.25)
    with pytest.raises(ValueError, match="finite"):
        profile_contrast([0.1, float("nan")])


def _record(values, band_row, half_width=5.0, stride=32, network_rows=128, image_rows=400):
    return {"values": values, "stride": stride, "network_rows": network_rows, "image_rows": image_rows,
            "band_row": band_row, "band_half_width": half_width if band_row is not None else None}  # fmt: skip


def test_localisation_report_hand_made():
    # centres of a 4-row map: image rows 1, 101, 201, 301 (tolerance 50 rows)
    records = [
        _record([0.1, 0.1, 0.9, 0.1], 230),  # peak 201: in the band (29 rows away)
        _record([0.1, 0.1, 0.1, 0.9], 290),  # peak 301: in
        _record([0.9, 0.1, 0.1, 0.1], 240),  # peak 1: out (239 rows)
        _record([0.5, 0.5, 0.5, 0.5], None),  # negative, flat
        _record([0.99, 0.98, 1.0, 0.97], None),  # negative, saturated at 1
    ]
    report = localisation_report(records, "severe")
    assert report["positives"] == 3 and report["negatives"] == 2 and report["gels"] == 5
    assert report["peak_in_band"] == 2 and report["peak_in_band_share"] == pytest.approx(2 / 3)
    # the best fixed row: 201 is within 50 of 230 and 240, 301 within 50 of 290 -> row 2 gets 2 of 3
    assert report["fixed_row_share"] == pytest.approx(2 / 3)
    assert report["tolerance_rows"] == pytest.approx(50.0)
    assert report["median_peak_offset"] == pytest.approx(-29.0)  # offsets -29, 11, -239
    assert report["contrast_positive"] == pytest.approx(0.9 / 0.3)
    assert report["contrast_negative"] == pytest.approx((1.0 + 1.0 / np.mean([0.99, 0.98, 1.0, 0.97])) / 2)
    assert report["saturated"] == 1 and report["map_rows"] == [4]
    negatives_only = localisation_report(records[3:], "mild")
    assert negatives_only["peak_in_band_share"] is None and negatives_only["fixed_row_share"] is None
    with pytest.raises(ValueError, match="no gels"):
        localisation_report([], "severe")


def test_aligned_profiles_and_profiles_by_height():
    records = [_record([0.0, 0.0, 1.0, 0.0], 201.0625), _record([0.2, 0.2, 0.2, 0.2], None)]
    aligned = aligned_profiles(records, [-100.0, 0.0, 100.0, 150.0])
    np.testing.assert_allclose(aligned, [[0.0, 1.0, 0.0, np.nan]])  # beyond the last centre: NaN
    by_height = profiles_by_height(records, [0.5], band=False)
    np.testing.assert_allclose(by_height, [[0.2]])
    assert profiles_by_height(records, [0.5], band=True).shape == (1, 1)


def test_report_from_files_joins_profiles_and_band_rows(tmp_path):
    (tmp_path / "images").mkdir()
    synthesis = {"images": [
        {"image": "images/a.png", "label": "IgG-kappa", "band_row": 210, "band_half_width": 6.0},
        {"image": "images/b.png", "label": "Negative", "band_row": None, "band_half_width": None},
    ]}  # fmt: skip
    (tmp_path / "synthesis.json").write_text(json.dumps(synthesis))
    lines = [
        {"image": str(tmp_path / "images" / "a.png"), "image_rows": 400, "network_rows": 128,
         "maps": {"attention_severe": {"stride": 32, "values": [0, 0, 1, 0]}}},
        {"image": str(tmp_path / "images" / "b.png"), "image_rows": 400, "network_rows": 128,
         "maps": {"attention_severe": {"stride": 32, "values": [1, 0, 0, 0]}}},
        {"image": str(tmp_path / "elsewhere.png"), "image_rows": 400, "network_rows": 128, "maps": {}},
    ]  # fmt: skip
    profiles = tmp_path / "attention_profiles.jsonl"
    profiles.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    report, records = report_from_files(profiles, tmp_path / "synthesis.json")
    assert report["gels"] == 2 and report["unmatched"] == 1
    severe = report["maps"]["attention_severe"]
    assert severe["positives"] == 1 and severe["peak_in_band"] == 1 and severe["negatives"] == 1
    assert records["attention_severe"][0]["band_row"] == 210

    profiles.write_text('{"image": "x"}\n')
    with pytest.raises(ValueError, match=r"attention_profiles.jsonl, line 1: expected an object"):
        report_from_files(profiles, tmp_path / "synthesis.json")
    profiles.write_text(json.dumps(lines[2]) + "\n")
    with pytest.raises(ValueError, match="none of the images"):
        report_from_files(profiles, tmp_path / "synthesis.json")
    (tmp_path / "other.json").write_text(json.dumps({"images": [{"image": "x.png"}]}))
    with pytest.raises(ValueError, match="lists no IFE gels with band rows"):
        report_from_files(profiles, tmp_path / "other.json")


def test_hand_marked_real_gels_give_the_light_chain_band_row_and_several_folds_join(tmp_path):
    """Marks as docs/real_gels/mpcadms_lane_marks.json holds them; two folds' profiles read as one run."""
    marks = {"gels": [
        {"image": "CP/1.png", "label": "IgG-kappa", "band_rows": {"heavy": 212, "light": 208}},
        {"image": "CP/2.png", "label": "kappa", "band_rows": {"heavy": None, "light": 100}},
        {"image": "CP/3.png", "label": "Negative", "band_rows": None},
    ]}  # fmt: skip
    (tmp_path / "marks.json").write_text(json.dumps(marks))
    truth = read_marked_bands(tmp_path / "marks.json", tmp_path / "data")
    one = truth[os.path.realpath(tmp_path / "data" / "CP" / "1.png")]
    assert one == {"label": "IgG-kappa", "band_row": 208, "band_half_width": None}
    assert truth[os.path.realpath(tmp_path / "data" / "CP" / "3.png")]["band_row"] is None
    folds = []
    for fold, (name, values) in enumerate([("1.png", [0, 0, 1, 0]), ("2.png", [0, 1, 0, 0]), ("3.png", [1, 0, 0, 0])]):
        line = {"image": str(tmp_path / "data" / "CP" / name), "image_rows": 400, "network_rows": 128,
                "maps": {"attention_mild": {"stride": 32, "values": values}}}  # fmt: skip
        folds.append(tmp_path / f"fold_{fold}.jsonl")
        folds[-1].write_text(json.dumps(line) + "\n")
    report, _ = report_from_files(folds, truth)
    mild = report["maps"]["attention_mild"]
    # map row j sits on image row about 1 + 100 j: the peaks (rows 2 and 1: 201 and 101) are 7 and 1 rows from the
    # marked bands (208, 100), within half a map row (50 image rows)
    assert report["gels"] == 3 and mild["positives"] == 2 and mild["peak_in_band"] == 2 and mild["negatives"] == 1
    (tmp_path / "empty.json").write_text(json.dumps({"gels": [marks["gels"][2]]}))
    with pytest.raises(ValueError, match="empty.json lists no gels with marked band rows"):
        read_marked_bands(tmp_path / "empty.json", tmp_path)


def test_rows_of_a_lane_normalised_gel_map_through_its_layout():
    from custom_components.ife.attention import image_to_network_rows, network_to_image_rows

    # gel rows 20..119 of a 150-row file resampled to 50 network rows: 2 file rows per network row
    down = {"rows": [20, 119], "orientation": "albumin_bottom"}
    up = {"rows": [20, 119], "orientation": "albumin_top"}
    assert network_to_image_rows([0, 49], 50, 150, down).tolist() == [20.5, 118.5]
    assert network_to_image_rows([0, 49], 50, 150, up).tolist() == [118.5, 20.5]  # flipped: network top = file bottom
    assert network_to_image_rows([0], 50, 150).tolist() == [1.0]  # plain resize: 3 file rows per network row
    for layout in (down, up, None):
        rows = np.array([0.0, 7.0, 31.5, 49.0])
        back = image_to_network_rows(network_to_image_rows(rows, 50, 150, layout), 50, 150, layout)
        np.testing.assert_allclose(back, rows)
    # a stride-2 map peaking at map row 10 (network row 20): file row 60.5 down, 78.5 flipped (rounded to even)
    profile = np.zeros(25)
    profile[10] = 1.0
    assert peak_row(profile, 2, 50, 150, down) == 60 and peak_row(profile, 2, 50, 150, up) == 78
    record = {"values": profile.tolist(), "stride": 2, "network_rows": 50, "image_rows": 150, "lane_layout": up,
              "band_row": 78, "band_half_width": 1.0}  # fmt: skip
    report = localisation_report([record], "severe")
    assert report["peak_in_band"] == 1 and report["tolerance_rows"] == 2.0  # half of 2 map rows x 2 file rows
    assert np.isfinite(aligned_profiles([record], [0.0])).all()  # flipped centres still interpolate
