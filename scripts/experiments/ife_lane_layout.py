#!/usr/bin/env python
"""Raw gels or lane-normalised gels? The IFE bundle trained both ways on the same data with the same seeds, on gels
laid out like real scans and on gels of one clean style; with the calibration and the refer-to-expert operating
point that training fits on the validation split.

The paper trains on the raw image end to end and argues that manual preprocessing hurts on noisy real gels. The
bundle's lane-layout normalisation (``lane_layout``, :class:`~custom_components.ife.lanes.NormaliseLaneLayoutd`)
finds the six lanes in the image itself and resamples them side by side, albumin at the bottom. Two data sets:

- ``real``: the scanner look of the published gels, all options drawn per image (``style="mixed"``: header strip,
  frame, margins, uneven lanes, each on or off) and both orientations (half the gels with albumin at the bottom,
  half at the top); the lane runs use ``lane_orientation auto``.
- ``clean``: one style (the generator's ``classic`` header strip), albumin at the bottom.

Each run is the bundle's own ``train.json`` (which calibrates on the validation split after training) and
``evaluate.json`` on the test split: accuracy, macro F1, FNR, the expected calibration error before and after
temperature scaling, and at the operating point fitted for 0.98 sensitivity to "any monoclonal protein", the
coverage (share of gels decided without a person), the accuracy on those and the false-negative rate.

Writes ``ife_lane_layout_<device>.json`` / ``.md`` into the bundle's ``docs/results`` (``--output-dir``).

Usage::

    python scripts/experiments/ife_lane_layout.py                      # CPU-sized, seeds 42 and 0
    python scripts/experiments/ife_lane_layout.py --seeds 42 0 1 --count 1200 --image-size 224 --max-epochs 40
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ife_multitask"
#: (label, path in evaluate's metrics.json)
METRICS = (
    ("Accuracy", ("accuracy",)),
    ("Macro F1", ("macro_f1",)),
    ("FNR", ("fnr",)),
    ("ECE uncalibrated", ("calibration", "ece_uncalibrated")),
    ("ECE calibrated", ("calibration", "ece_calibrated")),
    ("Coverage @0.98", ("referral", "coverage")),
    ("Acc. decided", ("referral", "accuracy")),
    ("FNR @op", ("referral", "fnr")),
)
DATASETS = ("real", "clean")
LAYOUTS = ("raw", "lanes")


def _value(report: dict, path: tuple[str, ...]) -> float | None:
    value: object = report
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if isinstance(value, dict):
        value = value.get("mean")
    return None if value is None else float(value)


def _write_dataset(folder: Path, kind: str, count: int, seed: int, image_size: tuple[int, int]) -> Path:
    """One data set; ``real`` is two halves of opposite orientation under one datalist (paths relative to it)."""
    from custom_components.core.datalist import DATALIST_NAME
    from custom_components.ife.synthetic import synthesize_ife_dataset
    from custom_components.core.atomic import write_json_atomic

    if (folder / DATALIST_NAME).exists():
        return folder / DATALIST_NAME
    if kind == "clean":
        return synthesize_ife_dataset(folder, count, seed, image_size, orientation="albumin_bottom", style="classic")
    merged: dict[str, list] = {}
    for part, orientation in enumerate(("albumin_bottom", "albumin_top")):
        sub = folder / orientation
        path = synthesize_ife_dataset(sub, count // 2 + part * (count % 2), seed + part, image_size,
                                      orientation=orientation, style="mixed")  # fmt: skip
        for section, entries in json.loads(path.read_text()).items():
            merged.setdefault(section, []).extend(
                dict(entry, image=f"{orientation}/{entry['image']}") for entry in entries
            )
    write_json_atomic(merged, folder / DATALIST_NAME)
    return folder / DATALIST_NAME


def _table(result: dict) -> list[str]:
    header = " | ".join(label for label, _ in METRICS)
    lines = [f"| Data | Layout | Seed | {header} | Training time |", "|---|---|---|" + "---|" * len(METRICS) + "---|"]
    for data in DATASETS:
        for layout in LAYOUTS:
            runs = result["runs"].get(data, {}).get(layout, {})
            for seed, run in runs.items():
                cells = " | ".join("-" if v is None else f"{v:.3f}" for v in run["metrics"].values())
                lines.append(f"| {data} | {layout} | {seed} | {cells} | {run['train_s']:.0f} s |")
            if len(runs) > 1:
                cells = []
                for label, _ in METRICS:
                    values = [r["metrics"][label] for r in runs.values() if r["metrics"][label] is not None]
                    cells.append(f"**{statistics.mean(values):.3f}** +- {statistics.pstdev(values):.3f}" if values else "-")
                seconds = statistics.mean(r["train_s"] for r in runs.values())
                lines.append(f"| {data} | {layout} | mean +- std | {' | '.join(cells)} | {seconds:.0f} s |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0], help="training seeds (data: the first)")
    parser.add_argument("--count", type=int, default=450, help="gels per data set")
    parser.add_argument("--gel-size", type=int, nargs=2, default=[200, 300], help="rows, columns of the drawn gels")
    parser.add_argument("--image-size", type=int, default=128, help="network input size")
    parser.add_argument("--max-epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "experiments" / "ife_lane_layout")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    args = parser.parse_args()

    import torch

    from bundle_runs import train_and_evaluate
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    started = time.time()
    work = args.workdir.resolve()
    device = "gpu" if torch.cuda.is_available() else "cpu"
    data_dirs = {kind: work / f"data_{kind}" for kind in DATASETS}
    for kind, folder in data_dirs.items():  # generated before any run is timed
        _write_dataset(folder, kind, args.count, args.seeds[0], tuple(args.gel_size))
    common = {"image_size": args.image_size, "max_epochs": args.max_epochs, "warmup_epochs": 1,
              "batch_size": args.batch_size, "num_workers": args.num_workers}  # fmt: skip
    result: dict = {
        "bundle": BUNDLE.name, "machine": bundle_runs.machine(), "seeds": args.seeds,
        "sizes": {"gels_per_data_set": args.count, "gel_size": args.gel_size, **common},
        "command": shlex.join([Path(sys.argv[0]).name] + sys.argv[1:]), "runs": {},
    }  # fmt: skip
    for data in DATASETS:
        for layout in LAYOUTS:
            for seed in args.seeds:
                root = work / f"{data}_{layout}_seed{seed}"
                overrides = {**common, "dataset_dir": str(data_dirs[data]), "seed": seed, "bundle_root": str(root),
                             "lane_layout": layout == "lanes",
                             "lane_orientation": "auto" if data == "real" else "albumin_bottom"}  # fmt: skip
                print(f"[{data}, {layout}, seed {seed}] training ...", flush=True)
                train_s, report = train_and_evaluate(BUNDLE, overrides, root)
                metrics = {label: _value(report, path) for label, path in METRICS}
                result["runs"].setdefault(data, {}).setdefault(layout, {})[seed] = {
                    "train_s": round(train_s, 1), "metrics": metrics}
                print(f"[{data}, {layout}, seed {seed}] {metrics} in {train_s:.0f} s", flush=True)
                result["minutes"] = round((time.time() - started) / 60, 1)
                write_json_atomic(result, args.output_dir / f"ife_lane_layout_{device}.json")  # kept if interrupted

    lines = [
        f"# Raw gels against lane-normalised gels ({BUNDLE.name}, {device.upper()})", "",
        f"Machine: {result['machine']}. Data seed {args.seeds[0]}, training seeds {args.seeds}; sizes "
        f"{result['sizes']}. `real`: mixed scanner styles (header, frame, margins, uneven lanes) and both "
        "orientations, lanes found with `lane_orientation auto`; `clean`: one style, albumin at the bottom. "
        "Test split; ECE before and after temperature scaling fitted on validation; coverage, accuracy on the "
        "decided gels and FNR at the operating point fitted on validation for 0.98 sensitivity to any monoclonal "
        f"protein. Command: `python scripts/experiments/{result['command']}` ({result['minutes']} min in all).", "",
        *_table(result),
    ]  # fmt: skip
    write_text_atomic("\n".join(lines) + "\n", args.output_dir / f"ife_lane_layout_{device}.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
