"""``oct_entropy``: the unlabelled B-scan (or volume) with the highest mean predictive entropy inside the retina."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monailabel.tasks.infer.basic_infer import CallBackTypes

from lib.strategies.base import SCORING_REQUEST_KEY, UncertaintyStrategy
from lib.strategies.scores import RETINA_SIGMA_FRACTION, RETINA_THRESHOLD, bscan_entropies, volume_score

__all__ = ["OCTEntropy"]


class OCTEntropy(UncertaintyStrategy):
    """Offers the B-scan whose fluid map is least certain inside the retina; a volume counts its worst B-scan.

    Each image is run through the app's OCT infer task (:class:`~lib.infers.oct_fluid_seg.OCTFluidSegInfer`): the
    bundle's reader (a PNG B-scan, or a multi-page TIFF volume), per-B-scan intensity scaling and ``BScanInferer``
    at the checkpoint's recipe. The network's fluid logits are taken as the inferer returns them (at the input's
    size, before the bundle's threshold), one channel per fluid class, turned into per-pixel entropy in bits (each
    class's :func:`~lib.strategies.scores.binary_entropy`, summed over the classes: a binary model's pixel scores 0
    to 1 bit, a typed model's 0 to 3) and averaged over the retina of each B-scan
    (:func:`~lib.strategies.scores.retina_region`: the bundle segments no retina, so it is the span of bright tissue
    in each column of the smoothed B-scan). A blank B-scan has no retina and scores 0, as the bundle reports no fluid
    there. No mask is written.

    Args:
        infer_task: the app's OCT infer task.
        cache_dir: folder of the score cache, or None.
        kwargs: see :class:`~lib.strategies.base.UncertaintyStrategy` (``images``, ``served_wait_s``,
            ``score_budget_s``).
    """

    name = "oct_entropy"
    # unchanged by fluid types: a binary model's scores are the same, and a typed model is another model version,
    # whose scores the cache keeps apart anyway
    score_version = f"oct-1: mean binary entropy in the retina, sigma {RETINA_SIGMA_FRACTION:.5f} H, {RETINA_THRESHOLD}"

    def __init__(self, infer_task: Any, cache_dir: str | None, **kwargs: Any) -> None:
        kwargs.setdefault(
            "description",
            "OCT: the unlabelled B-scan (a volume: its worst B-scan) with the highest mean fluid entropy inside the "
            "retina; options: images, served_wait_s, score_budget_s",
        )
        super().__init__(infer_task, cache_dir, **kwargs)

    def score_image(self, path: str) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def entropies(data: dict[str, Any]) -> dict[str, Any]:
            # called between the inferer and the bundle's postprocessing: the logits, not yet thresholded
            found["bscans"] = bscan_entropies(data[self.task.input_key], data[self.task.output_label_key])
            return data

        request = {"image": path, "logging": "WARNING", "skip_writer": True, SCORING_REQUEST_KEY: True}
        self.task(request, callbacks={CallBackTypes.INFERER: entropies})
        per_bscan = found["bscans"]
        score = volume_score(per_bscan)
        score["retina_fraction"] = round(float(per_bscan[score["bscan"]]["retina_fraction"]), 4)
        return score

    def rank_key(self, score: Mapping[str, Any], options: Mapping[str, Any]) -> tuple:
        return (-float(score["entropy"]),)
