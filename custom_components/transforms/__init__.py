"""Transforms: IFE label decomposition and fusion, OCT mask checks and seeded noise, image reading helpers."""

from .ife_labels import (
    IFE_CLASSES,
    MILD_CLASSES,
    SEVERE_CLASSES,
    IFECalld,
    IFELabelToIndexd,
    call_from_probabilities,
    class_to_subtasks,
    fuse_subtask_probabilities,
    subtasks_to_class,
)
from .oct import BinarizeMaskd, SeededGaussianNoised
