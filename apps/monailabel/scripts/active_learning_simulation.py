#!/usr/bin/env python
"""Do the app's active-learning strategies save labels? The annotation loop simulated on data with known labels.

The pool is the datalist's ``training`` and ``validation`` entries; the test split is its ``testing`` list, fixed
for every run (a datalist without one, such as the real gels', gives up ``--test-fraction`` of its pool instead:
stratified by class for IFE, whole groups of near-duplicates on one side; drawn once with ``--data-seed``). For each
seed of ``--seeds`` and each strategy of ``--strategies``:

1. the seed set: ``--seed-labels`` pool images drawn at random with the seed; the same for every strategy at that
   seed, and so is its first model (trained once per seed), so that strategies are compared in pairs;
2. each round trains the bundle with its own command (``python -m monai.bundle run --config_file train.json``) on
   every label so far (the bundle takes its validation split from them, as the app's train task does); round
   r > 0 fine-tunes round r-1's model (``--pretrained``). Then ``evaluate.json`` on the test split (IFE:
   ``accuracy``, ``macro_f1``; OCT: pooled ``dice``);
3. the round's model scores the unlabelled pool and the strategy's ranking takes the next ``--batch`` images, whose
   labels are then read from the ground truth: ``ife_least_certain`` from the bundle's ``inference.json``
   (``predictions.csv``: the calibrated probabilities, the call and the refer decision that ``/infer`` answers),
   ``oct_entropy`` from the network's fluid logits on the bundle's preprocessed input; both through the functions
   the served strategies score and rank with (``apps/monailabel/lib/strategies/scores.py``), and in the served
   order (its sort key, then the image id). ``random`` draws the batch with the seed.

One further run trains on every pool label (the ceiling, with the first seed). The report gives, per strategy, the
labels a curve needs to reach ``--target`` x the ceiling's metric (per seed, "not reached" when it never does, and
the mean over the seeds that reach it), and the curves: the metric against the labels, mean and standard deviation
over the seeds, the ceiling and the target as horizontal lines.

Every round's model, logs and record (``round.json``) stay in ``--workdir``; run again with the same data and
settings, a finished round is reused (a round whose labelled set, settings, test split or starting weights changed
runs anew), so an interrupted simulation goes on where it stopped, and more ``--rounds`` or ``--seeds`` add to it.
A round's scores of the pool (``scores.json``) are kept with its model too: delete them after changing how the
strategies score.

Usage, from the repository root::

    .venv/bin/python apps/monailabel/scripts/active_learning_simulation.py --bundle ife_multitask
    .venv/bin/python apps/monailabel/scripts/active_learning_simulation.py --bundle oct_fluid_seg \\
        --synthetic-option typed_masks true
    .venv/bin/python apps/monailabel/scripts/active_learning_simulation.py --bundle ife_multitask \\
        --dataset-dir /data/mpcadms --tag real_gels --size lane_orientation auto

Writes ``OUTPUT/active_learning_<bundle>[_<tag>].json``, ``.md`` and ``.png`` (``--output-dir``, default
``apps/monailabel/results``): the command, machine, data and test sizes, bundle settings, seeds, minutes, the
ceiling, every curve and the labels to the target.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

APP_DIR = Path(__file__).resolve().parents[1]
REPO = APP_DIR.parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # bundle_runs, what the scripts share
sys.path.insert(0, str(APP_DIR))  # the app's own imports are "lib.*", as when MONAI Label loads it
import bundle_runs  # noqa: E402

#: each bundle's own strategy (the one the app registers for it)
OWN_STRATEGY = {"ife_multitask": "ife_least_certain", "oct_fluid_seg": "oct_entropy"}
RANDOM = "random"
#: the test metrics read from ``evaluate.json``'s ``metrics.json``, the default target metric first
METRICS = {"ife_multitask": ("accuracy", "macro_f1"), "oct_fluid_seg": ("dice",)}
#: bundle settings that learn something from a few dozen labels and keep a simulation of two seeds within about
#: half an hour on 2 CPU cores (any can be changed with ``--size``). A small labelled set gives few steps per epoch,
#: hence many epochs and small batches; the IFE rounds' time goes mostly to the lane finder and the band-pattern
#: detector (about 0.2-0.4 s a gel, in every training, evaluation and scoring run) and to each command's start
#: (10-20 s). OCT runs at the README demo's network and size: at 48 px with filters 8-128 even the all-labels model
#: hardly segmented, which tells no strategy from another
DEFAULT_SIZES: dict[str, dict[str, Any]] = {
    "ife_multitask": {"image_size": 64, "channels": [16, 32, 64, 128], "max_epochs": 12, "warmup_epochs": 1,
                      "batch_size": 8, "num_workers": 2},
    "oct_fluid_seg": {"image_size": 96, "filters": [16, 32, 64, 128, 256], "max_epochs": 15, "batch_size": 8,
                      "learning_rate": 0.001, "num_workers": 2},
}  # fmt: skip
#: the loop at those sizes: seed labels, labels per round (k) and rounds (the seed set's included)
DEFAULT_LOOP = {"ife_multitask": (40, 20, 3), "oct_fluid_seg": (10, 10, 4)}
#: the synthetic data set without ``--dataset-dir``: image count and (H, W)
DEFAULT_SYNTHETIC = {"ife_multitask": (200, (96, 144)), "oct_fluid_seg": (120, (96, 96))}
#: the record a round writes when it finished (see :func:`run_round`)
ROUND_RECORD = "round.json"


@dataclass
class Experiment:
    """What every round of a simulation shares.

    Attributes:
        bundle: ``ife_multitask`` or ``oct_fluid_seg``.
        workdir: the folder of the rounds.
        pool: image path -> datalist entry (absolute paths) of the images a strategy may offer.
        test: the fixed test entries.
        overrides: the bundle settings of every training run (sizes, and for OCT the fluid classes of the whole
            pool).
        measure: the IFE measure ``ife_least_certain`` ranks by.
    """

    bundle: str
    workdir: Path
    pool: dict[str, dict]
    test: list[dict]
    overrides: dict[str, Any]
    measure: str


# ---- the loop's pure parts ----------------------------------------------------------------------------------------


def seed_set(pool: Sequence[str], count: int, seed: int) -> list[str]:
    """The labelled images a simulation starts from: ``count`` of ``pool`` drawn at random.

    It depends on the pool and the seed alone, never on the strategy, so every strategy starts from the same set
    at a seed (a paired comparison).

    Args:
        pool: image paths (their order does not matter).
        count: how many, at most ``len(pool)``.
        seed: the simulation seed.

    Returns:
        the drawn paths, sorted.
    """
    images = sorted(pool)
    picks = np.random.default_rng(seed).choice(len(images), size=count, replace=False)
    return sorted(images[i] for i in picks)


def unlabelled_images(pool: Sequence[str], labelled: Sequence[str]) -> list[str]:
    """The pool images without a label yet, sorted."""
    return sorted(set(pool) - set(labelled))


def random_batch(unlabelled: Sequence[str], k: int, seed: int, round_index: int) -> list[str]:
    """``random``: ``k`` of the unlabelled images (all of them when fewer), drawn with the seed and the round.

    Args:
        unlabelled: the candidates.
        k: the batch size.
        seed: the simulation seed.
        round_index: the round whose model would score them (another draw each round).
    """
    images = sorted(unlabelled)
    picks = np.random.default_rng([seed, round_index]).choice(len(images), size=min(k, len(images)), replace=False)
    return sorted(images[i] for i in picks)


def image_id(path: str) -> str:
    """MONAI Label's id of an image file: its name without the extension."""
    return Path(path).name.split(".")[0]


