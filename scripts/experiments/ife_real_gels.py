#!/usr/bin/env python
"""The papers' comparisons on real gels: grouped, stratified k-fold cross-validation of the IFE bundle on the 271
MP-CADMS gels, per setting and with the lane layout normalisation on and off.

Each (setting, lane layout) pair is one run of ``scripts/cross_validate.py --bundle ife_multitask`` (the bundle's
own commands per fold; folds stratified by class and grouped by ``mpcadms_groups.csv``, so near-duplicates stay in
one fold) at a CPU size, and optionally the synthetic-trained model of ``--synthetic-bundle-root`` asked about every
real gel. A pair whose ``cross_validation.json`` in ``--workdir`` finished all folds with the same overrides is
reused, so an interrupted experiment goes on where it stopped.

The settings are those of the paper's Table 2 (``scripts/experiments/ife_paper_tables.py``): the 9-class baseline,
the multi-task network without regularisers (this bundle's default since 0.8.0), with the paper's regularisers, and
the class-evidence target (the default to 0.7.0); with ``--fine-tune``, also ``--pretrain-setting`` (the default's)
started from the synthetic-only model of that setting (``train.json --pretrained``) in the same folds: synthetic
pre-training and real fine-tuning against real-only training.

Usage::

    python scripts/experiments/mpcadms_datalist.py /path/to/MP-CADMS /data/mpcadms/datalist.json
    python scripts/experiments/ife_real_gels.py --dataset-dir /data/mpcadms --workdir outputs/ife_real_gels

Writes ``OUTPUT/ife_real_gels.json`` and ``.md`` (mean and std over folds of accuracy, macro F1, FNR and per-class
recall, the paper's Table 1 beside them; the machine, sizes, seeds and time).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling experiments
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402
# the paper's settings, Table 1, and which setting is the bundle's default
from ife_paper_tables import BUNDLE_DEFAULT, CLASS_EVIDENCE, PAPER_TABLE, SETTINGS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ife_multitask"
#: the settings compared on real gels, by their names in ife_paper_tables.SETTINGS
REAL_SETTINGS = (
    "9-class baseline, horizontal attention",
    "multi-task, no regulariser",
    "multi-task, both (the paper)",
    CLASS_EVIDENCE,
)
#: a CPU size: about ten minutes a fold on two cores; one learning rate for every setting (baseline.json's 0.1
#: against the multi-task network's 0.03 would compare a tuned rate with an untuned one)
CPU_SIZE = {"image_size": 128, "max_epochs": 15, "batch_size": 32, "warmup_epochs": 1, "num_workers": 2,
            "learning_rate": 0.03}  # fmt: skip
METRICS = {"accuracy": "Acc", "macro_f1": "macro F1", "fnr": "FNR"}
#: what the label of a setting fine-tuned from its synthetic-only model ends with
PRETRAINED = ", synthetic pre-trained"


def _cv_command(
    setting: str, lane_layout: bool, args: argparse.Namespace, out: Path, pretrained: Path | None = None
) -> list[str]:
    configs, overrides = SETTINGS[setting]
    cmd = [sys.executable, str(REPO / "scripts" / "cross_validate.py"), "--bundle", "ife_multitask"]
    cmd += ["--dataset-dir", str(args.dataset_dir), "--folds", str(args.folds), "--seed", str(args.seed)]
    cmd += ["--output-dir", str(out), "--image-size", str(args.sizes["image_size"])]
    cmd += ["--max-epochs", str(args.sizes["max_epochs"])]
    for config in configs:
        cmd += ["--config", config]
    merged = {**overrides, "lane_layout": lane_layout, "lane_orientation": "auto" if lane_layout else "albumin_bottom"}
    merged.update({k: v for k, v in args.sizes.items() if k not in ("image_size", "max_epochs")})
    if pretrained is not None:
        merged["pretrained"] = pretrained
    for key, value in merged.items():
        cmd += ["--override", key, str(value)]
    return cmd


def _finished(out: Path, folds: int, command: list[str]) -> dict | None:
    """The summary of a finished run with the same command, else None."""
    summary_file, command_file = out / "cross_validation.json", out / "command.txt"
    if not (summary_file.is_file() and command_file.is_file()):
        return None
    summary = json.loads(summary_file.read_text())
    same = command_file.read_text().strip() == shlex.join(command[1:])
    return summary if same and summary.get("folds_done") == folds else None


def run_one(
    setting: str, lane_layout: bool, args: argparse.Namespace, pretrained: Path | None = None
) -> dict | None:
    """The summary of one cross-validation, run unless it finished before (``None``: not finished and
    ``--only-finished``)."""
    name = f"{setting}{' fine-tuned' if pretrained else ''} lanes {'on' if lane_layout else 'off'}"
    out = args.workdir / bundle_runs.slug(name)
    command = _cv_command(setting, lane_layout, args, out, pretrained)
    summary = _finished(out, args.folds, command)
    if summary is None and args.only_finished:
        return None
    if summary is None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.txt").write_text(shlex.join(command[1:]) + "\n")
        started = time.time()
        with open(out / "experiment.log", "w") as log:
            subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
        summary = json.loads((out / "cross_validation.json").read_text())
        summary["minutes"] = round((time.time() - started) / 60, 1)
        (out / "cross_validation.json").write_text(json.dumps(summary, indent=1))
    return summary


def scores_of_predictions(predictions: Path) -> dict:
    """Accuracy, macro F1, FNR and per-class recall of a ``predictions.csv`` whose rows carry their labels, and the
    share of gels whose lanes were read (``lane_layout_used``)."""
    import csv

    import numpy as np

    from custom_components.ife.classes import IFE_CLASSES, label_to_index
    from custom_components.ife.metrics import (
        accuracy,
        confusion_matrix,
        false_negative_rate,
        macro_f1,
        per_class_recall,
    )

    with open(predictions, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    cm = confusion_matrix(np.array([label_to_index(r["label"]) for r in rows]),
                          np.array([label_to_index(r["prediction"]) for r in rows]))  # fmt: skip
    recall = per_class_recall(cm).tolist()
    used = [r.get("lane_layout_used") for r in rows]
    return {
        "gels": len(rows), "accuracy": accuracy(cm), "macro_f1": macro_f1(cm), "fnr": false_negative_rate(cm),
        "per_class_recall": {c: (None if v != v else v) for c, v in zip(IFE_CLASSES, recall)},
        "lanes_read": sum(u == "true" for u in used) / len(rows) if rows and used[0] else None,
    }  # fmt: skip


def _synthetic_only_root(args: argparse.Namespace, appearance: str) -> Path:
    look = "" if appearance == "classic" else f"_{appearance}"
    return args.workdir / f"synthetic_only{look}_{bundle_runs.slug(args.pretrain_setting)}"


def synthetic_only(args: argparse.Namespace, appearance: str = "classic") -> dict:
    """A model of ``--pretrain-setting`` trained on the bundle's synthetic default only (450 gels of the paper's
    class mix, at the README demo's CPU settings), asked about every real gel; with ``appearance="published"`` the
    same gels in the generator's published look (:func:`custom_components.ife.synthetic.render_gel`), written before
    training."""
    root = _synthetic_only_root(args, appearance)
    predictions, minutes, seed_file = root / "real" / "predictions.csv", root / "minutes.txt", root / "seed.txt"
    if predictions.is_file() and seed_file.is_file() and seed_file.read_text().strip() != str(args.seed):
        raise SystemExit(f"{root} holds a synthetic-only run of another seed: delete it or use another --workdir.")
    if not predictions.is_file():
        root.mkdir(parents=True, exist_ok=True)
        seed_file.write_text(f"{args.seed}\n")
        started = time.time()
        demo = {**bundle_runs.CPU_DEMO_SETTINGS["ife"], "num_workers": 2, "seed": args.seed}
        configs, overrides = SETTINGS[args.pretrain_setting]
        train = {"bundle_root": root, "dataset_dir": root / "synthetic", **overrides, **demo}
        if appearance != "classic" and not (root / "synthetic" / "datalist.json").is_file():
            from custom_components.ife.synthetic import synthesize_ife_dataset

            # the synthetic default's gels (train.json's prepare_dataset: this count and seed), in the other look
            count = demo["synthetic_count"]
            synthesize_ife_dataset(root / "synthetic", count=count, seed=args.seed, appearance=appearance)
        command = bundle_runs.bundle_run_command(BUNDLE, ["train.json", *configs], train)
        bundle_runs.run_logged(command, root / "train.log")
        infer = {"bundle_root": root, "input_dir": args.dataset_dir / "datalist.json", "datalist_section": "training",
                 "output_dir": root / "real", "save_figures": False, "num_workers": 2}  # fmt: skip
        bundle_runs.run_logged(bundle_runs.bundle_run_command(BUNDLE, ["inference.json"], infer), root / "infer.log")
        minutes.write_text(f"{(time.time() - started) / 60:.1f}\n")
    spent = float(minutes.read_text()) if minutes.is_file() else None
    return {"setting": args.pretrain_setting, "settings": bundle_runs.CPU_DEMO_SETTINGS["ife"],
            "appearance": appearance, "minutes": spent, **scores_of_predictions(predictions)}  # fmt: skip


def _row(summary: dict) -> dict:
    mean = summary["mean"]
    row = {key: mean.get(key) for key in METRICS}
    row["per_class_recall"] = {
        key.split(".", 1)[1]: mean[key] for key in mean if key.startswith("per_class_recall.")
    }
    row["minutes"] = summary.get("minutes")
    return row


def _percent(stat: dict | None) -> str:
    return "–" if not stat or stat.get("mean") is None else f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def keep_earlier(result: dict, earlier: dict) -> dict:
    """``result`` with what ``earlier`` (the results file already in the output folder) reported and this run did
    not: its cross-validations and synthetic-only models, for an experiment run in parts whose work folders did not
    all survive. Only results of as many gels and the same folds, seed and sizes are kept; the runs come in the
    order of the settings (a setting this script no longer has, last), and the earlier commands are listed.

    Raises:
        SystemExit: when ``earlier`` was measured on another number of gels or with other folds, seed or sizes (its
            numbers would not compare).
    """
    old, new = earlier["meta"], result["meta"]
    differ = [k for k in ("gels", "folds", "seed", "sizes") if k in old and k in new and old[k] != new[k]]
    if differ:
        raise SystemExit(f"cannot keep the earlier results: their {', '.join(differ)} differ from this run's")
    pair = lambda entry: (entry["setting"], entry["lane_layout"])  # noqa: E731
    ran = {pair(entry) for entry in result["runs"]}
    runs = result["runs"] + [entry for entry in earlier.get("runs", []) if pair(entry) not in ran]
    order = {name: i for i, name in enumerate([*SETTINGS, *(setting + PRETRAINED for setting in SETTINGS)])}
    runs.sort(key=lambda entry: (order.get(entry["setting"], len(order)), not entry["lane_layout"]))
    done = {pair(entry) for entry in runs}
    not_run = [entry for entry in result["not_run"] + earlier.get("not_run", []) if pair(entry) not in done]
    not_run = [entry for i, entry in enumerate(not_run) if pair(entry) not in map(pair, not_run[:i])]
    meta = {**old, **new, "earlier_commands": old.get("earlier_commands", []) + [old["command"]]}
    models = earlier.get("synthetic_only", []) + result.get("synthetic_only", [])
    looks = {(entry["setting"], entry.get("appearance", "classic")): entry for entry in models}
    merged = {**earlier, **result, "meta": meta, "runs": runs, "not_run": not_run}
    if looks:  # one synthetic-only model per setting and look, this run's where it made one
        merged["synthetic_only"] = list(looks.values())
    return merged


def _named(setting: str) -> str:
    """The setting as the tables name it: the bundle's default marked."""
    return f"{setting} (**this bundle's default**)" if setting == BUNDLE_DEFAULT else setting


