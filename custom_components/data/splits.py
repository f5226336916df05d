# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Splitting data sets: training/validation, k folds, and the sections of the synthetic generators.

All splits are stratified (each group keeps its share on every side) and deterministic for a seed.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from monai.data import partition_dataset_classes

__all__ = ["SECTIONS", "stratified_split", "stratified_kfold", "assign_sections"]

#: datalist sections, in the order of the ``fractions`` of :func:`assign_sections`
SECTIONS = ("training", "validation", "testing")


def _group_of(entry: dict, key: str | Callable[[dict], object] | None) -> str:
    return str(None if key is None else (key(entry) if callable(key) else entry.get(key)))


def stratified_split(
    entries: Sequence[dict],
    val_fraction: float = 0.2,
    seed: int = 0,
    key: str | Callable[[dict], object] | None = "label",
) -> tuple[list[dict], list[dict]]:
    """Split entries into training and validation, keeping each group's share (deterministic for a seed).

    Each group (entries with the same ``key`` value) contributes ``round(n * val_fraction)`` entries to validation,
    at least one when it has two or more entries and never all of them, so rare classes appear on both sides.
    (MONAI's ``partition_dataset_classes`` rounds each class to the nearest count, which leaves a class of one or
    two gels out of validation: the rare classes are those whose recall matters most.)

    Args:
        entries: datalist entries.
        val_fraction: share of each group for validation, in (0, 1).
        seed: random seed.
        key: the entry key (or a function of the entry) to stratify on; ``None`` for a plain random split.
            Unique values (e.g. mask paths) degrade gracefully to a random split.

    Returns:
        ``(train, val)``, each in the original order.

    Raises:
        ValueError: on ``val_fraction`` outside (0, 1).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, entry in enumerate(entries):
        groups[_group_of(entry, key)].append(i)
    if len(groups) == len(entries):  # every value unique: stratifying is meaningless
        groups = {"all": list(range(len(entries)))}
    rng = random.Random(seed)
    val_index: set[int] = set()
    for name in sorted(groups):
        members = groups[name][:]
        rng.shuffle(members)
        n_val = round(len(members) * val_fraction)
        if len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val_index.update(members[:n_val])
    train = [e for i, e in enumerate(entries) if i not in val_index]
    val = [e for i, e in enumerate(entries) if i in val_index]
    return train, val


def stratified_kfold(
    entries: Sequence[dict], folds: int = 5, seed: int = 0, key: str | Callable[[dict], object] | None = None
) -> list[tuple[list[dict], list[dict]]]:
    """K-fold split stratified on ``key``, with MONAI's ``partition_dataset_classes``.

    Groups smaller than ``folds`` cannot fill every fold on their own; they are pooled into one group (and that
    pool, if still too small, joins the largest group), so every entry is held out exactly once whatever the
    group sizes. MONAI deals each group round-robin from the first fold, so fold sizes differ by at most the number
    of groups.

    Returns:
        ``folds`` pairs ``(train, held_out)``, each in the original order.

    Raises:
        ValueError: on ``folds < 2`` or more folds than entries.
    """
    if folds < 2 or folds > len(entries):
        raise ValueError(f"folds must be in [2, {len(entries)}] for {len(entries)} entries, got {folds}.")
    groups = [_group_of(entry, key) for entry in entries]
    counts = Counter(groups)
    groups = [g if counts[g] >= folds else "\0small groups" for g in groups]
    if 0 < groups.count("\0small groups") < folds:
        largest = Counter(groups).most_common(1)[0][0]
        groups = [largest if g == "\0small groups" else g for g in groups]
    parts = partition_dataset_classes(list(range(len(entries))), groups, num_partitions=folds, shuffle=True, seed=seed)
    held = [set(part) for part in parts]
    return [
        ([e for i, e in enumerate(entries) if i not in out], [e for i, e in enumerate(entries) if i in out])
        for out in held
    ]


def assign_sections(
    groups: Sequence[Hashable], fractions: Sequence[float], rng: np.random.Generator, order: Sequence[Hashable]
) -> list[str]:
    """Stratified assignment of each item to a section of :data:`SECTIONS`, for the synthetic generators.

    Per group of ``n`` items: ``round(n * test)`` to testing (at least one once ``n >= 3`` and the test fraction
    is > 0), ``round(n * validation)`` to validation, always at least one left for training; groups of fewer than
    three items go to training whole, so every group present at all is in training.

    Args:
        groups: the group (class, fluid or not) of each item.
        fractions: (training, validation, testing) shares; only the last two are used.
        rng: the generator's random state (consumed group by group in ``order``, so a seed gives one split).
        order: the groups in the order they are drawn.

    Returns:
        the section name of each item.
    """
    val_fraction, test_fraction = float(fractions[1]), float(fractions[2])
    assignment = [SECTIONS[0]] * len(groups)
    for group in order:
        members = [i for i, g in enumerate(groups) if g == group]
        rng.shuffle(members)
        n = len(members)
        if n < 3:
            continue
        n_test = min(max(round(n * test_fraction), 1 if test_fraction > 0 else 0), n - 1)
        n_val = max(0, min(round(n * val_fraction), n - n_test - 1))
        for j, i in enumerate(members):
            assignment[i] = SECTIONS[2] if j < n_test else SECTIONS[1] if j < n_test + n_val else SECTIONS[0]
    return assignment
