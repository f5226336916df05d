#!/usr/bin/env python
"""Resize or native scale? The two OCT geometries compared on B-scans of a non-square native size, thin fluid and
test scans stored at other sizes.

Everything runs through the bundle's own commands (``python -m monai.bundle run``) on synthetic B-scans whose
native size differs from the network's input size, as real exports do (a Spectralis B-scan is 496 x 768 or
496 x 1024, the paper trains at 512 x 512):

1. synthesize ``--count`` B-scans at ``--native-size`` (rows, columns) with fluid masks;
2. train one model per geometry with the same seed and data: ``resize`` (the paper's protocol: every B-scan
   squashed to ``--image-size`` square) and ``native`` (``--image-size`` crops of the native pixels, sliding
   window at inference);
3. evaluate both on the test split as stored, at twice the size, and squashed to a square of the native height,
   the way another device or export would store the same eyes (masks resized by nearest neighbour);
4. evaluate both on ``--srf-count`` further B-scans with subretinal fluid only (a dome a few to a few dozen rows
   tall), split by thickness: scans whose thickest fluid column is at most ``--thin-rows`` native rows against the
   rest; and time inference per B-scan of each geometry;
5. evaluate the resize-trained model with native-scale tiling, which is what the bundle's inference did before
   version 0.3.0 (on a copy whose recipe is edited to say ``native``, since the bundle now refuses the mix).

A model already trained in ``--workdir`` is reused (delete its folder to train it again).

Writes ``geometry.json`` and ``geometry.md`` (tables, machine, command, time taken) into ``--output-dir``
(default: the bundle's ``docs/results``).

Usage::

    python scripts/experiments/oct_geometry.py                       # about 10 minutes on a 2-core CPU
    python scripts/experiments/oct_geometry.py --epochs 2 --count 40  # a quick check
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_fluid_seg"
GEOMETRIES = ("resize", "native")
MIXED = "resize-trained, native tiling (before 0.3.0)"


def _bundle(configs: list[str], overrides: dict, log: Path) -> None:
    from bundle_runs import bundle_run_command, run_logged

    run_logged(bundle_run_command(BUNDLE, configs, overrides), log)


def _resized_copy(data: Path, testing: list[dict], training: list[dict], folder: Path, size) -> Path:
    """The test scans (and masks) resized to ``size`` (rows, columns), with a datalist of their own."""
    from PIL import Image

    from custom_components.core.atomic import save_atomic, write_json_atomic

    entries = []
    for entry in testing:
        names = {}
        for key, resample in (("image", Image.Resampling.BILINEAR), ("label", Image.Resampling.NEAREST)):
            target = folder / key / Path(entry[key]).name
            save_atomic(target, Image.open(data / entry[key]).resize((size[1], size[0]), resample).save)
            names[key] = str(target)
        entries.append(names)
    datalist = folder / "datalist.json"
    write_json_atomic({"training": training, "testing": entries}, datalist, indent=None)
    return datalist


def _thickest_fluid_rows(mask_path: str) -> int:
    """Rows of fluid in the B-scan column that has the most (0 for a scan without fluid)."""
    from PIL import Image

    mask = np.asarray(Image.open(mask_path)) > 0
    return int(mask.sum(axis=0).max()) if mask.any() else 0


def _pooled(rows: list[dict]) -> float | None:
    tp = sum(int(r["true_positive_pixels"]) for r in rows)
    total = sum(int(r["fluid_pixels_true"]) + int(r["fluid_pixels_predicted"]) for r in rows)
    return 2 * tp / total if total else None


def _evaluate_all(root: Path, tag: str, test_sets: dict, common: dict, results: dict, thickness=None, thin_rows=0):
    """Evaluate the model in ``root`` on every test set; the subretinal set is also split by fluid thickness."""
    for name, (label, test_datalist) in test_sets.items():
        out = root / f"eval_{name}"
        evaluation = {**common, "bundle_root": str(root), "datalist_file": str(test_datalist), "output_dir": str(out),
                      "save_overlays": False, "run": ["$@validate#evaluator.run()"]}  # fmt: skip
        _bundle(["train.json", "evaluate.json"], evaluation, out.with_suffix(".log"))
        report = json.loads((out / "metrics.json").read_text())
        results["test"][label] = {k: report[k] for k in ("dice", "jaccard", "dice_fluid_scans", "false_fluid_rate")}
        print(f"[{tag}] {label}: pooled Dice {report['dice']:.3f}, fluid-scan Dice {report['dice_fluid_scans']:.3f}", flush=True)
        if name == "srf" and thickness is not None:
            table = list(csv.DictReader(open(out / "per_scan.csv")))
            thin = [r for r in table if 0 < thickness[r["image"]] <= thin_rows]
            thick = [r for r in table if thickness[r["image"]] > thin_rows]
            results["thin"] = {"scans": len(thin), "pooled_dice": _pooled(thin)}
            results["thick"] = {"scans": len(thick), "pooled_dice": _pooled(thick)}


def _time_inference(bundle_root: Path, images: list[str], repeats: int = 2) -> float:
    """Seconds per B-scan of the bundle's inferer and network (files already decoded and scaled; the weights do not
    change the cost), CPU, after a warm-up."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle_root), "device": "$torch.device('cpu')"})
    network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    transform = parser.get_parsed_content("preprocessing")
    scans = [transform({"image": path})["image"][None] for path in images]
    network.eval()
    with torch.no_grad():
        inferer(scans[0], network)
        start = time.perf_counter()
        for _ in range(repeats):
            for scan in scans:
                inferer(scan, network)
    return (time.perf_counter() - start) / (repeats * len(scans))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "experiments" / "oct_geometry")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    parser.add_argument("--native-size", type=int, nargs=2, default=(192, 288), metavar=("ROWS", "COLUMNS"))
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--count", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--filters", default="[16,32,64,128,256]")
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--srf-count", type=int, default=60)
    parser.add_argument("--thin-rows", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    started = time.time()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)

    from custom_components.oct.synthetic import synthesize_oct_dataset
    from custom_components.core.atomic import save_atomic, write_json_atomic, write_text_atomic

    data = work / "data"
    if not (data / "datalist.json").is_file():
        print(f"synthesizing {args.count} B-scans of {args.native_size[0]} x {args.native_size[1]} ...", flush=True)
        synthesize_oct_dataset(data, count=args.count, seed=args.seed, image_size=tuple(args.native_size))
    srf = work / "srf"
    if not (srf / "datalist.json").is_file():
        synthesize_oct_dataset(
            srf, count=args.srf_count, seed=args.seed + 1, image_size=tuple(args.native_size), fluid_fraction=1.0,
            splits=(0.0, 0.0, 1.0), fluid_type_weights={"subretinal": 1.0},
        )  # fmt: skip
    datalist = json.loads((data / "datalist.json").read_text())
    srf_list = json.loads((srf / "datalist.json").read_text())
    training = [{k: str(data / v) for k, v in e.items()} for e in datalist["training"] + datalist.get("validation", [])]
    rows, columns = args.native_size
    test_sets = {  # short name -> (label, datalist)
        "stored": (f"as stored ({rows} x {columns})", data / "datalist.json"),
        "2x": (f"2x ({2 * rows} x {2 * columns})", _resized_copy(data, datalist["testing"], training, work / "test_2x", (2 * rows, 2 * columns))),
        "square": (f"square ({rows} x {rows})", _resized_copy(data, datalist["testing"], training, work / "test_square", (rows, rows))),
        "srf": (f"subretinal fluid only ({rows} x {columns})", _resized_copy(srf, srf_list["testing"], training, work / "test_srf", (rows, columns))),
    }  # fmt: skip
    thickness = {str(work / "test_srf" / "image" / Path(e["image"]).name): _thickest_fluid_rows(str(srf / e["label"])) for e in srf_list["testing"]}

    common = {"dataset_dir": str(data), "seed": args.seed, "num_workers": 2}
    results: dict = {}
    for geometry in GEOMETRIES:
        root = work / geometry
        root.mkdir(exist_ok=True)
        seconds = root / "train_seconds.txt"
        if not seconds.is_file():
            train = {**common, "bundle_root": str(root), "geometry": geometry, "image_size": args.image_size,
                     "filters": args.filters, "learning_rate": args.learning_rate,
                     "max_epochs": args.epochs}  # fmt: skip
            print(f"[{geometry}] training {args.epochs} epochs at {args.image_size} px ...", flush=True)
            t0 = time.time()
            _bundle(["train.json"], train, root / "train.log")
            write_text_atomic(f"{time.time() - t0:.1f}\n", seconds)  # atomic: its presence means training is done
            results[geometry] = {"trained_in_this_run": True}
        results[geometry] = {"trained_in_this_run": False, **results.get(geometry, {})}
        results[geometry].update(train_s=float(seconds.read_text()), test={})
        _evaluate_all(root, geometry, test_sets, common, results[geometry], thickness, args.thin_rows)
        images = [str(data / e["image"]) for e in datalist["testing"]]
        results[geometry]["seconds_per_bscan"] = round(_time_inference(root, images), 4)

    mixed = work / "resize_as_native"
    trained = work / "resize" / "models" / "model.pt"
    save_atomic(mixed / "models" / "model.pt", lambda tmp: shutil.copyfile(trained, tmp))
    recipe = json.loads((work / "resize" / "models" / "model.recipe.json").read_text())
    recipe["settings"]["geometry"] = "native"
    write_json_atomic(recipe, mixed / "models" / "model.recipe.json")
    results[MIXED] = {"test": {}}
    _evaluate_all(mixed, MIXED, {k: v for k, v in test_sets.items() if k != "srf"}, common, results[MIXED])

    report = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "machine": bundle_runs.machine(),
        "minutes": round((time.time() - started) / 60, 1),
        "settings": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(report, args.output_dir / "geometry.json")
    lines = [
        "# OCT geometry: resize or native scale",
        "",
        f"Synthetic B-scans of {rows} x {columns} px ({args.count}, seed {args.seed}), a narrow TransUNet "
        f"(filters {args.filters}) trained {args.epochs} epochs at {args.image_size} px, one run per geometry; "
        f"{report['machine']}; {report['minutes']} min in all"
        + ("." if all(results[g]["trained_in_this_run"] for g in GEOMETRIES) else " (reusing models trained earlier in the same workdir; their training times are from that run)."),
        "",
        f"Command: `{report['command']}`",
        "",
        "| test scans | geometry | pooled Dice | pooled Jaccard | Dice, fluid scans | false fluid rate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for label, _ in test_sets.values():
        for geometry in (*GEOMETRIES, MIXED):
            if label not in results[geometry]["test"]:
                continue
            r = results[geometry]["test"][label]
            lines.append(f"| {label} | {geometry} | {fmt(r['dice'])} | {fmt(r['jaccard'])} | {fmt(r['dice_fluid_scans'])} | {fmt(r['false_fluid_rate'])} |")
    lines += ["", f"Subretinal-fluid scans by thickness (thickest fluid column; thin: at most {args.thin_rows} native rows), and speed:", "",
              "| geometry | thin fluid: scans, pooled Dice | thicker fluid: scans, pooled Dice | inference s per B-scan | training s |",
              "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for geometry in GEOMETRIES:
        r = results[geometry]
        lines.append(
            f"| {geometry} | {r['thin']['scans']}, {fmt(r['thin']['pooled_dice'])} | {r['thick']['scans']}, "
            f"{fmt(r['thick']['pooled_dice'])} | {r['seconds_per_bscan']:.3f} | {r['train_s']:.0f} |"
        )
    write_text_atomic("\n".join(lines) + "\n", args.output_dir / "geometry.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
