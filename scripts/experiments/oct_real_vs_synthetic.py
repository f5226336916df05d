#!/usr/bin/env python
"""How the synthetic B-scans' layers compare with a real one: depth profiles, layer contrasts and speckle, side by
side.

The real B-scan is the committed Heidelberg Spectralis line scan through a normal fovea
(``tests/data/heidelberg_vol/Willis_B_716_0.vol``, MIT, from ``halirutan/spectralis-raw-data``; read by the bundle's
own reader, which maps the file's linear reflectivity to 8 bits), 496 x 768 px. The synthetic B-scans are drawn at
the same size without fluid (``render_bscan``), ``--count`` of them from ``--seed``.

Every B-scan is measured the same way, column by column, with no layer segmentation from the file (a synthetic
B-scan has none to compare with):

- the retina of a column runs from the ILM, the first row of the smoothed column above ``ILM_FRACTION`` of the
  way from the vitreous to the column's brightest row, to the RPE, that brightest row (the brightest band of a
  macular B-scan); columns where the retina is thinner than ``MIN_RETINA_ROWS`` (the optic disc, blank edges) are
  left out;
- the **depth profile**: each column resampled from the ILM (depth 0) to the RPE (depth 1) and on to depth 1.6
  (the choroid), then averaged over the columns, in units of the column's own RPE brightness (so gain does not
  matter);
- **layer contrasts** read off that profile: the inner retina (depth 0.05 to 0.45), the outer nuclear layer (the
  darkest point between depth 0.5 and 0.9, dark on a real scan without being fluid), the choroid (1.15 to 1.5) and
  the vitreous (the rows above the ILM), each relative to the RPE;
- **speckle**: the coefficient of variation (standard deviation over mean) of the raw pixels in 5 x 5 windows,
  median over the brightest quarter of the windows (the retina and the RPE).

Writes ``real_vs_synthetic.json`` and ``real_vs_synthetic.png`` (the real B-scan, synthetic ones, both profiles)
into ``--output-dir`` (default: the bundle's ``docs/results``).

Usage::

    python scripts/experiments/oct_real_vs_synthetic.py          # seconds
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_fluid_seg"
REAL = REPO / "tests" / "data" / "heidelberg_vol" / "Willis_B_716_0.vol"
#: where the ILM is: this fraction of the way from the vitreous level to the column's brightest row
ILM_FRACTION = 0.35
#: a column's retina must be this many rows thick to count (the optic disc and blank edges are not)
MIN_RETINA_ROWS = 20
#: the depth profile's samples, from the ILM (0) through the RPE (1) into the choroid
DEPTHS = np.linspace(0.0, 1.6, 161)
#: the profile's bands: name -> (first depth, last depth, how the band is read)
BANDS = {"inner retina": (0.05, 0.45, "mean"), "outer nuclear layer": (0.5, 0.9, "min"),
         "choroid": (1.15, 1.5, "mean")}  # fmt: skip


def depth_profile(bscan: np.ndarray) -> tuple[np.ndarray, float, int]:
    """The mean depth profile of a B-scan (relative to each column's RPE), the vitreous level relative to the RPE
    and the number of columns measured.

    Args:
        bscan: (rows, columns) 8-bit B-scan, vitreous at the top.
    """
    from scipy.ndimage import gaussian_filter

    image = bscan.astype(np.float64)
    smooth = gaussian_filter(image, sigma=(2.0, 4.0))
    floor = np.percentile(smooth[: max(4, smooth.shape[0] // 20)], 50)  # the vitreous, top rows
    profiles, vitreous = [], []
    for column in range(smooth.shape[1]):
        values = smooth[:, column]
        rpe = int(values.argmax())
        peak = values[rpe]
        above = np.flatnonzero(values[:rpe] > floor + ILM_FRACTION * (peak - floor))
        if above.size == 0 or rpe - above[0] < MIN_RETINA_ROWS or peak <= floor:
            continue
        ilm = int(above[0])
        rows = ilm + DEPTHS * (rpe - ilm)
        inside = rows < len(values) - 1
        if not inside.all():
            continue
        profiles.append(np.interp(rows, np.arange(len(values)), values) / peak)
        vitreous.append(values[: max(1, ilm - 5)].mean() / peak)
    if not profiles:
        raise ValueError("no column with a retina was found")
    return np.mean(profiles, axis=0), float(np.mean(vitreous)), len(profiles)


def speckle_contrast(bscan: np.ndarray) -> float:
    """Median coefficient of variation of the raw pixels in 5 x 5 windows, over the brightest quarter of the windows
    (the retina and the RPE: the vitreous and the dark depths would measure the noise floor instead)."""
    from numpy.lib.stride_tricks import sliding_window_view

    windows = sliding_window_view(bscan.astype(np.float64), (5, 5))[::5, ::5]
    mean, std = windows.mean(axis=(-1, -2)), windows.std(axis=(-1, -2))
    tissue = mean > np.percentile(mean, 75)
    return float(np.median(std[tissue] / mean[tissue]))


def measures(bscan: np.ndarray) -> dict:
    """Layer contrasts (relative to the RPE), speckle and the profile of one B-scan."""
    profile, vitreous, columns = depth_profile(bscan)
    bands = {}
    for name, (low, high, how) in BANDS.items():
        values = profile[(DEPTHS >= low) & (DEPTHS <= high)]
        bands[name] = float(values.min() if how == "min" else values.mean())
    return {
        "columns_measured": columns,
        "relative_to_rpe": {"vitreous": vitreous, **bands},
        "speckle_contrast": speckle_contrast(bscan),
        "profile": profile,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.time()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from custom_components.core.atomic import write_json_atomic
    from custom_components.oct.synthetic import render_bscan
    from custom_components.oct.volumes import read_oct_volume

    real = np.asarray(read_oct_volume(str(REAL)).data)[:, :, 0]
    synthetic = [
        render_bscan(np.random.default_rng([args.seed, i]), real.shape, fluid="none")[0] for i in range(args.count)
    ]
    real_m = measures(real)
    synth_m = [measures(s) for s in synthetic]
    keys = list(real_m["relative_to_rpe"])
    synthetic_summary = {
        "relative_to_rpe": {
            k: {"mean": float(np.mean([m["relative_to_rpe"][k] for m in synth_m])),
                "std": float(np.std([m["relative_to_rpe"][k] for m in synth_m]))}
            for k in keys
        },
        "speckle_contrast": {"mean": float(np.mean([m["speckle_contrast"] for m in synth_m])),
                             "std": float(np.std([m["speckle_contrast"] for m in synth_m]))},
    }  # fmt: skip
    synth_profile = np.mean([m["profile"] for m in synth_m], axis=0)
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": bundle_runs.machine(),
        "seconds": round(time.time() - started, 1),
        "real": {
            "file": str(REAL.relative_to(REPO)),
            "source": "halirutan/spectralis-raw-data test-data (MIT), Heidelberg Spectralis line scan through a "
            "normal fovea, 496 x 768",
            "columns_measured": real_m["columns_measured"],
            "relative_to_rpe": real_m["relative_to_rpe"],
            "speckle_contrast": real_m["speckle_contrast"],
        },
        "synthetic": {"count": args.count, "seed": args.seed, "size": list(real.shape), **synthetic_summary},
        "profile_correlation": float(np.corrcoef(real_m["profile"], synth_profile)[0, 1]),
        "profile_depths": DEPTHS.round(3).tolist(),
        "real_profile": real_m["profile"].round(4).tolist(),
        "synthetic_profile": synth_profile.round(4).tolist(),
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, args.output_dir / "real_vs_synthetic.json")

    fig = plt.figure(figsize=(13, 7.5))
    grid = fig.add_gridspec(2, 3)
    panels = [(real, "real: Spectralis line scan (MIT fixture)"), (synthetic[0], "synthetic, no fluid"),
              (synthetic[1], "synthetic, no fluid")]  # fmt: skip
    for i, (image, title) in enumerate(panels):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[1, :2])
    ax.plot(DEPTHS, real_m["profile"], label="real", color="k")
    ax.plot(DEPTHS, synth_profile, label=f"synthetic (mean of {args.count})", color="tab:orange")
    for name, (low, high, _) in BANDS.items():
        ax.axvspan(low, high, alpha=0.08)
        ax.text((low + high) / 2, 1.02, name, ha="center", fontsize=7)
    ax.set_xlabel("depth: 0 ILM, 1 RPE (each column's own)")
    ax.set_ylabel("intensity / RPE")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[1, 2])
    labels = [*keys, "speckle"]
    real_values = [real_m["relative_to_rpe"][k] for k in keys] + [real_m["speckle_contrast"]]
    synth_values = [synthetic_summary["relative_to_rpe"][k]["mean"] for k in keys]
    synth_values.append(synthetic_summary["speckle_contrast"]["mean"])
    x = np.arange(len(labels))
    ax.bar(x - 0.2, real_values, 0.4, label="real", color="k")
    ax.bar(x + 0.2, synth_values, 0.4, label="synthetic", color="tab:orange")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.output_dir / "real_vs_synthetic.png", dpi=90)
    plt.close(fig)
    shown = {k: report[k] for k in ("real", "synthetic", "profile_correlation")}
    print(__import__("json").dumps(shown, indent=1))


if __name__ == "__main__":
    main()
