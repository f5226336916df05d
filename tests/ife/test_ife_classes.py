"""Tests of custom_components.ife.classes (label algebra, fusion, the Negative rule) and the IFE call transform."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
from monai.transforms import Lambdad

from custom_components.ife import classes as ife_classes
from custom_components.ife.classes import (
    IFE_CLASSES,
    MILD_CLASSES,
    SEVERE_CLASSES,
    call_from_probabilities,
    class_index,
    class_to_subtasks,
    fuse_subtask_probabilities,
    is_severe_and_mild,
    label_to_index,
    split_target,
    target_to_indices,
)
from custom_components.ife.transforms import IFECalld

# (class name, severe name, mild name), written out by hand from the clinical meaning of each class
CLASS_TABLE = [
    ("Negative", "None", "None"),
    ("kappa", "None", "kappa"),
    ("lambda", "None", "lambda"),
    ("IgG-kappa", "G", "kappa"),
    ("IgG-lambda", "G", "lambda"),
    ("IgA-kappa", "A", "kappa"),
    ("IgA-lambda", "A", "lambda"),
    ("IgM-kappa", "M", "kappa"),
    ("IgM-lambda", "M", "lambda"),
]


def per_head_class(severe: int, mild: int) -> int:
    """The paper's rule from the hand table: Negative whenever the mild call is None, else the matching class."""
    if mild == 0:
        return 0
    pairs = [(SEVERE_CLASSES.index(s), MILD_CLASSES.index(m)) for _, s, m in CLASS_TABLE]
    return pairs.index((severe, mild))


def test_class_lists():
    assert IFE_CLASSES == tuple(row[0] for row in CLASS_TABLE)
    assert SEVERE_CLASSES == ("None", "G", "A", "M")
    assert MILD_CLASSES == ("None", "kappa", "lambda")


@pytest.mark.parametrize("name, severe, mild", CLASS_TABLE)
def test_round_trip(name, severe, mild):
    index = class_index(name)
    assert class_to_subtasks(index) == (SEVERE_CLASSES.index(severe), MILD_CLASSES.index(mild))
    assert per_head_class(*class_to_subtasks(index)) == index


@pytest.mark.parametrize(
    "func, args, match",
    [
        (class_index, ("IgG-Kappa",), "valid names are"),
        (class_to_subtasks, (9,), r"class index must be in \[0, 8\]"),
        (class_to_subtasks, (True,), "must be an integer"),
    ],
)
def test_bad_indices(func, args, match):
    with pytest.raises(ValueError, match=match):
        func(*args)


def test_split_target_shapes_and_dtypes():
    target = torch.tensor([[0.0], [1.0], [4.0], [8.0]])  # (B, 1) float, as a MONAI loader may give
    severe, mild = split_target(target)
    assert severe.tolist() == [0, 0, 1, 3]
    assert mild.tolist() == [0, 1, 2, 2]
    assert severe.dtype == torch.long
    assert is_severe_and_mild(torch.arange(9)).tolist() == [False] * 3 + [True] * 6


@pytest.mark.parametrize(
    "target, match",
    [
        (torch.tensor([0, 9]), r"must be in \[0, 8\]"),
        (torch.tensor([0.5]), "non-integer"),
        (torch.zeros(2, 2), r"\(B,\) or \(B, 1\)"),
    ],
)
def test_target_validation(target, match):
    with pytest.raises(ValueError, match=match):
        target_to_indices(target)


def test_fusion_hand_computed():
    severe = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    mild = torch.tensor([[0.5, 0.3, 0.2]])
    fused = fuse_subtask_probabilities(severe, mild)
    expected = [0.5, 0.1 * 0.3, 0.1 * 0.2, 0.2 * 0.3, 0.2 * 0.2, 0.3 * 0.3, 0.3 * 0.2, 0.4 * 0.3, 0.4 * 0.2]
    assert torch.allclose(fused, torch.tensor([expected]))


def test_fusion_rows_sum_to_one():
    gen = torch.Generator().manual_seed(0)
    severe = torch.softmax(torch.randn(64, 4, generator=gen), dim=1)
    mild = torch.softmax(torch.randn(64, 3, generator=gen), dim=1)
    fused = fuse_subtask_probabilities(severe, mild)
    assert fused.shape == (64, 9)
    assert torch.allclose(fused.sum(dim=1), torch.ones(64))
    assert bool((fused >= 0).all())


