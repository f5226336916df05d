"""MONAI Label app serving the repository's two bundles: OCT fluid segmentation and IFE gel classification.

Start it on a folder of images (see README.md beside this file)::

    .venv/bin/python -m monailabel.main start_server --app apps/monailabel --studies /path/to/images

``--conf`` settings:

- ``models``: ``all`` (default) or a comma-separated subset of ``oct_fluid_seg,ife_multitask``.
- ``bundles_dir``: folder holding the bundle folders (default: ``bundles/`` of this repository).
- ``skip_trainers``: ``true`` serves inference only.
- ``preload``: ``true`` builds the networks at start rather than on the first request.
- ``<model>_images`` (``oct_fluid_seg_images``, ``ife_multitask_images``): comma-separated id patterns of the images
  that model's active-learning strategy offers (default ``*``: every unlabelled image); set them when B-scans and
  gels share the studies folder (``oct_*``, ``gel_*``).
- ``<model>_pretrained_checkpoint`` (``oct_fluid_seg_pretrained_checkpoint``, ``ife_multitask_pretrained_checkpoint``):
  a checkpoint on the server that that model's training runs start from instead of ``models/model.pt``, unless a
  train request names its own (``pretrained_checkpoint``) or asks ``"pretrained": false`` (default: none).
- ``ife_measure``: ``confidence`` (default) or ``margin``, what ``ife_least_certain`` ranks by.
- ``strategy_served_wait_s``: an image a strategy offered less than this many seconds ago is offered after the
  others (default 3600; 0 always offers the most uncertain).
- ``strategy_score_budget_s``: at most this many seconds of scoring per ``/activelearning`` request (default none:
  every unscored image is scored).
- ``strategy_cache_dir``: folder of the strategies' score caches (default ``<studies>/.strategy_scores``, or
  ``<app>/.strategy_scores`` for a read-only or remote datastore).

Everything is read from the local bundle folders: no model zoo, no download, no network access.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import monailabel
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

from custom_components.core.recipe import CheckpointMismatchError, RecipeError
from custom_components.ife.lanes import LaneLayoutError
from lib.configs.ife_multitask import IFEMultiTaskConfig
from lib.configs.oct_fluid_seg import OCTFluidSegConfig
from lib.datastore import CheckedLocalDatastore
from lib.validation import check_identifier, http_errors, is_server_upload, read_image_size, upload_removed_on_error

logger = logging.getLogger(__name__)

#: model name (= bundle folder name) -> its task configuration
TASK_CONFIGS: dict[str, type[TaskConfig]] = {
    "oct_fluid_seg": OCTFluidSegConfig,
    "ife_multitask": IFEMultiTaskConfig,
}


def select_models(value: str) -> list[str]:
    """Parse the ``models`` setting.

    Args:
        value: ``all`` or comma-separated model names.

    Returns:
        the selected names, in :data:`TASK_CONFIGS` order.

    Raises:
        ValueError: when the setting is empty or names an unknown model.
    """
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        raise ValueError(f"--conf models must be 'all' or some of {', '.join(TASK_CONFIGS)}, got {value!r}.")
    if "all" in names:
        return list(TASK_CONFIGS)
    unknown = [n for n in names if n not in TASK_CONFIGS]
    if unknown:
        raise ValueError(f"--conf models names unknown model(s) {unknown}; choose from all, {', '.join(TASK_CONFIGS)}.")
    return [n for n in TASK_CONFIGS if n in names]


class BundlesApp(MONAILabelApp):
    """The app: one :class:`TaskConfig` per bundle, a checked local datastore, the models' uncertainty strategies,
    and 4xx answers for bad requests.

    Args:
        app_dir: this folder.
        studies: the folder of images (B-scans and gels may share it).
        conf: ``--conf`` settings (see the module docstring).

    Raises:
        ValueError: for a bad ``models`` setting.
        FileNotFoundError: when a selected bundle is missing.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        default_bundles = os.path.join(app_dir, os.pardir, os.pardir, "bundles")
        bundles_dir = os.path.realpath(conf.get("bundles_dir") or default_bundles)
        self.task_configs: dict[str, TaskConfig] = {}
        for name in select_models(conf.get("models", "all")):
            config = TASK_CONFIGS[name]()
            config.init(name, bundles_dir, conf, None)
            self.task_configs[name] = config
        logger.info(f"+++ Models: {list(self.task_configs)} from {bundles_dir}")

        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"IFE and OCT bundles (MONAI Label {monailabel.__version__})",
            description="OCT fluid segmentation (TransUNet) and multi-task IFE gel classification",
            version=monailabel.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()
        return CheckedLocalDatastore(
            self.studies,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {name: config.infer() for name, config in self.task_configs.items()}

    def init_trainers(self) -> dict[str, TrainTask]:
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        return {name: config.trainer() for name, config in self.task_configs.items()}

    def init_strategies(self) -> dict[str, Strategy]:
        """MONAI Label's ``random`` and ``first``, and the uncertainty strategy of each served model
        (``oct_entropy``, ``ife_least_certain``; see ``lib/strategies``), scoring with the same infer task as
        ``/infer``.

        Raises:
            ValueError: on a bad strategy setting in ``--conf``.
        """
        strategies: dict[str, Strategy] = {"random": Random(), "first": First()}
        cache_dir = self._strategy_cache_dir()
        for name, config in self.task_configs.items():
            strategies.update(config.strategy(self._infers[name], cache_dir) or {})
        if len(self.task_configs) > 1 and not any(f"{name}_images" in self.conf for name in self.task_configs):
            logger.warning(
                "+++ Active learning: every strategy considers every unlabelled image; if B-scans and gels share the "
                f"studies folder, set --conf {'/'.join(f'{n}_images' for n in self.task_configs)} to id patterns "
                "of each model's images (e.g. oct_*, gel_*)."
            )
        logger.info(f"+++ Strategies: {list(strategies)}; score caches in {cache_dir}")
        return strategies

    def _strategy_cache_dir(self) -> str:
        if self.conf.get("strategy_cache_dir"):
            return os.path.realpath(self.conf["strategy_cache_dir"])
        # beside the images they score, so that they follow the datastore; not in a datastore that must not be
        # written (read-only) or is not a folder (DICOMweb, XNAT, DSA)
        if isinstance(self._datastore, CheckedLocalDatastore) and not settings.MONAI_LABEL_DATASTORE_READ_ONLY:
            return os.path.join(os.path.realpath(self.studies), ".strategy_scores")
        return os.path.join(os.path.realpath(self.app_dir), ".strategy_scores")

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run an active-learning strategy; an unknown one gets 404 with the list (MONAI Label answers 500).

        Raises:
            HTTPException: 404 for an unknown strategy.
        """
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise HTTPException(
                status_code=404,
                detail=f"unknown active-learning strategy {strategy!r}; available: {', '.join(self._strategies)}.",
            )
        return super().next_sample(request)

    def _unknown_model(self, model: Any, what: str) -> HTTPException:
        # the app's own registry: MONAI Label 0.8.5 has no public accessor for its infer and train tasks
        return HTTPException(
            status_code=404, detail=f"unknown model {model!r} for {what}; available: {', '.join(self.task_configs)}."
        )

    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        """Check the model and the image, then run MONAI Label's inference.

        Raises:
            HTTPException: 404 for an unknown model or image id, 400 for an image id that is a path,
                415 for a file that is not a readable 2D image; 500 with the reason when the model's checkpoint
                does not fit its network or its recipe is unreadable (a server-side problem, named, never a bare
                500). An uploaded file is deleted whenever the request fails (see :func:`upload_removed_on_error`).
        """
        with upload_removed_on_error(request.get("image")):
            return self._checked_infer(request, datastore)

    def _checked_infer(self, request: dict[str, Any], datastore: Datastore | None) -> dict[str, Any]:
        model = request.get("model")
        if model not in self.task_configs:
            raise self._unknown_model(model, "inference")
        image = request.get("image")
        if isinstance(image, str):
            what = "the uploaded file"
            sessions = self.sessions()
            if is_server_upload(image) or (sessions is not None and _is_inside(image, sessions.store_path)):
                path = image
            else:
                with http_errors(400):
                    check_identifier(image, "image id")
                store = datastore if datastore else self.datastore()
                what = f"image {image!r}"
                path = store.get_image_uri(image)
                if not path or not os.path.isfile(path):
                    raise HTTPException(
                        status_code=404,
                        detail=f"image id {image!r} is not in the datastore; upload a file with -F file=@image.png "
                        "or add it with PUT /datastore/image.",
                    )
            with http_errors(415):
                read_image_size(path, what)
        try:
            return super().infer(request, datastore)
        except (CheckpointMismatchError, RecipeError) as err:
            logger.error(f"{model}: {err}")
            raise HTTPException(status_code=500, detail=f"model {model!r} cannot serve: {err}") from err
        except Exception as err:
            # a gel whose six lanes cannot be found by a bundle configured to refuse it (NormaliseLaneLayoutd's
            # on_failure="raise"; the default answers from the whole image): the image, not the server, is the
            # problem; MONAI's Compose wraps the transform's error, so look along the causes
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, LaneLayoutError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise HTTPException(status_code=422, detail=f"{model}: {cause}") from err

    def bundle_path(self, model: Any) -> str | None:
        """Bundle folder of ``model``'s train task; unknown models are refused here.

        MONAI Label's ``POST /train/{model}`` (and ``/batch/infer/{model}``) call this before they start the
        background process, which is the one place an unknown name can still get a 404 rather than a task
        that fails later.

        Raises:
            HTTPException: 404 when ``model`` is a name that this app does not serve.
        """
        if isinstance(model, str) and model not in self.task_configs:
            raise self._unknown_model(model, "training or batch inference")
        return super().bundle_path(model)


def _is_inside(path: str, folder: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return os.path.isabs(path) and os.path.commonpath([real, root]) == root
