# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""An ensemble of the cross-validation folds' networks: the mean of their (calibrated) class probabilities.

``scripts/cross_validate.py --bundle ife_multitask`` trains one network per fold and writes ``ensemble.json`` beside
the folds: the fold checkpoints and an operating point fitted on the pooled out-of-fold predictions. The IFE
bundle's ``configs/ensemble_inference.json`` (merged over ``inference.json``) loads them with
:func:`load_fold_ensemble` and runs :class:`ProbabilityEnsemble` in place of the single network.

Averaging probabilities, not logits, is what Hu et al. (Clinical Chemistry 2023, HiLab-git/IFE_AI) do over their
folds, and what keeps each member's temperature scaling meaningful: a member calibrated on its own validation split
contributes calibrated probabilities, and the mean of calibrated probabilities stays a probability.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from custom_components.core.atomic import read_json_file

__all__ = [
    "ENSEMBLE_RECORD",
    "ProbabilityEnsemble",
    "load_fold_ensemble",
    "read_ensemble_record",
    "fold_checkpoints",
    "ensemble_operating_point",
    "check_fold_recipes",
]

logger = logging.getLogger(__name__)

#: the file ``scripts/cross_validate.py`` writes beside the fold folders
ENSEMBLE_RECORD = "ensemble.json"


class ProbabilityEnsemble(nn.Module):
    """Mean of the class probabilities of N member networks.

    Each member returns either a dict with ``probabilities`` (B, K) (e.g. ``ForwardHeads(network)``, whose dict also
    holds logits and attention maps) or a tensor (B, K) of probabilities. The ensemble returns a dict:

    - ``probabilities`` (B, K): the mean over the members;
    - every attention map (a key starting with ``attention``) that all members return, in the same shape: its mean
      over the members, so that the inference figures and ``attention_profiles.jsonl`` still work (each member's
      map is a distribution over the gel's rows; their mean is the ensemble's "where the members looked").

    Logits and per-head outputs are not averaged: the mean of logits is not the logit of the mean probability, and
    a consumer that finds no head logits derives the head calls from the class call (``IFEPredictionWriter`` does).

    Args:
        members: the networks, at least one; all in eval mode for inference (the ensemble's ``eval()`` sets them).
        calibrated: whether every member returns temperature-scaled probabilities (kept as ``self.calibrated``, for
            the ``calibrated`` column of ``predictions.csv``; :func:`load_fold_ensemble` sets it).

    Raises:
        ValueError: when ``members`` is empty, or (in ``forward``) when a member returns neither a tensor nor a dict
            with ``probabilities``, or members disagree in the shape of their probabilities (e.g. in K).
    """

    def __init__(self, members: Sequence[nn.Module], calibrated: bool = False) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("ProbabilityEnsemble needs at least one member network, got none.")
        self.members = nn.ModuleList(members)
        self.calibrated = bool(calibrated)

    @staticmethod
    def _outputs(index: int, output: Any) -> dict[str, torch.Tensor]:
        if isinstance(output, torch.Tensor):
            output = {"probabilities": output}
        if not isinstance(output, Mapping) or not isinstance(output.get("probabilities"), torch.Tensor):
            raise ValueError(
                f"ensemble member {index} must return a (B, K) tensor or a dict with 'probabilities', got "
                f"{sorted(map(str, output)) if isinstance(output, Mapping) else type(output).__name__}."
            )
        if output["probabilities"].ndim != 2:
            raise ValueError(
                f"ensemble member {index} returned probabilities of shape {tuple(output['probabilities'].shape)}, "
                "expected (B, K)."
            )
        return dict(output)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """
        Args:
            x: images (B, C, H, W), as each member takes them.

        Returns:
            ``{"probabilities": (B, K), **{attention key: mean map}}``, see the class docstring.
        """
        outputs = [self._outputs(i, member(x)) for i, member in enumerate(self.members)]
        shape = outputs[0]["probabilities"].shape
        for i, output in enumerate(outputs[1:], start=1):
            if output["probabilities"].shape != shape:
                raise ValueError(
                    f"ensemble members disagree: member 0 returns probabilities {tuple(shape)}, member {i} "
                    f"{tuple(output['probabilities'].shape)} (different numbers of classes K?)."
                )
        result = {"probabilities": torch.stack([o["probabilities"] for o in outputs]).mean(dim=0)}
        for key, value in outputs[0].items():
            if not (key.startswith("attention") and isinstance(value, torch.Tensor)):
                continue
            maps = [o.get(key) for o in outputs]
            if all(isinstance(m, torch.Tensor) and m.shape == value.shape for m in maps):
                result[key] = torch.stack(maps).mean(dim=0)
        return result


