"""apps/monailabel/scripts/active_learning_simulation.py: the annotation loop simulated on data with known labels.

The round and selection logic is tested as pure functions on hand-made cases (the seed set shared by the
strategies at a seed, batches of exactly k never repeating a labelled image, the served order, the labels to the
target, the reuse of finished rounds), with the bundle commands stood in for where a round would train. The
end-to-end run (``slow``) simulates two rounds on 30 tiny synthetic gels; its bundle commands run in the test
process, parsed as the command line parses them (``fire``), which spares an interpreter start per command.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bundle_runs

APP_DIR = Path(__file__).resolve().parents[2] / "apps" / "monailabel"
SCRIPT = APP_DIR / "scripts" / "active_learning_simulation.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("active_learning_simulation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def _pool(n: int = 12) -> list[str]:
    return [f"/data/images/img_{i:02d}.png" for i in range(n)]


# ---- the seed set and the batches ---------------------------------------------------------------------------------


def test_seed_set_depends_on_the_pool_and_seed_only(sim):
    pool = _pool()
    first = sim.seed_set(pool, 4, seed=3)
    assert len(first) == len(set(first)) == 4 and set(first) <= set(pool)
    assert sim.seed_set(list(reversed(pool)), 4, seed=3) == first  # not the pool's order
    assert sim.seed_set(pool, 4, seed=4) != first


def test_random_batch_takes_k_unlabelled_images_seeded_per_round(sim):
    pool = _pool()
    labelled = pool[:5]
    unlabelled = sim.unlabelled_images(pool, labelled)
    assert unlabelled == pool[5:]
    batch = sim.random_batch(unlabelled, 3, seed=0, round_index=0)
    assert len(batch) == len(set(batch)) == 3 and not set(batch) & set(labelled)
    assert sim.random_batch(unlabelled, 3, seed=0, round_index=0) == batch
    draws = {tuple(sim.random_batch(unlabelled, 3, seed=0, round_index=r)) for r in range(6)}
    assert len(draws) > 1  # another draw each round
    assert sorted(sim.random_batch(unlabelled, 10, seed=0, round_index=0)) == unlabelled  # fewer left than k


def test_ranked_batch_follows_the_served_order_and_skips_unscored_images(sim):
    unlabelled = ["/a/img_c.png", "/a/img_a.png", "/b/img_b.png", "/a/img_d.png", "/a/img_e.png"]
    keys = {"/a/img_c.png": (0, 0.4), "/a/img_a.png": (1, 0.1), "/b/img_b.png": (0, 0.4), "/a/img_e.png": (0, 0.2)}
    # referred (0) before not referred, then the lower measure, then the id; img_d could not be scored
    assert sim.ranked_batch(unlabelled, keys, 3) == ["/a/img_e.png", "/b/img_b.png", "/a/img_c.png"]
    assert sim.ranked_batch(unlabelled, keys, 10) == ["/a/img_e.png", "/b/img_b.png", "/a/img_c.png", "/a/img_a.png"]


def test_rank_keys_are_the_served_strategies(sim):
    referred = {"confidence": 0.9, "margin": 0.8, "refer": True}
    unsure = {"confidence": 0.3, "margin": 0.05, "refer": False}
    sure = {"confidence": 0.8, "margin": 0.7, "refer": False}
    keys = {name: sim.rank_key("ife_multitask", score, "confidence") for name, score in
            (("referred", referred), ("unsure", unsure), ("sure", sure))}  # fmt: skip
    assert sorted(keys, key=keys.get) == ["referred", "unsure", "sure"]
    oct_keys = {p: sim.rank_key("oct_fluid_seg", {"entropy": e}, "confidence") for p, e in (("x", 0.2), ("y", 0.7))}
    assert sim.ranked_batch(["x", "y"], oct_keys, 1) == ["y"]  # the highest entropy first


def test_ife_scores_of_predictions_read_the_csv_as_the_served_strategy_scores(sim, tmp_path):
    from custom_components.ife.classes import IFE_CLASSES
    from custom_components.ife.handlers import PREDICTION_COLUMNS

    probabilities = [0.05, 0.05, 0.05, 0.4, 0.3, 0.05, 0.04, 0.03, 0.03]
    row = {column: "" for column in PREDICTION_COLUMNS}
    row.update({f"p_{name}": f"{p:.6f}" for name, p in zip(IFE_CLASSES, probabilities)})
    row.update(image="/data/gel.png", prediction="IgG-kappa", refer="true")
    path = tmp_path / "predictions.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    score = sim.ife_scores_of_predictions(path)["/data/gel.png"]
    assert score["confidence"] == pytest.approx(0.4) and score["margin"] == pytest.approx(0.1)
    assert score["refer"] is True


@pytest.mark.parametrize("channels", [1, 3])
def test_oct_score_is_the_mean_entropy_in_the_retina_summed_over_fluid_classes(sim, channels):
    from custom_components.oct.synthetic import render_bscan

    bscan, _ = render_bscan(np.random.default_rng(0), image_size=(64, 96))
    image = torch.as_tensor(bscan, dtype=torch.float32)[None] / 255.0
    logits = torch.zeros((channels, 64, 96))  # p = 0.5 everywhere: one bit per class
    score = sim.oct_score(image, logits)
    assert score["entropy"] == pytest.approx(channels) and score["bscans"] == 1


# ---- labels to the target ------------------------------------------------------------------------------------------


def test_labels_to_target_on_hand_made_curves(sim):
    curve = [{"labels": 10, "accuracy": 0.5}, {"labels": 20, "accuracy": 0.9}, {"labels": 30, "accuracy": 0.85},
             {"labels": 40, "accuracy": 0.95}]  # fmt: skip
    assert sim.labels_to_target(curve, "accuracy", 0.9) == 20  # reaching it exactly counts
    assert sim.labels_to_target(curve, "accuracy", 0.92) == 40
    assert sim.labels_to_target(list(reversed(curve)), "accuracy", 0.92) == 40
    assert sim.labels_to_target(curve, "accuracy", 0.99) is None  # not reached


def test_summarize_averages_over_the_seeds_that_reach_the_target(sim):
    curves = {
        0: [{"labels": 10, "dice": 0.5}, {"labels": 20, "dice": 0.8}],
        1: [{"labels": 10, "dice": 0.7}, {"labels": 20, "dice": 0.9}],
        2: [{"labels": 10, "dice": 0.3}, {"labels": 20, "dice": 0.4}],
    }
    summary = sim.summarize(curves, "dice", 0.7)
    assert summary["labels_to_target"] == {"0": 20, "1": 10, "2": None}
    assert summary["reached"] == 2 and summary["mean_labels"] == 15 and summary["std_labels"] == 5
    assert [p["labels"] for p in summary["curve"]] == [10, 20]
    assert summary["curve"][0]["mean"] == pytest.approx(0.5) and summary["curve"][1]["seeds"] == 3
    assert sim.summarize({0: curves[2]}, "dice", 0.7)["mean_labels"] is None


# ---- the rounds, with the bundle commands stood in for ------------------------------------------------------------


def _experiment(sim, tmp_path, bundle="ife_multitask", n=12):
    pool = {path: {"image": path, "label": "Negative"} for path in _pool(n)}
    test = [{"image": "/data/test/t.png", "label": "kappa"}]
    return sim.Experiment(bundle, tmp_path, pool, test, {"max_epochs": 1}, "confidence")


def _fake_bundle(calls):
    """A stand-in for the bundle commands: records them, writes a checkpoint and an accuracy of labels / 100."""

    def run(bundle, configs, overrides, log):
        calls.append((configs, dict(overrides)))
        root = Path(overrides["bundle_root"])
        if configs == ["train.json"]:
            (root / "models").mkdir(parents=True, exist_ok=True)
            (root / "models" / "model.pt").write_bytes(str(overrides).encode())
        else:
            labelled = json.loads((root / "data" / "datalist.json").read_text())["training"]
            (root / "eval").mkdir(parents=True, exist_ok=True)
            (root / "eval" / "metrics.json").write_text(json.dumps({"accuracy": len(labelled) / 100, "macro_f1": 0}))

    return run


def test_a_finished_round_is_reused_and_a_changed_one_runs_anew(sim, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sim, "_bundle", _fake_bundle(calls))
    exp = _experiment(sim, tmp_path)
    labelled = _pool()[:4]
    record = sim.run_round(exp, tmp_path / "r", labelled, seed=0)
    assert record["metrics"]["accuracy"] == 0.04 and len(calls) == 2
    assert sim.run_round(exp, tmp_path / "r", labelled, seed=0) == record and len(calls) == 2  # reused
    sim.run_round(exp, tmp_path / "r", _pool()[:5], seed=0)  # another labelled set
    sim.run_round(exp, tmp_path / "r", _pool()[:5], seed=1)  # another seed
    assert len(calls) == 6
    pretrained = tmp_path / "r" / "models" / "model.pt"
    sim.run_round(exp, tmp_path / "r2", labelled, seed=0, pretrained=pretrained)
    assert calls[-2][1]["pretrained"] == pretrained and "pretrained" not in calls[-1][1]  # fine-tuned, not evaluated so
    pretrained.write_bytes(b"other weights")
    sim.run_round(exp, tmp_path / "r2", labelled, seed=0, pretrained=pretrained)
    assert len(calls) == 10  # other starting weights: run anew


def test_strategies_start_from_one_seed_set_and_add_k_new_labels_a_round(sim, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sim, "_bundle", _fake_bundle(calls))
    # the model scores an image by its index: the least certain is the highest index
    monkeypatch.setattr(sim, "pool_scores", lambda exp, root, images: (
        {p: {"confidence": -int(p[-6:-4]), "margin": 0.0, "refer": False} for p in images}, 1.5))  # fmt: skip
    exp = _experiment(sim, tmp_path, n=20)
    curves = sim.simulate_seed(exp, 7, ["ife_least_certain", "random"], seed_labels=4, k=3, rounds=4)
    trained = [o["bundle_root"] for c, o in calls if c == ["train.json"]]
    assert [root.name for root in trained].count("round_0") == 1  # the seed set's model is trained once per seed, for every strategy
    labelled = {}
    for strategy in ("ife_least_certain", "random"):
        points = curves[strategy]
        assert [p["labels"] for p in points] == [4, 7, 10, 13]
        rounds = [json.loads((tmp_path / "seed_7" / (strategy if r else "") / f"round_{r}" / "round.json").read_text())
                  for r in range(4)]  # fmt: skip
        labelled[strategy] = [r["labelled"] for r in rounds]
        for before, after in zip(labelled[strategy], labelled[strategy][1:]):
            assert set(before) < set(after) and len(after) == len(set(after)) == len(before) + 3
    assert labelled["ife_least_certain"][0] == labelled["random"][0] == sim.seed_set(list(exp.pool), 4, 7)
    new = set(labelled["ife_least_certain"][1]) - set(labelled["ife_least_certain"][0])
    remaining = sim.unlabelled_images(list(exp.pool), labelled["ife_least_certain"][0])
    assert new == set(remaining[-3:])  # the three least certain
    assert [p["selection_s"] for p in curves["ife_least_certain"]] == [0.0, 1.5, 1.5, 1.5]
    assert [p["selection_s"] for p in curves["random"]] == [0.0] * 4
    fine_tuned = [o["pretrained"] for c, o in calls if c == ["train.json"] and "pretrained" in o]
    assert tmp_path / "seed_7" / "round_0" / "models" / "model.pt" in fine_tuned
    assert tmp_path / "seed_7" / "random" / "round_2" / "models" / "model.pt" in fine_tuned


def test_a_datalist_without_testing_gives_up_a_grouped_test_split(sim, tmp_path):
    labels = ["Negative", "kappa", "IgG-kappa"]
    entries = [{"image": f"/d/g{i}.png", "label": labels[i % 3], "group": f"p{i // 2}"} for i in range(30)]
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": entries}))
    pool, test, how = sim.pool_and_test(datalist, "ife_multitask", 0.2, 0, tmp_path / "work")
    assert "held out" in how and len(pool) + len(test) == 30 and 4 <= len(test) <= 8
    assert not {e["group"] for e in pool} & {e["group"] for e in test}  # near-duplicates on one side
    assert sim.pool_and_test(datalist, "ife_multitask", 0.2, 0, tmp_path / "work")[1] == test


def test_the_fluid_classes_are_decided_once_on_the_whole_pool(sim, tmp_path):
    from PIL import Image

    pool = []
    for i, value in enumerate((1, 1, 2, 0)):  # one mask shows SRF (2): the pool is typed, though most are IRF-only
        mask = np.zeros((8, 8), np.uint8)
        mask[2:4, 2:4] = value
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        pool.append({"image": str(tmp_path / f"m{i}.png"), "label": str(tmp_path / f"m{i}.png")})
    assert sim.fixed_recipe("oct_fluid_seg", pool, tmp_path) == {"fluid_classes": ["IRF", "SRF", "PED"]}
    # what the bundle would decide on an IRF-only seed set alone: a binary model, which later rounds could not fine-tune
    assert sim.fixed_recipe("oct_fluid_seg", pool[:2], tmp_path) == {"fluid_classes": ["fluid"]}
    assert sim.fixed_recipe("ife_multitask", pool, tmp_path) == {}


# ---- end to end ---------------------------------------------------------------------------------------------------


def _run_in_this_process(cmd, log, cwd=None):
    """``bundle_runs.run_logged`` for a ``python -m monai.bundle run`` command, in this process: the arguments as
    ``fire`` parses them, the output into ``log``."""
    from fire.parser import DefaultParseValue
    from monai.bundle import run

    assert cmd[:4] == [sys.executable, "-m", "monai.bundle", "run"], cmd
    keys, values = cmd[4::2], cmd[5::2]
    with open(log, "w") as f:
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                run(**{k[2:]: DefaultParseValue(v) for k, v in zip(keys, values)})
        finally:  # handlers created meanwhile (MONAI's get_logger binds sys.stdout once per name) outlive the file
            for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
                for handler in getattr(logger, "handlers", []):
                    if isinstance(handler, logging.StreamHandler) and handler.stream is f:
                        handler.setStream(sys.stdout)


@pytest.mark.slow
def test_two_rounds_on_tiny_synthetic_gels(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(bundle_runs, "run_logged", _run_in_this_process)
    out = tmp_path / "results"
    argv = [
        "--bundle", "ife_multitask", "--synthetic-count", "30", "--synthetic-size", "48", "64",
        # 64 px: the default's stage 4 (stride 32) has 2 x 2 rows and columns, so a last batch of one gel still
        # has more than one value per channel for batch norm (at 32 px it would have one)
        "--size", "image_size", "64", "--size", "max_epochs", "1", "--size", "num_workers", "0",
        "--size", "batch_size", "8", "--seed-labels", "8", "--batch", "4", "--rounds", "2", "--seeds", "0",
        "--workdir", str(tmp_path / "work"), "--output-dir", str(out), "--tag", "tiny",
    ]  # fmt: skip
    assert sim.main(argv) == 0
    result = json.loads((out / "active_learning_ife_multitask_tiny.json").read_text())
    assert (out / "active_learning_ife_multitask_tiny.png").stat().st_size > 0
    assert "ife_least_certain" in (out / "active_learning_ife_multitask_tiny.md").read_text()
    assert result["meta"]["strategies"] == ["ife_least_certain", "random"]
    assert result["ceiling"]["labels"] == result["meta"]["pool"]
    for strategy in ("ife_least_certain", "random"):
        assert [p["labels"] for p in result["curves"][strategy]["0"]] == [8, 12]
        assert set(result["strategies"][strategy]["labels_to_target"]) == {"0"}
    work = tmp_path / "work" / "seed_0"
    first = set(json.loads((work / "round_0" / "round.json").read_text())["labelled"])
    for strategy in ("ife_least_certain", "random"):
        second = set(json.loads((work / strategy / "round_1" / "round.json").read_text())["labelled"])
        assert first < second and len(second - first) == 4
    assert result["curves"]["ife_least_certain"]["0"][1]["selection_s"] > 0  # the pool was scored
    # run again: every round is reused, no bundle command runs
    monkeypatch.setattr(bundle_runs, "run_logged", lambda *a, **k: pytest.fail(f"ran {a[0][:6]}"))
    assert sim.main(argv) == 0
    again = json.loads((out / "active_learning_ife_multitask_tiny.json").read_text())
    assert again["curves"] == result["curves"] and again["strategies"] == result["strategies"]
