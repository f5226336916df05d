"""Fine-tuning a local bundle on the datastore's final labels."""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask

from custom_components.core.atomic import write_json_atomic
from custom_components.core.recipe import (
    CheckpointMismatchError,
    RecipeError,
    RecipeMismatchError,
    read_recipe,
    trained_settings,
)

logger = logging.getLogger(__name__)

__all__ = ["PRETRAINED_CHECKPOINT", "LocalBundleTrainTask", "fraction", "non_negative_int", "positive_int"]

#: train request parameter naming a checkpoint to fine-tune from; ``--conf <model>_pretrained_checkpoint`` is its
#: default for each model
PRETRAINED_CHECKPOINT = "pretrained_checkpoint"


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
      (``models/model.recipe.json``) become overrides, except where the request sets the id itself (fine-tuning
      ``models/model.pt``) or :attr:`data_settings`;
    - :meth:`given_checkpoint`: a run can start from a given checkpoint (``pretrained_checkpoint``, or
      ``--conf <model>_pretrained_checkpoint``) instead of ``models/model.pt``. It goes to the bundle as its
      ``pretrained`` id, whose ``load_pretrained`` loads it and checks its recipe and whose ``RecipeSaver`` records it
      as ``started_from``; MONAI Label's loader is then not added. The checkpoint's recipe settings are the run's, and
      a request that sets one of them otherwise is refused (:meth:`check_request_settings`).

    A refusal raised in the training subprocess ends its output, so ``GET /train/`` shows it as the last line of the
    ``ERROR`` task's ``details``: MONAI Label 0.8.5 starts the subprocess before any app code sees the request's
    parameters, so it cannot be answered with a 4xx.

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
    #: recipe ids that say how the datastore's files are read rather than what the network is (the bundle's
    #: ``load_pretrained`` lets them differ): the bundle's own value is used, never a checkpoint's
    data_settings: tuple[str, ...] = ()
    #: what a checkpoint was trained with where its recipe is silent (the bundle's ``RECIPE_DEFAULTS``, as its
    #: inference reads them): a setting added to the recipe later still has the value the older checkpoint used
    recipe_defaults: Mapping[str, Any] = {}

    def __init__(self, path: str, conf: dict[str, str]) -> None:
        super().__init__(path, conf, const=BundleIds(), enable_tracking=False, load_strict=True)
        if not self.valid:
            raise FileNotFoundError(f"bundle {path!r} has no configs/{' or configs/'.join(self.const.configs())}.")
        self._request: dict[str, Any] = {}
        self._given: str | None = None

    def config(self) -> dict[str, Any]:
        options = super().config()
        options[PRETRAINED_CHECKPOINT] = ""  # empty: the --conf default, if any
        for key, (config_id, _) in self.request_overrides.items():
            options[key] = self.bundle_config.get(config_id)
        return options

    def given_checkpoint(self, request: dict[str, Any]) -> str | None:
        """The checkpoint a run is asked to start from, checked before anything else runs.

        The request's ``pretrained_checkpoint``, else ``--conf <model>_pretrained_checkpoint``; ``"pretrained":
        false`` trains from scratch, the ``--conf`` default unused. A path on the server, relative to the server's
        working folder unless absolute.

        Args:
            request: the train request (``model``, ``pretrained``, ``pretrained_checkpoint``, ...).

        Returns:
            the checkpoint's absolute path, or None when none is given (the run starts from ``models/model.pt``
            when it exists and ``pretrained`` is true, as MONAI Label does).

        Raises:
            ValueError: for a ``pretrained_checkpoint`` that is not a string, or given with ``"pretrained": false``.
            FileNotFoundError: when the file does not exist (the message names it).
            RecipeError: when its ``.recipe.json`` exists but cannot be read.
        """
        model = request.get("model")
        value = request.get(PRETRAINED_CHECKPOINT)
        origin = f"train parameter {PRETRAINED_CHECKPOINT!r}"
        if value and not request.get("pretrained", True):
            raise ValueError(f"{model}: {origin} {value!r} was given with \"pretrained\": false; drop one of them.")
        if not value and request.get("pretrained", True):
            value = self.conf.get(f"{model}_{PRETRAINED_CHECKPOINT}")
            origin = f"--conf {model}_{PRETRAINED_CHECKPOINT}"
        if not value:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{model}: {origin} must be the path of a checkpoint file, got {value!r}.")
        path = os.path.abspath(value)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{model}: {origin} {value!r}: no such file ({path} on the server); give the path of a model.pt "
                "that the server can read."
            )
        read_recipe(path)  # an unreadable recipe is named now, not after the bundle has built its data
        logger.info(f"{model}: fine-tuning from {path} ({origin})")
        return path

    def starting_checkpoint(self) -> str | None:
        """The checkpoint this run starts from: the given one, else ``models/model.pt`` when it exists and the
        request's ``pretrained`` is true (the default), else None (training from scratch)."""
        if self._given is not None:
            return self._given
        checkpoint = os.path.join(self.bundle_path, "models", self.const.model_pytorch())
        return checkpoint if self._request.get("pretrained", True) and os.path.isfile(checkpoint) else None

    def check_request_settings(self, overrides: dict[str, Any]) -> None:
        """Refuse request settings that differ from the given checkpoint's recipe (``image_size``, say): the bundle
        fine-tunes only at the recipe it was trained with (``models/model.pt``, whose recipe a request may change,
        is not checked here).

        Args:
            overrides: bundle config id -> value set by the request's parameters.

        Raises:
            RecipeMismatchError: naming the file, each setting and both values.
        """
        if self._given is None:
            return
        trained = read_recipe(self._given, warn=False)["settings"]
        asked = {key: config_id for key, (config_id, _) in self.request_overrides.items() if config_id in overrides}
        problems = [
            f"{key}: checkpoint {trained[config_id]!r}, request {overrides[config_id]!r}"
            for key, config_id in asked.items()
            if config_id in trained and overrides[config_id] != trained[config_id]
        ]
        if problems:
            raise RecipeMismatchError(
                f"{self._request.get('model')}: cannot fine-tune from {self._given}: the request's settings differ "
                f"from its recipe ({'; '.join(problems)}). Drop them from the request (the checkpoint's values are "
                "used) or start from another checkpoint."
            )

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
        self.take_request(request)
        return super().__call__(request, datastore)

    def take_request(self, request: dict[str, Any]) -> None:
        """Keep a train request's parameters for the overrides, and check the checkpoint it gives first, so that a
        missing file fails the run before the datastore is read.

        Args:
            request: the train request.

        Raises:
            see :meth:`given_checkpoint`.
        """
        self._request = dict(request)
        self._given = self.given_checkpoint(request)

    def _load_checkpoint(self, model_pytorch: str, pretrained: Any, train_handlers: list[dict[str, Any]]) -> None:
        # one source of the starting weights: a given checkpoint is the bundle's "pretrained", so MONAI Label's
        # loader of models/model.pt is not added; nor is it for "pretrained": false, where MONAI Label 0.8.5 would
        # fail on os.path.exists(None)
        if self._given is None and pretrained:
            super()._load_checkpoint(model_pytorch, pretrained, train_handlers)

    def run_single_gpu(self, request: dict[str, Any], overrides: dict[str, Any]) -> None:
        """Run the bundle; a checkpoint it refuses (its ``load_pretrained``: another network, a recipe setting
        computed from the data, weights that do not fit) is raised again as the last line of the output.

        MONAI wraps an error of a config expression in ``RuntimeError("Failed to evaluate ...")``, and the
        traceback of the chain is longer than the 20 lines of output ``GET /train/`` keeps.
        """
        try:
            super().run_single_gpu(request, overrides)
        except Exception as err:
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, (RecipeError, CheckpointMismatchError)):
                cause = cause.__cause__
            if cause is None:
                raise
            raise type(cause)(f"{request.get('model')}: {cause}") from err

    def fine_tuning_settings(self) -> dict[str, Any]:
        """The starting checkpoint's recipe settings that fine-tuning must keep, as train config overrides.

        Only when the run starts from a checkpoint (:meth:`starting_checkpoint`), and only ids that ``train.json``
        sets to a plain value: ids it computes from the data (``$`` expressions such as the training scans' aspect)
        are computed again for the new data, and :attr:`data_settings` keep the bundle's value.
        """
        checkpoint = self.starting_checkpoint()
        if checkpoint is None:
            return {}
        settings = trained_settings(checkpoint, self.recipe_defaults)
        plain = {
            k: v
            for k, v in settings.items()
            if k not in self.data_settings and not str(self.bundle_config.get(k, "$")).startswith("$")
        }
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
        for key, (config_id, parse) in self.request_overrides.items():
            if self._request.get(key) is not None:
                overrides[config_id] = parse(self._request[key], key)
        self.check_request_settings(overrides)
        datalist = {"training": overrides.pop(self.const.key_train_dataset_data())}
        if self.const.key_validate_dataset_data() in overrides:
            datalist["validation"] = overrides.pop(self.const.key_validate_dataset_data())
        overrides["dataset_dir"] = self.datastore_dataset_dir()
        write_json_atomic(datalist, os.path.join(overrides["dataset_dir"], "datalist.json"))
        if self._given is not None:
            overrides["pretrained"] = self._given
        overrides.update({k: v for k, v in self.fine_tuning_settings().items() if k not in overrides})
        logger.info(f"Bundle overrides: {overrides}")
        return overrides
