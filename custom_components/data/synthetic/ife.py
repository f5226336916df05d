# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Synthetic immunofixation electrophoresis (IFE) gels for the nine IFE classes.

A gel scan is landscape (default 400 rows x 600 columns, about 3:2) on a near-white, slightly tinted background.
Six lanes stand side by side: ELP (serum protein electrophoresis), then the immunofixations G, A, M (heavy chains)
and K, L (kappa and lambda light chains), labelled in a text strip above or below them. Proteins migrate along
the height: in ELP a strong albumin band near the top, then the alpha-1, alpha-2 and beta zones and the broad
gamma zone; in the immunoglobulin lanes a diffuse polyclonal smear over the gamma/beta zones. A monoclonal
protein is a dense, narrow band at the same height in ELP, in its heavy-chain lane and in its light-chain lane
(light-chain-only cases, ``kappa`` and ``lambda``, have no heavy-chain band). Stain is modelled as absorbance of a
blue-violet dye (Beer-Lambert: red and green absorbed more than blue).

Realism knobs drawn per image: faint monoclonal bands, lane offsets left/right, a slight "smile" of the bands,
background tint, blur and noise, dust specks. Everything is drawn from one ``numpy.random.Generator`` per image,
derived from ``(seed, index)``, so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from custom_components.transforms.ife_labels import IFE_CLASSES, class_to_subtasks

__all__ = ["DEFAULT_CLASS_FRACTIONS", "LANES", "sample_labels", "render_gel", "synthesize_ife_dataset"]

logger = logging.getLogger(__name__)

#: lane order on the gel and the letters printed above them
LANES = ("ELP", "G", "A", "M", "K", "L")
_LANE_LETTERS = ("ELP", "G", "A", "M", "K", "L")

#: Class mix mirroring the paper's imbalance: Negative about 70 % (over 10,000 of 14,540), kappa-only the rarest
#: (63 images, about 0.4 %), IgG the most common heavy chain. The positive split is our estimate.
DEFAULT_CLASS_FRACTIONS: Mapping[str, float] = {
    "Negative": 0.700,
    "kappa": 0.004,
    "lambda": 0.012,
    "IgG-kappa": 0.100,
    "IgG-lambda": 0.070,
    "IgA-kappa": 0.032,
    "IgA-lambda": 0.030,
    "IgM-kappa": 0.030,
    "IgM-lambda": 0.022,
}

# Migration positions as fractions of the gel height (top = application side of albumin) and zone widths.
_ELP_ZONES = (  # (centre, sigma, amplitude): albumin, alpha-1, alpha-2, beta-1, beta-2
    (0.13, 0.020, 1.00),
    (0.27, 0.012, 0.18),
    (0.36, 0.018, 0.38),
    (0.48, 0.016, 0.34),
    (0.55, 0.014, 0.22),
)
_GAMMA_ZONE = (0.74, 0.10)  # centre, sigma of the polyclonal gamma smear
# polyclonal smear per immunofixation lane: (centre, sigma, amplitude); IgG dominates, kappa > lambda
_POLYCLONAL = {
    "G": (0.74, 0.095, 0.34),
    "A": (0.62, 0.080, 0.20),
    "M": (0.58, 0.070, 0.13),
    "K": (0.71, 0.110, 0.30),
    "L": (0.71, 0.110, 0.20),
}
_HEAVY_LANE = {1: "G", 2: "A", 3: "M"}  # severe index -> lane
_LIGHT_LANE = {1: "K", 2: "L"}  # mild index -> lane
# absorbance per unit density of the blue-violet stain, (R, G, B)
_STAIN = np.array([1.45, 1.75, 0.55])