def _on(entry: dict) -> str:
    return "on" if entry["lane_layout"] else "off"


def markdown(result: dict) -> str:
    """The results as markdown: what was run, the synthetic-only line, the table with the paper's beside it."""
    meta = result["meta"]
    lines = [
        "# IFE on real gels: grouped, stratified cross-validation on MP-CADMS",
        "",
        f"{meta['gels']} real gels; {meta['machine']}; {meta['minutes']} min. Command: `{meta['command']}`.",
        "",
    ]
    if meta.get("earlier_commands"):
        earlier = "; ".join(f"`{command}`" for command in meta["earlier_commands"])
        lines += [f"With the results of earlier runs kept (`--keep-earlier`): {earlier}.", ""]
    for s in result.get("synthetic_only") or []:
        look = "" if s.get("appearance", "classic") == "classic" else f", in the generator's {s['appearance']} look"
        lines += [
            f"{_named(s['setting'])} trained on the bundle's synthetic gels only (its synthetic default{look}, at the "
            f"README demo's CPU settings {s['settings']}), asked about all {s['gels']} real gels: accuracy "
            f"{100 * s['accuracy']:.1f} %, macro F1 {100 * s['macro_f1']:.1f} %, FNR {100 * s['fnr']:.1f} % "
            f"({s.get('minutes')} min to train and ask).",
            "",
        ]
    if result["runs"]:
        lines += [
            f"{meta['folds']} folds (stratified by class, near-duplicates grouped), seed {meta['seed']}, sizes "
            f"{meta['sizes']}. Mean ± std over folds (%); the paper's Table 1 (its hospital's 14,540 gels) beside.",
            "",
            "| Setting | Lane layout | Acc | macro F1 | FNR | paper Acc | paper F1 | paper FNR |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for entry in result["runs"]:
        cells = [_percent(entry["scores"].get(key)) for key in METRICS]
        paper = PAPER_TABLE.get(entry["setting"])
        cells += ["–"] * 3 if paper is None else [f"{value:.2f}" for value in paper[:3]]
        lines.append(f"| {_named(entry['setting'])} | {_on(entry)} | " + " | ".join(cells) + " |")
    if result["runs"]:
        from custom_components.ife.classes import IFE_CLASSES

        header = "| Setting | Lane layout | " + " | ".join(IFE_CLASSES) + " |"
        rule = "|---|---|" + "---|" * len(IFE_CLASSES)
        lines += ["", "Recall per class, mean ± std over folds (%):", "", header, rule]
        for entry in result["runs"]:
            cells = [_percent(entry["scores"].get(f"per_class_recall.{name}")) for name in IFE_CLASSES]
            lines.append(f"| {_named(entry['setting'])} | {_on(entry)} | " + " | ".join(cells) + " |")
    if result.get("not_run"):
        names = "; ".join(f"{e['setting']} (lanes {_on(e)})" for e in result["not_run"])
        lines += ["", f"Not run yet on the real gels (the CPU time this results file had): {names}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", type=Path, required=True, help="folder of the real gels' datalist.json")
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "ife_real_gels")
    parser.add_argument("--output-dir", type=Path, default=REPO / "bundles" / "ife_multitask" / "docs" / "results")
    parser.add_argument("--settings", nargs="*", default=list(REAL_SETTINGS), choices=list(SETTINGS),
                        help="settings to cross-validate (none: only --synthetic-only)")
    parser.add_argument("--lane-layout", choices=("on", "off", "both"), default="both")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--synthetic-only", action="store_true",
                        help="also train the README demo's model on synthetic gels and ask it about every real gel")
    parser.add_argument("--synthetic-appearance", nargs="+", choices=("classic", "published"), default=["classic"],
                        help="the generator's looks to train synthetic-only models on; --fine-tune starts from the "
                        "first")  # fmt: skip
    parser.add_argument("--pretrain-setting", choices=list(SETTINGS), default=BUNDLE_DEFAULT,
                        help="the setting of the synthetic-only model and of the fine-tuned folds")
    parser.add_argument("--fine-tune", action="store_true",
                        help="also cross-validate --pretrain-setting (lanes on) started from its synthetic-only model")
    parser.add_argument("--only-finished", action="store_true",
                        help="report the runs that finished; list the others as not run instead of running them")
    parser.add_argument("--size", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                        help="change one of the CPU sizes, e.g. --size max_epochs 30")  # fmt: skip
    parser.add_argument("--keep-earlier", action="store_true",
                        help="keep what the results file in --output-dir reported and this run does not (same data, "
                        "folds, seed and sizes): an experiment run in parts")  # fmt: skip
    args = parser.parse_args(argv)
    args.sizes = {**CPU_SIZE, **{k: json.loads(v) for k, v in args.size}}
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    started = time.time()
    datalist = json.loads((args.dataset_dir / "datalist.json").read_text())
    lanes = {"on": [True], "off": [False], "both": [True, False]}[args.lane_layout]
    result: dict = {}
    if args.synthetic_only or args.fine_tune:  # the fine-tuned folds start from its model
        result["synthetic_only"] = [synthetic_only(args, look) for look in args.synthetic_appearance]
        for entry in result["synthetic_only"]:
            print(f"[synthetic only, {entry['appearance']} look] {entry}", flush=True)
    plan = [(setting, lane_layout, None) for setting in args.settings for lane_layout in lanes]
    if args.fine_tune:
        source = _synthetic_only_root(args, args.synthetic_appearance[0])
        plan.append((args.pretrain_setting, True, source / "models" / "model.pt"))
    runs, not_run = [], []
    for setting, lane_layout, pretrained in plan:
        label = setting + PRETRAINED if pretrained else setting
        summary = run_one(setting, lane_layout, args, pretrained)
        if summary is None:
            not_run.append({"setting": label, "lane_layout": lane_layout})
            continue
        runs.append({"setting": label, "lane_layout": lane_layout, "scores": summary["mean"],
                     "per_fold": summary["per_fold"], "minutes": summary.get("minutes")})  # fmt: skip
        print(f"[{label}, lanes {'on' if lane_layout else 'off'}] "
              f"{ {k: v for k, v in _row(summary).items() if k in METRICS} }", flush=True)  # fmt: skip
    meta = {
        "data": "MP-CADMS SC_dataset (GitHub ThuXiaoming06/MP-CADMS), groups of docs/real_gels/mpcadms_groups.csv",
        "gels": sum(len(v) for k, v in datalist.items() if k in ("training", "validation")),
        "folds": args.folds, "seed": args.seed, "sizes": args.sizes, "machine": bundle_runs.machine(),
        "command": shlex.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
    }  # fmt: skip
    result = {"meta": meta, "runs": runs, "not_run": not_run, **result}
    if not runs:  # the cross-validation's settings describe nothing that ran
        for key in ("folds", "sizes"):
            meta.pop(key)
    earlier_file = args.output_dir / "ife_real_gels.json"
    if args.keep_earlier and earlier_file.is_file():
        result = keep_earlier(result, json.loads(earlier_file.read_text()))
    # the time the results took, kept and reused runs included (each recorded its own)
    stages = [entry.get("minutes") for entry in result["runs"] + result.get("synthetic_only", [])]
    result["meta"]["minutes"] = round(sum(m for m in stages if m) or (time.time() - started) / 60, 1)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, args.output_dir / "ife_real_gels.json", indent=1)
    write_text_atomic(markdown(result), args.output_dir / "ife_real_gels.md")
    print(f"wrote {args.output_dir / 'ife_real_gels.json'} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
