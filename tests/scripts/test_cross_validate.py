"""scripts/cross_validate.py: end to end on a tiny synthetic set (2 folds x 1 epoch), its argument checks, the IFE
folds with the bundle commands stood in for (fold stratification, groups never split, the table, the ensemble
record), and the grouped stratified k-fold split it uses (``custom_components.core.splits``).

The script runs each fold's ``python -m monai.bundle run`` commands in processes of their own (so that a failed
fold leaves nothing behind in the next one). Here ``main()`` runs in the test process and so do the commands it
builds, parsed as the command line parses them (``fire``): the same runs without five interpreters' worth of imports.
How ``_run`` starts a process, logs it and stops on a failure is tested on its own with a bare Python command.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_runs import bundle_run_command
from custom_components.core.splits import stratified_group_kfold, stratified_group_split
from custom_components.oct.synthetic import synthesize_oct_dataset

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "cross_validate.py"
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "oct_fluid_seg"


@pytest.fixture(scope="module")
def cv():
    spec = importlib.util.spec_from_file_location("cross_validate", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_in_this_process(cmd: list[str], log: Path) -> None:
    """``cv._run`` for a ``python -m monai.bundle run`` command, in this process: the arguments as ``fire`` parses
    them for ``monai.bundle.run``, the command's output into ``log``, in the folder the script runs commands in."""
    from fire.parser import DefaultParseValue
    from monai.bundle import run

    assert cmd[:4] == [sys.executable, "-m", "monai.bundle", "run"], cmd
    keys, values = cmd[4::2], cmd[5::2]
    assert len(keys) == len(values) and all(k.startswith("--") for k in keys), cmd
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
def test_two_fold_cross_validation_writes_per_fold_and_mean_scores(cv, tmp_path, monkeypatch, capsys):
    datalist = synthesize_oct_dataset(tmp_path / "data", count=10, seed=0, image_size=(32, 32))
    pooled = json.loads(datalist.read_text())
    n_pool = len(pooled["training"]) + len(pooled["validation"])
    out = tmp_path / "cv"
    monkeypatch.setattr(cv, "_run", _run_in_this_process)
    monkeypatch.chdir(cv.REPO)  # where _run runs the commands
    argv = [
        "--dataset-dir", str(tmp_path / "data"), "--folds", "2", "--max-epochs", "1", "--image-size", "32",
        "--output-dir", str(out), "--override", "filters", "[4,8,16,32,64]", "--override", "num_workers", "0",
        "--override", "batch_size", "4", "--override", "save_overlays", "False",
    ]  # fmt: skip
    assert cv.main(argv) == 0
    stdout = capsys.readouterr().out
    summary = json.loads((out / "cross_validation.json").read_text())
    folds = summary["per_fold"]
    assert [f["fold"] for f in folds] == [0, 1]
    assert sum(f["held_out"] for f in folds) == n_pool  # every pooled B-scan held out exactly once
    held = [e["image"] for k in range(2) for e in json.loads((out / f"fold_{k}" / "datalist.json").read_text())["testing"]]
    assert len(set(held)) == n_pool
    test_images = {str(tmp_path / "data" / e["image"]) for e in pooled["testing"]}
    assert not test_images & set(held)  # the datalist's own test split is never used
    mean_dice = sum(f["dice"] for f in folds) / 2
    assert summary["mean"]["dice"]["mean"] == pytest.approx(mean_dice)
    rows = list(csv.DictReader(open(out / "cross_validation.csv")))
    assert [r["fold"] for r in rows] == ["0", "1", "mean", "std"]
    assert "Dice" in stdout and "fold 2/2" in stdout
    for k in range(2):  # each fold's two commands ran on the fold's own data, with their logs
        fold = out / f"fold_{k}"
        assert f"datalist {fold / 'datalist.json'}: " in (fold / "train.log").read_text()
        assert f"evaluating {fold / 'models' / 'model.pt'} " in (fold / "evaluate.log").read_text()
        assert not (fold / "evaluation" / "overlays").exists()  # save_overlays False arrived as False


