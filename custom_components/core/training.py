# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Generic training handlers shared by the project's bundles.

- :class:`GradientClipping`: clip the global gradient norm right before every optimizer step (works with AMP).
- :class:`LossTermsHandler`: epoch means of a loss's individual terms (``loss.last_terms``) into
  ``engine.state.metrics``, so that ``StatsHandler`` and ``TensorBoardStatsHandler`` log them.
- :class:`TrainingStateSaver`: the full training state (network, optimizer, scheduler, trainer, ...) written to ONE
  fixed file every N epochs, atomically, so that a killed run resumes with MONAI's ``CheckpointLoader``.
- :class:`AtomicCheckpointSaver`: MONAI's ``CheckpointSaver`` whose files are never seen half-written, and whose
  best-model record (the key-metric list and the evaluator's best metric) is part of that training state.
- :class:`AmpGradScaler`: MONAI's gradient scaler only where the autocast dtype needs one (float16), with its state
  in the training state.
- :class:`RandomStates`: the random generators a training run draws from (Python, NumPy, PyTorch, every random
  transform's own), as one ``state_dict``, so a resumed run draws what the uninterrupted run would have drawn.

All follow MONAI's handler pattern: ``__init__`` stores the settings, ``attach(engine)`` registers guarded
callbacks, file writing happens on one rank only.
"""

from __future__ import annotations

import logging
import os
import random
import weakref
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers import CheckpointSaver
from monai.transforms import Randomizable
from monai.utils import IgniteInfo, min_version, optional_import

from custom_components.core.atomic import save_atomic
from custom_components.core.events import attach_once

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
BaseSaveHandler, _ = optional_import(
    "ignite.handlers.checkpoint", IgniteInfo.OPT_IMPORT_VERSION, min_version, "BaseSaveHandler"
)
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "GradientClipping",
    "LossTermsHandler",
    "AmpGradScaler",
    "TrainingStateSaver",
    "AtomicCheckpointSaver",
    "RandomStates",
]


class GradientClipping:
    """Clip the global norm of the gradients before every optimizer step.

    The clipping runs in an optimizer step pre-hook (``torch.optim.Optimizer.register_step_pre_hook``) rather than
    on an engine event. With AMP, ``GradScaler.step(optimizer)`` first unscales the gradients and then calls
    ``optimizer.step()``, so the hook sees the true gradients and clips at the true norm; a step that the scaler
    skips (inf/NaN gradients) is not clipped either. Under DDP the gradients are already all-reduced when the step
    runs, so every rank clips by the same global norm. Gradient accumulation works too: the hook runs only on the
    iterations that step.

    Args:
        max_norm: largest allowed norm of all gradients taken together, > 0 (the IFE paper's code uses 3).
        norm_type: order of the norm, > 0 or ``inf``.
        optimizer: optimizer to hook; None uses ``engine.optimizer`` at :meth:`attach`.
        error_if_nonfinite: raise if the total norm is NaN or inf (passed to ``torch.nn.utils.clip_grad_norm_``).

    Attributes:
        last_norm: total gradient norm before clipping at the most recent step (0-d tensor, not synchronised to
            the host to avoid a device sync per step); None before the first step.

    Raises:
        ValueError: when ``max_norm`` or ``norm_type`` is not positive, or no torch optimizer is found.

    Example::

        GradientClipping(max_norm=3.0).attach(trainer)  # trainer.optimizer is hooked
    """

    def __init__(
        self,
        max_norm: float,
        norm_type: float = 2.0,
        optimizer: torch.optim.Optimizer | None = None,
        error_if_nonfinite: bool = False,
    ) -> None:
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0:
            raise ValueError(f"max_norm must be a positive number, got {max_norm!r}.")
        if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
            raise ValueError(f"norm_type must be a positive number or inf, got {norm_type!r}.")
        self.max_norm = float(max_norm)
        self.norm_type = float(norm_type)
        self.optimizer = optimizer
        self.error_if_nonfinite = bool(error_if_nonfinite)
        self.last_norm: torch.Tensor | None = None
        # the optimizers already hooked, so attaching twice does not clip twice; weak, so a discarded optimizer's
        # id reused by a new one is not mistaken for it
        self._hooks: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()

    def _parameters(self, optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

    def _hook(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = self._parameters(optimizer)
        if not params:
            return
        self.last_norm = torch.nn.utils.clip_grad_norm_(
            params, self.max_norm, norm_type=self.norm_type, error_if_nonfinite=self.error_if_nonfinite
        ).detach()

    def attach(self, engine: Engine | None = None) -> None:
        """Hook ``optimizer`` now, or ``engine.optimizer`` when the engine starts; attaching twice is a no-op.

        MONAI's ``SupervisedTrainer`` attaches its handlers before it stores ``optimizer``, so without an explicit
        optimizer the hook is registered on ``Events.STARTED``.

        Args:
            engine: the trainer; may be None when ``optimizer`` was given.

        Raises:
            ValueError: when neither ``optimizer`` nor an engine is given.
        """
        if self.optimizer is not None:
            self._register(self.optimizer)
        elif engine is None:
            raise ValueError("GradientClipping needs an optimizer argument or an engine with an optimizer.")
        elif not engine.has_event_handler(self._register_engine_optimizer, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._register_engine_optimizer)

    def _register_engine_optimizer(self, engine: Engine) -> None:
        self._register(getattr(engine, "optimizer", None))

    def _register(self, optimizer: Any) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(
                "GradientClipping needs a torch optimizer (argument or engine.optimizer), "
                f"got {type(optimizer).__name__}."
            )
        if optimizer not in self._hooks:
            optimizer.register_step_pre_hook(self._hook)
            self._hooks.add(optimizer)


class LossTermsHandler:
    """Log the individual terms of a composite loss as epoch means.

    After each iteration it reads ``getattr(loss, attribute)``: a mapping of term name to value (0-d tensors, as the
    project's losses set in ``last_terms``, or floats). At the end of each epoch it stores the mean of each term over
    the epoch's iterations in ``engine.state.metrics[prefix + name]`` (averaged over all ranks under DDP), where
    ``StatsHandler`` prints them and ``TensorBoardStatsHandler`` plots them. Attach it BEFORE those handlers: ignite
    calls handlers of the same event in attachment order.

    The running sums stay on the loss's device and are read once per epoch: reading a GPU value on every iteration
    would make the host wait for the device at every step and stall the data pipeline.

    Args:
        loss: the loss object (the same instance the trainer calls).
        attribute: name of its mapping of term values.
        prefix: prefix of the metric names, e.g. ``"train_loss_"`` gives ``train_loss_ce_mild``.
        names: terms to keep; None keeps every term the loss reports.

    Raises:
        ValueError: on an empty ``attribute``.
    """

    def __init__(
        self, loss: Any, attribute: str = "last_terms", prefix: str = "loss_", names: Iterable[str] | None = None
    ) -> None:
        if not attribute:
            raise ValueError("attribute must be a non-empty attribute name, got ''.")
        self.loss = loss
        self.attribute = attribute
        self.prefix = prefix
        self.names = None if names is None else tuple(names)
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, torch.Tensor] = {}

    def attach(self, engine: Engine) -> None:
        """Register the epoch-start reset, the per-iteration accumulation and the epoch-end write."""
        attach_once(
            engine,
            (Events.EPOCH_STARTED, self.reset),
            (Events.ITERATION_COMPLETED, self.iteration_completed),
            (Events.EPOCH_COMPLETED, self.epoch_completed),
        )

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the running sums."""
        self._sums.clear()
        self._counts.clear()

    def iteration_completed(self, engine: Engine) -> None:
        """Add the current values of the loss terms; non-finite values are skipped (and so not averaged in)."""
        terms = getattr(self.loss, self.attribute, None)
        if not isinstance(terms, Mapping):
            return
        for name, value in terms.items():
            if self.names is not None and name not in self.names:
                continue
            value = torch.as_tensor(value).detach().to(torch.float64)
            finite = torch.isfinite(value)
            value = torch.where(finite, value, torch.zeros_like(value))
            if name in self._sums:
                self._sums[name] += value
                self._counts[name] += finite
            else:
                self._sums[name], self._counts[name] = value, finite.to(torch.float64)

    def epoch_completed(self, engine: Engine) -> None:
        """Write the epoch means into ``engine.state.metrics`` (the one read of the sums per epoch)."""
        names = sorted(self._sums)
        sums = torch.tensor([self._sums[n].item() for n in names], dtype=torch.float64)
        counts = torch.tensor([self._counts[n].item() for n in names], dtype=torch.float64)
        if idist.get_world_size() > 1:
            # every rank must reach the collective with the same term names: the loss reports a fixed set
            sums, counts = idist.all_reduce(sums), idist.all_reduce(counts)
        for name, total, count in zip(names, sums.tolist(), counts.tolist()):
            if count > 0:
                engine.state.metrics[f"{self.prefix}{name}"] = total / count


class AmpGradScaler:
    """The trainer's gradient scaler, enabled only when the autocast dtype is float16.

    MONAI's ``SupervisedTrainer.run`` gives the trainer an enabled ``GradScaler`` whenever ``amp`` is on, whatever
    ``amp_kwargs["dtype"]``. bfloat16 has float32's exponent range and needs no loss scaling, and an enabled scaler
    reads its inf/NaN check back to the host in every ``step``, so each training step would wait for the GPU. On
    ``Events.STARTED`` (after ``run`` made its own) this handler installs a scaler that is enabled for float16 only;
    a disabled scaler steps the optimizer directly. Gradient clipping (:class:`GradientClipping`) still sees unscaled
    gradients either way. Its ``state_dict`` (float16: the scale and growth tracker; otherwise empty) belongs in the
    training state, so a resumed float16 run continues with its loss scale instead of starting again at 2**16.

    Args:
        dtype: the autocast dtype (the configs' ``amp_dtype``).
        device_type: the autocast device type (MONAI's trainers autocast on ``"cuda"`` only).

    Example::

        AmpGradScaler(torch.bfloat16).attach(trainer)  # trainer.amp True: no scaling, no per-step host read
    """

    def __init__(self, dtype: torch.dtype, device_type: str = "cuda") -> None:
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}.")
        self.dtype = dtype
        self.scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)

    def attach(self, engine: Engine) -> None:
        """Install the scaler when the trainer starts (only a trainer with ``amp`` on has one to replace)."""
        attach_once(engine, (Events.STARTED, self.install))

    def install(self, engine: Engine) -> None:
        if getattr(engine, "amp", False):
            engine.scaler = self.scaler

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore the loss scale; a state without one (saved with bfloat16 or without AMP) leaves it as it is."""
        if not state_dict:
            if self.scaler.is_enabled():
                logging.getLogger(__name__).warning(
                    "the training state has no loss scale (saved without float16 AMP): starting afresh."
                )
            return
        self.scaler.load_state_dict(dict(state_dict))


class TrainingStateSaver:
    """Save the full training state to one fixed file every ``interval`` epochs, for resuming a killed run.

    The file holds ``{name: obj.state_dict()}`` for every entry of ``save_dict`` (the layout ignite's ``Checkpoint``
    writes), so ``monai.handlers.CheckpointLoader(load_path=..., load_dict=<same dict>)`` restores it, including the
    trainer's epoch and iteration counters. The file is written by :func:`custom_components.core.atomic.save_atomic`
    (a temporary file in the same folder, renamed over the previous one), so a crash while saving leaves the
    previous complete checkpoint in place. Unlike ``CheckpointSaver(save_interval=...)``, whose file name changes
    every epoch, the fixed name lets a config test ``os.path.exists`` to decide whether to resume.

    Args:
        save_dir: folder of the checkpoint (created if absent).
        save_dict: objects with ``state_dict()``, e.g. ``{"model": net, "optimizer": opt, "lr_scheduler": sched,
            "trainer": trainer}``. A ``DistributedDataParallel``/``DataParallel`` module is saved unwrapped.
        filename: file name inside ``save_dir``.
        interval: save every this many epochs, >= 1.
        save_rank: the rank that writes the file (the others do nothing).
        engine_key: if given, also save the state of the engine this handler is attached to under this name
            (``"trainer"``: its epoch and iteration counters). A config cannot put the trainer itself in
            ``save_dict`` of one of the trainer's own handlers (a circular reference), hence this option.

    Raises:
        ValueError: on an empty ``save_dict``, an object without ``state_dict``, a bad ``interval`` or ``filename``.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint.pt",
        interval: int = 1,
        save_rank: int = 0,
        engine_key: str | None = None,
    ) -> None:
        if not save_dict and not engine_key:
            raise ValueError("save_dict must name at least one object to save, got an empty mapping.")
        for name, obj in save_dict.items():
            if not callable(getattr(obj, "state_dict", None)):
                raise ValueError(f"save_dict[{name!r}] has no state_dict() method: {type(obj).__name__}.")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive integer, got {interval!r}.")
        if not filename or os.path.basename(filename) != filename:
            raise ValueError(f"filename must be a plain file name without folders, got {filename!r}.")
        self.save_dir = os.fspath(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.interval = interval
        self.save_rank = save_rank
        if engine_key is not None and (not engine_key or engine_key in self.save_dict):
            raise ValueError(f"engine_key must be a non-empty name not already in save_dict, got {engine_key!r}.")
        self.engine_key = engine_key
        self.logger = logging.getLogger(__name__)

    @property
    def path(self) -> str:
        """Full path of the checkpoint file."""
        return os.path.join(self.save_dir, self.filename)

    def attach(self, engine: Engine) -> None:
        """Save at the end of every ``interval``-th epoch (and remember ``engine`` if ``engine_key`` is set)."""
        if self.engine_key is not None:
            self.save_dict[self.engine_key] = engine
        event = Events.EPOCH_COMPLETED(every=self.interval)
        if not engine.has_event_handler(self, event):
            engine.add_event_handler(event, self)

    def __call__(self, engine: Engine | None = None) -> None:
        """Write the checkpoint now (on ``save_rank`` only)."""
        if idist.get_rank() != self.save_rank:
            return
        state = {}
        for name, obj in self.save_dict.items():
            if isinstance(obj, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
                obj = obj.module
            state[name] = obj.state_dict()
        save_atomic(self.path, lambda tmp: torch.save(state, tmp))
        epoch = getattr(getattr(engine, "state", None), "epoch", None)
        self.logger.info(f"saved training state (epoch {epoch}) to {self.path}")


class _AtomicDiskSaver(BaseSaveHandler):
    """ignite save handler writing through :func:`~custom_components.core.atomic.save_atomic`, on rank 0 only.

    ignite's own ``DiskSaver(atomic=True)`` writes through ``tempfile`` (mode 0600, so a group could not read the
    model; the reason MONAI turns it off), and with a fixed file name ignite removes the old file *before* writing the
    new one: a run killed in between would leave no model at all. Here a fixed name is never removed, the rename of
    the new file replaces it. (With generated names, as for interval checkpoints, what ignite removes first is the
    oldest of several files, never the one being replaced.)
    """

    def __init__(self, dirname: str, filename: str | None = None) -> None:
        self.dirname, self.filename = os.fspath(dirname), filename

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() == 0:
            save_atomic(os.path.join(self.dirname, self.filename or filename), lambda tmp: torch.save(checkpoint, tmp))

    def remove(self, filename: str) -> None:
        path = os.path.join(self.dirname, filename)
        if self.filename is None and idist.get_rank() == 0 and os.path.exists(path):
            os.remove(path)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments) whose files are written atomically, with a resumable record.

    - Every file it writes (best model, final, interval checkpoints) goes through
      :func:`~custom_components.core.atomic.save_atomic`: a run killed while saving leaves the previous complete file
      (or none), never a torn one, and a fixed ``key_metric_filename`` is replaced by a rename, never deleted first.
      Files are written on rank 0 only, as ignite's ``DiskSaver`` does, so the saver can be built on every rank.
    - :meth:`state_dict` / :meth:`load_state_dict` hold the best-model record: the key-metric list that decides
      whether a new validation result replaces the saved model, and the best metric and its epoch of the engine it is
      attached to. Saved with the training state (:class:`TrainingStateSaver`), a resumed run keeps the model of the
      best epoch before the interruption unless a later epoch beats it, and reports the true best epoch. (MONAI's
      own way, ``key_metric_save_state=True``, stores the record inside the model file, which then no longer loads
      as a bare ``state_dict``.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, checkpoint.save_handler.filename)
        self._engine: weakref.ref | None = None

    def attach(self, engine: Engine) -> None:
        """MONAI's ``attach``; also remembers the engine whose best metric :meth:`state_dict` records."""
        self._engine = weakref.ref(engine)
        super().attach(engine)

    def state_dict(self) -> dict[str, Any]:
        """The best-model record: ``{"key_metric": ignite's list of (score, file), "best_metric", "best_metric_epoch"}``
        (the last two ``None`` before :meth:`attach`)."""
        state = getattr(self._engine() if self._engine is not None else None, "state", None)
        tracked = self._key_metric_checkpoint
        return {
            "key_metric": tracked.state_dict() if tracked is not None else None,
            "best_metric": getattr(state, "best_metric", None),
            "best_metric_epoch": getattr(state, "best_metric_epoch", None),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a record written by :meth:`state_dict` (call after :meth:`attach`, e.g. from a ``CheckpointLoader``
        that fires when the trainer starts)."""
        if state_dict.get("key_metric") is not None:
            super().load_state_dict(state_dict["key_metric"])
        engine = self._engine() if self._engine is not None else None
        if engine is not None and state_dict.get("best_metric") is not None:
            engine.state.best_metric = state_dict["best_metric"]
            engine.state.best_metric_epoch = state_dict["best_metric_epoch"]


#: where transforms that may hold random transforms live (their attributes are searched, nothing else's)
_TRANSFORM_MODULES = ("monai.transforms", "custom_components")


def _generator_state(generator: np.random.RandomState | None = None) -> dict[str, Any]:
    """A NumPy generator's state with its key array as a tensor: ``torch.load(weights_only=True)`` refuses arrays."""
    state = (generator or np.random).get_state(legacy=False)
    inner = dict(state["state"], key=torch.from_numpy(state["state"]["key"].astype(np.int64)))
    return dict(state, state=inner)


def _set_generator_state(state: Mapping[str, Any], generator: np.random.RandomState | None = None) -> None:
    inner = dict(state["state"], key=np.asarray(state["state"]["key"].cpu(), dtype=np.uint32))
    (generator or np.random).set_state(dict(state, state=inner))


def _random_transforms(root: Any) -> list[Randomizable]:
    """Every ``Randomizable`` reachable from ``root`` through attributes, lists, tuples and dicts, each once, in a
    fixed order (a dictionary transform draws from the array transform it wraps, which has its own generator)."""
    found, queue, seen = [], [root], set()
    while queue:
        obj = queue.pop(0)
        if obj is None or id(obj) in seen or isinstance(obj, (str, bytes, int, float, torch.Tensor, np.ndarray)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            queue.extend(obj)
        elif isinstance(obj, dict):
            queue.extend(obj.values())
        elif isinstance(obj, Randomizable) or type(obj).__module__.startswith(_TRANSFORM_MODULES):
            found += [obj] if isinstance(obj, Randomizable) else []
            queue.extend(value for name, value in vars(obj).items() if name != "R")
    return found


class RandomStates:
    """The random generators of a training run as one ``state_dict``: Python's, NumPy's, PyTorch's (CPU and CUDA)
    and the own generator (``R``) of every random transform in ``transforms``.

    Saved with the training state at the end of an epoch and restored when a killed run resumes, the next epoch
    shuffles, augments and drops out exactly as it would have in the uninterrupted run. With DataLoader workers the
    transforms in the workers are seeded from PyTorch's generator at the start of every epoch (MONAI's
    ``DataLoader``), which is restored too (the bundles' bit-for-bit resume test runs without workers). States hold
    tensors, ints and strings only, so the file loads with ``torch.load(weights_only=True)``.

    Args:
        transforms: a transform, ``Compose`` or list of them whose random transforms draw in the main process (with
            ``num_workers=0``); ``None`` for the global generators only.
    """

    def __init__(self, transforms: Any = None) -> None:
        self.transforms = _random_transforms(transforms)

    def state_dict(self) -> dict[str, Any]:
        return {
            "python": random.getstate(),
            "numpy": _generator_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "transforms": [_generator_state(t.R) for t in self.transforms],
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore every generator.

        Raises:
            ValueError: when the saved states are for a different number of random transforms (another config).
        """
        if len(state_dict["transforms"]) != len(self.transforms):
            raise ValueError(
                f"the saved training state has {len(state_dict['transforms'])} random transforms, this config "
                f"{len(self.transforms)}: resume with the config the run was started with."
            )
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
        _set_generator_state(state_dict["numpy"])
        # generator states must be CPU byte tensors: a loader's map_location may have moved them to the GPU
        torch.set_rng_state(state_dict["torch"].cpu())
        if state_dict["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([state.cpu() for state in state_dict["cuda"]])
        for transform, state in zip(self.transforms, state_dict["transforms"]):
            _set_generator_state(state, transform.R)