def test_fusion_negative_rule():
    # severe head sure of IgG, mild head sure of "no light chain": the mass goes to Negative
    fused = fuse_subtask_probabilities(torch.tensor([[0.0, 1.0, 0.0, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))
    assert fused[0, 0] == 1.0 and float(fused[0, 1:].sum()) == 0.0
    assert call_from_probabilities(fused).tolist() == [0]


@pytest.mark.parametrize(
    "severe, mild",
    [(torch.rand(2, 3), torch.rand(2, 3)), (torch.rand(2, 4), torch.rand(2, 2)), (torch.rand(2, 4), torch.rand(3, 3))],
)
def test_fusion_bad_shapes(severe, mild):
    with pytest.raises(ValueError, match="must have"):
        fuse_subtask_probabilities(severe, mild)


def test_call_equals_per_head_argmax_property():
    # many random heads, including peaked ones; the call from the fused vector must equal the paper's rule
    gen = torch.Generator().manual_seed(1234)
    for scale in (0.3, 1.0, 5.0):
        severe_logits = torch.randn(2000, 4, generator=gen, dtype=torch.float64) * scale
        mild_logits = torch.randn(2000, 3, generator=gen, dtype=torch.float64) * scale
        fused = fuse_subtask_probabilities(torch.softmax(severe_logits, 1), torch.softmax(mild_logits, 1))
        expected = [
            per_head_class(int(s), int(m)) for s, m in zip(severe_logits.argmax(1), mild_logits.argmax(1))
        ]
        assert call_from_probabilities(fused).tolist() == expected


def test_call_differs_from_plain_argmax():
    # p_s = (0.3, 0.4, 0.3, 0), p_m = (0.45, 0.55, 0): per-head rule gives (G, kappa) = IgG-kappa, but the fused
    # vector is Neg 0.45, kappa 0.165, IgG-k 0.22, IgA-k 0.165, rest 0, whose plain argmax is Negative
    fused = fuse_subtask_probabilities(torch.tensor([[0.3, 0.4, 0.3, 0.0]]), torch.tensor([[0.45, 0.55, 0.0]]))
    assert torch.allclose(fused, torch.tensor([[0.45, 0.165, 0.0, 0.22, 0.0, 0.165, 0.0, 0.0, 0.0]]))
    assert fused.argmax(1).tolist() == [0]
    assert call_from_probabilities(fused).tolist() == [3]


def test_call_bad_shape():
    with pytest.raises(ValueError, match=r"\(B, 9\)"):
        call_from_probabilities(torch.rand(2, 8))


def test_label_to_index():
    assert label_to_index("IgA-lambda") == 6 and isinstance(label_to_index("IgA-lambda"), np.int64)
    assert label_to_index(2) == 2 and label_to_index(np.int64(8)) == 8  # indices pass through
    with pytest.raises(ValueError, match=r"'IgD-kappa'.*valid names are"):
        label_to_index("IgD-kappa")
    with pytest.raises(ValueError, match=r"class index must be in \[0, 8\], got 12"):
        label_to_index(12)
    with pytest.raises(ValueError, match="must be an integer"):
        label_to_index(True)


def test_label_to_index_as_the_bundle_maps_it():
    # the IFE train.json maps datalist labels with MONAI's Lambdad over label_to_index
    to_index = Lambdad("label", label_to_index)
    assert to_index({"image": "a.png", "label": "kappa"}) == {"image": "a.png", "label": 1}


def test_call_transform():
    fused = fuse_subtask_probabilities(torch.tensor([[0.3, 0.4, 0.3, 0.0]]), torch.tensor([[0.45, 0.55, 0.0]]))[0]
    assert IFECalld(keys="pred")({"pred": fused})["pred"].item() == 3
    assert IFECalld(keys="pred", multitask=False)({"pred": fused})["pred"].item() == 0
    out = IFECalld(keys="pred", output_postfix="call")({"pred": fused.numpy()})
    assert out["pred_call"].item() == 3 and out["pred"].shape == (9,)
    batch = IFECalld(keys="pred").call(torch.stack([fused, fused]))
    assert batch.tolist() == [3, 3] and batch.dtype == torch.long
    with pytest.raises(ValueError, match=r"\(9,\) or \(B, 9\)"):
        IFECalld(keys="pred")({"pred": torch.rand(4)})


def test_label_algebra_imports_no_monai():
    # networks, losses and metrics import the algebra: it must not pull in MONAI's transforms (or anything of MONAI)
    tree = ast.parse(inspect.getsource(ife_classes))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "numpy", "torch"}
