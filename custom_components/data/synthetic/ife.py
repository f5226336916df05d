# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Synthetic immunofixation electrophoresis (IFE) gels for the nine IFE classes.

A gel scan is landscape (default 400 rows x 600 columns, about 3:2) on a near-white, slightly tinted background.
Six lanes stand side by side along the width: ELP (serum protein electrophoresis), then the immunofixations
G, A, M (heavy chains) and K, L (kappa and lambda light chains), labelled ``ELP G A M K L`` in a text strip above
or below them. Proteins migrate along the height: in ELP a strong albumin band near the top, then the alpha-1,
alpha-2, beta-1 and beta-2 zones and the broad gamma zone; in the immunofixation lanes a diffuse polyclonal smear
(G strongest, then A and M; kappa stronger than lambda). A monoclonal protein is a dense, narrow band at the same
height in ELP, in its heavy-chain lane and in its light-chain lane; light-chain-only cases (``kappa``,
``lambda``) have no heavy-chain band. The stain is modelled as the absorbance of a blue-violet dye
(Beer-Lambert: red and green absorbed more than blue).

Variation drawn per image, from what the paper lists as the noise of real scans (lane offsets, non-white
background, impurity pixels) and from how gels vary: faint monoclonal bands (the hard positives), band heights
typical of each heavy chain (IgA higher up, in the beta zone), reduced polyclonal background beside a monoclonal
band (immunoparesis), a faint application mark across all lanes, lanes shifted left/right and unevenly spaced, a
slight "smile" of the bands, uneven stain across and along each lane, a tinted background with an illumination
gradient, blur, sensor noise and dust specks.

Reproducibility: each image has its own ``numpy.random.Generator`` seeded by ``(seed, 2, index)``, the labels one
seeded by ``(seed, 0)`` and the split one seeded by ``(seed, 1)``; PNGs carry no timestamp. The same seed gives
the same bytes (with the same numpy, Pillow and zlib), and an image does not change when ``count`` does.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from custom_components.data.splits import SECTIONS, assign_sections
from custom_components.ife_classes import IFE_CLASSES, class_to_subtasks
from custom_components.data.synthetic.prepare import finish_synthesis, start_synthesis
from custom_components.utils.atomic import save_atomic

__all__ = ["DEFAULT_CLASS_FRACTIONS", "LANES", "sample_labels", "render_gel", "synthesize_ife_dataset"]

logger = logging.getLogger(__name__)

#: lane order on the gel, left to right, as printed in the label strip (K = kappa, L = lambda)
LANES = ("ELP", "G", "A", "M", "K", "L")

#: Class mix derived from the paper's data set (14,540 gels): Negative "over 10,000" (70 %), ``kappa`` the rarest
#: with 63 gels (0.43 %), overall imbalance ratio 0.006 (63 / 10,178). The paper's two sub-task imbalance ratios,
#: 0.042 and 0.188, fix the rest: the only assignment that is possible at all is heavy chain
#: IgM / (Negative + kappa + lambda) = 0.042 and light chain lambda / Negative = 0.188 (the other way round, G, A
#: and M would each need over 13 % of the gels, more than all positives together). The split between IgG and IgA
#: (about 2.6 : 1), between IgM-kappa and IgM-lambda and the lambda-only share are our estimates from clinical
#: series. Order: IgG-kappa > IgG-lambda > IgA-kappa > IgA-lambda > IgM-kappa > IgM-lambda > lambda > kappa.
DEFAULT_CLASS_FRACTIONS: Mapping[str, float] = {
    "Negative": 0.7000,
    "kappa": 0.0043,
    "lambda": 0.0120,
    "IgG-kappa": 0.1070,
    "IgG-lambda": 0.0750,
    "IgA-kappa": 0.0400,
    "IgA-lambda": 0.0317,
    "IgM-kappa": 0.0170,
    "IgM-lambda": 0.0130,
}

