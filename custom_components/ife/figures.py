# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Figures of the IFE multi-task bundle.

- :func:`attention_profile`: a horizontal attention map (one weight per feature row) upsampled to image rows.
- :func:`plot_attention_figure`: the gel with its attention profiles drawn beside it, rows aligned, as in Fig. 3 of
  Shi et al. (MICCAI 2023).
- :func:`plot_attention_alignment`: mean attention profiles of positive gels aligned on their band, negatives beside
  them (Fig. 3 made quantitative, against the band rows the synthetic generator drew).
- :func:`plot_confusion_matrix`: a confusion matrix, coloured by recall, annotated with counts.
- :func:`plot_reliability_diagram`: reliability diagrams (accuracy per confidence bin), e.g. before and after
  temperature scaling, side by side.
- :func:`plot_coverage_accuracy`: coverage-accuracy curves of the refer-to-expert rule, the operating point marked.

Figures use matplotlib's Agg canvas directly (no pyplot state), so they work headless and in worker threads, and are
written atomically (:func:`~custom_components.core.atomic.save_atomic`): a run killed while drawing leaves no
half-written PNG under the figure's name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms.utils import rescale_array

from custom_components.ife.classes import IFE_CLASSES
from custom_components.ife.attention import aligned_profiles, map_row_centres, profiles_by_height
from custom_components.core.atomic import save_atomic

__all__ = [
    "attention_profile",
    "plot_attention_figure",
    "plot_attention_alignment",
    "plot_confusion_matrix",
    "plot_reliability_diagram",
    "plot_coverage_accuracy",
]

_PROFILE_COLOURS = ("tab:orange", "tab:blue", "tab:green", "tab:purple")


def _to_numpy(value: Any) -> np.ndarray:
    """Tensor (any dtype, any device; bfloat16 too, which numpy lacks) or array-like -> numpy array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


def attention_profile(
    attention: Any, height: int, stride: int | None = None, network_rows: int | None = None
) -> np.ndarray:
    """Upsample a horizontal attention map (one weight per feature row) to ``height`` image rows.

    With ``stride`` and ``network_rows`` (the map's total stride and the network input's rows), map row ``j`` sits at
    the image row of its true centre, network-input row ``j * stride``
    (:func:`~custom_components.ife.attention.map_row_centres`), which is where the peak-row columns of
    ``predictions.csv`` put it. Without them, row ``j`` of ``h`` is read as the middle of image rows
    ``[j H / h, (j + 1) H / h)`` (``torch.nn.functional.interpolate(mode="linear", align_corners=False)``). The
    profile is linearly interpolated between the centres and held constant beyond the first and last one; it lines
    up with the image rows as long as the image was resized along the height without cropping.

    Args:
        attention: (h,) attention weights (tensor or array), or (1, h).
        height: number of image rows to map onto, >= 1.
        stride: total stride of the map along the height (e.g. 32 for stage 4), or None.
        network_rows: rows of the network input, or None.

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
    if stride is not None and network_rows is not None:
        centres = map_row_centres(h, stride, network_rows, int(height))
    else:
        centres = (np.arange(h) + 0.5) * height / h - 0.5
    return np.interp(np.arange(height, dtype=np.float64), centres, values)


def _save_figure(fig: Any, path: str | os.PathLike, **kwargs: Any) -> None:
    """``fig.savefig`` through :func:`~custom_components.core.atomic.save_atomic`: the figure appears under ``path``
    only once complete. The format is named (``path``'s extension, PNG without one) because matplotlib would
    otherwise guess it from the temporary file's name, which for a ``path`` without an extension ends in ``.tmp``."""
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    save_atomic(path, lambda tmp: fig.savefig(tmp, format=extension or "png", **kwargs))


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
    return rescale_array(array, 0.0, 1.0, dtype=np.float64)  # a flat image becomes black


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
        profiles: ``{name: (h,) attention map}``, e.g. ``{"severe": ..., "mild": ...}``, or ``{name: {"values": map,
            "stride": s, "network_rows": n}}`` to place each map row at its true centre; each is upsampled to H.
        path: PNG to write (its folder is created if absent).
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
        if isinstance(attention, Mapping):
            profile = attention_profile(attention["values"], height, attention["stride"], attention["network_rows"])
        else:
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
    _save_figure(fig, path, dpi=dpi)