def ranked_batch(unlabelled: Sequence[str], keys: Mapping[str, Sequence], k: int) -> list[str]:
    """A ranking strategy's next ``k`` images: the unlabelled ones in the served order.

    The served strategy (``lib/strategies/base.py``) offers the image of the lowest sort key, then the lowest id;
    with its ``served_wait_s`` the next requests get the next ones, so ``k`` requests to one model are its first
    ``k``. An image without a key could not be scored and is never offered, as the served strategy skips it.

    Args:
        unlabelled: the candidates.
        keys: image path -> the strategy's sort key (most uncertain lowest).
        k: the batch size.
    """
    scored = [path for path in unlabelled if path in keys]
    return sorted(scored, key=lambda path: (*keys[path], image_id(path), path))[:k]


def labels_to_target(points: Sequence[Mapping[str, Any]], metric: str, target: float) -> int | None:
    """The labels at which a curve first reaches ``target``, or ``None`` when it never does.

    Args:
        points: the curve, ``{"labels": n, metric: value}`` per round.
        metric: the metric's key.
        target: the value to reach (``>=``).
    """
    for point in sorted(points, key=lambda p: p["labels"]):
        if point.get(metric) is not None and point[metric] >= target:
            return int(point["labels"])
    return None


def summarize(curves: Mapping[int, Sequence[Mapping[str, Any]]], metric: str, target: float) -> dict[str, Any]:
    """One strategy's curves over the seeds: the labels to the target and the mean curve.

    Args:
        curves: seed -> the curve (as :func:`labels_to_target`); every seed's curve has the same label counts.
        metric: the metric's key.
        target: the value to reach.

    Returns:
        ``labels_to_target`` (seed -> labels or ``None``), ``reached`` (seeds that reach it), ``mean_labels`` and
        ``std_labels`` over those seeds (``None`` when none does), and ``curve``: per label count the ``mean`` and
        ``std`` of the metric over the seeds.
    """
    per_seed = {str(seed): labels_to_target(points, metric, target) for seed, points in curves.items()}
    reached = [n for n in per_seed.values() if n is not None]
    stats = bundle_runs.mean_std(reached)
    by_labels: dict[int, list[float]] = {}
    for points in curves.values():
        for point in points:
            by_labels.setdefault(int(point["labels"]), []).append(point[metric])
    curve = []
    for labels, values in sorted(by_labels.items()):
        mean, std = bundle_runs.mean_std(values) or (None, None)
        curve.append({"labels": labels, "mean": mean, "std": std, "seeds": len(values)})
    return {
        "labels_to_target": per_seed,
        "reached": len(reached),
        "mean_labels": stats[0] if stats else None,
        "std_labels": stats[1] if stats else None,
        "curve": curve,
    }


