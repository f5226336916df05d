# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Synthetic spectral-domain OCT B-scans of the macula with binary fluid masks (DME / AMD-like).

A B-scan is a cross-section of the retina: rows go into the eye (depth), columns across it. Top to bottom: the dark
vitreous; the internal limiting membrane (ILM) and the bright nerve fibre layer (NFL, thicker towards the optic disc,
i.e. on the nasal side); the alternating ganglion cell (GCL, medium), inner plexiform (IPL, bright), inner nuclear
(INL, dark), outer plexiform (OPL, bright) and outer nuclear (ONL, dark and thick) layers; the thin external
limiting membrane (ELM) line; the photoreceptor inner segments, the bright ellipsoid (IS/OS) line, the outer
segments and the interdigitation line; the brightest band, the retinal pigment epithelium (RPE); then the
textured choroid (dark vessel lumens in brighter stroma) fading into the sclera. Near the centre the inner layers
thin out into the foveal pit while the ONL thickens (Henle fibres). Superficial retinal vessels are small bright
dots in the NFL/GCL that cast vertical shadows on everything below them.

Fluid (the segmentation target, ``mask == 1``):

- intraretinal cysts (DME): rounded or oval, slightly irregular, hyporeflective pockets in the INL, OPL and ONL,
  clustered around the fovea, from a few pixels to large confluent cavities. They thicken the retina around them
  (the layers above are pushed up), so a swollen retina may lose its pit;
- subretinal fluid (AMD / central serous): a dome-shaped dark lens between the photoreceptor tips and the RPE that
  lifts the whole neurosensory retina.

Image formation follows SD-OCT: each tissue has a reflectivity ``r`` (display units, 0 = vitreous, about 1 = RPE);
linear intensity ``exp(c * r)`` is multiplied by fully developed speckle (a log-gamma field, spatially correlated
over a grain of about one pixel at 512 x 512), attenuated by depth roll-off, lateral vignetting and vessel shadows,
added to an exponential noise floor, log-compressed and mapped to 8 bits with a random brightness, contrast and
gamma. The mask is thresholded from the very coverage maps that paint the fluid into the image (coverage >= 0.5),
so mask and image agree to the pixel.

Geometry is expressed as fractions of the image size, so any size works (down to 16 x 16; features below a pixel
merge, but every fluid scan keeps at least one fluid pixel). Everything is drawn from one ``numpy.random.Generator``
per image, derived from ``(seed, index)`` in :func:`synthesize_oct_dataset`, and PNGs are written without metadata,
so the same seed gives the same bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.utils import StrEnum, look_up_option
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import expit

__all__ = [
    "DEFAULT_FLUID_FRACTION",
    "DEFAULT_FLUID_TYPE_WEIGHTS",
    "FluidType",
    "render_bscan",
    "synthesize_oct_dataset",
]

logger = logging.getLogger(__name__)


class FluidType(StrEnum):
    """Which fluid a B-scan shows."""

    NONE = "none"
    INTRARETINAL = "intraretinal"
    SUBRETINAL = "subretinal"
    BOTH = "both"


#: The paper's data: 194 B-scans with fluid and 185 normal ones.
DEFAULT_FLUID_FRACTION = 194 / (194 + 185)

#: Mix among the scans with fluid: cysts alone (DME), subretinal fluid alone (AMD, central serous), or both.
DEFAULT_FLUID_TYPE_WEIGHTS: Mapping[str, float] = {"intraretinal": 0.5, "subretinal": 0.2, "both": 0.3}

# Retinal layers top to bottom: (name, parafoveal thickness in micrometres, reflectivity in display units).
# Thicknesses are textbook values near the fovea; the whole stack is scaled to a random fraction of the height.
_LAYERS = (
    ("nfl", 24.0, 0.80),
    ("gcl", 42.0, 0.52),
    ("ipl", 36.0, 0.64),
    ("inl", 34.0, 0.38),
    ("opl", 28.0, 0.60),
    ("onl", 72.0, 0.30),
    ("myoid", 18.0, 0.38),
    ("ellipsoid", 12.0, 0.88),
    ("outer_segments", 20.0, 0.42),
    ("rpe", 22.0, 0.97),
)
_LAYER_INDEX = {name: i for i, (name, _, _) in enumerate(_LAYERS)}
_STACK_UM = sum(t for _, t, _ in _LAYERS)
_INNER = ("nfl", "gcl", "ipl", "inl", "opl")  # thinned by the foveal pit
_CHOROID_R, _SCLERA_R = 0.62, 0.30
_DYNAMIC_RANGE = 7.0  # c in exp(c * r): about 30 dB between the vitreous floor and the RPE
_MIN_SIDE = 16


def _smooth_profile(rng: np.random.Generator, xn: np.ndarray, amplitude: float, terms: int = 3) -> np.ndarray:
    """A random smooth function of the normalised column ``xn`` in [0, 1): a few low-frequency sinusoids."""
    out = np.zeros_like(xn)
    for _ in range(terms):
        out += np.sin(2 * np.pi * (rng.uniform(0.3, 2.5) * xn + rng.uniform()))
    return (amplitude / np.sqrt(terms) * out).astype(np.float32)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def _band_rows(lower: np.ndarray, upper: np.ndarray, pad: float, height: int) -> tuple[int, int]:
    """Row slice covering every column between the curves ``lower`` (smaller rows) and ``upper``, plus ``pad``."""
    return max(0, int(np.floor(lower.min() - pad))), min(height, int(np.ceil(upper.max() + pad)) + 1)


def _add_step(image: np.ndarray, rows: np.ndarray, boundary: np.ndarray, delta: np.ndarray, soft: float) -> None:
    """In place: ``image += delta(x) * sigmoid((y - boundary(x)) / soft)``, computed only near the boundary."""
    top, bottom = _band_rows(boundary, boundary, 8 * soft, image.shape[0])
    image[bottom:] += delta[None, :]
    if bottom > top:
        image[top:bottom] += delta[None, :] * expit((rows[top:bottom, None] - boundary[None, :]) / soft)


def _add_ridge(image: np.ndarray, rows: np.ndarray, centre: np.ndarray, amplitude: np.ndarray, width: float) -> None:
    """In place: a thin bright line ``amplitude(x) * gauss(y - centre(x), width)`` (ELM, interdigitation, hyaloid)."""
    top, bottom = _band_rows(centre, centre, 4 * width, image.shape[0])
    if bottom > top:
        image[top:bottom] += amplitude[None, :] * _gauss(rows[top:bottom, None] - centre[None, :], width)


def _check_size(image_size: Sequence[int]) -> tuple[int, int]:
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (H, W), got {image_size}.")
    height, width = (int(s) for s in image_size)
    if height < _MIN_SIDE or width < _MIN_SIDE:
        raise ValueError(f"image_size must be at least ({_MIN_SIDE}, {_MIN_SIDE}), got {(height, width)}.")
    return height, width


def _draw_fluid_type(rng: np.random.Generator, weights: Mapping[str, float]) -> str:
    names = list(weights)
    p = np.array([float(weights[n]) for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _check_type_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    weights = dict(DEFAULT_FLUID_TYPE_WEIGHTS if weights is None else weights)
    valid = [FluidType.INTRARETINAL.value, FluidType.SUBRETINAL.value, FluidType.BOTH.value]
    unknown = sorted(set(weights) - set(valid))
    if unknown:
        raise ValueError(f"unknown fluid types {unknown} in fluid_type_weights; valid: {valid}.")
    values = np.array(list(weights.values()), dtype=float)
    if values.size == 0 or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"fluid_type_weights must be >= 0 with a positive sum, got {weights}.")
    return weights


def render_bscan(
    rng: np.random.Generator,
    image_size: Sequence[int] = (512, 512),
    fluid: str | bool | None = None,
    fluid_fraction: float = DEFAULT_FLUID_FRACTION,
    fluid_type_weights: Mapping[str, float] | None = None,
    return_info: bool = False,
    with_fluid: bool | None = None,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict]:
    """Render one synthetic macular SD-OCT B-scan and its fluid mask.

    Args:
        rng: random generator (one per image for reproducibility).
        image_size: ``(H, W)``, rows first; each side >= 16. Features scale with the size.
        fluid: ``"none"``, ``"intraretinal"`` (cysts), ``"subretinal"`` (a dome of subretinal fluid) or ``"both"``;
            ``True`` draws the type from ``fluid_type_weights``, ``False`` means ``"none"``; ``None`` draws it all:
            fluid with probability ``fluid_fraction``, its type from ``fluid_type_weights``.
        fluid_fraction: probability of fluid when ``fluid`` is ``None``, in [0, 1].
        fluid_type_weights: weights of ``"intraretinal"``, ``"subretinal"`` and ``"both"`` when ``fluid`` is
            ``None``; default :data:`DEFAULT_FLUID_TYPE_WEIGHTS`.
        return_info: also return a dict describing the scan.
        with_fluid: keyword form of a boolean ``fluid`` (``True``: some fluid of a random type, ``False``: none);
            give ``fluid`` or ``with_fluid``, not both.

    Returns:
        ``(image, mask)`` or ``(image, mask, info)``: ``image`` (H, W) uint8 grayscale B-scan; ``mask`` (H, W) uint8
        in {0, 1}, 1 on fluid; ``info`` with ``fluid`` (the type), ``fluid_pixels``, ``cysts`` (number of
        intraretinal cysts), ``subretinal`` (bool), ``fovea_col``, ``pit_depth`` (fraction of the inner layers
        missing at the fovea), ``vessel_cols``, and the float row of three boundaries per column (W,): ``ilm``
        (top of the retina), ``rpe_top`` and ``bruch`` (bottom of the RPE).
        Fluid always lies strictly between ``ilm`` and ``bruch``, and a scan with fluid has at least one fluid pixel.

    Raises:
        ValueError: on a bad ``image_size``, ``fluid``, ``fluid_fraction`` or ``fluid_type_weights``, or when both
            ``fluid`` and ``with_fluid`` are given.
    """
    height, width = _check_size(image_size)
    if not 0.0 <= float(fluid_fraction) <= 1.0:
        raise ValueError(f"fluid_fraction must be in [0, 1], got {fluid_fraction}.")
    type_weights = _check_type_weights(fluid_type_weights)
    if with_fluid is not None:
        if fluid is not None:
            raise ValueError(f"give fluid or with_fluid, not both; got fluid={fluid!r}, with_fluid={with_fluid!r}.")
        fluid = bool(with_fluid)
    if fluid is None:
        fluid = rng.random() < fluid_fraction
    if isinstance(fluid, (bool, np.bool_)):
        fluid = _draw_fluid_type(rng, type_weights) if fluid else FluidType.NONE.value
    fluid = look_up_option(str(fluid).lower(), FluidType).value
    has_cysts = fluid in (FluidType.INTRARETINAL.value, FluidType.BOTH.value)
    has_srf = fluid in (FluidType.SUBRETINAL.value, FluidType.BOTH.value)

    f32 = np.float32
    rows = np.arange(height, dtype=f32)
    cols = np.arange(width, dtype=f32)
    xn = cols / width
    size_scale = min(height, width) / 512.0
    soft = f32(0.35 + 0.45 * height / 512.0)  # layer boundary blur: the axial point-spread function

    # ---- layer thicknesses per column (pixels), before placement --------------------------------------------
    retina_px = height * rng.uniform(0.18, 0.27)
    px_per_um = retina_px / _STACK_UM
    fovea = width * float(np.clip(rng.normal(0.5, 0.06), 0.3, 0.7))
    pit_sigma = width * rng.uniform(0.05, 0.08)
    pit_depth = rng.uniform(0.8, 0.97) if rng.random() < 0.85 else rng.uniform(0.2, 0.5)  # else scanned off-centre
    d = cols - fovea
    pit = 1 - pit_depth * _gauss(d, pit_sigma)
    rim = 1 + rng.uniform(0.05, 0.25) * _gauss(np.abs(d) - 2.3 * pit_sigma, 1.2 * pit_sigma)
    nasal = rng.choice([-1.0, 1.0])  # left or right eye: the NFL thickens towards the optic disc
    thickness = {}
    for name, um, _ in _LAYERS:
        t = um * px_per_um * rng.uniform(0.88, 1.12) * (1 + _smooth_profile(rng, xn, 0.06))
        if name in _INNER:
            t = t * pit * rim
        if name == "nfl":
            t = t * np.clip(1 + nasal * 2.2 * d / width, 0.25, 2.5)
        if name == "onl":
            t = t * (1 + rng.uniform(0.2, 0.5) * _gauss(d, 1.6 * pit_sigma))
        if name in ("outer_segments", "myoid"):
            t = t * (1 + rng.uniform(0.1, 0.35) * _gauss(d, 1.2 * pit_sigma))  # foveal bulge of the cones
        thickness[name] = t.astype(f32)

    # ---- intraretinal cysts: sample them first, they swell the layer that hosts them -------------------------
    cysts = []
    if has_cysts:
        swell_cap = 0.16 * height
        swelling = {"inl": np.zeros(width, f32), "onl": np.zeros(width, f32)}
        spread = width * rng.uniform(0.06, 0.16)
        for _ in range(1 + int(rng.poisson(rng.uniform(0.5, 6.0)))):
            cx = float(np.clip(rng.normal(fovea, spread), 0.06 * width, 0.94 * width))
            rx = max(1.3, width * np.exp(rng.uniform(np.log(0.006), np.log(0.055))))
            ry = max(1.3, rx * height / width * rng.uniform(0.7, 1.7))
            host = "inl" if rx < 0.02 * width and rng.random() < 0.5 else "onl"
            # oedema spreads beyond the cavity: a broad bump keeps the ILM smooth over the cyst
            reach = rng.uniform(1.8, 3.0) * max(rx, 1.2 * ry * width / height)
            bump = 2.0 * ry * rng.uniform(0.9, 1.2) * _gauss(cols - cx, reach)
            excess = (swelling["inl"] + swelling["onl"] + bump).max() - swell_cap
            if excess > 0:  # keep the total thickening plausible: shrink this cyst, or drop it if one exists
                if cysts:
                    continue
                shrink = max(swell_cap / (swell_cap + excess), 1.3 / ry)
                rx, ry, bump = max(1.3, rx * shrink), max(1.3, ry * shrink), bump * shrink
            swelling[host] += bump.astype(f32)
            cysts.append((cx, rx, ry, host))
        diffuse = height * rng.uniform(0.0, 0.04) * _gauss(cols - fovea, 2 * spread)  # diffuse macular thickening
        swelling["onl"] += (0.6 * diffuse).astype(f32)
        swelling["inl"] += (0.4 * diffuse).astype(f32)
        for host, bump in swelling.items():
            thickness[host] = thickness[host] + bump

    # subretinal fluid: a dome between the photoreceptor tips and the RPE, lifting everything above
    srf = np.zeros(width, f32)
    if has_srf:
        sx = float(np.clip(rng.normal(fovea, 0.06 * width), 0.15 * width, 0.85 * width))
        half_left, half_right = width * rng.uniform(0.06, 0.22, size=2)
        u = np.where(cols < sx, (cols - sx) / half_left, (cols - sx) / half_right)
        peak = max(2.0, height * rng.uniform(0.015, 0.08))
        srf = (peak * np.clip(1 - u**2, 0, None) ** rng.uniform(0.5, 1.2)).astype(f32)

    # ---- place the stack: Bruch's membrane follows a tilted, curved, slightly wavy line ---------------------
    xc = (cols - width / 2) / (width / 2)  # -1 .. 1
    base = height * (
        rng.uniform(-0.06, 0.06) * xc + rng.uniform(-0.16, 0.05) * xc**2 + _smooth_profile(rng, xn, 0.008)
    )
    above_bruch = sum(thickness[name] for name, _, _ in _LAYERS) + srf
    # keep the retina inside the frame: limit the bend, then shift so the ILM and Bruch's membrane fit
    room = 0.9 * height - above_bruch.max()
    bend = base.max() - base.min()
    if bend > max(room, 0.0):
        base = base * (max(room, 0.0) / bend)
    top_limit = 0.04 * height + above_bruch - base  # Bruch row >= this, per column
    low, high = top_limit.max(), (0.93 * height - base).min()
    offset = low + (high - low) * rng.beta(2.0, 2.5) if high > low else low
    bruch = (base + offset).astype(f32)

    # boundaries from the bottom up: bottom of each layer = top of the next one down
    boundary = {"rpe": bruch - thickness["rpe"]}  # top of the RPE
    below = boundary["rpe"] - srf  # photoreceptor tips, lifted by subretinal fluid
    for name, _, _ in reversed(_LAYERS[:-1]):
        boundary[name] = below - thickness[name]
        below = boundary[name]
    ilm = boundary["nfl"]
    choroid_px = height * rng.uniform(0.08, 0.16) * (1 + _smooth_profile(rng, xn, 0.15))
    sclera_top = bruch + choroid_px.astype(f32)

    # ---- reflectivity map: soft steps between layers, each layer's brightness varying along the scan --------
    values = [np.zeros(width, f32)]  # vitreous
    for name, _, r in _LAYERS:
        values.append((r * rng.uniform(0.92, 1.08) * (1 + _smooth_profile(rng, xn, 0.05))).astype(f32))
    srf_value = f32(rng.uniform(0.04, 0.12))
    r_choroid = (_CHOROID_R * rng.uniform(0.9, 1.1) * np.ones(width)).astype(f32)
    r_sclera = (_SCLERA_R * rng.uniform(0.7, 1.1) * np.ones(width)).astype(f32)
    refl = np.zeros((height, width), f32)
    tops = [boundary[name] for name, _, _ in _LAYERS]
    for k, top in enumerate(tops):
        _add_step(refl, rows, top, values[k + 1] - values[k], soft)
    if has_srf:  # the gap between photoreceptor tips and RPE top holds fluid, not RPE
        _add_step(refl, rows, boundary["rpe"] - srf, srf_value - values[-1], soft)
        _add_step(refl, rows, boundary["rpe"], values[-1] - srf_value, soft)
    _add_step(refl, rows, bruch, r_choroid - values[-1], soft)
    _add_step(refl, rows, sclera_top, r_sclera - r_choroid, 2 * soft)

    line = f32(0.3 + 0.4 * height / 512.0)
    _add_ridge(refl, rows, boundary["myoid"], np.full(width, rng.uniform(0.12, 0.25), f32), line)  # ELM
    iz = boundary["rpe"] - srf - 0.3 * thickness["outer_segments"]
    _add_ridge(refl, rows, iz, np.full(width, rng.uniform(0.05, 0.18), f32), line)  # interdigitation zone
    if rng.random() < 0.25:  # a partly detached posterior hyaloid floating in the vitreous
        hyaloid = ilm - height * rng.uniform(0.01, 0.06) + _smooth_profile(rng, xn, 0.01 * height)
        extent = (np.abs(xn - rng.uniform(0, 1)) < rng.uniform(0.15, 0.5)).astype(f32)
        _add_ridge(refl, rows, hyaloid, rng.uniform(0.12, 0.3) * extent, line)

    # choroid: vessel lumens (dark) in stroma, larger and flatter with depth, fading towards the sclera
    top, bottom = _band_rows(bruch, sclera_top, 4 * soft, height)
    if bottom > top:
        band = rows[top:bottom, None]
        shape = (bottom - top, width)
        fine = gaussian_filter(rng.standard_normal(shape, dtype=f32), (1.2 * size_scale + 0.4, 3.0 * size_scale + 0.5))
        coarse = gaussian_filter(rng.standard_normal(shape, dtype=f32), (2.5 * size_scale + 0.5, 8 * size_scale + 0.8))
        fine /= fine.std() + 1e-6
        coarse /= coarse.std() + 1e-6
        depth = np.clip((band - bruch[None, :]) / choroid_px[None, :], 0, 1)
        texture = 0.22 * np.tanh(1.5 * ((1 - depth) * fine + depth * coarse)) - 0.18 * depth
        inside = expit((band - bruch[None, :]) / soft) * expit((sclera_top[None, :] - band) / (2 * soft))
        refl[top:bottom] += texture * inside

    # light is scattered and absorbed by the RPE and choroid: the signal fades with depth below Bruch's membrane
    top = max(0, int(bruch.min()))
    refl[top:] -= rng.uniform(2.0, 4.0) * np.clip(rows[top:, None] - bruch[None, :], 0, None) / height

    # ---- fluid: coverage maps in [0, 1]; the mask is exactly coverage >= 0.5 ---------------------------------
    fluid_cover = np.zeros((height, width), f32)
    fluid_value = np.zeros((height, width), f32)
    edge = 0.6  # pixels of anti-aliased edge
    if has_srf:
        lifted = boundary["rpe"] - srf
        top, bottom = _band_rows(lifted, boundary["rpe"], 2, height)
        band = rows[top:bottom, None]
        inside = np.minimum(band - lifted[None, :], boundary["rpe"][None, :] - band)
        cover = np.clip(inside / edge + 0.5, 0, 1) * (srf[None, :] > 0)
        fluid_cover[top:bottom] = np.maximum(fluid_cover[top:bottom], cover)
        fluid_value[top:bottom] = np.where(cover > 0, srf_value, fluid_value[top:bottom])
    cyst_level = rng.uniform(0.02, 0.09)
    wall = rng.uniform(0.0, 0.12)  # septa and walls between cysts are slightly hyperreflective
    for cx, rx, ry, host in cysts:
        column = int(np.clip(round(cx), 0, width - 1))
        host_top, host_bottom = float(boundary[host][column]), float(boundary[host][column] + thickness[host][column])
        low, high = host_top + ry + 0.5, host_bottom - ry - 0.5
        cy = rng.uniform(low, high) if high > low else 0.5 * (host_top + host_bottom)
        r0, r1 = int(max(0, np.floor(cy - 1.5 * ry - 3))), int(min(height, np.ceil(cy + 1.5 * ry + 4)))
        c0, c1 = int(max(0, np.floor(cx - 1.5 * rx - 3))), int(min(width, np.ceil(cx + 1.5 * rx + 4)))
        dy, dx = rows[r0:r1, None] - cy, cols[None, c0:c1] - cx
        theta = np.arctan2(dy / ry, dx / rx)
        a2, a3 = rng.uniform(0, 0.12, size=2)
        phase2, phase3 = rng.uniform(0, 2 * np.pi, size=2)
        wobble = 1 + a2 * np.cos(2 * theta + phase2) + a3 * np.cos(3 * theta + phase3)
        dist = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2) / wobble  # 1 on the cyst's outline
        # cysts stay inside the INL..ONL band: the OPL and the ELM bound them in real scans too
        box_rows = rows[r0:r1, None]
        allowed = (box_rows > boundary["inl"][None, c0:c1]) & (box_rows < boundary["myoid"][None, c0:c1])
        cover = np.clip((1 - dist) * min(rx, ry) / edge + 0.5, 0, 1) * allowed
        refl[r0:r1, c0:c1] += wall * _gauss((dist - 1) * min(rx, ry), 1.0) * (dist > 1)
        fluid_cover[r0:r1, c0:c1] = np.maximum(fluid_cover[r0:r1, c0:c1], cover)
        fluid_value[r0:r1, c0:c1] = np.where(cover > 0, cyst_level * rng.uniform(0.7, 1.3), fluid_value[r0:r1, c0:c1])
    refl = refl * (1 - fluid_cover) + fluid_value * fluid_cover
    mask = (fluid_cover >= 0.5).astype(np.uint8)

    # hyperreflective foci (lipid, activated microglia) in oedematous retina, never inside the fluid
    if has_cysts:
        for _ in range(int(rng.integers(0, 10))):
            column = int(rng.integers(0, width))
            fy = rng.uniform(boundary["ipl"][column], boundary["myoid"][column])
            fr = max(0.6, 0.004 * height * rng.uniform(0.7, 1.5))
            r0, r1 = max(0, int(fy - 3 * fr)), min(height, int(fy + 3 * fr) + 2)
            c0, c1 = max(0, int(column - 3 * fr)), min(width, int(column + 3 * fr) + 2)
            blob = _gauss(np.hypot(rows[r0:r1, None] - fy, cols[None, c0:c1] - column), fr)
            refl[r0:r1, c0:c1] += rng.uniform(0.25, 0.45) * blob * (1 - fluid_cover[r0:r1, c0:c1])

    # ---- gain: depth roll-off, lateral vignetting, shadows under superficial vessels ------------------------
    gain = np.exp(-rng.uniform(0.0, 0.9) * rows / height)[:, None] * np.exp(
        -rng.uniform(0.0, 0.6) * ((xn - rng.uniform(0.35, 0.65)) / 0.5) ** 2
    )[None, :]
    gain = gain.astype(f32)
    vessel_cols = []
    for _ in range(int(rng.integers(2, 8))):
        vx = rng.uniform(0.03, 0.97) * width
        if abs(vx - fovea) < 1.8 * pit_sigma:  # the foveal avascular zone
            continue
        column = int(vx)
        vy = float(ilm[column] + thickness["nfl"][column] + 0.4 * thickness["gcl"][column])
        vrx = max(0.7, width * rng.uniform(0.004, 0.011))
        vry = max(0.7, height * rng.uniform(0.005, 0.012))
        c0, c1 = max(0, int(vx - 4 * vrx)), min(width, int(vx + 4 * vrx) + 2)
        r0, r1 = max(0, int(vy - 4 * vry)), min(height, int(vy + 4 * vry) + 2)
        lateral = _gauss(cols[c0:c1] - vx, vrx)
        refl[r0:r1, c0:c1] += rng.uniform(0.1, 0.3) * lateral[None, :] * _gauss(rows[r0:r1, None] - vy, vry)
        below = expit((rows[r0:, None] - vy - vry) / soft)
        gain[r0:, c0:c1] *= 1 - rng.uniform(0.5, 0.85) * lateral[None, :] * below
        vessel_cols.append(float(vx))

    # ---- image formation: speckle, noise floor, log compression, display mapping ---------------------------
    looks = rng.uniform(1.5, 8.0)  # B-scan averaging (ART) reduces speckle
    grain = (0.4 + 0.6 * size_scale, 0.5 + 1.1 * size_scale)
    gamma = rng.standard_gamma(looks, size=(height, width), dtype=f32) / looks
    log_speckle = gaussian_filter(np.log(gamma + 1e-6), grain)
    # a downsized scan averages many grains: weaker speckle at small sizes, as when resizing a real scan
    target_std = np.sqrt(_trigamma(looks)) * min(1.0, size_scale) ** 0.35
    log_speckle = (log_speckle - log_speckle.mean()) * (target_std / (log_speckle.std() + 1e-6))
    floor = np.exp(_DYNAMIC_RANGE * rng.uniform(0.08, 0.16))
    intensity = np.exp(_DYNAMIC_RANGE * refl + log_speckle) * gain
    floor_looks = 1.0 / min(1.0, size_scale) ** 0.7  # the noise floor averages out in a downsized scan too
    intensity += floor * rng.standard_gamma(floor_looks, size=(height, width), dtype=f32) / floor_looks
    display = gaussian_filter(np.log(intensity) / _DYNAMIC_RANGE, (0.35 * size_scale + 0.2, 0.5 * size_scale + 0.2))
    lo = rng.uniform(0.06, 0.13)
    hi = rng.uniform(0.85, 1.0)
    scaled = np.clip((display - lo) / (hi - lo), 0, 1) ** rng.uniform(0.8, 1.25)
    image = np.clip(255 * (scaled * rng.uniform(0.85, 1.1) + rng.uniform(-0.01, 0.04)), 0, 255)
    image = np.rint(image).astype(np.uint8)

    if not return_info:
        return image, mask
    info = {
        "fluid": fluid,
        "fluid_pixels": int(mask.sum()),
        "cysts": len(cysts),
        "subretinal": bool(has_srf),
        "fovea_col": float(fovea),
        "pit_depth": float(pit_depth),
        "vessel_cols": vessel_cols,
        "ilm": ilm.astype(np.float64),
        "rpe_top": boundary["rpe"].astype(np.float64),
        "bruch": bruch.astype(np.float64),
    }
    return image, mask, info


