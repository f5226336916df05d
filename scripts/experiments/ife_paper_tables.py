#!/usr/bin/env python
"""The IFE paper's Tables 1-2 and Fig. 3, rerun on synthetic gels: the 9-class baseline (with and without the
horizontal attention), the multi-task network without regularisers, with each regulariser alone and with both, over
several seeds; and for every run, how often the attention peak falls within the monoclonal band the generator drew.

Every run is the bundle's own commands (``python -m monai.bundle run``), as a user would type them:

1. one data set for all runs (``scripts/synthesize.py`` with ``--min-per-class``, so every class has gels in the
   validation and test splits; the paper's rarest class is 0.43 % of its 14,540 gels, one or two gels of a few
   hundred);
2. per setting and seed: ``train.json`` (+ ``baseline.json`` for the 9-class network), which selects the checkpoint
   on the validation split (the authors selected on their test set: this protocol differs, and is the sound one);
3. ``inference.json`` on the test split: ``predictions.csv`` gives accuracy, macro F1, FNR, M1-Acc and M3-Acc
   (:func:`custom_components.ife.metrics.compute_ife_metrics`, the rarest classes counted on the training split, as
   ``evaluate.json`` counts them) and ``attention_profiles.jsonl`` the Fig. 3 analysis
   (:func:`custom_components.ife.attention.report_from_files`).

The regularised settings use the paper's regularisers at the authors' scale (``configs/paper_attention.json``).
The bundle's default (``configs/train.json``) is ``"multi-task, no regulariser"``; the class-evidence target, its
default to 0.7.0 (``configs/class_evidence_attention.json``), is available with ``--settings``. A run whose
``result.json`` in ``--workdir`` records the same overrides is reused.

Writes ``ife_paper_tables_<device>_d<difficulty>.json`` / ``.md`` (tables with mean +- std over the seeds, the
machine, sizes, seeds, time taken and the exact command), ``..._d<difficulty>.png`` (the metrics per setting) and
``..._d<difficulty>_attention.png`` (the attention profiles of the test gels aligned on their bands, the paper's
setting) into ``--output-dir``.

Usage::

    python scripts/experiments/ife_paper_tables.py        # CPU-sized: 450 gels, 128 px, 12 epochs, 3 seeds, difficulty 2.25
    python scripts/experiments/ife_paper_tables.py --count 14540 --gel-size 400 600 --image-size 224 \\
        --max-epochs 100 --batch-size 64 --num-workers 8     # the paper's sizes (its 14,540 gels), on a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling experiments
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402
from ife_attention import EVIDENCE, PAPER  # noqa: E402  (the attention settings of the sibling experiment)

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ife_multitask"
NO_REGULARISERS = {**PAPER, "lambda_inner": 0.0, "lambda_inter": 0.0}
#: the baseline's stage 4 as the multi-task branches' (the paper's stride): the same architecture but the heads
SAME_ROWS = {"stage4_row_stride": PAPER["stage4_row_stride"]}
#: this project's attention target (``configs/class_evidence_attention.json``)
CLASS_EVIDENCE = "multi-task, class evidence (default to 0.7.0)"
#: setting -> (extra configs after train.json / inference.json, overrides); the paper's Table 2 rows in its order
SETTINGS: dict[str, tuple[list[str], dict]] = {
    "9-class baseline, horizontal attention": (["baseline.json"], SAME_ROWS),
    "9-class baseline, no attention": (["baseline.json"], {**SAME_ROWS, "network_def#attention": False}),
    "multi-task, no regulariser": ([], NO_REGULARISERS),
    "multi-task, inner KL only": ([], {**PAPER, "lambda_inter": 0.0}),
    "multi-task, inter JS only": ([], {**PAPER, "lambda_inner": 0.0}),
    "multi-task, both (the paper)": ([], PAPER),
    CLASS_EVIDENCE: ([], EVIDENCE),
}
#: the setting ``configs/train.json`` trains with (a test holds the two together)
BUNDLE_DEFAULT = "multi-task, no regulariser"
DEFAULT_SETTINGS = [s for s in SETTINGS if s != CLASS_EVIDENCE]
METRICS = {"accuracy": "Acc", "macro_f1": "macro F1", "fnr": "FNR", "m1_acc": "M1-Acc", "m3_acc": "M3-Acc"}
#: attention maps scored for Fig. 3: the multi-task branches' last stage, and the baseline's
MAPS = {"attention_severe": "severe", "attention_mild": "mild", "attention": "9-class"}
#: Table 1 of the paper (real gels, mean over its runs), for the comparison column of the markdown
#: (the paper's baseline is "a ResNet18-based multi-class classification approach": whether it kept the horizontal
#: attention is not said, so its numbers stand beside both baseline rows)
PAPER_TABLE = {
    "9-class baseline, horizontal attention": (95.12, 85.16, 10.10, 88.46, 73.83),
    "9-class baseline, no attention": (95.12, 85.16, 10.10, 88.46, 73.83),
    "multi-task, no regulariser": (95.23, 85.79, 9.80, 92.31, 73.60),
    "multi-task, inner KL only": (95.37, 86.16, 9.14, 92.31, 75.99),
    "multi-task, inter JS only": (95.24, 85.70, 9.26, 88.46, 75.00),
    "multi-task, both (the paper)": (95.43, 86.68, 8.54, 92.31, 76.10),
}


def minority_classes(data: Path) -> list[str]:
    """The three rarest classes, rarest first: by the generator's class mix when ``synthesis.json`` records it
    (topping every class up to ``min_per_class`` ties the training counts, and a tie-break by class index would pick
    them), else by the training split's counts, as ``evaluate.json`` ranks them."""
    from custom_components.ife.classes import IFE_CLASSES
    from custom_components.ife.metrics import minority_classes_from_labels

    synthesis = data / "synthesis.json"
    fractions = json.loads(synthesis.read_text()).get("class_fractions") if synthesis.is_file() else None
    if fractions:
        return sorted((c for c in IFE_CLASSES if fractions.get(c, 0) > 0), key=lambda c: fractions[c])[:3]
    training = [entry["label"] for entry in json.loads((data / "datalist.json").read_text())["training"]]
    return [IFE_CLASSES[i] for i in minority_classes_from_labels(training, 3)]


