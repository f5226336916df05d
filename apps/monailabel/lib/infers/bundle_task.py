"""Inference from a local bundle folder that also starts before the bundle has been trained."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.utils.others.generic import strtobool

from custom_components.core.recipe import mismatch_error, read_recipe

logger = logging.getLogger(__name__)

__all__ = ["LocalBundleInferTask", "SCORING_REQUEST_KEY"]

#: set (true) in the requests an active-learning strategy sends to score an image: the per-request warning of an
#: untrained model is then not logged (a strategy scoring a thousand images would log it a thousand times; it logs it
#: once per request itself); the answer still carries it
SCORING_REQUEST_KEY = "strategy_scoring"


class LocalBundleInferTask(BundleInferTask):
    """:class:`BundleInferTask` for a bundle on disk, with or without ``models/model.pt``.

    MONAI Label's ``BundleInferTask`` drops a bundle that has neither ``models/model.pt`` nor ``models/model.ts``.
    Here such a bundle still gets its network from ``network_def`` of ``configs/inference.json`` and serves random
    weights, with a warning in the log, in ``/info`` and in every result, until training writes the checkpoint (it
    is loaded at the next request, and reloaded whenever training replaces it).

    Everything else is ``BundleInferTask``'s: preprocessing, inferer and postprocessing from ``inference.json``
    (``LoadImaged`` kept with the bundle's reader settings, ``SaveImaged`` dropped), the ``model_filename`` option
    (without the resumable training state ``checkpoint.pt``) and, once a checkpoint exists at start, the bundle's
    displayable configs. ``inference.json`` reads the network settings and the geometry from the
    checkpoint's recipe (``models/model.recipe.json``), so the network built here is the one that was trained,
    whatever overrides training used; when training replaces the checkpoint with one of another recipe, the bundle
    config, the network and the labels are built again before the next request or ``/info`` (and once more when the
    weights arrive before their recipe). A checkpoint that still does not fit gets
    :class:`~custom_components.core.recipe.CheckpointMismatchError` naming the first mismatched layer (answered
    with its message, see ``main.py``).

    Args:
        path: bundle folder (holding ``configs/inference.json`` and ``configs/metadata.json``).
        conf: the app's ``--conf`` settings (``preload``: build the network on every device at start).
        type: the MONAI Label task type, e.g. ``InferType.SEGMENTATION``.
        labels: label name to value (segmentation) or to class index (classification); MONAI Label would take the
            lower-cased channel names of ``metadata.json``. Or a function that gives them for the network built
            from :attr:`bundle_config` (labels that depend on the checkpoint's recipe): it is asked again whenever
            a new recipe makes the network be built again.
        add_post_restore: append MONAI Label's ``Restored`` step to the postprocessing.

    Raises:
        FileNotFoundError: when the bundle has no inference config or no metadata.
    """

    def __init__(
        self,
        path: str,
        conf: dict[str, str],
        type: str | InferType,
        labels: dict[str, int] | Callable[[], dict[str, int]],
        add_post_restore: bool,
    ) -> None:
        self.checkpoint = os.path.join(path, "models", "model.pt")
        self._labels = labels
        super().__init__(path, conf, type=type, add_post_restore=add_post_restore, load_strict=True)
        if not hasattr(self, "bundle_config"):  # BundleInferTask only warns
            raise FileNotFoundError(f"bundle {path!r} has no configs/{' or configs/'.join(self.const.configs())}.")
        if not self.valid:
            # no checkpoint: BundleInferTask returned before building the network; finish the task it would have built
            logger.warning(self.untrained_warning())
            with open(os.path.join(path, "configs", self.const.metadata_json())) as f:
                metadata = json.load(f)
            self.key_image, image = next(iter(metadata["network_data_format"]["inputs"].items()))
            self.key_pred = next(iter(metadata["network_data_format"]["outputs"]))
            self.add_post_restore = add_post_restore
            BasicInferTask.__init__(
                self,
                path=self.checkpoint,
                network=self.bundle_config.get_parsed_content(self.const.key_network_def(), instantiate=True),
                type=type,
                labels=self.served_labels(),
                dimension=len(image["spatial_shape"]),
                description=metadata.get("description", ""),
                preload=strtobool(conf.get("preload", "false")),
                load_strict=True,
            )
            self.version = metadata.get("version")
            self.valid = True
        # the model_filename option lists models/*.pt: not the resumable training state, which holds no bare weights
        options = self._config.get("model_filename", [])
        self._config["model_filename"] = [name for name in options if name != "checkpoint.pt"]
        self.labels = self.served_labels()  # BundleInferTask's are the channel names of metadata.json
        # BundleInferTask keeps BasicInferTask's default keys; the bundle's metadata names its own
        self.input_key, self.output_label_key = self.key_image, self.key_pred

    def served_labels(self) -> dict[str, int]:
        """The labels of the network built now: the constructor's ``labels``, or what its function gives."""
        return self._labels() if callable(self._labels) else dict(self._labels)

    def _recipe_key(self) -> tuple[Any, str]:
        """What the network depends on: the recipe's network class and settings (not its time stamp, which every
        improving validation rewrites)."""
        recipe = read_recipe(self.checkpoint, warn=False)  # asked at every request; the config's reading warns
        return recipe.get("network"), json.dumps(recipe["settings"], sort_keys=True)

    def _load_bundle_config(self, path, config):
        # the config's network reads the checkpoint's recipe: remember which one it is built for
        self._built_for = self._recipe_key()
        return super()._load_bundle_config(path, config)

    def _rebuild_if_retrained(self) -> bool:
        """Training wrote a checkpoint of another recipe: build the config and the network it describes.

        Returns:
            whether the network was built again.
        """
        if self._recipe_key() == self._built_for:
            return False
        logger.info(f"{os.path.basename(self.bundle_path)}: new checkpoint recipe; building its network.")
        self.bundle_config = self._load_bundle_config(self.bundle_path, self.bundle_config_path)
        self.network = self.bundle_config.get_parsed_content(self.const.key_network_def(), instantiate=True)
        self.labels = self.served_labels()  # a recipe of other classes answers other labels
        self.clear_cache()  # BasicInferTask's per-device networks
        return True

    def _get_network(self, device, data):
        try:
            return super()._get_network(device, data)
        except RuntimeError as err:  # load_state_dict failed
            # a training run writes the weights a moment before their recipe: look at the recipe once more
            if self._rebuild_if_retrained():
                return super()._get_network(device, data)
            error = mismatch_error(self.checkpoint, self.network, self.model_state_dict, "inference.json")
            if error is None:
                raise
            raise error from err

    def has_checkpoint(self) -> bool:
        """Whether ``models/model.pt`` exists now (training may add it while the server runs)."""
        return os.path.isfile(self.checkpoint)

    def untrained_warning(self) -> str:
        """The message given while the bundle has no checkpoint."""
        return (
            f"{os.path.basename(self.bundle_path)}: no trained checkpoint at {self.checkpoint}; serving RANDOM "
            "weights until a training run (POST /train/<model>) or a copy of model.pt puts one there."
        )

    def info(self) -> dict[str, Any]:
        # a client sets up its label names from /info before it asks for a mask: describe the checkpoint on disk
        self._rebuild_if_retrained()
        i = super().info()
        i["bundle"] = self.bundle_path
        i["checkpoint"] = self.checkpoint if self.has_checkpoint() else None
        if not self.has_checkpoint():
            i["warning"] = self.untrained_warning()
        return i

    def __call__(self, request, callbacks=None):
        self._rebuild_if_retrained()
        result_file, result_json = super().__call__(request, callbacks)
        if not self.has_checkpoint():
            if not request.get(SCORING_REQUEST_KEY):
                logger.warning(self.untrained_warning())
            result_json["warning"] = self.untrained_warning()
        return result_file, result_json
