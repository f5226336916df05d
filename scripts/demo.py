#!/usr/bin/env python
"""Run both bundles end to end on the embedded synthetic data: generate, train, evaluate, infer.

Every step is the real ``python -m monai.bundle run`` command a user would type; the script prints each
command before running it, so the demo doubles as a copy-and-paste reference. For the IFE bundle it then scores
the attention maps against the band rows the generator drew (``scripts/attention_report.py``) and prints the share
of test gels whose attention peaks within the band next to the accuracy.

On a CPU the demo shrinks the problem (smaller images, fewer images and epochs, a narrow TransUNet) so it
finishes in minutes; the numbers it prints are then a smoke test, not the papers' results. ``--full`` keeps
the bundles' paper-size defaults (224 px IFE gels, 512 px OCT B-scans, 100 epochs): use it on a GPU.

Usage::

    python scripts/demo.py                      # both bundles, CPU-sized
    python scripts/demo.py --bundles ife        # one bundle
    python scripts/demo.py --full               # paper sizes (GPU)
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bundle_runs import CPU_DEMO_SETTINGS, FULL_DEMO_SETTINGS, bundle_run_command

REPO = Path(__file__).resolve().parents[1]

# Small settings that finish in minutes on a 2-core CPU, per bundle.
CPU_OVERRIDES = {name: {**settings, "num_workers": 2} for name, settings in CPU_DEMO_SETTINGS.items()}
BUNDLES = {"ife": "ife_multitask", "oct": "oct_fluid_seg"}
#: every IFE class gets at least this many gels (taken from Negative): with the paper's class mix the rarest class
#: (0.43 %) has two gels in 450 and none in the test split; 30 gives each class about 3 validation and 6 test gels
IFE_MIN_PER_CLASS = 30


def _run(cmd: list[str]) -> None:
    print("\n$ " + shlex.join(cmd), flush=True)
    start = time.time()
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"  ... done in {time.time() - start:.0f} s", flush=True)


def _print_report(path: Path, keys: tuple[str, ...]) -> dict:
    if not path.is_file():
        print(f"  (no report at {path})")
        return {}
    report = json.loads(path.read_text())
    flat = report.get("metrics", report)
    for key in keys:
        if key in flat:
            value = flat[key]
            print(f"  {key:>24}: {value:.4f}" if isinstance(value, float) else f"  {key:>24}: {value}")
    return report


def _print_per_class(path: Path) -> None:
    """Per-class recall on the test split beside the number of test gels it is computed on."""
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    recall, support = report.get("per_class_recall", {}), report.get("support", {})
    print(f"  {'class':>24}  test gels  recall")
    for name, count in support.items():
        value = recall.get(name)
        print(f"  {name:>24}  {count:>9}  {'-' if value is None else f'{value:.4f}'}")


def _print_attention(path: Path) -> None:
    """The share of test gels with a band whose attention peaks within it, beside the chance level of a fixed row."""
    if not path.is_file():
        print(f"  (no attention report at {path})")
        return
    for key, m in json.loads(path.read_text())["maps"].items():
        if key in ("attention_severe", "attention_mild") and m["peak_in_band_share"] is not None:
            branch = key.split("_")[1]
            print(
                f"  {branch + ' peak in band':>24}: {m['peak_in_band_share']:.4f} of {m['positives']} gels "
                f"with a band (a fixed row: {m['fixed_row_share']:.4f})"
            )


def run_bundle(name: str, workdir: Path, full: bool) -> dict:
    bundle_root = REPO / "bundles" / BUNDLES[name]
    sizes = dict(FULL_DEMO_SETTINGS[name] if full else CPU_OVERRIDES[name])
    data_dir = workdir / name / "data"
    train = {"bundle_root": bundle_root, "dataset_dir": data_dir, **sizes}
    eval_dir, infer_dir = workdir / name / "eval", workdir / name / "inference"

    if name == "ife":
        gels = {"count": sizes["synthetic_count"], "seed": 42, "min_per_class": IFE_MIN_PER_CLASS}
        drawn = json.loads((data_dir / "synthesis.json").read_text()) if (data_dir / "synthesis.json").is_file() else {}
        if {k: drawn.get(k) for k in gels} != gels or not (data_dir / "datalist.json").is_file():
            print(f"\n=== {BUNDLES[name]}: synthetic gels, every class at least {IFE_MIN_PER_CLASS} ===", flush=True)
            _run([sys.executable, str(REPO / "scripts" / "synthesize.py"), "ife", "--output-dir", str(data_dir),
                  *(f"--{k.replace('_', '-')}={v}" for k, v in gels.items())])  # fmt: skip
    print(f"\n=== {BUNDLES[name]}: train (synthetic data in {data_dir}) ===", flush=True)
    _run(bundle_run_command(bundle_root, ["train.json"], train))
    # evaluation and inference rebuild the trained network from its checkpoint's recipe (models/model.recipe.json):
    # no network, size or optimiser setting is repeated
    later = {"bundle_root": bundle_root, "dataset_dir": data_dir, "num_workers": sizes.get("num_workers", 2)}
    print(f"\n=== {BUNDLES[name]}: evaluate on the held-out test split ===", flush=True)
    _run(bundle_run_command(bundle_root, ["train.json", "evaluate.json"], {**later, "output_dir": eval_dir}))
    print(f"\n=== {BUNDLES[name]}: inference on the test images ===", flush=True)
    _run(bundle_run_command(bundle_root, ["inference.json"], {**later, "output_dir": infer_dir}))
    if name == "ife":
        print("\n=== ife_multitask: where does the attention peak? (against the band rows the generator drew) ===")
        report = ["--inference-dir", str(infer_dir), "--synthesis", str(data_dir / "synthesis.json")]
        _run([sys.executable, str(REPO / "scripts" / "attention_report.py"), *report])
    return {"bundle_root": bundle_root, "data": data_dir, "eval": eval_dir, "inference": infer_dir}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundles", nargs="+", choices=sorted(BUNDLES), default=sorted(BUNDLES))
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "demo")
    parser.add_argument("--full", action="store_true", help="paper-size settings (use a GPU)")
    args = parser.parse_args()

    import torch  # imported late so --help is instant

    if not args.full:
        device = "a GPU" if torch.cuda.is_available() else "the CPU"
        print(
            f"Demo on {device} at a SMALL size so it finishes in minutes: IFE gels at "
            f"{CPU_OVERRIDES['ife']['image_size']} px for {CPU_OVERRIDES['ife']['max_epochs']} epochs, OCT B-scans at "
            f"{CPU_OVERRIDES['oct']['image_size']} px with a narrow TransUNet for {CPU_OVERRIDES['oct']['max_epochs']} "
            "epochs. Its numbers are a smoke test, not the papers' results; `--full` runs the paper sizes.",
            flush=True,
        )
    start = time.time()
    outputs = {name: run_bundle(name, args.workdir.resolve(), args.full) for name in args.bundles}

    print("\n=== Results ===")
    if "ife" in outputs:
        print("IFE multi-task classifier (test split):")
        _print_report(outputs["ife"]["eval"] / "metrics.json", ("accuracy", "macro_f1", "fnr", "m1_acc", "m3_acc"))
        _print_per_class(outputs["ife"]["eval"] / "metrics.json")
        _print_attention(outputs["ife"]["inference"] / "attention_report.json")
    if "oct" in outputs:
        print("OCT fluid segmentation (test split):")
        _print_report(
            outputs["oct"]["eval"] / "metrics.json",
            ("dice", "jaccard", "dice_fluid_scans", "false_fluid_rate", "noisy_dice", "noisy_jaccard"),
        )
    print("\nWhere the outputs are:")
    for name, paths in outputs.items():
        print(f"  {BUNDLES[name]}:")
        print(f"    trained model      {paths['bundle_root'] / 'models' / 'model.pt'}")
        print(f"    TensorBoard logs   {paths['bundle_root'] / 'eval'}")
        print(f"    evaluation report  {paths['eval']}")
        print(f"    predictions        {paths['inference']}")
        if name == "ife":
            print(f"    attention report   {paths['inference'] / 'attention_report.png'}")
        print(f"    synthetic data     {paths['data']}")
    print(f"\nDemo finished in {(time.time() - start) / 60:.1f} min.")


if __name__ == "__main__":
    main()