def classification(predictions: Path, minority: list[str]) -> dict:
    """Test-split metrics of one inference run, as ``evaluate.json`` computes them (M1/M3 over ``minority``)."""
    from custom_components.ife.classes import label_to_index
    from custom_components.ife.metrics import compute_ife_metrics, confusion_matrix

    with open(predictions, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    truth = np.array([label_to_index(r["label"]) for r in rows])
    called = np.array([label_to_index(r["prediction"]) for r in rows])
    metrics = compute_ife_metrics(confusion_matrix(truth, called), minority)
    out = {key: (None if np.isnan(metrics[key]) else float(metrics[key])) for key in METRICS}
    out["test_gels"] = len(rows)
    return out


def run_one(setting: str, seed: int, data: Path, workdir: Path, sizes: dict) -> dict:
    """Train and infer one setting with one seed (or reuse the result of an earlier run)."""
    from bundle_runs import bundle_run_command, run_logged
    from custom_components.ife.attention import report_from_files
    from custom_components.core.atomic import write_json_atomic

    root = workdir / bundle_runs.slug(setting) / f"seed{seed}"
    configs, overrides = SETTINGS[setting]
    common = {"bundle_root": root, "dataset_dir": data, "num_workers": sizes["num_workers"], **overrides}
    train = {**common, **{k: v for k, v in sizes.items() if k != "num_workers"}, "seed": seed}
    recorded = {k: str(v) for k, v in train.items()}  # a run is reused only with the very same overrides
    if (root / "result.json").is_file():
        earlier = json.loads((root / "result.json").read_text())
        if earlier.get("train_overrides") == recorded:
            return earlier
    root.mkdir(parents=True, exist_ok=True)
    start = time.time()
    run_logged(bundle_run_command(BUNDLE, ["train.json", *configs], train), root / "train.log")
    train_s = time.time() - start
    # the network's sizes come back from the checkpoint's recipe; the attention switch is not in it
    infer = {**common, "output_dir": root / "inference", "save_figures": False}
    run_logged(bundle_run_command(BUNDLE, ["inference.json", *configs], infer), root / "inference.log")
    report = {"maps": {}}
    if overrides.get("network_def#attention", True):  # without attention the profiles are constant: nothing to score
        report, _ = report_from_files(root / "inference" / "attention_profiles.jsonl", data / "synthesis.json")
    result = {
        "setting": setting, "seed": seed, "train_s": round(train_s, 1), "train_overrides": recorded,
        **classification(root / "inference" / "predictions.csv", minority_classes(data)),
        "attention": {key: report["maps"][key] for key in MAPS if key in report["maps"]},
    }  # fmt: skip
    write_json_atomic(result, root / "result.json", indent=1)  # atomic: its presence means the run is done
    return result


def summarise(results: dict[str, list[dict]]) -> dict:
    summary = {}
    for setting, runs in results.items():
        entry = {key: bundle_runs.mean_std([r[key] for r in runs]) for key in [*METRICS, "train_s"]}
        entry["attention"] = {
            key: {
                stat: bundle_runs.mean_std([r["attention"][key][stat] for r in runs if key in r["attention"]])
                for stat in ("peak_in_band_share", "fixed_row_share", "contrast_positive", "contrast_negative")
            }
            for key in MAPS
            if any(key in r["attention"] for r in runs)
        }
        entry["seeds"] = [r["seed"] for r in runs]
        summary[setting] = entry
    return summary


def _pct(pair: list[float] | None) -> str:
    return "-" if pair is None else f"{100 * pair[0]:.1f} +- {100 * pair[1]:.1f}"


def markdown(summary: dict, meta: dict) -> str:
    sizes = meta["sizes"]
    lines = [
        f"# IFE: the paper's Tables 1-2 and Fig. 3 on synthetic gels ({meta['device'].upper()})",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`; {meta['minutes']:.0f} min in all. Data: "
        f"{sizes['count']} synthetic gels of {sizes['gel_size'][0]} x {sizes['gel_size'][1]} px (data seed "
        f"{meta['data_seed']}, difficulty {sizes['difficulty']}, every class at least {sizes['min_per_class']} gels; "
        f"test gels per class: {', '.join(f'{k} {v}' for k, v in meta['test_support'].items())}), input {sizes['image_size']} px, {sizes['max_epochs']} epochs, batch "
        f"{sizes['batch_size']}, lane layout normalisation {'on' if sizes['lane_layout'] else 'off (raw gels, as the paper)'}; "
        f"training seeds {meta['seeds']}. Mean +- standard deviation over the seeds, in %.",
        "",
        f"Protocol differences from the paper: synthetic gels, not its 14,540 real ones; {sizes['count']} gels, "
        f"{sizes['max_epochs']} epochs at {sizes['image_size']} px (the paper: 100 epochs at 224 px); the 9-class "
        "baseline's stage 4 keeps the multi-task branches' rows (stride 2); the checkpoint is selected on a validation "
        "split (the authors "
        "selected on the test set); every class is topped up to the minimum above (the paper's class mix otherwise), "
        f"so M1-Acc and M3-Acc are the recalls of the classes rarest in the paper's mix ({', '.join(meta['minority'])}), "
        "not of the (tied) rarest training counts. "
        "The paper's baseline is \"a ResNet18-based multi-class classification approach\": whether it kept the "
        "horizontal attention is not said, so its numbers stand beside both baseline rows.",
        "",
        "## Tables 1-2: classification on the test split",
        "",
        "| Setting | " + " | ".join(METRICS.values()) + " | Training time | Paper (real gels): "
        + " / ".join(METRICS.values()) + " |",
        "|---|" + "---|" * (len(METRICS) + 2),
    ]
    for setting, entry in summary.items():
        paper = PAPER_TABLE.get(setting)
        lines.append(
            f"| {setting} | " + " | ".join(_pct(entry[k]) for k in METRICS)
            + f" | {entry['train_s'][0]:.0f} s | {' / '.join(f'{v:.2f}' for v in paper) if paper else '-'} |"
        )
    lines += [
        "",
        "## Fig. 3: does the attention peak fall within the monoclonal band?",
        "",
        "Per positive test gel, the map's highest row against the band rows the generator drew (in the band: within "
        "half a map row or the band's half-width of its centre). *Fixed row*: the share the best constant answer "
        "reaches (every gel's peak at the same row); only a share above it shows localisation. Contrast: max / mean "
        "of the profile (1 = flat), on gels with and without a band.",
        "",
        "| Setting | Map | Peak in band | Fixed row | Contrast, with band | Contrast, without |",
        "|---|---|---|---|---|---|",
    ]
    for setting, entry in summary.items():
        for key, stats in entry["attention"].items():
            contrast = [
                "-" if stats[c] is None else f"{stats[c][0]:.2f} +- {stats[c][1]:.2f}"
                for c in ("contrast_positive", "contrast_negative")
            ]
            lines.append(
                f"| {setting} | {MAPS[key]} | {_pct(stats['peak_in_band_share'])} | "
                f"{_pct(stats['fixed_row_share'])} | {contrast[0]} | {contrast[1]} |"
            )
    lines += ["", "## Settings", "", "| Setting | Configs | Overrides of `train.json` |", "|---|---|---|"]
    for setting in summary:
        configs, overrides = SETTINGS[setting]
        shown = " ".join(f"--{k} {v}" for k, v in overrides.items()) or "(none)"
        lines.append(f"| {setting} | {' + '.join(['train.json', *configs])} | `{shown}` |")
    return "\n".join(lines) + "\n"


def figure(summary: dict, records: dict | None, path: Path) -> None:
    """The metrics per setting (bars, std as error bars) and, when given, the attention alignment of one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from custom_components.ife.figures import _save_figure

    fig, ax = plt.subplots(figsize=(12, 4.5))
    width = 0.8 / len(summary)
    for i, (setting, entry) in enumerate(summary.items()):
        means = [100 * (entry[k] or [np.nan])[0] for k in METRICS]
        stds = [100 * (entry[k] or [0, 0])[1] for k in METRICS]
        ax.bar(np.arange(len(METRICS)) + (i - (len(summary) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=setting)  # fmt: skip
    ax.set_xticks(np.arange(len(METRICS)), list(METRICS.values()))
    ax.set_ylabel("% (mean +- std over seeds)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    ax.set_title("IFE test split, synthetic gels")
    _save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    if records:
        from custom_components.ife.figures import plot_attention_alignment

        alignment = path.with_name(path.stem + "_attention.png")
        plot_attention_alignment(records, alignment, title="multi-task, both regularisers (the paper), first seed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=DEFAULT_SETTINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    parser.add_argument("--data-seed", type=int, default=42)
    parser.add_argument("--count", type=int, default=450, help="gels in the data set")
    parser.add_argument("--gel-size", type=int, nargs=2, default=[200, 300], help="rows, columns of the drawn gels")
    parser.add_argument("--min-per-class", type=int, default=30, help="every class at least this many gels")
    parser.add_argument(
        "--difficulty", type=float, default=2.25,
        help="the generator's difficulty (default 2.25; the bundle's docs/README.md says why)",
    )  # fmt: skip
    parser.add_argument("--image-size", type=int, default=128, help="network input size")
    parser.add_argument(
        "--lane-layout", action=argparse.BooleanOptionalAction, default=False,
        help="the bundle's lane normalisation (default off: the paper trains on the raw gel end to end)",
    )  # fmt: skip
    parser.add_argument("--max-epochs", type=int, default=12, help="12: at the demo's 8 the training loss still falls fast")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="default outputs/experiments/ife_paper_tables_d<D>")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    args = parser.parse_args()

    import torch

    from bundle_runs import run_logged
    from custom_components.ife.attention import report_from_files
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    start = time.time()
    device = "gpu" if torch.cuda.is_available() else "cpu"
    stem = f"ife_paper_tables_{device}_d{args.difficulty:g}"  # one set of results per difficulty
    workdir = (args.workdir or REPO / "outputs" / "experiments" / f"ife_paper_tables_d{args.difficulty:g}").resolve()
    data = workdir / "data"
    wanted = {"count": args.count, "seed": args.data_seed, "image_size": list(args.gel_size),
              "min_per_class": args.min_per_class, "difficulty": args.difficulty}  # fmt: skip
    if (data / "synthesis.json").is_file():
        drawn = json.loads((data / "synthesis.json").read_text())
        if {k: drawn.get(k) for k in wanted} != wanted:
            raise SystemExit(f"{data} holds another data set ({ {k: drawn.get(k) for k in wanted} }, asked for "
                             f"{wanted}): use another --workdir or delete it.")  # fmt: skip
    if not (data / "datalist.json").is_file():
        synthesize = [sys.executable, str(REPO / "scripts" / "synthesize.py"), "ife", "--output-dir", str(data),
                      "--count", str(args.count), "--seed", str(args.data_seed), "--size", *map(str, args.gel_size),
                      "--min-per-class", str(args.min_per_class), "--difficulty", str(args.difficulty)]  # fmt: skip
        workdir.mkdir(parents=True, exist_ok=True)
        run_logged(synthesize, workdir / "synthesize.log")
    sizes = {"count": args.count, "gel_size": args.gel_size, "min_per_class": args.min_per_class,
             "difficulty": args.difficulty, "image_size": args.image_size, "max_epochs": args.max_epochs,
             "warmup_epochs": 1, "batch_size": args.batch_size, "num_workers": args.num_workers,
             "lane_layout": args.lane_layout}  # fmt: skip
    train_sizes = {k: sizes[k] for k in ("image_size", "max_epochs", "warmup_epochs", "batch_size", "num_workers",
                                         "lane_layout")}  # fmt: skip
    results: dict[str, list[dict]] = {}
    meta = {
        "device": device, "machine": bundle_runs.machine(), "data_seed": args.data_seed, "seeds": args.seeds, "sizes": sizes,
        "command": shlex.join(["python", "scripts/experiments/ife_paper_tables.py", *sys.argv[1:]]),
        "test_support": {},
    }  # fmt: skip
    from custom_components.ife.classes import IFE_CLASSES

    testing = [entry["label"] for entry in json.loads((data / "datalist.json").read_text())["testing"]]
    meta["test_support"] = {name: testing.count(name) for name in IFE_CLASSES}
    meta["minority"] = minority_classes(data)
    for setting in args.settings:
        for seed in args.seeds:
            print(f"[{setting}, seed {seed}] training ...", flush=True)
            result = run_one(setting, seed, data, workdir, train_sizes)
            results.setdefault(setting, []).append(result)
            shown = ", ".join(f"{label} {result[k]:.3f}" for k, label in METRICS.items() if result[k] is not None)
            print(f"[{setting}, seed {seed}] {shown} ({result['train_s']:.0f} s)", flush=True)
            meta["minutes"] = (time.time() - start) / 60
            summary = summarise(results)
            write_json_atomic({"meta": meta, "summary": summary, "runs": results},
                              args.output_dir / f"{stem}.json", indent=1)  # fmt: skip
    write_text_atomic(markdown(summary, meta), args.output_dir / f"{stem}.md")
    paper_run = workdir / bundle_runs.slug("multi-task, both (the paper)") / f"seed{args.seeds[0]}" / "inference"
    records = None
    if (paper_run / "attention_profiles.jsonl").is_file():
        _, joined = report_from_files(paper_run / "attention_profiles.jsonl", data / "synthesis.json")
        records = {MAPS[k]: v for k, v in joined.items() if k in ("attention_severe", "attention_mild")}
    figure(summary, records, args.output_dir / f"{stem}.png")
    print(markdown(summary, meta))


if __name__ == "__main__":
    main()
