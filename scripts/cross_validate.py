#!/usr/bin/env python
"""K-fold cross-validation of the OCT fluid segmentation bundle (the paper's 5-fold protocol).

The training and validation entries of the datalist are pooled (its ``testing`` list is never touched) and split
into k folds, stratified on whether a B-scan has fluid. For each fold the bundle's own commands run, as a user
would type them, each in its own process (a fold that fails, e.g. out of GPU memory, leaves nothing behind in the
next):

1. ``train.json`` (+ any ``--config`` files) on the other k-1 folds; the best checkpoint is chosen on a validation
   split taken from those folds (the bundle's ``val_fraction``), so the held-out fold plays no part in training or
   model selection;
2. the same configs + ``evaluate.json`` on the held-out fold: Dice and Jaccard on clean and on noisy B-scans.

Writes ``OUTPUT/fold_<k>/`` (datalist, model, TensorBoard logs, logs of both commands, evaluation with overlays)
and ``OUTPUT/cross_validation.json`` / ``.csv`` with per-fold and mean (std) scores; the JSON is rewritten after
every fold, so an interrupted run keeps the folds it finished.

Usage::

    python scripts/cross_validate.py --folds 5                                  # synthetic default, paper settings
    python scripts/cross_validate.py --dataset-dir /data/oct --max-epochs 50
    python scripts/cross_validate.py --config networks/unet.json --output-dir outputs/cv_unet     # Table 1 network
    python scripts/cross_validate.py --override loss_name dice --output-dir outputs/cv_dice       # Tables 3-4 loss
    python scripts/cross_validate.py --folds 2 --max-epochs 1 --image-size 32 --override filters "[4,8,16,32,64]"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO / "bundles" / "oct_fluid_seg"
SCORES = (
    "dice",
    "jaccard",
    "dice_fluid_scans",
    "jaccard_fluid_scans",
    "false_fluid_rate",
    "noisy_dice",
    "noisy_jaccard",
)


def _run(cmd: list[str], log: Path) -> None:
    from custom_components.bundle.commands import run_logged

    run_logged(cmd, log, cwd=REPO)


def _has_fluid(entry: dict) -> bool:
    from custom_components.data.image_files import read_array

    return bool(np.any(read_array(entry["label"])))


def _stats(results: list[dict], key: str) -> dict:
    values = [r[key] for r in results if r.get(key) is not None]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))} if values else {"mean": None, "std": None}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle-root", type=Path, default=DEFAULT_BUNDLE, help="the bundle to cross-validate (holds configs/)"
    )
    parser.add_argument(
        "--dataset-dir", type=Path, default=None,
        help="folder with datalist.json (default: the bundle's synthetic default, BUNDLE/data/synthetic)",
    )  # fmt: skip
    parser.add_argument("--folds", type=int, default=5, help="number of folds, >= 2 (default 5, as the paper)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the fold split and of every run")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "cross_validation")
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE",
        help="extra config merged after train.json, relative to BUNDLE/configs (e.g. networks/unet.json); repeatable",
    )  # fmt: skip
    parser.add_argument("--max-epochs", type=int, default=None, help="training epochs (default: the bundle's)")
    parser.add_argument("--image-size", type=int, default=None, help="image_size (default: the bundle's, 512)")
    parser.add_argument(
        "--override", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
        help="any bundle override, e.g. --override loss_name dice; repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}.")
    bundle = args.bundle_root.resolve()
    for name in ["train.json", "evaluate.json", "metadata.json", *args.config]:
        if not (bundle / "configs" / name).is_file():
            parser.error(f"{bundle / 'configs' / name} not found (check --bundle-root and --config).")
    args.bundle_root = bundle
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the cross-validation; returns the exit status."""
    args = _parse(argv)
    from custom_components.bundle.commands import bundle_run_command
    from custom_components.data import load_datalist, prepare_dataset, stratified_kfold
    from custom_components.utils.atomic import write_csv_atomic, write_json_atomic

    overrides = {key: value for key, value in args.override}
    if args.image_size:
        overrides["image_size"] = str(args.image_size)
    if args.max_epochs:
        overrides["max_epochs"] = str(args.max_epochs)
    dataset_dir = args.dataset_dir or args.bundle_root / "data" / "synthetic"
    size = int(overrides.get("image_size", 512))
    synthetic_count = int(overrides.get("synthetic_count", 120))
    datalist = prepare_dataset(dataset_dir, "oct", synthetic_count, args.seed, [size, size])
    pool = load_datalist(datalist, "training") + load_datalist(datalist, "validation")
    folds = stratified_kfold(pool, args.folds, args.seed, key=_has_fluid)
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = ["train.json", *args.config]
    print(
        f"{args.folds}-fold cross-validation of {args.bundle_root.name} ({' + '.join(configs)}) on {len(pool)} "
        f"B-scans of {datalist} (its testing list left out); outputs in {out}",
        flush=True,
    )

    results: list[dict] = []
    summary: dict = {}
    start = time.time()
    for k, (train, held_out) in enumerate(folds):
        fold_dir = out / f"fold_{k}"
        fold_dir.mkdir(exist_ok=True)
        # absolute paths, so the fold's datalist can live anywhere; no validation list: the bundle splits one off
        write_json_atomic({"training": train, "testing": held_out}, fold_dir / "datalist.json", indent=1)
        common = {**overrides, "dataset_dir": str(fold_dir), "seed": str(args.seed)}
        tag = f"[fold {k + 1}/{args.folds}]"
        print(f"{tag} training on {len(train)} B-scans ...", flush=True)
        train_cmd = bundle_run_command(args.bundle_root, configs, {"bundle_root": fold_dir, **common})
        _run(train_cmd, fold_dir / "train.log")
        print(f"{tag} evaluating on {len(held_out)} held-out B-scans ...", flush=True)
        evaluation = {"bundle_root": fold_dir, **common, "output_dir": str(fold_dir / "evaluation")}
        _run(bundle_run_command(args.bundle_root, [*configs, "evaluate.json"], evaluation), fold_dir / "evaluate.log")
        report = json.loads((fold_dir / "evaluation" / "metrics.json").read_text())
        row = {"fold": k, "train": len(train), "held_out": len(held_out), **{s: report.get(s) for s in SCORES}}
        results.append(row)
        labels = {"dice": "Dice", "jaccard": "Jaccard", "noisy_dice": "noisy Dice"}
        shown = "  ".join(f"{label} {row[s]:.4f}" for s, label in labels.items() if row[s] is not None)
        print(f"{tag} {shown}  ({(time.time() - start) / 60:.1f} min so far)", flush=True)
        summary = {
            "folds": args.folds,
            "folds_done": len(results),
            "seed": args.seed,
            "bundle": str(args.bundle_root),
            "configs": configs,
            "datalist": str(datalist),
            "overrides": overrides,
            "per_fold": results,
            "mean": {s: _stats(results, s) for s in SCORES},
        }
        write_json_atomic(summary, str(out / "cross_validation.json"))

    mean, std = ({s: summary["mean"][s][stat] for s in SCORES} for stat in ("mean", "std"))
    rows = [*results, {"fold": "mean", **mean}, {"fold": "std", **std}]
    write_csv_atomic(out / "cross_validation.csv", list(results[0]), rows)
    print("\nscore                mean     std")
    for s in SCORES:
        m = summary["mean"][s]
        if m["mean"] is not None:
            print(f"{s:<20} {m['mean']:.4f}  {m['std']:.4f}")
    print(f"\nWrote {out / 'cross_validation.json'} and {out / 'cross_validation.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
