# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Refer-to-expert rule of the IFE bundle: which gels a person should read.

Everything works on 9-class probabilities (N, 9) in :data:`~custom_components.ife.classes.IFE_CLASSES` order
(index 0 = Negative), ideally calibrated (:mod:`custom_components.ife.calibration.temperature`), and on the class call
(default: the argmax; the multi-task bundle passes its per-head call, ``IFECalld``). Two numbers make the
*operating point*, both chosen on the validation gels by :func:`choose_operating_point`:

- ``positive_threshold`` on ``P(any monoclonal protein) = 1 - p[Negative]``: the screening threshold. It is the
  largest threshold that keeps at least ``target_sensitivity`` of the validation positives at or above it.
- ``confidence_threshold`` on the call's confidence ``p[call]``: the gels below it are referred. It is chosen for a
  *coverage* (``target_coverage``, the share of gels at or above it), not for an accuracy: a lab plans the reading
  load ("a person reads the uncertain quarter"), and an accuracy target on a few hundred validation gels is
  unstable (the accuracy of the most confident gels moves in steps of one gel), whereas a coverage quantile is not.

A gel is referred (:func:`refer_decisions`) for any of these reasons, a fixed vocabulary joined by ``"; "`` in this
order when several apply:

- ``"low confidence"``: ``p[call] < confidence_threshold``;
- ``"positive call uncertain"``: the call is Negative but ``P(any) >= positive_threshold``, i.e. the screening
  threshold cannot rule out a monoclonal protein;
- ``"pattern outside the nine: <detail>"``: the gel's band-pattern detector reported something none of the nine
  classes describes (e.g. two heavy-chain bands at different heights), ``<detail>`` being its text (any ``;`` in
  it becomes ``,``);
