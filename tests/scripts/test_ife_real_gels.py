# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""scripts/experiments/ife_real_gels.py: the cross-validation command of each setting, reuse of finished runs only,
and the table from the summaries (the runs themselves are the bundle's commands, tested elsewhere)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "experiments" / "ife_real_gels.py"


@pytest.fixture(scope="module")
def real():
    spec = importlib.util.spec_from_file_location("ife_real_gels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _args(tmp_path, **sizes):
    return argparse.Namespace(dataset_dir=tmp_path / "gels", folds=5, seed=42, sizes={**{"image_size": 96,
                              "max_epochs": 3, "batch_size": 16}, **sizes}, workdir=tmp_path / "work")  # fmt: skip


def test_each_setting_runs_cross_validate_with_its_configs_and_the_lane_switch(real, tmp_path):
    baseline = real._cv_command("9-class baseline, horizontal attention", True, _args(tmp_path), tmp_path / "o")
    text = shlex.join(baseline)
    assert "--bundle ife_multitask" in text and "--folds 5" in text and "--config baseline.json" in text
    assert "--override lane_layout True" in text and "--override lane_orientation auto" in text
    assert "--image-size 96" in text and "--max-epochs 3" in text and "--override batch_size 16" in text
    paper = shlex.join(real._cv_command("multi-task, both (the paper)", False, _args(tmp_path), tmp_path / "o"))
    assert "--config" not in paper and "--override lane_layout False" in paper
    assert "--override lambda_inter" in paper  # the paper's regularisers, as ife_paper_tables runs them


def test_the_fine_tuned_run_starts_each_fold_from_the_synthetic_model(real, tmp_path):
    args = argparse.Namespace(**vars(_args(tmp_path)), pretrain_setting=real.BUNDLE_DEFAULT)
    model = real._synthetic_only_root(args, "classic") / "models" / "model.pt"
    assert model.parent.parent.name == "synthetic_only_multi_task__no_regulariser"  # one model per setting
    text = shlex.join(real._cv_command(real.BUNDLE_DEFAULT, True, args, tmp_path / "o", model))
    assert f"--override pretrained {model}" in text
    assert "pretrained" not in shlex.join(real._cv_command(real.BUNDLE_DEFAULT, True, args, tmp_path / "o"))


def test_the_named_default_is_what_train_json_trains(real):
    """The tables mark "multi-task, no regulariser" as this bundle's default: its overrides change nothing in
    train.json (the attention ids, the network's initialisation), so the mark stays true."""
    train = json.loads((real.BUNDLE / "configs" / "train.json").read_text())
    configs, overrides = real.SETTINGS[real.BUNDLE_DEFAULT]
    assert configs == []
    for key, value in overrides.items():
        assert (train["network_def"][key.split("#", 1)[1]] if "#" in key else train[key]) == value, key


def test_only_finished_runs_are_reported_and_the_rest_listed(real, tmp_path):
    args = argparse.Namespace(**vars(_args(tmp_path)), only_finished=True)
    assert real.run_one("multi-task, no regulariser", True, args) is None
    assert not (tmp_path / "work").exists()  # nothing was started
    result = {"meta": {"gels": 271, "machine": "m", "minutes": 1, "command": "x"}, "runs": [],
              "not_run": [{"setting": "9-class baseline, horizontal attention", "lane_layout": False}]}  # fmt: skip
    assert "Not run yet on the real gels" in real.markdown(result)
    assert "9-class baseline, horizontal attention (lanes off)" in real.markdown(result)


def test_a_finished_run_is_reused_only_with_the_same_command_and_all_folds(real, tmp_path):
    out, command = tmp_path / "run", ["python", "cv.py", "--folds", "5"]
    assert real._finished(out, 5, command) is None
    out.mkdir()
    (out / "command.txt").write_text(shlex.join(command[1:]) + "\n")
    (out / "cross_validation.json").write_text(json.dumps({"folds_done": 4, "mean": {}, "per_fold": []}))
    assert real._finished(out, 5, command) is None  # interrupted
    (out / "cross_validation.json").write_text(json.dumps({"folds_done": 5, "mean": {}, "per_fold": []}))
    assert real._finished(out, 5, command)["folds_done"] == 5
    assert real._finished(out, 5, ["python", "cv.py", "--folds", "5", "--seed", "1"]) is None  # other command


def test_the_table_shows_mean_and_std_in_percent_beside_the_paper(real):
    scores = {"accuracy": {"mean": 0.5, "std": 0.1}, "macro_f1": {"mean": 0.25, "std": 0.05},
              "fnr": {"mean": None, "std": None}}  # fmt: skip
    result = {"meta": {"gels": 271, "folds": 5, "seed": 42, "sizes": {}, "machine": "m", "minutes": 1,
                       "command": "x"},
              "runs": [{"setting": "multi-task, both (the paper)", "lane_layout": True, "scores": scores}]}  # fmt: skip
    row = [line for line in real.markdown(result).splitlines() if line.startswith("| multi-task")][0]
    assert row == "| multi-task, both (the paper) | on | 50.0 ± 10.0 | 25.0 ± 5.0 | – | 95.43 | 86.68 | 8.54 |"
    result["synthetic_only"] = [{"setting": real.BUNDLE_DEFAULT, "settings": {}, "gels": 271, "accuracy": 0.48,
                                 "macro_f1": 0.406, "fnr": 0.1681, "minutes": 16.7, "appearance": "classic"}]  # fmt: skip
    assert "all 271 real gels: accuracy 48.0 %, macro F1 40.6 %, FNR 16.8 % (16.7 min" in real.markdown(result)
    assert ("multi-task, no regulariser (**this bundle's default**) trained on the bundle's synthetic gels only"
            in real.markdown(result))
    result["synthetic_only"].append({**result["synthetic_only"][0], "appearance": "published", "accuracy": 0.6})
    assert "synthetic default, in the generator's published look, at the README demo's" in real.markdown(result)
    assert "accuracy 60.0 %" in real.markdown(result)


def test_scores_of_predictions_by_hand(real, tmp_path):
    """Four real gels: two right, one positive called Negative (FNR 1/3 of the three positives), one wrong class."""
    rows = [("a", "Negative", "Negative", "true"), ("b", "IgG-kappa", "IgG-kappa", "true"),
            ("c", "IgG-kappa", "Negative", "false"), ("d", "lambda", "kappa", "true")]  # fmt: skip
    path = tmp_path / "predictions.csv"
    path.write_text("image,label,prediction,lane_layout_used\n" + "".join(",".join(r) + "\n" for r in rows))
    scores = real.scores_of_predictions(path)
    assert scores["gels"] == 4 and scores["accuracy"] == pytest.approx(0.5)
    assert scores["fnr"] == pytest.approx(1 / 3) and scores["lanes_read"] == pytest.approx(0.75)
    assert scores["per_class_recall"]["IgG-kappa"] == pytest.approx(0.5) and scores["per_class_recall"]["IgA-kappa"] is None
    # F1: Negative 2/3 (tp 1, fp 1), IgG-kappa 2/3 (tp 1, fn 1), lambda 0, kappa 0 (predicted, never true)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)


def test_keep_earlier_adds_the_runs_this_part_did_not_make_and_refuses_other_sizes(real):
    meta = {"data": "d", "gels": 271, "folds": 5, "seed": 42, "sizes": {"max_epochs": 12}, "machine": "m",
            "minutes": 1}  # fmt: skip
    run = lambda setting, lanes: {"setting": setting, "lane_layout": lanes, "scores": {}, "minutes": 2}  # noqa: E731
    default, baseline = real.CLASS_EVIDENCE, "9-class baseline, horizontal attention"
    earlier = {"meta": {**meta, "command": "first"}, "runs": [run(default, True), run(default, False)],
               "not_run": [{"setting": baseline, "lane_layout": True}, {"setting": baseline, "lane_layout": False}],
               "synthetic_only": [{"setting": default, "settings": {}, "gels": 271, "accuracy": 0.48,
                                   "macro_f1": 0.4, "fnr": 0.1, "appearance": "classic"}]}  # fmt: skip
    part = {"meta": {**meta, "command": "second"}, "runs": [run(baseline, True)],
            "not_run": [{"setting": baseline, "lane_layout": False}]}  # fmt: skip
    merged = real.keep_earlier(part, earlier)
    assert [(r["setting"], r["lane_layout"]) for r in merged["runs"]] == [
        (baseline, True), (default, True), (default, False)]  # the settings' order, lanes on first
    assert merged["not_run"] == [{"setting": baseline, "lane_layout": False}]  # listed once
    assert merged["synthetic_only"] == earlier["synthetic_only"]
    assert merged["meta"]["command"] == "second" and merged["meta"]["earlier_commands"] == ["first"]
    assert "earlier runs kept (`--keep-earlier`): `first`" in real.markdown(merged)
    published = {**earlier["synthetic_only"][0], "appearance": "published"}
    both = real.keep_earlier({**part, "synthetic_only": [published]}, earlier)["synthetic_only"]
    assert [s["appearance"] for s in both] == ["classic", "published"]  # one per look, none lost
    other_setting = {**earlier["synthetic_only"][0], "setting": real.BUNDLE_DEFAULT}
    both = real.keep_earlier({**part, "synthetic_only": [other_setting]}, earlier)["synthetic_only"]
    assert [s["setting"] for s in both] == [default, real.BUNDLE_DEFAULT]  # one per setting too
    other = {**part, "meta": {**part["meta"], "sizes": {"max_epochs": 15}}}
    with pytest.raises(SystemExit, match="their sizes differ"):
        real.keep_earlier(other, earlier)
