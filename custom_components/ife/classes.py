# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Label algebra of the multi-task IFE classifier (Shi et al., MICCAI 2023).

The nine IFE classes are combinations of a *severe* call (heavy chain: ``None``, ``G``, ``A``, ``M``) and
a *mild* call (light chain: ``None``, ``kappa``, ``lambda``). This module converts between the 9-class
index and the two sub-task indices, fuses the two heads' probabilities into 9-class probabilities, recovers
the paper's per-head argmax call from them. Pure functions of numbers and tensors: networks, losses and metrics
import this module without pulling in MONAI's transforms.

Index layout (``IFE_CLASSES`` order)::

    0 Negative     = (None, None)       and every (G|A|M, None): see "Negative rule" below
    1 kappa        = (None, kappa)      2 lambda      = (None, lambda)
    3 IgG-kappa    = (G, kappa)         4 IgG-lambda  = (G, lambda)
    5 IgA-kappa    = (A, kappa)         6 IgA-lambda  = (A, lambda)
    7 IgM-kappa    = (M, kappa)         8 IgM-lambda  = (M, lambda)

so ``index = 2 * severe + mild`` whenever ``mild != None``.

Negative rule: a heavy-chain call with no light-chain call (severe in G/A/M, mild None) is not one of the
nine classes. As in the authors' published code, such a sample is called ``Negative`` whatever the severe
head says: the mild (light-chain) head alone decides positive versus negative.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "IFE_CLASSES",
    "SEVERE_CLASSES",
    "MILD_CLASSES",
    "NEGATIVE_INDEX",
    "class_index",
    "label_to_index",
    "class_to_subtasks",
    "target_to_indices",
    "split_target",
    "is_severe_and_mild",
    "fuse_subtask_probabilities",
    "call_from_probabilities",
    "heads_from_probabilities",
]

IFE_CLASSES: tuple[str, ...] = (
    "Negative",
    "kappa",
    "lambda",
    "IgG-kappa",
    "IgG-lambda",
    "IgA-kappa",
    "IgA-lambda",
    "IgM-kappa",
    "IgM-lambda",
)
SEVERE_CLASSES: tuple[str, ...] = ("None", "G", "A", "M")
MILD_CLASSES: tuple[str, ...] = ("None", "kappa", "lambda")
NEGATIVE_INDEX = 0

_NUM_CLASSES = len(IFE_CLASSES)
_NUM_SEVERE = len(SEVERE_CLASSES)
# (severe, mild) of each 9-class index; the table is the single source of truth for the tensor helpers.
_CLASS_TO_SUBTASKS: tuple[tuple[int, int], ...] = ((0, 0),) + tuple(
    (severe, mild) for severe in range(_NUM_SEVERE) for mild in (1, 2)
)


