"""What the app's uncertainty strategies share: candidates, the score cache, the served model, the pick.

A strategy (``POST /activelearning/<strategy>``) answers with the unlabelled image the model is least sure about.
:class:`UncertaintyStrategy` does everything but the scoring of one image and its sort key, which the subclasses
give (:mod:`lib.strategies.ife_least_certain`, :mod:`lib.strategies.oct_entropy`):

1. the candidates: the datastore's unlabelled images (no final label: an IFE ``.json`` or an OCT mask), those
   whose id matches the ``images`` patterns (B-scans and gels may share one datastore, see :func:`parse_patterns`);
2. the model version (:func:`~lib.strategies.cache.model_version`) of the weights the infer task runs for a request
   that names none, and the score cache for it (:class:`~lib.strategies.cache.ScoreCache`);
3. each candidate without a cached score for this version of its file is scored by running the app's own infer task
   on it (the bundle's preprocessing, network and calibration, exactly as ``/infer`` answers); a file that cannot be
   scored is logged and skipped, and remembered as failed until the file or the model changes;
4. the pick: images this strategy offered within the last ``served_wait_s`` seconds go last (so a second annotator,
   or one who skips an image, gets the next one), then the subclass's key (most uncertain first), then the id.

Scoring runs in the request, which MONAI Label 0.8.5 serves on the server's event loop (its endpoint is
``async`` and calls the strategy directly): while a cold cache is filled, the server answers nothing else.
``score_budget_s`` bounds that time per request; the rest is scored by the next requests.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import HTTPException
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from custom_components.core.image_files import screen_image_file
from custom_components.core.recipe import CheckpointMismatchError, RecipeError, recipe_path
from lib.infers.bundle_task import SCORING_REQUEST_KEY
from lib.infers.ife_multitask import requested_weights
from lib.strategies.cache import FileDigests, ScoreCache, file_signature, model_version
from lib.validation import IMAGE_EXTENSIONS, http_errors

logger = logging.getLogger(__name__)

__all__ = ["UncertaintyStrategy", "parse_patterns", "parse_seconds", "SCORING_REQUEST_KEY"]

#: during a long scoring pass the cache is written this often, so a stopped server keeps what it scored
SAVE_INTERVAL_S = 30.0


def parse_patterns(value: Any, what: str = "images") -> tuple[str, ...]:
    """Parse an ``images`` setting: comma-separated ``fnmatch`` patterns of image ids (``"gel_*,ife_*"``).

    Args:
        value: the setting (a string, or a list of patterns).
        what: how to name it in the error message.

    Returns:
        the patterns (``("*",)`` matches every image).

    Raises:
        ValueError: when the setting is empty or not text.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(p, str) for p in items):
        raise ValueError(f"{what} must be comma-separated id patterns such as 'gel_*,ife_*', got {value!r}.")
    patterns = tuple(p.strip() for p in items if p.strip())
    if not patterns:
        raise ValueError(f"{what} must name at least one id pattern ('*' for every image), got {value!r}.")
    return patterns


