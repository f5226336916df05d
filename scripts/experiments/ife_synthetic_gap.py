#!/usr/bin/env python
"""How far are the generator's gels from real ones? One number, and a figure to look at.

The real gels and one or more synthetic sets (``--synthetic NAME=DATALIST``: e.g. the generator's classic and
published looks) go through the bundle's own inference preprocessing (``configs/inference.json``: lane layout found per
gel, ``lane_orientation auto``) into a trained IFE network, whose pooled last-stage features (the inputs of its
classification heads) describe each gel. A logistic regression then tries to tell the real gels from each
synthetic set in stratified k-fold cross-validation: its ROC AUC is the gap (0.5: the network cannot tell them
apart; 1.0: every gel is told apart). The same number for two halves of the real set is the floor the measure
reaches without any gap. One network (``--checkpoint``) describes every set, so the sets' numbers compare.

Also writes a contact sheet per synthetic set, its gels beside real ones, each as read and as the network sees it,
to ``--figure-dir``: real gels of an unlicensed set must stay out of the repository, so give a folder outside it.

Usage::

    python scripts/experiments/ife_synthetic_gap.py --real-datalist /data/mpcadms/datalist.json \\
        --synthetic classic=outputs/ife_real_gels/synthetic_only/synthetic/datalist.json \\
        --synthetic published=outputs/ife_real_gels/synthetic_only_published/synthetic/datalist.json \\
        --checkpoint outputs/ife_real_gels/synthetic_only/models/model.pt --figure-dir /tmp/gap

Writes ``OUTPUT/ife_synthetic_gap.json`` (per set the AUC and accuracy per fold, their mean and std; the floor;
the network, the machine) and prints them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: bundle_runs, what the scripts share
import bundle_runs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "ife_multitask"
SECTIONS = ("training", "validation", "testing")


def datalist_images(path: Path, limit: int | None, seed: int) -> list[dict]:
    """The entries of every section of a datalist (image paths made absolute), at most ``limit`` of them drawn at
    random with ``seed``."""
    from custom_components.core.datalist import load_datalist

    entries = [entry for section in SECTIONS for entry in load_datalist(path, section)]
    if limit is not None and len(entries) > limit:
        picked = np.random.default_rng(seed).choice(len(entries), size=limit, replace=False)
        entries = [entries[i] for i in sorted(picked)]
    return entries


def bundle_pieces(checkpoint: Path):
    """The inference config's preprocessing (lanes found per gel, either orientation) and the checkpoint's network,
    in eval mode on the CPU, rebuilt from its recipe."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.read_meta(str(BUNDLE / "configs" / "metadata.json"))
    parser.update({"checkpoint": str(checkpoint), "lane_orientation": "auto", "band_pattern": False,
                   "device": "$torch.device('cpu')"})  # fmt: skip
    network = parser.get_parsed_content("network")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return parser.get_parsed_content("preprocessing"), network.eval()


