# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Output writers of the IFE multi-task bundle.

- :class:`IFEPredictionWriter` (inference): ``predictions.csv`` with one row per image (class call, the nine
  fused probabilities, the severe and mild calls, the image row where each branch's attention peaks),
  ``attention_profiles.jsonl`` with every attention map of every image and, per image, a PNG of the gel with its
  horizontal attention profiles drawn beside it (:func:`custom_components.ife.figures.plot_attention_figure`).
- :class:`IFEEvaluationReport` (evaluation): the paper's metrics (accuracy, macro F1, FNR, M1-Acc, M3-Acc,
  per-class recall, confusion matrix) as a JSON file, and a confusion-matrix PNG
  (:func:`custom_components.ife.figures.plot_confusion_matrix`), from the evaluator's own metric.

Both are MONAI-style handlers: ``__init__`` stores, ``attach(engine)`` registers guarded callbacks, files are
written on ``save_rank`` only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import decollate_batch
from monai.utils import (
    IgniteInfo,
    TraceKeys,
    evenly_divisible_all_gather,
    min_version,
    optional_import,
    string_list_all_gather,
)

from custom_components.core.image_files import printable_path
from custom_components.core.prediction_writer import PredictionWriter
from custom_components.ife.classes import IFE_CLASSES, MILD_CLASSES, SEVERE_CLASSES, class_to_subtasks
from custom_components.ife.attention import image_to_network_rows, map_row_centres, peak_row
from custom_components.ife.lanes import lanes_found
from custom_components.ife.referral import coverage_accuracy_curve, refer_decisions, referral_metrics
from custom_components.ife.calibration.temperature import (
    expected_calibration_error,
    negative_log_likelihood,
    reliability_bins,
    temper_probabilities,
)
from custom_components.ife.metrics import IFEClassificationMetric, confusion_matrix, json_report
from custom_components.ife.networks import ATTENTION_STRIDES
from custom_components.core.atomic import write_json_atomic
from custom_components.core.events import attach_once
from custom_components.ife.figures import (
    plot_attention_figure,
    plot_confusion_matrix,
    plot_coverage_accuracy,
    plot_reliability_diagram,
)

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["PREDICTION_COLUMNS", "IFEPredictionWriter", "IFEEvaluationReport"]

PREDICTION_COLUMNS: tuple[str, ...] = (
    ("image", "label", "prediction", "probability")
    + tuple(f"p_{name}" for name in IFE_CLASSES)
    + ("severe_prediction", "mild_prediction", "severe_attention_peak_row", "mild_attention_peak_row")
    + ("calibrated", "refer", "refer_reason", "lane_layout_used")
)
"""Columns of ``predictions.csv``: ``label`` is empty for unlabelled images, ``probability`` is the fused probability
of the predicted class, ``p_<class>`` the nine fused probabilities (they sum to 1; temperature-scaled when
``calibrated`` is ``true``), ``*_attention_peak_row`` the row of the image file (0 = top) at the centre of the
branch's last-stage attention peak (empty for the 9-class baseline, which has no branches), ``refer`` (``true`` /
``false``) and ``refer_reason`` the refer-to-expert decision (:func:`custom_components.ife.referral.refer_decisions`,
its fixed vocabulary; empty for a gel decided automatically), ``lane_layout_used`` whether the network saw the gel's
six lanes side by side (``true``) or, its lanes not found, the whole image (``false``, and the gel is referred;
empty when the config does not normalise the lane layout)."""

#: the branch maps behind the ``*_attention_peak_row`` columns
_PEAK_COLUMN_MAPS = ("attention_severe", "attention_mild")


def _lane_layout(image: Any) -> dict[str, Any] | None:
    """``meta["lane_layout"]`` of a :class:`~custom_components.ife.lanes.NormaliseLaneLayoutd` output
    (plain ints, also after collation turned them into tensors), or None when the gel was not normalised."""
    meta = getattr(image, "meta", None)
    layout = meta.get("lane_layout") if isinstance(meta, Mapping) else None
    if not isinstance(layout, Mapping) or "image_shape" not in layout:
        return None
    return {"rows": [int(r) for r in layout["rows"]], "image_shape": [int(s) for s in layout["image_shape"]],
            "orientation": str(layout.get("orientation", "albumin_bottom")), "lanes_found": lanes_found(image)}


def _values(value: Any) -> torch.Tensor:
    """A tensor, array, number or list as a flat float64 CPU tensor."""
    return torch.as_tensor(value).detach().to(device="cpu", dtype=torch.float64).reshape(-1)


