# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Splitting data sets: training/validation, k folds, and the sections of the synthetic generators.

All splits are stratified (each stratum keeps its share on every side) and deterministic for a seed. The grouped
ones (:func:`stratified_group_kfold`, :func:`stratified_group_split`) also keep every entry of one ``group`` (the
B-scans of one eye or volume, the gels of one patient) on the same side, so that no patient is both trained and
tested on.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from monai.data import partition_dataset_classes

__all__ = [
    "SECTIONS",
    "stratified_split",
    "stratified_kfold",
    "stratified_group_kfold",
    "stratified_group_split",
    "assign_sections",
]

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


def _groups_of(entries: Sequence[dict], group: str | Callable[[dict], object] | None) -> list[list[int]]:
    """Indices of the entries of each group, groups in order of first appearance. An entry without a group (``group``
    is ``None``, the key is absent or its value is ``None``) is a group of its own."""
    members: dict[object, list[int]] = {}
    for i, entry in enumerate(entries):
        value = None if group is None else (group(entry) if callable(group) else entry.get(group))
        members.setdefault(("entry", i) if value is None else ("group", str(value)), []).append(i)
    return list(members.values())


def stratified_group_kfold(
    entries: Sequence[dict],
    folds: int = 5,
    seed: int = 0,
    key: str | Callable[[dict], object] | None = None,
    group: str | Callable[[dict], object] | None = "group",
) -> list[tuple[list[dict], list[dict]]]:
    """K-fold split that keeps every group whole and balances the strata of ``key`` across the folds.

    Whole groups are dealt greedily, largest first (groups of one size in a seeded random order), each to the fold
    where it brings the folds closest to an even share of every stratum and of the entries: the fold that least
    increases ``sum_s sum_f (n_fs / n_s - 1 / folds)^2 + sum_f (n_f / n - 1 / folds)^2``, ``n_fs`` being the entries of
    stratum ``s`` in fold ``f`` (ties: the smaller fold, then the lower index). Once only as many groups remain as
    folds are empty, they go to the empty folds, so every fold holds out something. This is the idea of
    scikit-learn's ``StratifiedGroupKFold``, written here because the project does not depend on scikit-learn and
    MONAI's ``partition_dataset_classes`` splits by entry, not by group. With every entry its own group (no
    ``group`` key in the datalist) it is a plain stratified k-fold split.

    Args:
        entries: datalist entries.
        folds: number of folds, at least 2 and at most the number of groups.
        seed: random seed of the order of equal-sized groups.
        key: the entry key (or a function of the entry) to stratify on; ``None`` balances the fold sizes only.
        group: the entry key (or a function of the entry) naming the group; entries without it are groups of one.

    Returns:
        ``folds`` pairs ``(train, held_out)``, each in the original order; every entry is held out exactly once and
        no group is on both sides of a pair.

    Raises:
        ValueError: on ``folds < 2`` or more folds than groups.
    """
    groups = _groups_of(entries, group)
    if folds < 2 or folds > len(groups):
        raise ValueError(
            f"folds must be in [2, {len(groups)}] for {len(entries)} entries in {len(groups)} groups, got {folds}."
        )
    strata = [_group_of(entry, key) for entry in entries]
    totals = Counter(strata)
    names = sorted(totals)
    stratum_index = {name: j for j, name in enumerate(names)}
    # (groups, strata) counts; the shares are relative to each stratum's total, so rare classes weigh as much
    counts = np.zeros((len(groups), len(names)))
    for g, members in enumerate(groups):
        for i in members:
            counts[g, stratum_index[strata[i]]] += 1
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(groups[g]))  # stable: equal sizes keep the seeded order
    scale = np.array([totals[name] for name in names], dtype=float)
    fold_counts = np.zeros((folds, len(names)))
    fold_sizes = np.zeros(folds)
    target = 1.0 / folds
    assigned = np.empty(len(groups), dtype=int)
    for remaining, g in zip(range(len(order), 0, -1), order):
        size = len(groups[g])
        before = ((fold_counts / scale - target) ** 2).sum(axis=1) + (fold_sizes / len(entries) - target) ** 2
        after = (((fold_counts + counts[g]) / scale - target) ** 2).sum(axis=1)
        after += ((fold_sizes + size) / len(entries) - target) ** 2
        cost = after - before
        empty = fold_sizes == 0
        if empty.sum() >= remaining:  # the groups left are just enough to give every empty fold one
            cost = np.where(empty, cost, np.inf)
        best = min(range(folds), key=lambda f: (round(float(cost[f]), 12), fold_sizes[f], f))
        assigned[g] = best
        fold_counts[best] += counts[g]
        fold_sizes[best] += size
    fold_of = np.empty(len(entries), dtype=int)
    for g, members in enumerate(groups):
        fold_of[members] = assigned[g]
    return [
        ([e for i, e in enumerate(entries) if fold_of[i] != f], [e for i, e in enumerate(entries) if fold_of[i] == f])
        for f in range(folds)
    ]


def stratified_group_split(
    entries: Sequence[dict],
    val_fraction: float = 0.2,
    seed: int = 0,
    key: str | Callable[[dict], object] | None = None,
    group: str | Callable[[dict], object] | None = "group",
) -> tuple[list[dict], list[dict]]:
    """Split entries into training and validation with whole groups on each side, strata balanced.

    The first fold of :func:`stratified_group_kfold` with ``round(1 / val_fraction)`` folds is the validation set,
    so its share is about ``1 / round(1 / val_fraction)`` of the entries (0.2 exactly for 0.2, 1/3 for 0.3), as
    near as whole groups allow.

    Args:
        entries: datalist entries (at least two groups).
        val_fraction: wanted share of validation, in (0, 1).
        seed: random seed.
        key: what to stratify on, as for :func:`stratified_group_kfold`.
        group: the entry key (or function) naming the group.

    Returns:
        ``(train, val)``, each in the original order.

    Raises:
        ValueError: on ``val_fraction`` outside (0, 1), or fewer than two groups.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
    n_groups = len(_groups_of(entries, group))
    if n_groups < 2:
        raise ValueError(f"a validation split needs at least two groups, got {n_groups} in {len(entries)} entries.")
    folds = min(max(2, round(1 / val_fraction)), n_groups)
    return stratified_group_kfold(entries, folds, seed, key, group)[0]


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