def plot_attention_alignment(
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    path: str | os.PathLike,
    title: str | None = None,
    reach: float = 0.5,
    dpi: int = 110,
) -> None:
    """Save, per attention map, the mean profile of the positive gels aligned on their band and that of the negatives.

    Left panel of each row: every positive gel's map read at ``band row + offset`` (offsets within ``reach`` of the
    image height, in image rows of a median gel), mean and interquartile range; the band's median half-width is
    shaded. Right panel: the maps of the gels without a band, by height. A map that finds the band peaks at offset 0
    on the left and is flat on the right.

    Args:
        records: ``{map name: records}`` as joined by
            :func:`~custom_components.ife.attention.report_from_files` (``values``, ``stride``,
            ``network_rows``, ``image_rows``, ``band_row``, ``band_half_width``).
        path: PNG to write (its folder is created if absent).
        title: figure title.
        reach: half-range of the offsets, as a fraction of the image height.
        dpi: resolution.

    Raises:
        ValueError: on empty ``records``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not records or not any(records.values()):
        raise ValueError("records must hold at least one attention map with gels.")
    fig = Figure(figsize=(9.0, 2.6 * len(records) + 0.6), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(records), 2, squeeze=False)
    fractions = np.linspace(0.0, 1.0, 201)
    for row, (name, gels) in enumerate(records.items()):
        height = float(np.median([g["image_rows"] for g in gels]))
        offsets = np.linspace(-reach * height, reach * height, 201)
        widths = [g["band_half_width"] for g in gels if g.get("band_half_width")]
        for ax, values, x, label in (
            (axes[row, 0], aligned_profiles(gels, offsets), offsets, "image rows from the band centre"),
            (axes[row, 1], profiles_by_height(gels, fractions, band=False), fractions, "fraction of the image height"),
        ):
            if values.size and np.isfinite(values).any():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns beyond the maps' ends
                    mean = np.nanmean(values, axis=0)
                    low, high = np.nanpercentile(values, 25, axis=0), np.nanpercentile(values, 75, axis=0)
                ax.fill_between(x, low, high, color="tab:orange", alpha=0.3, linewidth=0)
                ax.plot(x, mean, color="tab:orange", linewidth=1.5)
            ax.set_xlabel(label, fontsize=8)
            ax.set_ylim(0.0, 1.0)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        if widths:
            half = float(np.median(widths))
            axes[row, 0].axvspan(-half, half, color="tab:blue", alpha=0.15, linewidth=0)
        axes[row, 0].axvline(0.0, color="tab:blue", linestyle="--", linewidth=1)
        positives = sum(g.get("band_row") is not None for g in gels)
        axes[row, 0].set_title(f"{name}: {positives} gels with a band, aligned on it", fontsize=9)
        axes[row, 1].set_title(f"{name}: {len(gels) - positives} gels without a band", fontsize=9)
        axes[row, 0].set_ylabel("attention", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save_figure(fig, path, dpi=dpi)


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
        path: PNG to write (its folder is created if absent).
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
    _save_figure(fig, path, dpi=dpi, bbox_inches="tight")


def _reliability_panel(ax: Any, bins: Mapping[str, Sequence], title: str) -> None:
    """One reliability diagram: bars of accuracy per confidence bin against the diagonal, gaps shaded."""
    edges = np.asarray(bins["edges"], dtype=np.float64)
    width = np.diff(edges)
    filled = [i for i, n in enumerate(bins["count"]) if n]
    accuracy = np.array([bins["accuracy"][i] for i in filled], dtype=np.float64)
    confidence = np.array([bins["confidence"][i] for i in filled], dtype=np.float64)
    left = edges[filled] if filled else np.zeros(0)
    ax.bar(left, accuracy, width=width[filled] if filled else 0.1, align="edge", color="tab:blue", edgecolor="black",
           linewidth=0.5, label="accuracy")  # fmt: skip
    # the gap between a bin's mean confidence and its accuracy: what the ECE sums, weighted by the bin's share
    ax.bar(left, confidence - accuracy, bottom=accuracy, width=width[filled] if filled else 0.1, align="edge",
           color="tab:red", alpha=0.3, edgecolor="tab:red", linewidth=0.5, label="gap to confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-label probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)


def plot_reliability_diagram(
    panels: Mapping[str, Mapping[str, Sequence]], path: str | os.PathLike, title: str | None = None, dpi: int = 120
) -> None:
    """Save reliability diagrams side by side (e.g. before and after temperature scaling) as one PNG.

    Args:
        panels: ``{panel title: bins}``, each ``bins`` as
            :func:`custom_components.ife.calibration.temperature.reliability_bins` returns it (``edges``, ``confidence``, ``accuracy``, ``count``); the panel title should carry the ECE.
        path: PNG to write (its folder is created if absent).
        title: figure title.
        dpi: resolution.

    Raises:
        ValueError: when ``panels`` is empty or a panel lacks a bin entry.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not panels:
        raise ValueError("plot_reliability_diagram needs at least one panel, got none.")
    for name, bins in panels.items():
        missing = [k for k in ("edges", "confidence", "accuracy", "count") if k not in bins]
        if missing:
            raise ValueError(f"reliability panel {name!r} lacks {missing}.")
    fig = Figure(figsize=(4.2 * len(panels), 4.4), dpi=dpi)
    FigureCanvasAgg(fig)
    for i, (name, bins) in enumerate(panels.items()):
        _reliability_panel(fig.add_subplot(1, len(panels), i + 1), bins, name)
    if title:
        fig.suptitle(title, fontsize=11)
    _save_figure(fig, path, dpi=dpi, bbox_inches="tight")


