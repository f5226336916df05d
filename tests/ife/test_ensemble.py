# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""custom_components.ife.ensemble: the mean of the fold networks' probabilities, loading the folds (with their
calibration temperatures), and finding them in an ensemble folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from custom_components.ife.calibration.record import write_calibration
from custom_components.core.recipe import CheckpointMismatchError, RecipeMismatchError, write_recipe
from custom_components.ife.classes import fuse_subtask_probabilities
from custom_components.ife.ensemble import (
    ProbabilityEnsemble,
    check_fold_recipes,
    ensemble_operating_point,
    fold_checkpoints,
    load_fold_ensemble,
)
from custom_components.ife.networks import MultiTaskIFEResNet

TINY = (4, 8, 16, 32)


class _Constant(nn.Module):
    """A member that returns fixed outputs whatever the input."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, x):
        return self.output


def _fold_models(root: Path, seeds=(0, 1), channels=TINY) -> tuple[list[MultiTaskIFEResNet], list[str]]:
    """One tiny network per seed, saved as ``fold_<k>/models/model.pt`` (a bare state dict, as training writes)."""
    networks, paths = [], []
    for k, seed in enumerate(seeds):
        torch.manual_seed(seed)
        network = MultiTaskIFEResNet(channels=channels).eval()
        path = root / f"fold_{k}" / "models" / "model.pt"
        path.parent.mkdir(parents=True)
        torch.save(network.state_dict(), path)
        networks.append(network)
        paths.append(str(path))
    return networks, paths


def test_ensemble_of_tensors_is_the_mean_probability():
    a = _Constant(torch.tensor([[0.2, 0.8], [1.0, 0.0]]))
    b = _Constant(torch.tensor([[0.6, 0.4], [0.5, 0.5]]))
    out = ProbabilityEnsemble([a, b])(torch.zeros(2, 1))
    assert set(out) == {"probabilities"}
    assert torch.allclose(out["probabilities"], torch.tensor([[0.4, 0.6], [0.75, 0.25]]))


def test_attention_maps_shared_by_all_members_are_averaged_logits_are_not():
    a = _Constant({"probabilities": torch.ones(1, 3) / 3, "logits": torch.zeros(1, 3),
                   "attention_severe": torch.tensor([[0.0, 1.0]]), "attention_mild": torch.tensor([[1.0, 0.0]])})
    b = _Constant({"probabilities": torch.ones(1, 3) / 3, "logits": torch.ones(1, 3),
                   "attention_severe": torch.tensor([[0.5, 0.5]])})  # fmt: skip
    out = ProbabilityEnsemble([a, b])(torch.zeros(1, 1))
    assert set(out) == {"probabilities", "attention_severe"}  # attention_mild: only one member has it
    assert torch.allclose(out["attention_severe"], torch.tensor([[0.25, 0.75]]))


def test_bad_members_raise():
    with pytest.raises(ValueError, match="at least one member"):
        ProbabilityEnsemble([])
    two, three = _Constant(torch.ones(1, 2) / 2), _Constant(torch.ones(1, 3) / 3)
    with pytest.raises(ValueError, match=r"member 0 returns probabilities \(1, 2\), member 1 \(1, 3\)"):
        ProbabilityEnsemble([two, three])(torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"member 1 must return .* got \['logits'\]"):
        ProbabilityEnsemble([two, _Constant({"logits": torch.zeros(1, 2)})])(torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"member 0 returned probabilities of shape \(2,\)"):
        ProbabilityEnsemble([_Constant(torch.ones(2) / 2)])(torch.zeros(1, 1))


def test_fold_ensemble_averages_two_checkpoints(tmp_path, caplog):
    networks, paths = _fold_models(tmp_path)
    with caplog.at_level(logging.WARNING, logger="custom_components.ife.ensemble"):
        ensemble = load_fold_ensemble(paths, MultiTaskIFEResNet(channels=TINY), "cpu")
    # one warning names both uncalibrated members
    warnings = [r.getMessage() for r in caplog.records if "calibration" in r.getMessage()]
    assert len(warnings) == 1 and all(p in warnings[0] for p in paths)
    assert not ensemble.training and not ensemble.calibrated
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ensemble(x)
        heads = [n.forward_heads(x) for n in networks]
    expected = (heads[0]["probabilities"] + heads[1]["probabilities"]) / 2
    assert out["probabilities"].shape == (2, 9)
    assert torch.allclose(out["probabilities"], expected, atol=1e-6)
    assert torch.allclose(out["probabilities"].sum(dim=1), torch.ones(2), atol=1e-5)
    # the two members differ (different seeds), so the mean is neither of them
    assert not torch.allclose(heads[0]["probabilities"], heads[1]["probabilities"], atol=1e-4)
    for key in ("attention_severe", "attention_mild", "attention_shared"):
        assert torch.allclose(out[key], (heads[0][key] + heads[1][key]) / 2, atol=1e-6)


def test_fold_ensemble_applies_each_members_temperatures(tmp_path):
    networks, paths = _fold_models(tmp_path)
    temperatures = [{"severe": 2.0, "mild": 0.5}, {"severe": 1.5, "mild": 3.0}]
    for path, t in zip(paths, temperatures):
        write_calibration(path, {"temperatures": t, "operating_point": None})
    ensemble = load_fold_ensemble(paths, MultiTaskIFEResNet(channels=TINY), "cpu")
    assert ensemble.calibrated  # every member has a current record
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = ensemble(x)["probabilities"]
        expected = []
        for network, t in zip(networks, temperatures):  # by hand: each head's logits over its temperature, fused
            heads = network.forward_heads(x)
            severe = torch.softmax(heads["severe_logits"] / t["severe"], dim=1)
            mild = torch.softmax(heads["mild_logits"] / t["mild"], dim=1)
            expected.append(fuse_subtask_probabilities(severe, mild))
        untempered = (networks[0](x) + networks[1](x)) / 2
    assert torch.allclose(out, (expected[0] + expected[1]) / 2, atol=1e-6)
    assert not torch.allclose(out, untempered, atol=1e-4)


def test_fold_ensemble_is_calibrated_only_when_every_member_is(tmp_path, caplog):
    _, paths = _fold_models(tmp_path)
    write_calibration(paths[0], {"temperatures": {"severe": 2.0, "mild": 0.5}})
    with caplog.at_level(logging.WARNING, logger="custom_components.ife.ensemble"):
        ensemble = load_fold_ensemble(paths, MultiTaskIFEResNet(channels=TINY), "cpu")
    assert not ensemble.calibrated
    assert any(paths[1] in r.getMessage() and paths[0] not in r.getMessage() for r in caplog.records)
    # a stale record (the weights replaced since) counts as none
    write_calibration(paths[1], {"temperatures": {"severe": 1.5, "mild": 3.0}})
    torch.save(MultiTaskIFEResNet(channels=TINY).state_dict(), paths[1])
    assert not load_fold_ensemble(paths, MultiTaskIFEResNet(channels=TINY), "cpu").calibrated
    write_calibration(paths[1], {"temperatures": {"severe": 1.5, "mild": 3.0}})
    assert load_fold_ensemble(paths, MultiTaskIFEResNet(channels=TINY), "cpu").calibrated
    assert not ProbabilityEnsemble([_Constant(torch.ones(1, 2) / 2)]).calibrated


def test_fold_recipes_refuse_a_member_of_another_lane_layout(tmp_path, caplog):
    networks, paths = _fold_models(tmp_path)
    for network, path, lane_layout in zip(networks, paths, (False, True)):
        write_recipe(path, {"image_size": 64, "lane_layout": lane_layout}, network)
    settings = {"image_size": 64, "lane_layout": False}  # the first member's recipe, as the ensemble's config reads it
    with pytest.raises(RecipeMismatchError, match=f"{paths[1]} was trained with lane_layout=True"):
        check_fold_recipes(paths, settings, networks[0], geometry_keys=("image_size", "lane_layout"))
    with caplog.at_level(logging.WARNING):  # check_recipe's default geometry keys: only a warning
        check_fold_recipes(paths, settings, networks[0])
    assert any("lane_layout" in r.getMessage() for r in caplog.records)
    with pytest.raises(RecipeMismatchError, match=f"{paths[0]} was trained with image_size=64"):
        check_fold_recipes(paths, {"image_size": 32}, networks[0], geometry_keys=("image_size", "lane_layout"))


def test_a_checkpoint_that_does_not_fit_is_named(tmp_path):
    _, good = _fold_models(tmp_path / "good", seeds=(0,))
    _, wide = _fold_models(tmp_path / "wide", seeds=(1,), channels=(4, 8, 16, 64))
    with pytest.raises(CheckpointMismatchError) as err:
        load_fold_ensemble([*good, *wide], MultiTaskIFEResNet(channels=TINY), "cpu")
    message = str(err.value)
    assert message.startswith(f"{wide[0]} does not fit the network the ensemble's config builds")
    assert "checkpoint (64," in message and "network (32," in message
    with pytest.raises(ValueError, match="not found: .*missing.pt"):
        load_fold_ensemble([*good, str(tmp_path / "missing.pt")], MultiTaskIFEResNet(channels=TINY), "cpu")
    with pytest.raises(ValueError, match="at least one checkpoint"):
        load_fold_ensemble([], MultiTaskIFEResNet(channels=TINY), "cpu")


def test_fold_checkpoints_from_the_record_or_the_fold_folders(tmp_path):
    root = tmp_path / "ensemble"
    for k in (0, 2, 10):
        (root / f"fold_{k}" / "models").mkdir(parents=True)
        (root / f"fold_{k}" / "models" / "model.pt").write_bytes(b"")
    # no record: every fold_*/models/model.pt, by fold number (fold_10 after fold_2)
    assert fold_checkpoints(root) == [str(root / f"fold_{k}" / "models" / "model.pt") for k in (0, 2, 10)]
    assert ensemble_operating_point(root) is None
    point = {"positive_threshold": 0.3, "confidence_threshold": 0.9}
    record = {"checkpoints": ["fold_2/models/model.pt", "fold_0/models/model.pt"], "operating_point": point}
    (root / "ensemble.json").write_text(json.dumps(record))
    moved = tmp_path / "moved"
    root.rename(moved)  # paths in the record are relative to its folder: the folder moves whole
    assert fold_checkpoints(moved) == [str(moved / f"fold_{k}" / "models" / "model.pt") for k in (2, 0)]
    assert ensemble_operating_point(moved) == point
    record["checkpoints"].append("fold_7/models/model.pt")
    (moved / "ensemble.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match="lists missing checkpoints: .*fold_7"):
        fold_checkpoints(moved)
    (moved / "ensemble.json").write_text("[]")
    with pytest.raises(ValueError, match="must be an object with a 'checkpoints' list"):
        fold_checkpoints(moved)
    with pytest.raises(ValueError, match=f"no ensemble in {tmp_path / 'empty'}"):
        fold_checkpoints(tmp_path / "empty")