# Migration coordinate t: 0 at the top of the gel area (albumin end), 1 at the bottom.
# ELP zones (centre, sigma, amplitude): albumin, alpha-1, alpha-2, beta-1, beta-2
_ELP_ZONES = np.array(
    [(0.13, 0.020, 1.00), (0.27, 0.012, 0.18), (0.36, 0.018, 0.38), (0.48, 0.016, 0.34), (0.55, 0.014, 0.22)]
)
_GAMMA_ZONE = (0.74, 0.10)  # centre, sigma of the polyclonal gamma smear in ELP
# polyclonal smear per immunofixation lane (centre, sigma, amplitude): IgG dominates, kappa > lambda
_POLYCLONAL = {
    "G": (0.74, 0.095, 0.34),
    "A": (0.62, 0.080, 0.20),
    "M": (0.58, 0.070, 0.13),
    "K": (0.71, 0.110, 0.30),
    "L": (0.71, 0.110, 0.20),
}
_HEAVY_LANE = {1: "G", 2: "A", 3: "M"}  # severe index -> lane
_LIGHT_LANE = {1: "K", 2: "L"}  # mild index -> lane
# where monoclonal bands of each heavy chain usually sit (range of t); light-chain-only: the whole beta-gamma span
_BAND_RANGE = {0: (0.52, 0.86), 1: (0.56, 0.88), 2: (0.48, 0.70), 3: (0.54, 0.82)}
# absorbance per unit density of the blue-violet stain, (R, G, B)
_STAIN = np.array([1.45, 1.75, 0.55])
_MIN_SIZE = (48, 64)


