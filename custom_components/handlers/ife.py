# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Output writers of the IFE multi-task bundle.

- :class:`IFEPredictionWriter` (inference): ``predictions.csv`` with one row per image (class call, the nine
  fused probabilities, the severe and mild calls) and, per image, a PNG of the gel with its horizontal attention
  profiles drawn beside it, rows aligned, as in Fig. 3 of Shi et al. (MICCAI 2023).
- :class:`IFEEvaluationReport` (evaluation): the paper's metrics (accuracy, macro F1, FNR, M1-Acc, M3-Acc,
  per-class recall, confusion matrix) as a JSON file, and a confusion-matrix PNG.

Both are MONAI-style handlers: ``__init__`` stores, ``attach(engine)`` registers guarded callbacks, the data comes
through ``output_transform``, files are written on ``save_rank`` only. Figures use matplotlib's Agg canvas directly
(no pyplot state), so they work headless and in worker threads.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.handlers import from_engine
from monai.utils import IgniteInfo, min_version, optional_import

from custom_components.utils.atomic import write_json_atomic
from custom_components.metrics.ife import IFEClassificationMetric
from custom_components.ife_classes import IFE_CLASSES, MILD_CLASSES, SEVERE_CLASSES, class_to_subtasks

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = [
    "PREDICTION_COLUMNS",
    "attention_profile",
    "plot_attention_figure",
    "plot_confusion_matrix",
    "IFEPredictionWriter",
    "IFEEvaluationReport",
]

PREDICTION_COLUMNS: tuple[str, ...] = (
    ("image", "label", "prediction", "probability")
    + tuple(f"p_{name}" for name in IFE_CLASSES)
    + ("severe_prediction", "mild_prediction")
)
"""Columns of ``predictions.csv``: ``label`` is empty for unlabelled images, ``probability`` is the fused probability
of the predicted class, ``p_<class>`` the nine fused probabilities (they sum to 1)."""

_PROFILE_COLOURS = ("tab:orange", "tab:blue", "tab:green", "tab:purple")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def attention_profile(attention: Any, height: int) -> np.ndarray:
    """Upsample a horizontal attention map (one weight per feature row) to ``height`` image rows.

    Feature row ``j`` of ``h`` covers image rows ``[j H / h, (j + 1) H / h)``; the profile is linearly interpolated
    between the row centres and held constant beyond the first and last centre (the same as
    ``torch.nn.functional.interpolate(mode="linear", align_corners=False)``), so it lines up with the image rows
    whatever the network's input size, as long as the image was resized along the height without cropping.

    Args:
        attention: (h,) attention weights (tensor or array), or (1, h).
        height: number of image rows to map onto, >= 1.

    Returns:
        (height,) float64 array.

    Raises:
        ValueError: on an empty or non-1-D map or a bad height.
    """
    array = _to_numpy(attention)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"attention must be a non-empty (h,) or (1, h) map, got shape {array.shape}.")
    values = array.astype(np.float64)
    if isinstance(height, bool) or not isinstance(height, (int, np.integer)) or height < 1:
        raise ValueError(f"height must be a positive integer, got {height!r}.")
    h = values.size
    centres = (np.arange(h) + 0.5) * height / h
    return np.interp(np.arange(height) + 0.5, centres, values)