def load_fold_ensemble(
    checkpoints: Sequence[str | os.PathLike], network: nn.Module, device: str | torch.device | None = None
) -> ProbabilityEnsemble:
    """Build a :class:`ProbabilityEnsemble` of ``network``'s architecture with each checkpoint's weights.

    Each member is a deep copy of ``network`` with one checkpoint's state dict loaded, wrapped in
    ``ForwardHeads(member, temperatures=...)`` with the temperatures of the checkpoint's calibration record
    (``models/model.calibration.json``, :func:`custom_components.ife.calibration.record.read_calibration`), so every
    member contributes its own calibrated probabilities. A member without a (current) calibration record is used
    uncalibrated, with one warning naming all such checkpoints; the ensemble's ``calibrated`` is true only when
    every member was calibrated.

    Args:
        checkpoints: the fold weights files (bare state dicts, or dicts holding one under ``"model"``).
        network: the architecture, as the config builds it (e.g. ``@network``); not modified.
        device: where the members run (default: where ``network`` is).

    Returns:
        the ensemble, in eval mode, on ``device``.

    Raises:
        ValueError: on no checkpoints, or a checkpoint file that does not exist.
        CheckpointMismatchError: naming the checkpoint and its first layer that does not fit ``network``.
    """
    from custom_components.ife.calibration.record import read_calibration
    from custom_components.core.recipe import CheckpointMismatchError, describe_mismatch, mismatch_error
    from custom_components.ife.networks import ForwardHeads

    paths = [os.fspath(c) for c in checkpoints]
    if not paths:
        raise ValueError("load_fold_ensemble needs at least one checkpoint, got none.")
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise ValueError(f"ensemble checkpoint(s) not found: {', '.join(missing)}.")
    base = getattr(network, "module", network)  # a DDP wrapper holds the network as .module
    if device is None:
        device = next(base.parameters()).device
    members, uncalibrated = [], []
    for path in paths:
        member = copy.deepcopy(base)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
            state = state["model"]
        if not isinstance(state, Mapping) or describe_mismatch(member, state) is not None:
            error = mismatch_error(path, member, what="the ensemble's config")
            raise error or CheckpointMismatchError(f"{path} holds no state dict for the ensemble's network.")
        member.load_state_dict(state)
        record = read_calibration(path)
        temperatures = (record or {}).get("temperatures")
        if temperatures:
            members.append(ForwardHeads(member, temperatures=temperatures))
        else:
            uncalibrated.append(path)
            members.append(ForwardHeads(member))
    if uncalibrated:
        logger.warning(
            "%d of %d ensemble members have no (current) calibration record, their probabilities are averaged "
            "uncalibrated: %s",
            len(uncalibrated), len(paths), ", ".join(uncalibrated),
        )  # fmt: skip
    return ProbabilityEnsemble(members, calibrated=not uncalibrated).to(device).eval()


def read_ensemble_record(ensemble_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``ensemble.json`` of ``ensemble_dir`` (written by ``scripts/cross_validate.py``), or ``None`` without one.

    Raises:
        ValueError: naming the file, when it is not a JSON object with a ``checkpoints`` list.
    """
    path = os.path.join(os.fspath(ensemble_dir), ENSEMBLE_RECORD)
    record = read_json_file(path, "ensemble record")
    if record is None:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("checkpoints"), list):
        raise ValueError(f"{path}: an ensemble record must be an object with a 'checkpoints' list.")
    return record


def fold_checkpoints(ensemble_dir: str | os.PathLike) -> list[str]:
    """The member checkpoints of an ensemble folder.

    Those listed in its ``ensemble.json`` (paths relative to the folder, so the folder can be moved or copied into
    a bundle as a whole), else every ``fold_*/models/model.pt`` in it, sorted by fold number.

    Raises:
        ValueError: naming the folder when it holds neither, or a listed checkpoint that does not exist.
    """
    root = os.path.abspath(os.fspath(ensemble_dir))
    record = read_ensemble_record(root)
    if record is not None:
        paths = [os.path.normpath(os.path.join(root, p)) for p in record["checkpoints"]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing or not paths:
            raise ValueError(
                f"{os.path.join(root, ENSEMBLE_RECORD)} lists "
                + (f"missing checkpoints: {', '.join(missing)}." if missing else "no checkpoints.")
            )
        return paths
    found = glob.glob(os.path.join(glob.escape(root), "fold_*", "models", "model.pt"))

    def fold_number(path: str) -> tuple[int, str]:
        name = os.path.basename(os.path.dirname(os.path.dirname(path)))[len("fold_") :]
        return (int(name), path) if name.isdigit() else (1 << 30, path)

    if not found:
        raise ValueError(
            f"no ensemble in {root}: neither {ENSEMBLE_RECORD} nor fold_*/models/model.pt (run scripts/"
            "cross_validate.py --bundle ife_multitask --ensemble-dir DIR, or set ensemble_checkpoints)."
        )
    return sorted(found, key=fold_number)


def ensemble_operating_point(ensemble_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The operating point in the ensemble folder's ``ensemble.json`` (fitted on the pooled out-of-fold
    predictions), or ``None`` when there is no record or it holds none."""
    record = read_ensemble_record(ensemble_dir)
    return None if record is None else record.get("operating_point")


def check_fold_recipes(
    checkpoints: Sequence[str | os.PathLike],
    settings: Mapping[str, Any],
    network: nn.Module | None = None,
    geometry_keys: Sequence[str] = ("image_size", "geometry"),
) -> None:
    """:func:`custom_components.core.recipe.check_recipe` for every member: the ensemble's config takes its geometry
    from the first member's recipe, so a member trained at another image size or geometry, or as another network, is
    refused, naming it (one network and one preprocessing run every member's weights, at one input size).

    Args:
        checkpoints: the member weights files.
        settings: config id -> value the ensemble's run uses (as for ``check_recipe``).
        network: the network the config builds, to compare its class with each recipe's.
        geometry_keys: ids whose mismatch is an error; the IFE configs pass ``("image_size", "lane_layout")``, as
            single-model IFE inference does (a member trained on lane-normalised gels sees other pixels).

    Raises:
        RecipeMismatchError: naming the first member whose recipe disagrees.
    """
    from custom_components.core.recipe import check_recipe

    for checkpoint in checkpoints:
        check_recipe(checkpoint, settings, network, geometry_keys=geometry_keys)
