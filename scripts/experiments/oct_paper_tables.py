#!/usr/bin/env python
"""The OCT paper's Tables 1, 3 and 4, rerun on synthetic B-scans with grouped 5-fold cross-validation.

- Table 1: TransUNet against a two-convolution U-Net of about the same size (MONAI's ``BasicUNet``), MONAI's
  ``AttentionUnet`` and MONAI's ``SwinUNETR`` (not the paper's Swin-Unet; R2U-Net and UNet3+ are not provided), all
  with the Dice loss, on clean B-scans.
- Table 3: TransUNet with each of the paper's losses (the combined loss of Eq. 5, focal Tversky, weighted BCE,
  Tversky) and the Dice loss (the same runs as Table 1's TransUNet row), on clean B-scans.
- Table 4: the same five losses trained and tested on a noisy copy of the data set, as the paper did ("Gaussian
  noise is applied to the images in the pixel domain. This results in a new dataset"); beside them, the Table 3
  models (trained clean) tested on noisy B-scans, the bundle's own robustness test (``evaluate.json``).

Every configuration is ``scripts/cross_validate.py`` (the bundle's ``train.json`` and ``evaluate.json`` per fold,
folds stratified by fluid and kept whole by the datalist's ``group``: each synthetic B-scan is its own group, as
each is drawn on its own; a real data set names the eye or volume there). Scores are those of the held-out folds:
Dice and Jaccard over all held-out B-scans (a scan without fluid counts 1 when nothing is predicted; see the
bundle's README), then mean +- std over the folds. The noisy copy adds zero-mean Gaussian noise to every B-scan of
the data set (training, validation and test), of the sigma ``evaluate.json`` tests robustness with (``noise_sigma``,
a fraction of the intensity range), clipped, saved as 8-bit PNG; its draw is seeded by the file name and
``--noise-seed``, which differs from ``evaluate.json``'s own noise seed. Finished cross-validations in ``--workdir``
are reused when they ran with the same overrides; a data set there that differs from the arguments is refused.

Writes ``oct_paper_tables_<device>.json`` / ``.md`` (tables, machine, sizes, seed, time, the exact command) and
``oct_paper_tables_<device>_curves.png`` (training loss and validation Dice per epoch, mean over the folds, from
each fold's TensorBoard log) into ``--output-dir``. A configuration whose ``cross_validation.json`` is complete in
``--workdir`` is reused.

Usage::

    python scripts/experiments/oct_paper_tables.py        # CPU-sized: 160 B-scans at 96 px, narrow filters, 15 epochs
    python scripts/experiments/oct_paper_tables.py --count 379 --image-size 512 --filters 64 128 256 512 1024 \\
        --max-epochs 100 --learning-rate 0.0003 --num-workers 8                    # the paper's sizes, on a GPU
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "oct_fluid_seg"
#: network -> extra config after train.json (``configs/networks``)
NETWORKS = {
    "TransUNet": None,
    "U-Net (BasicUNet)": "networks/unet.json",
    "Attention U-Net": "networks/attention_unet.json",
    "SwinUNETR (not Swin-Unet)": "networks/swin_unetr.json",
}
#: loss name of the bundle -> the paper's name for it
LOSSES = {"combined": "combined (the paper's)", "focal_tversky": "focal Tversky", "wbce": "weighted BCE",
          "tversky": "Tversky", "dice": "Dice"}  # fmt: skip
#: the paper's numbers (real Cirrus B-scans, 5-fold, mean over folds: "Dice (validation)"), for comparison
PAPER = {
    "table1": {"TransUNet": (89.54, 80.40), "U-Net (BasicUNet)": (85.90, 78.70), "Attention U-Net": (88.30, 79.30),
               "SwinUNETR (not Swin-Unet)": (77.60, 65.60)},
    "table3": {"combined": (95.524, 83.52), "focal_tversky": (95.14, 83.11), "wbce": (68.66, 63.03),
               "tversky": (93.33, 82.30)},
    "table4": {"combined": (92.79, 67.88), "focal_tversky": (86.88, 62.82), "wbce": (30.01, 27.69),
               "tversky": (89.63, 64.25)},
}  # fmt: skip
SCORES = ("dice", "jaccard", "noisy_dice", "noisy_jaccard")
#: the robustness test's noise (``evaluate.json``), also the noise of the noisy data set, so Table 4's columns match
NOISE_SIGMA = float(json.loads((BUNDLE / "configs" / "evaluate.json").read_text())["noise_sigma"])


def runs() -> dict[str, dict]:
    """Every cross-validation the tables need, once each: name -> network, loss, data."""
    out = {f"{network}, dice, clean": {"network": network, "loss": "dice", "data": "clean"} for network in NETWORKS}
    for data in ("clean", "noisy"):
        for loss in LOSSES:
            out.setdefault(f"TransUNet, {loss}, {data}", {"network": "TransUNet", "loss": loss, "data": data})
    return out


def write_noisy_copy(clean: Path, noisy: Path, sigma: float, seed: int) -> None:
    """The data set with every B-scan made noisy (masks and datalist copied as they are; ``noise.json`` records the
    noise). An existing copy made with other noise is refused."""
    import shutil

    import torch
    from monai.data import MetaTensor
    from PIL import Image

    from custom_components.oct.transforms import SeededGaussianNoised
    from custom_components.core.atomic import write_json_atomic

    record = {"sigma": sigma, "seed": seed, "clean": str(clean)}
    if (noisy / "datalist.json").is_file():
        made = json.loads((noisy / "noise.json").read_text()) if (noisy / "noise.json").is_file() else None
        if made != record:
            raise SystemExit(f"{noisy} was made with other noise ({made}, asked for {record}): delete it.")
        return
    add_noise = SeededGaussianNoised("image", sigma=sigma, seed=seed)  # the bundle's noise, on [0, 1] pixels
    (noisy / "images").mkdir(parents=True, exist_ok=True)
    shutil.copytree(clean / "masks", noisy / "masks", dirs_exist_ok=True)
    for path in sorted((clean / "images").glob("*.png")):
        pixels = np.asarray(Image.open(path), dtype=np.float32) / 255.0
        image = MetaTensor(torch.from_numpy(pixels), meta={"filename_or_obj": str(path)})
        out = add_noise({"image": image})["image"].numpy()
        Image.fromarray(np.round(out * 255).astype(np.uint8), mode="L").save(noisy / "images" / path.name)
    write_json_atomic(record, noisy / "noise.json")
    write_json_atomic(json.loads((clean / "datalist.json").read_text()), noisy / "datalist.json")  # last: complete


def cross_validate(name: str, spec: dict, data: Path, workdir: Path, args: argparse.Namespace) -> dict:
    """One configuration's cross-validation (or the finished one of an earlier invocation)."""
    from bundle_runs import run_logged

    out = workdir / bundle_runs.slug(name)
    result = out / "cross_validation.json"
    overrides = {"loss_name": spec["loss"], "filters": "[" + ",".join(map(str, args.filters)) + "]",
                 "learning_rate": str(args.learning_rate), "batch_size": str(args.batch_size),
                 "num_workers": str(args.num_workers)}  # fmt: skip
    configs = ["train.json"] + ([NETWORKS[spec["network"]]] if NETWORKS[spec["network"]] else [])
    # as cross_validate.py records them
    recorded = {**overrides, "image_size": str(args.image_size), "max_epochs": str(args.max_epochs)}
    if result.is_file():
        done = json.loads(result.read_text())
        same = (done["overrides"], done["configs"], done["seed"], done["folds"]) == (recorded, configs, args.seed, args.folds)
        if same and done["folds_done"] == args.folds:
            return done
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(REPO / "scripts" / "cross_validate.py"), "--dataset-dir", str(data), "--output-dir",
           str(out), "--folds", str(args.folds), "--seed", str(args.seed), "--max-epochs", str(args.max_epochs),
           "--image-size", str(args.image_size)]  # fmt: skip
    for key, value in overrides.items():
        cmd += ["--override", key, value]
    for config in configs[1:]:
        cmd += ["--config", config]
    run_logged(cmd, out / "cross_validate.log", cwd=REPO)
    return json.loads(result.read_text())