- ``"band pattern not read: <why>"``: the detector could not find the lanes (its text starts with
  :data:`~custom_components.ife.lanes.LANES_NOT_FOUND`), so the pattern check did not run; the gel is
  referred, since a pattern outside the nine cannot be ruled out (``<why>`` is the detector's reason);
- ``"lanes not read: whole image used"``: the lane layout normalisation could not find the six lanes and the
  network saw the whole image instead (:class:`~custom_components.ife.lanes.NormaliseLaneLayoutd`'s fallback),
  a layout it may not have been trained on; the gel is referred;
- ``"not calibrated"``: no operating point exists (no calibration record); such a gel is *not* referred unless a
  band pattern or unread lanes say so, and the reason marks that no threshold was applied.

The false-negative rate at the operating point (:func:`referral_metrics`) counts the positives that are called
Negative and not referred: those are the monoclonal proteins that nobody would look at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from custom_components.ife.classes import IFE_CLASSES, NEGATIVE_INDEX
from custom_components.ife.lanes import LANES_NOT_FOUND

__all__ = [
    "REFER_REASONS",
    "LOW_CONFIDENCE",
    "POSITIVE_UNCERTAIN",
    "OUTSIDE_THE_NINE",
    "PATTERN_NOT_READ",
    "LANES_NOT_READ",
    "NOT_CALIBRATED",
    "choose_operating_point",
    "refer_decisions",
    "coverage_accuracy_curve",
    "referral_metrics",
]

LOW_CONFIDENCE = "low confidence"
POSITIVE_UNCERTAIN = "positive call uncertain"
OUTSIDE_THE_NINE = "pattern outside the nine"
PATTERN_NOT_READ = "band pattern not read"
LANES_NOT_READ = "lanes not read: whole image used"
NOT_CALIBRATED = "not calibrated"
#: the reasons, in the order they are joined
REFER_REASONS: tuple[str, ...] = (
    LOW_CONFIDENCE, POSITIVE_UNCERTAIN, OUTSIDE_THE_NINE, PATTERN_NOT_READ, LANES_NOT_READ, NOT_CALIBRATED
)  # fmt: skip
#: the reasons that carry a detail after ``": "``
_DETAILED = (OUTSIDE_THE_NINE, PATTERN_NOT_READ)


def _probabilities(probabilities: Any) -> torch.Tensor:
    probs = torch.as_tensor(probabilities).detach().to("cpu", torch.float64)
    if probs.ndim != 2 or probs.shape[1] != len(IFE_CLASSES):
        raise ValueError(f"probabilities must have shape (N, {len(IFE_CLASSES)}), got {tuple(probs.shape)}.")
    return probs


def _indices(values: Any, n: int, what: str) -> torch.Tensor:
    out = torch.as_tensor(values).detach().to("cpu").reshape(-1)
    if out.numel() != n:
        raise ValueError(f"{what} must hold one class index per gel: {out.numel()} for {n} gels.")
    out = out.long()
    if n and (int(out.min()) < 0 or int(out.max()) >= len(IFE_CLASSES)):
        raise ValueError(f"{what} must be class indices in [0, {len(IFE_CLASSES) - 1}], got {out.tolist()}.")
    return out


def _calls(probs: torch.Tensor, calls: Any | None) -> torch.Tensor:
    return probs.argmax(dim=1) if calls is None else _indices(calls, probs.shape[0], "calls")


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}.")
    return float(value)


def choose_operating_point(
    probabilities: Any,
    labels: Any,
    target_sensitivity: float = 0.98,
    target_coverage: float = 0.75,
    calls: Any | None = None,
) -> dict[str, Any]:
    """Choose the screening and confidence thresholds on (validation) gels.

    - ``positive_threshold``: with the validation positives' ``P(any)`` sorted from high to low, the value of the
      ``ceil(target_sensitivity * n_positive)``-th one: the largest ``t`` with ``share(P(any) >= t) >=
      target_sensitivity`` among the positives.
    - ``confidence_threshold``: with the confidences ``p[call]`` of all gels sorted from high to low, the value of
      the ``ceil(target_coverage * N)``-th one: the largest threshold that decides at least ``target_coverage`` of
      the gels on confidence alone (ties can decide more). The gels that the screening rule refers as well make the
      achieved coverage (reported) lower than the target.

    Args:
        probabilities: (N, 9) probabilities (calibrated, if they will be at use).
        labels: (N,) 9-class indices.
        target_sensitivity: share of positives that must reach the screening threshold, in (0, 1].
        target_coverage: share of gels to decide automatically on confidence, in (0, 1].
        calls: (N,) class calls (default: argmax).

    Returns:
        ``{"positive_threshold", "confidence_threshold", "target_sensitivity", "target_coverage",
        "screening_sensitivity"`` (share of positives with ``P(any) >= positive_threshold``), ``"coverage"``,
        ``"accuracy"`` (on the decided gels), ``"fnr"`` (at the operating point, :func:`referral_metrics`),
        ``"count"``, ``"positives"}``.

    Raises:
        ValueError: on bad shapes, targets outside (0, 1], no gels, or no positive gel (no sensitivity to aim at).
    """
    target_sensitivity = _fraction("target_sensitivity", target_sensitivity)
    target_coverage = _fraction("target_coverage", target_coverage)
    probs = _probabilities(probabilities)
    target = _indices(labels, probs.shape[0], "labels")
    if probs.shape[0] == 0:
        raise ValueError("choose_operating_point needs at least one gel, got none.")
    p_any = 1.0 - probs[:, NEGATIVE_INDEX]
    positive = target != NEGATIVE_INDEX
    n_positive = int(positive.sum())
    if n_positive == 0:
        raise ValueError(
            f"choose_operating_point needs positive gels to aim at a sensitivity, but all {probs.shape[0]} labels "
            "are Negative."
        )
    # the small slack keeps e.g. 0.98 * 50 = 49.000000000000004 from asking for 50 positives
    k = max(1, math.ceil(target_sensitivity * n_positive - 1e-9))
    positive_threshold = float(torch.sort(p_any[positive], descending=True).values[k - 1])
    confidence = probs.gather(1, _calls(probs, calls).view(-1, 1)).squeeze(1)
    m = max(1, math.ceil(target_coverage * probs.shape[0] - 1e-9))
    confidence_threshold = float(torch.sort(confidence, descending=True).values[m - 1])
    point = {"positive_threshold": positive_threshold, "confidence_threshold": confidence_threshold}
    achieved = referral_metrics(probs, target, point, calls=calls)
    return {
        **point,
        "target_sensitivity": target_sensitivity,
        "target_coverage": target_coverage,
        "screening_sensitivity": float((p_any[positive] >= positive_threshold).double().mean()),
        "coverage": achieved["coverage"],
        "accuracy": achieved["accuracy"],
        "fnr": achieved["fnr"],
        "count": int(probs.shape[0]),
        "positives": n_positive,
    }


def _thresholds(operating_point: Mapping[str, Any]) -> tuple[float, float]:
    try:
        values = float(operating_point["positive_threshold"]), float(operating_point["confidence_threshold"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(
            "operating_point must hold numbers 'positive_threshold' and 'confidence_threshold', got "
            f"{dict(operating_point)!r}."
        ) from error
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"operating_point thresholds must be finite, got {values}.")
    return values


def refer_decisions(
    probabilities: Any,
    operating_point: Mapping[str, Any] | None,
    band_patterns: Sequence[str | None] | None = None,
    calls: Any | None = None,
    lanes_read: Sequence[bool | None] | None = None,
) -> list[tuple[bool, str]]:
    """Refer-to-expert decision and reason(s) of each gel (the rule and vocabulary of the module docstring).

    Args:
        probabilities: (N, 9) probabilities.
        operating_point: a dict with ``positive_threshold`` and ``confidence_threshold``
            (:func:`choose_operating_point`); None when there is none (every reason then includes
            ``"not calibrated"`` and only a band pattern or unread lanes refer).
        band_patterns: N strings of the band-pattern detector (``""`` or None: nothing unusual; starting with
            :data:`~custom_components.ife.lanes.LANES_NOT_FOUND`: the detector failed); None: no
            detector.
        calls: (N,) class calls (default: argmax).
        lanes_read: per gel whether the lane layout normalisation found its lanes (``False``: the whole image was
            used, the gel is referred; ``None``: no normalisation); None: none for any gel.

    Returns:
        N ``(refer, reason)`` pairs; ``reason`` is ``""`` for a gel decided automatically.

    Raises:
        ValueError: on bad shapes, a malformed operating point, or ``band_patterns`` of the wrong length.
    """
    probs = _probabilities(probabilities)
    n = probs.shape[0]
    if band_patterns is not None and len(band_patterns) != n:
        raise ValueError(f"band_patterns must hold one entry per gel: {len(band_patterns)} for {n} gels.")
    if lanes_read is not None and len(lanes_read) != n:
        raise ValueError(f"lanes_read must hold one entry per gel: {len(lanes_read)} for {n} gels.")
    call = _calls(probs, calls)
    confidence = probs.gather(1, call.view(-1, 1)).squeeze(1)
    p_any = 1.0 - probs[:, NEGATIVE_INDEX]
    thresholds = None if operating_point is None else _thresholds(operating_point)
    decisions = []
    for i in range(n):
        reasons, refer = [], False
        if thresholds is not None:
            positive_threshold, confidence_threshold = thresholds
            if float(confidence[i]) < confidence_threshold:
                reasons.append(LOW_CONFIDENCE)
            if int(call[i]) == NEGATIVE_INDEX and float(p_any[i]) >= positive_threshold:
                reasons.append(POSITIVE_UNCERTAIN)
            refer = bool(reasons)
        pattern = "" if band_patterns is None or band_patterns[i] is None else str(band_patterns[i]).strip()
        pattern = pattern.replace(";", ",")  # "; " separates the reasons
        if pattern.startswith(LANES_NOT_FOUND):
            why = pattern[len(LANES_NOT_FOUND) :].lstrip(" :") or LANES_NOT_FOUND
            reasons.append(f"{PATTERN_NOT_READ}: {why}")
            refer = True
        elif pattern:
            reasons.append(f"{OUTSIDE_THE_NINE}: {pattern}")
            refer = True
        if lanes_read is not None and lanes_read[i] is not None and not bool(lanes_read[i]):
            reasons.append(LANES_NOT_READ)
            refer = True
        if thresholds is None:
            reasons.append(NOT_CALIBRATED)
        decisions.append((refer, "; ".join(reasons)))
    return decisions


def coverage_accuracy_curve(probabilities: Any, labels: Any, calls: Any | None = None) -> dict[str, Any]:
    """Coverage (share of gels decided) against accuracy on the decided gels, as the confidence threshold sweeps.

    One point per distinct confidence ``c`` (high to low): the gels with ``p[call] >= c`` are decided.

    Args:
        probabilities: (N, 9) probabilities.
        labels: (N,) 9-class indices.
        calls: (N,) class calls (default: argmax).

    Returns:
        ``{"threshold": [...], "coverage": [...], "accuracy": [...]}`` (equal lengths; coverage rises to 1, where
        the accuracy is that of all gels); empty lists for N = 0.

    Raises:
        ValueError: on bad shapes.
    """
    probs = _probabilities(probabilities)
    target = _indices(labels, probs.shape[0], "labels")
    call = _calls(probs, calls)
    confidence = probs.gather(1, call.view(-1, 1)).squeeze(1)
    order = torch.argsort(confidence, descending=True, stable=True)
    sorted_confidence = confidence[order]
    correct = torch.cumsum((call == target)[order].double(), 0)
    n = probs.shape[0]
    # the last gel of each run of tied confidences: a threshold decides all tied gels or none
    last = [i for i in range(n) if i == n - 1 or sorted_confidence[i + 1] < sorted_confidence[i]]
    return {
        "threshold": [float(sorted_confidence[i]) for i in last],
        "coverage": [(i + 1) / n for i in last],
        "accuracy": [float(correct[i]) / (i + 1) for i in last],
    }


def referral_metrics(
    probabilities: Any,
    labels: Any,
    operating_point: Mapping[str, Any] | None,
    band_patterns: Sequence[str | None] | None = None,
    calls: Any | None = None,
    lanes_read: Sequence[bool | None] | None = None,
) -> dict[str, Any]:
    """What the refer rule achieves on labelled gels.

    Args:
        probabilities: (N, 9) probabilities.
        labels: (N,) 9-class indices.
        operating_point: as for :func:`refer_decisions`.
        band_patterns: as for :func:`refer_decisions`.
        calls: (N,) class calls (default: argmax).
        lanes_read: as for :func:`refer_decisions`.

    Returns:
        ``count``, ``referred``, ``coverage`` (share not referred), ``accuracy`` (of the calls on the gels not
        referred; None when all are referred), ``positives``, ``fnr`` (positives called Negative and not referred,
        over the positives; None without positives), ``sensitivity`` (``1 - fnr``: positives called positive or
        referred), ``refer_counts`` (gels per reason; a gel with two reasons counts for both).

    Raises:
        ValueError: on bad shapes or a malformed operating point.
    """
    probs = _probabilities(probabilities)
    target = _indices(labels, probs.shape[0], "labels")
    call = _calls(probs, calls)
    decisions = refer_decisions(probs, operating_point, band_patterns, call, lanes_read)
    refer = torch.tensor([d[0] for d in decisions], dtype=torch.bool)
    n = probs.shape[0]
    decided = ~refer
    positive = target != NEGATIVE_INDEX
    missed = positive & (call == NEGATIVE_INDEX) & decided
    n_positive = int(positive.sum())
    counts = dict.fromkeys(REFER_REASONS, 0)
    for _, reason in decisions:
        for part in filter(None, reason.split("; ")):
            key = next((r for r in _DETAILED if part.startswith(r)), part)
            counts[key] += 1
    fnr = int(missed.sum()) / n_positive if n_positive else None
    return {
        "count": n,
        "referred": int(refer.sum()),
        "coverage": float(decided.double().mean()) if n else None,
        "accuracy": float((call == target)[decided].double().mean()) if int(decided.sum()) else None,
        "positives": n_positive,
        "fnr": fnr,
        "sensitivity": None if fnr is None else 1.0 - fnr,
        "refer_counts": counts,
    }
