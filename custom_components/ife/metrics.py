# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Evaluation metrics of the IFE paper (Shi et al., MICCAI 2023, Sect. 3): accuracy, macro F1, false-negative
rate, M1-Acc, M3-Acc, per-class recall and the confusion matrix.

All metrics derive from one C x C confusion matrix (rows = truth, columns = prediction, class order
``IFE_CLASSES``), so they are consistent with each other and cheap to gather across DDP ranks.

Definitions (where the paper is silent, the choice is stated):

- accuracy: trace / total.
- macro F1: unweighted mean of the per-class F1 ``2 TP / (2 TP + FP + FN)`` over the classes present in the
  truth OR in the predictions (scikit-learn's ``average="macro"``, which the authors' code reports). A class
  absent from both has no defined F1 and is skipped; a class only predicted counts with F1 = 0.
- FNR: positives (truth != Negative) predicted Negative / all positives (the authors' ``compute_fnr``). A
  positive called with the wrong positive class is an error but not a false negative.
- per-class recall: TP / (number of true samples of that class); NaN for a class with no true sample.
- M1-Acc / M3-Acc: "top-1 / top-3 minor class accuracy"; the paper does not define them further. Here: the
  mean recall of the 1 / 3 rarest classes of the TRAINING split (``minority_classes``, rarest first), taken
  over those of them that occur in the evaluated truth; NaN when none does. Without a training list the
  rarest classes of the evaluated truth are used instead (a fallback: the paper's definition needs the
  training counts, see :func:`minority_classes_from_labels`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import StrEnum, look_up_option

from custom_components.ife.classes import IFE_CLASSES, NEGATIVE_INDEX, class_index, target_to_indices

__all__ = [
    "IFEMetricName",
    "confusion_matrix",
    "accuracy",
    "per_class_recall",
    "macro_f1",
    "false_negative_rate",
    "minority_accuracy",
    "minority_classes_from_labels",
    "compute_ife_metrics",
    "IFEClassificationMetric",
]

_NUM_CLASSES = len(IFE_CLASSES)


class IFEMetricName(StrEnum):
    """Names accepted by :class:`IFEClassificationMetric` (``metric_name``) and keys of its report."""

    ACCURACY = "accuracy"
    MACRO_F1 = "macro_f1"
    FNR = "fnr"
    M1_ACC = "m1_acc"
    M3_ACC = "m3_acc"


def _check_cm(cm: torch.Tensor | np.ndarray) -> torch.Tensor:
    cm = torch.as_tensor(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"confusion matrix must be square (C, C), got shape {tuple(cm.shape)}.")
    if cm.is_floating_point() and not torch.equal(cm, cm.round()):
        raise ValueError("confusion matrix must hold counts (integers).")
    if bool((cm < 0).any()):
        raise ValueError("confusion matrix must hold non-negative counts.")
    return cm.to(torch.float64)


def confusion_matrix(
    y_true: torch.Tensor | Sequence[int], y_pred: torch.Tensor | Sequence[int], num_classes: int = _NUM_CLASSES
) -> torch.Tensor:
    """Count (truth, prediction) pairs.

    Args:
        y_true: (N,) true class indices.
        y_pred: (N,) predicted class indices.
        num_classes: C.

    Returns:
        (C, C) int64 tensor, rows = truth, columns = prediction.

    Raises:
        ValueError: on different lengths or an index outside ``0..C-1``.
    """
    y_true = torch.as_tensor(y_true).reshape(-1).long().cpu()
    y_pred = torch.as_tensor(y_pred).reshape(-1).long().cpu()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred must have the same length, got {y_true.numel()} and {y_pred.numel()}.")
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(f"{name} holds indices outside [0, {num_classes - 1}]: {sorted(set(values.tolist()))}.")
    flat = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def accuracy(cm: torch.Tensor | np.ndarray) -> float:
    """Fraction of correct calls, ``trace / total``; NaN for an empty matrix."""
    cm = _check_cm(cm)
    total = float(cm.sum())
    return float(cm.trace()) / total if total > 0 else math.nan


def per_class_recall(cm: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Recall of each class, (C,) float64; NaN where the class has no true sample."""
    cm = _check_cm(cm)
    support = cm.sum(dim=1)
    recall = torch.full_like(support, math.nan)
    present = support > 0
    recall[present] = cm.diagonal()[present] / support[present]
    return recall


def macro_f1(cm: torch.Tensor | np.ndarray) -> float:
    """Unweighted mean F1 over the classes present in the truth or the predictions; NaN for an empty matrix."""
    cm = _check_cm(cm)
    tp = cm.diagonal()
    denominator = 2 * tp + (cm.sum(dim=0) - tp) + (cm.sum(dim=1) - tp)  # 2 TP + FP + FN
    seen = denominator > 0
    if not bool(seen.any()):
        return math.nan
    return float((2 * tp[seen] / denominator[seen]).mean())


def false_negative_rate(cm: torch.Tensor | np.ndarray, negative_index: int = NEGATIVE_INDEX) -> float:
    """Positives called Negative / all positives (rows != ``negative_index``); NaN without positives."""
    cm = _check_cm(cm)
    if not 0 <= negative_index < cm.shape[0]:
        raise ValueError(f"negative_index must be in [0, {cm.shape[0] - 1}], got {negative_index}.")
    positive_rows = [i for i in range(cm.shape[0]) if i != negative_index]
    positives = float(cm[positive_rows].sum())
    return float(cm[positive_rows, negative_index].sum()) / positives if positives > 0 else math.nan


def _class_indices(classes: Iterable[int | str], what: str) -> list[int]:
    out = []
    for c in classes:
        if isinstance(c, str):
            out.append(class_index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= int(c) < _NUM_CLASSES:
            out.append(int(c))
        else:
            raise ValueError(f"{what} must hold class names or indices in [0, {_NUM_CLASSES - 1}], got {c!r}.")
    if len(set(out)) != len(out):
        raise ValueError(f"{what} must not repeat a class, got {out}.")
    return out


def minority_accuracy(cm: torch.Tensor | np.ndarray, minority_classes: Sequence[int], k: int) -> float:
    """Mean recall of the ``k`` rarest classes (``minority_classes``, rarest first) that occur in the truth.

    ``k=1`` is M1-Acc and ``k=3`` M3-Acc. Classes of the first ``k`` entries without any true sample in ``cm``
    are skipped (their recall is undefined); NaN when all are skipped.

    Args:
        cm: (C, C) confusion matrix, rows = truth.
        minority_classes: class indices, rarest first (from the training split).
        k: how many of them, >= 1.

    Returns:
        the mean recall, a float in [0, 1] or NaN.

    Raises:
        ValueError: on ``k < 1``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    recall = per_class_recall(cm)
    values = [float(recall[c]) for c in list(minority_classes)[:k] if not math.isnan(float(recall[c]))]
    return sum(values) / len(values) if values else math.nan


def minority_classes_from_labels(labels: Iterable[int | str] | torch.Tensor | np.ndarray, k: int = 3) -> list[int]:
    """The ``k`` rarest classes of a label list (the training split), rarest first.

    Only classes that occur are ranked (a class with no training sample cannot be "the rarest training class"
    in the paper's sense); ties go to the lower class index, so the result is deterministic.

    Args:
        labels: class names or 9-class indices (list, array or tensor).
        k: number of classes to return, >= 1; fewer are returned if fewer classes occur.

    Returns:
        list of class indices, rarest first.

    Raises:
        ValueError: on ``k < 1``, an unknown class name or an out-of-range index.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = torch.as_tensor(labels).reshape(-1).tolist()
    counts = [0] * _NUM_CLASSES
    for label in labels:
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        for index in _class_indices([label], "labels"):
            counts[index] += 1
    ranked = sorted((count, index) for index, count in enumerate(counts) if count > 0)
    return [index for _, index in ranked[:k]]


def _minority_from_cm(cm: torch.Tensor) -> list[int]:
    support = cm.sum(dim=1).tolist()
    return [i for _, i in sorted((s, i) for i, s in enumerate(support) if s > 0)]


def compute_ife_metrics(
    cm: torch.Tensor | np.ndarray, minority_classes: Sequence[int | str] | None = None
) -> dict[str, Any]:
    """All IFE metrics from a 9 x 9 confusion matrix.

    Args:
        cm: (9, 9) confusion matrix, rows = truth, columns = prediction.
        minority_classes: classes of the training split, rarest first (names or indices, e.g. from
            :func:`minority_classes_from_labels`); None falls back to the rarest classes of ``cm``'s truth.

    Returns:
        dict with floats ``accuracy``, ``macro_f1``, ``fnr``, ``m1_acc``, ``m3_acc`` (NaN where undefined),
        ``per_class_recall`` (9,) float64 tensor, ``confusion_matrix`` (9, 9) int64 tensor, ``support`` (9,)
        int64 tensor and ``minority_classes`` (list of indices used).

    Raises:
        ValueError: when ``cm`` is not a 9 x 9 count matrix or ``minority_classes`` is invalid.
    """
    cm_f = _check_cm(cm)
    if cm_f.shape[0] != _NUM_CLASSES:
        raise ValueError(f"confusion matrix must be {_NUM_CLASSES} x {_NUM_CLASSES}, got {tuple(cm_f.shape)}.")
    minority = (
        _minority_from_cm(cm_f) if minority_classes is None else _class_indices(minority_classes, "minority_classes")
    )
    return {
        IFEMetricName.ACCURACY.value: accuracy(cm_f),
        IFEMetricName.MACRO_F1.value: macro_f1(cm_f),
        IFEMetricName.FNR.value: false_negative_rate(cm_f),
        IFEMetricName.M1_ACC.value: minority_accuracy(cm_f, minority, 1),
        IFEMetricName.M3_ACC.value: minority_accuracy(cm_f, minority, 3),
        "per_class_recall": per_class_recall(cm_f),
        "confusion_matrix": cm_f.round().long(),
        "support": cm_f.sum(dim=1).round().long(),
        "minority_classes": minority,
    }


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def json_report(cm: torch.Tensor, minority_classes: Sequence[int] | None = None) -> dict[str, Any]:
    """The metrics of a (9, 9) confusion matrix, JSON-ready: undefined values are None, classes are named.

    Returns:
        dict with ``accuracy``, ``macro_f1``, ``fnr``, ``m1_acc``, ``m3_acc``, ``per_class_recall``
        ({class name: recall}), ``confusion_matrix`` (list of rows, rows = truth), ``support``
        ({class name: count}), ``class_names``, ``minority_classes`` (names) and ``num_samples``.
    """
    metrics = compute_ife_metrics(cm, minority_classes)
    out: dict[str, Any] = {name.value: _nan_to_none(metrics[name.value]) for name in IFEMetricName}
    out["per_class_recall"] = {
        name: _nan_to_none(float(value)) for name, value in zip(IFE_CLASSES, metrics["per_class_recall"])
    }
    out["confusion_matrix"] = metrics["confusion_matrix"].tolist()
    out["support"] = dict(zip(IFE_CLASSES, metrics["support"].tolist()))
    out["class_names"] = list(IFE_CLASSES)
    out["minority_classes"] = [IFE_CLASSES[i] for i in metrics["minority_classes"]]
    out["num_samples"] = int(metrics["support"].sum())
    return out


def _to_indices(values: torch.Tensor, name: str) -> torch.Tensor:
    """(B,), (B, 1) indices or (B, 9) one-hot -> (B,) long."""
    if values.ndim == 2 and values.shape[1] == _NUM_CLASSES:
        is_binary = bool(((values == 0) | (values == 1)).all())
        if not is_binary or not bool((values.sum(dim=1) == 1).all()):
            raise ValueError(
                f"{name} of shape (B, {_NUM_CLASSES}) must be one-hot; turn probabilities into a call first "
                "(IFECalld for the multi-task network, or AsDiscrete(argmax=True, to_onehot=9))."
            )
        return values.argmax(dim=1)
    return target_to_indices(values, name)


class IFEClassificationMetric(CumulativeIterationMetric):
    """The paper's IFE metrics as a MONAI cumulative metric (usable with ``IgniteMetricHandler``).

    Each call buffers (truth, prediction) pairs; :meth:`aggregate` builds the confusion matrix from the buffers of
    all ranks (``get_buffer`` all-gathers under DDP) and returns the metric named by ``metric_name``. The
    per-sample buffer, (N, 2) long ``[truth, prediction]``, is what ``IgniteMetricHandler(save_details=True)``
    stores in ``engine.state.metric_details``.

    In a bundle config::

        "key_metric": {"val_macro_f1": {
            "_target_": "IgniteMetricHandler",
            "metric_fn": {"_target_": "custom_components.ife.metrics.IFEClassificationMetric",
                          "metric_name": "macro_f1"},
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])"}}

    FNR is lower-is-better: set ``key_metric_negative_sign`` in checkpoint savers that select on it.

    Args:
        metric_name: which metric :meth:`aggregate` returns: ``"accuracy"``, ``"macro_f1"``, ``"fnr"``,
            ``"m1_acc"`` or ``"m3_acc"``.
        minority_classes: the training split's rarest classes, rarest first (names or indices), for M1/M3;
            None uses the rarest classes of the evaluated truth (see the module docstring).

    Raises:
        ValueError: on an unknown ``metric_name`` or invalid ``minority_classes``.
    """

    def __init__(
        self,
        metric_name: IFEMetricName | str = IFEMetricName.MACRO_F1,
        minority_classes: Sequence[int | str] | None = None,
    ) -> None:
        super().__init__()
        self.metric_name = look_up_option(metric_name, IFEMetricName).value
        self.minority_classes = (
            None if minority_classes is None else _class_indices(minority_classes, "minority_classes")
        )

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """
        Args:
            y_pred: (B,), (B, 1) class indices or (B, 9) one-hot calls (not probabilities).
            y: (B,), (B, 1) class indices or (B, 9) one-hot truth.

        Returns:
            (B, 2) long tensor ``[truth, prediction]`` per sample.

        Raises:
            ValueError: on a missing ``y``, non-one-hot (B, 9) input, bad shapes or indices.
        """
        if y is None:
            raise ValueError("IFEClassificationMetric needs the ground truth y.")
        pred = _to_indices(y_pred, "y_pred")
        truth = _to_indices(y, "y").to(pred.device)
        if truth.shape != pred.shape:
            raise ValueError(
                f"y_pred and y must hold the same number of samples, got {pred.numel()} and {truth.numel()}."
            )
        return torch.stack([truth, pred], dim=1)

    def confusion_matrix(self) -> torch.Tensor:
        """(9, 9) int64 confusion matrix of everything buffered (all ranks).

        Raises:
            ValueError: when nothing has been buffered.
        """
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor) or buffer.numel() == 0:
            raise ValueError("IFEClassificationMetric has no buffered predictions; call it on a batch first.")
        return confusion_matrix(buffer[:, 0], buffer[:, 1], _NUM_CLASSES)

    def aggregate_all(self) -> dict[str, Any]:
        """All metrics, as :func:`compute_ife_metrics` (floats with NaN where undefined, tensors)."""
        return compute_ife_metrics(self.confusion_matrix(), self.minority_classes)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        """The ``metric_name`` metric as a 0-d float32 tensor (NaN where undefined)."""
        return torch.tensor(self.aggregate_all()[self.metric_name], dtype=torch.float32)

    def report(self) -> dict[str, Any]:
        """JSON-ready version of :meth:`aggregate_all` (:func:`json_report`)."""
        return json_report(self.confusion_matrix(), self.minority_classes)