def curves(folder: Path) -> dict[str, np.ndarray]:
    """Per-epoch training loss and validation Dice, mean over the folds, from each fold's TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    per_fold: dict[str, list[list[float]]] = {"train_loss_total": [], "val_dice": []}
    for log_dir in sorted(folder.glob("fold_*/eval")):
        events = EventAccumulator(str(log_dir))
        events.Reload()
        for tag in per_fold:
            if tag in events.Tags()["scalars"]:
                per_fold[tag].append([e.value for e in events.Scalars(tag)])
    out = {}
    for tag, folds in per_fold.items():
        if folds:
            epochs = min(map(len, folds))
            out[tag] = np.mean([f[:epochs] for f in folds], axis=0)
    return out


def plot_curves(groups: dict[str, dict[str, dict[str, np.ndarray]]], path: Path) -> None:
    """One row per table, training loss (left) and validation Dice (right) per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from custom_components.ife.figures import _save_figure

    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 3.6 * len(groups)), squeeze=False, layout="constrained")
    for row, (title, series) in enumerate(groups.items()):
        for col, (tag, label) in enumerate((("train_loss_total", "training loss"), ("val_dice", "validation Dice"))):
            ax = axes[row, col]
            for name, values in series.items():
                if tag in values:
                    ax.plot(np.arange(1, len(values[tag]) + 1), values[tag], marker=".", label=name)
            ax.set_title(f"{title}: {label}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if col == 1:
                ax.set_ylim(0, 1)
                ax.legend(fontsize=8)
    fig.suptitle("Mean over the folds (each fold's validation split); losses differ in scale across loss functions")
    _save_figure(fig, path)
    plt.close(fig)


def _cell(stats: dict, key: str) -> str:
    value = stats.get(key) or {}
    return "-" if value.get("mean") is None else f"{100 * value['mean']:.1f} +- {100 * value['std']:.1f}"


def _paper(pair: tuple[float, float] | None) -> str:
    """The paper's (Dice, validation Dice) as the two columns validation | other."""
    return "- | -" if pair is None else f"{pair[1]:.2f} | {pair[0]:.2f}"


def markdown(results: dict, meta: dict) -> str:
    sizes = meta["sizes"]
    lines = [
        f"# OCT: the paper's Tables 1, 3 and 4 on synthetic B-scans ({meta['device'].upper()})",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`; {meta['minutes']:.0f} min in all. Data: "
        f"{sizes['count']} synthetic B-scans at {sizes['image_size']} px (seed {meta['seed']}, difficulty "
        f"{sizes['difficulty']}); the {meta['pool']} B-scans of its training and validation lists in "
        f"{sizes['folds']} grouped folds (its test list is not used); TransUNet and U-Nets with filters "
        f"{sizes['filters']}, {sizes['max_epochs']} epochs, learning rate {sizes['learning_rate']}, batch "
        f"{sizes['batch_size']}; each fold selects its checkpoint on a validation split of its training folds. "
        f"Noisy data: Gaussian noise of sigma {sizes['noise_sigma']} of the intensity range on every B-scan. Scores "
        "in %, mean +- std over the held-out folds. Paper: real Cirrus B-scans at 512 px, 100 epochs; its tables give "
        "\"Dice (validation)\": the held-out folds here compare with the validation figure, the other is presumably "
        "on the training folds.",
        "",
        "## Table 1: networks, Dice loss, clean B-scans",
        "",
        "| Network | Parameters | Dice | Jaccard | Paper: validation Dice | Paper: Dice |",
        "|---|---|---|---|---|---|",
    ]
    for network in NETWORKS:
        stats = results.get(f"{network}, dice, clean")
        if stats:
            paper = PAPER["table1"].get(network)
            lines.append(
                f"| {network} | {meta['parameters'].get(network, '-')} | {_cell(stats, 'dice')} | "
                f"{_cell(stats, 'jaccard')} | {_paper(paper)} |"
            )
    lines += ["", "R2U-Net and UNet3+ (the paper's other rows) are not provided.", ""]
    for table, data, title in (("table3", "clean", "Table 3: TransUNet losses, clean B-scans"),
                               ("table4", "noisy", "Table 4: TransUNet losses, trained and tested on noisy B-scans")):  # fmt: skip
        lines += [f"## {title}", ""]
        if data == "clean":
            lines += ["| Loss | Dice | Jaccard | Tested on noisy B-scans: Dice | Paper: validation Dice | Paper: Dice |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
        else:
            lines += ["| Loss | Dice | Jaccard | Trained clean, tested noisy: Dice | Paper: validation Dice | Paper: Dice |",
                      "|---|---|---|---|---|---|"]  # fmt: skip
        for loss, label in LOSSES.items():
            stats = results.get(f"TransUNet, {loss}, {data}")
            if not stats:
                continue
            clean = results.get(f"TransUNet, {loss}, clean") or {}
            paper = PAPER[table].get(loss)
            lines.append(
                f"| {label} | {_cell(stats, 'dice')} | {_cell(stats, 'jaccard')} | {_cell(clean, 'noisy_dice')} | "
                f"{_paper(paper)} |"
            )
        lines.append("")
    lines += ["Training curves: `" + meta["curves"] + "`.", ""]
    return "\n".join(lines)


def _parameters(spec_network: str, args: argparse.Namespace) -> str:
    """The network's parameter count at these sizes, built from the bundle's own config."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    files = [BUNDLE / "configs" / "train.json"] + ([BUNDLE / "configs" / NETWORKS[spec_network]]
                                                    if NETWORKS[spec_network] else [])  # fmt: skip
    parser.read_config([str(f) for f in files])
    parser["image_size"] = args.image_size
    parser["filters"] = list(args.filters)
    parser["classes"] = ["fluid"]  # the paper's one class, set: counting parameters needs no data
    network = parser.get_parsed_content("network_def")
    return f"{sum(p.numel() for p in network.parameters()) / 1e6:.2f} M"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=160, help="B-scans in the data set")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--filters", type=int, nargs=5, default=[16, 32, 64, 128, 256])
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--learning-rate", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="data, folds and training")
    parser.add_argument("--difficulty", type=float, default=1.0, help="the generator's difficulty (1: its default)")
    parser.add_argument("--noise-seed", type=int, default=1, help="of the noisy data set's noise")
    parser.add_argument("--only", nargs="+", choices=list(runs()), help="run only these configurations")
    parser.add_argument("--workdir", type=Path, default=REPO / "outputs" / "experiments" / "oct_paper_tables")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    args = parser.parse_args()

    import torch

    from bundle_runs import run_logged
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    start = time.time()
    device = "gpu" if torch.cuda.is_available() else "cpu"
    workdir = args.workdir.resolve()
    data = {"clean": workdir / "data_clean", "noisy": workdir / "data_noisy"}
    if not (data["clean"] / "datalist.json").is_file():
        workdir.mkdir(parents=True, exist_ok=True)
        run_logged([sys.executable, str(REPO / "scripts" / "synthesize.py"), "oct", "--output-dir", str(data["clean"]),
                    "--count", str(args.count), "--seed", str(args.seed), "--size", str(args.image_size),
                    str(args.image_size), "--difficulty", str(args.difficulty)], workdir / "synthesize.log")  # fmt: skip
    wanted = {"count": args.count, "seed": args.seed, "image_size": [args.image_size] * 2, "difficulty": args.difficulty}
    drawn = json.loads((data["clean"] / "synthesis.json").read_text())
    if {k: drawn.get(k) for k in wanted} != wanted:
        raise SystemExit(f"{data['clean']} holds another data set ({ {k: drawn.get(k) for k in wanted} }, asked for "
                         f"{wanted}): use another --workdir or delete it.")  # fmt: skip
    write_noisy_copy(data["clean"], data["noisy"], NOISE_SIGMA, args.noise_seed)
    datalist = json.loads((data["clean"] / "datalist.json").read_text())
    meta = {
        "device": device, "machine": bundle_runs.machine(), "seed": args.seed,
        "command": shlex.join(["python", "scripts/experiments/oct_paper_tables.py", *sys.argv[1:]]),
        "pool": len(datalist["training"]) + len(datalist["validation"]),
        "sizes": {k: getattr(args, k) for k in ("count", "image_size", "filters", "max_epochs", "learning_rate",
                                               "batch_size", "folds", "difficulty")} | {"noise_sigma": NOISE_SIGMA},
        "parameters": {network: _parameters(network, args) for network in NETWORKS},
        "curves": f"oct_paper_tables_{device}_curves.png",
    }  # fmt: skip
    results, summaries = {}, {}
    for name, spec in runs().items():
        if args.only and name not in args.only:
            continue
        print(f"[{name}] {args.folds}-fold cross-validation ...", flush=True)
        began = time.time()
        summary = cross_validate(name, spec, data[spec["data"]], workdir, args)
        summaries[name] = summary
        results[name] = {**{s: summary["mean"].get(s) for s in SCORES}, "minutes": round((time.time() - began) / 60, 1)}
        print(f"[{name}] Dice {_cell(results[name], 'dice')}, noisy Dice {_cell(results[name], 'noisy_dice')} "
              f"({results[name]['minutes']} min)", flush=True)  # fmt: skip
        meta["minutes"] = (time.time() - start) / 60
        write_json_atomic({"meta": meta, "results": results, "per_fold": {n: s["per_fold"] for n, s in summaries.items()}},
                          args.output_dir / f"oct_paper_tables_{device}.json", indent=1)  # fmt: skip
    write_text_atomic(markdown(results, meta), args.output_dir / f"oct_paper_tables_{device}.md")
    folder = {name: workdir / bundle_runs.slug(name) for name in results}
    groups = {
        "Table 1 (Dice loss, clean)": {n.split(",")[0]: curves(folder[n]) for n in results if n.endswith("dice, clean")},
        "Table 3 (TransUNet, clean)": {LOSSES[n.split(", ")[1]]: curves(folder[n]) for n in results
                                       if n.startswith("TransUNet,") and n.endswith("clean")},
        "Table 4 (TransUNet, noisy)": {LOSSES[n.split(", ")[1]]: curves(folder[n]) for n in results
                                       if n.endswith("noisy")},
    }  # fmt: skip
    plot_curves({k: v for k, v in groups.items() if v}, args.output_dir / meta["curves"])
    print(markdown(results, meta))


if __name__ == "__main__":
    main()
