"""``ife_least_certain``: the unlabelled gel whose calibrated call is least certain, the referred gels first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from custom_components.ife.calibration.record import CalibrationError, calibration_path
from custom_components.ife.classes import IFE_CLASSES
from custom_components.core.recipe import CheckpointMismatchError, RecipeError
from lib.strategies.base import SCORING_REQUEST_KEY, UncertaintyStrategy
from lib.strategies.scores import IFE_MEASURES, ife_rank_key, ife_uncertainty

__all__ = ["IFELeastCertain"]


class IFELeastCertain(UncertaintyStrategy):
    """Offers the gel that the refer-to-expert rule flags, else the one whose call is least certain.

    Each gel is scored by the app's IFE infer task (:class:`~lib.infers.ife_multitask.IFEMultiTaskInfer`), so with
    the bundle's preprocessing (lane layout, band-pattern detector), the weights a request without
    ``model_filename`` runs, and the calibration record of those weights (temperatures on the probabilities, the
    operating point for the refer decision): the score is what ``/infer/ife_multitask`` answers for the gel.
    Gels with ``refer`` true come first, then the lowest ``measure`` (:mod:`lib.strategies.scores`: ``confidence``
    = ``p[call]``, the default, the quantity the refer rule thresholds; or ``margin`` to the runner-up class).
    Without a calibration record the probabilities are the network's own and only an unusual band pattern or
    unread lanes refer.

    The model version of the cache covers the weights, their recipe and their calibration record: recalibrating
    the same weights rescores every gel.

    Args:
        infer_task: the app's IFE infer task.
        cache_dir: folder of the score cache, or None.
        measure: ``confidence`` (default) or ``margin``; a request may choose with ``{"measure": "margin"}``.
        kwargs: see :class:`~lib.strategies.base.UncertaintyStrategy` (``images``, ``served_wait_s``,
            ``score_budget_s``).

    Raises:
        ValueError: on an unknown measure or another bad setting.
    """

    name = "ife_least_certain"
    score_version = "ife-1: ife_result probabilities, label_index, refer"
    model_errors = (CheckpointMismatchError, RecipeError, CalibrationError)

    def __init__(self, infer_task: Any, cache_dir: str | None, measure: str = "confidence", **kwargs: Any) -> None:
        kwargs.setdefault(
            "description",
            "IFE: the unlabelled gel whose calibrated call is least certain (refer-to-expert gels first); "
            "options: measure (confidence | margin), images, served_wait_s, score_budget_s",
        )
        super().__init__(infer_task, cache_dir, **kwargs)
        self.measure = _check_measure(measure)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "measure": self.measure}

    def request_options(self, request: Mapping[str, Any]) -> dict[str, Any]:
        options = super().request_options(request)
        options["measure"] = _check_measure(request.get("measure", self.measure))
        return options

    def model_files(self, weights: str) -> list[str]:
        return [*super().model_files(weights), calibration_path(weights)]

    def score_image(self, path: str) -> dict[str, Any]:
        _, answer = self.task({"image": path, "logging": "WARNING", SCORING_REQUEST_KEY: True})
        probabilities = [answer["probabilities"][name] for name in IFE_CLASSES]
        score = ife_uncertainty(probabilities, int(answer["label_index"]))
        score.update(
            label=answer["label"],
            refer=bool(answer["refer"]),
            refer_reason=answer["refer_reason"],
            calibrated=bool(answer["calibrated"]),
        )
        return score

    def rank_key(self, score: Mapping[str, Any], options: Mapping[str, Any]) -> tuple:
        return ife_rank_key(score, options["measure"])


def _check_measure(value: Any) -> str:
    if value not in IFE_MEASURES:
        raise ValueError(f"measure must be one of {', '.join(IFE_MEASURES)}, got {value!r}.")
    return value
