"""Tests of custom_components.ife.referral: the refer-to-expert rule on hand-made 9-class probability vectors."""

from __future__ import annotations

import pytest
import torch

from custom_components.ife.lanes import LANES_NOT_FOUND
from custom_components.ife.referral import (
    LANES_NOT_READ,
    LOW_CONFIDENCE,
    NOT_CALIBRATED,
    PATTERN_NOT_READ,
    POSITIVE_UNCERTAIN,
    choose_operating_point,
    coverage_accuracy_curve,
    refer_decisions,
    referral_metrics,
)


def _probs(negative: float, call: int | None = None, confidence: float | None = None) -> list[float]:
    """A (9,) vector with p[Negative] = ``negative``; with ``call`` > 0, ``confidence`` on that class and the rest of
    the positive mass spread evenly over the other positives."""
    p = [0.0] * 9
    p[0] = negative
    rest = 1.0 - negative
    if call:
        p[call] = confidence
        rest -= confidence
    others = [i for i in range(1, 9) if i != call]
    for i in others:
        p[i] = rest / len(others)
    return p


POINT = {"positive_threshold": 0.3, "confidence_threshold": 0.6}

# (probability vector, band pattern, expected (refer, reason)) at POINT
DECISION_CASES = [
    (_probs(0.9), "", (False, "")),  # confident Negative, P(any) = 0.1 < 0.3
    (_probs(0.05, call=3, confidence=0.9), "", (False, "")),  # confident positive
    (_probs(0.05, call=3, confidence=0.5), "", (True, LOW_CONFIDENCE)),  # positive call, p = 0.5 < 0.6
    (_probs(0.65), "", (True, POSITIVE_UNCERTAIN)),  # Negative at 0.65 >= 0.6, but P(any) = 0.35 >= 0.3
    (_probs(0.55), "", (True, f"{LOW_CONFIDENCE}; {POSITIVE_UNCERTAIN}")),  # both reasons, in the fixed order
    (_probs(0.9), "two heavy-chain bands at different heights (G, A)",
     (True, "pattern outside the nine: two heavy-chain bands at different heights (G, A)")),
    (_probs(0.05, call=3, confidence=0.5), "two light-chain bands",
     (True, f"{LOW_CONFIDENCE}; pattern outside the nine: two light-chain bands")),
    # the detector failed: not a pattern, but the check did not run, so the gel is referred for that
    (_probs(0.9), f"{LANES_NOT_FOUND}: no lanes; the image is blank",
     (True, "band pattern not read: no lanes, the image is blank")),
    (_probs(0.05, call=3, confidence=0.5), LANES_NOT_FOUND,
     (True, f"{LOW_CONFIDENCE}; band pattern not read: lanes not found")),
]  # fmt: skip


@pytest.mark.parametrize("probs, pattern, expected", DECISION_CASES)
def test_refer_rule_reasons(probs, pattern, expected):
    assert refer_decisions(torch.tensor([probs]), POINT, [pattern]) == [expected]


def test_refer_rule_without_operating_point_or_detector():
    probs = torch.tensor([_probs(0.55), _probs(0.9)])
    assert refer_decisions(probs, None) == [(False, NOT_CALIBRATED)] * 2
    assert refer_decisions(probs, None, ["", "two light-chain bands"]) == [
        (False, NOT_CALIBRATED),
        (True, f"pattern outside the nine: two light-chain bands; {NOT_CALIBRATED}"),
    ]
    assert refer_decisions(probs, POINT, None)[0] == (True, f"{LOW_CONFIDENCE}; {POSITIVE_UNCERTAIN}")


def test_refer_rule_uses_the_given_calls():
    # argmax is Negative (0.4), but the given call is class 1 with 0.3 < 0.6: low confidence, no screening reason
    probs = torch.tensor([[0.4, 0.3, 0.3, 0, 0, 0, 0, 0, 0]])
    assert refer_decisions(probs, POINT, calls=[1]) == [(True, LOW_CONFIDENCE)]
    assert refer_decisions(probs, POINT) == [(True, f"{LOW_CONFIDENCE}; {POSITIVE_UNCERTAIN}")]


def test_refer_rule_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 9\)"):
        refer_decisions(torch.ones(2, 4), POINT)
    with pytest.raises(ValueError, match="positive_threshold"):
        refer_decisions(torch.tensor([_probs(0.5)]), {"confidence_threshold": 0.5})
    with pytest.raises(ValueError, match="one entry per gel"):
        refer_decisions(torch.tensor([_probs(0.5)]), POINT, ["", ""])


def test_operating_point_reaches_the_target_sensitivity():
    # 10 positives with P(any) = 0.95, 0.9, ..., 0.5; 0.8 sensitivity needs the 8th largest: 0.6
    p_any = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
    positives = [_probs(1 - a, call=1, confidence=0.9 * a) for a in p_any]
    negatives = [_probs(0.98), _probs(0.9)]
    probs, labels = torch.tensor(positives + negatives), torch.tensor([1] * 10 + [0, 0])
    point = choose_operating_point(probs, labels, target_sensitivity=0.8, target_coverage=0.5)
    assert point["positive_threshold"] == pytest.approx(0.6)
    assert point["screening_sensitivity"] == pytest.approx(0.8)
    # the larger the target, the lower the threshold, never above the least-detected positive's share
    assert choose_operating_point(probs, labels, target_sensitivity=1.0)["positive_threshold"] == pytest.approx(0.5)
    # confidence threshold: the 6th largest of 12 confidences; at least half decided on confidence
    confidence = probs.max(dim=1).values
    assert point["confidence_threshold"] == pytest.approx(float(confidence.sort(descending=True).values[5]))
    assert (confidence >= point["confidence_threshold"]).double().mean() >= 0.5
    assert point["count"] == 12 and point["positives"] == 10
    assert point["target_sensitivity"] == 0.8 and point["target_coverage"] == 0.5


def test_operating_point_errors():
    with pytest.raises(ValueError, match="all 2 labels are Negative"):
        choose_operating_point(torch.tensor([_probs(0.9), _probs(0.8)]), [0, 0])
    with pytest.raises(ValueError, match="target_sensitivity"):
        choose_operating_point(torch.tensor([_probs(0.9)]), [1], target_sensitivity=1.5)
    with pytest.raises(ValueError, match="target_coverage"):
        choose_operating_point(torch.tensor([_probs(0.9)]), [1], target_coverage=0)


def test_referral_metrics_count_false_negatives_and_reasons():
    probs = torch.tensor([
        _probs(0.9),  # truth 2, called Negative confidently, not referred: a false negative
        _probs(0.55),  # truth 3, called Negative, referred (both reasons): not a false negative
        _probs(0.05, call=3, confidence=0.9),  # truth 3, right, decided
        _probs(0.05, call=3, confidence=0.5),  # truth 4, wrong, referred (low confidence)
        _probs(0.9),  # truth 0, right, decided
    ])  # fmt: skip
    labels = torch.tensor([2, 3, 3, 4, 0])
    m = referral_metrics(probs, labels, POINT, ["", f"{LANES_NOT_FOUND}: no lanes", "", "", "two light-chain bands"])
    assert m["count"] == 5 and m["referred"] == 3 and m["coverage"] == pytest.approx(0.4)
    assert m["accuracy"] == pytest.approx(0.5)  # decided: gel 0 (wrong) and gel 2 (right); gel 4 has a pattern
    assert m["positives"] == 4 and m["fnr"] == pytest.approx(0.25) and m["sensitivity"] == pytest.approx(0.75)
    expected_counts = {LOW_CONFIDENCE: 2, POSITIVE_UNCERTAIN: 1, "pattern outside the nine": 1,
                       PATTERN_NOT_READ: 1, LANES_NOT_READ: 0, NOT_CALIBRATED: 0}  # fmt: skip
    assert m["refer_counts"] == expected_counts


def test_coverage_accuracy_curve_groups_ties():
    probs = torch.tensor([_probs(0.05, call=1, confidence=c) for c in (0.9, 0.8, 0.8, 0.5)])
    curve = coverage_accuracy_curve(probs, [1, 1, 2, 2])
    assert curve["threshold"] == pytest.approx([0.9, 0.8, 0.5])
    assert curve["coverage"] == pytest.approx([0.25, 0.75, 1.0])
    assert curve["accuracy"] == pytest.approx([1.0, 2 / 3, 0.5])
    assert coverage_accuracy_curve(torch.zeros(0, 9), torch.zeros(0, dtype=torch.long)) == {
        "threshold": [], "coverage": [], "accuracy": []
    }  # fmt: skip
