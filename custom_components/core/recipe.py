# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Checkpoints that carry their own recipe.

A bundle's ``models/model.pt`` holds the network's weights the model-zoo way (a bare ``state_dict``, loadable by
MONAI's ``CheckpointLoader``, ``ckpt_export`` or ``net.load_state_dict(torch.load(...))``). Beside it, written
whenever the weights are, ``models/model.recipe.json`` says what they are::

    {"checkpoint": "model.pt",
     "network": "custom_components.oct.transunet.TransUNet",
     "settings": {"image_size": 96, "geometry": "resize", "filters": [16, 32, 64, 128, 256], ...},
     "bundle": {"name": "OCT fluid segmentation", "version": "0.3.0"},
     "written": "2026-11-30T12:00:00+00:00"}

``settings`` are the values of the bundle config ids that shape the network and the geometry it was trained at
(each bundle's ``train.json`` lists them under ``recipe``). Inference, evaluation, export and the MONAI Label app
read those ids from the recipe (``"trained_recipe": "$core.trained_settings(@checkpoint, oct.RECIPE_DEFAULTS)"``,
``"image_size": "$@trained_recipe['image_size']"``), so a checkpoint
rebuilds its own network with no overrides repeated by hand; an id given explicitly on the command line wins,
with a warning, except for the geometry, where a mismatch is an error (:func:`check_recipe`). A checkpoint that
still does not fit its network gets one error naming the first mismatched layer and both shapes
(:class:`CheckedCheckpointLoader`).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from monai.handlers import CheckpointLoader
from monai.utils import IgniteInfo, min_version, optional_import

from custom_components.core.atomic import read_json_file, write_json_atomic

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "RECIPE_SUFFIX",
    "MOVED_NETWORKS",
    "RecipeError",
    "RecipeMismatchError",
    "CheckpointMismatchError",
    "recipe_path",
    "weights_sha256",
    "read_recipe",
    "trained_settings",
    "write_recipe",
    "RecipeSaver",
    "check_recipe",
    "describe_mismatch",
    "mismatch_error",
    "CheckedCheckpointLoader",
    "started_from",
    "load_pretrained",
]

logger = logging.getLogger(__name__)

#: a checkpoint ``<name>.pt`` has its recipe in ``<name>.recipe.json``
RECIPE_SUFFIX = ".recipe.json"


#: the dotted paths of networks that moved, old -> new, so that a recipe written before the move still names the
#: class this package builds (custom-components 0.8.0 laid the package out as core / ife / oct). Only names: this
#: table imports nothing.
MOVED_NETWORKS = {
    "custom_components.networks.ife_resnet.MultiTaskIFEResNet": "custom_components.ife.networks.MultiTaskIFEResNet",
    "custom_components.networks.ife_resnet.IFEResNet": "custom_components.ife.networks.IFEResNet",
    "custom_components.networks.transunet.TransUNet": "custom_components.oct.transunet.TransUNet",
}


class RecipeError(ValueError):
    """A checkpoint's recipe cannot be read."""


class RecipeMismatchError(RecipeError):
    """A run asks a checkpoint for a geometry or network other than the one it was trained as."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's weights do not fit the network a config built; the message names the first bad layer."""


def recipe_path(checkpoint: str | os.PathLike) -> str:
    """``models/model.pt`` -> ``models/model.recipe.json`` (any ending after the last dot is replaced)."""
    root, _ = os.path.splitext(os.fspath(checkpoint))
    return root + RECIPE_SUFFIX


def weights_sha256(checkpoint: str | os.PathLike) -> str:
    """Hex SHA-256 of the checkpoint file's bytes."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """JSON-ready copy of a setting: tuples and tensors become lists, numpy scalars Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def qualified_name(obj: Any) -> str:
    """``module.Class`` of an object (of the wrapped module for DDP/DataParallel wrappers)."""
    obj = getattr(obj, "module", obj)
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def write_recipe(
    checkpoint: str | os.PathLike,
    settings: Mapping[str, Any],
    network: torch.nn.Module | None = None,
    bundle: Mapping[str, Any] | None = None,
    started_from: Mapping[str, Any] | None = None,
) -> str:
    """Write the recipe of ``checkpoint`` atomically (a reader sees the old file or the new one, never half).

    Args:
        checkpoint: the weights file the recipe describes.
        settings: config id -> value of what shapes the network and its geometry (JSON-serialisable after tuples
            become lists).
        network: the network the weights come from (its class is recorded).
        bundle: e.g. ``{"name": ..., "version": ...}`` from the bundle's metadata.
        started_from: the checkpoint training started from (:func:`started_from`), recorded as
            ``"started_from"``; ``None`` for weights trained from their initialisation.

    Returns:
        the recipe's path.
    """
    path = recipe_path(checkpoint)
    recipe = {
        "checkpoint": os.path.basename(os.fspath(checkpoint)),
        "network": qualified_name(network) if network is not None else None,
        "settings": _plain(settings),
        "bundle": _plain(bundle or {}),
        "written": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if started_from:
        recipe["started_from"] = _plain(started_from)
    write_json_atomic(recipe, path)
    return path


def read_recipe(checkpoint: str | os.PathLike, warn: bool = True) -> dict[str, Any]:
    """The recipe written beside ``checkpoint``: ``{"network": ..., "settings": {...}, ...}``.

    Args:
        checkpoint: the weights file.
        warn: log a warning when the checkpoint exists without a recipe.

    Returns:
        the recipe, or ``{"settings": {}}`` when there is none (a checkpoint from before recipes, or copied without
        its ``.recipe.json``): the config's own values are then used, as logged here. A network class that moved
        is named where it lives now (:data:`MOVED_NETWORKS`).

    Raises:
        RecipeError: when the recipe file exists but is not valid JSON with a ``settings`` object.
    """
    path = recipe_path(checkpoint)
    recipe = read_json_file(path, "checkpoint recipe", RecipeError)
    if recipe is None:
        if warn and os.path.isfile(os.fspath(checkpoint)):
            logger.warning("%s has no recipe (%s): the config's network and geometry settings are used.", checkpoint, path)
        return {"settings": {}}
    if not isinstance(recipe, dict) or not isinstance(recipe.get("settings"), dict):
        raise RecipeError(f"{path}: a checkpoint recipe must be an object with a 'settings' object.")
    if recipe.get("network") in MOVED_NETWORKS:  # written before the class moved: name it where it lives now
        recipe["network"] = MOVED_NETWORKS[recipe["network"]]
    return recipe


def trained_settings(checkpoint: str | os.PathLike, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings ``checkpoint`` was trained with, each setting its recipe lacks taken from ``defaults``.

    A checkpoint from before recipes (or copied without its ``.recipe.json``, as :func:`read_recipe` warns) has no
    settings at all: ``defaults`` are then what such a checkpoint was trained with, one table per domain
    (``custom_components.ife.RECIPE_DEFAULTS``, ``custom_components.oct.RECIPE_DEFAULTS``).

    Args:
        checkpoint: the weights file.
        defaults: setting -> value for a recipe that lacks it.

    Returns:
        a new dict: ``defaults`` updated with the recipe's settings (including settings ``defaults`` does not name).
    """
    return {**copy.deepcopy(dict(defaults)), **read_recipe(checkpoint)["settings"]}


def check_recipe(
    checkpoint: str | os.PathLike,
    settings: Mapping[str, Any],
    network: torch.nn.Module | None = None,
    geometry_keys: Sequence[str] = ("image_size", "geometry"),
) -> None:
    """Compare what a run is about to use with what ``checkpoint`` was trained as.

    Settings read from the recipe agree with it by construction; a difference means the id was set explicitly.
    It is then used, with a warning, except for ``geometry_keys``: a network segments at the pixel scale it was
    trained at, so a different size or geometry is refused. A different network class is refused too.

    Args:
        checkpoint: the weights file.
        settings: config id -> value this run uses (ids the recipe lacks are not compared).
        network: the network this run built, to compare its class with the recipe's.
        geometry_keys: ids whose mismatch is an error.

    Raises:
        RecipeMismatchError: on a geometry or network class that differs from the recipe's, naming both.
    """
    recipe = read_recipe(checkpoint, warn=False)  # the config's own reading of the recipe has warned already
    trained = recipe["settings"]
    if network is not None and recipe.get("network") and qualified_name(network) != recipe["network"]:
        raise RecipeMismatchError(
            f"{checkpoint} holds a {recipe['network']}, but this config builds a {qualified_name(network)}; "
            "run it with the config files it was trained with (e.g. the same configs/networks/*.json or "
            "baseline.json)."
        )
    for key, value in settings.items():
        if key not in trained or _plain(value) == trained[key]:
            continue
        if key in geometry_keys:
            raise RecipeMismatchError(
                f"{checkpoint} was trained with {key}={trained[key]!r}, but this run sets {key}={_plain(value)!r}: a "
                f"network segments at the scale and geometry it was trained at. Drop the {key} override (the "
                "checkpoint's own value is the default) or train a model for this setting."
            )
        logger.warning(
            "%s was trained with %s=%r; using %r as set explicitly for this run.", checkpoint, key, trained[key], value
        )


def _adapts(network: torch.nn.Module, key: str, value: torch.Tensor) -> bool:
    """Whether the module owning ``key`` loads ``value`` whatever its shape (TransUNet resizes its position
    embedding to its own token grid, for one): asked of a copy, through PyTorch's own per-module loading."""
    path, _, name = key.rpartition(".")
    owner = copy.deepcopy(network.get_submodule(path))
    errors: list[str] = []
    owner._load_from_state_dict({name: value}, "", {}, False, [], [], errors)
    return not errors


def describe_mismatch(network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str | None:
    """The first layer (in the network's order) whose weights ``state_dict`` lacks or holds in a shape it cannot
    load (a shape its module adapts on loading is fine).

    Returns:
        e.g. ``"encoder.0.0.conv.weight: checkpoint (16, 1, 3, 3), network (64, 1, 3, 3) (first of 58 mismatched
        tensors)"``, or ``None`` when every tensor fits.
    """
    expected = network.state_dict()
    problems = []
    for key, tensor in expected.items():
        if key not in state_dict:
            problems.append(f"{key}: missing from the checkpoint (network {tuple(tensor.shape)})")
        elif tuple(state_dict[key].shape) != tuple(tensor.shape) and not _adapts(network, key, state_dict[key]):
            problems.append(f"{key}: checkpoint {tuple(state_dict[key].shape)}, network {tuple(tensor.shape)}")
    problems += [f"{key}: in the checkpoint, not in the network" for key in state_dict if key not in expected]
    problems += _untied_in_checkpoint(network, state_dict)
    if not problems:
        return None
    return problems[0] + (f" (first of {len(problems)} mismatched tensors)" if len(problems) > 1 else "")


def _tied_names(network: torch.nn.Module) -> list[list[str]]:
    """The state-dict names of each tensor ``network`` holds under several names (tied weights, e.g. the IFE
    branches' attention with ``tie_attention``)."""
    names: dict[int, list[str]] = {}
    for key, tensor in network.state_dict(keep_vars=True).items():
        names.setdefault(id(tensor), []).append(key)
    return [keys for keys in names.values() if len(keys) > 1]


def _untied_in_checkpoint(network: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """Tied tensors of ``network`` that ``state_dict`` holds with different values: ``load_state_dict`` would
    silently keep whichever name comes last, so weights trained untied must not load into a tied network."""
    problems = []
    for keys in _tied_names(network):
        held = [key for key in keys if key in state_dict]
        for key in held[1:]:
            first, other = state_dict[held[0]], state_dict[key]
            if first.shape != other.shape or not torch.allclose(first, other, rtol=0, atol=0, equal_nan=True):
                problems.append(f"{held[0]} and {key}: one tensor in the network (tied), two in the checkpoint "
                                "(trained untied)")
                break
    return problems


def mismatch_error(
    checkpoint: str | os.PathLike, network: torch.nn.Module, key: str = "model", what: str = "this config"
) -> CheckpointMismatchError | None:
    """The error to raise when ``checkpoint`` failed to load into ``network``: the file, the first mismatched layer
    and both shapes, and the likely cause; ``None`` when every tensor fits (the failure was something else).

    Args:
        checkpoint: the weights file (a bare ``state_dict``, or a dict holding it under ``key``).
        network: the network it was loaded into (DDP wrappers are unwrapped).
        key: the key of the weights in a checkpoint that holds more than weights.
        what: what built the network, for the message.
    """
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
        state = state[key]
    problem = describe_mismatch(getattr(network, "module", network), state)
    if problem is None:
        return None
    recipe = recipe_path(checkpoint)
    cause = (
        f"its {os.path.basename(recipe)} does not cover a setting it was trained with (an id of a configs/networks "
        "file, or a network_def argument set directly): give that setting again"
        if os.path.isfile(recipe)
        else f"it has no {os.path.basename(recipe)} beside it: copy the recipe with it, or give the settings it was "
        "trained with"
    )
    return CheckpointMismatchError(f"{checkpoint} does not fit the network {what} builds: {problem}. {cause}.")


class RecipeSaver:
    """Write a checkpoint's recipe whenever the checkpoint file is written.

    Attach it to the validation evaluator after the ``CheckpointSaver`` that writes ``checkpoint`` (handlers run in
    the order they are listed): at the end of every validation it looks at the file and, when the saver has just
    replaced it, writes the recipe, so the two always describe the same training run.

    Args:
        checkpoint: the weights file the saver writes (``models/model.pt``).
        settings: config id -> value of what shapes the network and its geometry.
        network: the trained network (its class is recorded).
        bundle: bundle name and version to record.
        pretrained: the checkpoint the training started from (``train.json``'s ``pretrained``), recorded with its
            digest and recipe (:func:`started_from`); ``None`` or ``""`` for none.
    """

    def __init__(
        self,
        checkpoint: str,
        settings: Mapping[str, Any],
        network: torch.nn.Module | None = None,
        bundle: Mapping[str, Any] | None = None,
        pretrained: str | os.PathLike | None = None,
    ) -> None:
        self.checkpoint, self.settings, self.network, self.bundle = checkpoint, dict(settings), network, bundle
        self.started_from = started_from(pretrained) if pretrained else None
        self._seen = self._signature()

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.checkpoint)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        signature = self._signature()
        if signature is not None and signature != self._seen:
            write_recipe(self.checkpoint, self.settings, self.network, self.bundle, self.started_from)
            self._seen = signature


class CheckedCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` with one clear error when the weights do not fit the network.

    Instead of PyTorch's list of every mismatched tensor, the error names the file, the first mismatched layer and
    both shapes, and says where the usual cause lies; a training state that lacks an object the config restores is
    named too, and objects listed in ``optional`` (added to the training state by a later version) are restored
    when present, skipped with a warning when not. Takes the arguments of :class:`monai.handlers.CheckpointLoader`,
    whose ``torch.load`` uses ``weights_only=True``, and:

    Args:
        optional: keys of ``load_dict`` that an older checkpoint may lack.
        engine_key: if given, also restore the engine this handler runs on from this key (``"trainer"``: its epoch
            and iteration counters), as :class:`~custom_components.core.training.TrainingStateSaver` saves it, so
            the saver and the loader of a config share one ``load_dict`` (the training state).

    Raises:
        CheckpointMismatchError: (when run) on weights that do not fit, a training state without an object of
            ``load_dict`` (not ``optional``), or a bare weights file given where a training state is expected.
        ValueError: on an ``engine_key`` that is empty or already in ``load_dict``.
    """

    def __init__(
        self, *args: Any, optional: Sequence[str] = (), engine_key: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.optional = tuple(optional)
        if engine_key is not None and (not engine_key or engine_key in self.load_dict):
            raise ValueError(f"engine_key must be a non-empty name not already in load_dict, got {engine_key!r}.")
        self.engine_key = engine_key

    def __call__(self, engine: Engine) -> None:
        if self.engine_key is not None:
            self.load_dict = {**self.load_dict, self.engine_key: engine}
        if len(self.load_dict) > 1:
            saved = torch.load(self.load_path, map_location="cpu", weights_only=True, mmap=True)
            if all(isinstance(value, torch.Tensor) for value in saved.values()):
                raise CheckpointMismatchError(
                    f"{self.load_path} holds a network's weights only (a model.pt?), not a training state with "
                    f"{', '.join(self.load_dict)}: resume from the models/checkpoint.pt a training run writes."
                )
            skipped = [key for key in self.optional if key in self.load_dict and key not in saved]
            if skipped:
                logger.warning(
                    "%s has no %s (written by an earlier version): resuming without, so the run will not repeat "
                    "the uninterrupted one exactly.", self.load_path, ", ".join(skipped),
                )
                self.load_dict = {key: obj for key, obj in self.load_dict.items() if key not in skipped}
            missing = [key for key in self.load_dict if key not in saved]
            if missing:
                raise CheckpointMismatchError(
                    f"{self.load_path} holds {', '.join(sorted(saved))} but not {', '.join(missing)}, which this "
                    "config restores: it was written by another config. Resume with the configs that wrote it, "
                    "or start a new run (resume false, or another bundle_root)."
                )
        for key, obj in self.load_dict.items():
            # tied layers load untied weights without an error (the last name wins): look before loading
            if isinstance(obj, torch.nn.Module) and _tied_names(obj):
                if (error := mismatch_error(self.load_path, obj, key)) is not None:
                    raise error
        try:
            super().__call__(engine)
        except RuntimeError:
            for key, obj in self.load_dict.items():
                if isinstance(obj, torch.nn.Module) and (error := mismatch_error(self.load_path, obj, key)) is not None:
                    raise error from None
            raise


def started_from(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a fine-tuned model's recipe says about the checkpoint it started from: its absolute path, the SHA-256
    of its bytes, and the bundle, network and ``started_from`` of its own recipe (so a chain of fine-tunings can be
    followed back to the first weights)."""
    recipe = read_recipe(checkpoint, warn=False)
    origin = {"checkpoint": os.path.abspath(os.fspath(checkpoint)), "weights_sha256": weights_sha256(checkpoint)}
    origin.update({key: recipe[key] for key in ("bundle", "network", "written", "started_from") if key in recipe})
    return origin


def load_pretrained(
    network: torch.nn.Module,
    checkpoint: str | os.PathLike | None,
    settings: Mapping[str, Any],
    may_differ: Sequence[str] = (),
) -> torch.nn.Module:
    """Start training from ``checkpoint`` (``train.json --pretrained PATH``): fine-tuning, not resuming.

    Only the weights are taken; the optimizer, schedule and epoch counter start afresh (``--resume`` continues a
    run instead, and its training state replaces these weights when both are given). The checkpoint must be the
    network this run builds, trained with the same recipe settings: a model is fine-tuned at the geometry and
    shape it was trained at, so every difference is refused at once, before any epoch.

    Args:
        network: the network the run trains (a DDP or DataParallel wrapper is unwrapped); loaded in place.
        checkpoint: a bare ``state_dict`` (``models/model.pt``) or a training state holding one under ``"model"``;
            ``None`` or ``""``: nothing is loaded.
        settings: config id -> value of this run's recipe settings (``train.json``'s ``recipe``).
        may_differ: ids of ``settings`` that say how a file is read rather than what the network sees (the IFE
            lane orientation: every orientation is normalised to one layout first), logged when they differ.

    Returns:
        ``network``.

    Raises:
        FileNotFoundError: when ``checkpoint`` is not a file.
        RecipeMismatchError: on a network class or recipe setting other than this run's, naming each with both
            values. A checkpoint without a recipe is compared by its tensors' shapes only (with a warning).
        CheckpointMismatchError: on weights that do not fit the network (the first bad layer and both shapes).
    """
    if not checkpoint:
        return network
    if not os.path.isfile(os.fspath(checkpoint)):
        raise FileNotFoundError(f"pretrained checkpoint {checkpoint}: no such file.")
    module = getattr(network, "module", network)
    recipe = read_recipe(checkpoint)
    trained = recipe["settings"]
    problems = []
    if recipe.get("network") and recipe["network"] != qualified_name(module):
        problems.append(f"network: checkpoint {recipe['network']}, this run {qualified_name(module)}")
    for key, value in settings.items():
        if key not in trained or _plain(value) == trained[key]:
            continue
        if key in may_differ:
            logger.info("%s was trained with %s=%r; this run uses %r.", checkpoint, key, trained[key], _plain(value))
        else:
            problems.append(f"{key}: checkpoint {trained[key]!r}, this run {_plain(value)!r}")
    if problems:
        raise RecipeMismatchError(
            f"cannot fine-tune from {checkpoint}: its recipe differs from this run's ({'; '.join(problems)}). "
            "Train with the checkpoint's settings (drop the overrides that differ) or start from another checkpoint."
        )
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    problem = describe_mismatch(module, state)
    if problem is not None:
        raise CheckpointMismatchError(f"cannot fine-tune from {checkpoint}: {problem}.")
    module.load_state_dict(state)
    logger.info("fine-tuning from %s (weights only; optimizer, schedule and epochs start afresh)", checkpoint)
    return network
