"""Tests of custom_components.ife.calibration.temperature (ECE, reliability bins, temperature scaling) and
custom_components.ife.calibration.record (the record stored beside a checkpoint)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from custom_components.ife.calibration.record import CalibrationError, calibration_path, read_calibration, write_calibration
from custom_components.ife.classes import fuse_subtask_probabilities
from custom_components.ife.calibration.temperature import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
    reliability_bins,
    temper_probabilities,
)

# (probabilities, labels, n_bins, expected ECE), computed by hand
ECE_CASES = [
    # perfectly confident and right: ECE 0
    ([[1.0, 0.0], [0.0, 1.0]], [0, 1], 10, 0.0),
    # confidence 0.9 twice (bin 9), one right: |0.5 - 0.9| = 0.4
    ([[0.9, 0.1], [0.1, 0.9]], [0, 0], 10, 0.4),
    # bin [0.6, 0.8): conf 0.7, 0.7, both right -> |1 - 0.7| * 2/4; bin [0.8, 1.0]: conf 0.9, 0.9, none right
    # -> |0 - 0.9| * 2/4; ECE = 0.15 + 0.45 = 0.6
    ([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1], [0.1, 0.9]], [0, 1, 1, 0], 5, 0.6),
    # three classes, one bin: mean confidence (0.5 + 0.6) / 2 = 0.55, accuracy 0.5 -> 0.05
    ([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]], [0, 1], 1, 0.05),
]


@pytest.mark.parametrize("probs, labels, n_bins, expected", ECE_CASES)
def test_ece_hand_computed(probs, labels, n_bins, expected):
    assert expected_calibration_error(torch.tensor(probs), torch.tensor(labels), n_bins) == pytest.approx(expected)


def test_reliability_bins_counts_and_empty_bins():
    bins = reliability_bins(torch.tensor([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1], [0.1, 0.9]]), [0, 1, 1, 0], n_bins=5)
    assert bins["edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert bins["count"] == [0, 0, 0, 2, 2]
    assert bins["confidence"][:3] == [None, None, None] and bins["accuracy"][:3] == [None, None, None]
    assert bins["confidence"][3:] == pytest.approx([0.7, 0.9]) and bins["accuracy"][3:] == pytest.approx([1.0, 0.0])


def test_bad_inputs_raise_naming_the_value():
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error(torch.ones(3), [0, 0, 0])
    with pytest.raises(ValueError, match="one class index per row"):
        expected_calibration_error(torch.full((3, 2), 0.5), [0, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error(torch.full((2, 2), 0.5), [0, 2])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(torch.full((2, 2), 0.5), [0, 1], n_bins=0)
    with pytest.raises(ValueError, match="N = 0"):
        expected_calibration_error(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="N = 0"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(torch.tensor([[float("inf"), 0.0], [0.0, 1.0]]), [0, 1])


def _calibrated_toy(n=4000, k=4, seed=0):
    """Logits of a model calibrated by construction: the labels are drawn from softmax(logits)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=g).squeeze(1)
    return logits, labels


def test_temperature_scaling_fixes_an_over_confident_model():
    logits, labels = _calibrated_toy()
    overconfident = 5.0 * logits  # same calls, five times too sharp
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(5.0, rel=0.1)  # recovers the known temperature
    before, after = torch.softmax(overconfident, 1), torch.softmax(overconfident / t, 1)
    ece_before, ece_after = expected_calibration_error(before, labels), expected_calibration_error(after, labels)
    assert ece_after < ece_before / 3
    assert negative_log_likelihood(after, labels) < negative_log_likelihood(before, labels)
    assert torch.equal(before.argmax(1), after.argmax(1))  # a temperature never moves the call


def test_fit_temperature_recovers_an_under_confident_model_and_keeps_a_calibrated_one():
    logits, labels = _calibrated_toy(seed=1)
    assert fit_temperature(logits / 2.0, labels) == pytest.approx(0.5, rel=0.1)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.1)


def test_fit_temperature_single_class_or_no_error_warns_and_keeps_one(caplog):
    with caplog.at_level(logging.WARNING):
        assert fit_temperature(torch.randn(5, 3), [1] * 5) == 1.0
    assert "single class" in caplog.text
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]])
    with caplog.at_level(logging.WARNING):
        assert fit_temperature(logits, [0, 1, 2]) == 1.0  # all right: sharpening would never stop
    assert "no minimum" in caplog.text


def test_temper_probabilities_matches_tempered_logits():
    g = torch.Generator().manual_seed(0)
    severe, mild = torch.randn(6, 4, generator=g) * 3, torch.randn(6, 3, generator=g) * 3
    fused = fuse_subtask_probabilities(torch.softmax(severe, 1), torch.softmax(mild, 1)).double()
    expected = fuse_subtask_probabilities(torch.softmax(severe / 2.0, 1), torch.softmax(mild / 0.5, 1)).double()
    got = temper_probabilities(fused, {"severe": 2.0, "mild": 0.5})
    assert torch.allclose(got, expected, atol=1e-6)
    logits = torch.randn(6, 9, generator=g).double()
    got = temper_probabilities(torch.softmax(logits, 1), {"classes": 3.0})
    assert torch.allclose(got, torch.softmax(logits / 3.0, 1), atol=1e-9)
    assert temper_probabilities(fused, None) is not None and torch.equal(temper_probabilities(fused, {}), fused)
    with pytest.raises(ValueError, match="keys"):
        temper_probabilities(fused, {"severe": 1.0})
    with pytest.raises(ValueError, match="> 0"):
        temper_probabilities(fused, {"classes": 0.0})


def test_calibration_record_round_trip_and_stale_warning(tmp_path, caplog):
    checkpoint = tmp_path / "models" / "model.pt"
    checkpoint.parent.mkdir()
    torch.save({"w": torch.ones(2)}, checkpoint)
    assert calibration_path(checkpoint) == str(tmp_path / "models" / "model.calibration.json")
    assert read_calibration(checkpoint) is None
    path = write_calibration(checkpoint, {"temperatures": {"severe": 1.5, "mild": 0.8}, "ece_before": 0.2})
    record = read_calibration(checkpoint)
    assert record["temperatures"] == {"severe": 1.5, "mild": 0.8} and record["checkpoint"] == "model.pt"
    assert len(record["weights_sha256"]) == 64 and record["written"]
    assert json.loads(open(path).read()) == record
    with caplog.at_level(logging.WARNING):
        torch.save({"w": torch.zeros(2)}, checkpoint)  # new weights, old record
        assert read_calibration(checkpoint) is None  # fitted for other weights: ignored
    assert "stale" in caplog.text and "ignored" in caplog.text
    assert read_calibration(checkpoint, check_weights=False)["temperatures"]["mild"] == 0.8
    with pytest.raises(ValueError, match="temperatures"):
        write_calibration(checkpoint, {"temperatures": {"classes": -1.0}})
    with pytest.raises(ValueError, match="does not exist"):
        write_calibration(tmp_path / "missing.pt", {"temperatures": {"classes": 1.0}})
    (tmp_path / "models" / "model.calibration.json").write_text("{broken")
    with pytest.raises(CalibrationError, match="unreadable"):
        read_calibration(checkpoint)
