#!/usr/bin/env python
"""K-fold cross-validation of a bundle: the OCT fluid segmentation (the paper's 5-fold protocol) or the IFE classifier
(folds of Hu et al., Clinical Chemistry 2023), and for IFE the fold ensemble.

The training and validation entries of the datalist are pooled (its ``testing`` list is never touched) and split
into k folds, stratified on whether a B-scan has fluid (OCT) or on the class (IFE). Entries that carry a ``group``
(the B-scans of one eye or volume, the gels of one patient) are kept together: a group is never on both sides of a
fold, nor of the validation split inside it (``custom_components.core.splits.stratified_group_kfold``). For each
fold the bundle's own commands run, as a user would type them, each in its own process (a fold that fails, e.g. out
of GPU memory, leaves nothing behind in the next):

1. ``train.json`` (+ any ``--config`` files) on the other k-1 folds; the best checkpoint (and, for IFE, its
   calibration) is chosen on a validation split taken from those folds, so the held-out fold plays no part in
   training, model selection or calibration. Without groups the bundle takes that split itself (its
   ``val_fraction``); with groups this script writes it, whole groups, stratified, into the fold's datalist;
2. the same configs + ``evaluate.json`` on the held-out fold: Dice and Jaccard on clean and on noisy B-scans (OCT),
   every numeric score of the IFE evaluation report (accuracy, macro F1, FNR, M1/M3 accuracy, per-class recall,
   calibration and referral scores when the report has them);
3. IFE only: ``inference.json`` (+ the ``--config`` files) on the held-out fold, whose ``predictions.csv`` gives the
   per-gel (calibrated) probabilities. Pooled over the folds, these out-of-fold predictions are what the ensemble's
   operating point is fitted on (``custom_components.ife.referral.choose_operating_point``).

Writes ``OUTPUT/fold_<k>/`` (datalist, model, logs of each command, evaluation, IFE: ``out_of_fold/predictions.csv``)
and ``OUTPUT/cross_validation.json`` / ``.csv`` / ``.md`` with per-fold scores and their mean and std; the JSON is
rewritten after every fold, so an interrupted run keeps the folds it finished, and run again with the same data and
settings it reuses them (``fold_<k>/fold_result.json``) and goes on at the first unfinished fold. IFE also writes
``OUTPUT/out_of_fold_predictions.csv`` and ``OUTPUT/ensemble.json``: the fold checkpoints (relative to OUTPUT) and
the operating point, read by ``bundles/ife_multitask/configs/ensemble_inference.json``. ``--ensemble-dir DIR``
copies the fold models (weights, recipe, calibration) and ``ensemble.json`` there, e.g. into the bundle's
``models/ensemble`` where that config looks by default.

Usage::

    python scripts/cross_validate.py --folds 5                                  # OCT, synthetic default, paper settings
    python scripts/cross_validate.py --dataset-dir /data/oct --max-epochs 50
    python scripts/cross_validate.py --config networks/unet.json --output-dir outputs/cv_unet     # Table 1 network
    python scripts/cross_validate.py --override loss_name dice --output-dir outputs/cv_dice       # Tables 3-4 loss
    python scripts/cross_validate.py --folds 2 --max-epochs 1 --image-size 32 --override filters "[4,8,16,32,64]"
    python scripts/cross_validate.py --bundle ife_multitask --folds 5 \\
        --ensemble-dir bundles/ife_multitask/models/ensemble                    # IFE folds + the fold ensemble
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BUNDLES = ("oct_fluid_seg", "ife_multitask")
DEFAULT_BUNDLE = REPO / "bundles" / "oct_fluid_seg"
#: the OCT scores, in the order of the paper's tables
SCORES = (
    "dice",
    "jaccard",
    "dice_fluid_scans",
    "jaccard_fluid_scans",
    "false_fluid_rate",
    "noisy_dice",
    "noisy_jaccard",
)
#: numbers in the IFE evaluation report that describe the run, not the model: not averaged over folds
NOT_SCORES = frozenset({"num_samples", "image_size", "support", "seed", "epoch"})
#: written into a fold's folder when it finished: its inputs, scores and checkpoint (see ``_finished_fold``)
FOLD_RECORD = "fold_result.json"
#: scores shown in the progress line of each fold, by bundle
HEADLINE = {
    "oct_fluid_seg": {"dice": "Dice", "jaccard": "Jaccard", "noisy_dice": "noisy Dice"},
    "ife_multitask": {"accuracy": "accuracy", "macro_f1": "macro F1", "fnr": "FNR"},
}


def _run(cmd: list[str], log: Path) -> None:
    from bundle_runs import run_logged

    run_logged(cmd, log, cwd=REPO)


def _has_fluid(entry: dict) -> bool:
    from custom_components.core.image_files import read_array

    return bool(np.any(read_array(entry["label"])))


def _stats(results: list[dict], key: str) -> dict:
    values = [r[key] for r in results if r.get(key) is not None]
    return {"mean": float(np.mean(values)), "std": float(np.std(values))} if values else {"mean": None, "std": None}


def numeric_scores(report: Mapping, prefix: str = "") -> dict[str, float]:
    """Every numeric scalar of an evaluation report, nested objects flattened with dots (``per_class_recall.IgG-kappa``,
    ``ece.after``), in the report's order; booleans, lists, strings and :data:`NOT_SCORES` are left out. A ``None``
    (a score undefined on this fold, e.g. the recall of a class it lacks) is kept as ``None``, so the column exists.

    The IFE report grows as the bundle does (calibration, referral): the table takes whatever it finds rather than a
    list of names that would go stale.
    """
    scores: dict[str, float] = {}
    for key, value in report.items():
        if key in NOT_SCORES:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            scores.update(numeric_scores(value, name + "."))
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            scores[name] = None if value is None else float(value)
    return scores


def markdown_table(results: list[dict], summary_mean: Mapping[str, Mapping], scores: list[str]) -> str:
    """The per-fold scores as a markdown table, one row per score and one column per fold, then mean and std (the
    transpose of the CSV: the IFE report has dozens of scores and a handful of folds)."""

    def cell(value) -> str:
        return "" if value is None else f"{value:.4f}"

    folds = [str(r["fold"]) for r in results]
    lines = [
        "| score | " + " | ".join(f"fold {f}" for f in folds) + " | mean | std |",
        "|---|" + "---:|" * (len(folds) + 2),
    ]
    for s in scores:
        row = [cell(r.get(s)) for r in results] + [cell(summary_mean[s]["mean"]), cell(summary_mean[s]["std"])]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    sizes = [f"{r['train']} / {r['held_out']}" for r in results]
    lines.append("| train / held-out entries | " + " | ".join(sizes) + " | | |")
    return "\n".join(lines) + "\n"


def _literal(config: Path, key: str, default):
    """A plain (non-expression) value of a bundle config, or ``default``."""
    value = json.loads(config.read_text()).get(key, default)
    return default if isinstance(value, str) else value


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", choices=BUNDLES, default="oct_fluid_seg",
        help="which bundle's task: OCT segmentation (default) or IFE classification (+ the fold ensemble)",
    )  # fmt: skip
    parser.add_argument(
        "--bundle-root", type=Path, default=None, help="the bundle folder (holds configs/); default bundles/<bundle>"
    )
    parser.add_argument(
        "--dataset-dir", type=Path, default=None,
        help="folder with datalist.json (default: the bundle's synthetic default, BUNDLE/data/synthetic)",
    )  # fmt: skip
    parser.add_argument("--folds", type=int, default=5, help="number of folds, >= 2 (default 5, as the paper)")
    parser.add_argument("--seed", type=int, default=42, help="seed of the fold split and of every run")
    parser.add_argument(
        "--output-dir", type=Path, default=None,
        help="default outputs/cross_validation (OCT) or outputs/cross_validation_ife (IFE)",
    )  # fmt: skip
    parser.add_argument(
        "--config", action="append", default=[], metavar="FILE",
        help="extra config merged after train.json, relative to BUNDLE/configs (e.g. networks/unet.json); repeatable",
    )  # fmt: skip
    parser.add_argument("--max-epochs", type=int, default=None, help="training epochs (default: the bundle's)")
    parser.add_argument("--image-size", type=int, default=None, help="image_size (default: the bundle's)")
    parser.add_argument(
        "--val-fraction", type=float, default=None,
        help="share of the training folds held for validation when entries carry groups (default: the bundle's "
        "val_fraction); without groups the bundle splits by its own val_fraction",
    )  # fmt: skip
    parser.add_argument(
        "--target-sensitivity", type=float, default=0.98, help="IFE: of the ensemble's operating point (default 0.98)"
    )
    parser.add_argument(
        "--target-coverage", type=float, default=0.75, help="IFE: of the ensemble's operating point (default 0.75)"
    )
    parser.add_argument(
        "--ensemble-dir", type=Path, default=None,
        help="IFE: copy the fold models and ensemble.json there, e.g. bundles/ife_multitask/models/ensemble",
    )  # fmt: skip
    parser.add_argument(
        "--override", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
        help="any bundle override, e.g. --override loss_name dice; repeatable",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}.")
    if args.val_fraction is not None and not 0 < args.val_fraction < 1:
        parser.error(f"--val-fraction must be in (0, 1), got {args.val_fraction}.")
    ife = args.bundle == "ife_multitask"
    if not ife and args.ensemble_dir is not None:
        parser.error("--ensemble-dir is for --bundle ife_multitask (the OCT bundle has no fold ensemble).")
    bundle = (args.bundle_root or REPO / "bundles" / args.bundle).resolve()
    names = ["train.json", "evaluate.json", "metadata.json", *(["inference.json"] if ife else []), *args.config]
    for name in names:
        if not (bundle / "configs" / name).is_file():
            parser.error(f"{bundle / 'configs' / name} not found (check --bundle-root and --config).")
    args.bundle_root = bundle
    if args.output_dir is None:
        args.output_dir = REPO / "outputs" / ("cross_validation_ife" if ife else "cross_validation")
    return args


def _pool_and_folds(args: argparse.Namespace, overrides: dict) -> tuple[str, list[dict], list, object]:
    """The datalist, its pooled training + validation entries, the folds, and the stratification key."""
    from custom_components.core import load_datalist, prepare_dataset, stratified_group_kfold
    from custom_components.ife.synthetic import synthesize_ife_dataset
    from custom_components.oct.synthetic import synthesize_oct_dataset

    dataset_dir = args.dataset_dir or args.bundle_root / "data" / "synthetic"
    if args.bundle == "ife_multitask":
        synthetic_count = int(overrides.get("synthetic_count", 600))
        datalist = prepare_dataset(dataset_dir, synthesize_ife_dataset, synthetic_count, args.seed)
        key = "label"
    else:
        size = int(overrides.get("image_size", 512))
        synthetic_count = int(overrides.get("synthetic_count", 120))
        datalist = prepare_dataset(dataset_dir, synthesize_oct_dataset, synthetic_count, args.seed, [size, size])
        key = _has_fluid
    pool = load_datalist(datalist, "training") + load_datalist(datalist, "validation")
    # an entry without a group is a group of its own: without any, these are plain stratified folds
    folds = stratified_group_kfold(pool, args.folds, args.seed, key=key, group="group")
    return datalist, pool, folds, key


def _inference_overrides(bundle_root: Path, configs: list[str], overrides: Mapping[str, str]) -> dict:
    """The overrides that also make sense for inference: those whose top-level id inference.json or the extra configs
    define (``--override train#... ...`` would fail there, the train section being absent)."""
    known: set[str] = set()
    for name in configs:
        known.update(json.loads((bundle_root / "configs" / name).read_text()))
    return {k: v for k, v in overrides.items() if k.split("#")[0].split("::")[0].lstrip("+") in known}


def _out_of_fold_predictions(
    bundle_root: Path, configs: list[str], common: Mapping[str, str], fold_dir: Path, fold: int
) -> list[dict]:
    """Run the fold's model over its held-out gels with ``inference.json`` (the per-gel probabilities, calibrated as
    inference calibrates them, which the evaluation report does not hold) and read its ``predictions.csv``."""
    from bundle_runs import bundle_run_command

    inference = {
        **_inference_overrides(bundle_root, configs, common),
        "bundle_root": fold_dir, "dataset_dir": str(fold_dir), "datalist_section": "testing",
        "output_dir": str(fold_dir / "out_of_fold"), "save_figures": False,
    }  # fmt: skip
    _run(bundle_run_command(bundle_root, configs, inference), fold_dir / "inference.log")
    return _read_out_of_fold(fold_dir / "out_of_fold" / "predictions.csv", fold)


def _read_out_of_fold(path: Path, fold: int) -> list[dict]:
    """The rows of a fold's ``predictions.csv``: image, label, the class call (``prediction``, the call inference
    makes, per head for the multi-task network), the nine probabilities and whether they were ``calibrated`` (empty
    when the file has no such column)."""
    from custom_components.ife.classes import IFE_CLASSES

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    columns = [f"p_{name}" for name in IFE_CLASSES]
    for row in rows:
        missing = [c for c in ("image", "label", "prediction", *columns) if c not in row]
        if missing:
            raise SystemExit(f"{path} lacks the column(s) {', '.join(missing)}: not an IFE predictions.csv.")
        if row["label"] not in IFE_CLASSES:
            raise SystemExit(f"{path}: {row['image']} has no class label ({row['label']!r}) for the operating point.")
        if row["prediction"] not in IFE_CLASSES:
            raise SystemExit(f"{path}: {row['image']} has no class call ({row['prediction']!r}).")
    return [
        {"fold": fold, "image": r["image"], "label": r["label"], "prediction": r["prediction"],
         **{c: r[c] for c in columns}, "calibrated": r.get("calibrated") or ""}
        for r in rows
    ]  # fmt: skip


def _fit_operating_point(rows: list[dict], args: argparse.Namespace) -> dict:
    """The referral operating point on the pooled out-of-fold predictions (each gel predicted by the one fold model
    that never saw it: the usual stand-in for the ensemble's own, unavailable, unseen-data probabilities).

    The confidence is that of each gel's class call as inference made it (the ``prediction`` column: the per-head
    call of the multi-task network, ``IFECalld(multitask=True)``), not the argmax of the nine probabilities, so the
    point is fitted on the call it is applied to (as ``IFECalibrator`` fits a single model's).
    """
    from custom_components.ife.classes import IFE_CLASSES
    from custom_components.ife.referral import choose_operating_point

    probabilities = np.array([[float(r[f"p_{name}"]) for name in IFE_CLASSES] for r in rows], dtype=np.float64)
    labels = np.array([IFE_CLASSES.index(r["label"]) for r in rows], dtype=np.int64)
    calls = np.array([IFE_CLASSES.index(r["prediction"]) for r in rows], dtype=np.int64)
    point = choose_operating_point(
        probabilities,
        labels,
        target_sensitivity=args.target_sensitivity,
        target_coverage=args.target_coverage,
        calls=calls,
    )
    # plain JSON (numpy scalars and arrays become numbers and lists)
    return json.loads(json.dumps(point, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _copy_ensemble(out: Path, record: dict, ensemble_dir: Path) -> None:
    """Copy each fold checkpoint with its recipe and calibration (``model.*`` beside it) and the record."""
    from custom_components.ife.ensemble import ENSEMBLE_RECORD
    from custom_components.core.atomic import write_json_atomic

    ensemble_dir.mkdir(parents=True, exist_ok=True)
    for relative in record["checkpoints"]:
        source = out / relative
        target = ensemble_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        for sibling in sorted(source.parent.glob(glob.escape(source.stem) + ".*")):
            shutil.copy2(sibling, target.parent / sibling.name)
    for name in (record["cross_validation"], record["operating_point_fitted_on"]["predictions"]):
        shutil.copy2(out / name, ensemble_dir / name)  # what the record refers to
    write_json_atomic(record, ensemble_dir / ENSEMBLE_RECORD)


def _finished_fold(fold_dir: Path, fold_inputs: Mapping) -> dict | None:
    """The record of a fold that finished with exactly these inputs (datalist, configs, settings), or None: an
    interrupted cross-validation goes on at the first fold it had not finished, and a changed setting runs anew."""
    path = fold_dir / FOLD_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    # through JSON, so tuples and paths compare as they were written
    same = all(record.get(key) == json.loads(json.dumps(value)) for key, value in fold_inputs.items())
    return record if same else None


def _summary(args, configs, datalist, n_groups, grouped, val_fraction, overrides, results, scores) -> dict:
    """``cross_validation.json``: the run's settings, the per-fold scores and their mean and std so far."""
    return {
        "bundle": str(args.bundle_root),
        "task": args.bundle,
        "folds": args.folds,
        "folds_done": len(results),
        "seed": args.seed,
        "configs": configs,
        "datalist": str(datalist),
        "groups": n_groups,
        "validation_split": f"by this script, whole groups, val_fraction {val_fraction}" if grouped
        else "by the bundle (its val_fraction)",
        "overrides": overrides,
        "per_fold": results,
        "mean": {s: _stats(results, s) for s in scores},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the cross-validation; returns the exit status."""
    args = _parse(argv)
    from bundle_runs import bundle_run_command
    from custom_components.core.splits import stratified_group_split
    from custom_components.core.splits import _groups_of
    from custom_components.core.atomic import write_csv_atomic, write_json_atomic, write_text_atomic

    ife = args.bundle == "ife_multitask"
    if ife:  # fail now rather than after k trainings
        from custom_components.ife.referral import choose_operating_point  # noqa: F401
        from custom_components.ife.ensemble import ENSEMBLE_RECORD

    overrides = {key: value for key, value in args.override}
    if args.image_size:
        overrides["image_size"] = str(args.image_size)
    if args.max_epochs:
        overrides["max_epochs"] = str(args.max_epochs)
    datalist, pool, folds, key = _pool_and_folds(args, overrides)
    # as custom_components.core.datalist.training_and_validation: grouped when some group holds several entries
    # (singleton groups, e.g. one per synthetic B-scan, split like no groups: the bundle's own split does)
    groups = [str(e["group"]) for e in pool if e.get("group") is not None]
    grouped = len(set(groups)) < len(groups)
    val_fraction = args.val_fraction or float(
        overrides.get("val_fraction", _literal(args.bundle_root / "configs" / "train.json", "val_fraction", 0.2))
    )
    out = args.output_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    configs = ["train.json", *args.config]
    inference_configs = ["inference.json", *args.config]
    unit = "gels" if ife else "B-scans"
    n_groups = len(_groups_of(pool, "group"))  # an entry without a group is a group of its own
    print(
        f"{args.folds}-fold cross-validation of {args.bundle_root.name} ({' + '.join(configs)}) on {len(pool)} "
        f"{unit} in {n_groups} groups of {datalist} (its testing list left out); outputs in {out}",
        flush=True,
    )

    results: list[dict] = []
    scores: list[str] = list(SCORES) if not ife else []
    summary: dict = {}
    out_of_fold: list[dict] = []
    checkpoints: list[str] = []
    start = time.time()
    for k, (train, held_out) in enumerate(folds):
        fold_dir = out / f"fold_{k}"
        fold_dir.mkdir(exist_ok=True)
        # absolute paths, so the fold's datalist can live anywhere. Without groups no validation list: the bundle
        # splits one off (stratified by its own rule); with groups the split must keep them whole, which the
        # bundle's split does not know about, so it is written here
        fold_datalist = {"training": train, "testing": held_out}
        if grouped:
            fold_datalist["training"], fold_datalist["validation"] = stratified_group_split(
                train, val_fraction, args.seed, key=key, group="group"
            )
        common = {**overrides, "dataset_dir": str(fold_dir), "seed": str(args.seed)}
        tag = f"[fold {k + 1}/{args.folds}]"
        # what makes this fold's result: a fold that finished with the same is not run again
        fold_inputs = {"datalist": fold_datalist, "configs": configs, "settings": common}
        finished = _finished_fold(fold_dir, fold_inputs)
        if finished is not None:
            print(f"{tag} finished before with the same data and settings: reused ({fold_dir / FOLD_RECORD})")
            row = finished["row"]
            if ife:
                scores += [s for s in row if s not in scores and s not in ("fold", "train", "held_out")]
                checkpoints.append(finished["checkpoint"])
                out_of_fold += _read_out_of_fold(fold_dir / "out_of_fold" / "predictions.csv", k)
            results.append(row)
            summary = _summary(args, configs, datalist, n_groups, grouped, val_fraction, overrides, results, scores)
            continue
        write_json_atomic(fold_datalist, fold_dir / "datalist.json", indent=1)
        validation = (
            f"{len(fold_datalist['validation'])} of them for validation, whole groups" if grouped
            else "the bundle's validation split among them"
        )  # fmt: skip
        print(f"{tag} training on {len(train)} {unit} ({validation}) ...", flush=True)
        train_cmd = bundle_run_command(args.bundle_root, configs, {"bundle_root": fold_dir, **common})
        _run(train_cmd, fold_dir / "train.log")
        print(f"{tag} evaluating on {len(held_out)} held-out {unit} ...", flush=True)
        evaluation = {"bundle_root": fold_dir, **common, "output_dir": str(fold_dir / "evaluation")}
        _run(bundle_run_command(args.bundle_root, [*configs, "evaluate.json"], evaluation), fold_dir / "evaluate.log")
        report = json.loads((fold_dir / "evaluation" / "metrics.json").read_text())
        if ife:
            fold_scores = numeric_scores(report)
            scores += [s for s in fold_scores if s not in scores]
            # the checkpoint the evaluation loaded (a --config may move it, e.g. baseline.json to models/baseline)
            checkpoint = Path(report.get("checkpoint") or fold_dir / "models" / "model.pt").resolve()
            checkpoints.append(Path(os.path.relpath(checkpoint, out)).as_posix())
            print(f"{tag} out-of-fold predictions on the held-out {unit} ...", flush=True)
            out_of_fold += _out_of_fold_predictions(args.bundle_root, inference_configs, common, fold_dir, k)
        else:
            fold_scores = {s: report.get(s) for s in SCORES}
        row = {"fold": k, "train": len(train), "held_out": len(held_out), **fold_scores}
        results.append(row)
        shown = "  ".join(
            f"{label} {row[s]:.4f}" for s, label in HEADLINE[args.bundle].items() if row.get(s) is not None
        )
        print(f"{tag} {shown}  ({(time.time() - start) / 60:.1f} min so far)", flush=True)
        write_json_atomic(
            {**fold_inputs, "row": row, "checkpoint": checkpoints[-1] if ife else None}, fold_dir / FOLD_RECORD
        )
        summary = _summary(args, configs, datalist, n_groups, grouped, val_fraction, overrides, results, scores)
        write_json_atomic(summary, str(out / "cross_validation.json"))

    mean, std = ({s: summary["mean"][s][stat] for s in scores} for stat in ("mean", "std"))
    rows = [*results, {"fold": "mean", **mean}, {"fold": "std", **std}]
    write_csv_atomic(out / "cross_validation.csv", ["fold", "train", "held_out", *scores], rows)
    write_text_atomic(markdown_table(results, summary["mean"], scores), out / "cross_validation.md")
    width = max(map(len, scores), default=5)
    print(f"\n{'score':<{width}}   mean     std")
    for s in scores:
        m = summary["mean"][s]
        if m["mean"] is not None:
            print(f"{s:<{width}} {m['mean']:.4f}  {m['std']:.4f}")
    written = [out / "cross_validation.json", out / "cross_validation.csv", out / "cross_validation.md"]

    if ife:
        columns = list(out_of_fold[0]) if out_of_fold else ["fold", "image", "label"]
        write_csv_atomic(out / "out_of_fold_predictions.csv", columns, out_of_fold)
        # a fold without a calibration record predicts uncalibrated probabilities: the point is then fitted on a mix
        uncalibrated = sorted({r["fold"] for r in out_of_fold if r["calibrated"] == "false"})
        if uncalibrated:
            print(
                f"WARNING: the out-of-fold predictions of fold(s) {', '.join(map(str, uncalibrated))} are uncalibrated "
                "(no calibration record beside the fold's model): the operating point is fitted on a mix of "
                "calibrated and uncalibrated probabilities (recalibrate with configs/calibrate.json and rerun).",
                file=sys.stderr,
                flush=True,
            )
        operating_point = _fit_operating_point(out_of_fold, args)
        record = {
            "bundle": args.bundle,
            "configs": configs,
            "folds": args.folds,
            "seed": args.seed,
            # relative to this file's folder, so the folder can be moved or copied into a bundle whole
            "checkpoints": checkpoints,
            "operating_point": operating_point,
            "operating_point_fitted_on": {
                "out_of_fold_gels": len(out_of_fold),
                "predictions": "out_of_fold_predictions.csv",
                "target_sensitivity": args.target_sensitivity,
                "target_coverage": args.target_coverage,
                "uncalibrated_folds": uncalibrated,
                "note": "fitted on single-model out-of-fold probabilities, applied to the mean of the fold models' "
                "probabilities: the ensemble's sensitivity and coverage may differ from the targets",
            },
            "cross_validation": "cross_validation.json",
        }
        write_json_atomic(record, out / ENSEMBLE_RECORD)
        written += [out / "out_of_fold_predictions.csv", out / ENSEMBLE_RECORD]
        print(f"\nensemble of {len(checkpoints)} fold models; operating point on {len(out_of_fold)} out-of-fold gels: "
              f"{json.dumps(operating_point)}")  # fmt: skip
        if args.ensemble_dir is not None:
            _copy_ensemble(out, record, args.ensemble_dir.resolve())
            print(f"copied the fold models and {ENSEMBLE_RECORD} to {args.ensemble_dir.resolve()}")
    print("\nWrote " + ", ".join(map(str, written)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
