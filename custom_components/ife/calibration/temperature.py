# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Calibration of class probabilities: expected calibration error, reliability bins, temperature scaling.

- :func:`expected_calibration_error` is the *top-label* ECE of Guo et al. (2017): the confidence of a prediction is
  its largest probability, a prediction is correct when that class is the label, samples are grouped in
  ``n_bins`` equal-width confidence bins over [0, 1] (left edge included, 1.0 in the last bin) and
  ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|``. The binning is MONAI's
  :func:`monai.metrics.calibration_binning` applied to the (confidence, correct) pairs; MONAI's
  ``CalibrationErrorMetric`` itself is per class and channel (segmentation), not top-label, hence this thin layer.
- :func:`fit_temperature` is temperature scaling (Guo et al. 2017): one scalar ``T > 0`` that minimises the negative
  log-likelihood of ``softmax(logits / T)`` on held-out data. It leaves the argmax unchanged, so the class calls
  and every accuracy-type metric stay as they are. MONAI 1.6.1 has no temperature scaling (its ``calibration``
  module only measures), so it is written here: an LBFGS minimisation over ``log T`` (``T > 0`` by construction).
- :func:`temper_probabilities` applies head temperatures to probabilities alone (the multi-task fused 9-class
  probabilities determine both heads' softmaxes, :func:`custom_components.ife.classes.heads_from_probabilities`),
  for ONNX outputs and for reports of an evaluator that only kept the probabilities.

Reference: C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from monai.metrics import calibration_binning

from custom_components.ife.classes import fuse_subtask_probabilities, heads_from_probabilities

__all__ = [
    "expected_calibration_error",
    "reliability_bins",
    "negative_log_likelihood",
    "fit_temperature",
    "temper_probabilities",
    "TemperedOutput",
]

logger = logging.getLogger(__name__)

#: the temperature search is kept within [1/_MAX_T, _MAX_T]: a degenerate fitting set (all correct, or all wrong)
#: would otherwise drive T to 0 or infinity
_MAX_T = 100.0


def _as_probabilities_and_labels(
    probabilities: Any, labels: Any, what: str = "probabilities"
) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probabilities).detach().to("cpu", torch.float64)
    target = torch.as_tensor(labels).detach().to("cpu").reshape(-1)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"{what} must have shape (N, K) with K >= 2, got {tuple(probs.shape)}.")
    if target.numel() != probs.shape[0]:
        raise ValueError(
            f"labels must hold one class index per row of {what}: {target.numel()} labels for shape "
            f"{tuple(probs.shape)}."
        )
    if target.is_floating_point():
        if not torch.equal(target, target.round()):
            raise ValueError(f"labels must be integral class indices, got {target.tolist()[:5]}...")
    target = target.long()
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= probs.shape[1]):
        raise ValueError(
            f"labels must be class indices in [0, {probs.shape[1] - 1}], got range "
            f"[{int(target.min())}, {int(target.max())}]."
        )
    return probs, target


def _check_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")


def reliability_bins(probabilities: Any, labels: Any, n_bins: int = 15) -> dict[str, list]:
    """Per-bin statistics of the top-label confidence, for ECE and reliability diagrams.

    Args:
        probabilities: (N, K) class probabilities (rows sum to 1).
        labels: (N,) class indices.
        n_bins: number of equal-width confidence bins over [0, 1].

    Returns:
        ``{"edges": n_bins + 1 floats, "confidence": mean confidence per bin, "accuracy": share correct per bin,
        "count": samples per bin}``; empty bins have ``None`` confidence and accuracy.

    Raises:
        ValueError: on bad shapes, labels outside ``[0, K)`` or a bad ``n_bins``.
    """
    _check_bins(n_bins)
    probs, target = _as_probabilities_and_labels(probabilities, labels)
    confidence, call = probs.max(dim=1)
    correct = (call == target).to(torch.float64)
    if confidence.numel() == 0:
        mean_p = mean_acc = torch.full((n_bins,), float("nan"))
        counts = torch.zeros(n_bins)
    else:
        # MONAI bins (B, C, spatial) tensors; one "image" with one channel holding the N (confidence, correct) pairs
        binned = calibration_binning(confidence.view(1, 1, -1), correct.view(1, 1, -1), num_bins=n_bins)
        mean_p, mean_acc, counts = (t[0, 0] for t in binned)
    edges = torch.linspace(0.0, 1.0, n_bins + 1).tolist()

    def _plain(values: torch.Tensor) -> list:
        return [None if math.isnan(v) else float(v) for v in values.tolist()]

    counts_list = [int(c) for c in counts.tolist()]
    return {"edges": edges, "confidence": _plain(mean_p), "accuracy": _plain(mean_acc), "count": counts_list}


