"""Fine-tuning ``bundles/oct_fluid_seg`` on the fluid masks saved in the datastore, binary or typed."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from custom_components.core.image_files import read_array
from custom_components.core.recipe import RecipeMismatchError, trained_settings
from custom_components.oct.bundle import RECIPE_DEFAULTS
from custom_components.oct.fluid_types import BINARY_FLUID, FLUID_TYPES, check_fluid_classes, fluid_classes_of_masks
from lib.trainers.bundle_task import PRETRAINED_CHECKPOINT, LocalBundleTrainTask
from lib.validation import IMAGE_EXTENSIONS

__all__ = ["OCTFluidSegTrain", "ClassTransferLoader", "fine_tuning_classes"]

logger = logging.getLogger(__name__)


def fine_tuning_classes(
    mask_values: Iterable[Iterable[int]], checkpoint_classes: Sequence[str] | None
) -> tuple[str, ...]:
    """The fluid classes a training run on the datastore's masks segments.

    The bundle's own reading (:func:`~custom_components.oct.fluid_types.fluid_classes_of_masks`, what
    ``fluid_classes: auto`` does): masks with a 2 or a 3 are label maps of the three types, other masks are binary.
    One case it cannot tell apart is settled by the checkpoint fine-tuned: label maps that hold IRF only (values 0
    and 1), or no fluid at all, read as binary, but a typed model answers label maps, so masks corrected from its
    answers keep its three types.

    Args:
        mask_values: the set of pixel values of each mask.
        checkpoint_classes: the classes of the checkpoint the run starts from, or None (training from scratch).

    Returns:
        ``("fluid",)`` or ``("IRF", "SRF", "PED")``.

    Raises:
        ValueError: when some masks are binary 0/255 and others hold fluid-type values (the bundle's message).
    """
    values = [{int(v) for v in mask} for mask in mask_values]
    classes = fluid_classes_of_masks(values)
    if checkpoint_classes is not None and check_fluid_classes(checkpoint_classes) == FLUID_TYPES:
        if classes == BINARY_FLUID and set().union(*values) <= {0, 1}:
            return FLUID_TYPES
    return classes


class ClassTransferLoader:
    """Start a run of other fluid classes than its checkpoint's from the checkpoint's weights: every tensor that
    fits the network is loaded; the others (the output layer, one channel per class) keep their initialisation.

    A tensor fits when it has the network's shape, or when its module resizes it as it loads it (TransUNet's
    position embedding, for a request with another ``image_size``), as a plain ``load_state_dict`` would. Replaces
    MONAI Label's ``CheckpointLoader`` for such a run: its strict load fails on the output layer, and MONAI's
    ``strict_shape=False`` loads nothing from a bare ``state_dict`` such as ``model.pt`` (``copy_model_state`` is
    given the checkpoint wrapped under its ``load_dict`` key, which matches no layer).

    Args:
        load_path: the checkpoint, a bare ``state_dict`` (``models/model.pt``).
        network: the network the run trains (a DDP or DataParallel wrapper is unwrapped).
    """

    def __init__(self, load_path: str, network: torch.nn.Module) -> None:
        self.load_path, self.network = load_path, getattr(network, "module", network)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> list[str]:
        """Load the fitting tensors (``engine``: the trainer starting, unused).

        Returns:
            the names of the network's tensors that keep their initialisation, as logged.
        """
        state = torch.load(self.load_path, map_location="cpu", weights_only=True)
        own = self.network.state_dict()
        same = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        self.network.load_state_dict(same, strict=False)
        fresh = [k for k in own if k not in state]
        for key in (k for k in own if k in state and k not in same):
            # the owning module's own loading resizes what it can; an error means the tensor is left as it is
            path, _, name = key.rpartition(".")
            errors: list[str] = []
            self.network.get_submodule(path)._load_from_state_dict({name: state[key]}, "", {}, False, [], [], errors)
            if errors:
                fresh.append(key)
        logger.warning(
            f"{self.load_path} segments other fluid classes: fine-tuning from its weights but for "
            f"{', '.join(fresh) or 'none'}, which start from their initialisation."
        )
        return fresh


class OCTFluidSegTrain(LocalBundleTrainTask):
    """Train task for the OCT fluid model: every image whose final label is a mask image.

    Masks are checked when saved (single channel, the image's size, values {0, 1} or {0, 255}, or a fluid-type
    label map within {0, 1, 2, 3}); images whose final label is a JSON class label belong to the IFE model and are
    skipped. The run segments the classes the masks hold (:func:`fine_tuning_classes`), set as the bundle's
    ``fluid_classes``: label maps with SRF or PED train the three types, binary masks the one fluid class. A
    ``models/model.pt`` of other classes than the masks' is fine-tuned all but its output layer
    (:class:`ClassTransferLoader`), so a binary model becomes a typed one on the label maps corrected from its
    answers; a given checkpoint (``pretrained_checkpoint``) of other classes is refused, since the bundle's
    ``load_pretrained`` takes the whole network of its recipe.

    Request parameters beyond MONAI Label's (``max_epochs``, ``val_split``, ``pretrained``, ``device``):
    ``pretrained_checkpoint`` (a checkpoint to fine-tune from), ``image_size`` (the side of the square training
    crop), ``batch_size``, ``num_workers``.
    """

    def select_datalist(self, datalist: list[dict[str, str]]) -> list[dict[str, Any]]:
        return [dict(entry) for entry in datalist if entry["label"].lower().endswith(IMAGE_EXTENSIONS)]

    def fine_tuning_settings(self) -> dict[str, Any]:
        settings = super().fine_tuning_settings()
        # the recipe records the classes the checkpoint segments; those of the next run come from its masks
        settings.pop("fluid_classes", None)
        return settings

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Set the run's fluid classes from its masks, and load ``models/model.pt`` of other classes all but its
        output layer (see the class docstring).

        Raises:
            RecipeMismatchError: when a given checkpoint segments other classes than the masks hold (both named).
        """
        entries = [
            *overrides[self.const.key_train_dataset_data()],
            *(overrides.get(self.const.key_validate_dataset_data()) or []),
        ]
        handlers = overrides.get(self.const.key_train_handlers(), [])
        # MONAI Label's loader of models/model.pt (added when it exists, "pretrained" is true and no checkpoint is
        # given)
        loader = next((h for h in handlers if isinstance(h, dict) and h.get("_target_") == "CheckpointLoader"), None)
        checkpoint = self._given or (loader["load_path"] if loader is not None else None)
        trained = trained_settings(checkpoint, RECIPE_DEFAULTS)["fluid_classes"] if checkpoint else None
        classes = fine_tuning_classes((np.unique(read_array(e["label"])) for e in entries), trained)
        overrides["fluid_classes"] = list(classes)  # not "auto": the classes above are those the loader expects
        if self._given is not None and tuple(trained) != classes:
            raise RecipeMismatchError(
                f"{self._request.get('model')}: cannot fine-tune from {self._given}: it segments "
                f"{', '.join(trained)}, the saved masks hold {', '.join(classes)}. Save masks of its classes, or "
                f"leave {PRETRAINED_CHECKPOINT} unset to fine-tune models/model.pt, whose output layer then starts "
                "afresh."
            )
        if trained is not None and tuple(trained) != classes:
            handlers[handlers.index(loader)] = {
                "_target_": f"{__name__}.{ClassTransferLoader.__name__}",
                "load_path": checkpoint,
                "network": loader["load_dict"][self.model_dict_key],
            }
            logger.info(
                f"{os.path.basename(checkpoint)} segments {', '.join(trained)}; the masks hold {', '.join(classes)}: "
                "its output layer starts afresh."
            )
        return super()._update_overrides(overrides)