def _check_index(value: int, upper: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be an integer, got {value!r} ({type(value).__name__}).")
    if not 0 <= int(value) < upper:
        raise ValueError(f"{what} must be in [0, {upper - 1}], got {value}.")
    return int(value)


def class_index(name: str) -> int:
    """Return the 9-class index of an IFE class name.

    Args:
        name: one of :data:`IFE_CLASSES` (exact spelling, e.g. ``"IgG-kappa"``).

    Returns:
        the index in ``0..8``.

    Raises:
        ValueError: when ``name`` is not one of the nine class names; the message lists them.
    """
    try:
        return IFE_CLASSES.index(name)
    except ValueError:
        raise ValueError(f"unknown IFE class name {name!r}; valid names are {list(IFE_CLASSES)}.") from None


def label_to_index(label: str | int) -> np.int64:
    """The 9-class index of a datalist label: a class name (``"IgG-kappa"``) or an index in ``0..8``.

    What the bundles map over the ``label`` key (``Lambdad``); datalists are checked before training, so an
    unknown label there stops start-up with the file named, and this error only guards other callers.

    Raises:
        ValueError: on an unknown class name (the message lists the valid ones) or an out-of-range index.
    """
    if isinstance(label, str):
        return np.int64(class_index(label))
    return np.int64(_check_index(label, _NUM_CLASSES, "class index"))


def class_to_subtasks(index: int) -> tuple[int, int]:
    """Split a 9-class index into its (severe, mild) sub-task indices.

    Args:
        index: 9-class index in ``0..8``.

    Returns:
        ``(severe, mild)`` with severe in ``0..3`` (None/G/A/M) and mild in ``0..2`` (None/kappa/lambda).

    Raises:
        ValueError: when ``index`` is not an integer in ``0..8``.
    """
    return _CLASS_TO_SUBTASKS[_check_index(index, _NUM_CLASSES, "class index")]


def target_to_indices(target: torch.Tensor, name: str = "target") -> torch.Tensor:
    """Validate a batch of 9-class indices as MONAI loaders give them and return them as (B,) long.

    Args:
        target: shape (B,) or (B, 1), integer or integral float, values in ``0..8``.
        name: what the tensor is, for error messages (``"target"``, ``"y_pred"``).

    Returns:
        (B,) long tensor on the target's device.

    Raises:
        ValueError: on a bad shape; for a tensor on the CPU also on a non-integral value or an index outside
            ``0..8`` (values on a GPU are not read back: see the comment below).
    """
    if not isinstance(target, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(target).__name__}.")
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1) of 9-class indices, got {tuple(target.shape)}.")
    # the value checks read the target on the host: done for host tensors only, since on a GPU they would make every
    # training step wait for the device (the bundles' labels were checked as they were read, by label_to_index)
    checked = target.device.type == "cpu"
    if target.is_floating_point():
        rounded = target.round()
        if checked and not torch.equal(rounded, target):
            raise ValueError(f"{name} holds non-integer class indices: {target.tolist()}.")
        target = rounded
    target = target.long()
    if checked and target.numel() > 0 and (int(target.min()) < 0 or int(target.max()) >= _NUM_CLASSES):
        raise ValueError(f"{name} class indices must be in [0, {_NUM_CLASSES - 1}], got {target.tolist()}.")
    return target