def expected_calibration_error(probabilities: Any, labels: Any, n_bins: int = 15) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (see the module docstring).

    Args:
        probabilities: (N, K) class probabilities.
        labels: (N,) class indices.
        n_bins: number of equal-width confidence bins over [0, 1].

    Returns:
        ECE in [0, 1].

    Raises:
        ValueError: on bad shapes or labels, or N = 0 (ECE is undefined without samples).
    """
    bins = reliability_bins(probabilities, labels, n_bins)
    total = sum(bins["count"])
    if total == 0:
        raise ValueError("expected_calibration_error needs at least one sample, got N = 0.")
    return float(
        sum(n * abs(a - c) for n, a, c in zip(bins["count"], bins["accuracy"], bins["confidence"]) if n) / total
    )


def negative_log_likelihood(probabilities: Any, labels: Any) -> float:
    """Mean ``-log p[label]`` (probabilities clamped at 1e-12 so that a confident mistake stays finite).

    Raises:
        ValueError: on bad shapes or labels, or N = 0.
    """
    probs, target = _as_probabilities_and_labels(probabilities, labels)
    if target.numel() == 0:
        raise ValueError("negative_log_likelihood needs at least one sample, got N = 0.")
    return float(-probs.gather(1, target.view(-1, 1)).clamp_min(1e-12).log().mean())


def fit_temperature(logits: Any, labels: Any, max_iter: int = 100, lr: float = 0.1) -> float:
    """Temperature ``T`` minimising the NLL of ``softmax(logits / T)`` (temperature scaling, Guo et al. 2017).

    Minimises over ``log T`` with :class:`torch.optim.LBFGS` in float64 (``T > 0`` by construction), within
    ``[0.01, 100]``.

    Args:
        logits: (N, K) logits (or log-probabilities: the same softmax).
        labels: (N,) class indices.
        max_iter: LBFGS iterations.
        lr: LBFGS step size.

    Returns:
        the fitted temperature; ``1.0`` with a warning when the labels hold fewer than two classes or every sample is
        classified correctly (the NLL then falls without bound as ``T`` goes to 0, so there is nothing to fit: a
        small well-trained validation set easily has no error).

    Raises:
        ValueError: on bad shapes or labels, N = 0, or non-finite logits.
    """
    x, target = _as_probabilities_and_labels(logits, labels, "logits")
    if target.numel() == 0:
        raise ValueError("fit_temperature needs at least one sample, got N = 0.")
    if not torch.isfinite(x).all():
        raise ValueError("fit_temperature needs finite logits, got inf or NaN.")
    if int(target.unique().numel()) < 2:
        logger.warning("fit_temperature: the %d labels hold a single class; keeping T = 1.", target.numel())
        return 1.0
    if bool((x.argmax(dim=1) == target).all()):
        # every call right: the NLL keeps falling as T -> 0, so the "fit" would only be the search bound, a model
        # made as sharp as it can be on the strength of a set that shows no error at all
        logger.warning(
            "fit_temperature: all %d samples are classified correctly, the NLL has no minimum (T -> 0); keeping T = 1.",
            target.numel(),
        )
        return 1.0
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=lr, max_iter=max_iter, line_search_fn="strong_wolfe")
    bound = math.log(_MAX_T)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x / log_t.clamp(-bound, bound).exp(), target)
        loss.backward()
        return loss

    optimizer.step(closure)
    return float(log_t.detach().clamp(-bound, bound).exp())


def _check_temperature(name: str, value: Any) -> float:
    t = float(value)
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"temperature {name!r} must be a finite number > 0, got {value!r}.")
    return t


def temper_probabilities(probabilities: Any, temperatures: Mapping[str, float] | None) -> torch.Tensor:
    """Apply head temperatures to probabilities (no logits needed).

    ``softmax(log p / T)`` equals ``softmax(logits / T)`` because ``log p`` is the logits up to a per-row constant.
    With ``{"severe": Ts, "mild": Tm}`` the (B, 9) fused probabilities are split into the two heads' softmaxes
    (:func:`~custom_components.ife.classes.heads_from_probabilities`), each is tempered, and they are fused again:
    the result equals tempering the network's head logits, up to float precision (when ``P(Negative)`` is so close
    to 1 that the positive classes underflow, the severe head is lost, and it does not matter). With
    ``{"classes": T}`` the (B, K) probabilities are tempered directly. None or ``{}`` returns them unchanged.

    Args:
        probabilities: (B, 9) fused multi-task or (B, K) single-head probabilities.
        temperatures: ``{"severe", "mild"}`` or ``{"classes"}`` temperatures, or None.

    Returns:
        (B, K) tensor on the input's device and dtype (float32 for non-float inputs).

    Raises:
        ValueError: on unknown keys, a temperature <= 0, or a shape that does not fit them.
    """
    probs = torch.as_tensor(probabilities)
    if not probs.is_floating_point():
        probs = probs.float()
    if not temperatures:
        return probs
    keys = set(temperatures)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must have shape (B, K), got {tuple(probs.shape)}.")
    tiny = torch.finfo(probs.dtype).tiny
    if keys == {"classes"}:
        t = _check_temperature("classes", temperatures["classes"])
        return torch.softmax(probs.clamp_min(tiny).log() / t, dim=1)
    if keys == {"severe", "mild"}:
        ts, tm = (_check_temperature(k, temperatures[k]) for k in ("severe", "mild"))
        heads = heads_from_probabilities(probs)
        severe = torch.softmax(heads["severe_logits"] / ts, dim=1)
        mild = torch.softmax(heads["mild_logits"] / tm, dim=1)
        return fuse_subtask_probabilities(severe, mild)
    raise ValueError(f"temperatures must have the keys {{'severe', 'mild'}} or {{'classes'}}, got {sorted(keys)}.")


class TemperedOutput:
    """Callable that temperature-scales a probabilities-only network output (an ONNX export), for
    ``OnnxRuntimeNetwork(output_transform=...)``.

    Args:
        temperatures: as for :func:`temper_probabilities`; None or ``{}`` leaves the probabilities as they are.
        heads: return :func:`~custom_components.ife.classes.heads_from_probabilities` of the tempered (B, 9)
            probabilities (the multi-task bundle's head dict) instead of the probabilities.

    Raises:
        ValueError: on bad temperatures (checked here, not at the first batch).
    """

    def __init__(self, temperatures: Mapping[str, float] | None = None, heads: bool = False) -> None:
        self.temperatures = dict(temperatures or {})
        temper_probabilities(torch.full((1, 9), 1.0 / 9), self.temperatures)  # checks keys and values
        self.heads = bool(heads)

    def __call__(self, output: Any) -> Any:
        """``output``: (B, K) probabilities or a dict holding them under ``probabilities``."""
        if isinstance(output, Mapping):
            result = dict(output)
            result["probabilities"] = temper_probabilities(output["probabilities"], self.temperatures)
            return heads_from_probabilities(result["probabilities"]) if self.heads else result
        probs = temper_probabilities(output, self.temperatures)
        return heads_from_probabilities(probs) if self.heads else probs
