#!/usr/bin/env python
"""Does the IFE attention find the band? Every attention setting trained and measured against the band rows the
generator drew (the paper's Fig. 3, made quantitative).

Everything runs through the bundle's own commands (``python -m monai.bundle run``) at the README demo's CPU size
(450 synthetic gels of 600 x 400 px, 128 px input, 8 epochs, batch 32) with one data set for all runs:

1. synthesize the gels once (``synthesis.json`` records every band's row and half-width);
2. per setting and seed: ``train.json`` with the setting's overrides, then ``inference.json`` on the test split
   (figures off), which writes ``predictions.csv`` and ``attention_profiles.jsonl``;
3. score each run with :func:`custom_components.ife.attention.report_from_files` (peak in the band, the share a
   fixed row would reach, contrast, saturated maps) and the test accuracy and macro F1 from ``predictions.csv``.

A run whose ``result.json`` exists in ``--workdir`` is reused (delete its folder to train it again); one that
another invocation has started (its ``started`` file) is left to it, so two invocations can share a machine.
Writes
``ife_attention.json`` and ``ife_attention.md`` (tables, machine, command, time taken) and
``ife_attention_<setting>.png`` (mean profiles of the positives aligned on their band, negatives beside them; seed
0) into ``--output-dir`` (default: the bundle's ``docs/results``).

Usage::

    python scripts/experiments/ife_attention.py                 # 7 settings x 3 seeds, about an hour on a 2-core CPU
    python scripts/experiments/ife_attention.py --settings paper evidence --seeds 0
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ife_multitask"

#: the paper's regularisers at the authors' scale (their sums over a batch of 64 with their factors) on ResNet18's
#: stage-4 rows: ``configs/paper_attention.json``
PAPER = json.loads((BUNDLE / "configs" / "paper_attention.json").read_text())
#: the class-evidence target on the attention odds, stage 4 keeping stage 3's rows (the bundle's default from 0.3.0
#: to 0.7.0: ``configs/class_evidence_attention.json``)
EVIDENCE = json.loads((BUNDLE / "configs" / "class_evidence_attention.json").read_text())
SETTINGS = {
    "paper": PAPER,
    "paper, untied attention": {**PAPER, "tie_attention": False},
    "no regularisers": {**PAPER, "lambda_inner": 0.0, "lambda_inter": 0.0},
    "inner only": {**PAPER, "lambda_inter": 0.0},
    "inter only": {**PAPER, "lambda_inner": 0.0},
    "odds, sharpened": {**PAPER, "attention_distribution": "odds", "inner_scale": 1.0, "inter_scale": 1.0},
    "evidence": {**EVIDENCE, "stage4_row_stride": 2},
    "paper, 8 rows": {**PAPER, "stage4_row_stride": 1},
    "evidence, 8 rows": {**EVIDENCE, "stage4_row_stride": 1},
}
#: the README demo's CPU size
DEMO = {"image_size": 128, "synthetic_count": 450, "max_epochs": 8, "warmup_epochs": 1, "batch_size": 32, "num_workers": 2}
DATA_SEED = 42
MAPS = {"attention_severe": "severe (stage 4)", "attention_mild": "mild (stage 4)", "attention_shared": "shared (stage 3)"}


def _classification(predictions: Path) -> dict:
    from custom_components.ife.classes import label_to_index
    from custom_components.ife.metrics import accuracy, confusion_matrix, macro_f1

    with open(predictions, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    truth = [label_to_index(r["label"]) for r in rows]
    called = [label_to_index(r["prediction"]) for r in rows]
    cm = confusion_matrix(np.array(truth), np.array(called))
    return {"accuracy": accuracy(cm), "macro_f1": macro_f1(cm), "test_gels": len(rows)}


def run_one(setting: str, seed: int, data: Path, workdir: Path, sizes: dict) -> dict:
    """Train and infer one setting with one seed (or reuse the result of an earlier run)."""
    from bundle_runs import bundle_run_command, run_logged
    from custom_components.ife.attention import report_from_files
    from custom_components.core.atomic import write_json_atomic

    root = workdir / bundle_runs.slug(setting) / f"seed{seed}"
    result_file = root / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    try:  # a second invocation on the same workdir (two CPU-sized workers) leaves a run under way to the other
        root.mkdir(parents=True, exist_ok=True)
        (root / "started").open("x").close()
    except FileExistsError:
        return None
    common = {"bundle_root": root, "dataset_dir": data, "num_workers": sizes["num_workers"]}
    start = time.time()
    train = {**common, **sizes, **SETTINGS[setting], "seed": seed}
    run_logged(bundle_run_command(BUNDLE, ["train.json"], train), root / "train.log")
    train_s = time.time() - start
    infer = {**common, "output_dir": root / "inference", "save_figures": False}
    run_logged(bundle_run_command(BUNDLE, ["inference.json"], infer), root / "inference.log")
    report, _ = report_from_files(root / "inference" / "attention_profiles.jsonl", data / "synthesis.json")
    result = {
        "setting": setting,
        "seed": seed,
        "train_s": round(train_s, 1),
        **_classification(root / "inference" / "predictions.csv"),
        "maps": report["maps"],
    }
    write_json_atomic(result, result_file, indent=1)  # atomic: its presence means the run is done
    return result


def summarise(results: dict[str, list[dict]]) -> dict:
    """Mean and standard deviation over seeds of every number, per setting."""
    summary = {}
    for setting, runs in results.items():
        entry = {k: bundle_runs.mean_std([r[k] for r in runs]) for k in ("accuracy", "macro_f1", "train_s")}
        for key in MAPS:
            maps = [r["maps"][key] for r in runs if key in r["maps"]]
            entry[key] = {
                k: bundle_runs.mean_std([m[k] for m in maps])
                for k in ("peak_in_band_share", "fixed_row_share", "contrast_positive", "contrast_negative",
                          "saturated", "median_peak_offset")
            }  # fmt: skip
        entry["seeds"] = [r["seed"] for r in runs]
        summary[setting] = entry
    return summary


def _fmt(pair, percent: bool = False, digits: int = 2) -> str:
    if pair is None:
        return "-"
    mean, std = pair
    if percent:
        return f"{100 * mean:.0f} +- {100 * std:.0f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def markdown(summary: dict, meta: dict) -> str:
    lines = [
        "# IFE attention against the generator's band rows",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`. Time taken: {meta['minutes']:.0f} min"
        f"{' (tabulating runs trained earlier in the same workdir)' if meta['summary_only'] else ''}. "
        f"Data: {meta['sizes']['synthetic_count']} synthetic gels (600 x 400 px, data seed {DATA_SEED}), input "
        f"{meta['sizes']['image_size']} px, {meta['sizes']['max_epochs']} epochs, batch {meta['sizes']['batch_size']}; "
        f"training seeds {meta['seeds']} (fewer where the table says so; the seed also draws the validation split). Test split: {meta['test_gels']} "
        f"gels, {meta['positives']} with a band. Mean +- standard deviation over the seeds.",
        "",
        "A positive gel's peak is *in the band* when the image row at the centre of the map's highest row is within "
        "half a map row (the resolution of the map) or the band's half-width of the band's centre. *Fixed row*: the "
        "share that the best constant answer (every gel's peak at the same map row) reaches; only a share above it "
        "shows localisation. Contrast: max / mean of a map (1 = flat). Saturated: maps of the test split whose rows "
        "all lie within 0.05 of 0 or all of 1.",
        "",
    ]
    for key, title in MAPS.items():
        lines += [
            f"## {title}",
            "",
            "| setting | seeds | peak in band (%) | fixed row (%) | median peak - band (rows) | contrast, with band | "
            "contrast, without | saturated maps | test accuracy (%) | test macro F1 (%) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for setting, entry in summary.items():
            m = entry[key]
            if m["peak_in_band_share"] is None:
                continue
            lines.append(
                f"| {setting} | {len(entry['seeds'])} | {_fmt(m['peak_in_band_share'], True)} | {_fmt(m['fixed_row_share'], True)} | "
                f"{_fmt(m['median_peak_offset'], digits=0)} | {_fmt(m['contrast_positive'])} | "
                f"{_fmt(m['contrast_negative'])} | {_fmt(m['saturated'], digits=1)} | "
                f"{_fmt(entry['accuracy'], True)} | {_fmt(entry['macro_f1'], True)} |"
            )
        lines.append("")
    lines += ["## Settings", "", "| setting | overrides of `train.json` |", "|---|---|"]
    for setting, overrides in SETTINGS.items():
        if setting in summary:
            lines.append(f"| {setting} | `{' '.join(f'--{k} {v}' for k, v in overrides.items())}` |")
    return "\n".join(lines) + "\n"


def figure(setting: str, workdir: Path, data: Path, path: Path) -> None:
    from custom_components.ife.attention import report_from_files
    from custom_components.ife.figures import plot_attention_alignment

    profiles = workdir / bundle_runs.slug(setting) / "seed0" / "inference" / "attention_profiles.jsonl"
    if profiles.is_file():
        report, records = report_from_files(profiles, data / "synthesis.json")
        plot_attention_alignment({MAPS.get(k, k): v for k, v in records.items() if k in MAPS}, path, title=setting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=sorted(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "experiments" / "ife_attention")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    parser.add_argument("--epochs", type=int, default=DEMO["max_epochs"])
    parser.add_argument("--count", type=int, default=DEMO["synthetic_count"])
    parser.add_argument(
        "--summary-only", action="store_true", help="train nothing: tabulate the runs already in --workdir"
    )
    args = parser.parse_args()

    from custom_components.core.synthetic import prepare_dataset
    from custom_components.ife.synthetic import synthesize_ife_dataset
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    sizes = {**DEMO, "max_epochs": args.epochs, "synthetic_count": args.count}
    start = time.time()
    workdir = args.workdir.resolve()
    data = workdir / "data"
    prepare_dataset(data, synthesize_ife_dataset, args.count, DATA_SEED)
    results: dict[str, list[dict]] = {}
    for setting in args.settings:
        for seed in args.seeds:
            done = workdir / bundle_runs.slug(setting) / f"seed{seed}" / "result.json"
            if args.summary_only and not done.is_file():
                continue
            result = run_one(setting, seed, data, workdir, sizes)
            if result is None:
                print(f"{setting:>24} seed {seed}: under way in another invocation, left to it", flush=True)
                continue
            results.setdefault(setting, []).append(result)
            severe = result["maps"].get("attention_severe", {})
            print(
                f"{setting:>24} seed {seed}: accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f}, "
                f"severe peak in band {severe.get('peak_in_band_share')} (fixed row {severe.get('fixed_row_share')})",
                flush=True,
            )
    summary = summarise(results)
    first = next(iter(results.values()))[0]["maps"]["attention_severe"]
    meta = {
        "machine": bundle_runs.machine(),
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "minutes": (time.time() - start) / 60,
        "summary_only": args.summary_only,
        "sizes": sizes,
        "seeds": args.seeds,
        "test_gels": first["gels"],
        "positives": first["positives"],
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    report = {"meta": meta, "settings": {s: SETTINGS[s] for s in results}, "summary": summary, "runs": results}
    write_json_atomic(report, args.output_dir / "ife_attention.json", indent=1)
    write_text_atomic(markdown(summary, meta), args.output_dir / "ife_attention.md")
    for setting in results:
        figure(setting, workdir, data, args.output_dir / f"ife_attention_{bundle_runs.slug(setting)}.png")
    print(f"wrote {args.output_dir / 'ife_attention.md'} in {meta['minutes']:.0f} min")


if __name__ == "__main__":
    main()