def _display_image(image: Any) -> np.ndarray:
    """(C, H, W) or (H, W[, C]) array of any range -> (H, W, 3) float in [0, 1] for imshow."""
    array = _to_numpy(image).astype(np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)  # channel-first network input -> (H, W, C)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"image must be (C, H, W) or (H, W[, C]), got shape {np.shape(array)}.")
    array = array[..., :3]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def plot_attention_figure(
    image: Any,
    profiles: Mapping[str, Any],
    path: str | os.PathLike,
    title: str | None = None,
    dpi: int = 100,
) -> None:
    """Save the gel with its attention profiles drawn beside it, rows aligned (Fig. 3 of the paper).

    Each profile gets its own panel to the right of the image, sharing the image's row axis; the row of highest
    attention is marked on the gel with a dashed line of the profile's colour.

    Args:
        image: the gel, (H, W, 3) as read from the file or (C, H, W) network input (any value range).
        profiles: ``{name: (h,) attention map}``, e.g. ``{"severe": ..., "mild": ...}``; each is upsampled to H.
        path: PNG to write (its folder must exist).
        title: figure title.
        dpi: resolution.

    Raises:
        ValueError: on an empty ``profiles`` or bad shapes.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not profiles:
        raise ValueError("profiles must hold at least one attention map.")
    rgb = _display_image(image)
    height, width = rgb.shape[:2]
    rows = np.arange(height) + 0.5
    panel_h = 4.0
    image_w = min(max(panel_h * width / height, 1.5), 9.0)
    # fixed margins instead of bbox_inches="tight", which renders the figure twice (half the time per image)
    fig = Figure(figsize=(image_w + 1.6 * len(profiles) + 0.9, panel_h + 1.2), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.9 / (image_w + 1.6 * len(profiles) + 0.9), right=0.97, bottom=0.14, top=0.86)
    grid = fig.add_gridspec(1, 1 + len(profiles), width_ratios=[image_w] + [1.4] * len(profiles), wspace=0.08)
    ax_img = fig.add_subplot(grid[0, 0])
    ax_img.imshow(rgb, extent=(0, width, height, 0), aspect="auto", interpolation="antialiased")
    ax_img.set_xticks([])
    ax_img.set_ylabel("image row (migration direction)")
    for i, (name, attention) in enumerate(profiles.items()):
        colour = _PROFILE_COLOURS[i % len(_PROFILE_COLOURS)]
        profile = attention_profile(attention, height)
        ax = fig.add_subplot(grid[0, 1 + i], sharey=ax_img)
        ax.fill_betweenx(rows, 0.0, profile, color=colour, alpha=0.35, linewidth=0)
        ax.plot(profile, rows, color=colour, linewidth=1.5)
        ax.set_xlim(0.0, max(1.0, float(profile.max()) * 1.05))
        ax.set_xticks([0.0, 0.5, 1.0])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("attention", fontsize=8)
        ax.tick_params(labelleft=False, labelsize=7)
        ax.grid(alpha=0.3)
        peak = rows[int(np.argmax(profile))]
        ax_img.axhline(peak, color=colour, linestyle="--", linewidth=1.2, alpha=0.9)
    ax_img.set_ylim(height, 0)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(os.fspath(path), dpi=dpi)


def plot_confusion_matrix(
    cm: Any,
    path: str | os.PathLike,
    class_names: Sequence[str] = IFE_CLASSES,
    title: str | None = None,
    dpi: int = 120,
) -> None:
    """Save a confusion matrix as a PNG: colour = row-normalised fraction (recall), text = counts.

    Args:
        cm: (C, C) counts, rows = truth, columns = prediction.
        path: PNG to write (its folder must exist).
        class_names: C names, in index order.
        title: figure title.
        dpi: resolution.

    Raises:
        ValueError: when ``cm`` is not (C, C) with C = ``len(class_names)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = _to_numpy(cm).astype(np.int64)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ValueError(f"cm must have shape ({n}, {n}) to match class_names, got {counts.shape}.")
    support = counts.sum(axis=1, keepdims=True)
    fraction = np.divide(counts, support, out=np.zeros(counts.shape, dtype=np.float64), where=support > 0)
    fig = Figure(figsize=(1.0 + 0.75 * n, 0.6 + 0.7 * n), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    shown = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if fraction[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=list(class_names), fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title, fontsize=10)
    fig.savefig(os.fspath(path), dpi=dpi, bbox_inches="tight")


def _class_name(value: Any, what: str) -> str:
    index = int(_to_numpy(value).reshape(-1)[0]) if np.size(_to_numpy(value)) == 1 else None
    if index is None or not 0 <= index < len(IFE_CLASSES):
        raise ValueError(f"{what} must be one 9-class index in [0, 8], got {value!r}.")
    return IFE_CLASSES[index]


class IFEPredictionWriter:
    """Write ``predictions.csv`` and one attention figure per image during inference.

    Expects the evaluator to run ``ForwardHeads(network)`` (so one forward pass gives the probabilities, the head
    logits and the attention maps) and decollated, flattened outputs, e.g. with the postprocessing
    ``FlattenSubKeysd(keys="pred", sub_keys=[...])`` then ``IFECalld(keys="pred", output_postfix="call")``. Per item
    it reads:

    - the fused probabilities (9,) under ``pred_key`` and the class call under ``call_key``;
    - the head logits under ``severe_key`` / ``mild_key`` for the severe and mild calls (argmax of each head); when
      absent (the 9-class baseline) they are derived from the class call;
    - the attention maps named in ``attention_keys`` (those present are drawn);
    - the image under ``image_key``: its ``meta["filename_or_obj"]`` names the row and the figure, and the figure
      shows the original file when it can be read (the network input otherwise);
    - the label under ``label_key`` if any (unlabelled images are fine: the column is left empty).

    Rows are written to ``<filename>.partial`` and flushed as they come; at the end of the run the file is renamed
    to ``filename``, so ``predictions.csv`` only ever exists complete, and a crash leaves the rows done so far in the
    ``.partial`` file. Figures go to ``output_dir/figure_dir/<image stem>.png`` (a numeric suffix is added when two
    images share a stem). Files are written on ``save_rank`` only: run inference as a single process.

    Args:
        output_dir: folder of the CSV and of the figure folder (created if absent).
        filename: CSV file name.
        figure_dir: sub-folder of the figures; None writes no figures.
        max_figures: write at most this many figures per run (None: one per image).
        pred_key: key of the (9,) fused probabilities.
        call_key: key of the class index (from ``IFECalld``).
        severe_key: key of the severe head's (4,) logits.
        mild_key: key of the mild head's (3,) logits.
        attention_keys: ``{panel title: key}`` of the attention maps to draw, in panel order.
        image_key: key of the image (a MetaTensor with ``filename_or_obj``).
        label_key: key of the label (class index or name), optional per item.
        output_transform: maps ``engine.state.output`` to the list of per-image dicts (a batched dict is
            decollated).
        batch_transform: maps ``engine.state.batch`` to the list of per-image input dicts; keys missing from an
            output item (e.g. a string label, which the engine does not copy to its output) are read there.
        save_rank: the rank that writes.
        dpi: resolution of the figures.

    Raises:
        ValueError: on bad arguments; at run time, when an item lacks ``pred_key``/``call_key`` or holds a
            malformed value.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str = "predictions.csv",
        figure_dir: str | None = "attention",
        max_figures: int | None = None,
        pred_key: str = "pred",
        call_key: str = "pred_call",
        severe_key: str = "severe_logits",
        mild_key: str = "mild_logits",
        attention_keys: Mapping[str, str] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        output_transform: Callable = lambda x: x,
        batch_transform: Callable = lambda x: x,
        save_rank: int = 0,
        dpi: int = 100,
    ) -> None:
        if not filename or os.path.basename(filename) != filename:
            raise ValueError(f"filename must be a plain file name, got {filename!r}.")
        bad_count = isinstance(max_figures, bool) or not isinstance(max_figures, int) or max_figures < 0
        if max_figures is not None and bad_count:
            raise ValueError(f"max_figures must be None or a non-negative integer, got {max_figures!r}.")
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.figure_dir = figure_dir
        self.max_figures = max_figures
        self.pred_key = pred_key
        self.call_key = call_key
        self.severe_key = severe_key
        self.mild_key = mild_key
        self.attention_keys = dict(
            {"severe": "attention_severe", "mild": "attention_mild", "attention": "attention"}
            if attention_keys is None
            else attention_keys
        )
        self.image_key = image_key
        self.label_key = label_key
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.save_rank = save_rank
        self.dpi = dpi
        self.logger = logging.getLogger(__name__)
        self._file: Any = None
        self._writer: Any = None
        self._stems: set[str] = set()
        self._count = 0
        self._figures = 0

    @property
    def csv_path(self) -> str:
        """Final path of the CSV."""
        return os.path.join(self.output_dir, self.filename)

    def attach(self, engine: Engine) -> None:
        """Open the CSV when the run starts, write rows after each iteration, finish the file when it completes."""
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)
        if not engine.has_event_handler(self.exception_raised, Events.EXCEPTION_RAISED):
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    def _is_writer(self) -> bool:
        return idist.get_rank() == self.save_rank

    def started(self, engine: Engine | None = None) -> None:
        """Start a fresh ``.partial`` CSV with its header."""
        self.close()
        self._stems.clear()
        self._count = 0
        self._figures = 0
        if not self._is_writer():
            return
        os.makedirs(self.output_dir, exist_ok=True)
        self._file = open(f"{self.csv_path}.partial", "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file)
        self._writer.writerow(PREDICTION_COLUMNS)
        self._file.flush()

    def close(self) -> None:
        """Close the ``.partial`` file (it stays on disk)."""
        if self._file is not None:
            self._file.close()
        self._file, self._writer = None, None

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """Close the ``.partial`` file, keeping the rows written so far, and re-raise.

        Ignite does not re-raise an exception that an ``EXCEPTION_RAISED`` handler received, hence the ``raise``.
        """
        self.close()
        raise e

    def completed(self, engine: Engine | None = None) -> None:
        """Rename the finished CSV to its final name and log where the outputs are."""
        if self._file is None:
            return
        self.close()
        os.replace(f"{self.csv_path}.partial", self.csv_path)
        where = f" and {self._figures} attention figures in {os.path.join(self.output_dir, self.figure_dir)}" if (
            self.figure_dir and self._figures
        ) else ""
        self.logger.info(f"wrote {self._count} predictions to {self.csv_path}{where}")

    @staticmethod
    def _as_list(data: Any) -> list[Mapping]:
        if data is None:
            return []
        if isinstance(data, Mapping):
            data = decollate_batch(data, detach=True)
        return list(data)

    def _items(self, engine: Engine) -> list[Mapping]:
        outputs = self._as_list(self.output_transform(engine.state.output))
        inputs = self._as_list(self.batch_transform(engine.state.batch))
        if len(inputs) != len(outputs):
            return outputs
        # output values take precedence; inputs fill in what the engine did not copy: a string label becomes
        # ``label=None`` in the output (only tensor labels are moved to the device), so None never overrides
        return [{**dict(i), **{k: v for k, v in dict(o).items() if v is not None}} for i, o in zip(inputs, outputs)]

    def _source(self, item: Mapping) -> str | None:
        meta = getattr(item.get(self.image_key), "meta", None)
        if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
            return str(meta["filename_or_obj"])
        return None

    def _figure_path(self, source: str | None) -> str:
        stem = os.path.splitext(os.path.basename(source))[0] if source else f"image_{self._count:05d}"
        candidate, suffix = stem, 1
        while candidate in self._stems:
            candidate, suffix = f"{stem}_{suffix}", suffix + 1
        self._stems.add(candidate)
        return os.path.join(self.output_dir, self.figure_dir or "", f"{candidate}.png")

    def _gel(self, item: Mapping, source: str | None) -> Any:
        if source and os.path.isfile(source):
            try:
                from PIL import Image

                with Image.open(source) as img:
                    return np.asarray(img.convert("RGB"))
            except (OSError, ValueError):
                pass  # fall back to the network input below
        return item[self.image_key]

    def _row(self, item: Mapping, source: str | None) -> tuple[list[Any], str, float]:
        for key in (self.pred_key, self.call_key):
            if key not in item:
                raise ValueError(
                    f"IFEPredictionWriter: no {key!r} in the output (keys {sorted(map(str, item))}); the "
                    f"postprocessing must provide the probabilities under {self.pred_key!r} and IFECalld's call "
                    f"under {self.call_key!r}."
                )
        probs = _to_numpy(item[self.pred_key]).astype(np.float64).reshape(-1)
        if probs.size != len(IFE_CLASSES):
            raise ValueError(f"{self.pred_key!r} must hold 9 probabilities, got shape {np.shape(item[self.pred_key])}.")
        call = _class_name(item[self.call_key], self.call_key)
        call_index = IFE_CLASSES.index(call)
        if self.severe_key in item and self.mild_key in item:
            severe = SEVERE_CLASSES[int(np.argmax(_to_numpy(item[self.severe_key])))]
            mild = MILD_CLASSES[int(np.argmax(_to_numpy(item[self.mild_key])))]
        else:
            s, m = class_to_subtasks(call_index)
            severe, mild = SEVERE_CLASSES[s], MILD_CLASSES[m]
        label = ""
        if item.get(self.label_key) is not None:
            value = item[self.label_key]
            label = value if isinstance(value, str) else _class_name(value, self.label_key)
        row = [source or f"image_{self._count:05d}", label, call, f"{probs[call_index]:.6f}"]
        row += [f"{p:.6f}" for p in probs] + [severe, mild]
        return row, call, float(probs[call_index])

    def __call__(self, engine: Engine) -> None:
        """Write the rows (and figures) of the current iteration."""
        if not self._is_writer():
            return
        if self._writer is None:  # attached after STARTED, or run() called directly
            self.started(engine)
        for item in self._items(engine):
            source = self._source(item)
            row, call, prob = self._row(item, source)
            self._writer.writerow(row)
            self._file.flush()
            self._count += 1
            if self.figure_dir is None or (self.max_figures is not None and self._figures >= self.max_figures):
                continue
            profiles = {name: item[key] for name, key in self.attention_keys.items() if key in item}
            if not profiles:
                continue
            os.makedirs(os.path.join(self.output_dir, self.figure_dir), exist_ok=True)
            title = f"{os.path.basename(row[0])}: {call} (p={prob:.2f})" + (f", truth {row[1]}" if row[1] else "")
            plot_attention_figure(self._gel(item, source), profiles, self._figure_path(source), title, self.dpi)
            self._figures += 1


class IFEEvaluationReport:
    """Compute the paper's metrics over an evaluation run and write them to JSON plus a confusion-matrix PNG.

    The handler owns an :class:`~custom_components.metrics.ife.IFEClassificationMetric`: it is reset when the run
    starts, fed ``output_transform(engine.state.output)`` after every iteration, and aggregated when the run
    completes (on every rank, since the metric all-gathers under DDP; only ``save_rank`` writes). The JSON holds
    ``accuracy``, ``macro_f1``, ``fnr``, ``m1_acc``, ``m3_acc`` (null where undefined), ``per_class_recall``,
    ``confusion_matrix`` (rows = truth), ``support``, ``class_names``, ``minority_classes``, ``num_samples`` and
    the entries of ``extra``. The report is also kept in :attr:`report`.

    Args:
        output_dir: folder of the outputs (created if absent).
        metrics_filename: JSON file name.
        figure_filename: PNG file name; None writes no figure.
        minority_classes: the training split's rarest classes, rarest first (for M1/M3); None uses the evaluated
            truth (see :mod:`custom_components.metrics.ife`).
        output_transform: maps ``engine.state.output`` to ``(y_pred, y)``: class calls (after ``IFECalld``) and
            labels.
        extra: additional JSON entries (e.g. the checkpoint and data split evaluated).
        save_rank: the rank that writes.

    Raises:
        ValueError: on bad file names.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        metrics_filename: str = "metrics.json",
        figure_filename: str | None = "confusion_matrix.png",
        minority_classes: Sequence[int | str] | None = None,
        output_transform: Callable = from_engine(["pred", "label"]),
        extra: Mapping[str, Any] | None = None,
        save_rank: int = 0,
    ) -> None:
        for name, value in (("metrics_filename", metrics_filename), ("figure_filename", figure_filename)):
            if value is not None and (not value or os.path.basename(value) != value):
                raise ValueError(f"{name} must be a plain file name, got {value!r}.")
        if not metrics_filename:
            raise ValueError("metrics_filename must be a file name, got None.")
        self.output_dir = os.fspath(output_dir)
        self.metrics_filename = metrics_filename
        self.figure_filename = figure_filename
        self.metric = IFEClassificationMetric(minority_classes=minority_classes)
        self.output_transform = output_transform
        self.extra = dict(extra or {})
        self.save_rank = save_rank
        self.report: dict[str, Any] | None = None
        self.logger = logging.getLogger(__name__)

    @property
    def metrics_path(self) -> str:
        """Path of the JSON report."""
        return os.path.join(self.output_dir, self.metrics_filename)

    def attach(self, engine: Engine) -> None:
        """Register reset (STARTED), update (ITERATION_COMPLETED) and write (COMPLETED)."""
        if not engine.has_event_handler(self.started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self.started)
        if not engine.has_event_handler(self.iteration_completed, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        if not engine.has_event_handler(self.completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine | None = None) -> None:
        """Clear the buffered predictions."""
        self.metric.reset()
        self.report = None

    def iteration_completed(self, engine: Engine) -> None:
        """Buffer the iteration's calls and labels."""
        y_pred, y = self.output_transform(engine.state.output)
        if isinstance(y_pred, (list, tuple)):
            # decollated items: numbers for 0-d values (decollate_batch(detach=True) unwraps scalars)
            y_pred = [torch.as_tensor(v) for v in y_pred]
            y = [torch.as_tensor(v) for v in y]
        self.metric(y_pred=y_pred, y=y)

    def completed(self, engine: Engine | None = None) -> None:
        """Aggregate, then write the JSON and the PNG and log their paths."""
        self.report = {**self.metric.report(), **self.extra}
        if idist.get_rank() != self.save_rank:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        write_json_atomic(self.report, self.metrics_path)
        written = [self.metrics_path]
        if self.figure_filename is not None:
            figure_path = os.path.join(self.output_dir, self.figure_filename)
            acc, f1 = self.report["accuracy"], self.report["macro_f1"]
            title = f"n={self.report['num_samples']}, accuracy {acc:.3f}" if acc is not None else None
            if title and f1 is not None:
                title += f", macro F1 {f1:.3f}"
            plot_confusion_matrix(self.report["confusion_matrix"], figure_path, IFE_CLASSES, title)
            written.append(figure_path)
        summary = ", ".join(
            f"{k}={self.report[k]:.4f}" for k in ("accuracy", "macro_f1", "fnr", "m1_acc", "m3_acc")
            if self.report[k] is not None
        )
        self.logger.info(f"IFE metrics: {summary}; wrote {' and '.join(written)}")