def sample_labels(
    rng: np.random.Generator,
    count: int,
    class_fractions: Mapping[str, float] | None = None,
    min_per_class: int | None = None,
) -> list[str]:
    """Draw ``count`` class names from ``class_fractions``, then top up rare classes.

    Args:
        rng: random generator.
        count: number of labels, >= 0.
        class_fractions: class name -> weight (normalised here; classes left out get none); default
            :data:`DEFAULT_CLASS_FRACTIONS`.
        min_per_class: every class with a non-zero weight gets at least this many samples, each taken from the
            class holding the most at that moment (Negative, by default). Default ``min(3, count // 9)``: every
            class at least once from 9 images on (all in training), and from 27 on three each, enough for the
            stratified split of :func:`synthesize_ife_dataset` to put every class into training and testing, so
            small demos and tests can report per-class metrics.

    Returns:
        ``count`` class names, in drawing order.

    Raises:
        ValueError: on a negative ``count`` or ``min_per_class``, unknown class names, negative weights, a zero
            total, or fewer labels than ``min_per_class`` times the number of classes.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}.")
    if min_per_class is not None and min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}.")
    fractions = dict(DEFAULT_CLASS_FRACTIONS if class_fractions is None else class_fractions)
    unknown = set(fractions) - set(IFE_CLASSES)
    if unknown:
        raise ValueError(f"unknown class names {sorted(unknown)}; valid: {list(IFE_CLASSES)}.")
    weights = np.array([float(fractions.get(c, 0.0)) for c in IFE_CLASSES])
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"class fractions must be >= 0 with a positive sum, got {fractions}.")
    labels = rng.choice(len(IFE_CLASSES), size=count, p=weights / weights.sum())
    minimum = min(3, count // 9) if min_per_class is None else min_per_class
    active = np.flatnonzero(weights > 0)
    if minimum * active.size > count:
        raise ValueError(
            f"min_per_class={minimum} for {active.size} classes needs at least {minimum * active.size} labels, "
            f"got count={count}."
        )
    for cls in active:
        for _ in range(max(0, minimum - int(np.sum(labels == cls)))):
            # take from the class with the most labels, so the imbalance changes as little as possible and no
            # class drops below the minimum
            counts = np.bincount(labels, minlength=len(IFE_CLASSES))
            donor = int(np.argmax(counts))
            labels[rng.choice(np.flatnonzero(labels == donor))] = cls
    return [IFE_CLASSES[int(c)] for c in labels]


def _gauss(x: np.ndarray, centre: float | np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - centre) / sigma) ** 2)


def _smooth_noise(rng: np.random.Generator, length: int, scale: float) -> np.ndarray:
    """1D noise of unit-ish amplitude varying over about ``scale`` samples (cheap low-frequency texture)."""
    knots = max(2, int(np.ceil(length / max(scale, 1.0))) + 2)
    return np.interp(np.linspace(0, knots - 1, length), np.arange(knots), rng.standard_normal(knots))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def render_gel(
    rng: np.random.Generator,
    class_name: str,
    image_size: Sequence[int] = (400, 600),
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Render one IFE gel.

    Args:
        rng: random generator (one per image, for reproducibility).
        class_name: one of :data:`~custom_components.ife_classes.IFE_CLASSES`.
        image_size: ``(H, W)``; landscape about 3:2 like real scans; any size from 48 x 64 works.
        return_info: also return the ground truth of the drawing (for tests and figures).

    Returns:
        ``image`` (H, W, 3) uint8 RGB, rows top to bottom as a viewer shows it; with ``return_info`` the pair
        ``(image, info)``, ``info`` holding ``band_row`` (image row of the monoclonal band's centre in the lane
        middles, ``None`` for Negative), ``band_half_width`` (rows from the band's centre to where its stain falls
        to 14 % of the peak, two standard deviations of its profile; ``None`` for Negative), ``band_lanes`` (lanes holding the band: ELP, the light chain, then the
        heavy chain if any), ``faint`` (a faint band), ``lane_centres`` (column of each lane's centre, in
        :data:`LANES` order), ``lane_width`` (pixels), ``gel_rows`` (first and last row of the gel area) and
        ``label_strip`` (``"top"`` or ``"bottom"``).

    Raises:
        ValueError: on an unknown class name or an image smaller than 48 x 64.
    """
    if class_name not in IFE_CLASSES:
        raise ValueError(f"unknown class {class_name!r}; valid: {list(IFE_CLASSES)}.")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}.")
    height, width = (int(s) for s in image_size)
    if height < _MIN_SIZE[0] or width < _MIN_SIZE[1]:
        raise ValueError(f"image_size must be at least {_MIN_SIZE}, got {(height, width)}.")
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

    rows = np.arange(height, dtype=np.float32)
    t = (rows - gel_top) / max(gel_bottom - gel_top, 1)  # migration coordinate, (H,)
    inside = ((t >= 0) & (t <= 1)).astype(np.float32)
    drift = rng.normal(0, 0.012)  # run-to-run migration differences shift every zone a little

    # the monoclonal protein: sometimes faint (low concentration: the hard cases, more often light-chain-only)
    band_lanes: list[str] = []
    if mild > 0:  # every positive class has a light chain; the heavy chain only when severe != None
        band_lanes = ["ELP", _LIGHT_LANE[mild]] + ([_HEAVY_LANE[severe]] if severe > 0 else [])
    faint = bool(band_lanes) and bool(rng.random() < (0.30 if severe == 0 else 0.15))
    low, high = _BAND_RANGE[severe]
    band_t = rng.uniform(low, high) + drift
    band_sigma = rng.uniform(0.007, 0.014)
    band_amp = rng.uniform(0.22, 0.38) if faint else rng.uniform(0.6, 1.05)
    # immunoparesis: a monoclonal clone often suppresses the normal polyclonal immunoglobulins
    paresis = rng.uniform(0.35, 0.8) if band_lanes and rng.random() < 0.35 else 1.0
    # the applicator leaves a faint mark across every lane at the same height, on negatives too
    mark_amp = rng.uniform(0.02, 0.06) if rng.random() < 0.4 else 0.0
    mark_t = rng.uniform(0.58, 0.68) + drift

    density = np.zeros((height, width), dtype=np.float32)
    half = 0.58 * lane_width  # the lane profile is zero beyond |u| = 1.15
    for lane, centre in zip(LANES, centres):
        if lane == "ELP":
            amps = _ELP_ZONES[:, 2] * rng.uniform(0.85, 1.15, len(_ELP_ZONES))
            profile = (amps[:, None] * _gauss(t[None, :], _ELP_ZONES[:, :1] + drift, _ELP_ZONES[:, 1:2])).sum(0)
            profile += rng.uniform(0.2, 0.3) * paresis * _gauss(t, _GAMMA_ZONE[0] + drift, _GAMMA_ZONE[1])
        else:
            c, s, a = _POLYCLONAL[lane]
            profile = a * rng.uniform(0.7, 1.3) * paresis * _gauss(t, c + drift, s)
        profile += rng.uniform(0.01, 0.04)  # faint background staining of the lane
        profile += mark_amp * _gauss(t, mark_t, 0.005)
        profile *= 1 + 0.05 * _smooth_noise(rng, height, height / 25)  # uneven antiserum along the lane
        # only the lane's own columns are computed: a quarter of the work of full-width arrays
        lo, hi = max(0, int(np.floor(centre - half))), min(width, int(np.ceil(centre + half)) + 1)
        u = (np.arange(lo, hi, dtype=np.float32) - centre) / (lane_width / 2)
        # flat top with soft edges, uneven stain across the lane
        across = np.clip(1.25 - np.abs(u) ** 6, 0, 1) * (np.abs(u) < 1.15)
        across *= 1 + 0.04 * _smooth_noise(rng, hi - lo, (hi - lo) / 4)
        lane_density = profile[:, None] * across[None, :]
        if lane in band_lanes:
            lane_amp = band_amp * (0.75 if lane == "ELP" else 1.0) * rng.uniform(0.85, 1.15)
            smile = rng.uniform(-0.006, 0.012) * u**2  # lane edges migrate a little less
            # rows more than 6 sigma (plus the smile) from the band contribute nothing: compute only the window
            reach = 6 * band_sigma + 0.02
            r0 = max(0, int(np.searchsorted(t, band_t - reach)))
            r1 = min(height, int(np.searchsorted(t, band_t + reach)) + 1)
            band = _gauss(t[r0:r1, None], band_t + smile[None, :], band_sigma) * across[None, :]
            lane_density[r0:r1] += lane_amp * band
        density[:, lo:hi] += lane_density
    density *= inside[:, None]
    # optics (scanner focus, diffusion in the gel) blur the stain, not the sensor noise added afterwards; one
    # float channel here costs a third of blurring the RGB image
    density = ndimage.gaussian_filter(density, sigma=rng.uniform(0.4, 1.4) * height / 400, mode="nearest")

    # stain absorbance on a tinted near-white background lit a little unevenly, then sensor noise
    # near-white with a tint: mostly warm (yellowish film or paper), sometimes cool; never pure white
    warmth = rng.uniform(-0.5, 1.5)
    background = rng.uniform(226, 244) + rng.normal(0, 2.5, 3) + warmth * np.array([2.5, 1.0, -3.5])
    background = np.minimum(background, 248.0)
    tilt_x, tilt_y = rng.uniform(-0.03, 0.03), rng.uniform(-0.02, 0.02)
    light = 1 + tilt_x * np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    light = light + tilt_y * np.linspace(-1, 1, height, dtype=np.float32)[:, None]  # (H, W)
    light /= light.max()  # uneven lighting only darkens: the brightest corner keeps the background colour
    stain = (_STAIN * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)).astype(np.float32)
    image = np.exp(-density[:, :, None] * stain) * background.astype(np.float32) * light[:, :, None]
    # sensor noise, luminance only: colour noise is barely visible after the scanner's processing and would make
    # the PNGs a fifth slower to write
    image += rng.uniform(1.0, 3.0) * rng.standard_normal((height, width, 1), dtype=np.float32)
    for _ in range(int(rng.integers(0, 6))):  # dust specks and impurity pixels
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        r = rng.uniform(0.6, 2.0) * max(height / 400, 0.5)
        reach = int(np.ceil(r))
        y0, y1, x0, x1 = max(0, y - reach), min(height, y + reach + 1), max(0, x - reach), min(width, x + reach + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= r * r] *= rng.uniform(0.5, 0.8)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))

    draw = ImageDraw.Draw(pil)
    font = _font(max(7, int(strip * 0.55)))
    text_colour = tuple(int(v) for v in rng.integers(40, 90, 3))
    text_height = draw.textbbox((0, 0), "ELP", font=font)[3]
    # inside the strip, and inside the image however small the strip
    text_y = strip * 0.2 if strip_on_top else min(height - strip * 0.85, height - text_height - 1)
    for letter, centre in zip(LANES, centres):
        left, _, right, _ = draw.textbbox((0, 0), letter, font=font)
        draw.text((centre - (right - left) / 2, max(0.0, text_y)), letter, fill=text_colour, font=font)

    image = np.asarray(pil)
    if not return_info:
        return image
    info = {
        "band_row": int(round(gel_top + band_t * (gel_bottom - gel_top))) if band_lanes else None,
        "band_half_width": round(2 * band_sigma * (gel_bottom - gel_top), 2) if band_lanes else None,
        "band_lanes": band_lanes,
        "faint": faint,
        "lane_centres": [float(c) for c in centres],
        "lane_width": float(lane_width),
        "gel_rows": (int(gel_top), int(gel_bottom)),
        "label_strip": "top" if strip_on_top else "bottom",
    }
    return image, info


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
    ``testing`` lists of ``{"image": "images/....png", "label": class name}``, split stratified by class; every
    class present is in ``training``, and from 27 images on every class is in ``training`` and ``testing``) and
    ``output_dir/synthesis.json`` (parameters, class and split counts, per-image band row and half-width, lanes and
    faintness). Every file is written atomically, ``datalist.json`` last and only once the data set is complete
    (:func:`~custom_components.data.synthetic.prepare.finish_synthesis`).

    Args:
        output_dir: destination folder (created; existing files of the same names are overwritten).
        count: number of images, >= 1.
        seed: random seed; the same seed gives the same bytes.
        image_size: ``(H, W)`` of the gels, at least 48 x 64.
        class_fractions: class mix (see :func:`sample_labels`), default :data:`DEFAULT_CLASS_FRACTIONS`.
        splits: training/validation/testing fractions, each >= 0, summing to 1.

    Returns:
        the path of ``datalist.json``.

    Raises:
        ValueError: on ``count < 1``, a bad ``image_size``, bad class fractions or splits that do not sum to 1.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}.")
    if len(splits) != 3 or abs(sum(splits) - 1) > 1e-6 or min(splits) < 0:
        raise ValueError(f"splits must be three fractions >= 0 summing to 1, got {splits}.")
    if len(image_size) != 2 or int(image_size[0]) < _MIN_SIZE[0] or int(image_size[1]) < _MIN_SIZE[1]:
        raise ValueError(f"image_size must be (H, W) of at least {_MIN_SIZE}, got {image_size!r}.")
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    start_synthesis(out)
    labels = sample_labels(np.random.default_rng([seed, 0]), count, class_fractions)
    assignment = assign_sections(labels, splits, np.random.default_rng([seed, 1]), order=IFE_CLASSES)

    datalist: dict[str, list[dict]] = {name: [] for name in SECTIONS}
    details = []
    step = max(1, count // 10)
    # PNG encoding (zlib, which releases the GIL) takes as long as rendering: a writer thread overlaps the two;
    # at most a few images wait in memory
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:
        for index, (label, split) in enumerate(zip(labels, assignment)):
            image, info = render_gel(np.random.default_rng([seed, 2, index]), label, image_size, return_info=True)
            name = f"images/ife_{index:05d}.png"
            # level 1: a fifth of the time of the default level 6, for files 10 % larger (noise barely compresses)
            save = partial(Image.fromarray(image).save, compress_level=1)
            pending.append(writer.submit(save_atomic, out / name, save))
            while len(pending) > 4:
                pending.popleft().result()
            datalist[split].append({"image": name, "label": label})
            details.append(
                {"image": name, "label": label, "split": split, "band_row": info["band_row"],
                 "band_half_width": info["band_half_width"], "band_lanes": info["band_lanes"], "faint": info["faint"]}
            )  # fmt: skip
            if (index + 1) % step == 0 or index + 1 == count:
                logger.info("synthetic IFE gels: %d/%d", index + 1, count)
        while pending:
            pending.popleft().result()  # re-raises a failed write

    summary = {
        "generator": __name__,
        "seed": seed,
        "count": count,
        "image_size": [int(s) for s in image_size],
        "class_fractions": dict(DEFAULT_CLASS_FRACTIONS if class_fractions is None else class_fractions),
        "splits": dict(zip(SECTIONS, (float(s) for s in splits))),
        "class_counts": {c: labels.count(c) for c in IFE_CLASSES},
        "split_counts": {k: len(v) for k, v in datalist.items()},
        "images": details,
    }
    path = finish_synthesis(out, datalist, summary)
    logger.info("wrote %d synthetic IFE gels and %s", count, path)
    return path
