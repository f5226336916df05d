"""The fluid classes: reading them from the masks, target channels, exclusive predicted masks, label maps, and the
per-channel weighted BCE."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from custom_components.oct.bundle import training_fluid_classes
from custom_components.oct.fluid_types import (
    BINARY_FLUID,
    FLUID_TYPES,
    check_fluid_classes,
    exclusive_masks,
    fluid_classes_of_masks,
    label_map,
    one_hot_channels,
)
from custom_components.oct.losses import WeightedBCELoss
from custom_components.oct.transforms import ExclusiveFluidMasksd, FluidClassChannelsd


def test_check_fluid_classes_accepts_the_two_protocols_only():
    assert check_fluid_classes(["fluid"]) == BINARY_FLUID and check_fluid_classes(FLUID_TYPES) == FLUID_TYPES
    with pytest.raises(ValueError, match=r"must be \['fluid'\] or \['IRF', 'SRF', 'PED'\], got \['SRF', 'IRF'\]"):
        check_fluid_classes(["SRF", "IRF"])


def test_classes_read_from_mask_values():
    assert fluid_classes_of_masks([[0, 255], [0]]) == BINARY_FLUID
    assert fluid_classes_of_masks([[0, 1], [0]]) == BINARY_FLUID  # IRF alone cannot be told from binary
    assert fluid_classes_of_masks([[0, 1], [0, 3]]) == FLUID_TYPES
    with pytest.raises(ValueError, match=r"mix fluid-type values .* with \[255\]"):
        fluid_classes_of_masks([[0, 2], [0, 255]])


def test_target_channels_binary_is_the_union_and_types_are_one_hot():
    label = torch.tensor([[[0, 1, 2, 3, 255]]], dtype=torch.float32)
    assert one_hot_channels(label, BINARY_FLUID).tolist() == [[[0, 1, 1, 1, 1]]]
    typed = torch.tensor([[[0, 1, 2, 3, 0]]], dtype=torch.float32)
    assert one_hot_channels(typed, FLUID_TYPES).tolist() == [[[0, 1, 0, 0, 0]], [[0, 0, 1, 0, 0]], [[0, 0, 0, 1, 0]]]
    for classes in (BINARY_FLUID, FLUID_TYPES):  # the transform the configs use gives the same, with the metadata
        out = FluidClassChannelsd("label", classes)({"label": MetaTensor(typed, meta={"filename_or_obj": "m.png"})})
        assert torch.equal(out["label"].as_tensor(), one_hot_channels(typed, classes))
        assert out["label"].meta["filename_or_obj"] == "m.png"


def test_exclusive_masks_one_class_per_pixel_at_the_threshold():
    p = torch.tensor([[[0.9, 0.6, 0.2, 0.5]], [[0.7, 0.8, 0.3, 0.1]], [[0.1, 0.1, 0.4, 0.2]]])
    masks = exclusive_masks(p)
    assert masks.tolist() == [[[1, 0, 0, 1]], [[0, 1, 0, 0]], [[0, 0, 0, 0]]]
    assert (masks.sum(0) <= 1).all()
    assert label_map(masks).tolist() == [[1, 2, 0, 1]]
    one = torch.tensor([[[0.5, 0.49, 1.0]]])  # one channel: AsDiscrete(threshold=0.5), >= 0.5
    assert exclusive_masks(one).tolist() == [[[1, 0, 1]]]
    assert ExclusiveFluidMasksd("pred")({"pred": one})["pred"].tolist() == [[[1, 0, 1]]]
    assert torch.equal(ExclusiveFluidMasksd("pred")({"pred": p})["pred"], masks)
    assert label_map(np.ones((1, 2, 2))).tolist() == [[1, 1], [1, 1]]


def test_weighted_bce_weighs_each_channel_by_its_own_rarity():
    target = torch.zeros(2, 2, 4, 4)
    target[:, 0, :2] = 1  # channel 0: 16 of 32 -> 1
    target[0, 1, 0, 0] = 1  # channel 1: 1 of 32 -> 31, capped at 5
    weight = WeightedBCELoss(max_pos_weight=5).batch_pos_weight(target)
    assert weight.shape == (2, 1, 1) and weight.flatten().tolist() == [1.0, 5.0]


def _datalist(tmp_path, values):
    entries = []
    for i, v in enumerate(values):
        mask = np.zeros((8, 8), np.uint8)
        mask[2, 2] = v
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        Image.fromarray(np.full((8, 8), 90, np.uint8)).save(tmp_path / f"i{i}.png")
        entries.append({"image": f"i{i}.png", "label": f"m{i}.png"})
    (tmp_path / "datalist.json").write_text(json.dumps({"training": entries[:-1], "validation": entries[-1:]}))
    return tmp_path / "datalist.json"


def test_training_classes_from_the_masks_or_as_set_and_the_log_says_which(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="oct_fluid_seg")
    assert training_fluid_classes(_datalist(tmp_path, [255, 0, 255])) == ["fluid"]
    assert "fluid classes fluid: read from 3 masks (binary masks)" in caplog.text
    typed = _datalist(tmp_path, [1, 0, 3])  # the PED of the validation mask counts too
    assert training_fluid_classes(typed) == ["IRF", "SRF", "PED"]
    assert ("fluid classes IRF, SRF, PED: read from 3 masks (fluid-type values 1 IRF, 2 SRF, 3 PED; 1 of them hold "
            "IRF alone (1), as a binary 0/1 mask would)") in caplog.text
    assert training_fluid_classes(typed, ["fluid"]) == ["fluid"]  # the paper's protocol on typed masks
    assert "fluid classes fluid, as set (fluid_classes)" in caplog.text


def test_a_typed_target_refuses_a_binary_mask_naming_its_file():
    binary = MetaTensor(torch.tensor([[[0, 255, 255]]], dtype=torch.float32), meta={"filename_or_obj": "bin.png"})
    with pytest.raises(ValueError, match=r"bin.png: a mask of the fluid types IRF, SRF, PED .* got \[0.0, 255.0\]"):
        FluidClassChannelsd("label", FLUID_TYPES)({"label": binary})
    assert FluidClassChannelsd("label", BINARY_FLUID)({"label": binary})["label"].tolist() == [[[0, 1, 1]]]


def test_evaluation_masks_of_a_typed_model_are_label_maps(tmp_path, caplog):
    from custom_components.core.datalist import load_datalist
    from custom_components.oct.bundle import check_evaluation_masks

    caplog.set_level(logging.INFO, logger="oct_fluid_seg")
    binary = load_datalist(_datalist(tmp_path, [255, 0, 255]), "training")
    check_evaluation_masks(binary, BINARY_FLUID)  # a binary model scores any mask
    with pytest.raises(ValueError, match=r"segments IRF, SRF, PED .* this mask holds \[0, 255\]"):
        check_evaluation_masks(binary, FLUID_TYPES)
    check_evaluation_masks(load_datalist(_datalist(tmp_path, [1, 0, 1]), "training"), FLUID_TYPES)
    assert "none of the 2 masks holds SRF (2) or PED (3)" in caplog.text  # 0/1 masks: scored, with a warning
    caplog.clear()
    check_evaluation_masks(load_datalist(_datalist(tmp_path, [1, 3, 0]), "training"), FLUID_TYPES)
    assert "none of" not in caplog.text
