"""Fine-tuning ``bundles/oct_fluid_seg`` on the fluid masks saved in the datastore."""

from __future__ import annotations

from typing import Any

from lib.trainers.bundle_task import LocalBundleTrainTask
from lib.validation import IMAGE_EXTENSIONS

__all__ = ["OCTFluidSegTrain"]


class OCTFluidSegTrain(LocalBundleTrainTask):
    """Train task for the OCT fluid model: every image whose final label is a mask image.

    Masks are checked when saved (single channel, the image's size, values {0, 1} or {0, 255}); images whose
    final label is a JSON class label belong to the IFE model and are skipped.

    Request parameters beyond MONAI Label's (``max_epochs``, ``val_split``, ``pretrained``, ``device``):
    ``image_size`` (the side of the square training crop), ``batch_size``, ``num_workers``.
    """

    def select_datalist(self, datalist: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [dict(entry) for entry in datalist if entry["label"].lower().endswith(IMAGE_EXTENSIONS)]
