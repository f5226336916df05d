# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Synthetic immunofixation electrophoresis (IFE) gels for the nine IFE classes, and biclonal gels.

A gel scan is landscape (default 400 rows x 600 columns, about 3:2) on a near-white, slightly tinted background.
Six lanes stand side by side along the width: ELP (serum protein electrophoresis; ``SP`` on some systems), then
the immunofixations G, A, M (heavy chains) and K, L (kappa and lambda light chains). Proteins migrate along the
height. By default (``orientation="albumin_bottom"``) the gel is drawn as the published scans of real systems show
it: the albumin band of ELP near the bottom, the broad gamma zone toward the top; ``"albumin_top"`` is the mirror
image (the layout of this generator's first version). In ELP a strong albumin band, then the alpha-1, alpha-2,
beta-1 and beta-2 zones and the broad gamma zone; in the immunofixation lanes a diffuse polyclonal smear (G
strongest, then A and M; kappa stronger than lambda) over a faint stain along the whole lane. A monoclonal protein
is a dense band at the same height in ELP, in its heavy-chain lane and in its light-chain lane, several percent of
the lane height thick with diffuse edges (a flat top blurred at both ends); light-chain-only cases (``kappa``,
``lambda``) have no heavy-chain band. A *biclonal* gel (``class_name="biclonal"``, the optional tenth pattern, not
one of the nine classes) holds two such components at different heights. The stain is modelled as the absorbance
of a blue-violet dye (Beer-Lambert: red and green absorbed more than blue).

Layout options (``style``, see :data:`STYLES`): a header strip with the lane names (``ELP G A M K L`` or ``SP``,
kappa and lambda as ``K``/``L`` or Greek letters), dark frames around the gel area and/or each lane as scanners
print them, blank margins of varying size, lanes of unequal width and spacing. The default style ``"classic"`` is
the look of the first version (a label strip above or below the lanes, nothing else); ``"real"`` switches every
option on, ``"plain"`` every option off, and ``"mixed"`` draws each option per image.

Variation drawn per image, from what the paper lists as the noise of real scans (lane offsets, non-white
background, impurity pixels) and from how gels vary: faint monoclonal bands (the hard positives), band heights
typical of each heavy chain (IgA closer to albumin, in the beta zone), reduced polyclonal background beside a
monoclonal band (immunoparesis), a faint application mark across all lanes, lanes shifted left/right and unevenly
spaced, a slight "smile" of the bands, uneven stain across and along each lane, a tinted background with an
illumination gradient, blur, sensor noise and dust specks.

Reproducibility: each image has its own ``numpy.random.Generator`` seeded by ``(seed, 2, index)`` (its style too,
under ``"mixed"``), the labels one seeded by ``(seed, 0)``, the split one seeded by ``(seed, 1)`` and the choice of
biclonal images one seeded by ``(seed, 3)``; PNGs carry no timestamp. The same seed gives the same bytes (with the
same numpy, Pillow and zlib), and an image does not change when ``count`` does (with ``biclonal_fraction=0``).
"""

from __future__ import annotations

import copy
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage, special

from custom_components.core.splits import SECTIONS, assign_sections
from custom_components.ife.classes import IFE_CLASSES, class_to_subtasks
from custom_components.core.synthetic import check_difficulty, finish_synthesis, start_synthesis
from custom_components.core.atomic import save_atomic

__all__ = [
    "BICLONAL",
    "BICLONAL_SECTION",
    "DEFAULT_CLASS_FRACTIONS",
    "LANES",
    "ORIENTATIONS",
    "STYLES",
    "resolve_style",
    "APPEARANCES",
    "sample_labels",
    "render_gel",
    "synthesize_ife_dataset",
]

logger = logging.getLogger(__name__)

#: lane order on the gel, left to right, as printed in the header (K = kappa, L = lambda)
LANES = ("ELP", "G", "A", "M", "K", "L")
#: ``"albumin_bottom"``: albumin near the bottom, gamma toward the top (real scans, the default);
#: ``"albumin_top"``: the mirror image
ORIENTATIONS = ("albumin_bottom", "albumin_top")
#: label of the optional tenth pattern (two monoclonal components at different heights), not one of the nine
BICLONAL = "biclonal"
#: datalist section of biclonal gels: kept out of ``training``/``validation``/``testing`` (the bundles train the nine)
BICLONAL_SECTION = "biclonal"

_STYLE_KEYS = ("headers", "frame", "margin", "uneven_lanes")
#: named layouts: ``headers`` (a strip of lane names above, sometimes below, the lanes), ``frame`` (dark frame
#: around the gel area, and on half of the gels around each lane), ``margin`` (blank margins of 4-12 % of the size
#: on every side instead of 3 %), ``uneven_lanes`` (lane widths +-20 %, uneven spacing). ``"mixed"`` draws each
#: option with probability 0.5 per image.
STYLES: Mapping[str, Mapping[str, bool]] = {
    "classic": {"headers": True, "frame": False, "margin": False, "uneven_lanes": False},
    "plain": {"headers": False, "frame": False, "margin": False, "uneven_lanes": False},
    "real": {"headers": True, "frame": True, "margin": True, "uneven_lanes": True},
}

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

# Migration coordinate t: 0 at the albumin end of the gel area, 1 at the other end (gamma side).
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
# the two components of a biclonal gel: any two different heavy-chain classes (two heavy chains, or one heavy chain
# with both light chains), their bands at least this far apart in t (more than a band's full width)
_BICLONAL_COMPONENTS = ("IgG-kappa", "IgG-lambda", "IgA-kappa", "IgA-lambda", "IgM-kappa", "IgM-lambda")
_BICLONAL_MIN_SEPARATION = 0.12
# absorbance per unit density of the blue-violet stain, (R, G, B)
_STAIN = np.array([1.45, 1.75, 0.55])
#: how the gels look: ``"classic"`` (the generator's own look: a tinted background, the violet stain, broad
#: polyclonal smears) or ``"published"`` (as the gels of published figures look, e.g. MP-CADMS: see
#: :func:`render_gel`)
APPEARANCES = ("classic", "published")
# the published look's stains, absorbance per unit density (R, G, B) and how often each is drawn: a saturated blue
# (Coomassie-like: a band reads about (40, 60, 220) on white), the violet of the classic look, and grey scans
_PUBLISHED_STAINS = {
    "blue": (np.array([1.8, 1.4, 0.15]), 0.45),
    "violet": (_STAIN, 0.25),
    "grey": (np.array([1.2, 1.2, 1.2]), 0.30),
}
_MIN_SIZE = (48, 64)


def resolve_style(style: str | Mapping[str, bool] | None, rng: np.random.Generator | None = None) -> dict[str, bool]:
    """The layout options of one gel.

    Args:
        style: a name of :data:`STYLES`, ``"mixed"`` (each option drawn with probability 0.5 from ``rng``), a
            mapping of some of ``headers``, ``frame``, ``margin``, ``uneven_lanes`` to booleans (the others as in
            ``"classic"``), or ``None`` for ``"classic"``.
        rng: random generator, needed for ``"mixed"`` only.

    Returns:
        ``{"headers": bool, "frame": bool, "margin": bool, "uneven_lanes": bool}``.

    Raises:
        ValueError: on an unknown style name or option, a non-boolean option, or ``"mixed"`` without ``rng``.
    """
    if style is None:
        return dict(STYLES["classic"])
    if isinstance(style, str):
        if style == "mixed":
            if rng is None:
                raise ValueError("style 'mixed' draws its options at random: pass rng.")
            return {key: bool(rng.random() < 0.5) for key in _STYLE_KEYS}
        if style not in STYLES:
            raise ValueError(f"unknown style {style!r}; valid: {[*STYLES, 'mixed']} or a mapping of {_STYLE_KEYS}.")
        return dict(STYLES[style])
    if not isinstance(style, Mapping):
        raise ValueError(f"style must be a name, a mapping or None, got {type(style).__name__}.")
    unknown = set(style) - set(_STYLE_KEYS)
    if unknown:
        raise ValueError(f"unknown style options {sorted(unknown)}; valid: {list(_STYLE_KEYS)}.")
    for key, value in style.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"style option {key!r} must be a bool, got {value!r}.")
    return {key: bool(style.get(key, STYLES["classic"][key])) for key in _STYLE_KEYS}


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


def _band(x: np.ndarray, centre: float | np.ndarray, half_plateau: float, edge: float) -> np.ndarray:
    """A flat-topped band with diffuse edges: a box of half-width ``half_plateau`` blurred by a Gaussian of sigma
    ``edge`` (a monoclonal protein fills a zone of the gel; diffusion softens its ends), peak 1."""
    scale = np.sqrt(2.0) * edge
    value = 0.5 * (special.erf((x - centre + half_plateau) / scale) - special.erf((x - centre - half_plateau) / scale))
    return value / special.erf(half_plateau / scale)


def _band_reach(half_plateau: float, edge: float, level: float = 0.14) -> float:
    """Distance from a band's centre to where :func:`_band` falls to ``level`` of its peak."""
    d = np.linspace(0.0, half_plateau + 6 * edge, 4001)
    return float(d[np.argmax(_band(d, 0.0, half_plateau, edge) < level)])


def _smooth_noise(rng: np.random.Generator, length: int, scale: float) -> np.ndarray:
    """1D noise of unit-ish amplitude varying over about ``scale`` samples (cheap low-frequency texture)."""
    knots = max(2, int(np.ceil(length / max(scale, 1.0))) + 2)
    return np.interp(np.linspace(0, knots - 1, length), np.arange(knots), rng.standard_normal(knots))


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed-size bitmap font
        return ImageFont.load_default()


def _has_glyphs(font: ImageFont.ImageFont, text: str) -> bool:
    """Whether ``font`` draws every character of ``text`` (Pillow's default font lacks Greek: it would draw the
    same empty box for each, as for a private-use code point)."""
    missing = bytes(font.getmask("\U0010fffd"))
    return all(bytes(font.getmask(ch)) != missing for ch in text)


def _component(
    rng: np.random.Generator, class_name: str, drift: float, band_t: float | None = None, difficulty: float = 1.0
) -> dict:
    """One monoclonal component: its lanes, migration position, band shape and strength (``difficulty`` times
    likelier to be faint, and ``difficulty`` times fainter and thinner)."""
    severe, mild = class_to_subtasks(IFE_CLASSES.index(class_name))
    lanes = ["ELP", _LIGHT_LANE[mild]] + ([_HEAVY_LANE[severe]] if severe > 0 else [])
    faint = bool(rng.random() < (0.30 if severe == 0 else 0.15) * difficulty)  # low concentration: the hard cases
    if band_t is None:
        low, high = _BAND_RANGE[severe]
        band_t = rng.uniform(low, high) + drift
    # full width at half maximum 3-6 % of the lane height, edges blurred over 0.4-0.9 %: the full width down to
    # 14 % of the peak is 4-8 %, as dense bands look on scans
    fwhm = rng.uniform(0.03, 0.06) / difficulty
    edge = rng.uniform(0.004, 0.009)
    amp = (rng.uniform(0.22, 0.38) if faint else rng.uniform(0.6, 1.05)) / difficulty
    return {"class": class_name, "lanes": lanes, "faint": faint, "t": float(band_t), "half_plateau": fwhm / 2,
            "edge": edge, "amp": amp}  # fmt: skip


def _biclonal_components(
    rng: np.random.Generator, drift: float, components: Sequence[str] | None, difficulty: float = 1.0
) -> list[dict]:
    """Two components of different classes whose bands sit at least :data:`_BICLONAL_MIN_SEPARATION` apart."""
    if components is None:
        first, second = (_BICLONAL_COMPONENTS[i] for i in rng.choice(len(_BICLONAL_COMPONENTS), 2, replace=False))
    else:
        if len(components) != 2 or any(c not in IFE_CLASSES[1:] for c in components):
            raise ValueError(f"components must be two positive IFE classes, got {components!r}.")
        first, second = components
    one = _component(rng, first, drift, difficulty=difficulty)
    low, high = _BAND_RANGE[class_to_subtasks(IFE_CLASSES.index(second))[0]]
    # rejection sampling from the second class's usual range; a pair whose ranges leave no room (rare) gets the
    # minimum separation on the side with more space
    for _ in range(50):
        t2 = rng.uniform(low, high) + drift
        if abs(t2 - one["t"]) >= _BICLONAL_MIN_SEPARATION:
            break
    else:
        up = one["t"] + _BICLONAL_MIN_SEPARATION
        t2 = up if up <= 0.92 else one["t"] - _BICLONAL_MIN_SEPARATION
    return [one, _component(rng, second, drift, band_t=t2, difficulty=difficulty)]


def render_gel(
    rng: np.random.Generator,
    class_name: str,
    image_size: Sequence[int] = (400, 600),
    return_info: bool = False,
    orientation: str = "albumin_bottom",
    style: str | Mapping[str, bool] | None = None,
    components: Sequence[str] | None = None,
    difficulty: float = 1.0,
    appearance: str = "classic",
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Render one IFE gel.

    Args:
        rng: random generator (one per image, for reproducibility).
        class_name: one of :data:`~custom_components.ife.classes.IFE_CLASSES`, or :data:`BICLONAL` for two
            monoclonal components at different heights.
        image_size: ``(H, W)``; landscape about 3:2 like real scans; any size from 48 x 64 works.
        return_info: also return the ground truth of the drawing (for tests and figures).
        orientation: one of :data:`ORIENTATIONS`; ``"albumin_bottom"`` (default) as real scans show it.
        style: the layout, see :func:`resolve_style`; default ``"classic"`` (a label strip, no frame, narrow
            margins, even lanes). ``"mixed"`` draws the options from ``rng``.
        components: for ``class_name="biclonal"`` only: the two component classes (e.g.
            ``("IgG-kappa", "IgG-lambda")``); default drawn from the six heavy-chain classes.
        difficulty: > 0; 1 (default) draws the gels described above. Above 1 the gels are harder to read: a
            monoclonal band is ``difficulty`` times likelier to be faint (at most always), ``difficulty`` times
            fainter and thinner, the lanes are shifted ``difficulty`` times further (within their slots) and the
            sensor noise is ``difficulty`` times stronger. Below 1, the reverse. The random draws are the same at
            every difficulty: the same seed gives the same gel, made harder or easier.
        appearance: one of :data:`APPEARANCES`. ``"classic"`` (default) is the look described above.
            ``"published"`` looks like the gels of published figures (the 271 of MP-CADMS, looked at side by side
            with these by ``scripts/experiments/ife_synthetic_gap.py``): a white background, a saturated blue,
            violet or grey stain (:data:`_PUBLISHED_STAINS`) up to twice as dense, immunofixation lanes nearly blank
            away from the band (polyclonal smears at 15-50 % of the classic strength, a fainter trace of dye) and
            monoclonal bands 1.4-2.2 times stronger and 1.2-1.8 times wider, evenly lit. Its random draws come
            from a generator of their own, so the same ``rng`` gives the same gel in both looks: the same lanes,
            class and band rows.

    Returns:
        ``image`` (H, W, 3) uint8 RGB, rows top to bottom as a viewer shows it; with ``return_info`` the pair
        ``(image, info)``. ``info`` (image coordinates: rows from the top, columns from the left) holds

        - ``band_row``: row of the (first) monoclonal band's centre in the lane middles, ``None`` for Negative;
          ``band_rows``: every component's band row (two for biclonal, none for Negative);
        - ``band_half_width``: rows from the (first) band's centre to where its stain falls to 14 % of the peak
          (two standard deviations of a Gaussian band, for the flat-topped band a little more than half its full
          width at half maximum), ``None`` for Negative;
        - ``band_lanes``: lanes holding a band (ELP, the light chain, then the heavy chain if any; for biclonal
          the union, in that order per component); ``faint``: a faint (first) band; ``components``: per
          component ``{"class", "band_row", "band_half_width", "band_lanes", "faint"}``;
        - ``lane_centres`` (column of each lane's centre, :data:`LANES` order), ``lane_width`` (mean, pixels),
          ``lane_widths``, ``lane_bounds`` (``[(left, right)]`` columns of each lane, the nominal edges where the
          lane's stain falls to a quarter);
        - ``gel_rows``: first and last row of the gel area (the lanes' stain; header and frame excluded);
          ``header_rows``: first and last row of the header strip, or ``None``; ``label_strip``: ``"top"``,
          ``"bottom"`` or ``None`` (where the header is);
        - ``orientation``, ``style`` (the options drawn) and ``lane_names`` (the header's text per lane);
        - ``appearance`` and ``stain`` (the stain drawn: ``"violet"`` for the classic look).

    Raises:
        ValueError: on an unknown class name, orientation, style or appearance, an image smaller than 48 x 64, or
            a ``difficulty`` that is not positive.
    """
    if class_name not in IFE_CLASSES and class_name != BICLONAL:
        raise ValueError(f"unknown class {class_name!r}; valid: {[*IFE_CLASSES, BICLONAL]}.")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}.")
    if appearance not in APPEARANCES:
        raise ValueError(f"appearance must be one of {APPEARANCES}, got {appearance!r}.")
    if components is not None and class_name != BICLONAL:
        raise ValueError(f"components is for class_name={BICLONAL!r} only, got class {class_name!r}.")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size!r}.")
    height, width = (int(s) for s in image_size)
    if height < _MIN_SIZE[0] or width < _MIN_SIZE[1]:
        raise ValueError(f"image_size must be at least {_MIN_SIZE}, got {(height, width)}.")
    difficulty = check_difficulty(difficulty)
    options = resolve_style(style, rng)

    # vertical layout, top to bottom: margin, header strip (about 10 % of the height) if on top, gap, gel area,
    # gap, header strip if below, margin; the frame (if any) sits in the gaps around the gel area
    line = max(1, int(round(min(height, width) / 200)))  # frame line width
    pad = max(2, int(round(0.015 * min(height, width)))) if options["frame"] else 0
    margins_y = rng.uniform(0.04, 0.12, 2) * height if options["margin"] else np.full(2, 0.03 * height)
    strip = max(8, int(round(0.1 * height)))
    header = None
    if options["headers"]:
        header = "top" if rng.random() < 0.7 else "bottom"
    gap = max(2, int(round(0.02 * height)))
    gel_top = int(round(margins_y[0])) + pad + line
    gel_bottom = height - 1 - int(round(margins_y[1])) - pad - line
    header_rows = None
    if header == "top":
        header_rows = (int(round(margins_y[0])), int(round(margins_y[0])) + strip - 1)
        gel_top = header_rows[1] + 1 + max(gap, pad + line)
    elif header == "bottom":
        header_rows = (height - int(round(margins_y[1])) - strip, height - 1 - int(round(margins_y[1])))
        gel_bottom = header_rows[0] - 1 - max(gap, pad + line)

    # horizontal layout: margins, then six slots (even, or widths +-20 % when uneven) each holding a lane of
    # 60-80 % of its slot, shifted a little but never into its neighbour
    if options["margin"]:
        margins_x = rng.uniform(0.04, 0.12, 2) * width
    else:
        margins_x = np.full(2, rng.uniform(0.03, 0.08) * width)
    area = (margins_x[0] + pad + line, width - margins_x[1] - pad - line)
    weights = rng.uniform(0.8, 1.2, len(LANES)) if options["uneven_lanes"] else np.ones(len(LANES))
    slots = (area[1] - area[0]) * weights / weights.sum()
    edges = area[0] + np.concatenate([[0.0], np.cumsum(slots)])
    pitch = (area[1] - area[0]) / len(LANES)
    if options["uneven_lanes"]:
        widths = slots * rng.uniform(0.6, 0.8, len(LANES))
    else:
        widths = slots * rng.uniform(0.62, 0.78)
    shift = (rng.normal(0, 0.03) * pitch + rng.normal(0, 0.04, len(LANES)) * pitch) * difficulty
    room = np.maximum(0.0, (slots - 1.15 * widths) / 2 - 0.04 * pitch)  # keep the lane's stain inside its slot
    centres = (edges[:-1] + edges[1:]) / 2 + np.clip(shift, -room, room)

    rows = np.arange(height, dtype=np.float32)
    down = (rows - gel_top) / max(gel_bottom - gel_top, 1)  # 0 at the gel's first row, 1 at its last
    t = down if orientation == "albumin_top" else 1 - down  # migration coordinate, (H,)
    inside = ((down >= 0) & (down <= 1)).astype(np.float32)
    drift = rng.normal(0, 0.012)  # run-to-run migration differences shift every zone a little

    # the monoclonal protein(s)
    if class_name == BICLONAL:
        parts = _biclonal_components(rng, drift, components, difficulty)
    elif class_name != "Negative":
        parts = [_component(rng, class_name, drift, difficulty=difficulty)]
    else:
        parts = []
    look = _published_look(rng, parts) if appearance == "published" else None
    band_lanes = [lane for part in parts for lane in part["lanes"]]
    band_lanes = list(dict.fromkeys(band_lanes))  # union, first appearance order
    # immunoparesis: a monoclonal clone often suppresses the normal polyclonal immunoglobulins
    paresis = rng.uniform(0.35, 0.8) if parts and rng.random() < 0.35 else 1.0
    # the applicator leaves a faint mark across every lane at the same height, on negatives too
    mark_amp = rng.uniform(0.02, 0.06) if rng.random() < 0.4 else 0.0
    mark_t = rng.uniform(0.58, 0.68) + drift

    density = np.zeros((height, width), dtype=np.float32)
    for lane, centre, lane_width in zip(LANES, centres, widths):
        if lane == "ELP":
            amps = _ELP_ZONES[:, 2] * rng.uniform(0.85, 1.15, len(_ELP_ZONES))
            profile = (amps[:, None] * _gauss(t[None, :], _ELP_ZONES[:, :1] + drift, _ELP_ZONES[:, 1:2])).sum(0)
            polyclonal = rng.uniform(0.2, 0.3) * paresis * _gauss(t, _GAMMA_ZONE[0] + drift, _GAMMA_ZONE[1])
            profile += polyclonal * (look["polyclonal"] if look else 1.0)
        else:
            c, s, a = _POLYCLONAL[lane]
            profile = a * rng.uniform(0.7, 1.3) * paresis * _gauss(t, c + drift, s)
            profile *= look["polyclonal"] if look else 1.0
        # faint stain along the whole lane: the fixed, washed lane keeps a trace of dye, so its ends are visible
        profile += rng.uniform(0.03, 0.07) * (look["trace"] if look else 1.0)
        profile += mark_amp * _gauss(t, mark_t, 0.005)
        profile *= 1 + 0.05 * _smooth_noise(rng, height, height / 25)  # uneven antiserum along the lane
        # only the lane's own columns are computed: a quarter of the work of full-width arrays
        half = 0.58 * lane_width  # the lane profile is zero beyond |u| = 1.15
        lo, hi = max(0, int(np.floor(centre - half))), min(width, int(np.ceil(centre + half)) + 1)
        u = (np.arange(lo, hi, dtype=np.float32) - centre) / (lane_width / 2)
        # flat top with soft edges, uneven stain across the lane
        across = np.clip(1.25 - np.abs(u) ** 6, 0, 1) * (np.abs(u) < 1.15)
        across *= 1 + 0.04 * _smooth_noise(rng, hi - lo, (hi - lo) / 4)
        lane_density = profile[:, None] * across[None, :]
        for part in parts:
            if lane not in part["lanes"]:
                continue
            lane_amp = part["amp"] * (0.75 if lane == "ELP" else 1.0) * rng.uniform(0.85, 1.15)
            smile = rng.uniform(-0.006, 0.012) * u**2  # lane edges migrate a little less
            # rows far from the band (beyond its edge blur and the smile) contribute nothing: compute only those
            reach = part["half_plateau"] + 6 * part["edge"] + 0.02
            window = np.flatnonzero(np.abs(t - part["t"]) <= reach)
            if window.size:
                r0, r1 = int(window[0]), int(window[-1]) + 1
                band = _band(t[r0:r1, None], part["t"] + smile[None, :], part["half_plateau"], part["edge"])
                lane_density[r0:r1] += lane_amp * band * across[None, :]
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
    if look:  # published figures: a white page
        background = look["background"]
    tilt_x, tilt_y = rng.uniform(-0.03, 0.03), rng.uniform(-0.02, 0.02)
    if look:  # a figure's page is evenly lit
        tilt_x, tilt_y = tilt_x / 4, tilt_y / 4
    light = 1 + tilt_x * np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    light = light + tilt_y * np.linspace(-1, 1, height, dtype=np.float32)[:, None]  # (H, W)
    light /= light.max()  # uneven lighting only darkens: the brightest corner keeps the background colour
    stain = _STAIN * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3)
    if look:
        stain = stain / _STAIN * look["stain"] * look["density"]
    stain = stain.astype(np.float32)
    image = np.exp(-density[:, :, None] * stain) * background.astype(np.float32) * light[:, :, None]
    # sensor noise, luminance only: colour noise is barely visible after the scanner's processing and would make
    # the PNGs a fifth slower to write
    image += rng.uniform(1.0, 3.0) * difficulty * rng.standard_normal((height, width, 1), dtype=np.float32)
    for _ in range(int(rng.integers(0, 6))):  # dust specks and impurity pixels
        y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
        r = rng.uniform(0.6, 2.0) * max(height / 400, 0.5)
        reach = int(np.ceil(r))
        y0, y1, x0, x1 = max(0, y - reach), min(height, y + reach + 1), max(0, x - reach), min(width, x + reach + 1)
        yy, xx = np.ogrid[y0:y1, x0:x1]
        image[y0:y1, x0:x1][(yy - y) ** 2 + (xx - x) ** 2 <= r * r] *= rng.uniform(0.5, 0.8)
    pil = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)

    bounds = [(int(round(c - w / 2)), int(round(c + w / 2))) for c, w in zip(centres, widths)]
    frame_kind = None
    if options["frame"]:
        # printed after the scan's blur and noise: thin, sharp, dark lines, as scanner software draws them
        colour = tuple(int(v) for v in rng.integers(20, 80, 3))
        box = [int(np.floor(area[0])) - pad, gel_top - pad - line, int(np.ceil(area[1])) + pad, gel_bottom + pad + line]
        draw.rectangle([max(0, box[0]), max(0, box[1]), min(width - 1, box[2]), min(height - 1, box[3])],
                       outline=colour, width=line)  # fmt: skip
        frame_kind = "gel"
        if rng.random() < 0.5:  # a box around each lane too, in the gap between lanes
            frame_kind = "gel+lanes"
            gaps = np.diff(centres) - (widths[:-1] + widths[1:]) / 2
            px = max(line + 1, int(round(0.2 * float(gaps.min()))))
            py = max(1, pad // 2)
            for left, right in bounds:
                draw.rectangle([left - px, gel_top - py - line, right + px, gel_bottom + py + line - 1],
                               outline=colour, width=line)  # fmt: skip

    names = list(LANES)
    if header is not None:
        font = _font(max(7, int(strip * 0.55)))
        greek = bool(rng.random() < 0.5) and _has_glyphs(font, "κλ")
        names = ["SP" if rng.random() < 0.3 else "ELP", "G", "A", "M"] + (["κ", "λ"] if greek else ["K", "L"])
        text_colour = tuple(int(v) for v in rng.integers(40, 90, 3))
        for letter, centre in zip(names, centres):
            left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
            # centred in the strip, inside the image however small the strip
            y = header_rows[0] + (strip - (bottom - top)) / 2 - top
            y = min(max(0.0, y), height - bottom - 1)
            draw.text((centre - (right - left) / 2, y), letter, fill=text_colour, font=font)

    image = np.asarray(pil)
    if not return_info:
        return image
    span = gel_bottom - gel_top

    def row_of(band_t: float) -> int:
        return int(round(gel_top + (band_t if orientation == "albumin_top" else 1 - band_t) * span))

    described = [
        {"class": p["class"], "band_row": row_of(p["t"]),
         "band_half_width": round(_band_reach(p["half_plateau"], p["edge"]) * span, 2), "band_lanes": p["lanes"],
         "faint": p["faint"]}
        for p in parts
    ]  # fmt: skip
    info = {
        "band_row": described[0]["band_row"] if parts else None,
        "band_rows": [c["band_row"] for c in described],
        "band_half_width": described[0]["band_half_width"] if parts else None,
        "band_lanes": band_lanes,
        "faint": bool(parts) and parts[0]["faint"],
        "components": described,
        "lane_centres": [float(c) for c in centres],
        "lane_width": float(np.mean(widths)),
        "lane_widths": [float(w) for w in widths],
        "lane_bounds": bounds,
        "gel_rows": (int(gel_top), int(gel_bottom)),
        "header_rows": header_rows,
        "label_strip": header,
        "orientation": orientation,
        "style": {**options, "frame_kind": frame_kind},
        "lane_names": names,
        "appearance": appearance,
        "stain": look["stain_name"] if look else "violet",
    }
    return image, info


def _published_look(rng: np.random.Generator, parts: list[dict]) -> dict[str, Any]:
    """Draw the published look of one gel (see :func:`render_gel`) and strengthen and widen its bands in place.

    The draws come from a generator seeded from a copy of ``rng``: ``rng`` itself is not advanced, so every other
    draw of the gel is the classic look's."""
    look = np.random.default_rng(copy.deepcopy(rng).integers(0, 2**63))
    for part in parts:
        part["amp"] *= look.uniform(1.4, 2.2)
        part["half_plateau"] *= look.uniform(1.2, 1.8)
    names = list(_PUBLISHED_STAINS)
    name = names[int(look.choice(len(names), p=[_PUBLISHED_STAINS[n][1] for n in names]))]
    return {
        "stain_name": name,
        "stain": _PUBLISHED_STAINS[name][0],
        "density": look.uniform(1.0, 2.0),
        "polyclonal": look.uniform(0.15, 0.5),
        "trace": look.uniform(0.2, 0.6),
        "background": np.minimum(look.uniform(246, 254) + look.normal(0, 1.0, 3), 255.0),
    }


def synthesize_ife_dataset(
    output_dir: str | Path,
    count: int,
    seed: int = 0,
    image_size: Sequence[int] = (400, 600),
    class_fractions: Mapping[str, float] | None = None,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
    orientation: str = "albumin_bottom",
    style: str | Mapping[str, bool] | None = None,
    biclonal_fraction: float = 0.0,
    difficulty: float = 1.0,
    min_per_class: int | None = None,
    appearance: str = "classic",
) -> Path:
    """Write ``count`` synthetic gels and a decathlon-style datalist.

    Files: ``output_dir/images/ife_00000.png`` ..., ``output_dir/datalist.json`` (``training``, ``validation``,
    ``testing`` lists of ``{"image": "images/....png", "label": class name}``, split stratified by class; every
    class present is in ``training``, and from 27 images on every class is in ``training`` and ``testing``; with
    ``biclonal_fraction > 0`` a fourth list, ``biclonal``, of the gels labelled ``"biclonal"``: not one of the
    nine classes, so never in the sections the bundles train, validate and test on) and ``output_dir/synthesis.json``
    (parameters, class and split counts, per image the label, split, band rows and half-width, band lanes,
    faintness, components, lane bounds, gel rows, header rows, orientation and the style drawn). Every file is
    written atomically, ``datalist.json`` last and only once the data set is complete
    (:func:`~custom_components.core.synthetic.finish_synthesis`).

    Args:
        output_dir: destination folder (created; existing files of the same names are overwritten).
        count: number of images (biclonal ones included), >= 1.
        seed: random seed; the same seed gives the same bytes.
        image_size: ``(H, W)`` of the gels, at least 48 x 64.
        class_fractions: class mix of the nine classes (see :func:`sample_labels`), default
            :data:`DEFAULT_CLASS_FRACTIONS`.
        splits: training/validation/testing fractions, each >= 0, summing to 1.
        orientation: one of :data:`ORIENTATIONS`, default ``"albumin_bottom"`` (real scans).
        style: layout of every gel (see :func:`resolve_style`): a name (``"classic"`` default, ``"plain"``,
            ``"real"``, or ``"mixed"`` drawn per image) or a mapping of options.
        biclonal_fraction: share of the ``count`` gels that are biclonal (rounded), in [0, 1).
        difficulty: how hard the gels are to read, > 0 (default 1); see :func:`render_gel`.
        appearance: how the gels look, one of :data:`APPEARANCES` (default ``"classic"``); see :func:`render_gel`.
        min_per_class: every class at least this many gels (see :func:`sample_labels`); default
            ``min(3, count // 9)``. Small data sets that should report per-class metrics on their validation and
            test splits need more than the paper's imbalance gives them (its rarest class is 0.43 % of the gels).

    Returns:
        the path of ``datalist.json``.

    Raises:
        ValueError: on ``count < 1``, a bad ``image_size``, class fractions, splits, orientation, style,
            ``biclonal_fraction``, ``difficulty`` or ``min_per_class``.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}.")
    if len(splits) != 3 or abs(sum(splits) - 1) > 1e-6 or min(splits) < 0:
        raise ValueError(f"splits must be three fractions >= 0 summing to 1, got {splits}.")
    if len(image_size) != 2 or int(image_size[0]) < _MIN_SIZE[0] or int(image_size[1]) < _MIN_SIZE[1]:
        raise ValueError(f"image_size must be (H, W) of at least {_MIN_SIZE}, got {image_size!r}.")
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}.")
    if not 0.0 <= float(biclonal_fraction) < 1.0:
        raise ValueError(f"biclonal_fraction must be in [0, 1), got {biclonal_fraction}.")
    if not (isinstance(style, str) and style == "mixed"):
        resolve_style(style)  # validates before anything is written
    difficulty = check_difficulty(difficulty)
    if appearance not in APPEARANCES:
        raise ValueError(f"appearance must be one of {APPEARANCES}, got {appearance!r}.")
    biclonal_count = int(round(float(biclonal_fraction) * count))
    if biclonal_count >= count:
        raise ValueError(f"biclonal_fraction={biclonal_fraction} leaves no gel of the nine classes of {count}.")
    nine = sample_labels(np.random.default_rng([seed, 0]), count - biclonal_count, class_fractions, min_per_class)
    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    start_synthesis(out)
    assignment = iter(assign_sections(nine, splits, np.random.default_rng([seed, 1]), order=IFE_CLASSES))
    biclonal = set(np.random.default_rng([seed, 3]).choice(count, biclonal_count, replace=False).tolist())
    nine_labels = iter(nine)
    labels = [BICLONAL if i in biclonal else next(nine_labels) for i in range(count)]

    datalist: dict[str, list[dict]] = {name: [] for name in SECTIONS}
    if biclonal_count:
        datalist[BICLONAL_SECTION] = []
    details = []
    step = max(1, count // 10)
    # PNG encoding (zlib, which releases the GIL) takes as long as rendering: a writer thread overlaps the two;
    # at most a few images wait in memory
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1) as writer:
        for index, label in enumerate(labels):
            split = BICLONAL_SECTION if label == BICLONAL else next(assignment)
            image, info = render_gel(
                np.random.default_rng([seed, 2, index]), label, image_size, return_info=True,
                orientation=orientation, style=style, difficulty=difficulty, appearance=appearance,
            )  # fmt: skip
            name = f"images/ife_{index:05d}.png"
            # level 1: a fifth of the time of the default level 6, for files 10 % larger (noise barely compresses)
            save = partial(Image.fromarray(image).save, compress_level=1)
            pending.append(writer.submit(save_atomic, out / name, save))
            while len(pending) > 4:
                pending.popleft().result()
            datalist[split].append({"image": name, "label": label})
            details.append(
                {"image": name, "label": label, "split": split, "band_row": info["band_row"],
                 "band_half_width": info["band_half_width"], "band_lanes": info["band_lanes"], "faint": info["faint"],
                 "band_rows": info["band_rows"], "components": info["components"],
                 "lane_bounds": [list(b) for b in info["lane_bounds"]], "gel_rows": list(info["gel_rows"]),
                 "header_rows": None if info["header_rows"] is None else list(info["header_rows"]),
                 "orientation": orientation, "style": info["style"], "lane_names": info["lane_names"],
                 **({"stain": info["stain"]} if appearance != "classic" else {})}
            )  # fmt: skip
            if (index + 1) % step == 0 or index + 1 == count:
                logger.info("synthetic IFE gels: %d/%d", index + 1, count)
        while pending:
            pending.popleft().result()  # re-raises a failed write

    class_counts = {c: labels.count(c) for c in IFE_CLASSES}
    if biclonal_count:
        class_counts[BICLONAL] = biclonal_count
    summary: dict[str, Any] = {
        "generator": __name__,
        "seed": seed,
        "count": count,
        "image_size": [int(s) for s in image_size],
        "class_fractions": dict(DEFAULT_CLASS_FRACTIONS if class_fractions is None else class_fractions),
        "splits": dict(zip(SECTIONS, (float(s) for s in splits))),
        "orientation": orientation,
        "style": style if style is None or isinstance(style, str) else dict(style),
        "biclonal_fraction": float(biclonal_fraction),
        "difficulty": difficulty,
        **({"appearance": appearance} if appearance != "classic" else {}),
        "min_per_class": min_per_class,
        "class_counts": class_counts,
        "split_counts": {k: len(v) for k, v in datalist.items()},
        "images": details,
    }
    path = finish_synthesis(out, datalist, summary)
    logger.info("wrote %d synthetic IFE gels and %s", count, path)
    return path
