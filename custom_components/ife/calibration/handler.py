# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Post-training calibration of the IFE bundle: temperature scaling and the refer-to-expert operating point.

:func:`calibrate_checkpoint` loads a checkpoint into a copy of the network, runs it over labelled (validation)
gels, fits one temperature per head (:func:`custom_components.ife.calibration.temperature.fit_temperature`), chooses the
operating point on the tempered probabilities (:func:`custom_components.ife.referral.choose_operating_point`) and
writes ``models/model.calibration.json`` (:func:`custom_components.ife.calibration.record.write_calibration`).
:class:`IFECalibrator` runs it when training completes (``train.json``) or on demand (``calibrate.json``).

The record's ``fitted_on`` also keeps how training chose its validation gels (:func:`split_settings`: the seed and
``val_fraction`` of a computed split, or the datalist's own ``validation`` list). A computed split depends on both,
so recalibrating with other values would fit on gels the model was trained on; :func:`checked_split` refuses that.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from monai.utils import IgniteInfo, min_version, optional_import
from torch.utils.data import DataLoader, Dataset

from custom_components.ife.calibration.record import calibration_path, read_calibration, write_calibration
from custom_components.core.recipe import CheckpointMismatchError, describe_mismatch, mismatch_error
from custom_components.core.datalist import load_datalist
from custom_components.ife.classes import (
    call_from_probabilities,
    fuse_subtask_probabilities,
    split_target,
    target_to_indices,
)
from custom_components.ife.referral import choose_operating_point
from custom_components.ife.calibration.temperature import (
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from custom_components.core.events import attach_once

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["collect_heads", "calibrate_checkpoint", "split_settings", "checked_split", "IFECalibrator"]

logger = logging.getLogger(__name__)


def split_settings(datalist_file: str | os.PathLike, seed: int, val_fraction: float) -> dict[str, Any]:
    """How ``training_and_validation(datalist_file, val_fraction, seed)`` chooses the validation gels.

    Returns:
        ``{"validation": "datalist", ...}`` when the datalist has its own ``validation`` list (then ``seed`` and
        ``val_fraction`` do not matter), else ``{"validation": "split", ...}``; both with ``seed`` and
        ``val_fraction``.
    """
    source = "datalist" if load_datalist(datalist_file, "validation") else "split"
    return {"validation": source, "seed": int(seed), "val_fraction": float(val_fraction)}


def checked_split(
    checkpoint: str | os.PathLike, split: Mapping[str, Any], section: str = "validation"
) -> dict[str, Any]:
    """The split settings to record when recalibrating ``checkpoint``; refuse a validation split that is not training's.

    When ``section`` is ``"validation"`` and ``split`` is a computed split, the checkpoint's calibration record (if
    any, and if it recorded its split) must name a computed split of the same ``seed`` and ``val_fraction``:
    another split shares gels with the model's training data, so its temperatures and operating point would be
    fitted on gels the model has seen.

    Args:
        checkpoint: the weights file whose record is read.
        split: :func:`split_settings` of this run.
        section: the section to calibrate on.

    Returns:
        the record's split (the training's) when there is one, else ``split``: what the new record keeps.

    Raises:
        ValueError: naming both settings and the overrides to use, when the split differs from training's.
    """
    record = read_calibration(checkpoint) if os.path.isfile(os.fspath(checkpoint)) else None
    trained = (record or {}).get("fitted_on", {}).get("split")
    if not isinstance(trained, Mapping):
        return dict(split)  # no record, or one written before splits were recorded: nothing to compare
    if section == "validation" and split.get("validation") == "split" and trained.get("validation") == "split":
        ours = (int(split["seed"]), float(split["val_fraction"]))
        theirs = (int(trained["seed"]), float(trained["val_fraction"]))
        if ours != theirs:
            raise ValueError(
                f"cannot calibrate {os.fspath(checkpoint)} on the validation split of seed={ours[0]}, "
                f"val_fraction={ours[1]}: it was trained with the split of seed={theirs[0]}, val_fraction={theirs[1]} "
                f"(recorded in {calibration_path(checkpoint)}), and another split overlaps its training gels. Run "
                f"with --seed {theirs[0]} --val_fraction {theirs[1]}, or calibrate on a held-out section "
                f"(--calibrate_section <name>)."
            )
    return dict(trained)


def _state_dict(checkpoint: str) -> Mapping[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]  # a CheckpointSaver dict holding the network under "model"
    if not isinstance(state, Mapping):
        raise ValueError(
            f"{checkpoint}: expected a state dict (or a dict with one under 'model'), got {type(state).__name__}."
        )
    return state


@torch.no_grad()
def collect_heads(
    network: torch.nn.Module,
    data_loader: Any,
    device: str | torch.device,
    image_key: str = "image",
    label_key: str = "label",
) -> dict[str, torch.Tensor]:
    """Run ``network.forward_heads`` over labelled batches; concatenate its logits, probabilities and the labels.

    Args:
        network: a network with ``forward_heads`` (``MultiTaskIFEResNet`` or ``IFEResNet``), in eval mode.
        data_loader: iterable of batch dicts with ``image_key`` (B, C, H, W) and ``label_key`` (B,) 9-class indices.
        device: where the network runs.

    Returns:
        float64 CPU tensors: ``probabilities`` (N, 9), ``labels`` (N,) and ``severe_logits`` (N, 4) +
        ``mild_logits`` (N, 3) (multi-task) or ``logits`` (N, K) (9-class).

    Raises:
        ValueError: when a batch lacks the keys.
    """
    collected: dict[str, list[torch.Tensor]] = {}
    for batch in data_loader:
        for key in (image_key, label_key):
            if key not in batch:
                raise ValueError(f"calibration batches need {key!r}, got keys {sorted(map(str, batch))}.")
        heads = network.forward_heads(torch.as_tensor(batch[image_key]).to(device))
        keep = {k: heads[k] for k in ("severe_logits", "mild_logits", "logits", "probabilities") if k in heads}
        keep["labels"] = target_to_indices(torch.as_tensor(batch[label_key]), label_key)
        for key, value in keep.items():
            collected.setdefault(key, []).append(torch.as_tensor(value).detach().to("cpu", torch.float64))
    return {key: torch.cat(values) for key, values in collected.items()}


def _tempered(heads: Mapping[str, torch.Tensor], temperatures: Mapping[str, float]) -> torch.Tensor:
    if "classes" in temperatures:
        return torch.softmax(heads["logits"] / temperatures["classes"], dim=1)
    return fuse_subtask_probabilities(
        torch.softmax(heads["severe_logits"] / temperatures["severe"], dim=1),
        torch.softmax(heads["mild_logits"] / temperatures["mild"], dim=1),
    )


def calibrate_checkpoint(
    network: torch.nn.Module,
    checkpoint: str | os.PathLike,
    data_loader: Any,
    device: str | torch.device | None = None,
    target_sensitivity: float = 0.98,
    target_coverage: float = 0.75,
    section: str = "validation",
    n_bins: int = 15,
    split: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit and write the calibration record of ``checkpoint`` (see the module docstring).

    The network is a deep copy of ``network`` (the training network is left as it is) with the checkpoint's
    weights, run in eval mode and float32. Multi-task: the severe temperature is fitted on the severe logits
    against the severe sub-task target, the mild one likewise (the targets the training loss uses); 9-class: one
    temperature on the logits. ECE (top-label, 15 bins) and NLL are those of the 9-class probabilities. Without
    positive gels no operating point can aim at a sensitivity: ``operating_point`` is then null, with a warning.

    Args:
        network: the architecture (a DDP wrapper is unwrapped); not modified.
        checkpoint: the weights file (a state dict or a dict holding one under ``"model"``).
        data_loader: labelled batches (``image``, ``label`` as 9-class indices) of the fitting split.
        device: where to run (default: where ``network`` is).
        target_sensitivity: for :func:`~custom_components.ife.referral.choose_operating_point`.
        target_coverage: for :func:`~custom_components.ife.referral.choose_operating_point`.
        section: the fitting split's name, recorded.
        n_bins: ECE bins.
        split: how training chose its validation gels (:func:`split_settings`), recorded as ``fitted_on["split"]``
            when given.

    Returns:
        the record written (also in ``models/model.calibration.json``).

    Raises:
        ValueError: when the checkpoint does not exist or the data loader yields no gel.
        CheckpointMismatchError: naming the checkpoint and its first layer that does not fit ``network``.
    """
    checkpoint = os.fspath(checkpoint)
    if not os.path.isfile(checkpoint):
        raise ValueError(f"cannot calibrate {checkpoint}: the checkpoint does not exist.")
    base = getattr(network, "module", network)
    if device is None:
        device = next(base.parameters()).device
    model = copy.deepcopy(base)
    state = _state_dict(checkpoint)
    if describe_mismatch(model, state) is not None:
        raise mismatch_error(checkpoint, model, what="the calibration's config") or CheckpointMismatchError(
            f"{checkpoint} does not fit the network to calibrate."
        )
    model.load_state_dict(state)
    model = model.to(device=device, dtype=torch.float32).eval()
    heads = collect_heads(model, data_loader, device)
    if not heads or heads["labels"].numel() == 0:
        raise ValueError(f"cannot calibrate {checkpoint}: the {section} data loader yielded no gel.")
    labels = heads["labels"]
    if "logits" in heads:
        temperatures = {"classes": fit_temperature(heads["logits"], labels)}
        before = torch.softmax(heads["logits"], dim=1)
    else:
        severe, mild = split_target(labels)
        temperatures = {
            "severe": fit_temperature(heads["severe_logits"], severe),
            "mild": fit_temperature(heads["mild_logits"], mild),
        }
        before = _tempered(heads, {"severe": 1.0, "mild": 1.0})
    after = _tempered(heads, temperatures)
    # the bundle's call: per-head argmax for the multi-task network, argmax otherwise (temperatures move neither)
    calls = after.argmax(dim=1) if "logits" in heads else call_from_probabilities(after)
    try:
        operating_point = choose_operating_point(after, labels, target_sensitivity, target_coverage, calls=calls)
    except ValueError as error:
        logger.warning("no refer-to-expert operating point for %s: %s", checkpoint, error)
        operating_point = None
    record = {
        "temperatures": temperatures,
        "fitted_on": {"section": section, "count": int(labels.numel())},
        "ece_before": expected_calibration_error(before, labels, n_bins),
        "ece_after": expected_calibration_error(after, labels, n_bins),
        "nll_before": negative_log_likelihood(before, labels),
        "nll_after": negative_log_likelihood(after, labels),
        "ece_bins": n_bins,
        "operating_point": operating_point,
    }
    if split is not None:
        record["fitted_on"]["split"] = dict(split)
    path = write_calibration(checkpoint, record)
    where = (
        f"coverage {operating_point['coverage']:.3f} at screening sensitivity "
        f"{operating_point['screening_sensitivity']:.3f}"
        if operating_point else "no operating point"
    )
    logger.info(
        "calibrated %s on %d %s gels: temperatures %s, ECE %.4f -> %.4f, NLL %.4f -> %.4f, %s; wrote %s",
        checkpoint, labels.numel(), section, {k: round(v, 4) for k, v in temperatures.items()}, record["ece_before"],
        record["ece_after"], record["nll_before"], record["nll_after"], where, path,
    )  # fmt: skip
    return record


class IFECalibrator:
    """Calibrate the best checkpoint when training completes (or on demand with :meth:`calibrate`).

    Under DDP only ``save_rank`` calibrates, over the whole ``dataset`` (its own loader, without the distributed
    sampler: the temperatures must be fitted on every validation gel, and there is no metric state to gather).
    The other ranks wait at a barrier that ``save_rank`` reaches whether calibration succeeds or fails, so a
    failure does not hang them; the failure is then raised on ``save_rank``.

    A missing checkpoint (no validation ran) is warned and skipped. Calibration runs after the trainer's
    ``COMPLETED``, never in the middle of training, so it changes nothing in a resumable training state.

    Args:
        network: the trained architecture (``@network``).
        checkpoint: the best-model file (``@checkpoint``).
        dataset: the labelled validation dataset (``@validate#dataset``), items with ``image`` and ``label``.
        target_sensitivity: screening sensitivity of the operating point, in (0, 1].
        target_coverage: share of gels to decide on confidence, in (0, 1].
        batch_size: calibration batch size.
        num_workers: data loader workers.
        device: where to run (default: where ``network`` is).
        section: the fitting split's name, recorded.
        split: how training chose its validation gels (:func:`split_settings`; ``calibrate.json``: the
            :func:`checked_split`), recorded in the record's ``fitted_on``; None records none.
        enabled: False attaches nothing (``train.json``'s ``calibrate``).
        save_rank: the rank that calibrates and writes.

    Raises:
        ValueError: on targets outside (0, 1] or a bad batch size.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        checkpoint: str | os.PathLike,
        dataset: Dataset,
        target_sensitivity: float = 0.98,
        target_coverage: float = 0.75,
        batch_size: int = 16,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        section: str = "validation",
        enabled: bool = True,
        save_rank: int = 0,
        split: Mapping[str, Any] | None = None,
    ) -> None:
        for name, value in (("target_sensitivity", target_sensitivity), ("target_coverage", target_coverage)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.network = network
        self.checkpoint = os.fspath(checkpoint)
        self.dataset = dataset
        self.target_sensitivity = float(target_sensitivity)
        self.target_coverage = float(target_coverage)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = device
        self.section = section
        self.split = None if split is None else dict(split)
        self.enabled = bool(enabled)
        self.save_rank = save_rank
        self.record: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Calibrate on the trainer's ``COMPLETED`` (when enabled)."""
        if self.enabled:
            attach_once(engine, (Events.COMPLETED, self))

    def calibrate(self) -> dict[str, Any]:
        """Calibrate ``checkpoint`` now (single process); returns the record written."""
        loader = DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
        self.record = calibrate_checkpoint(
            self.network, self.checkpoint, loader, self.device, self.target_sensitivity, self.target_coverage,
            self.section, split=self.split,
        )
        return self.record

    def __call__(self, engine: Engine | None = None) -> None:
        """Calibrate on ``save_rank``; all ranks meet at a barrier afterwards under DDP."""
        distributed = idist.get_world_size() > 1
        error: BaseException | None = None
        if idist.get_rank() == self.save_rank:
            if not os.path.isfile(self.checkpoint):
                logger.warning("no calibration: %s does not exist (did validation run?).", self.checkpoint)
            else:
                try:
                    self.calibrate()
                except Exception as caught:  # re-raised after the barrier, so the other ranks are released first
                    error = caught
        if distributed:
            idist.barrier()
        if error is not None:
            raise error