def _class_name(value: Any, what: str) -> str:
    try:
        values = _values(value)
    except (TypeError, ValueError, RuntimeError):
        values = None
    index = int(values[0]) if values is not None and values.numel() == 1 else None
    if index is None or not 0 <= index < len(IFE_CLASSES):
        raise ValueError(f"{what} must be one 9-class index in [0, 8], got {value!r}.")
    return IFE_CLASSES[index]


class IFEPredictionWriter(PredictionWriter):
    """Write ``predictions.csv`` and one attention figure per image during inference.

    Expects the evaluator to run ``ForwardHeads(network)`` (so one forward pass gives the probabilities, the head
    logits and the attention maps) and decollated, flattened outputs: the inference config's postprocessing
    ``FlattenSubKeysd(keys="pred")`` then ``IFECalld(keys="probabilities", output_postfix="call")``. Per item it
    reads:

    - the fused probabilities (9,) under ``pred_key`` and the class call under ``call_key``;
    - the head logits under ``severe_key`` / ``mild_key`` for the severe and mild calls (argmax of each head); when
      absent (the 9-class baseline) they are derived from the class call;
    - the attention maps named in ``attention_keys`` (those present are drawn);
    - the image under ``image_key``: its ``meta["filename_or_obj"]`` names the row and the figure, its
      traced ``Resize`` gives the file's rows for the peak rows, and the figure shows the original file when
      it can be read (the network input otherwise). A lane-normalised gel
      (:class:`~custom_components.ife.lanes.NormaliseLaneLayoutd`) carries ``meta["lane_layout"]``
      instead: the network saw only the gel rows ``top..bottom`` of the file, flipped when the file has albumin at
      the top, so network row ``r`` is file row ``top + (r + 0.5) * (bottom - top + 1) / H - 0.5`` (``bottom - ...``
      when flipped); the peak rows and the figure's profiles (drawn on the file, zero outside the gel rows) use
      that;
    - the label under ``label_key`` if any (unlabelled images are fine: the column is left empty);
    - the band-pattern detector's text under ``band_pattern_key`` if any (``""``: nothing unusual), for the refer
      rule: ``refer`` and ``refer_reason`` follow :func:`~custom_components.ife.referral.refer_decisions` at
      ``operating_point`` with the class call; without an operating point (no calibration record) no gel is
      referred on its probabilities and the reason says ``"not calibrated"``.

    The CSV's life cycle (``<filename>.partial`` until the run completes, so ``predictions.csv`` only ever exists
    complete and a crash leaves the rows done so far) and the rank that writes are those of
    :class:`~custom_components.core.prediction_writer.PredictionWriter`: run inference as a single process. Figures go
    to ``output_dir/figure_dir/<image stem>.png`` (a numeric suffix is added when two images share a stem).
    ``profiles_filename`` gets one JSON object per line and image: ``image``, ``image_rows`` (of the file),
    ``network_rows`` (of the network input), ``lane_layout`` (``rows``, ``image_shape``, ``orientation``; only for a
    lane-normalised gel, whose map rows then follow the mapping above, not a plain resize) and ``maps``, ``{key:
    {"stride": s, "values": [...]}}`` for every map named in ``attention_strides`` (map row ``j`` is centred on
    network-input row ``j * s``; see :mod:`custom_components.ife.attention`). It has the CSV's life cycle (``.partial``
    until the run completes).

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
        attention_strides: ``{key: total stride along the height}`` of the maps to record and locate (default
            :data:`~custom_components.ife.networks.ATTENTION_STRIDES`).
        profiles_filename: JSON Lines file of the attention maps; None writes none.
        image_key: key of the image (a MetaTensor with ``filename_or_obj``).
        label_key: key of the label (class index or name), optional per item.
        output_transform: maps ``engine.state.output`` to the list of per-image dicts (a batched dict is
            decollated).
        batch_transform: maps ``engine.state.batch`` to the list of per-image input dicts; keys missing from an
            output item (e.g. a string label, which the engine does not copy to its output) are read there.
        save_rank: the rank that writes.
        dpi: resolution of the figures.
        operating_point: the refer-to-expert operating point (``positive_threshold``, ``confidence_threshold``) of
            the checkpoint's calibration record, or None.
        calibrated: whether the probabilities under ``pred_key`` are temperature-scaled (the ``calibrated`` column).
        band_pattern_key: key of the band-pattern detector's text.

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
        pred_key: str = "probabilities",
        call_key: str = "probabilities_call",
        severe_key: str = "severe_logits",
        mild_key: str = "mild_logits",
        attention_keys: Mapping[str, str] | None = None,
        attention_strides: Mapping[str, int] | None = None,
        profiles_filename: str | None = "attention_profiles.jsonl",
        image_key: str = "image",
        label_key: str = "label",
        output_transform: Callable = lambda x: x,
        batch_transform: Callable = lambda x: x,
        save_rank: int = 0,
        dpi: int = 100,
        operating_point: Mapping[str, Any] | None = None,
        calibrated: bool = False,
        band_pattern_key: str = "band_pattern",
    ) -> None:
        if filename is None:
            raise ValueError("filename must be a plain file name, got None.")
        if profiles_filename is not None and (not profiles_filename or os.path.basename(profiles_filename) != profiles_filename):
            raise ValueError(f"profiles_filename must be a plain file name or None, got {profiles_filename!r}.")
        bad_count = isinstance(max_figures, bool) or not isinstance(max_figures, int) or max_figures < 0
        if max_figures is not None and bad_count:
            raise ValueError(f"max_figures must be None or a non-negative integer, got {max_figures!r}.")
        super().__init__(output_dir, filename, PREDICTION_COLUMNS, output_transform, batch_transform, save_rank)
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
        self.attention_strides = dict(ATTENTION_STRIDES if attention_strides is None else attention_strides)
        self.profiles_filename = profiles_filename
        self.image_key = image_key
        self.label_key = label_key
        self.dpi = dpi
        if operating_point is not None:
            refer_decisions(torch.full((1, len(IFE_CLASSES)), 1.0 / len(IFE_CLASSES)), operating_point)  # checks it
        self.operating_point = None if operating_point is None else dict(operating_point)
        self.calibrated = bool(calibrated)
        self.band_pattern_key = band_pattern_key
        self._profiles: Any = None

    def reset(self) -> None:
        """Start counting rows and figures, and naming figures, afresh."""
        super().reset()
        self._count = 0
        self._figures = 0
        self._referred = 0

    def started(self, engine: Engine | None = None) -> None:
        """Start the CSV (base class) and, on ``save_rank``, the ``.partial`` attention profiles file."""
        super().started(engine)
        self._profiles = None
        if self.is_writer() and self.profiles_filename is not None:
            self._profiles = self.open_partial(self.profiles_filename)

    def summary(self) -> str:
        where = f" and {self._figures} attention figures in {os.path.join(self.output_dir, self.figure_dir)}" if (
            self.figure_dir and self._figures
        ) else ""
        referred = f" ({self._referred} referred to an expert)" if self.operating_point is not None else (
            " (no refer-to-expert operating point: not calibrated)"
        )
        return f"wrote {self._count} predictions{referred} to {self.csv_path}{where}"

    def _source(self, item: Mapping) -> str | None:
        meta = getattr(item.get(self.image_key), "meta", None)
        if isinstance(meta, Mapping) and meta.get("filename_or_obj"):
            return str(meta["filename_or_obj"])
        return None

    def _figure_path(self, source: str | None) -> str:
        name = source or f"image_{self._count:05d}"
        stem = self.unique_stem(os.path.splitext(os.path.basename(name))[0], name)
        return os.path.join(self.output_dir, self.figure_dir or "", f"{stem}.png")

    def _gel(self, item: Mapping, source: str | None) -> Any:
        if source and os.path.isfile(source):
            try:
                from PIL import Image

                with Image.open(source) as img:
                    return np.asarray(img.convert("RGB"))
            except (OSError, ValueError):
                pass  # fall back to the network input below
        return item[self.image_key]

    def _row(self, item: Mapping, source: str | None, maps: Mapping[str, Any]) -> tuple[list[Any], str, float]:
        for key in (self.pred_key, self.call_key):
            if key not in item:
                raise ValueError(
                    f"IFEPredictionWriter: no {key!r} in the output (keys {sorted(map(str, item))}); the "
                    f"postprocessing must provide the probabilities under {self.pred_key!r} and IFECalld's call "
                    f"under {self.call_key!r}."
                )
        probs = _values(item[self.pred_key]).tolist()
        if len(probs) != len(IFE_CLASSES):
            raise ValueError(f"{self.pred_key!r} must hold 9 probabilities, got shape {np.shape(item[self.pred_key])}.")
        call = _class_name(item[self.call_key], self.call_key)
        call_index = IFE_CLASSES.index(call)
        if self.severe_key in item and self.mild_key in item:
            severe = SEVERE_CLASSES[int(_values(item[self.severe_key]).argmax())]
            mild = MILD_CLASSES[int(_values(item[self.mild_key]).argmax())]
        else:
            s, m = class_to_subtasks(call_index)
            severe, mild = SEVERE_CLASSES[s], MILD_CLASSES[m]
        label = ""
        if item.get(self.label_key) is not None:
            value = item[self.label_key]
            label = value if isinstance(value, str) else _class_name(value, self.label_key)
        row = [source or f"image_{self._count:05d}", label, call, f"{probs[call_index]:.6f}"]
        row += [f"{p:.6f}" for p in probs] + [severe, mild]
        row += ["" if key not in maps else self._peak(maps[key]) for key in _PEAK_COLUMN_MAPS]
        pattern = item.get(self.band_pattern_key)
        pattern = "" if pattern is None else str(pattern)
        lanes_read = lanes_found(item.get(self.image_key))
        [(refer, reason)] = refer_decisions(
            torch.tensor([probs]), self.operating_point, [pattern], [call_index], lanes_read=[lanes_read]
        )
        row += ["true" if self.calibrated else "false", "true" if refer else "false", reason]
        row += ["" if lanes_read is None else "true" if lanes_read else "false"]
        return row, call, probs[call_index]

    def _rows(self, item: Mapping) -> tuple[int, int]:
        """(rows of the image file, rows of the network input) of an item.

        The file's rows are the ``image_shape`` of a lane-normalised gel's ``meta["lane_layout"]``, else the
        ``orig_size`` that the preprocessing's ``Resize`` traced (MONAI's ``spatial_shape`` from ``PILReader`` is
        (W, H) whatever ``reverse_indexing`` says, so it cannot be used); without either, the input's own rows.
        """
        image = item[self.image_key]
        network_rows = int(np.shape(image)[-2])
        layout = _lane_layout(image)
        if layout is not None:
            # NormaliseLaneLayoutd rebuilt the tensor, so the Resize traced after it saw the normalised size
            return layout["image_shape"][0], network_rows
        for operation in reversed(getattr(image, "applied_operations", None) or []):
            if operation.get(TraceKeys.CLASS_NAME) == "Resize" and operation.get(TraceKeys.ORIG_SIZE) is not None:
                return int(operation[TraceKeys.ORIG_SIZE][0]), network_rows
        return network_rows, network_rows

    def _maps(self, item: Mapping) -> dict[str, dict[str, Any]]:
        """The recorded attention maps of an item: ``{key: {"stride", "values", "image_rows", "network_rows",
        "lane_layout"}}`` (``lane_layout`` None for a gel that was only resized)."""
        present = [key for key in self.attention_strides if item.get(key) is not None]
        if not present:
            return {}
        image_rows, network_rows = self._rows(item)
        layout = _lane_layout(item[self.image_key])
        return {
            key: {"stride": int(self.attention_strides[key]), "values": _values(item[key]).tolist(),
                  "image_rows": image_rows, "network_rows": network_rows, "lane_layout": layout}
            for key in present
        }  # fmt: skip

    @staticmethod
    def _peak(record: Mapping[str, Any]) -> int:
        return peak_row(record["values"], record["stride"], record["network_rows"], record["image_rows"],
                        record.get("lane_layout"))  # fmt: skip

    @staticmethod
    def _file_profile(record: Mapping[str, Any] | Any, network_rows: int, layout: Mapping[str, Any]) -> np.ndarray:
        """An attention map as one value per row of the lane-normalised gel's file (0 outside its gel rows).

        ``record`` is a map record of :meth:`_maps` or a bare (h,) map (read as spread evenly over the network rows).
        """
        if isinstance(record, Mapping):
            values = np.asarray(record["values"], dtype=np.float64)
            centres = map_row_centres(values.size, record["stride"], network_rows, network_rows)
        else:
            values = _values(record).numpy()
            centres = (np.arange(values.size) + 0.5) * network_rows / values.size - 0.5
        file_rows = np.arange(layout["image_shape"][0], dtype=np.float64)
        profile = np.interp(image_to_network_rows(file_rows, network_rows, file_rows.size, layout), centres, values)
        top, bottom = layout["rows"]
        return np.where((file_rows >= top) & (file_rows <= bottom), profile, 0.0)  # the network saw the gel only

    def _write_profiles(self, source: str, maps: Mapping[str, Any]) -> None:
        if self._profiles is None or not maps:
            return
        first = next(iter(maps.values()))
        line = {
            "image": source,
            "image_rows": first["image_rows"],
            "network_rows": first["network_rows"],
            **({} if first["lane_layout"] is None else {"lane_layout": first["lane_layout"]}),
            "maps": {key: {"stride": m["stride"], "values": [round(v, 6) for v in m["values"]]} for key, m in maps.items()},
        }
        self._profiles.write(json.dumps(line) + "\n")

    def write_item(self, item: Mapping) -> None:
        """Write the CSV row, the attention profiles and, within ``max_figures``, the attention figure of one item."""
        source = self._source(item)
        maps = self._maps(item)
        row, call, prob = self._row(item, source, maps)
        self.write_row(row)
        self._referred += row[-2] == "true"
        name = printable_path(row[0])  # as the CSV shows it, also in the profiles and the figure's title
        self._write_profiles(name, maps)
        if self.figure_dir is not None and (self.max_figures is None or self._figures < self.max_figures):
            profiles = {name: maps.get(key, item.get(key)) for name, key in self.attention_keys.items() if key in item}
            if profiles:
                os.makedirs(os.path.join(self.output_dir, self.figure_dir), exist_ok=True)
                title = f"{os.path.basename(name)}: {call} (p={prob:.2f})" + (f", truth {row[1]}" if row[1] else "")
                gel = self._gel(item, source)
                layout = _lane_layout(item[self.image_key])
                if layout is not None and gel is not item[self.image_key]:
                    # the original file: each profile placed on its rows (plot_attention_figure would stretch it
                    # over the whole height, header and margins included, and unflipped)
                    network_rows = int(np.shape(item[self.image_key])[-2])
                    if int(np.shape(gel)[0]) != layout["image_shape"][0]:
                        gel = item[self.image_key]  # not the file the layout was found on: show the network input
                    else:
                        profiles = {k: self._file_profile(v, network_rows, layout) for k, v in profiles.items()}
                plot_attention_figure(gel, profiles, self._figure_path(source), title, self.dpi)
                self._figures += 1
        self._count += 1


class IFEEvaluationReport:
    """Write the evaluator's IFE metrics to JSON plus a confusion-matrix PNG when an evaluation run completes.

    The numbers come from the evaluator's own metric: an ``IgniteMetricHandler`` of
    :class:`~custom_components.ife.metrics.IFEClassificationMetric` keeps every sample's ``[truth, prediction]``
    pair, gathered across ranks, in ``engine.state.metric_details[details_metric]`` (``save_details=True``, MONAI's
    default); the report rebuilds the confusion matrix from those pairs and computes every metric of the paper from
    it, so it agrees with the evaluator's logged ``val_*`` values and needs no collective of its own. The JSON holds
    ``accuracy``, ``macro_f1``, ``fnr``, ``m1_acc``, ``m3_acc`` (null where undefined), ``per_class_recall``,
    ``confusion_matrix`` (rows = truth), ``support``, ``class_names``, ``minority_classes``, ``num_samples`` and
    the entries of ``extra`` (the same content as ``IFEClassificationMetric.report()``). The report is also kept in
    :attr:`report`, on every rank; only ``save_rank`` writes.

    With ``probabilities_key`` the report also collects every gel's (9,) network probabilities (uncalibrated: the
    evaluator runs the plain network), its call (``call_key``, after ``IFECalld``), its label and, from the batch,
    its ``band_pattern`` and whether its lanes were read (``image_key``'s lane layout record), gathered across
    ranks, and adds:

    - ``calibration``: ``ece_uncalibrated`` and ``nll_uncalibrated``; with a ``calibration`` record (its
      ``temperatures`` applied to the probabilities by
      :func:`~custom_components.ife.calibration.temperature.temper_probabilities`)
      also ``ece_calibrated``, ``nll_calibrated`` and ``temperatures``; ``ece_bins``; a reliability-diagram PNG with
      a panel before and one after (``reliability_filename``);
    - ``referral``: :func:`~custom_components.ife.referral.referral_metrics` at the record's operating point on the
      calibrated probabilities (``coverage``, ``accuracy`` on the decided gels, ``fnr`` and ``sensitivity`` of
      "any monoclonal protein", ``refer_counts``), the operating point itself and the coverage-accuracy curve
      (:func:`~custom_components.ife.referral.coverage_accuracy_curve`), plotted with the operating point marked
      (``coverage_filename``). Without a record or operating point, every gel counts as not referred ("not
      calibrated") and the curve is that of the uncalibrated probabilities.

    Args:
        output_dir: folder of the outputs (created if absent).
        metrics_filename: JSON file name.
        figure_filename: PNG file name; None writes no figure.
        minority_classes: the training split's rarest classes, rarest first (for M1/M3); None uses the evaluated
            truth (see :mod:`custom_components.ife.metrics`).
        details_metric: name of the evaluator metric whose details hold the ``[truth, prediction]`` pairs (the IFE
            bundle's key metric, ``val_macro_f1``; any of its ``IFEClassificationMetric`` metrics would do).
        extra: additional JSON entries (e.g. the checkpoint and data split evaluated).
        save_rank: the rank that writes.
        probabilities_key: output key of the (9,) uncalibrated probabilities; None: no calibration or referral
            section (the report as before).
        call_key: output key of the class call (``IFECalld``'s output).
        label_key: output key of the 9-class label.
        band_pattern_key: batch key of the band-pattern detector's text (absent: no pattern).
        image_key: output key of the network input, whose lane layout record says whether the gel's lanes were
            read (:func:`~custom_components.ife.lanes.lanes_found`; a gel answered from the whole image is referred).
        calibration: the checkpoint's calibration record
            (:func:`~custom_components.ife.calibration.record.read_calibration`), or None.
        reliability_filename: PNG of the reliability diagrams; None writes none.
        coverage_filename: PNG of the coverage-accuracy curve; None writes none.
        n_bins: ECE bins (equal width, top label).

    Raises:
        ValueError: on bad file names; at run time, RuntimeError when ``details_metric`` has no details.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        metrics_filename: str = "metrics.json",
        figure_filename: str | None = "confusion_matrix.png",
        minority_classes: Sequence[int | str] | None = None,
        details_metric: str = "val_macro_f1",
        extra: Mapping[str, Any] | None = None,
        save_rank: int = 0,
        probabilities_key: str | None = None,
        call_key: str = "pred",
        label_key: str = "label",
        band_pattern_key: str = "band_pattern",
        image_key: str = "image",
        calibration: Mapping[str, Any] | None = None,
        reliability_filename: str | None = "reliability_diagram.png",
        coverage_filename: str | None = "coverage_accuracy.png",
        n_bins: int = 15,
    ) -> None:
        names = (("metrics_filename", metrics_filename), ("figure_filename", figure_filename),
                 ("reliability_filename", reliability_filename), ("coverage_filename", coverage_filename))  # fmt: skip
        for name, value in names:
            if value is not None and (not value or os.path.basename(value) != value):
                raise ValueError(f"{name} must be a plain file name, got {value!r}.")
        if not metrics_filename:
            raise ValueError("metrics_filename must be a file name, got None.")
        self.output_dir = os.fspath(output_dir)
        self.metrics_filename = metrics_filename
        self.figure_filename = figure_filename
        # checked and turned into indices as the metric does, so a bad class name fails when the config is parsed
        self.minority_classes = IFEClassificationMetric(minority_classes=minority_classes).minority_classes
        self.details_metric = details_metric
        self.extra = dict(extra or {})
        self.save_rank = save_rank
        self.probabilities_key = probabilities_key
        self.call_key = call_key
        self.label_key = label_key
        self.band_pattern_key = band_pattern_key
        self.image_key = image_key
        if calibration is not None and not isinstance(calibration, Mapping):
            raise ValueError(
                f"calibration must be a calibration record (a dict) or None, got {type(calibration).__name__}."
            )
        self.calibration = dict(calibration) if calibration else None
        self.reliability_filename = reliability_filename
        self.coverage_filename = coverage_filename
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
        self.n_bins = n_bins
        self.report: dict[str, Any] | None = None
        self._collected: dict[str, list] = self._empty_collection()
        self.logger = logging.getLogger(__name__)

    @property
    def metrics_path(self) -> str:
        """Path of the JSON report."""
        return os.path.join(self.output_dir, self.metrics_filename)

    def attach(self, engine: Engine) -> None:
        """Register the reset (STARTED), the collection of probabilities (ITERATION_COMPLETED, with
        ``probabilities_key``) and the report (COMPLETED, after the metrics' EPOCH_COMPLETED)."""
        attach_once(engine, (Events.STARTED, self.started), (Events.COMPLETED, self.completed))
        if self.probabilities_key is not None:
            attach_once(engine, (Events.ITERATION_COMPLETED, self.collect))

    def started(self, engine: Engine | None = None) -> None:
        """Forget the previous run's report and collected outputs."""
        self.report = None
        self._collected = self._empty_collection()

    def collect(self, engine: Engine) -> None:
        """Keep each gel's probabilities, call, label and band pattern of this iteration."""
        output = engine.state.output
        items = output if isinstance(output, list) else decollate_batch(output)
        batch = engine.state.batch if isinstance(engine.state.batch, Mapping) else {}
        patterns = batch.get(self.band_pattern_key)
        if isinstance(patterns, str) or patterns is None or len(patterns) != len(items):
            patterns = [""] * len(items)
        for item, pattern in zip(items, patterns):
            for key in (self.probabilities_key, self.call_key, self.label_key):
                if key not in item:
                    raise ValueError(
                        f"IFEEvaluationReport: no {key!r} in the evaluator output (keys {sorted(map(str, item))}); "
                        f"the postprocessing must keep the probabilities under {self.probabilities_key!r} (CopyItemsd "
                        f"before IFECalld) and the call under {self.call_key!r}."
                    )
            probs = _values(item[self.probabilities_key])
            if probs.numel() != len(IFE_CLASSES):
                raise ValueError(f"{self.probabilities_key!r} must hold 9 probabilities, got {probs.numel()}.")
            self._collected["probabilities"].append(probs)
            self._collected["calls"].append(int(_values(item[self.call_key])[0]))
            self._collected["labels"].append(int(_values(item[self.label_key])[0]))
            self._collected["band_patterns"].append("" if pattern is None else str(pattern))
            self._collected["lanes_read"].append(lanes_found(item.get(self.image_key)))

    @staticmethod
    def _empty_collection() -> dict[str, list]:
        return {"probabilities": [], "calls": [], "labels": [], "band_patterns": [], "lanes_read": []}

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[bool | None]]:
        """The collected (N, 9) probabilities, (N,) calls and labels, N band patterns and N lanes-read flags of all
        ranks."""
        c = self._collected
        empty = torch.zeros(0, len(IFE_CLASSES), dtype=torch.float64)
        probs = torch.stack(c["probabilities"]) if c["probabilities"] else empty
        calls, labels = torch.tensor(c["calls"], dtype=torch.long), torch.tensor(c["labels"], dtype=torch.long)
        patterns, lanes_read = list(c["band_patterns"]), list(c["lanes_read"])
        if idist.get_world_size() > 1:  # every rank saw its DistributedSampler shard
            probs, calls, labels = (
                evenly_divisible_all_gather(t.to(idist.device()), concat=True).cpu() for t in (probs, calls, labels)
            )
            patterns = string_list_all_gather(patterns)
            flags = string_list_all_gather(["" if f is None else str(f) for f in lanes_read])
            lanes_read = [None if f == "" else f == "True" for f in flags]
        return probs, calls, labels, patterns, lanes_read

    def calibration_report(self) -> dict[str, Any]:
        """The ``calibration`` and ``referral`` entries of the collected gels (see the class docstring)."""
        probs, calls, labels, patterns, lanes_read = self._gathered()
        if probs.shape[0] == 0:
            raise RuntimeError("IFEEvaluationReport collected no probabilities: did the evaluator run on any gel?")
        temperatures = (self.calibration or {}).get("temperatures")
        calibrated = temper_probabilities(probs, temperatures) if temperatures else None
        used = probs if calibrated is None else calibrated
        calibration: dict[str, Any] = {
            "ece_bins": self.n_bins,
            "ece_uncalibrated": expected_calibration_error(probs, labels, self.n_bins),
            "nll_uncalibrated": negative_log_likelihood(probs, labels),
            "ece_calibrated": (
                None if calibrated is None else expected_calibration_error(calibrated, labels, self.n_bins)
            ),
            "nll_calibrated": None if calibrated is None else negative_log_likelihood(calibrated, labels),
            "temperatures": temperatures,
            "reliability_uncalibrated": reliability_bins(probs, labels, self.n_bins),
            "reliability_calibrated": None if calibrated is None else reliability_bins(calibrated, labels, self.n_bins),
        }
        point = (self.calibration or {}).get("operating_point")
        referral = {
            **referral_metrics(used, labels, point, patterns, calls, lanes_read),
            "operating_point": point,
            "probabilities": "calibrated" if calibrated is not None else "uncalibrated",
            "coverage_accuracy_curve": coverage_accuracy_curve(used, labels, calls),
        }
        return {"calibration": calibration, "referral": referral}

    def build_report(self, pairs: Any) -> dict[str, Any]:
        """The JSON-ready report of (N, 2) ``[truth, prediction]`` pairs, plus ``extra``.

        As ``IFEClassificationMetric.report()`` gives it (:func:`~custom_components.ife.metrics.json_report`).

        Raises:
            ValueError: when ``pairs`` is not (N, 2) with N >= 1.
        """
        pairs = torch.as_tensor(pairs).detach().cpu()
        if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
            raise ValueError(f"expected (N, 2) [truth, prediction] pairs with N >= 1, got shape {tuple(pairs.shape)}.")
        report = json_report(confusion_matrix(pairs[:, 0], pairs[:, 1]), self.minority_classes)
        return {**report, **self.extra}

    def completed(self, engine: Engine) -> None:
        """Build the report from the metric details, then (on ``save_rank``) write the JSON and the PNG."""
        details = getattr(engine.state, "metric_details", {}).get(self.details_metric)
        if details is None:
            raise RuntimeError(
                f"metric {self.details_metric!r} has no details in engine.state.metric_details: the evaluator must "
                "compute an IFEClassificationMetric under that name with IgniteMetricHandler(save_details=True) "
                "(the IFE bundle's validate#key_metric val_macro_f1)."
            )
        self.report = self.build_report(details)
        if self.probabilities_key is not None:
            self.report.update(self.calibration_report())  # all ranks: the gather is a collective
        if idist.get_rank() != self.save_rank:
            return
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
        if self.probabilities_key is not None:
            written += self._write_calibration_figures()
        summary = ", ".join(
            f"{k}={self.report[k]:.4f}" for k in ("accuracy", "macro_f1", "fnr", "m1_acc", "m3_acc")
            if self.report[k] is not None
        )
        self.logger.info(f"IFE metrics: {summary}; wrote {' and '.join(written)}")
        if self.probabilities_key is not None:
            self.logger.info(self._calibration_summary())

    def _calibration_summary(self) -> str:
        cal, ref = self.report["calibration"], self.report["referral"]
        text = f"ECE ({cal['ece_bins']} bins, top label): uncalibrated {cal['ece_uncalibrated']:.4f}"
        text += "" if cal["ece_calibrated"] is None else f", calibrated {cal['ece_calibrated']:.4f}"
        if ref["operating_point"] is None:
            return text + "; refer-to-expert: no operating point (not calibrated)"
        point = ref["operating_point"]
        fnr = "n/a" if ref["fnr"] is None else f"{ref['fnr']:.4f}"
        acc = "n/a" if ref["accuracy"] is None else f"{ref['accuracy']:.4f}"
        return (
            f"{text}; refer-to-expert at target sensitivity {point.get('target_sensitivity')}: coverage "
            f"{ref['coverage']:.4f} ({ref['count'] - ref['referred']} of {ref['count']} gels decided), accuracy on "
            f"them {acc}, FNR {fnr}, referred per reason {ref['refer_counts']}"
        )

    def _write_calibration_figures(self) -> list[str]:
        cal, ref = self.report["calibration"], self.report["referral"]
        written = []
        if self.reliability_filename is not None:
            path = os.path.join(self.output_dir, self.reliability_filename)
            panels = {f"uncalibrated (ECE {cal['ece_uncalibrated']:.3f})": cal["reliability_uncalibrated"]}
            if cal["reliability_calibrated"] is not None:
                panels[f"temperature-scaled (ECE {cal['ece_calibrated']:.3f})"] = cal["reliability_calibrated"]
            plot_reliability_diagram(panels, path, title=f"n={ref['count']}")
            written.append(path)
        if self.coverage_filename is not None:
            path = os.path.join(self.output_dir, self.coverage_filename)
            mark = None if ref["operating_point"] is None else (ref["coverage"], ref["accuracy"])
            fnr = "" if ref["fnr"] is None or mark is None else f", FNR at the operating point {ref['fnr']:.3f}"
            plot_coverage_accuracy({f"{ref['probabilities']} probabilities": ref["coverage_accuracy_curve"]}, path,
                                   mark, title=f"n={ref['count']}{fnr}")  # fmt: skip
            written.append(path)
        return written
