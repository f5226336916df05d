"""What the active-learning strategies rank images by: pure functions of a model's outputs, no I/O.

IFE (:func:`ife_uncertainty`, :func:`ife_rank_key`): a gel's calibrated 9-class probabilities and the bundle's
call give two measures of how sure the call is:

- ``confidence``: the probability of the call, ``p[call]`` (the default). It is the quantity the refer-to-expert
  rule thresholds (``p[call] < confidence_threshold`` refers for "low confidence", see
  :mod:`custom_components.ife.referral`), and the one the calibration's temperatures are fitted to make honest, so
  the least-confident gel is the one the operating point would refer first. It also sees a call spread over many
  classes (0.3 / 0.25 / 0.25 / 0.2), which a margin calls fairly certain.
- ``margin``: ``p[call]`` minus the largest probability of any other class. It ranks two-way confusions first
  (IgG-kappa against IgG-lambda at 0.49 / 0.47), the gels where one label decides between two near calls. It is
  negative when the paper's rule calls a class that is not the most probable one (the mild call is None, so
  Negative, while one positive class alone is more probable), which is as uncertain as a call gets.

Gels that the refer rule flags (``refer``: low confidence at the operating point, a Negative call that cannot rule
out a monoclonal protein, a band pattern outside the nine classes or not read, lanes not found) come before all
others, then the lower measure first.

OCT (:func:`binary_entropy`, :func:`retina_region`, :func:`bscan_entropies`): the fluid network gives one logit per
pixel and class (one class, fluid, or three, IRF, SRF and PED), each through its own sigmoid; the predictive
entropy of a class ``H(p) = -p log2 p - (1 - p) log2 (1 - p)`` (bits: 0 for a sure pixel, 1 at ``p = 0.5``) is
summed over the classes, averaged over the retina of each B-scan, and a volume is scored by its most uncertain
B-scan. The bundle segments no retina, so the region is found from the network's own input (see
:func:`retina_region`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

__all__ = [
    "IFE_MEASURES",
    "RETINA_SIGMA_FRACTION",
    "RETINA_THRESHOLD",
    "ife_uncertainty",
    "ife_rank_key",
    "binary_entropy",
    "retina_region",
    "bscan_entropies",
    "volume_score",
]

#: the IFE measures, the default first
IFE_MEASURES: tuple[str, ...] = ("confidence", "margin")
#: Gaussian smoothing of a B-scan before it is thresholded, as a fraction of its height (at least 1 pixel): wide
#: enough to merge the speckle and the dark nuclear layers of the retina, narrow enough to keep the vitreous dark
RETINA_SIGMA_FRACTION = 1.0 / 48.0
#: a smoothed pixel is tissue when it reaches this fraction of the way from the smoothed B-scan's minimum to its 99th
#: percentile (relative to the B-scan itself, so the scanner's gain does not matter; the 99th percentile, not the
#: maximum, so a few saturated pixels do not raise it). Chosen on 90 synthetic B-scans (``render_bscan``, 64 x 96
#: to 496 x 512): the region then holds every fluid pixel and every pixel between the ILM and Bruch's membrane;
#: about 5 % of it is vitreous just above the ILM (the smoothing's blur) and a quarter choroid under Bruch's membrane.
#: 0.4 missed fluid under vessel shadows (a column with no tissue over the threshold).
RETINA_THRESHOLD = 0.3


def ife_uncertainty(probabilities: Sequence[float], call: int) -> dict[str, float]:
    """Both IFE measures of one gel (see the module docstring).

    Args:
        probabilities: the 9 class probabilities (calibrated when the checkpoint has a calibration record), in
            :data:`~custom_components.ife.classes.IFE_CLASSES` order.
        call: index of the bundle's call (the paper's rule, which is not always the argmax).

    Returns:
        ``confidence`` (``p[call]``) and ``margin`` (``p[call]`` minus the largest other probability).

    Raises:
        ValueError: when ``probabilities`` is not 9 finite numbers or ``call`` is not an index into them.
    """
    probs = [float(p) for p in probabilities]
    if len(probs) != 9 or not all(math.isfinite(p) for p in probs):
        raise ValueError(f"expected 9 finite class probabilities, got {probabilities!r}.")
    if isinstance(call, bool) or not isinstance(call, int) or not 0 <= call < 9:
        raise ValueError(f"call must be a class index in [0, 9), got {call!r}.")
    others = probs[:call] + probs[call + 1 :]
    return {"confidence": probs[call], "margin": probs[call] - max(others)}


def ife_rank_key(score: Mapping[str, Any], measure: str = "confidence") -> tuple[int, float]:
    """Sort key of a scored gel: the referred gels first, then the least certain (lowest ``measure``) first.

    Args:
        score: a gel's score, holding ``refer`` (bool) and the measure.
        measure: one of :data:`IFE_MEASURES`.

    Raises:
        ValueError: for an unknown measure.
    """
    if measure not in IFE_MEASURES:
        raise ValueError(f"measure must be one of {', '.join(IFE_MEASURES)}, got {measure!r}.")
    return (0 if score.get("refer") else 1, float(score[measure]))


def binary_entropy(probability: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of a Bernoulli prediction, elementwise: 0 at p = 0 or 1, 1 at p = 0.5.

    Args:
        probability: probabilities of a class in [0, 1] (any shape).
    """
    p = probability.double().clamp(0.0, 1.0)
    # xlogy gives 0 log 0 = 0 exactly, so sure pixels add nothing rather than NaN
    return -(torch.special.xlogy(p, p) + torch.special.xlogy(1.0 - p, 1.0 - p)) / math.log(2.0)