# ---- scoring as the served strategies score -----------------------------------------------------------------------


def ife_scores_of_predictions(predictions: Path) -> dict[str, dict[str, Any]]:
    """Per image of the bundle's ``predictions.csv``, the score ``ife_least_certain`` gives the same answer.

    The CSV holds what ``/infer/ife_multitask`` answers for a gel (the calibrated probabilities ``p_<class>``, the
    call ``prediction`` by the paper's rule, ``refer`` at the calibration's operating point), so the score is
    :func:`~lib.strategies.scores.ife_uncertainty` of them plus ``refer``, as ``IFELeastCertain.score_image``
    builds it.
    """
    from custom_components.ife.classes import IFE_CLASSES
    from lib.strategies.scores import ife_uncertainty

    scores = {}
    with open(predictions, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            probabilities = [float(row[f"p_{name}"]) for name in IFE_CLASSES]
            score = ife_uncertainty(probabilities, IFE_CLASSES.index(row["prediction"]))
            score["refer"] = row["refer"] == "true"
            scores[row["image"]] = score
    return scores


def oct_score(image: Any, logits: Any) -> dict[str, Any]:
    """The ``oct_entropy`` score of one image from the network input and its fluid logits, as
    ``OCTEntropy.score_image`` computes it from what the app's infer task hands its callback.

    Args:
        image: (1, H, W) or (1, H, W, S), as the bundle's preprocessing gives it.
        logits: (C, ...) of the input's spatial shape: one channel for the binary fluid model, one per fluid type
            (IRF, SRF, PED) for a typed one (:func:`~lib.strategies.scores.bscan_entropies` sums the channels'
            entropies).

    Returns:
        :func:`~lib.strategies.scores.volume_score` of the per-B-scan entropies.
    """
    from lib.strategies.scores import bscan_entropies, volume_score

    return volume_score(bscan_entropies(image, logits))


def rank_key(bundle: str, score: Mapping[str, Any], measure: str) -> tuple:
    """The served strategy's sort key of a score (most uncertain lowest)."""
    from lib.strategies.scores import ife_rank_key

    if bundle == "ife_multitask":
        return ife_rank_key(score, measure)
    return (-float(score["entropy"]),)  # OCTEntropy.rank_key: the highest entropy first


def _ife_pool_scores(exp: Experiment, root: Path, images: Sequence[str]) -> dict[str, dict]:
    """The IFE scores of ``images`` by the model in ``root``: the bundle's ``inference.json`` on them."""
    out = root / "pool"
    out.mkdir(parents=True, exist_ok=True)
    datalist = out / "unlabelled.json"
    datalist.write_text(json.dumps({"unlabelled": [{"image": path} for path in images]}))
    overrides = {"bundle_root": root, "input_dir": datalist, "datalist_section": "unlabelled", "output_dir": out,
                 "save_figures": False, "num_workers": exp.overrides.get("num_workers", 0)}  # fmt: skip
    _bundle(exp.bundle, ["inference.json"], overrides, root / "score.log")
    return ife_scores_of_predictions(out / "predictions.csv")


def _oct_pool_scores(root: Path, images: Sequence[str]) -> dict[str, dict]:
    """The OCT scores of ``images`` by the model in ``root``: the network, inferer and preprocessing of the bundle's
    ``inference.json``, which is what the app's infer task runs before its callback hands the logits to the
    strategy."""
    import torch
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / "oct_fluid_seg" / "configs" / "inference.json"))
    parser.update({"bundle_root": str(root)})
    network, inferer = parser.get_parsed_content("network"), parser.get_parsed_content("inferer")
    preprocessing, device = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("device")
    state = torch.load(parser.get_parsed_content("checkpoint"), map_location=device, weights_only=True)
    network.load_state_dict(state)
    network.eval()
    scores = {}
    with torch.no_grad():
        for path in images:
            image = preprocessing({"image": path})["image"]
            logits = inferer(image[None].to(device), network)[0]
            scores[path] = oct_score(image.cpu(), logits.cpu())
    return scores