def sample_labels(
    rng: np.random.Generator,
    count: int,
    class_fractions: Mapping[str, float] | None = None,
    min_per_class: int | None = None,
) -> list[str]:
    """Draw ``count`` class names from ``class_fractions``, then top up rare classes.

    Args:
        rng: random generator.
        count: number of labels.
        class_fractions: class name -> weight (normalised here); default :data:`DEFAULT_CLASS_FRACTIONS`.
        min_per_class: every class with a non-zero weight gets at least this many samples (replacing the most
            common class's). Default ``min(3, count // 9)``: with 3 per class a stratified train/val/test split
            still has every class in training and testing, so small demos and tests can report per-class metrics.

    Raises:
        ValueError: unknown class names, negative weights or a zero total.
    """
    fractions = dict(DEFAULT_CLASS_FRACTIONS if class_fractions is None else class_fractions)
    unknown = set(fractions) - set(IFE_CLASSES)
    if unknown:
        raise ValueError(f"unknown class names {sorted(unknown)}; valid: {list(IFE_CLASSES)}.")
    weights = np.array([float(fractions.get(c, 0.0)) for c in IFE_CLASSES])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"class fractions must be >= 0 with a positive sum, got {fractions}.")
    labels = list(rng.choice(len(IFE_CLASSES), size=count, p=weights / weights.sum()))
    minimum = min(3, count // 9) if min_per_class is None else min_per_class
    majority = int(np.argmax(weights))
    for cls in np.flatnonzero(weights > 0):
        missing = minimum - labels.count(cls)
        if missing > 0 and cls != majority:
            spare = [i for i, v in enumerate(labels) if v == majority]
            for i in rng.choice(spare, size=min(missing, len(spare)), replace=False):
                labels[int(i)] = int(cls)
    return [IFE_CLASSES[int(c)] for c in labels]


def _gauss(x: np.ndarray, centre: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType sizes
        return ImageFont.load_default()


def render_gel(
    rng: np.random.Generator, class_name: str, image_size: Sequence[int] = (400, 600)
) -> tuple[np.ndarray, dict]:
    """Render one IFE gel.

    Args:
        rng: random generator (one per image for reproducibility).
        class_name: one of :data:`IFE_CLASSES`.
        image_size: ``(H, W)``; landscape about 3:2 like real scans, any size >= 48 x 64 works.

    Returns:
        ``(image, info)``: ``image`` (H, W, 3) uint8 RGB; ``info`` with ``band_row`` (row of the monoclonal band in
        image coordinates, ``None`` for Negative), ``band_lanes`` (lanes holding it), ``faint``, ``lane_centres``
        (column of each lane's centre) and ``label_strip`` (``"top"`` or ``"bottom"``).

    Raises:
        ValueError: unknown class name or an image smaller than 48 x 64.
    """
    if class_name not in IFE_CLASSES:
        raise ValueError(f"unknown class {class_name!r}; valid: {list(IFE_CLASSES)}.")
    height, width = (int(s) for s in image_size)
    if height < 48 or width < 64:
        raise ValueError(f"image_size must be at least (48, 64), got {(height, width)}.")
    severe, mild = class_to_subtasks(IFE_CLASSES.index(class_name))

    # layout: a label strip (about 10 % of the height) above or below the gel area, margins left and right
    strip = max(8, int(round(0.1 * height)))
    strip_on_top = bool(rng.random() < 0.7)
    gel_top = strip if strip_on_top else int(0.03 * height)
    gel_bottom = height - (int(0.03 * height) if strip_on_top else strip)
    margin = width * rng.uniform(0.03, 0.08)
    pitch = (width - 2 * margin) / len(LANES)
    lane_width = pitch * rng.uniform(0.62, 0.78)
    global_shift = rng.normal(0, 0.03) * pitch
    centres = margin + pitch * (np.arange(len(LANES)) + 0.5) + global_shift + rng.normal(0, 0.04, len(LANES)) * pitch

    rows = np.arange(height, dtype=np.float64)
    cols = np.arange(width, dtype=np.float64)
    t = (rows - gel_top) / max(gel_bottom - gel_top, 1)  # migration coordinate, 0 at the top of the gel area
    inside = ((t >= 0) & (t <= 1)).astype(np.float64)
    drift = rng.normal(0, 0.012)  # run-to-run migration differences shift every zone a little

    # monoclonal band: beta/gamma region; sometimes faint (low concentration, the hard cases)
    faint = bool(rng.random() < 0.15)
    band_t = rng.uniform(0.52, 0.86) + drift
    band_sigma = rng.uniform(0.007, 0.013)
    band_amp = rng.uniform(0.22, 0.38) if faint else rng.uniform(0.6, 1.05)
    band_lanes: list[str] = []
    if mild > 0:  # every positive class has a light chain; the heavy chain only when severe != None
        band_lanes = ["ELP", _LIGHT_LANE[mild]] + ([_HEAVY_LANE[severe]] if severe > 0 else [])

    density = np.zeros((height, width))
    for lane, centre in zip(LANES, centres):
        if lane == "ELP":
            profile = sum(a * rng.uniform(0.85, 1.15) * _gauss(t, c + drift, s) for c, s, a in _ELP_ZONES)
            profile = profile + rng.uniform(0.2, 0.3) * _gauss(t, _GAMMA_ZONE[0] + drift, _GAMMA_ZONE[1])
        else:
            c, s, a = _POLYCLONAL[lane]
            profile = a * rng.uniform(0.7, 1.3) * _gauss(t, c + drift, s)
        profile = profile + rng.uniform(0.01, 0.04)  # faint background staining of the lane
        # lane cross-section: flat top with soft edges; bands "smile" slightly (edges migrate a little less)
        u = (cols - centre) / (lane_width / 2)
        across = np.clip(1.25 - np.abs(u) ** 6, 0, 1) * (np.abs(u) < 1.15)
        smile = rng.uniform(-0.006, 0.012) * u**2
        lane_density = profile[:, None] * across[None, :]
        if lane in band_lanes:
            lane_amp = band_amp * (0.75 if lane == "ELP" else 1.0) * rng.uniform(0.85, 1.15)
            band = _gauss(t[:, None], band_t + smile[None, :], band_sigma) * across[None, :]
            lane_density = lane_density + lane_amp * band
        density += lane_density
    density *= inside[:, None]

    # stain absorbance on a tinted near-white background, then optics (blur) and sensor noise
    background = np.array([246.0, 244.0, 242.0]) + rng.normal(0, 4, 3) + rng.uniform(-6, 2)
    stain = _STAIN * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    image = background[None, None, :] * np.exp(-density[:, :, None] * stain[None, None, :])
    image += rng.normal(0, rng.uniform(1.0, 4.0), size=image.shape)
    for _ in range(int(rng.integers(0, 6))):  # dust specks and impurity pixels
        y, x, r = rng.integers(0, height), rng.integers(0, width), rng.uniform(0.6, 2.0)
        yy, xx = np.ogrid[:height, :width]
        image[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] *= rng.uniform(0.5, 0.8)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    pil = pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.4, 1.4)) * height / 400))

    draw = ImageDraw.Draw(pil)
    font = _font(max(7, int(strip * 0.55)))
    text_colour = tuple(int(v) for v in rng.integers(40, 90, 3))
    text_y = strip * 0.2 if strip_on_top else height - strip * 0.85
    for letter, centre in zip(_LANE_LETTERS, centres):
        left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
        draw.text((centre - (right - left) / 2, text_y), letter, fill=text_colour, font=font)

    band_row = None
    if band_lanes:
        band_row = int(round(gel_top + band_t * (gel_bottom - gel_top)))
    info = {
        "band_row": band_row,
        "band_lanes": band_lanes,
        "faint": faint if band_lanes else False,
        "lane_centres": [float(c) for c in centres],
        "label_strip": "top" if strip_on_top else "bottom",
    }
    return np.asarray(pil), info