def retina_region(bscan: np.ndarray | torch.Tensor) -> np.ndarray:
    """The retina of one B-scan, found simply: the rows between the top and the bottom of the bright tissue.

    The B-scan is smoothed (Gaussian, sigma :data:`RETINA_SIGMA_FRACTION` of its height, at least 1 pixel) and
    thresholded :data:`RETINA_THRESHOLD` of the way from its minimum to its 99th percentile; in each column (A-scan),
    every pixel from the first to the last one over the threshold is retina. Filling the span keeps the dark fluid
    pockets inside the retina, which a plain intensity threshold would cut out: they are the pixels where the fluid
    network is most likely to be unsure. The span also takes the bright choroid under the RPE; that is harmless (a
    trained network is sure there is no fluid there). A column with no tissue (a blank edge) has no retina.

    Args:
        bscan: (H, W) intensities, as the network sees them (the bundle scales each B-scan to [0, 1]).

    Returns:
        (H, W) boolean mask; all False for a B-scan of one value (a blank one, whose prediction the bundle clears).
    """
    image = bscan.detach().cpu().double().numpy() if torch.is_tensor(bscan) else np.asarray(bscan, np.float64)
    if image.ndim != 2:
        raise ValueError(f"retina_region takes one (H, W) B-scan, got shape {list(image.shape)}.")
    smooth = gaussian_filter(image, sigma=max(1.0, image.shape[0] * RETINA_SIGMA_FRACTION))
    low, high = float(smooth.min()), float(np.percentile(smooth, 99))
    if not high > low:
        return np.zeros(image.shape, bool)
    tissue = smooth - low >= RETINA_THRESHOLD * (high - low)
    rows = np.arange(image.shape[0])[:, None]
    has = tissue.any(axis=0)
    first = np.where(has, tissue.argmax(axis=0), image.shape[0])
    last = np.where(has, image.shape[0] - 1 - tissue[::-1].argmax(axis=0), -1)
    return (rows >= first[None]) & (rows <= last[None])


def bscan_entropies(image: torch.Tensor, logits: torch.Tensor) -> list[dict[str, float]]:
    """Mean predictive entropy inside the retina of each B-scan.

    A pixel's entropy is the sum of its classes' binary entropies. The classes have independent sigmoids (the
    bundle's loss is per channel), so the sum is the entropy of the pixel's whole prediction, in bits (0 to C): a
    pixel torn between IRF and SRF (0.5 each) counts two bits, a pixel unsure of one type one bit. The mean over
    the channels would rank a model's images the same way (C is fixed per model) but is not the entropy of
    anything. With one class (the binary model) both are that class's entropy, so binary scores are unchanged.

    Args:
        image: the network input, (1, H, W) for a B-scan or (1, H, W, S) for a volume of S B-scans.
        logits: the network's fluid logits at the input's size, (C, H, W) or (C, H, W, S), one channel per fluid
            class (the bundle's ``BScanInferer`` returns them so).

    Returns:
        per B-scan: ``entropy`` (mean bits over its retina, 0 to C; 0 when it has no retina) and
        ``retina_fraction`` (the share of its pixels in the retina).

    Raises:
        ValueError: when the image is not one channel of (H, W) or (H, W, S), or the logits not channels of its
            shape.
    """
    image_t, logits_t = torch.as_tensor(image), torch.as_tensor(logits)
    if (
        image_t.ndim not in (3, 4)
        or image_t.shape[0] != 1
        or logits_t.ndim != image_t.ndim
        or logits_t.shape[0] < 1
        or tuple(logits_t.shape[1:]) != tuple(image_t.shape[1:])
    ):
        raise ValueError(
            f"expected a (1, H, W) or (1, H, W, S) input and logits of its shape with one channel per class, got "
            f"{list(image_t.shape)} and {list(logits_t.shape)}."
        )
    if image_t.ndim == 3:
        image_t, logits_t = image_t[..., None], logits_t[..., None]
    # summed over the classes, the entropy of the pixel's prediction (see above)
    entropy = binary_entropy(torch.sigmoid(logits_t.detach().float().cpu())).sum(dim=0)
    scores = []
    for s in range(image_t.shape[-1]):
        region = torch.from_numpy(retina_region(image_t[0, ..., s]))
        inside = int(region.sum())
        mean = float(entropy[..., s][region].mean()) if inside else 0.0
        scores.append({"entropy": mean, "retina_fraction": inside / region.numel()})
    return scores


def volume_score(per_bscan: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """The score of an image from its B-scans' scores: its most uncertain B-scan.

    A volume needs a label wherever the network is unsure; averaging would let many easy B-scans hide one hard
    one.

    Args:
        per_bscan: :func:`bscan_entropies` of the image (one entry for a single B-scan).

    Returns:
        ``entropy`` (the highest B-scan mean), ``bscan`` (its index, the first on a tie) and ``bscans`` (how many).

    Raises:
        ValueError: when there is no B-scan.
    """
    if not per_bscan:
        raise ValueError("an image has at least one B-scan.")
    values = [float(s["entropy"]) for s in per_bscan]
    index = int(np.argmax(values))
    return {"entropy": values[index], "bscan": index, "bscans": len(values)}