def pool_scores(exp: Experiment, root: Path, images: Sequence[str]) -> tuple[dict[str, dict], float]:
    """The scores of ``images`` by round ``root``'s model, and the seconds they took; kept in ``scores.json`` (a
    round's model is shared by the strategies that branch from it)."""
    from custom_components.core.atomic import write_json_atomic

    cache = root / "scores.json"
    if cache.is_file():
        record = json.loads(cache.read_text())
        if set(images) <= set(record["images"]):
            return record["scores"], record["seconds"]
    started = time.time()
    scores = _ife_pool_scores(exp, root, images) if exp.bundle == "ife_multitask" else _oct_pool_scores(root, images)
    seconds = round(time.time() - started, 1)
    write_json_atomic({"images": sorted(images), "seconds": seconds, "scores": scores}, cache, indent=None)
    return scores, seconds


def next_batch(exp: Experiment, strategy: str, root: Path, labelled: Sequence[str], k: int, seed: int,
               round_index: int) -> tuple[list[str], float]:  # fmt: skip
    """The ``k`` images ``strategy`` asks to label after round ``round_index`` (its model in ``root``), and the
    seconds the scoring took."""
    unlabelled = unlabelled_images(list(exp.pool), labelled)
    if strategy == RANDOM:
        return random_batch(unlabelled, k, seed, round_index), 0.0
    scores, seconds = pool_scores(exp, root, unlabelled)
    keys = {path: rank_key(exp.bundle, scores[path], exp.measure) for path in unlabelled if path in scores}
    return ranked_batch(unlabelled, keys, k), seconds


# ---- the rounds ---------------------------------------------------------------------------------------------------


def _bundle(bundle: str, configs: list[str], overrides: Mapping[str, Any], log: Path) -> None:
    command = bundle_runs.bundle_run_command(REPO / "bundles" / bundle, configs, overrides)
    bundle_runs.run_logged(command, log, cwd=REPO)


def _digest(entries: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(sorted(entries, key=json.dumps), sort_keys=True).encode()).hexdigest()


