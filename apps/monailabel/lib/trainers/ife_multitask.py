"""Fine-tuning ``bundles/ife_multitask`` on the IFE class labels saved in the datastore."""

from __future__ import annotations

from typing import Any

from custom_components.ife import RECIPE_DEFAULTS
from lib.trainers.bundle_task import LocalBundleTrainTask
from lib.validation import LABEL_JSON_EXTENSION, parse_class_label

__all__ = ["IFEMultiTaskTrain"]


class IFEMultiTaskTrain(LocalBundleTrainTask):
    """Train task for the IFE classifier.

    The class of a gel is its final LABEL FILE: ``labels/final/<image id>.json`` holding
    ``{"label": "<class name>"}``, saved with ``PUT /datastore/label?image=<id>&tag=final`` (the datastore checks
    the name on upload). Images whose final label is a mask belong to the OCT model and are skipped. The bundle
    receives ``{"image": path, "label": class name}`` entries, the format of its own datalist.

    Request parameters beyond MONAI Label's (``max_epochs``, ``val_split``, ``pretrained``, ``device``):
    ``pretrained_checkpoint`` (a checkpoint to fine-tune from), ``image_size`` (the side of the square network
    input), ``batch_size``, ``num_workers``.
    """

    #: how the gels are laid out is a property of the datastore's images, normalised before the network sees them
    #: (the bundle fine-tunes across orientations): a checkpoint trained on gels of another orientation keeps the
    #: bundle's own setting
    data_settings = ("lane_orientation",)
    #: a model of bundle 0.7.0 or earlier has no tie_attention in its recipe: it was trained untied
    recipe_defaults = RECIPE_DEFAULTS

    def select_datalist(self, datalist: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [
            {"image": entry["image"], "label": parse_class_label(entry["label"], entry["label"])}
            for entry in datalist
            if entry["label"].lower().endswith(LABEL_JSON_EXTENSION)
        ]
