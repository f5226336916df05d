#!/usr/bin/env python
"""Fluid by type against the paper's one fluid class: the same synthetic B-scans, the same network and settings.

Runs the bundle's own commands (``python -m monai.bundle run``) on synthetic B-scans whose masks hold the fluid
types (RETOUCH's values: 1 IRF, 2 SRF, 3 PED; ``synthesize_oct_dataset(typed_masks=True)``):

1. ``three types``: ``train.json`` at its default ``fluid_classes: auto``, which reads the typed masks and trains one
   output channel per type;
2. ``one fluid class``: the same with ``fluid_classes ["fluid"]``, the paper's protocol, trained on the union of
   the types;

then ``evaluate.json`` of each on the test split: RETOUCH's two measures per type (Dice pooled over the test set
and the mean absolute difference of fluid pixels per B-scan) for the typed model, the pooled Dice of both (for the
typed model a pixel counts only with its type right, so its pooled Dice is the stricter of the two). Also a figure
of test B-scans beside their true and predicted types.

A run whose ``eval/metrics.json`` exists in ``--workdir`` is reused (delete its folder to run it again).

Writes ``fluid_types.json`` / ``.md`` / ``.png`` into ``--output-dir`` (default: the bundle's ``docs/results``).

Usage::

    python scripts/experiments/oct_fluid_types.py      # 44 min on the 2-core development CPU, shared with other runs
    python scripts/experiments/oct_fluid_types.py --epochs 1 --count 40 --output-dir /tmp/types   # a quick check
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_fluid_seg"
#: run name -> the fluid_classes setting it trains with
RUNS = {"three types": "auto", "one fluid class": '["fluid"]'}
#: what the report keeps of each evaluation, beside the per-type measures
KEPT = ("dice", "jaccard", "dice_fluid_scans", "false_fluid_rate", "noisy_dice", "num_scans", "num_fluid_scans")
#: colours of the figure's types (IRF, SRF, PED), named in its legend; not the bundle's overlay colours
#: (custom_components.oct.overlay.FLUID_TYPE_COLOURS)
TYPE_COLOURS = ((1.0, 0.53, 0.0), (0.0, 0.75, 1.0), (0.85, 0.2, 0.85))


def _train_and_evaluate(root: Path, overrides: dict) -> dict:
    """Train and evaluate one run, or reuse a finished one; its metrics and training time."""
    done = root / "run.json"
    if not done.is_file():
        print(f"[{root.name}] training and evaluating ...", flush=True)
        train_s, metrics = bundle_runs.train_and_evaluate(BUNDLE, {**overrides, "bundle_root": str(root)}, root)
        from custom_components.core.atomic import write_json_atomic

        write_json_atomic({"train_s": round(train_s, 1), "metrics": metrics}, done)
    return json.loads(done.read_text())


def _figure(roots: dict[str, Path], datalist: Path, path: Path, count: int) -> None:
    """Test B-scans with fluid: the image, the true types, and each run's prediction, one row per B-scan."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch
    from matplotlib.patches import Patch
    from monai.bundle import ConfigParser
    from PIL import Image

    from custom_components.core.datalist import load_datalist
    from custom_components.oct.fluid_types import FLUID_TYPES, label_map

    testing = [e for e in load_datalist(datalist, "testing") if np.asarray(Image.open(e["label"])).any()][:count]
    predictions = {}
    for name, root in roots.items():
        parser = ConfigParser()
        parser.read_config(str(BUNDLE / "configs" / "inference.json"))
        parser.update({"bundle_root": str(root), "device": "$torch.device('cpu')"})
        network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
        state = torch.load(root / "models" / "model.pt", map_location="cpu")
        network.load_state_dict(state.get("model", state))  # a lone saved object is stored without its key
        transform, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
        network.eval()
        maps = []
        with torch.no_grad():
            for entry in testing:
                image = transform({"image": entry["image"]})["image"]
                pred = inferer(image[None], network)[0]
                maps.append(label_map(post({"pred": pred, "image": image})["pred"]))
        predictions[name] = maps

    def coloured(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        rgb = np.repeat(image[..., None] / 255.0, 3, axis=2)
        for value, colour in enumerate(TYPE_COLOURS, start=1):
            rgb[labels == value] = 0.45 * rgb[labels == value] + 0.55 * np.asarray(colour)
        return rgb

    columns = ["B-scan", "true types", *(f"{name}: prediction" for name in roots)]
    fig, axes = plt.subplots(len(testing), len(columns), figsize=(2.4 * len(columns), 2.4 * len(testing)))
    axes = np.atleast_2d(axes)
    for row, entry in enumerate(testing):
        image = np.asarray(Image.open(entry["image"]).convert("L"))
        truth = np.asarray(Image.open(entry["label"]))
        panels = [np.repeat(image[..., None] / 255.0, 3, axis=2), coloured(image, truth)]
        panels += [coloured(image, predictions[name][row]) for name in roots]
        for col, panel in enumerate(panels):
            axes[row, col].imshow(panel)
            axes[row, col].set_axis_off()
            if row == 0:
                axes[row, col].set_title(columns[col], fontsize=8)
    legend = [Patch(color=c, label=t) for t, c in zip(FLUID_TYPES, TYPE_COLOURS)]
    fig.legend(handles=legend, loc="lower center", ncol=3, fontsize=8, title="one fluid class: drawn as IRF's colour")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(report: dict) -> str:
    """The results file's tables: per type for the typed model, then both runs' pooled scores."""
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    settings, results = report["settings"], report["results"]
    typed = results["three types"]["metrics"]
    lines = [
        "# OCT fluid by type against one fluid class",
        "",
        f"{settings['count']} synthetic B-scans of {settings['image_size']} px with typed masks (seed "
        f"{settings['seed']}), a narrow TransUNet (filters {settings['filters']}) trained {settings['epochs']} "
        f"epochs at learning rate {settings['learning_rate']}, one run per protocol on the same data; "
        f"{report['machine']}; {report['minutes']} min in all.",
        "",
        f"Command: `{report['command']}`",
        "",
        f"| type (test split, {typed['num_scans']} B-scans) | test B-scans with it | pooled Dice | "
        "mean absolute difference, px per B-scan |",
        "| --- | --- | --- | --- |",
    ]
    for fluid in report["fluid_types"]:
        lines.append(
            f"| {fluid} | {typed[f'num_scans_{fluid}']} | {fmt(typed[f'dice_{fluid}'])} | "
            f"{fmt(typed[f'abs_area_difference_{fluid}'])} |"
        )
    lines += [
        "",
        "| protocol | pooled Dice | pooled Dice, noisy (sigma 0.1) | Dice, mean over fluid scans | false fluid rate "
        "| training s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in results.items():
        m = run["metrics"]
        lines.append(
            f"| {name} | {fmt(m['dice'])} | {fmt(m['noisy_dice'])} | {fmt(m['dice_fluid_scans'])} | "
            f"{fmt(m['false_fluid_rate'])} | {run['train_s']:.0f} |"
        )
    lines += [
        "",
        "Three types: a pixel is a true positive only with its type right (the pooled Dice over the types); one "
        "fluid class: any fluid on fluid of any type.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "experiments" / "oct_fluid_types")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--filters", default="[16,32,64,128,256]")
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--figure-scans", type=int, default=4)
    args = parser.parse_args()
    started = time.time()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    from custom_components.core.atomic import write_json_atomic, write_text_atomic
    from custom_components.oct.fluid_types import FLUID_TYPES
    from custom_components.oct.synthetic import synthesize_oct_dataset

    data = work / "data"
    if not (data / "datalist.json").is_file():
        print(f"synthesizing {args.count} B-scans of {args.image_size} px with typed masks ...", flush=True)
        size = (args.image_size, args.image_size)
        synthesize_oct_dataset(data, count=args.count, seed=args.seed, image_size=size, typed_masks=True)
    common = {
        "dataset_dir": str(data), "seed": args.seed, "num_workers": 2, "image_size": args.image_size,
        "filters": args.filters, "learning_rate": args.learning_rate, "max_epochs": args.epochs,
    }  # fmt: skip
    roots = {name: work / bundle_runs.slug(name) for name in RUNS}
    results = {}
    for name, classes in RUNS.items():
        run = _train_and_evaluate(roots[name], {**common, "fluid_classes": classes})
        per_type = {k: v for k, v in run["metrics"].items() if k.rsplit("_", 1)[-1] in FLUID_TYPES}
        results[name] = {"train_s": run["train_s"], "metrics": {**{k: run["metrics"][k] for k in KEPT}, **per_type}}
        print(f"[{name}] pooled Dice {run['metrics']['dice']:.3f}", flush=True)
    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": bundle_runs.machine(),
        "minutes": round((time.time() - started) / 60, 1),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "fluid_types": list(FLUID_TYPES),
        "results": results,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    _figure(roots, data / "datalist.json", args.output_dir / "fluid_types.png", args.figure_scans)
    write_json_atomic(report, args.output_dir / "fluid_types.json")
    write_text_atomic(markdown(report), args.output_dir / "fluid_types.md")
    print(markdown(report))


if __name__ == "__main__":
    main()