def head_features(network, images) -> np.ndarray:
    """The inputs of the network's linear heads (its pooled last-stage features), concatenated: (N, F)."""
    import torch

    captured: list[torch.Tensor] = []
    heads = [m for m in network.children() if isinstance(m, torch.nn.Linear)]
    hooks = [head.register_forward_hook(lambda _m, inputs, _o: captured.append(inputs[0])) for head in heads]
    try:
        with torch.no_grad():
            network.forward_heads(torch.stack([torch.as_tensor(image) for image in images]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(captured, dim=1).numpy()


def describe(entries: list[dict], preprocessing, network, what: str) -> tuple[np.ndarray, list, list[str]]:
    """Features, network inputs and lane status of every gel; a gel that cannot be read is reported and left out."""
    features, inputs, lanes = [], [], []
    from custom_components.ife.lanes import lanes_found

    for index, entry in enumerate(entries):
        try:
            item = preprocessing({"image": entry["image"]})
        except Exception as error:  # one unreadable gel is named and left out, never the end of the measurement
            print(f"  {what}: {entry['image']}: left out ({error})", flush=True)
            continue
        image = item["image"]
        inputs.append(np.asarray(image))
        lanes.append("found" if lanes_found(image) else "whole image")
        features.append(head_features(network, [image])[0])
        if (index + 1) % 50 == 0:
            print(f"  {what}: {index + 1} of {len(entries)} gels", flush=True)
    return np.stack(features), inputs, lanes


def separability(real: np.ndarray, synthetic: np.ndarray, folds: int, seed: int) -> dict:
    """ROC AUC and accuracy of a logistic regression telling the two sets apart, stratified k-fold (each fold's
    scaler and model fitted on its training part only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([real, synthetic])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(synthetic))])
    aucs, accuracies = [], []
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        model.fit(x[train], y[train])
        aucs.append(float(roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])))
        accuracies.append(float(accuracy_score(y[test], model.predict(x[test]))))
    return {"auc": dict(zip(("mean", "std"), bundle_runs.mean_std(aucs))),
            "accuracy": dict(zip(("mean", "std"), bundle_runs.mean_std(accuracies))),
            "per_fold": {"auc": aucs, "accuracy": accuracies}}  # fmt: skip


def _named_path(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DATALIST, got {value!r}")
    return name, Path(path)


def contact_sheet(real: list[dict], synthetic: list[dict], real_inputs, synthetic_inputs, path: Path, count: int):
    """``count`` real and ``count`` synthetic gels side by side: each as read, and as the network sees it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, axes = plt.subplots(4, count, figsize=(1.8 * count, 8.2))
    rows = [
        ("real, as read", real, None),
        ("real, network input", real, real_inputs),
        ("synthetic, as read", synthetic, None),
        ("synthetic, network input", synthetic, synthetic_inputs),
    ]
    for row, (title, entries, inputs) in enumerate(rows):
        for column in range(count):
            ax = axes[row, column]
            ax.axis("off")
            if column >= len(entries):
                continue
            if inputs is None:
                ax.imshow(Image.open(entries[column]["image"]).convert("RGB"))
            else:  # (C, H, W) in [-1, 1] -> (H, W, C) in [0, 1]
                ax.imshow(np.clip((np.moveaxis(inputs[column], 0, -1) + 1) / 2, 0, 1))
            ax.set_title(f"{entries[column].get('label', '')}", fontsize=7)
        axes[row, 0].text(-0.1, 0.5, title, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real-datalist", type=Path, required=True)
    parser.add_argument("--synthetic", type=_named_path, action="append", required=True, metavar="NAME=DATALIST",
                        help="a synthetic set to compare with the real gels (repeat for several)")  # fmt: skip
    parser.add_argument("--checkpoint", type=Path, required=True, help="an IFE model.pt with its recipe")
    parser.add_argument("--figure-dir", type=Path, required=True, help="for the contact sheet: outside the repository")
    parser.add_argument("--output-dir", type=Path, default=BUNDLE / "docs" / "results")
    parser.add_argument("--count", type=int, default=None, help="gels per set (default: as many as the real set)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sheet", type=int, default=8, help="gels of each set on the contact sheet")
    args = parser.parse_args(argv)
    from custom_components.core.atomic import write_json_atomic

    started = time.time()
    real = datalist_images(args.real_datalist, args.count, args.seed)
    preprocessing, network = bundle_pieces(args.checkpoint)
    real_features, real_inputs, real_lanes = describe(real, preprocessing, network, "real")
    # the floor: two random halves of the real gels, told apart the same way
    halves = np.random.default_rng(args.seed).permutation(len(real_features))
    floor = separability(real_features[halves[::2]], real_features[halves[1::2]], args.folds, args.seed)
    sets = {}
    for name, datalist in args.synthetic:
        synthetic = datalist_images(datalist, args.count or len(real), args.seed)
        features, inputs, lanes = describe(synthetic, preprocessing, network, name)
        gap = separability(real_features, features, args.folds, args.seed)
        sets[name] = {"datalist": str(datalist), "gels": len(features),
                      "lanes_found": lanes.count("found") / len(lanes), **gap}  # fmt: skip
        sheet = args.figure_dir / f"ife_real_and_{name}_gels.png"
        contact_sheet(real, synthetic, real_inputs, inputs, sheet, args.sheet)
        print(f"real vs {name}: AUC {gap['auc']['mean']:.3f} +- {gap['auc']['std']:.3f}, "
              f"accuracy {gap['accuracy']['mean']:.3f}", flush=True)  # fmt: skip
    result = {
        "meta": {
            "real": str(args.real_datalist), "checkpoint": str(args.checkpoint), "network": type(network).__name__,
            "gels": len(real_features), "lanes_found": real_lanes.count("found") / len(real_lanes),
            "features": int(real_features.shape[1]), "folds": args.folds, "seed": args.seed,
            "classifier": "standardised features, logistic regression C=0.1, stratified k-fold",
            "machine": bundle_runs.machine(), "minutes": round((time.time() - started) / 60, 1),
            "command": shlex.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        },
        "real_vs_synthetic": sets,
        "real_vs_real": floor,
    }  # fmt: skip
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, args.output_dir / "ife_synthetic_gap.json", indent=1)
    print(f"real vs real (the floor): AUC {floor['auc']['mean']:.3f}")
    print(f"wrote {args.output_dir / 'ife_synthetic_gap.json'} and the contact sheets in {args.figure_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
