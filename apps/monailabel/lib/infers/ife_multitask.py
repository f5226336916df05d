"""IFE gel classification: the 9-class call with the severe/mild findings, attention profiles, calibrated
probabilities and the refer-to-expert decision."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from monailabel.interfaces.tasks.infer_v2 import InferType

from custom_components.ife.calibration.record import calibration_path, read_calibration
from custom_components.ife.lanes import lanes_found
from custom_components.ife.referral import refer_decisions
from custom_components.ife.networks import ForwardHeads
from custom_components.ife.classes import (
    IFE_CLASSES,
    MILD_CLASSES,
    SEVERE_CLASSES,
    call_from_probabilities,
    class_to_subtasks,
)
from lib.infers.bundle_task import LocalBundleInferTask

__all__ = ["IFEMultiTaskInfer", "ife_result", "requested_weights"]

HEADS_KEY = "ife_heads"
#: the checkpoint's calibration record (``models/model.calibration.json``) read for this request, or None
CALIBRATION_KEY = "ife_calibration"
#: what ``inference.json``'s band-pattern detector (``IFEBandPatternd``) puts on the data
BAND_PATTERN_KEY = "band_pattern"


def _named(probabilities: torch.Tensor, names: tuple[str, ...]) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(names, probabilities.tolist())}


def requested_weights(
    default: str | None, models_dir: str, data: Mapping[str, Any] | None, choosable: bool
) -> str | None:
    """The weights file a request runs, chosen as MONAI Label's ``BasicInferTask._get_network`` (0.8.5) chooses it.

    Read the calibration record next to THIS file: another ``models/*.pt`` (a fold, an earlier model) has its own
    temperatures and operating point, or none, and ``model.pt``'s would be wrong for it.

    Args:
        default: the task's own weights (``get_path()``), or None.
        models_dir: folder of the task's weights; the request's ``model_filename`` is a name in it.
        data: the request (MONAI Label puts the task's config under it, so ``model_filename`` is the list of
            options unless the request names one; the first is taken, as MONAI Label does).
        choosable: whether the task offers the ``model_filename`` option.

    Returns:
        the requested file when the option is offered and that file exists, else ``default``.
    """
    name = (data or {}).get("model_filename") if choosable else None
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    if not isinstance(name, str) or not name:
        return default
    path = os.path.join(models_dir, name)
    return path if os.path.exists(path) else default  # MONAI Label ignores a name that is not a file


def ife_result(
    heads: Mapping[str, torch.Tensor],
    calibration: Mapping[str, Any] | None = None,
    band_pattern: str = "",
    lanes_read: bool | None = None,
) -> dict[str, Any]:
    """Turn one gel's network heads into the JSON answer of ``/infer/ife_multitask``.

    Args:
        heads: ``forward_heads`` output for ONE image (no batch dimension), through
            :class:`~custom_components.ife.networks.ForwardHeads` with the calibration's temperatures when
            there is one (then ``probabilities`` are calibrated): ``probabilities`` (9,), and either the
            multi-task heads ``severe_logits`` (4,), ``mild_logits`` (3,), ``attention_severe`` (R,),
            ``attention_mild`` (R,), or the 9-class baseline's ``logits`` (9,) and ``attention`` (R,). R = rows of
            the last stage (input height / 16, or / 32 for a network trained with ``stage4_row_stride`` 2).

    Returns:
        ``label`` (predicted class name, by the paper's rule: mild call None gives Negative) and ``label_index``;
        ``probabilities`` (class name -> probability, the nine sum to 1); ``prediction`` (the same as MONAI Label's
        classification list ``[{"idx", "label", "score"}]``); ``severe`` and ``mild`` (``call`` and per-head
        ``probabilities``; for the baseline, the calls implied by the class and no per-head probabilities);
        ``attention``: ``severe`` and ``mild`` profiles (baseline: ``class``), R weights in [0, 1], top to bottom;
        weight ``j`` is centred on network-input row ``j * stride`` (``network.attention_strides()``; see
        :mod:`custom_components.ife.attention`); ``calibrated`` (whether the probabilities are temperature-scaled),
        ``refer`` and ``refer_reason`` (:func:`~custom_components.ife.referral.refer_decisions` at the calibration's
        operating point, with the band pattern and whether the lanes were read; without a calibration only a band
        pattern or unread lanes refer, and the reason says "not calibrated"), ``operating_point`` (or None).
    calibration: the checkpoint's calibration record, or None.
    band_pattern: the band-pattern detector's finding (``""``: nothing outside the nine classes).
    lanes_read: whether the lane layout normalisation found the gel's six lanes (``False``: the network saw the
        whole image, and the gel is referred); None when the bundle does not normalise the layout. Answered as
        ``lane_layout_used``.

    Raises:
        ValueError: when the heads have unexpected shapes or keys.
    """
    probs = heads["probabilities"].detach().float().cpu()
    if probs.shape != (len(IFE_CLASSES),):
        raise ValueError(f"probabilities must have shape ({len(IFE_CLASSES)},), got {list(probs.shape)}.")
    index = int(call_from_probabilities(probs[None])[0])
    result: dict[str, Any] = {
        "label": IFE_CLASSES[index],
        "label_index": index,
        "probabilities": _named(probs, IFE_CLASSES),
        "prediction": [
            {"idx": i, "label": name, "score": round(float(p), 6)} for i, (name, p) in enumerate(zip(IFE_CLASSES, probs))
        ],
    }
    if "severe_logits" in heads and "mild_logits" in heads:
        # the heads' probabilities at the same temperatures as the fused ones (ForwardHeads leaves the logits raw)
        temperatures = (calibration or {}).get("temperatures") or {}
        severe = torch.softmax(heads["severe_logits"].detach().float().cpu() / temperatures.get("severe", 1.0), dim=0)
        mild = torch.softmax(heads["mild_logits"].detach().float().cpu() / temperatures.get("mild", 1.0), dim=0)
        result["severe"] = {"call": SEVERE_CLASSES[int(severe.argmax())], "probabilities": _named(severe, SEVERE_CLASSES)}
        result["mild"] = {"call": MILD_CLASSES[int(mild.argmax())], "probabilities": _named(mild, MILD_CLASSES)}
        profiles = {"severe": heads["attention_severe"], "mild": heads["attention_mild"]}
    elif "attention" in heads:
        severe_index, mild_index = class_to_subtasks(index)
        result["severe"] = {"call": SEVERE_CLASSES[severe_index], "probabilities": None}
        result["mild"] = {"call": MILD_CLASSES[mild_index], "probabilities": None}
        profiles = {"class": heads["attention"]}
    else:
        raise ValueError(f"heads need severe/mild logits (multi-task) or an attention map (baseline), got {sorted(heads)}.")
    operating_point = (calibration or {}).get("operating_point")
    ((refer, reason),) = refer_decisions(
        probs[None], operating_point, [band_pattern or ""], calls=torch.tensor([index]), lanes_read=[lanes_read]
    )
    result.update(
        calibrated=bool((calibration or {}).get("temperatures")),
        refer=refer,
        refer_reason=reason,
        operating_point=dict(operating_point) if operating_point else None,
        lane_layout_used=lanes_read,
    )
    result["attention"] = {}
    for name, profile in profiles.items():
        if profile.ndim != 1:
            raise ValueError(f"attention profile {name!r} must be 1-D (rows), got shape {list(profile.shape)}.")
        result["attention"][name] = [round(float(v), 6) for v in profile.detach().float().cpu()]
    return result


class IFEMultiTaskInfer(LocalBundleInferTask):
    """Classification task for ``bundles/ife_multitask`` (no spatial restore: the answer is not an image).

    The bundle's preprocessing prepares the gel; the network runs through ``ForwardHeads`` so that the answer can
    carry both heads and their attention profiles, and :func:`ife_result` builds the JSON. The bundle's
    postprocessing is not run: it only turns the probabilities into a class index, which the JSON already has.

    Args:
        path: bundle folder.
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(
            path,
            conf,
            type=InferType.CLASSIFICATION,
            labels={name: i for i, name in enumerate(IFE_CLASSES)},
            add_post_restore=False,
        )
        #: (weights, their signature, the record's signature) and the record read for them
        self._calibration_read: tuple[tuple, dict[str, Any] | None] | None = None

    def calibration(self, weights: str | None) -> dict[str, Any] | None:
        """The calibration record of ``weights`` (:func:`read_calibration`), read again only when the weights file or
        its record changes (size or modification time).

        ``read_calibration`` hashes the weights to check that the record was fitted for them: 0.04 s for the
        bundle's 78 MB ResNet-18 weights on the development CPU, at every gel, which an active-learning strategy
        scoring a thousand gels would pay a thousand times. A stale record is therefore warned about once per
        version of the two files, not at every request.

        Args:
            weights: the weights file the request runs (:func:`requested_weights`), or None.

        Returns:
            the record, or None (no weights, no record, or a stale one).

        Raises:
            CalibrationError: when the record exists but is malformed (read again at the next request).
        """
        if not weights or not os.path.isfile(weights):
            return None
        key = (weights, _signature(weights), _signature(calibration_path(weights)))
        remembered = self._calibration_read
        if remembered is not None and remembered[0] == key:
            return remembered[1]
        record = read_calibration(weights)
        self._calibration_read = (key, record)  # one tuple, replaced whole: safe for concurrent requests
        return record

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict[str, Any]:
        inferer = self.inferer(data)
        # read per request: training replaces the checkpoint and its calibration while the app serves; and the record
        # of the weights _get_network loads (the request may name another models/*.pt), not model.pt's
        weights = requested_weights(
            self.get_path(), os.path.dirname(self.path[0]), data, bool(self._config.get("model_filename"))
        )
        calibration = self.calibration(weights)
        temperatures = (calibration or {}).get("temperatures")
        network = ForwardHeads(self._get_network(device, data), temperatures=temperatures).to(torch.device(device))
        inputs = data[self.input_key]
        inputs = inputs if torch.is_tensor(inputs) else torch.as_tensor(inputs)
        inputs = (inputs[None] if convert_to_batch else inputs).to(torch.device(device))
        with torch.no_grad():
            heads = inferer(inputs, network)
        heads = {k: v[0].detach().cpu() for k, v in heads.items()}
        data[self.output_label_key] = heads["probabilities"]
        data[HEADS_KEY] = heads
        data[CALIBRATION_KEY] = calibration
        return data

    def post_transforms(self, data=None) -> list:
        return []

    def writer(self, data: dict[str, Any], extension=None, dtype=None) -> tuple[None, dict[str, Any]]:
        pattern = data.get(BAND_PATTERN_KEY, "")
        pattern = pattern if isinstance(pattern, str) else ""
        return None, ife_result(data[HEADS_KEY], data.get(CALIBRATION_KEY), pattern, lanes_found(data[self.input_key]))


def _signature(path: str) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, or None when there is none."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns
