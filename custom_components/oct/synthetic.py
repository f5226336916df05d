# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Synthetic spectral-domain OCT B-scans of the macula with fluid masks, binary or typed (DME / AMD-like).

A B-scan is a cross-section of the retina: rows go into the eye (depth), columns across it. Top to bottom: the dark
vitreous; the internal limiting membrane (ILM) and the bright nerve fibre layer (NFL, thicker towards the optic disc,
i.e. on the nasal side); the alternating ganglion cell (GCL, medium), inner plexiform (IPL, bright), inner nuclear
(INL, dark), outer plexiform (OPL, bright) and outer nuclear (ONL, dark and thick) layers; the thin external
limiting membrane (ELM) line; the photoreceptor inner segments, the bright ellipsoid (IS/OS) line, the outer
segments and the interdigitation line; the brightest band, the retinal pigment epithelium (RPE); then the
textured choroid (dark vessel lumens in brighter stroma) fading into the sclera. Near the centre the inner layers
thin out into the foveal pit while the ONL thickens (Henle fibres). Superficial retinal vessels are small bright
dots in the NFL/GCL that cast vertical shadows on everything below them.

Fluid (the segmentation target), of three types, alone or together (:class:`FluidType`):

- intraretinal fluid (IRF), cysts (DME): rounded or oval, slightly irregular, hyporeflective pockets in the INL,
  OPL and ONL, clustered around the fovea, from a few pixels to large confluent cavities. They thicken the retina
  around them (the layers above are pushed up), so a swollen retina may lose its pit;
- subretinal fluid (SRF; AMD, central serous): a dome-shaped dark lens between the photoreceptor tips and the RPE
  that lifts the whole neurosensory retina;
- pigment epithelial detachment (PED; AMD): the RPE lifted off Bruch's membrane as a dome, lifting the retina with
  it; the space beneath is dark (serous PED) or of medium, uneven reflectivity (fibrovascular PED), and the
  choroid below it is a little shadowed.