def run_round(exp: Experiment, root: Path, labelled: Sequence[str], seed: int, pretrained: Path | None = None,
              max_epochs: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train on ``labelled`` (fine-tuning ``pretrained``) and evaluate on the test split, in ``root``.

    A round that finished with the same inputs (bundle, settings, seed, labelled set, test split, starting
    weights) is reused from its ``round.json``; any other content of ``root`` is removed first.

    Args:
        exp: the simulation.
        root: the round's folder (its ``bundle_root``).
        labelled: the labelled pool images.
        seed: the bundle's ``seed`` (its determinism and validation split).
        pretrained: the previous round's checkpoint, or None to train from scratch.
        max_epochs: epochs, if not those of ``exp.overrides``.

    Returns:
        the record: the inputs, ``metrics`` (:data:`METRICS` of the bundle), ``train_s``, ``evaluate_s``.
    """
    from custom_components.core.atomic import write_json_atomic
    from custom_components.core.recipe import weights_sha256

    overrides = {**exp.overrides, "seed": seed, **({"max_epochs": max_epochs} if max_epochs else {})}
    # through JSON, so that it compares with the record as read back
    inputs = json.loads(json.dumps({
        "bundle": exp.bundle, "overrides": overrides, "labelled": sorted(labelled), "test": _digest(exp.test),
        "pretrained": weights_sha256(pretrained) if pretrained else None,
    }))  # fmt: skip
    record_path = root / ROUND_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if all(record.get(key) == value for key, value in inputs.items()):
            return record
    shutil.rmtree(root, ignore_errors=True)
    data = root / "data"
    data.mkdir(parents=True)
    datalist = {"training": [exp.pool[path] for path in sorted(labelled)], "testing": exp.test}
    write_json_atomic(datalist, data / "datalist.json", indent=None)
    common = {**overrides, "bundle_root": root, "dataset_dir": data}
    started = time.time()
    _bundle(exp.bundle, ["train.json"], {**common, **({"pretrained": pretrained} if pretrained else {})},
            root / "train.log")  # fmt: skip
    trained = time.time()
    evaluation = {**common, "output_dir": root / "eval"}
    if exp.bundle == "oct_fluid_seg":  # the clean test scans only: no noise test, no overlay figures
        evaluation.update(save_overlays=False, run=["$@validate#evaluator.run()"])
    _bundle(exp.bundle, ["train.json", "evaluate.json"], evaluation, root / "evaluate.log")
    report = json.loads((root / "eval" / "metrics.json").read_text())
    record = {**inputs, "metrics": {key: report.get(key) for key in METRICS[exp.bundle]},
              "train_s": round(trained - started, 1), "evaluate_s": round(time.time() - trained, 1)}  # fmt: skip
    write_json_atomic(record, record_path)
    return record


def _point(round_index: int, record: Mapping[str, Any], selection_s: float) -> dict[str, Any]:
    return {"round": round_index, "labels": len(record["labelled"]), **record["metrics"],
            "train_s": record["train_s"], "evaluate_s": record["evaluate_s"], "selection_s": selection_s}  # fmt: skip


def simulate_seed(exp: Experiment, seed: int, strategies: Sequence[str], seed_labels: int, k: int,
                  rounds: int) -> dict[str, list[dict]]:  # fmt: skip
    """Every strategy's curve at one seed: ``rounds`` rounds from the shared seed set.

    Returns:
        strategy -> one point per round (:func:`_point`: labels, metrics, seconds of training, evaluation and of
        the scoring that chose the round's new labels).
    """
    first_root = exp.workdir / f"seed_{seed}" / "round_0"
    start = seed_set(list(exp.pool), seed_labels, seed)
    first = run_round(exp, first_root, start, seed)
    curves = {}
    for strategy in strategies:
        labelled, root, points = start, first_root, [_point(0, first, 0.0)]
        _progress(seed, strategy, points[-1], rounds)
        for r in range(1, rounds):
            batch, selection_s = next_batch(exp, strategy, root, labelled, k, seed, r - 1)
            labelled = sorted([*labelled, *batch])
            next_root = exp.workdir / f"seed_{seed}" / strategy / f"round_{r}"
            record = run_round(exp, next_root, labelled, seed, pretrained=root / "models" / "model.pt")
            root = next_root
            points.append(_point(r, record, selection_s))
            _progress(seed, strategy, points[-1], rounds)
        curves[strategy] = points
    return curves


def _progress(seed: int, strategy: str, point: Mapping[str, Any], rounds: int) -> None:
    metrics = ", ".join(f"{k} {point[k]:.3f}" for k in ("accuracy", "macro_f1", "dice") if point.get(k) is not None)
    print(f"[seed {seed}, {strategy}, round {point['round'] + 1}/{rounds}] {point['labels']} labels: {metrics} "
          f"(train {point['train_s']:.0f} s, evaluate {point['evaluate_s']:.0f} s, selection "
          f"{point['selection_s']:.0f} s)", flush=True)  # fmt: skip


# ---- data ---------------------------------------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """A command-line value as JSON (``3``, ``[16,32]``, ``true``), else the text itself (``auto``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def dataset(args: argparse.Namespace) -> tuple[Path, str]:
    """The datalist to simulate on and a description of it: ``--dataset-dir``'s, or a synthetic one made once in
    the workdir with the bundle's generator."""
    from custom_components.core.synthetic import prepare_dataset

    if args.dataset_dir is not None:
        return args.dataset_dir / "datalist.json", str(args.dataset_dir)
    if args.bundle == "ife_multitask":
        from custom_components.ife.synthetic import synthesize_ife_dataset as synthesize
    else:
        from custom_components.oct.synthetic import synthesize_oct_dataset as synthesize
    count, (height, width) = args.synthetic_count, args.synthetic_size
    options = dict(args.synthetic_option)
    settings = "_".join(f"{k}_{v}" for k, v in options.items())
    name = f"synthetic_{count}_{height}x{width}_seed{args.data_seed}_{settings}"
    folder = args.workdir / bundle_runs.slug(name)
    datalist = prepare_dataset(folder, synthesize, count, args.data_seed, (height, width), options)
    described = f"{count} synthetic images of {height} x {width} (seed {args.data_seed}{', ' if options else ''}"
    return Path(datalist), described + ", ".join(f"{k} {v}" for k, v in options.items()) + ")"


def pool_and_test(datalist: Path, bundle: str, test_fraction: float, seed: int, workdir: Path):
    """The pool (``training`` + ``validation``) and the fixed test entries of a datalist, absolute paths.

    A datalist without ``testing`` gives up ``test_fraction`` of its pool, split as the bundle splits its validation
    (:func:`~custom_components.core.datalist.training_and_validation`: stratified by class for IFE, whole groups).

    Returns:
        ``(pool, test, how the test split was made)``.
    """
    from custom_components.core.atomic import write_json_atomic
    from custom_components.core.datalist import load_datalist, training_and_validation

    pool = load_datalist(datalist, "training") + load_datalist(datalist, "validation")
    test = load_datalist(datalist, "testing")
    if test:
        return pool, test, "the datalist's testing list"
    held_out = workdir / "test_split" / "datalist.json"
    held_out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"training": pool}, held_out, indent=None)
    key = "label" if bundle == "ife_multitask" else None
    pool, test = training_and_validation(held_out, test_fraction, seed, key=key)
    return pool, test, f"held out from the pool: {test_fraction} (seed {seed}, as the bundle splits validation)"


def fixed_recipe(bundle: str, pool: Sequence[dict], workdir: Path) -> dict[str, Any]:
    """Recipe settings the bundle would derive from each round's labelled set, decided once on the whole pool.

    Fine-tuning refuses a checkpoint of other OCT fluid classes, and ``fluid_classes: auto`` reads them from the
    masks it trains on (typed when a mask holds fluid-type values 2 or 3): a seed set of IRF-only masks would train
    a binary model that a later round could not fine-tune. The bundle's own function decides on the pool's masks
    (written to ``workdir/pool/datalist.json`` for it).
    """
    if bundle != "oct_fluid_seg":
        return {}
    from custom_components.core.atomic import write_json_atomic
    from custom_components.oct.bundle import training_fluid_classes

    datalist = workdir / "pool" / "datalist.json"
    datalist.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"training": list(pool)}, datalist, indent=None)
    return {"fluid_classes": training_fluid_classes(datalist, "auto")}


