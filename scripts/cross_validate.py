#!/usr/bin/env python
"""K-fold cross-validation of the OCT fluid segmentation bundle (the paper's 5-fold protocol).

The training and validation entries of the datalist are pooled (its ``testing`` list is never touched) and split
into k folds, stratified on whether a B-scan has fluid. For each fold the bundle's own commands run, as a user
would type them:

1. ``train.json`` on the other k-1 folds; the best checkpoint is chosen on a validation split taken from those
   folds (the bundle's ``val_fraction``), so the held-out fold plays no part in training or model selection;
2. ``train.json`` + ``evaluate.json`` on the held-out fold: Dice and Jaccard on clean and on noisy B-scans.

Writes ``OUTPUT/fold_<k>/`` (datalist, model, TensorBoard logs, evaluation with overlays) and
``OUTPUT/cross_validation.json`` / ``.csv`` with per-fold and mean (std) scores.

Usage::

    python scripts/cross_validate.py --folds 5                                  # synthetic default, paper settings
    python scripts/cross_validate.py --dataset-dir /data/oct --max-epochs 50
    python scripts/cross_validate.py --folds 2 --max-epochs 1 --image-size 32 --override filters "[4,8,16,32,64]"
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "oct_fluid_seg"
SCORES = ("dice", "jaccard", "dice_fluid_scans", "jaccard_fluid_scans", "noisy_dice", "noisy_jaccard")


def _bundle(configs: list[str], bundle_root: Path, overrides: dict[str, str]) -> list[str]:
    files = "[" + ",".join(f"'{BUNDLE / 'configs' / c}'" for c in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle_root)]
    cmd += ["--meta_file", str(BUNDLE / "configs" / "metadata.json"), "--logging_file", str(BUNDLE / "configs" / "logging.conf")]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        f.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        f.flush()
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"command failed (exit {result.returncode}), log {log}:\n{tail}")


def _has_fluid(entry: dict) -> bool:
    from custom_components.transforms.io import read_array

    return bool(np.any(read_array(entry["label"])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", type=Path, default=None, help="folder with datalist.json (default: the bundle's synthetic default)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "cross_validation")
    parser.add_argument("--max-epochs", type=int, default=None, help="train#trainer#max_epochs (default: the bundle's)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("ID", "VALUE"), help="any bundle override, repeatable")
    args = parser.parse_args(argv)

    from custom_components.data.datalist import load_datalist, prepare_dataset, stratified_kfold

    overrides = {key: value for key, value in args.override}
    if args.image_size:
        overrides["image_size"] = str(args.image_size)
    if args.max_epochs:
        overrides["max_epochs"] = str(args.max_epochs)
    dataset_dir = args.dataset_dir or BUNDLE / "data" / "synthetic"
    size = int(overrides.get("image_size", 512))
    datalist = prepare_dataset(dataset_dir, "oct", int(overrides.get("synthetic_count", 120)), args.seed, [size, size])
    pool = load_datalist(datalist, "training") + load_datalist(datalist, "validation")
    folds = stratified_kfold(pool, args.folds, args.seed, key=_has_fluid)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.folds}-fold cross-validation on {len(pool)} B-scans of {datalist} (testing list left out); outputs in {out}", flush=True)

    results = []
    start = time.time()
    for k, (train, held_out) in enumerate(folds):
        fold_dir = out / f"fold_{k}"
        fold_dir.mkdir(exist_ok=True)
        # absolute paths, so the fold's datalist can live anywhere; no validation list: the bundle splits one off
        (fold_dir / "datalist.json").write_text(json.dumps({"training": train, "testing": held_out}, indent=1))
        common = {**overrides, "dataset_dir": str(fold_dir), "seed": str(args.seed)}
        print(f"[fold {k + 1}/{args.folds}] training on {len(train)} B-scans ...", flush=True)
        _run(_bundle(["train.json"], fold_dir, common), fold_dir / "train.log")
        print(f"[fold {k + 1}/{args.folds}] evaluating on {len(held_out)} held-out B-scans ...", flush=True)
        common.pop("max_epochs", None)
        _run(_bundle(["train.json", "evaluate.json"], fold_dir, {**common, "output_dir": str(fold_dir / "evaluation")}), fold_dir / "evaluate.log")
        report = json.loads((fold_dir / "evaluation" / "metrics.json").read_text())
        row = {"fold": k, "train": len(train), "held_out": len(held_out), **{s: report.get(s) for s in SCORES}}
        results.append(row)
        print(f"[fold {k + 1}/{args.folds}] Dice {row['dice']:.4f}  Jaccard {row['jaccard']:.4f}  noisy Dice {row['noisy_dice']:.4f}  "
              f"({(time.time() - start) / 60:.1f} min so far)", flush=True)

    def stats(key: str) -> dict:
        values = [r[key] for r in results if r[key] is not None]
        return {"mean": float(np.mean(values)), "std": float(np.std(values))} if values else {"mean": None, "std": None}

    summary = {"folds": args.folds, "seed": args.seed, "datalist": str(datalist), "overrides": overrides, "per_fold": results,
               "mean": {s: stats(s) for s in SCORES}}
    (out / "cross_validation.json").write_text(json.dumps(summary, indent=2))
    with open(out / "cross_validation.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
        writer.writerow({"fold": "mean", **{s: summary["mean"][s]["mean"] for s in SCORES}})
        writer.writerow({"fold": "std", **{s: summary["mean"][s]["std"] for s in SCORES}})
    print("\nscore                mean     std")
    for s in SCORES:
        m = summary["mean"][s]
        if m["mean"] is not None:
            print(f"{s:<20} {m['mean']:.4f}  {m['std']:.4f}")
    print(f"\nWrote {out / 'cross_validation.json'} and {out / 'cross_validation.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
