#!/usr/bin/env python
"""Do the speed settings cost accuracy? One bundle trained with the reference and the fast settings, same data,
the same training seeds for both.

- ``reference``: fp32, contiguous memory, the cache on the host, no ``torch.compile``.
- ``fast``: the defaults for the device: on CUDA bf16 autocast, channels_last and the cache (and for OCT the
  augmentation) on the GPU; on a CPU, where MONAI's trainers do not autocast, channels_last only. ``--compile``
  adds ``torch.compile`` to the fast run.

Each run is the bundle's own ``train.json`` followed by ``evaluate.json`` on the test split (evaluation in fp32,
as the bundle reports); the table gives the test metrics of every seed, their mean, and the training time (the
synthetic data is generated once, before any run is timed). Rounding differences alone make two runs of one
setting diverge (a ReLU input of 1e-7 flips sign), so one seed per setting says little: ``--seeds`` runs several.
The runs are the real ``python -m monai.bundle run`` commands, logged beside the results.

Writes ``fast_settings_<bundle>_<device>.json`` and ``.md`` into the bundle's ``docs/results`` (``--output-dir``).

Usage::

    python scripts/experiments/fast_settings.py ife                        # CPU-sized, seeds 42, 0, 1 (25 minutes)
    python scripts/experiments/fast_settings.py ife --paper-size           # 224 px, 100 epochs: a GPU
    python scripts/experiments/fast_settings.py oct --paper-size --compile
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLES = {"ife": "ife_multitask", "oct": "oct_fluid_seg"}
METRICS = {
    "ife": (("accuracy", "Accuracy"), ("macro_f1", "Macro F1"), ("fnr", "FNR")),
    "oct": (("dice", "Dice"), ("jaccard", "Jaccard")),
}
ON_DEVICE = {"ife": "cache_on_device", "oct": "augment_on_device"}


def _settings(kind: str, cuda: bool, fast: bool, compile_: bool) -> dict:
    if not fast:
        return {"amp": False, "channels_last": False, ON_DEVICE[kind]: False, "compile": False}
    return {"amp": cuda, "channels_last": True, ON_DEVICE[kind]: cuda, "compile": compile_}


def _metric(report: dict, key: str) -> float:
    value = report[key]
    return float(value["mean"] if isinstance(value, dict) else value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(BUNDLES))
    parser.add_argument("--paper-size", action="store_true", help="the bundle's paper-size defaults (for a GPU)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile in the fast run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1], help="training seeds (data: the first)")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="default: outputs/experiments/fast_settings_<kind>")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: the bundle's docs/results")
    args = parser.parse_args()

    import torch

    from bundle_runs import CPU_DEMO_SETTINGS, FULL_DEMO_SETTINGS, train_and_evaluate
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    started = time.time()
    cuda = torch.cuda.is_available()
    bundle = REPO / "bundles" / BUNDLES[args.kind]
    work = (args.workdir or REPO / "outputs" / "experiments" / f"fast_settings_{args.kind}").resolve()
    output = args.output_dir or bundle / "docs" / "results"
    work.mkdir(parents=True, exist_ok=True)
    size = (FULL_DEMO_SETTINGS if args.paper_size else CPU_DEMO_SETTINGS)[args.kind]  # the README demo's sizes
    data = work / "data"
    from custom_components.core.synthetic import prepare_dataset
    from custom_components.ife.synthetic import synthesize_ife_dataset
    from custom_components.oct.synthetic import synthesize_oct_dataset

    image_size = size.get("image_size", 224 if args.kind == "ife" else 512)
    synthesize = synthesize_ife_dataset if args.kind == "ife" else synthesize_oct_dataset
    prepare_dataset(data, synthesize, size["synthetic_count"], args.seeds[0],
                    None if args.kind == "ife" else [image_size, image_size])  # as train.json would, before timing
    common = {**size, "dataset_dir": str(data), "num_workers": args.num_workers}

    runs: dict = {"reference": {}, "fast": {}}
    for seed in args.seeds:
        for name in runs:
            root = work / f"{name}_seed{seed}"
            settings = _settings(args.kind, cuda, name == "fast", args.compile)
            overrides = {**common, **settings, "seed": seed, "bundle_root": str(root)}
            print(f"[{name}, seed {seed}] training with {settings} ...", flush=True)
            train_s, report = train_and_evaluate(bundle, overrides, root)
            runs[name][seed] = {"settings": settings, "train_s": round(train_s, 1),
                                "metrics": {key: _metric(report, key) for key, _ in METRICS[args.kind]}}  # fmt: skip
            print(f"[{name}, seed {seed}] {runs[name][seed]['metrics']} in {train_s:.0f} s", flush=True)

    device = "gpu" if cuda else "cpu"
    result = {
        "bundle": BUNDLES[args.kind], "machine": bundle_runs.machine(), "seeds": args.seeds, "sizes": size,
        "command": shlex.join([Path(sys.argv[0]).name] + sys.argv[1:]),
        "minutes": round((time.time() - started) / 60, 1),
        "runs": runs,
    }  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, output / f"fast_settings_{args.kind}_{device}.json")
    header = " | ".join(label for _, label in METRICS[args.kind])
    lines = [
        f"# Speed settings against the reference ({BUNDLES[args.kind]}, {device.upper()})", "",
        f"Machine: {result['machine']}. One data set (seed {args.seeds[0]}), training seeds {args.seeds} for both "
        f"settings; sizes {size}. Command: `python scripts/experiments/{result['command']}` "
        f"({result['minutes']} min in all).", "",
        f"| Run | Settings | Seed | {header} | Training time |",
        "|---|---|---|" + "---|" * len(METRICS[args.kind]) + "---|",
    ]  # fmt: skip
    for name, by_seed in runs.items():
        on = ", ".join(k for k, v in next(iter(by_seed.values()))["settings"].items() if v) or "fp32, none on"
        for seed, run in by_seed.items():
            values = " | ".join(f"{run['metrics'][key]:.4f}" for key, _ in METRICS[args.kind])
            lines.append(f"| {name} | {on} | {seed} | {values} | {run['train_s']:.0f} s |")
        means = [statistics.mean(r["metrics"][key] for r in by_seed.values()) for key, _ in METRICS[args.kind]]
        spreads = [statistics.pstdev(r["metrics"][key] for r in by_seed.values()) for key, _ in METRICS[args.kind]]
        values = " | ".join(f"**{m:.4f}** +- {d:.4f}" for m, d in zip(means, spreads))
        seconds = statistics.mean(r["train_s"] for r in by_seed.values())
        lines.append(f"| {name} | {on} | mean +- std | {values} | {seconds:.0f} s |")
    write_text_atomic("\n".join(lines) + "\n", output / f"fast_settings_{args.kind}_{device}.md")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