def _split(labels: Sequence[str], splits: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Stratified assignment of each index to training/validation/testing."""
    names = ("training", "validation", "testing")
    assignment = [""] * len(labels)
    for cls in IFE_CLASSES:
        members = [i for i, label in enumerate(labels) if label == cls]
        rng.shuffle(members)
        n = len(members)
        n_test = round(n * splits[2]) if n >= 3 else 0
        n_val = round(n * splits[1]) if n >= 3 else 0
        if n >= 3:
            n_test = max(n_test, 1)
        n_val = min(n_val, n - n_test - 1) if n > n_test else 0
        for j, i in enumerate(members):
            assignment[i] = names[2] if j < n_test else names[1] if j < n_test + n_val else names[0]
    return assignment


def synthesize_ife_dataset(
    output_dir: str | Path,
    count: int,
    seed: int = 0,
    image_size: Sequence[int] = (400, 600),
    class_fractions: Mapping[str, float] | None = None,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
) -> Path:
    """Write ``count`` synthetic gels and a decathlon-style datalist.

    Files: ``output_dir/images/ife_00000.png`` ..., ``output_dir/datalist.json`` (``training``, ``validation``,
    ``testing`` lists of ``{"image": "images/....png", "label": class name}``, split stratified by class) and
    ``output_dir/synthesis.json`` (parameters, class counts, per-image band row and faintness).

    Args:
        output_dir: destination folder (created).
        count: number of images, >= 1.
        seed: random seed; the same seed gives the same bytes.
        image_size: ``(H, W)`` of the gels.
        class_fractions: class mix, default :data:`DEFAULT_CLASS_FRACTIONS`.
        splits: training/validation/testing fractions (sum 1).

    Returns:
        the path of ``datalist.json``.

    Raises:
        ValueError: on ``count < 1`` or splits that do not sum to 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}.")
    if len(splits) != 3 or abs(sum(splits) - 1) > 1e-6 or min(splits) < 0:
        raise ValueError(f"splits must be three fractions >= 0 summing to 1, got {splits}.")
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    labels = sample_labels(np.random.default_rng([seed, 0]), count, class_fractions)
    assignment = _split(labels, splits, np.random.default_rng([seed, 1]))

    datalist: dict[str, list[dict]] = {"training": [], "validation": [], "testing": []}
    details = []
    step = max(1, count // 10)
    for index, (label, split) in enumerate(zip(labels, assignment)):
        image, info = render_gel(np.random.default_rng([seed, 2, index]), label, image_size)
        name = f"images/ife_{index:05d}.png"
        Image.fromarray(image).save(out / name, optimize=False)
        datalist[split].append({"image": name, "label": label})
        details.append({"image": name, "label": label, "band_row": info["band_row"], "faint": info["faint"]})
        if (index + 1) % step == 0 or index + 1 == count:
            logger.info("synthetic IFE gels: %d/%d", index + 1, count)

    (out / "datalist.json").write_text(json.dumps(datalist, indent=1))
    summary = {
        "generator": "custom_components.data.synthetic.ife",
        "seed": seed,
        "count": count,
        "image_size": list(image_size),
        "class_counts": {c: labels.count(c) for c in IFE_CLASSES},
        "split_counts": {k: len(v) for k, v in datalist.items()},
        "images": details,
    }
    (out / "synthesis.json").write_text(json.dumps(summary, indent=1))
    return out / "datalist.json"