def test_run_logs_the_command_and_stops_on_a_failure(cv, tmp_path):
    ok = [sys.executable, "-c", "import os; print('ran in', os.getcwd())"]
    cv._run(ok, tmp_path / "ok.log")
    assert (tmp_path / "ok.log").read_text().splitlines() == ["$ " + shlex.join(ok), f"ran in {cv.REPO}"]
    failing = [sys.executable, "-c", "import sys; print('out of memory', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(SystemExit) as err:
        cv._run(failing, tmp_path / "bad.log")
    message = str(err.value.code)
    assert message.startswith(f"command failed (exit 3), log {tmp_path / 'bad.log'}:") and "out of memory" in message


@pytest.mark.parametrize("folds", ["1", "0"])
def test_bad_fold_count_is_reported_before_any_work(cv, tmp_path, capsys, folds):
    with pytest.raises(SystemExit) as err:
        cv.main(["--folds", folds, "--dataset-dir", str(tmp_path / "data"), "--output-dir", str(tmp_path / "cv")])
    assert err.value.code == 2
    assert f"--folds must be at least 2, got {folds}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists() and not (tmp_path / "cv").exists()


def test_missing_extra_config_is_reported(cv, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cv.main(["--config", "networks/unet_typo.json", "--output-dir", str(tmp_path / "cv")])
    assert "networks/unet_typo.json not found" in capsys.readouterr().err


def test_command_merges_extra_configs_in_order_and_passes_overrides(cv, tmp_path):
    args = cv._parse(["--config", "networks/unet.json", "--bundle-root", str(BUNDLE)])
    assert args.bundle_root == BUNDLE.resolve() and args.folds == 5
    configs = ["train.json", *args.config, "evaluate.json"]
    cmd = bundle_run_command(args.bundle_root, configs, {"bundle_root": tmp_path, "max_epochs": 3, "amp": False})
    files = cmd[cmd.index("--config_file") + 1]
    configs = BUNDLE.resolve() / "configs"
    assert files == f"['{configs / 'train.json'}','{configs / 'networks' / 'unet.json'}','{configs / 'evaluate.json'}']"
    assert cmd[cmd.index("--bundle_root") + 1] == str(tmp_path)
    assert cmd[-4:] == ["--max_epochs", "3", "--amp", "False"]  # what fire reads back as 3 and False
    assert cmd[1:4] == ["-m", "monai.bundle", "run"]


# --- grouped, stratified folds (custom_components.core.splits) ---------------------------------------------------


def _entries(n: int = 120, n_groups: int = 30, seed: int = 0) -> list[dict]:
    """Entries with a skewed class mix (a rare class of about 7 %) in groups of 1-8 entries (patients, volumes)."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(["common", "middle", "rare"], size=n, p=[0.63, 0.3, 0.07])
    groups = rng.integers(0, n_groups, size=n)
    return [
        {"image": f"img_{i:03d}.png", "label": str(c), "group": f"patient_{g}"}
        for i, (c, g) in enumerate(zip(classes, groups))
    ]


@pytest.mark.parametrize("folds", [2, 5])
@pytest.mark.parametrize("seed", [0, 7])
def test_group_kfold_keeps_groups_whole_holds_each_entry_out_once_and_balances_classes(folds, seed):
    entries = _entries(seed=seed)
    splits = stratified_group_kfold(entries, folds, seed, key="label", group="group")
    assert len(splits) == folds
    held = [e["image"] for _, out in splits for e in out]
    assert sorted(held) == sorted(e["image"] for e in entries)  # every entry held out exactly once
    for train, out in splits:
        assert len(train) + len(out) == len(entries) and out
        assert not {e["group"] for e in train} & {e["group"] for e in out}  # no patient on both sides
        assert [e["image"] for e in out] == sorted(e["image"] for e in out)  # original order kept
    # each class's share per fold within one largest group's worth of its even share
    for name in ("common", "middle", "rare"):
        total = sum(e["label"] == name for e in entries)
        groups = {e["group"] for e in entries}
        largest = max(sum(e["label"] == name and e["group"] == g for e in entries) for g in groups)
        for _, out in splits:
            assert abs(sum(e["label"] == name for e in out) - total / folds) <= largest
    sizes = [len(out) for _, out in splits]
    assert max(sizes) - min(sizes) <= 8  # at most one group (<= 8 entries here) apart


def test_group_kfold_is_deterministic_and_without_groups_a_plain_stratified_split():
    entries = _entries()
    first = stratified_group_kfold(entries, 5, seed=3, key="label")
    assert first == stratified_group_kfold(entries, 5, seed=3, key="label")
    assert first != stratified_group_kfold(entries, 5, seed=4, key="label")
    # no group key: every entry its own group; 10 of a class over 5 folds gives exactly 2 per fold
    plain = [{"image": f"{i}.png", "label": "a" if i < 10 else "b"} for i in range(30)]
    for _, out in stratified_group_kfold(plain, 5, seed=0, key="label"):
        assert sum(e["label"] == "a" for e in out) == 2 and len(out) == 6


def test_group_kfold_and_split_errors():
    entries = [{"image": f"{i}.png", "label": "a", "group": "g0" if i < 3 else "g1"} for i in range(6)]
    with pytest.raises(ValueError, match=r"folds must be in \[2, 2\] for 6 entries in 2 groups, got 3"):
        stratified_group_kfold(entries, 3)
    with pytest.raises(ValueError, match="got 1"):
        stratified_group_kfold(entries, 1)
    with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\), got 1.5"):
        stratified_group_split(entries, 1.5)
    with pytest.raises(ValueError, match="at least two groups, got 1"):
        stratified_group_split([dict(e, group="one") for e in entries], 0.2)


def test_group_split_takes_about_the_fraction_in_whole_groups():
    entries = _entries(n=200, n_groups=100)
    train, val = stratified_group_split(entries, 0.2, seed=1, key="label")
    assert not {e["group"] for e in train} & {e["group"] for e in val}
    assert len(train) + len(val) == 200 and abs(len(val) - 40) <= 6
    assert {e["label"] for e in val} == {"common", "middle", "rare"}


# --- the IFE cross-validation, with the bundle commands stood in for ---------------------------------------------


def test_numeric_scores_flattens_the_report_and_skips_what_is_not_a_score(cv):
    report = {
        "accuracy": 0.5, "macro_f1": 1, "num_samples": 40, "image_size": 64, "checkpoint": "/m/model.pt",
        "per_class_recall": {"Negative": 0.25, "kappa": None}, "ece": {"before": 0.2, "after": 0.05},
        "support": {"Negative": 4}, "confusion_matrix": [[1, 0], [0, 1]], "calibrated": True,
    }  # fmt: skip
    assert cv.numeric_scores(report) == {
        "accuracy": 0.5, "macro_f1": 1.0, "per_class_recall.Negative": 0.25, "per_class_recall.kappa": None,
        "ece.before": 0.2, "ece.after": 0.05,
    }  # fmt: skip


def test_markdown_table_has_a_row_per_score_and_mean_and_std_columns(cv):
    results = [{"fold": 0, "train": 8, "held_out": 2, "accuracy": 0.5, "fnr": None},
               {"fold": 1, "train": 8, "held_out": 2, "accuracy": 1.0, "fnr": 0.25}]  # fmt: skip
    mean = {"accuracy": {"mean": 0.75, "std": 0.25}, "fnr": {"mean": 0.25, "std": 0.0}}
    lines = cv.markdown_table(results, mean, ["accuracy", "fnr"]).splitlines()
    assert lines[0] == "| score | fold 0 | fold 1 | mean | std |"
    assert lines[2] == "| accuracy | 0.5000 | 1.0000 | 0.7500 | 0.2500 |"
    assert lines[3] == "| fnr |  | 0.2500 | 0.2500 | 0.0000 |"
    assert lines[4] == "| train / held-out entries | 8 / 2 | 8 / 2 | | |"


def _ife_datalist(root: Path, gels_per_patient: int = 3) -> Path:
    """A datalist of 36 gels of three classes (no image files: the bundle commands are stood in for), 12 patients
    with three gels each (by default), and a testing list that cross-validation must leave alone."""
    entries = [
        {"image": f"images/gel_{i:03d}.png", "label": ["Negative", "IgG-kappa", "IgA-lambda"][i % 3],
         "group": f"patient_{i // gels_per_patient}"}
        for i in range(36)
    ]  # fmt: skip
    testing = [{"image": "images/test_000.png", "label": "Negative"}]
    root.mkdir(parents=True)
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": entries[:30], "validation": entries[30:], "testing": testing}))
    return path


def _disagreeing_call(image: str, label: str) -> str:
    """The class call of the stand-in inference: the label, except for every sixth gel, where the call (as the
    multi-task network's per-head call can) differs from the argmax of the probabilities."""
    if int(Path(image).stem.split("_")[1]) % 6:
        return label
    return "IgG-kappa" if label == "Negative" else "Negative"


def _fake_bundle_commands(calls: list, uncalibrated_folds: tuple[int, ...] = ()):
    """A ``_run`` that writes what each IFE command would: train a checkpoint (+ recipe, calibration), evaluate a
    metrics.json, inference a predictions.csv of the fold's held-out gels (``calibrated`` false for the folds in
    ``uncalibrated_folds``)."""
    from custom_components.ife.classes import IFE_CLASSES

    def run(cmd: list[str], log: Path) -> None:
        configs = cmd[cmd.index("--config_file") + 1]
        root = Path(cmd[cmd.index("--bundle_root") + 1])
        calls.append((root.name, [Path(c).name for c in configs.strip("[]").replace("'", "").split(",")], cmd))
        log.write_text("ran\n")
        fold = int(root.name.split("_")[1])
        if configs.endswith("evaluate.json']"):
            out = Path(cmd[cmd.index("--output_dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            report = {
                "accuracy": 0.5 + 0.25 * fold, "macro_f1": 0.4, "fnr": 0.1 * fold, "num_samples": 6,
                "per_class_recall": {"Negative": 1.0, "kappa": None}, "checkpoint": str(root / "models" / "model.pt"),
            }  # fmt: skip
            (out / "metrics.json").write_text(json.dumps(report))
        elif "inference.json" in configs:
            out = Path(cmd[cmd.index("--output_dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            held_out = json.loads((root / "datalist.json").read_text())["testing"]
            columns = ["image", "label", "prediction", *(f"p_{c}" for c in IFE_CLASSES), "calibrated"]
            calibrated = "false" if fold in uncalibrated_folds else "true"
            with open(out / "predictions.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(columns)
                for e in held_out:
                    probs = np.full(9, 0.1 / 8)
                    probs[IFE_CLASSES.index(e["label"])] = 0.9
                    call = _disagreeing_call(e["image"], e["label"])
                    writer.writerow([e["image"], e["label"], call, *probs, calibrated])
        else:
            models = root / "models"
            models.mkdir(parents=True, exist_ok=True)
            for name in ("model.pt", "model.recipe.json", "model.calibration.json", "checkpoint.pt"):
                (models / name).write_text(name)

    return run


def _spy_on_choose_operating_point(monkeypatch) -> list:
    """Record what the real ``choose_operating_point`` is given (and what it returns); it must be given the class
    calls inference made, not left to take the argmax."""
    from custom_components.ife import referral as ife_referral

    fitted: list = []
    real = ife_referral.choose_operating_point

    def spy(probabilities, labels, target_sensitivity=0.98, target_coverage=0.75, calls=None):
        assert calls is not None, "the operating point must be fitted on inference's class calls"
        point = real(probabilities, labels, target_sensitivity, target_coverage, calls=calls)
        fitted.append((probabilities, labels, target_sensitivity, target_coverage, calls, point))
        return point

    monkeypatch.setattr(ife_referral, "choose_operating_point", spy)
    return fitted


def test_ife_cross_validation_folds_table_and_ensemble_record(cv, tmp_path, monkeypatch, capsys):
    from custom_components.ife.classes import IFE_CLASSES

    datalist = _ife_datalist(tmp_path / "data")
    calls: list = []
    # the operating point's own fit is tested with custom_components.ife.referral; here: what it is given
    fitted = _spy_on_choose_operating_point(monkeypatch)
    monkeypatch.setattr(cv, "_run", _fake_bundle_commands(calls, uncalibrated_folds=(2,)))
    out, ensemble_dir = tmp_path / "cv", tmp_path / "bundle" / "models" / "ensemble"
    argv = ["--bundle", "ife_multitask", "--dataset-dir", str(tmp_path / "data"), "--folds", "3", "--output-dir",
            str(out), "--max-epochs", "1", "--override", "train#dataset#cache_rate", "0", "--override", "num_workers",
            "0", "--target-sensitivity", "0.9", "--ensemble-dir", str(ensemble_dir)]  # fmt: skip
    assert cv.main(argv) == 0
    captured = capsys.readouterr()
    stdout = captured.out
    assert "WARNING: the out-of-fold predictions of fold(s) 2 are uncalibrated" in captured.err

    written = json.loads(datalist.read_text())
    pooled = [e["image"] for e in written["training"] + written["validation"]]
    held = []
    for k in range(3):
        fold = json.loads((out / f"fold_{k}" / "datalist.json").read_text())
        sides = {s: {Path(e["image"]).name: e for e in fold[s]} for s in ("training", "validation", "testing")}
        held += list(sides["testing"])
        groups = {s: {e["group"] for e in v.values()} for s, v in sides.items()}
        # groups whole on every side, the validation split (written here: the entries carry groups) included
        assert not groups["training"] & groups["testing"] and not groups["validation"] & groups["testing"]
        assert not groups["training"] & groups["validation"] and sides["validation"]
        # stratified by class: 36 gels, 12 per class, 3 folds: 4 of each class held out per fold
        held_labels = sorted(e["label"] for e in sides["testing"].values())
        assert held_labels == sorted(["Negative", "IgG-kappa", "IgA-lambda"] * 4)
        # per fold: train, evaluate, then inference on the held-out gels; train-only overrides stay out of inference
        fold_calls = [c for c in calls if c[0] == f"fold_{k}"]
        assert [c[1] for c in fold_calls] == [["train.json"], ["train.json", "evaluate.json"], ["inference.json"]]
        inference = fold_calls[2][2]
        assert "--train#dataset#cache_rate" not in inference and inference[inference.index("--num_workers") + 1] == "0"
        assert inference[inference.index("--datalist_section") + 1] == "testing"
        assert inference[inference.index("--save_figures") + 1] == "False"
    assert sorted(held) == sorted(Path(p).name for p in pooled)  # each pooled gel held out once, testing untouched

    summary = json.loads((out / "cross_validation.json").read_text())
    assert summary["folds_done"] == 3 and summary["groups"] == 12
    assert summary["mean"]["accuracy"] == {"mean": pytest.approx(0.75), "std": pytest.approx(np.std([0.5, 0.75, 1.0]))}
    assert summary["mean"]["per_class_recall.kappa"] == {"mean": None, "std": None}
    assert "num_samples" not in summary["mean"] and "checkpoint" not in summary["mean"]
    rows = list(csv.DictReader(open(out / "cross_validation.csv")))
    assert [r["fold"] for r in rows] == ["0", "1", "2", "mean", "std"] and float(rows[3]["fnr"]) == pytest.approx(0.1)
    table = (out / "cross_validation.md").read_text()
    assert "| accuracy | 0.5000 | 0.7500 | 1.0000 | 0.7500 | 0.2041 |" in table
    assert "fold 3/3" in stdout and "macro F1 0.4000" in stdout

    # the operating point is fitted on the pooled out-of-fold probabilities of all 36 gels, with inference's calls
    [(probabilities, labels, sensitivity, coverage, fit_calls, point)] = fitted
    assert probabilities.shape == (36, 9) and labels.shape == (36,) and (sensitivity, coverage) == (0.9, 0.75)
    assert np.array_equal(probabilities.argmax(axis=1), labels)
    oof = list(csv.DictReader(open(out / "out_of_fold_predictions.csv")))
    assert len(oof) == 36 and {r["fold"] for r in oof} == {"0", "1", "2"}
    assert [IFE_CLASSES.index(r["label"]) for r in oof] == labels.tolist()
    assert [IFE_CLASSES.index(r["prediction"]) for r in oof] == list(fit_calls)  # the prediction column ...
    assert not np.array_equal(fit_calls, probabilities.argmax(axis=1))  # ... not the argmax
    assert [r["calibrated"] for r in oof] == ["false" if r["fold"] == "2" else "true" for r in oof]
    record = json.loads((out / "ensemble.json").read_text())
    assert record["checkpoints"] == [f"fold_{k}/models/model.pt" for k in range(3)]
    assert record["operating_point"] == pytest.approx(json.loads(json.dumps(point)))
    # the calls decide the confidences: 6 of the 36 calls (every sixth gel) have confidence 0.1 / 8, not 0.9
    assert record["operating_point"]["confidence_threshold"] == pytest.approx(0.9)
    assert record["operating_point"]["coverage"] == pytest.approx(30 / 36)
    fitted_on = record["operating_point_fitted_on"]
    assert fitted_on["out_of_fold_gels"] == 36 and fitted_on["uncalibrated_folds"] == [2]
    assert "single-model out-of-fold probabilities" in fitted_on["note"] and "mean" in fitted_on["note"]
    # --ensemble-dir: the weights with their recipe and calibration, not the training state, and the record
    from custom_components.ife.ensemble import ensemble_operating_point, fold_checkpoints

    assert sorted(p.name for p in (ensemble_dir / "fold_1" / "models").iterdir()) == [
        "model.calibration.json", "model.pt", "model.recipe.json"
    ]  # fmt: skip
    assert fold_checkpoints(ensemble_dir) == [str(ensemble_dir / f"fold_{k}" / "models" / "model.pt") for k in range(3)]
    assert ensemble_operating_point(ensemble_dir) == record["operating_point"]


def test_singleton_groups_split_like_no_groups(cv, tmp_path, monkeypatch, capsys):
    """One group per gel (as the synthetic OCT data has one per B-scan) is not "grouped": the bundle takes the
    validation split itself, as ``custom_components.core.datalist.training_and_validation`` treats such data."""
    _ife_datalist(tmp_path / "data", gels_per_patient=1)
    _spy_on_choose_operating_point(monkeypatch)
    monkeypatch.setattr(cv, "_run", _fake_bundle_commands([]))
    out = tmp_path / "cv"
    argv = ["--bundle", "ife_multitask", "--dataset-dir", str(tmp_path / "data"), "--folds", "2", "--output-dir",
            str(out), "--override", "num_workers", "0"]  # fmt: skip
    assert cv.main(argv) == 0
    capsys.readouterr()
    summary = json.loads((out / "cross_validation.json").read_text())
    assert summary["groups"] == 36 and summary["validation_split"] == "by the bundle (its val_fraction)"
    for k in range(2):
        assert "validation" not in json.loads((out / f"fold_{k}" / "datalist.json").read_text())
    assert json.loads((out / "ensemble.json").read_text())["operating_point_fitted_on"]["uncalibrated_folds"] == []


def test_an_interrupted_cross_validation_goes_on_at_its_first_unfinished_fold(cv, tmp_path, monkeypatch, capsys):
    """A fold that finished with the same datalist, configs and settings is reused (scores, checkpoint, out-of-fold
    predictions); one without its record (interrupted) runs again, and a changed setting runs every fold anew."""
    _ife_datalist(tmp_path / "data")
    _spy_on_choose_operating_point(monkeypatch)
    calls: list = []
    monkeypatch.setattr(cv, "_run", _fake_bundle_commands(calls))
    out = tmp_path / "cv"
    argv = ["--bundle", "ife_multitask", "--dataset-dir", str(tmp_path / "data"), "--folds", "3", "--output-dir",
            str(out), "--override", "num_workers", "0"]  # fmt: skip
    assert cv.main(argv) == 0
    first = {name: (out / name).read_text() for name in ("cross_validation.json", "out_of_fold_predictions.csv")}
    first_ensemble = json.loads((out / "ensemble.json").read_text())
    assert {c[0] for c in calls} == {"fold_0", "fold_1", "fold_2"}
    assert json.loads((out / "fold_1" / cv.FOLD_RECORD).read_text())["row"]["accuracy"] == 0.75

    calls.clear()
    (out / "fold_2" / cv.FOLD_RECORD).unlink()  # stopped before fold 3 finished
    capsys.readouterr()
    assert cv.main(argv) == 0
    assert {c[0] for c in calls} == {"fold_2"}
    stdout = capsys.readouterr().out
    assert stdout.count("finished before with the same data and settings: reused") == 2
    assert {name: (out / name).read_text() for name in first} == first
    assert json.loads((out / "ensemble.json").read_text()) == first_ensemble

    calls.clear()
    assert cv.main([*argv, "--max-epochs", "2"]) == 0
    assert {c[0] for c in calls} == {"fold_0", "fold_1", "fold_2"}


def test_ensemble_dir_is_for_the_ife_bundle_only(cv, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cv.main(["--ensemble-dir", str(tmp_path / "e"), "--output-dir", str(tmp_path / "cv")])
    assert "--ensemble-dir is for --bundle ife_multitask" in capsys.readouterr().err


@pytest.mark.slow
def test_two_fold_ife_cross_validation_runs_the_bundle_commands(cv, tmp_path, monkeypatch):
    """The real train, evaluate and inference commands of the IFE bundle on 30 tiny gels, 2 folds x 1 epoch."""
    from custom_components.ife.synthetic import synthesize_ife_dataset

    synthesize_ife_dataset(tmp_path / "data", count=30, seed=0, image_size=(64, 96))
    out = tmp_path / "cv"
    monkeypatch.setattr(cv, "_run", _run_in_this_process)
    monkeypatch.chdir(cv.REPO)
    argv = [
        "--bundle", "ife_multitask", "--dataset-dir", str(tmp_path / "data"), "--folds", "2", "--max-epochs", "1",
        "--image-size", "64", "--output-dir", str(out), "--override", "channels", "[8,16,32,64]",
        "--override", "num_workers", "0", "--override", "batch_size", "8", "--override", "cache_rate", "0.0",
    ]  # fmt: skip
    assert cv.main(argv) == 0
    summary = json.loads((out / "cross_validation.json").read_text())
    assert [f["fold"] for f in summary["per_fold"]] == [0, 1]
    assert {"accuracy", "macro_f1", "fnr"} <= set(summary["mean"])
    oof = list(csv.DictReader(open(out / "out_of_fold_predictions.csv")))
    assert len(oof) == sum(f["held_out"] for f in summary["per_fold"])
    record = json.loads((out / "ensemble.json").read_text())
    assert record["checkpoints"] == ["fold_0/models/model.pt", "fold_1/models/model.pt"]
    assert all((out / c).is_file() for c in record["checkpoints"]) and record["operating_point"]