# ---- report -------------------------------------------------------------------------------------------------------


def plot_curves(result: Mapping[str, Any], path: Path) -> None:
    """The curves as a PNG: per strategy the mean metric against the labels with a ± std band, the ceiling and the
    target as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    meta, metric = result["meta"], result["meta"]["metric"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for strategy, summary in result["strategies"].items():
        x = [p["labels"] for p in summary["curve"]]
        mean, std = np.array([p["mean"] for p in summary["curve"]]), np.array([p["std"] for p in summary["curve"]])
        (line,) = ax.plot(x, mean, marker="o", label=strategy)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    ceiling = result["ceiling"]
    ax.axhline(ceiling["metrics"][metric], color="black", linestyle="--",
               label=f"all {ceiling['labels']} pool labels: {ceiling['metrics'][metric]:.3f}")  # fmt: skip
    ax.axhline(result["target_value"], color="grey", linestyle=":",
               label=f"target {meta['target']} x ceiling: {result['target_value']:.3f}")  # fmt: skip
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("labelled images")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"{meta['bundle']}{' (' + meta['tag'] + ')' if meta['tag'] else ''}: mean ± std over "
                 f"{len(meta['seeds'])} seed{'s' if len(meta['seeds']) > 1 else ''}", fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def markdown(result: Mapping[str, Any], png_name: str) -> str:
    """The results as markdown: what was run, the labels to the target, the mean curves, the time per round."""
    meta, metric, ceiling, summaries = result["meta"], result["meta"]["metric"], result["ceiling"], result["strategies"]
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    band = lambda point: f"{fmt(point['mean'])} ± {fmt(point['std'])}"  # noqa: E731
    strategies = list(summaries)
    last_labels = summaries[strategies[0]]["curve"][-1]["labels"]
    lines = [
        f"# Active learning simulation: {meta['bundle']}{' on ' + meta['tag'] if meta['tag'] else ''}",
        "",
        f"Data: {meta['data']}; pool {meta['pool']} images, test {meta['test']} images ({meta['test_split']}). "
        f"Seed sets of {meta['seed_labels']} drawn per seed (the same for every strategy), then "
        f"{_plural(meta['rounds'] - 1, 'round')} of {meta['batch']} labels, each fine-tuning the previous round's "
        f"model with the bundle's train.json on every label so far. Settings {meta['overrides']}; seeds "
        f"{meta['seeds']}; {meta['machine']}; the rounds took {meta['minutes']} min (reused ones included; "
        f"{meta['wall_minutes']} min in the last run).",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Ceiling (all {ceiling['labels']} pool labels, seed {ceiling['seed']}, "
        f"{_plural(ceiling['max_epochs'], 'epoch')}): "
        + ", ".join(f"{k} {fmt(v)}" for k, v in ceiling["metrics"].items())
        + f". Target: {meta['target']} x {metric} = {fmt(result['target_value'])}.",
        "",
        "| strategy | labels to target, mean ± std | seeds that reach it | per seed | "
        f"{metric} at {last_labels} labels |",
        "| --- | --- | --- | --- | --- |",
    ]
    for strategy, s in summaries.items():
        mean = "not reached" if s["mean_labels"] is None else f"{s['mean_labels']:.1f} ± {s['std_labels']:.1f}"
        labels = s["labels_to_target"].items()
        per_seed = ", ".join(f"{seed}: {'not reached' if n is None else n}" for seed, n in labels)
        lines.append(f"| {strategy} | {mean} | {s['reached']} of {len(s['labels_to_target'])} | {per_seed} | "
                     f"{band(s['curve'][-1])} |")  # fmt: skip
    lines += ["", f"Test {metric} by labels, mean ± std over seeds:", "",
              "| labels | " + " | ".join(strategies) + " |", "| --- |" + " --- |" * len(strategies)]  # fmt: skip
    for i, point in enumerate(summaries[strategies[0]]["curve"]):
        lines.append(f"| {point['labels']} | " + " | ".join(band(summaries[s]["curve"][i]) for s in strategies) + " |")
    t = result["seconds_per_round"]
    scoring = "" if t["selection_s"] is None else f"; scoring the pool to choose a batch {t['selection_s']:.0f}"
    lines += ["", f"Seconds per round, mean over the rounds: training {t['train_s']:.0f}, evaluation "
              f"{t['evaluate_s']:.0f}{scoring}.", "", f"![curves]({png_name})"]  # fmt: skip
    return "\n".join(lines) + "\n"


def report(args: argparse.Namespace, exp: Experiment, ceiling: Mapping[str, Any], curves: Mapping[str, dict],
           described: Mapping[str, Any], wall_s: float) -> dict[str, Any]:  # fmt: skip
    """The results file's content (see :func:`markdown`)."""
    target_value = args.target * ceiling["metrics"][args.metric]
    # every round once: round 0 of a seed is shared by the strategies
    firsts = {seed: ps[0] for per_seed in curves.values() for seed, ps in per_seed.items()}
    later = {s: [p for ps in per_seed.values() for p in ps[1:]] for s, per_seed in curves.items()}
    rounds = [*firsts.values(), *(p for ps in later.values() for p in ps)]
    spent = sum(p["train_s"] + p["evaluate_s"] + p["selection_s"] for p in rounds)
    ranked = [p["selection_s"] for s, ps in later.items() if s != RANDOM for p in ps]
    meta = {
        "bundle": exp.bundle, "tag": args.tag, "metric": args.metric, "target": args.target,
        "strategies": list(curves), "seeds": args.seeds, "seed_labels": args.seed_labels, "batch": args.batch,
        "rounds": args.rounds, "pool": len(exp.pool), "test": len(exp.test), **described,
        "overrides": exp.overrides, "measure": exp.measure if OWN_STRATEGY["ife_multitask"] in curves else None,
        "machine": bundle_runs.machine(),
        "command": shlex.join([str(Path(__file__).resolve().relative_to(REPO)), *args.argv]),
        "minutes": round((spent + ceiling["train_s"] + ceiling["evaluate_s"]) / 60, 1),
        "wall_minutes": round(wall_s / 60, 1),
    }  # fmt: skip
    return {
        "meta": meta,
        "ceiling": {"labels": len(ceiling["labelled"]), "seed": args.seeds[0], "max_epochs": args.ceiling_epochs,
                    "metrics": ceiling["metrics"], "train_s": ceiling["train_s"]},  # fmt: skip
        "target_value": target_value,
        "strategies": {s: summarize(per_seed, args.metric, target_value) for s, per_seed in curves.items()},
        "seconds_per_round": {"train_s": float(np.mean([p["train_s"] for p in rounds])),
                              "evaluate_s": float(np.mean([p["evaluate_s"] for p in rounds])),
                              "selection_s": float(np.mean(ranked)) if ranked else None},  # fmt: skip
        "curves": {s: {str(seed): ps for seed, ps in per_seed.items()} for s, per_seed in curves.items()},
    }


