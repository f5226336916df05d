"""scripts/cross_validate.py: end to end on a tiny synthetic set (2 folds x 1 epoch), and its argument checks.

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

import pytest

from custom_components.bundle.commands import bundle_run_command
from custom_components.data.synthetic.oct import synthesize_oct_dataset

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
