"""Fine-tuning a local bundle on the datastore's final labels."""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask

from custom_components.core.recipe import read_recipe
from custom_components.core.atomic import write_json_atomic

logger = logging.getLogger(__name__)

__all__ = ["LocalBundleTrainTask", "fraction", "non_negative_int", "positive_int"]


def non_negative_int(value: Any, name: str) -> int:
    """Parse a non-negative integer request parameter (an int or a string of digits).

    Raises:
        ValueError: when ``value`` is not a non-negative integer.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError(f"train parameter {name!r} must be a non-negative integer, got {value!r}.")
    return int(value)


def positive_int(value: Any, name: str) -> int:
    """Parse a positive integer request parameter (an int or a string of digits).

    Raises:
        ValueError: when ``value`` is not a positive integer.
    """
    if non_negative_int(value, name) < 1:
        raise ValueError(f"train parameter {name!r} must be a positive integer, got {value!r}.")
    return int(value)


def fraction(value: Any, name: str) -> float:
    """Parse a request parameter that is a share in (0, 1) (a number or a string of one).

    Raises:
        ValueError: when ``value`` is not a number strictly between 0 and 1.
    """
    try:
        share = float(value)
    except (TypeError, ValueError):
        share = 0.0
    if isinstance(value, bool) or not 0.0 < share < 1.0:
        raise ValueError(f"train parameter {name!r} must be in (0, 1), got {value!r}.")
    return share


class BundleIds(BundleConstants):
    """MONAI Label's bundle ids, but the epoch count goes to the bundles' one user-facing id, ``max_epochs``, the
    one their docs, scripts and logs speak of (the trainer and the learning-rate schedule follow it)."""

    def key_train_trainer_max_epochs(self) -> str:
        return "max_epochs"


class LocalBundleTrainTask(BundleTrainTask):
    """:class:`BundleTrainTask` for a bundle on disk that picks its own labels from the shared datastore.

    MONAI Label's task already fine-tunes from ``models/model.pt`` when it exists (it adds a ``CheckpointLoader``
    for ``@network``), overrides ``bundle_root``, ``device``, the epochs (``max_epochs``, see :class:`BundleIds`) and
    ``train#dataset#data``, and runs ``monai.bundle.run``. This subclass adds:

    - :meth:`select_datalist`: the subclass keeps the datastore entries whose label suits its model, in the form
      its bundle's datalist uses;
    - no validation list: the bundle takes its own validation split of the labelled images (``val_split`` sets its
      ``val_fraction``; IFE's is stratified by class, which keeps rare classes in validation);
    - :attr:`request_overrides`: train request parameters (image size, batch size, ...) mapped to bundle ids,
      each parsed and checked, so a request can make a run small and fast without editing the bundle;
    - fine-tuning rebuilds the network the checkpoint holds: the settings of its recipe
      (``models/model.recipe.json``) become overrides, except where the request sets the id itself.

    Args:
        path: bundle folder.
        conf: the app's ``--conf`` settings.

    Raises:
        FileNotFoundError: when the bundle has no train config.
    """

    #: request parameter -> (bundle config id, parser(value, name)); shown with the bundle's defaults in /info
    request_overrides: dict[str, tuple[str, Callable[[Any, str], Any]]] = {
        "val_split": ("val_fraction", fraction),
        "image_size": ("image_size", positive_int),
        "batch_size": ("batch_size", positive_int),
        "num_workers": ("num_workers", non_negative_int),
    }

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, const=BundleIds(), enable_tracking=False, load_strict=True)
        if not self.valid:
            raise FileNotFoundError(f"bundle {path!r} has no configs/{' or configs/'.join(self.const.configs())}.")
        self._request: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        options = super().config()
        for key, (config_id, _) in self.request_overrides.items():
            options[key] = self.bundle_config.get(config_id)
        return options

    @abstractmethod
    def select_datalist(self, datalist: list[dict[str, str]]) -> list[dict[str, Any]]:
        """Keep the entries this model trains on.

        Args:
            datalist: ``{"image": path, "label": path}`` of every datastore image with a final label.

        Returns:
            the bundle's datalist entries.
        """

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        entries = super()._fetch_datalist(request, datastore)
        selected = self.select_datalist(entries)
        if not selected:
            raise ValueError(
                f"{request.get('model')}: none of the {len(entries)} images with a final label has a label for this "
                "model; save labels with PUT /datastore/label?image=<id>&tag=final first."
            )
        logger.info(f"{request.get('model')}: {len(selected)} labelled images of {len(entries)}")
        return selected

    def _partition_datalist(self, datalist, request, shuffle=False):
        # None: no validation list, so the bundle splits "training" itself. One image cannot be split, and
        # validating on the training image would pick checkpoints on an inflated score (the bundles refuse an image
        # listed in both), so training needs a second labelled image.
        if len(datalist) == 1:
            raise ValueError(
                f"{request.get('model')}: only one labelled image ({datalist[0]['image']}); label at least two, so "
                "that one can validate the model trained on the others."
            )
        return datalist, None

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        self._request = dict(request)
        return super().__call__(request, datastore)

    def fine_tuning_settings(self) -> dict[str, Any]:
        """The checkpoint's recipe settings that fine-tuning must keep, as train config overrides.

        Only when the run starts from ``models/model.pt`` (``pretrained``, the default, and the file exists), and
        only ids that ``train.json`` sets to a plain value: ids it computes from the data (``$`` expressions such
        as the training scans' aspect) are computed again for the new data.
        """
        checkpoint = os.path.join(self.bundle_path, "models", self.const.model_pytorch())
        if not self._request.get("pretrained", True) or not os.path.isfile(checkpoint):
            return {}
        settings = read_recipe(checkpoint)["settings"]
        plain = {k: v for k, v in settings.items() if not str(self.bundle_config.get(k, "$")).startswith("$")}
        if plain:
            logger.info(f"Fine-tuning {checkpoint} with its recipe's settings {plain}")
        return plain

    def datastore_dataset_dir(self) -> str:
        """Folder of the datalist written from the datastore for the next run (inside the bundle's ``data/``)."""
        return os.path.join(self.bundle_path, "data", "monailabel")

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """Hand the datastore's entries to the bundle as a ``datalist.json``, the way a user's data reaches it.

        MONAI Label overrides ``train#dataset#data`` only; the bundles also read their datalist in ``initialize``
        (validation split, entry checks, class statistics, the log line) and would otherwise build their synthetic
        default data set for that. Writing the entries to ``dataset_dir`` instead runs the bundle's own data path
        unchanged, with its checks and its validation split, on exactly the labelled images.
        """
        datalist = {"training": overrides.pop(self.const.key_train_dataset_data())}
        if self.const.key_validate_dataset_data() in overrides:
            datalist["validation"] = overrides.pop(self.const.key_validate_dataset_data())
        overrides["dataset_dir"] = self.datastore_dataset_dir()
        write_json_atomic(datalist, os.path.join(overrides["dataset_dir"], "datalist.json"))
        for key, (config_id, parse) in self.request_overrides.items():
            if self._request.get(key) is not None:
                overrides[config_id] = parse(self._request[key], key)
        overrides.update({k: v for k, v in self.fine_tuning_settings().items() if k not in overrides})
        logger.info(f"Bundle overrides: {overrides}")
        return overrides