def parse_seconds(value: Any, what: str, allow_none: bool = False) -> float | None:
    """Parse a duration setting in seconds (a number or its text; ``none`` when ``allow_none``).

    Raises:
        ValueError: when the value is not a finite number >= 0 (or an allowed ``none``).
    """
    if allow_none and (value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = -1.0
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        extra = " or 'none'" if allow_none else ""
        raise ValueError(f"{what} must be a number of seconds >= 0{extra}, got {value!r}.")
    return seconds


class UncertaintyStrategy(Strategy):
    """Offers the unlabelled image that the served model is least sure about (see the module docstring).

    Subclasses set :attr:`name`, :attr:`score_version` and :attr:`model_errors`, and write :meth:`score_image` and
    :meth:`rank_key`.

    Request options (the JSON body of ``POST /activelearning/<strategy>``), each defaulting to the constructor's:
    ``images``, ``served_wait_s``, ``score_budget_s`` and the subclass's own.

    Args:
        infer_task: the app's infer task of the model (shared with ``/infer``: one network in memory).
        cache_dir: folder of the score cache (``<name>.json``), or None to keep scores in memory only.
        images: id patterns of the images this model labels (:func:`parse_patterns`; default every image).
        served_wait_s: an image this strategy offered less than this many seconds ago is offered after all others
            (0: always the most uncertain, even if it was just offered).
        score_budget_s: stop scoring new images in a request after this many seconds and pick among the scored ones
            (None: score every candidate); at least one image is scored per request.
        description: shown by ``/info`` under ``strategies``.

    Raises:
        ValueError: on a bad setting.
    """

    #: the strategy's name in ``/activelearning/<name>`` and in the datastore's record of what it offered
    name: ClassVar[str]
    #: changes whenever the scores change meaning: cached scores of another score version are not used
    score_version: ClassVar[str]
    #: exceptions that mean the model, not the image, cannot be run: the request fails with them (HTTP 500 naming
    #: the reason) rather than every image being skipped
    model_errors: ClassVar[tuple[type[BaseException], ...]] = (CheckpointMismatchError, RecipeError)

    def __init__(
        self,
        infer_task: Any,
        cache_dir: str | None,
        images: Any = "*",
        served_wait_s: Any = 3600.0,
        score_budget_s: Any = None,
        description: str = "",
    ) -> None:
        super().__init__(description)
        self.task = infer_task
        self.images = parse_patterns(images)
        self.served_wait_s = parse_seconds(served_wait_s, "served_wait_s")
        self.score_budget_s = parse_seconds(score_budget_s, "score_budget_s", allow_none=True)
        self.cache_path = os.path.join(cache_dir, f"{self.name}.json") if cache_dir else None
        self.cache = ScoreCache(self.cache_path, self.name, self.score_version)
        self._digests = FileDigests()
        # the event loop serves requests one at a time, but a client may call the app from threads (tests, scripts)
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        i = super().info()
        i.update(
            images=",".join(self.images),
            served_wait_s=self.served_wait_s,
            score_budget_s=self.score_budget_s,
            score_cache=self.cache_path,
        )
        return i

    # ---- what a subclass provides -------------------------------------------------------------------------------

    @abstractmethod
    def score_image(self, path: str) -> dict[str, Any]:
        """Score one image file with the infer task.

        Returns:
            the score (JSON-ready), as :meth:`rank_key` reads it.

        Raises:
            Exception: anything; a :attr:`model_errors` one fails the request, any other skips the image.
        """

    @abstractmethod
    def rank_key(self, score: Mapping[str, Any], options: Mapping[str, Any]) -> tuple:
        """Sort key of a scored image: the image to offer first has the smallest key."""

    def request_options(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The request's options with the strategy's defaults; a subclass adds its own.

        Raises:
            ValueError: on a bad option value.
        """
        return {
            "images": parse_patterns(request["images"]) if request.get("images") is not None else self.images,
            "served_wait_s": parse_seconds(request.get("served_wait_s", self.served_wait_s), "served_wait_s"),
            "score_budget_s": parse_seconds(
                request.get("score_budget_s", self.score_budget_s), "score_budget_s", allow_none=True
            ),
        }

    def model_files(self, weights: str) -> list[str]:
        """The files whose content is the model version: the weights and their recipe (a subclass adds more)."""
        return [weights, recipe_path(weights)]

    # ---- the served model -----------------------------------------------------------------------------------------

    def weights(self) -> str | None:
        """The weights file the infer task loads for a request that names none (None: no checkpoint yet).

        MONAI Label fills a request with the task's config, whose ``model_filename`` option lists the bundle's
        ``models/*.pt``; :func:`~lib.infers.ife_multitask.requested_weights` picks the file as MONAI Label does.
        """
        config = self.task.config()
        options = config.get("model_filename")
        default = self.task.get_path()
        models_dir = os.path.dirname(default) if default else os.path.dirname(self.task.path[0])
        return requested_weights(default, models_dir, {"model_filename": options}, bool(options))

    def model_version(self) -> str:
        """The version of the served model, for the score cache (re-hashing a file only when it changed)."""
        weights = self.weights()
        if weights is None or not os.path.isfile(weights):
            # random weights, drawn when this server process built the network: the scores are good for its life
            return f"random weights: process {os.getpid()}, network {id(self.task.network):x}"
        return model_version(self.model_files(weights), self._digests)

    # ---- the request ----------------------------------------------------------------------------------------------

    def candidates(self, datastore: Datastore, request: Mapping[str, Any], patterns: tuple[str, ...]) -> list[str]:
        """The unlabelled images whose id matches ``patterns``, sorted."""
        unlabelled = datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels"))
        return sorted(i for i in unlabelled if any(fnmatch.fnmatchcase(i, p) for p in patterns))

    def __call__(self, request: Mapping[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        """Pick the next image to label.

        Args:
            request: MONAI Label's active-learning request (``strategy``, the client's options).
            datastore: the app's datastore.

        Returns:
            ``{"id": <image id>, "uncertainty": {...}}``: the image's score, ``model_version``, ``seconds`` (time
            taken) and the counts of the request: ``candidates`` (unlabelled images matching ``images``),
            ``cached`` (scores reused), ``scored`` (scored now), ``failed`` (skipped: unreadable now or before, for
            this file and model) and ``unscored`` (left for later by ``score_budget_s``); or None when no
            unlabelled image matching ``images`` can be scored.

        Raises:
            HTTPException: 400 for a bad option, 500 (naming the reason) when the model cannot be run.
        """
        with http_errors(400):
            options = self.request_options(request)
        with self._lock:
            return self._pick(request, datastore, options)

    def _pick(self, request: Mapping[str, Any], datastore: Datastore, options: Mapping[str, Any]) -> dict | None:
        begin = time.monotonic()
        candidates = self.candidates(datastore, request, options["images"])
        if not candidates:
            logger.info(f"{self.name}: no unlabelled image matches {','.join(options['images'])}.")
            return None
        version = self.model_version()
        dropped = self.cache.use_model(version)
        if dropped:
            logger.info(f"{self.name}: new model version {version}: {dropped} cached scores dropped.")
        self.cache.keep_only(datastore.list_images())

        scores: dict[str, dict[str, Any]] = {}
        counts = {"candidates": len(candidates), "cached": 0, "scored": 0, "failed": 0, "unscored": 0}
        budget = options["score_budget_s"]
        last_save = time.monotonic()
        attempted = 0  # images run through the model in this request, scored or failed
        untrained = self.weights() is None
        for image_id in candidates:
            try:
                path = datastore.get_image_uri(image_id)
                signature = file_signature(path)
            except Exception as err:  # removed since the listing, or an id the datastore refuses
                counts["failed"] += 1
                logger.warning(f"{self.name}: image {image_id!r} skipped: its file cannot be read ({err}).")
                continue
            entry = self.cache.get(image_id, signature)
            if entry is not None:
                if "error" in entry:
                    counts["failed"] += 1
                else:
                    counts["cached"] += 1
                    scores[image_id] = entry["score"]
                continue
            if budget is not None and attempted and time.monotonic() - begin >= budget:
                counts["unscored"] += 1
                continue
            attempted += 1
            try:
                score = self._score_checked(path, image_id)
            except Exception as err:
                cause = self._model_error(err)
                if cause is not None:
                    self.cache.save()
                    logger.error(f"{self.name}: the model cannot be run: {cause}")
                    raise HTTPException(
                        status_code=500, detail=f"strategy {self.name!r}: the model cannot serve: {cause}"
                    ) from err
                message = f"{type(err).__name__}: {err}"
                counts["failed"] += 1
                logger.warning(f"{self.name}: image {image_id!r} skipped: it cannot be scored ({message}).")
                self.cache.put(image_id, signature, error=message)
                continue
            counts["scored"] += 1
            scores[image_id] = score
            self.cache.put(image_id, signature, score=score)
            if time.monotonic() - last_save >= SAVE_INTERVAL_S:
                self.cache.save()
                last_save = time.monotonic()

        if attempted and self.model_version() != version:
            # training replaced the weights while this request scored: the new scores mix two models; answer from
            # them, but do not keep them
            logger.warning(f"{self.name}: the model changed while scoring; the scores of this request are not kept.")
            self.cache.use_model(self.model_version())
        self.cache.save()
        if untrained and attempted:
            logger.warning(f"{self.name}: scored with RANDOM weights (the model has no checkpoint yet).")

        if not scores:
            logger.error(f"{self.name}: none of the {len(candidates)} unlabelled images could be scored: {counts}.")
            return None
        pick = min(scores, key=lambda i: self._order(i, scores[i], datastore, options))
        elapsed = time.monotonic() - begin
        logger.info(f"{self.name}: picked {pick} {scores[pick]} in {elapsed:.2f} s; {counts}")
        return {
            "id": pick,
            "uncertainty": {
                "strategy": self.name,
                **scores[pick],
                **counts,
                "model_version": version,
                "seconds": round(elapsed, 3),
            },
        }

    def _score_checked(self, path: str, image_id: str) -> dict[str, Any]:
        # the same screening as /infer, from the header only (a decompression bomb is refused before any pixel is
        # decoded); a file that is broken further in fails in the loader and is skipped there
        problem = screen_image_file(path, decode=False, extensions=IMAGE_EXTENSIONS)
        if problem:
            raise ValueError(f"image {image_id!r} is not a readable image: {problem}")
        return self.score_image(path)

    def _model_error(self, err: BaseException) -> BaseException | None:
        """The :attr:`model_errors` exception behind ``err``, if any (MONAI's ``Compose`` wraps a transform's error
        in a ``RuntimeError``, so the causes are searched)."""
        cause: BaseException | None = err
        while cause is not None and not isinstance(cause, self.model_errors):
            cause = cause.__cause__
        return cause

    def _order(self, image_id: str, score: Mapping[str, Any], datastore: Datastore, options: Mapping[str, Any]):
        served = datastore.get_image_info(image_id).get("strategy", {}).get(self.name, {}).get("ts", 0)
        recent = bool(served) and time.time() - float(served) < options["served_wait_s"]
        # recently offered images last, the one offered longest ago first among them
        return (recent, float(served) if recent else 0.0, *self.rank_key(score, options), image_id)