def plot_coverage_accuracy(
    curves: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike,
    operating_point: tuple[float, float] | None = None,
    title: str | None = None,
    dpi: int = 120,
) -> None:
    """Save coverage-accuracy curves (share of gels decided automatically against the accuracy on them) as a PNG.

    Args:
        curves: ``{label: curve}``, each as :func:`custom_components.ife.referral.coverage_accuracy_curve` returns it
            (``coverage`` and ``accuracy`` lists of equal length).
        path: PNG to write (its folder is created if absent).
        operating_point: ``(coverage, accuracy)`` achieved by the refer rule, marked with a star; None: no mark.
        title: figure title.
        dpi: resolution.

    Raises:
        ValueError: when ``curves`` is empty or a curve's lists differ in length.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("plot_coverage_accuracy needs at least one curve, got none.")
    for name, curve in curves.items():
        if len(curve.get("coverage", ())) != len(curve.get("accuracy", ())):
            raise ValueError(f"curve {name!r}: coverage and accuracy must have equal lengths.")
    fig = Figure(figsize=(5.0, 4.2), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        ax.step(curve["coverage"], curve["accuracy"], where="post", label=name)
    if operating_point is not None and operating_point[1] is not None:
        label = f"operating point (coverage {operating_point[0]:.2f}, accuracy {operating_point[1]:.2f})"
        ax.plot([operating_point[0]], [operating_point[1]], marker="*", markersize=14, color="tab:red", linestyle="",
                label=label)  # fmt: skip
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of gels decided automatically)")
    ax.set_ylabel("accuracy on the decided gels")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    _save_figure(fig, path, dpi=dpi, bbox_inches="tight")