def split_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tensor version of :func:`class_to_subtasks` for a batch of targets.

    Args:
        target: 9-class indices, shape (B,) or (B, 1), integer or integral float (as MONAI loaders give).

    Returns:
        ``(severe, mild)``: two long tensors of shape (B,) on the target's device.

    Raises:
        ValueError: on a bad shape, a non-integral value or an index outside ``0..8``.
    """
    target = target_to_indices(target)
    table = torch.tensor(_CLASS_TO_SUBTASKS, dtype=torch.long, device=target.device)  # (9, 2)
    pairs = table[target]  # (B, 2)
    return pairs[:, 0], pairs[:, 1]


def is_severe_and_mild(target: torch.Tensor) -> torch.Tensor:
    """Boolean mask (B,) of samples with both a heavy- and a light-chain band (IgX-kappa/lambda, index >= 3).

    Args:
        target: 9-class indices, shape (B,) or (B, 1).

    Returns:
        bool tensor of shape (B,).
    """
    severe, mild = split_target(target)
    return (severe > 0) & (mild > 0)


def fuse_subtask_probabilities(severe_probs: torch.Tensor, mild_probs: torch.Tensor) -> torch.Tensor:
    """Fuse the two heads' probabilities into 9-class probabilities.

    ``P(Negative) = p_m[None]``, ``P(kappa) = p_s[None] p_m[kappa]``, ``P(IgX-kappa) = p_s[X] p_m[kappa]``
    and likewise for lambda. The heads are treated as independent given the image, and the whole mild
    ``None`` mass goes to ``Negative`` (the Negative rule), so every row sums to
    ``p_m[None] + (p_m[kappa] + p_m[lambda]) * sum(p_s) = 1``.

    Args:
        severe_probs: (B, 4) probabilities over None/G/A/M (rows sum to 1).
        mild_probs: (B, 3) probabilities over None/kappa/lambda (rows sum to 1).

    Returns:
        (B, 9) probabilities in :data:`IFE_CLASSES` order.

    Raises:
        ValueError: when the shapes are not (B, 4) and (B, 3) with the same B.
    """
    # literal sizes (4 severe, 3 mild, 9 classes): TorchScript cannot read module-level ints, and the networks
    # script this function as part of forward()
    if severe_probs.ndim != 2 or severe_probs.shape[1] != 4:
        raise ValueError(f"severe_probs must have shape (B, 4), got {list(severe_probs.shape)}.")
    if mild_probs.ndim != 2 or mild_probs.shape[1] != 3:
        raise ValueError(f"mild_probs must have shape (B, 3), got {list(mild_probs.shape)}.")
    if severe_probs.shape[0] != mild_probs.shape[0]:
        raise ValueError(
            f"severe_probs and mild_probs must have the same batch size, got {list(severe_probs.shape)} "
            f"and {list(mild_probs.shape)}."
        )
    # outer product (B, 4, 2): row = severe call, column = kappa/lambda; flattening row-major gives
    # (None,k), (None,l), (G,k), (G,l), ... which is exactly class order 1..8.
    positives = severe_probs.unsqueeze(2) * mild_probs[:, 1:].unsqueeze(1)
    return torch.cat([mild_probs[:, :1], positives.flatten(1)], dim=1)


def call_from_probabilities(probs: torch.Tensor) -> torch.Tensor:
    """Recover the paper's per-head argmax call from fused 9-class probabilities.

    The mild call is the argmax of ``(P(Negative), sum of kappa classes, sum of lambda classes)``, which
    equals ``argmax p_m``. If it is None the call is ``Negative``; otherwise the severe call is the argmax,
    over None/G/A/M, of the four classes sharing that light chain, which equals ``argmax p_s`` because
    they are ``p_s`` scaled by the same ``p_m``. Ties go to the lower index, as ``torch.argmax``.

    Args:
        probs: (B, 9) fused probabilities from :func:`fuse_subtask_probabilities`.

    Returns:
        (B,) long tensor of 9-class indices.

    Raises:
        ValueError: when ``probs`` is not (B, 9).
    """
    if probs.ndim != 2 or probs.shape[1] != 9:
        raise ValueError(f"probs must have shape (B, 9), got {list(probs.shape)}.")
    # (B, 4, 2): severe call x light chain, for the eight positive classes
    positives = probs[:, 1:].reshape(-1, 4, 2)
    mild_mass = torch.cat([probs[:, :1], positives.sum(dim=1)], dim=1)  # (B, 3)
    mild_call = mild_mass.argmax(dim=1)
    light = (mild_call - 1).clamp(min=0)  # 0 = kappa, 1 = lambda (value unused when mild is None)
    severe_scores = positives.gather(2, light.view(-1, 1, 1).expand(-1, 4, 1)).squeeze(2)  # (B, 4)
    severe_call = severe_scores.argmax(dim=1)
    return torch.where(mild_call == 0, torch.zeros_like(mild_call), 2 * severe_call + mild_call)


def heads_from_probabilities(probs: torch.Tensor) -> dict[str, torch.Tensor]:
    """The head outputs that fused 9-class probabilities determine, for a model that returns only those (an ONNX
    export of ``MultiTaskIFEResNet.forward``).

    Inverts :func:`fuse_subtask_probabilities`: ``p_m = (P(Negative), sum of kappa classes, sum of lambda classes)``
    and ``p_s[X]`` is proportional to ``P(X-kappa) + P(X-lambda) = p_s[X] (1 - p_m[None])``. Their logarithms stand
    in for the head logits (logits up to a per-row constant: the same softmax and argmax), so the severe and mild
    calls are those of the network's heads. There are no attention maps.

    Args:
        probs: (B, 9) fused probabilities.

    Returns:
        ``{"probabilities": probs, "severe_logits": (B, 4), "mild_logits": (B, 3)}``, the log-probabilities clamped
        at the smallest normal float (finite; the severe head is uniform when no positive class has any mass).

    Raises:
        ValueError: when ``probs`` is not (B, 9).
    """
    if probs.ndim != 2 or probs.shape[1] != 9:
        raise ValueError(f"probs must have shape (B, 9), got {list(probs.shape)}.")
    tiny = torch.finfo(probs.dtype).tiny if probs.is_floating_point() else torch.finfo(torch.float32).tiny
    positives = probs[:, 1:].reshape(-1, 4, 2)  # severe call x light chain
    mild = torch.cat([probs[:, :1], positives.sum(dim=1)], dim=1)  # (B, 3)
    severe_mass = positives.sum(dim=2)  # (B, 4) = p_s * (1 - p_m[None])
    total = severe_mass.sum(dim=1, keepdim=True)
    severe = torch.where(total > 0, severe_mass / total.clamp_min(tiny), torch.full_like(severe_mass, 0.25))
    return {
        "probabilities": probs,
        "severe_logits": severe.clamp_min(tiny).log(),
        "mild_logits": mild.clamp_min(tiny).log(),
    }