def _trigamma(x: float) -> float:
    """Variance of log(Gamma(x)): trigamma(x), by recurrence up to 6 then the asymptotic series."""
    total = 0.0
    while x < 6.0:
        total += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    return total + inv + inv**2 / 2 + inv**3 / 6 - inv**5 / 30 + inv**7 / 42


def _assign_splits(has_fluid: Sequence[bool], splits: Sequence[float], rng: np.random.Generator) -> list[str]:
    """Assign each index to training/validation/testing, stratified by fluid / no fluid."""
    names = ("training", "validation", "testing")
    assignment = [""] * len(has_fluid)
    for group in (True, False):
        members = [i for i, v in enumerate(has_fluid) if v is group]
        rng.shuffle(members)
        n = len(members)
        n_test = max(1, round(n * splits[2])) if n >= 3 and splits[2] > 0 else 0
        n_val = min(round(n * splits[1]), n - n_test - 1) if n >= 3 else 0
        n_val = max(n_val, 0)
        for j, i in enumerate(members):
            assignment[i] = names[2] if j < n_test else names[1] if j < n_test + n_val else names[0]
    return assignment


def synthesize_oct_dataset(
    output_dir: str | Path,
    count: int,
    seed: int = 0,
    image_size: Sequence[int] = (512, 512),
    fluid_fraction: float = DEFAULT_FLUID_FRACTION,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
    fluid_type_weights: Mapping[str, float] | None = None,
) -> Path:
    """Write ``count`` synthetic B-scans with fluid masks and a decathlon-style datalist.

    Files: ``output_dir/images/oct_00000.png`` ... (grayscale), ``output_dir/masks/oct_00000.png`` ... (binary,
    values {0, 255}, same size, overlaying the image), ``output_dir/datalist.json`` (``training``, ``validation``,
    ``testing`` lists of ``{"image": "images/....png", "label": "masks/....png"}``, split stratified by
    fluid / no fluid) and ``output_dir/synthesis.json`` (parameters, counts and per-image fluid type and fluid
    pixel count).

    Args:
        output_dir: destination folder (created).
        count: number of B-scans, >= 1.
        seed: random seed; the same seed gives the same bytes.
        image_size: ``(H, W)``, each side >= 16.
        fluid_fraction: fraction of scans with fluid, in [0, 1]; the count is exact (rounded), and with
            ``count >= 2`` and a fraction strictly between 0 and 1 there is at least one scan of each kind.
            Default: the paper's 194 fluid / 379 scans.
        splits: training/validation/testing fractions (three values >= 0 summing to 1), applied to the fluid and
            the no-fluid scans separately; a group of fewer than 3 scans goes to training only.
        fluid_type_weights: mix of ``"intraretinal"``, ``"subretinal"`` and ``"both"`` among the fluid scans;
            default :data:`DEFAULT_FLUID_TYPE_WEIGHTS`.

    Returns:
        the path of ``datalist.json``.

    Raises:
        ValueError: on ``count < 1``, bad splits, ``fluid_fraction`` outside [0, 1], bad fluid type weights or a
            bad ``image_size``.
    """
    if int(count) != count or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count}.")
    count = int(count)
    if len(splits) != 3 or abs(sum(splits) - 1) > 1e-6 or min(splits) < 0:
        raise ValueError(f"splits must be three fractions >= 0 summing to 1, got {splits}.")
    if not 0.0 <= float(fluid_fraction) <= 1.0:
        raise ValueError(f"fluid_fraction must be in [0, 1], got {fluid_fraction}.")
    height, width = _check_size(image_size)
    type_weights = _check_type_weights(fluid_type_weights)

    # exact number of fluid scans, shuffled; then the type of each from the weights
    plan_rng = np.random.default_rng([seed, 0])
    n_fluid = int(round(count * fluid_fraction))
    if count >= 2 and 0 < fluid_fraction < 1:
        n_fluid = min(max(n_fluid, 1), count - 1)
    has_fluid = [True] * n_fluid + [False] * (count - n_fluid)
    plan_rng.shuffle(has_fluid)
    fluid_types = [_draw_fluid_type(plan_rng, type_weights) if f else FluidType.NONE.value for f in has_fluid]
    assignment = _assign_splits(has_fluid, splits, np.random.default_rng([seed, 1]))

    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    datalist: dict[str, list[dict]] = {"training": [], "validation": [], "testing": []}
    details = []
    step = max(1, count // 10)
    for index, (fluid, split) in enumerate(zip(fluid_types, assignment)):
        image, mask, info = render_bscan(
            np.random.default_rng([seed, 2, index]), (height, width), fluid=fluid, return_info=True
        )
        image_name, mask_name = f"images/oct_{index:05d}.png", f"masks/oct_{index:05d}.png"
        Image.fromarray(image, mode="L").save(out / image_name, format="PNG")
        Image.fromarray(mask * np.uint8(255), mode="L").save(out / mask_name, format="PNG")
        datalist[split].append({"image": image_name, "label": mask_name})
        details.append(
            {
                "image": image_name,
                "label": mask_name,
                "split": split,
                "fluid": info["fluid"],
                "fluid_pixels": info["fluid_pixels"],
                "cysts": info["cysts"],
                "subretinal": info["subretinal"],
                "fovea_col": round(info["fovea_col"], 2),
            }
        )
        if (index + 1) % step == 0 or index + 1 == count:
            logger.info("synthetic OCT B-scans: %d/%d", index + 1, count)

    (out / "datalist.json").write_text(json.dumps(datalist, indent=1))
    summary = {
        "generator": "custom_components.data.synthetic.oct",
        "seed": seed,
        "count": count,
        "image_size": [height, width],
        "fluid_fraction": fluid_fraction,
        "fluid_type_weights": type_weights,
        "splits": list(splits),
        "fluid_counts": {t.value: fluid_types.count(t.value) for t in FluidType},
        "split_counts": {k: len(v) for k, v in datalist.items()},
        "images": details,
    }
    (out / "synthesis.json").write_text(json.dumps(summary, indent=1))
    return out / "datalist.json"