# ---- main ---------------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring), with the bundle's defaults filled in."""
    from lib.strategies.scores import IFE_MEASURES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", choices=tuple(OWN_STRATEGY), default="ife_multitask")
    parser.add_argument("--dataset-dir", type=Path,
                        help="folder of a datalist.json (default: a synthetic data set of the bundle's generator)")
    parser.add_argument("--tag", default="", help="names the data set in the output files, e.g. real_gels")
    parser.add_argument("--synthetic-count", type=int, help="synthetic images (default 200 gels, 120 B-scans)")
    parser.add_argument("--synthetic-size", type=int, nargs=2, metavar=("H", "W"),
                        help="synthetic image size (default 96 x 144 gels, 96 x 96 B-scans)")
    parser.add_argument("--synthetic-option", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="a further argument of the generator, e.g. typed_masks true (OCT) or appearance published")
    parser.add_argument("--data-seed", type=int, default=0,
                        help="seed of the synthetic data set and of a held-out test split (default 0)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of the pool held out for testing when the datalist has no testing list")
    parser.add_argument("--seed-labels", type=int, help="labelled images at the start (default 40 gels, 10 B-scans)")
    parser.add_argument("--batch", type=int, help="images labelled per round, k (default 20 gels, 10 B-scans)")
    parser.add_argument("--rounds", type=int, help="training rounds, the seed set's included (default 3 IFE, 4 OCT)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="simulation seeds (default 0 1)")
    parser.add_argument("--strategies", nargs="+", help="default: the bundle's own strategy and random")
    parser.add_argument("--measure", default=IFE_MEASURES[0], choices=IFE_MEASURES,
                        help=f"the IFE measure ife_least_certain ranks by (the app's default: {IFE_MEASURES[0]})")
    parser.add_argument("--metric", help="the test metric of the target (default: accuracy for IFE, dice for OCT)")
    parser.add_argument("--target", type=float, default=0.9, help="share of the ceiling's metric to reach (0.9)")
    parser.add_argument("--size", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                        help="a bundle setting of every training run, e.g. --size max_epochs 8 (JSON, else text)")
    parser.add_argument("--ceiling-epochs", type=int, help="epochs of the all-labels run (default: max_epochs)")
    parser.add_argument("--workdir", type=Path, help="default outputs/active_learning/<bundle>[_<tag>]")
    parser.add_argument("--output-dir", type=Path, default=APP_DIR / "results")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    own = OWN_STRATEGY[args.bundle]
    args.strategies = args.strategies or [own, RANDOM]
    args.metric = args.metric or METRICS[args.bundle][0]
    count, size = DEFAULT_SYNTHETIC[args.bundle]
    defaults = (*DEFAULT_LOOP[args.bundle], count, size)
    for name, default in zip(("seed_labels", "batch", "rounds", "synthetic_count", "synthetic_size"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, default)
    args.synthetic_option = [(k, _parse_value(v)) for k, v in args.synthetic_option]
    args.sizes = {**DEFAULT_SIZES[args.bundle], **{k: _parse_value(v) for k, v in args.size}}
    args.ceiling_epochs = args.ceiling_epochs or args.sizes["max_epochs"]
    name = f"{args.bundle}{'_' + args.tag if args.tag else ''}"
    args.stem = f"active_learning_{name}"
    args.workdir = (args.workdir or REPO / "outputs" / "active_learning" / name).resolve()
    if bad := [s for s in args.strategies if s not in (own, RANDOM)]:
        parser.error(f"--strategies for {args.bundle} are {own} and {RANDOM}, got {bad}.")
    if args.metric not in METRICS[args.bundle]:
        parser.error(f"--metric for {args.bundle} is one of {', '.join(METRICS[args.bundle])}.")
    if min(args.seed_labels, args.batch, args.rounds) < 1 or not 0 < args.target <= 1:
        parser.error("--seed-labels, --batch and --rounds must be >= 1 and --target in (0, 1].")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from custom_components.core.atomic import write_json_atomic, write_text_atomic

    args = parse_args(argv)
    started = time.time()
    args.workdir.mkdir(parents=True, exist_ok=True)
    datalist, data = dataset(args)
    pool, test, split = pool_and_test(datalist, args.bundle, args.test_fraction, args.data_seed, args.workdir)
    needed = args.seed_labels + (args.rounds - 1) * args.batch
    if needed > len(pool):
        raise SystemExit(f"{args.rounds} rounds from {args.seed_labels} labels by {args.batch} need {needed} pool "
                         f"images; the pool has {len(pool)}.")  # fmt: skip
    overrides = {**args.sizes, **fixed_recipe(args.bundle, pool, args.workdir)}
    exp = Experiment(args.bundle, args.workdir, {e["image"]: e for e in pool}, test, overrides, args.measure)
    print(f"{args.bundle}: pool {len(pool)}, test {len(test)} ({split}); settings {overrides}", flush=True)
    ceiling = run_round(exp, args.workdir / "ceiling", list(exp.pool), args.seeds[0], max_epochs=args.ceiling_epochs)
    print(f"[ceiling] {len(pool)} labels: {ceiling['metrics']} (train {ceiling['train_s']:.0f} s)", flush=True)
    curves: dict[str, dict[int, list]] = {strategy: {} for strategy in args.strategies}
    for seed in args.seeds:
        per_strategy = simulate_seed(exp, seed, args.strategies, args.seed_labels, args.batch, args.rounds)
        for strategy, points in per_strategy.items():
            curves[strategy][seed] = points
    described = {"data": data, "test_split": split}
    result = report(args, exp, ceiling, curves, described, time.time() - started)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result, args.output_dir / f"{args.stem}.json")
    plot_curves(result, args.output_dir / f"{args.stem}.png")
    write_text_atomic(markdown(result, f"{args.stem}.png"), args.output_dir / f"{args.stem}.md")
    print(markdown(result, f"{args.stem}.png"))
    print(f"wrote {args.output_dir / args.stem}.json, .md and .png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