A binary mask is 1 on any fluid (the paper's protocol); a typed mask holds RETOUCH's values
(:mod:`custom_components.oct.fluid_types`): 0 background, 1 IRF, 2 SRF, 3 PED. The three never share a pixel in
the anatomy (cysts lie above the photoreceptors, SRF above the RPE, PED below it); where anti-aliased edges meet in
a tiny scan, a pixel takes the type of the fluid painted last, whose reflectivity the image shows there.

Image formation follows SD-OCT: each tissue has a reflectivity ``r`` (display units, 0 = vitreous, about 1 = RPE);
linear intensity ``exp(c * r)`` is multiplied by fully developed speckle (a log-gamma field, spatially correlated
over a grain of about one pixel at 512 x 512), attenuated by depth roll-off, lateral vignetting and vessel shadows,
added to an exponential noise floor, log-compressed and mapped to 8 bits with a random brightness, contrast and
gamma. The mask is thresholded from the very coverage maps that paint the fluid into the image (coverage >= 0.5),
so mask and image agree to the pixel; a typed mask labels the same pixels.

Geometry is expressed as fractions of the image size, so any size works (down to 16 x 16; features below a pixel
merge, but every fluid scan keeps at least one fluid pixel). Everything is drawn from one ``numpy.random.Generator``
per image, derived from ``(seed, index)`` in :func:`synthesize_oct_dataset`, and PNGs are written without metadata,
so the same seed gives the same bytes. A detachment draws its numbers only in the scans that have one, so a scan
without PED (image and binary mask) is the one the generator drew before PED existed, byte for byte, and so is a
binary data set with the default weights.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from monai.utils import StrEnum, look_up_option
from PIL import Image
from scipy.ndimage import gaussian_filter
from scipy.special import expit, polygamma

from custom_components.core.splits import SECTIONS, assign_sections
from custom_components.core.synthetic import check_difficulty, finish_synthesis, start_synthesis
from custom_components.core.atomic import save_atomic
from custom_components.oct.fluid_types import FLUID_TYPES

__all__ = [
    "DEFAULT_FLUID_FRACTION",
    "DEFAULT_FLUID_TYPE_WEIGHTS",
    "DEFAULT_TYPED_WEIGHTS",
    "FluidType",
    "render_bscan",
    "synthesize_oct_dataset",
]

logger = logging.getLogger(__name__)


class FluidType(StrEnum):
    """Which fluid a B-scan shows: none, one type, or several together (``"both"``, the name from before PED,
    is intraretinal and subretinal fluid; ``"all"`` is the three)."""

    NONE = "none"
    INTRARETINAL = "intraretinal"
    SUBRETINAL = "subretinal"
    BOTH = "both"
    PED = "ped"
    INTRARETINAL_PED = "intraretinal+ped"
    SUBRETINAL_PED = "subretinal+ped"
    ALL = "all"


# the fluid types (RETOUCH's names, fluid_types.FLUID_TYPES) that each FluidType draws
_TYPES_OF = {
    FluidType.NONE.value: (),
    FluidType.INTRARETINAL.value: ("IRF",),
    FluidType.SUBRETINAL.value: ("SRF",),
    FluidType.BOTH.value: ("IRF", "SRF"),
    FluidType.PED.value: ("PED",),
    FluidType.INTRARETINAL_PED.value: ("IRF", "PED"),
    FluidType.SUBRETINAL_PED.value: ("SRF", "PED"),
    FluidType.ALL.value: ("IRF", "SRF", "PED"),
}
# a typed mask's value of each fluid type: 1 IRF, 2 SRF, 3 PED
_MASK_VALUE = {name: k + 1 for k, name in enumerate(FLUID_TYPES)}

#: The paper's data: 194 B-scans with fluid and 185 normal ones.
DEFAULT_FLUID_FRACTION = 194 / (194 + 185)

#: Mix among the scans with fluid: cysts alone (DME), subretinal fluid alone (AMD, central serous), or both.
DEFAULT_FLUID_TYPE_WEIGHTS: Mapping[str, float] = {"intraretinal": 0.5, "subretinal": 0.2, "both": 0.3}

#: Mix among the scans with fluid for typed masks: every type alone and in every combination, so that a model sees
#: each class on its own and beside the others. IRF alone is the commonest (DME, and AMD), SRF and PED together
#: stand for neovascular AMD; each type is in about half of the fluid scans (IRF 55 %, SRF 50 %, PED 45 %).
DEFAULT_TYPED_WEIGHTS: Mapping[str, float] = {
    "intraretinal": 0.25,
    "subretinal": 0.15,
    "ped": 0.15,
    "both": 0.15,
    "subretinal+ped": 0.15,
    "intraretinal+ped": 0.1,
    "all": 0.05,
}

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
_EDGE = 0.6  # pixels of anti-aliased edge of the fluid


def _fluid_reflectivity(level: float, difficulty: float) -> float:
    """Fluid's reflectivity moved toward the ONL's (the layer that holds most cysts) by ``1 - 1 / difficulty`` of the
    way: unchanged at difficulty 1, half-way at 2. (Scaling it instead would leave it under the noise floor, as
    dark on screen as before.)"""
    onl = _LAYERS[_LAYER_INDEX["onl"]][2]
    return max(0.0, level + (onl - level) * (1.0 - 1.0 / difficulty))
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


def _check_typed(typed: bool, name: str) -> bool:
    if not isinstance(typed, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {typed!r}.")
    return bool(typed)


def _check_type_weights(weights: Mapping[str, float] | None, typed: bool = False) -> dict[str, float]:
    """``weights`` checked, or the default mix: :data:`DEFAULT_TYPED_WEIGHTS` for typed masks, else
    :data:`DEFAULT_FLUID_TYPE_WEIGHTS`."""
    if weights is None:
        weights = DEFAULT_TYPED_WEIGHTS if typed else DEFAULT_FLUID_TYPE_WEIGHTS
    weights = dict(weights)
    valid = [t.value for t in FluidType if t != FluidType.NONE]
    unknown = sorted(set(weights) - set(valid))
    if unknown:
        raise ValueError(f"unknown fluid types {unknown} in fluid_type_weights; valid: {valid}.")
    values = np.array(list(weights.values()), dtype=float)
    if values.size == 0 or (values < 0).any() or values.sum() <= 0:
        raise ValueError(f"fluid_type_weights must be >= 0 with a positive sum, got {weights}.")
    return weights


@dataclass(frozen=True, eq=False)  # eq=False: fields are arrays, compared by identity
class _Grid:
    """Pixel coordinates of one B-scan and the constants that scale with its size.

    Attributes:
        height, width: H and W.
        rows: (H,) float32 row indices; cols: (W,) float32 column indices; xn: (W,) ``cols / W`` in [0, 1).
        size_scale: ``min(H, W) / 512``: features are drawn for 512 x 512 and scaled by it.
        soft: blur of the layer boundaries in pixels (float32), the axial point-spread function.
    """

    height: int
    width: int
    rows: np.ndarray
    cols: np.ndarray
    xn: np.ndarray
    size_scale: float
    soft: np.float32

    @classmethod
    def of(cls, height: int, width: int) -> _Grid:
        """The grid of an (H, W) = (``height``, ``width``) B-scan."""
        cols = np.arange(width, dtype=np.float32)
        return cls(
            height=height,
            width=width,
            rows=np.arange(height, dtype=np.float32),
            cols=cols,
            xn=cols / width,
            size_scale=min(height, width) / 512.0,
            soft=np.float32(0.35 + 0.45 * height / 512.0),
        )


@dataclass(eq=False)
class _Macula:
    """Where the fovea is and how thick each layer is, per column, before the stack is placed.

    Attributes:
        fovea: column of the foveal centre; pit_sigma: width of the pit (px); pit_depth: fraction of the inner
            layers missing at the fovea.
        thickness: ``{layer name: (W,) float32 thickness in pixels}`` (swollen by cysts, if any, in place).
    """

    fovea: float
    pit_sigma: float
    pit_depth: float
    thickness: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class _Layers:
    """The placed stack: rows of the boundaries, per column, each (W,) float32.

    Attributes:
        boundary: ``{layer name: top row of that layer}``; the RPE's top is ``boundary["rpe"]``.
        ilm: top of the retina (``boundary["nfl"]``); bruch: Bruch's membrane, the top of the choroid;
        rpe_bottom: bottom of the RPE, on Bruch's membrane but where a detachment lifts it.
        sclera_top: bottom of the choroid; choroid_px: choroid thickness.
    """

    boundary: dict[str, np.ndarray]
    ilm: np.ndarray
    bruch: np.ndarray
    rpe_bottom: np.ndarray
    sclera_top: np.ndarray
    choroid_px: np.ndarray


@dataclass(frozen=True, eq=False)
class _Detachment:
    """A pigment epithelial detachment: the RPE lifted off Bruch's membrane as a dome.

    Attributes:
        height: (W,) float32 rows between Bruch's membrane and the lifted RPE (0 outside the dome).
        value: reflectivity of what fills it: dark for a serous PED, medium for a fibrovascular one.
        fibrovascular: whether it is fibrovascular (uneven, medium) rather than serous (dark, even).
        shadow: how much it darkens the choroid below it (reflectivity units).
    """

    height: np.ndarray
    value: float
    fibrovascular: bool
    shadow: float


@dataclass(frozen=True, eq=False)
class _FluidMaps:
    """What the fluid paints into a B-scan, each (H, W): ``cover`` its float32 coverage in [0, 1] (the mask is
    ``cover >= 0.5``), ``value`` its float32 reflectivity, ``kind`` its uint8 type (1 IRF, 2 SRF, 3 PED; 0 where
    there is none)."""

    cover: np.ndarray
    value: np.ndarray
    kind: np.ndarray

    @classmethod
    def empty(cls, height: int, width: int) -> _FluidMaps:
        """No fluid in an (H, W) = (``height``, ``width``) B-scan."""
        shape = (height, width)
        return cls(np.zeros(shape, np.float32), np.zeros(shape, np.float32), np.zeros(shape, np.uint8))

    def add(self, box: tuple[slice, slice], cover: np.ndarray, value: np.ndarray | float, kind: str) -> None:
        """In place: fluid of type ``kind`` (``"IRF"``, ``"SRF"`` or ``"PED"``) with coverage ``cover`` and
        reflectivity ``value`` over the rows and columns ``box``. Wherever it covers anything its value and type
        replace those painted before, so the type of a pixel is that of the fluid the image shows there."""
        self.cover[box] = np.maximum(self.cover[box], cover)
        self.value[box] = np.where(cover > 0, value, self.value[box])
        self.kind[box] = np.where(cover > 0, _MASK_VALUE[kind], self.kind[box])


def _resolve_fluid(
    rng: np.random.Generator, fluid: str | bool | None, fluid_fraction: float, type_weights: Mapping[str, float]
) -> str:
    """The scan's :class:`FluidType` value: ``None`` draws fluid with probability ``fluid_fraction``, a boolean
    draws the type of fluid from ``type_weights`` (or none), a name is looked up (case-insensitive)."""
    if fluid is None:
        fluid = rng.random() < fluid_fraction
    if isinstance(fluid, (bool, np.bool_)):
        fluid = _draw_fluid_type(rng, type_weights) if fluid else FluidType.NONE.value
    return look_up_option(str(fluid).lower(), FluidType).value


def _macula(rng: np.random.Generator, grid: _Grid) -> _Macula:
    """Layer thicknesses per column: textbook proportions scaled to a random retina height, thinned by the foveal
    pit (inner layers) and thickened around it (ONL, photoreceptors), the NFL growing towards the optic disc."""
    f32, cols, xn, width = np.float32, grid.cols, grid.xn, grid.width
    retina_px = grid.height * rng.uniform(0.18, 0.27)
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
    return _Macula(fovea=fovea, pit_sigma=pit_sigma, pit_depth=pit_depth, thickness=thickness)


_Cyst = tuple[float, float, float, str]  # (column, x radius, y radius, host layer) of an intraretinal cyst


def _intraretinal_cysts(
    rng: np.random.Generator, grid: _Grid, macula: _Macula, difficulty: float = 1.0
) -> list[_Cyst]:
    """Sample the cysts around the fovea and swell the layer hosting each (``macula.thickness``, in place).

    They are sampled before the stack is placed because oedema thickens the retina: the layers above are pushed up.

    Returns:
        ``(column, x radius, y radius, host layer)`` per cyst; the row is chosen when the fluid is painted.
    """
    f32, cols, height, width = np.float32, grid.cols, grid.height, grid.width
    fovea, thickness = macula.fovea, macula.thickness
    cysts: list[_Cyst] = []
    swell_cap = 0.16 * height
    swelling = {"inl": np.zeros(width, f32), "onl": np.zeros(width, f32)}
    spread = width * rng.uniform(0.06, 0.16)
    for _ in range(1 + int(rng.poisson(rng.uniform(0.5, 6.0) / difficulty))):  # fewer and smaller when harder
        cx = float(np.clip(rng.normal(fovea, spread), 0.06 * width, 0.94 * width))
        rx = max(1.3, width * np.exp(rng.uniform(np.log(0.006), np.log(0.055))) / difficulty)
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
    return cysts


def _subretinal_dome(rng: np.random.Generator, grid: _Grid, fovea: float) -> np.ndarray:
    """(W,) float32 height of the subretinal fluid: an asymmetric dome near the fovea, between the photoreceptor
    tips and the RPE, lifting everything above it."""
    cols, height, width = grid.cols, grid.height, grid.width
    sx = float(np.clip(rng.normal(fovea, 0.06 * width), 0.15 * width, 0.85 * width))
    half_left, half_right = width * rng.uniform(0.06, 0.22, size=2)
    u = np.where(cols < sx, (cols - sx) / half_left, (cols - sx) / half_right)
    peak = max(2.0, height * rng.uniform(0.015, 0.08))
    return (peak * np.clip(1 - u**2, 0, None) ** rng.uniform(0.5, 1.2)).astype(np.float32)


def _pigment_epithelial_detachment(
    rng: np.random.Generator, grid: _Grid, fovea: float, difficulty: float = 1.0
) -> _Detachment:
    """A detachment of the RPE near the fovea: serous (a tall dome with steep sides, dark inside, barely any
    shadow) or fibrovascular (broader and flatter, of medium reflectivity, shadowing the choroid more)."""
    cols, height, width = grid.cols, grid.height, grid.width
    fibrovascular = bool(rng.random() < 0.4)
    cx = float(np.clip(rng.normal(fovea, 0.08 * width), 0.15 * width, 0.85 * width))
    half = width * rng.uniform(0.05, 0.16) * (1.4 if fibrovascular else 1.0)
    peak = max(2.0, height * rng.uniform(0.02, 0.09) * (0.6 if fibrovascular else 1.0))  # >= 2 px: never empty
    steepness = rng.uniform(0.8, 1.5) if fibrovascular else rng.uniform(0.3, 0.6)  # a lower power: steeper sides
    dome = peak * np.clip(1 - ((cols - cx) / half) ** 2, 0, None) ** steepness
    level = rng.uniform(0.3, 0.45) if fibrovascular else rng.uniform(0.03, 0.1)
    shadow = rng.uniform(0.05, 0.2) if fibrovascular else rng.uniform(0.0, 0.08)
    return _Detachment(
        height=dome.astype(np.float32),
        value=_fluid_reflectivity(level, difficulty),
        fibrovascular=fibrovascular,
        shadow=shadow,
    )


def _place_layers(
    rng: np.random.Generator, grid: _Grid, thickness: Mapping[str, np.ndarray], srf: np.ndarray, ped: np.ndarray
) -> _Layers:
    """Place the stack: Bruch's membrane follows a tilted, curved, slightly wavy line kept inside the frame, and
    the boundaries are stacked upwards from it (the detachment's height ``ped`` lifting the RPE off it, the
    subretinal fluid ``srf`` lifting the retina off the RPE); the choroid lies below."""
    f32, xn, height, width = np.float32, grid.xn, grid.height, grid.width
    xc = (grid.cols - width / 2) / (width / 2)  # -1 .. 1
    base = height * (
        rng.uniform(-0.06, 0.06) * xc + rng.uniform(-0.16, 0.05) * xc**2 + _smooth_profile(rng, xn, 0.008)
    )
    above_bruch = sum(thickness[name] for name, _, _ in _LAYERS) + srf + ped
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
    rpe_bottom = bruch - ped
    boundary = {"rpe": rpe_bottom - thickness["rpe"]}  # top of the RPE
    below = boundary["rpe"] - srf  # photoreceptor tips, lifted by subretinal fluid
    for name, _, _ in reversed(_LAYERS[:-1]):
        boundary[name] = below - thickness[name]
        below = boundary[name]
    choroid_px = height * rng.uniform(0.08, 0.16) * (1 + _smooth_profile(rng, xn, 0.15))
    sclera_top = bruch + choroid_px.astype(f32)
    return _Layers(
        boundary=boundary,
        ilm=boundary["nfl"],
        bruch=bruch,
        rpe_bottom=rpe_bottom,
        sclera_top=sclera_top,
        choroid_px=choroid_px,
    )


def _reflectivity(
    rng: np.random.Generator,
    grid: _Grid,
    layers: _Layers,
    thickness: Mapping[str, np.ndarray],
    srf: np.ndarray,
    has_srf: bool,
    ped: _Detachment | None = None,
    difficulty: float = 1.0,
) -> tuple[np.ndarray, np.float32]:
    """The (H, W) float32 reflectivity map of the tissue: soft steps between the layers (each layer's brightness
    varying along the scan), the subretinal gap, the detachment ``ped`` (if any) between the RPE and Bruch's
    membrane with its shadow on the choroid, choroid and sclera, and the thin ELM, interdigitation and (at times)
    detached hyaloid lines.

    Returns:
        the map and the reflectivity of subretinal fluid (drawn even without it, to keep the random stream fixed).
    """
    f32, rows, xn, soft = np.float32, grid.rows, grid.xn, grid.soft
    height, width = grid.height, grid.width
    boundary, bruch = layers.boundary, layers.bruch
    values = [np.zeros(width, f32)]  # vitreous
    for name, _, r in _LAYERS:
        values.append((r * rng.uniform(0.92, 1.08) * (1 + _smooth_profile(rng, xn, 0.05))).astype(f32))
    srf_value = f32(_fluid_reflectivity(rng.uniform(0.04, 0.12), difficulty))
    r_choroid = (_CHOROID_R * rng.uniform(0.9, 1.1) * np.ones(width)).astype(f32)
    r_sclera = (_SCLERA_R * rng.uniform(0.7, 1.1) * np.ones(width)).astype(f32)
    refl = np.zeros((height, width), f32)
    tops = [boundary[name] for name, _, _ in _LAYERS]
    for k, top in enumerate(tops):
        _add_step(refl, rows, top, values[k + 1] - values[k], soft)
    if has_srf:  # the gap between photoreceptor tips and RPE top holds fluid, not RPE
        _add_step(refl, rows, boundary["rpe"] - srf, srf_value - values[-1], soft)
        _add_step(refl, rows, boundary["rpe"], values[-1] - srf_value, soft)
    if ped is not None:  # the gap between the lifted RPE and Bruch's membrane holds the detachment, not RPE
        shade = ped.shadow * np.clip(ped.height, 0, 1)  # full where the RPE is lifted by a pixel or more
        _add_step(refl, rows, layers.rpe_bottom, f32(ped.value) - values[-1], soft)
        _add_step(refl, rows, bruch, values[-1] - f32(ped.value) - shade, soft)
    _add_step(refl, rows, bruch, r_choroid - values[-1], soft)
    _add_step(refl, rows, layers.sclera_top, r_sclera - r_choroid, 2 * soft)

    line = f32(0.3 + 0.4 * height / 512.0)
    _add_ridge(refl, rows, boundary["myoid"], np.full(width, rng.uniform(0.12, 0.25), f32), line)  # ELM
    iz = boundary["rpe"] - srf - 0.3 * thickness["outer_segments"]
    _add_ridge(refl, rows, iz, np.full(width, rng.uniform(0.05, 0.18), f32), line)  # interdigitation zone
    if rng.random() < 0.25:  # a partly detached posterior hyaloid floating in the vitreous
        hyaloid = layers.ilm - height * rng.uniform(0.01, 0.06) + _smooth_profile(rng, xn, 0.01 * height)
        extent = (np.abs(xn - rng.uniform(0, 1)) < rng.uniform(0.15, 0.5)).astype(f32)
        _add_ridge(refl, rows, hyaloid, rng.uniform(0.12, 0.3) * extent, line)
    return refl, srf_value


def _choroid_texture(rng: np.random.Generator, grid: _Grid, layers: _Layers, refl: np.ndarray) -> None:
    """In place: the choroid's vessel lumens (dark) in stroma, larger and flatter with depth, and the fading of
    the signal below Bruch's membrane (light scattered and absorbed by the RPE and choroid)."""
    f32, rows, soft, size_scale, height = np.float32, grid.rows, grid.soft, grid.size_scale, grid.height
    bruch, sclera_top, choroid_px = layers.bruch, layers.sclera_top, layers.choroid_px
    top, bottom = _band_rows(bruch, sclera_top, 4 * soft, height)
    if bottom > top:
        band = rows[top:bottom, None]
        shape = (bottom - top, grid.width)
        fine = gaussian_filter(rng.standard_normal(shape, dtype=f32), (1.2 * size_scale + 0.4, 3.0 * size_scale + 0.5))
        coarse = gaussian_filter(rng.standard_normal(shape, dtype=f32), (2.5 * size_scale + 0.5, 8 * size_scale + 0.8))
        fine /= fine.std() + 1e-6
        coarse /= coarse.std() + 1e-6
        depth = np.clip((band - bruch[None, :]) / choroid_px[None, :], 0, 1)
        texture = 0.22 * np.tanh(1.5 * ((1 - depth) * fine + depth * coarse)) - 0.18 * depth
        inside = expit((band - bruch[None, :]) / soft) * expit((sclera_top[None, :] - band) / (2 * soft))
        refl[top:bottom] += texture * inside

    top = max(0, int(bruch.min()))
    refl[top:] -= rng.uniform(2.0, 4.0) * np.clip(rows[top:, None] - bruch[None, :], 0, None) / height


def _gap_cover(grid: _Grid, upper: np.ndarray, lower: np.ndarray, gap: np.ndarray) -> tuple[slice, np.ndarray]:
    """Coverage of the space between the rows ``upper`` and ``lower`` (W,) in the columns where ``gap`` > 0.

    Returns:
        the rows it spans and its float32 coverage there, (rows, W).
    """
    top, bottom = _band_rows(upper, lower, 2, grid.height)
    band = grid.rows[top:bottom, None]
    inside = np.minimum(band - upper[None, :], lower[None, :] - band)
    return slice(top, bottom), np.clip(inside / _EDGE + 0.5, 0, 1) * (gap[None, :] > 0)


def _paint_detachment(
    rng: np.random.Generator, grid: _Grid, layers: _Layers, ped: _Detachment, fluid: _FluidMaps
) -> None:
    """In place: the detachment fills the space between the lifted RPE and Bruch's membrane, evenly when serous,
    unevenly (a smooth random texture) when fibrovascular."""
    rows, cover = _gap_cover(grid, layers.rpe_bottom, layers.bruch, ped.height)
    value = np.full(cover.shape, ped.value, np.float32)
    if ped.fibrovascular:
        size_scale = grid.size_scale
        texture = gaussian_filter(rng.standard_normal(value.shape, dtype=np.float32),
                                  (0.8 * size_scale + 0.4, 2.0 * size_scale + 0.5))  # fmt: skip
        value = np.clip(value + 0.08 * texture / (texture.std() + 1e-6), 0, None)
    fluid.add((rows, slice(None)), cover, value, "PED")


def _paint_fluid(
    rng: np.random.Generator,
    grid: _Grid,
    layers: _Layers,
    thickness: Mapping[str, np.ndarray],
    srf: np.ndarray,
    srf_value: np.float32,
    cysts: Sequence[_Cyst],
    ped: _Detachment | None,
    refl: np.ndarray,
    difficulty: float = 1.0,
) -> tuple[np.ndarray, _FluidMaps]:
    """Paint the fluid into the reflectivity map through anti-aliased coverage maps, from the deepest up.

    The detachment ``ped`` (if any) fills the space between the lifted RPE and Bruch's membrane; the subretinal
    dome ``srf`` (if any of it is > 0) fills the gap between the lifted photoreceptor tips and the RPE; each cyst,
    placed at a random depth of its host layer, is a wobbly ellipse kept inside the INL..ONL band (the OPL and the
    ELM bound cysts in real scans too), with a slightly hyperreflective wall (added to ``refl`` in place).

    Returns:
        the new (H, W) reflectivity and the fluid's maps (coverage, reflectivity, type); the mask is
        coverage >= 0.5.
    """
    rows, cols, height, width = grid.rows, grid.cols, grid.height, grid.width
    boundary = layers.boundary
    fluid = _FluidMaps.empty(height, width)
    if ped is not None:
        _paint_detachment(rng, grid, layers, ped, fluid)
    if srf.any():
        band, cover = _gap_cover(grid, boundary["rpe"] - srf, boundary["rpe"], srf)
        fluid.add((band, slice(None)), cover, srf_value, "SRF")
    cyst_level = _fluid_reflectivity(rng.uniform(0.02, 0.09), difficulty)
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
        box_rows = rows[r0:r1, None]
        allowed = (box_rows > boundary["inl"][None, c0:c1]) & (box_rows < boundary["myoid"][None, c0:c1])
        cover = np.clip((1 - dist) * min(rx, ry) / _EDGE + 0.5, 0, 1) * allowed
        refl[r0:r1, c0:c1] += wall * _gauss((dist - 1) * min(rx, ry), 1.0) * (dist > 1)
        fluid.add((slice(r0, r1), slice(c0, c1)), cover, cyst_level * rng.uniform(0.7, 1.3), "IRF")
    return refl * (1 - fluid.cover) + fluid.value * fluid.cover, fluid


def _hyperreflective_foci(
    rng: np.random.Generator, grid: _Grid, layers: _Layers, refl: np.ndarray, fluid_cover: np.ndarray
) -> None:
    """In place: up to nine bright dots (lipid, activated microglia) between the IPL and the ELM, as in
    oedematous retina, never inside the fluid."""
    rows, cols, height, width = grid.rows, grid.cols, grid.height, grid.width
    boundary = layers.boundary
    for _ in range(int(rng.integers(0, 10))):
        column = int(rng.integers(0, width))
        fy = rng.uniform(boundary["ipl"][column], boundary["myoid"][column])
        fr = max(0.6, 0.004 * height * rng.uniform(0.7, 1.5))
        r0, r1 = max(0, int(fy - 3 * fr)), min(height, int(fy + 3 * fr) + 2)
        c0, c1 = max(0, int(column - 3 * fr)), min(width, int(column + 3 * fr) + 2)
        blob = _gauss(np.hypot(rows[r0:r1, None] - fy, cols[None, c0:c1] - column), fr)
        refl[r0:r1, c0:c1] += rng.uniform(0.25, 0.45) * blob * (1 - fluid_cover[r0:r1, c0:c1])


def _gain_and_vessels(
    rng: np.random.Generator, grid: _Grid, macula: _Macula, layers: _Layers, refl: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """The (H, W) float32 gain of the scanner (depth roll-off, lateral vignetting) with the shadows that the
    superficial retinal vessels cast below them; the vessels themselves, small bright dots in the NFL/GCL outside
    the foveal avascular zone, are added to ``refl`` in place.

    Returns:
        the gain and the vessels' columns.
    """
    rows, cols, xn, soft = grid.rows, grid.cols, grid.xn, grid.soft
    height, width = grid.height, grid.width
    thickness = macula.thickness
    gain = np.exp(-rng.uniform(0.0, 0.9) * rows / height)[:, None] * np.exp(
        -rng.uniform(0.0, 0.6) * ((xn - rng.uniform(0.35, 0.65)) / 0.5) ** 2
    )[None, :]
    gain = gain.astype(np.float32)
    vessel_cols = []
    for _ in range(int(rng.integers(2, 8))):
        vx = rng.uniform(0.03, 0.97) * width
        if abs(vx - macula.fovea) < 1.8 * macula.pit_sigma:  # the foveal avascular zone
            continue
        column = int(vx)
        vy = float(layers.ilm[column] + thickness["nfl"][column] + 0.4 * thickness["gcl"][column])
        vrx = max(0.7, width * rng.uniform(0.004, 0.011))
        vry = max(0.7, height * rng.uniform(0.005, 0.012))
        c0, c1 = max(0, int(vx - 4 * vrx)), min(width, int(vx + 4 * vrx) + 2)
        r0, r1 = max(0, int(vy - 4 * vry)), min(height, int(vy + 4 * vry) + 2)
        lateral = _gauss(cols[c0:c1] - vx, vrx)
        refl[r0:r1, c0:c1] += rng.uniform(0.1, 0.3) * lateral[None, :] * _gauss(rows[r0:r1, None] - vy, vry)
        below = expit((rows[r0:, None] - vy - vry) / soft)
        gain[r0:, c0:c1] *= 1 - rng.uniform(0.5, 0.85) * lateral[None, :] * below
        vessel_cols.append(float(vx))
    return gain, vessel_cols


def _form_image(
    rng: np.random.Generator, grid: _Grid, refl: np.ndarray, gain: np.ndarray, difficulty: float = 1.0
) -> np.ndarray:
    """SD-OCT image formation: linear intensity ``exp(c * refl)`` times speckle (a log-gamma field correlated over
    about a pixel, with the variance of ``log Gamma(looks)``, i.e. trigamma(looks), weakened at small sizes) and the
    gain, plus an exponential noise floor; then log compression and a random display mapping (brightness,
    contrast, gamma) to (H, W) uint8."""
    f32, size_scale, height, width = np.float32, grid.size_scale, grid.height, grid.width
    looks = rng.uniform(1.5, 8.0) / difficulty  # B-scan averaging (ART) reduces speckle; fewer looks when harder
    grain = (0.4 + 0.6 * size_scale, 0.5 + 1.1 * size_scale)
    gamma = rng.standard_gamma(looks, size=(height, width), dtype=f32) / looks
    log_speckle = gaussian_filter(np.log(gamma + 1e-6), grain)
    # a downsized scan averages many grains: weaker speckle at small sizes, as when resizing a real scan
    target_std = np.sqrt(polygamma(1, looks)) * min(1.0, size_scale) ** 0.35
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
    return np.rint(image).astype(np.uint8)


def render_bscan(
    rng: np.random.Generator,
    image_size: Sequence[int] = (512, 512),
    fluid: str | bool | None = None,
    fluid_fraction: float = DEFAULT_FLUID_FRACTION,
    fluid_type_weights: Mapping[str, float] | None = None,
    return_info: bool = False,
    with_fluid: bool | None = None,
    difficulty: float = 1.0,
    typed: bool = False,
) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, dict]:
    """Render one synthetic macular SD-OCT B-scan and its fluid mask.

    The stages, each drawing from ``rng`` in turn: the fluid type, the layer thicknesses around the fovea, the
    cysts (which swell their layer), the subretinal dome and the pigment epithelial detachment, the placed stack of
    layer boundaries, the tissue reflectivity, the choroid's texture, the fluid painted in (whose coverage gives the
    mask), hyperreflective foci, the scanner gain with vessel shadows, and the image formation (speckle, noise
    floor, display mapping). A stage for a fluid the scan lacks draws nothing.

    Args:
        rng: random generator (one per image for reproducibility).
        image_size: ``(H, W)``, rows first; each side >= 16. Features scale with the size.
        fluid: a :class:`FluidType` value: ``"none"``, ``"intraretinal"`` (cysts), ``"subretinal"`` (a dome of
            subretinal fluid), ``"ped"`` (a pigment epithelial detachment), or several together: ``"both"``
            (intraretinal and subretinal), ``"intraretinal+ped"``, ``"subretinal+ped"``, ``"all"`` (the three);
            ``True`` draws the type from ``fluid_type_weights``, ``False`` means ``"none"``; ``None`` draws it all:
            fluid with probability ``fluid_fraction``, its type from ``fluid_type_weights``.
        fluid_fraction: probability of fluid when ``fluid`` is ``None``, in [0, 1].
        fluid_type_weights: weights of the fluid types (any of the values above but ``"none"``) when ``fluid`` is
            ``None`` or ``True``; default :data:`DEFAULT_TYPED_WEIGHTS` when ``typed``, else
            :data:`DEFAULT_FLUID_TYPE_WEIGHTS` (no PED).
        return_info: also return a dict describing the scan.
        with_fluid: keyword form of a boolean ``fluid`` (``True``: some fluid of a random type, ``False``: none);
            give ``fluid`` or ``with_fluid``, not both.
        difficulty: > 0; 1 (default) draws the scans described above, byte for byte. Above 1 the fluid is harder
            to see and to outline: its reflectivity is ``1 - 1 / difficulty`` of the way to the ONL's (half-way at
            2); the cysts beyond the first are a Poisson count of mean divided by ``difficulty``, and their radii
            are divided by it (at least 1.3 px); the speckle has ``difficulty`` times fewer looks (stronger). Below
            1, the reverse. The number of draws depends on it, so the same seed gives another retina at another
            difficulty, not the same scan made harder. The detachment's contents move toward the ONL's reflectivity
            too.
        typed: ``False`` (default): a binary mask, 1 on any fluid; ``True``: the type of fluid per pixel (RETOUCH's
            values: 1 IRF, 2 SRF, 3 PED), on the same pixels. It changes the default ``fluid_type_weights``, not the
            scan drawn for a given type.

    Returns:
        ``(image, mask)`` or ``(image, mask, info)``: ``image`` (H, W) uint8 grayscale B-scan; ``mask`` (H, W) uint8
        in {0, 1}, 1 on fluid, or with ``typed`` in {0, 1, 2, 3}; ``info`` with ``fluid`` (the type),
        ``fluid_pixels``, ``type_pixels`` (``{"IRF": n, "SRF": n, "PED": n}``, the pixels of each type, typed mask or
        not), ``cysts`` (number of intraretinal cysts), ``subretinal`` (bool), ``ped`` (``"serous"``,
        ``"fibrovascular"`` or ``None``), ``fovea_col``, ``pit_depth`` (fraction of the inner layers missing at the
        fovea), ``vessel_cols``, and the float row of four boundaries per column (W,): ``ilm`` (top of the retina),
        ``rpe_top``, ``rpe_bottom`` and ``bruch`` (Bruch's membrane; the RPE's bottom but under a detachment).
        Fluid always lies strictly between ``ilm`` and ``bruch``, and a scan with fluid has at least one fluid pixel.

    Raises:
        ValueError: on a bad ``image_size``, ``fluid``, ``fluid_fraction`` or ``fluid_type_weights``, or when both
            ``fluid`` and ``with_fluid`` are given, or a ``difficulty`` that is not positive, or a ``typed`` that is
            not a boolean.
    """
    height, width = _check_size(image_size)
    difficulty = check_difficulty(difficulty)
    if not 0.0 <= float(fluid_fraction) <= 1.0:
        raise ValueError(f"fluid_fraction must be in [0, 1], got {fluid_fraction}.")
    typed = _check_typed(typed, "typed")
    type_weights = _check_type_weights(fluid_type_weights, typed)
    if with_fluid is not None:
        if fluid is not None:
            raise ValueError(f"give fluid or with_fluid, not both; got fluid={fluid!r}, with_fluid={with_fluid!r}.")
        fluid = bool(with_fluid)
    fluid_type = _resolve_fluid(rng, fluid, fluid_fraction, type_weights)
    types = _TYPES_OF[fluid_type]
    has_cysts, has_srf, has_ped = "IRF" in types, "SRF" in types, "PED" in types

    # the stages draw from rng in this order: changing it changes every scan of a seed
    grid = _Grid.of(height, width)
    macula = _macula(rng, grid)
    cysts = _intraretinal_cysts(rng, grid, macula, difficulty) if has_cysts else []
    srf = _subretinal_dome(rng, grid, macula.fovea) if has_srf else np.zeros(width, np.float32)
    ped = _pigment_epithelial_detachment(rng, grid, macula.fovea, difficulty) if has_ped else None
    lift = np.zeros(width, np.float32) if ped is None else ped.height
    layers = _place_layers(rng, grid, macula.thickness, srf, lift)
    refl, srf_value = _reflectivity(rng, grid, layers, macula.thickness, srf, has_srf, ped, difficulty)
    _choroid_texture(rng, grid, layers, refl)
    refl, fluid = _paint_fluid(rng, grid, layers, macula.thickness, srf, srf_value, cysts, ped, refl, difficulty)
    on_fluid = fluid.cover >= 0.5
    labels = np.where(on_fluid, fluid.kind, 0).astype(np.uint8)
    mask = labels if typed else on_fluid.astype(np.uint8)
    if has_cysts:
        _hyperreflective_foci(rng, grid, layers, refl, fluid.cover)
    gain, vessel_cols = _gain_and_vessels(rng, grid, macula, layers, refl)
    image = _form_image(rng, grid, refl, gain, difficulty)

    if not return_info:
        return image, mask
    info = {
        "fluid": fluid_type,
        "fluid_pixels": int(on_fluid.sum()),
        "type_pixels": {name: int((labels == value).sum()) for name, value in _MASK_VALUE.items()},
        "cysts": len(cysts),
        "subretinal": bool(has_srf),
        "ped": None if ped is None else ("fibrovascular" if ped.fibrovascular else "serous"),
        "fovea_col": float(macula.fovea),
        "pit_depth": float(macula.pit_depth),
        "vessel_cols": vessel_cols,
        "ilm": layers.ilm.astype(np.float64),
        "rpe_top": layers.boundary["rpe"].astype(np.float64),
        "rpe_bottom": layers.rpe_bottom.astype(np.float64),
        "bruch": layers.bruch.astype(np.float64),
    }
    return image, mask, info


def synthesize_oct_dataset(
    output_dir: str | Path,
    count: int,
    seed: int = 0,
    image_size: Sequence[int] = (512, 512),
    fluid_fraction: float = DEFAULT_FLUID_FRACTION,
    splits: Sequence[float] = (0.7, 0.1, 0.2),
    fluid_type_weights: Mapping[str, float] | None = None,
    difficulty: float = 1.0,
    typed_masks: bool = False,
) -> Path:
    """Write ``count`` synthetic B-scans with fluid masks and a decathlon-style datalist.

    Files: ``output_dir/images/oct_00000.png`` ... (grayscale), ``output_dir/masks/oct_00000.png`` ... (same size,
    overlaying the image: binary, values {0, 255}, or with ``typed_masks`` the fluid type per pixel, RETOUCH's
    values 0 background, 1 IRF, 2 SRF, 3 PED), ``output_dir/datalist.json`` (``training``, ``validation``,
    ``testing`` lists of ``{"image": "images/....png", "label": "masks/....png", "group": "oct_....."}``, split
    stratified by fluid / no fluid; ``group`` is the scan's own id, since every B-scan is drawn independently, not
    from a shared eye or volume: real data would name the volume or patient there, see
    :func:`~custom_components.core.splits.stratified_group_kfold`) and ``output_dir/synthesis.json`` (parameters,
    ``typed_masks`` and the mask values, the number of scans per fluid type drawn and per type shown, and per image
    the fluid type drawn, the fluid pixels, the types shown (``types``: those with pixels) and the pixels of each
    (``type_pixels``; recorded for binary masks too)). Every file is written atomically, ``datalist.json`` last
    and only once the data set is complete (:func:`~custom_components.core.synthetic.finish_synthesis`).

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
        fluid_type_weights: mix of the fluid types (:class:`FluidType` values but ``"none"``) among the fluid
            scans; default :data:`DEFAULT_TYPED_WEIGHTS` with ``typed_masks``, else :data:`DEFAULT_FLUID_TYPE_WEIGHTS`
            (no PED). PED can be drawn into binary masks too, by naming it here.
        difficulty: how hard the fluid is to see, > 0 (default 1); see :func:`render_bscan`.
        typed_masks: ``False`` (default): binary masks, as the paper's protocol; ``True``: masks of fluid types.
            With the default arguments the data set is the one the generator wrote before PED and typed masks
            existed, byte for byte (but for ``synthesis.json``, which records more).

    Returns:
        the path of ``datalist.json``.

    Raises:
        ValueError: on ``count < 1``, bad splits, ``fluid_fraction`` outside [0, 1], bad fluid type weights, a
            bad ``image_size``, a ``difficulty`` that is not positive or a ``typed_masks`` that is not a boolean.
    """
    if int(count) != count or count < 1:
        raise ValueError(f"count must be an integer >= 1, got {count}.")
    count = int(count)
    if len(splits) != 3 or abs(sum(splits) - 1) > 1e-6 or min(splits) < 0:
        raise ValueError(f"splits must be three fractions >= 0 summing to 1, got {splits}.")
    if not 0.0 <= float(fluid_fraction) <= 1.0:
        raise ValueError(f"fluid_fraction must be in [0, 1], got {fluid_fraction}.")
    height, width = _check_size(image_size)
    typed_masks = _check_typed(typed_masks, "typed_masks")
    type_weights = _check_type_weights(fluid_type_weights, typed_masks)
    difficulty = check_difficulty(difficulty)
    # a typed mask is written as it is (values 0-3), a binary one as 0/255 so that it can be seen
    mask_scale = np.uint8(1 if typed_masks else 255)

    # exact number of fluid scans, shuffled; then the type of each from the weights
    plan_rng = np.random.default_rng([seed, 0])
    n_fluid = int(round(count * fluid_fraction))
    if count >= 2 and 0 < fluid_fraction < 1:
        n_fluid = min(max(n_fluid, 1), count - 1)
    has_fluid = [True] * n_fluid + [False] * (count - n_fluid)
    plan_rng.shuffle(has_fluid)
    fluid_types = [_draw_fluid_type(plan_rng, type_weights) if f else FluidType.NONE.value for f in has_fluid]
    assignment = assign_sections(has_fluid, splits, np.random.default_rng([seed, 1]), order=(True, False))

    out = Path(output_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    start_synthesis(out)
    datalist: dict[str, list[dict]] = {name: [] for name in SECTIONS}
    details = []
    step = max(1, count // 10)
    for index, (fluid, split) in enumerate(zip(fluid_types, assignment)):
        image, mask, info = render_bscan(
            np.random.default_rng([seed, 2, index]), (height, width), fluid=fluid, return_info=True,
            difficulty=difficulty, typed=typed_masks,
        )
        image_name, mask_name = f"images/oct_{index:05d}.png", f"masks/oct_{index:05d}.png"
        save_atomic(out / image_name, partial(Image.fromarray(image, mode="L").save, format="PNG"))
        save_atomic(out / mask_name, partial(Image.fromarray(mask * mask_scale, mode="L").save, format="PNG"))
        # every B-scan is drawn on its own (its own generator, retina and fovea), not as a slice of a volume, so
        # its group, which keeps related scans in one fold of a cross-validation, is the scan itself
        datalist[split].append({"image": image_name, "label": mask_name, "group": f"oct_{index:05d}"})
        details.append(
            {
                "image": image_name,
                "label": mask_name,
                "split": split,
                "fluid": info["fluid"],
                "fluid_pixels": info["fluid_pixels"],
                "types": [name for name, pixels in info["type_pixels"].items() if pixels],
                "type_pixels": info["type_pixels"],
                "cysts": info["cysts"],
                "subretinal": info["subretinal"],
                "ped": info["ped"],
                "fovea_col": round(info["fovea_col"], 2),
            }
        )
        if (index + 1) % step == 0 or index + 1 == count:
            logger.info("synthetic OCT B-scans: %d/%d", index + 1, count)

    summary = {
        "generator": "custom_components.oct.synthetic",
        "seed": seed,
        "count": count,
        "image_size": [height, width],
        "fluid_fraction": fluid_fraction,
        "fluid_type_weights": type_weights,
        "difficulty": difficulty,
        "typed_masks": typed_masks,
        "mask_values": dict(_MASK_VALUE) if typed_masks else {"fluid": int(mask_scale)},
        "splits": list(splits),
        "fluid_counts": {t.value: fluid_types.count(t.value) for t in FluidType},
        "type_counts": {name: sum(name in d["types"] for d in details) for name in FLUID_TYPES},
        "split_counts": {k: len(v) for k, v in datalist.items()},
        "images": details,
    }
    return finish_synthesis(out, datalist, summary)
