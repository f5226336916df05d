# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""A training run killed with SIGKILL in the middle of an epoch, resumed with ``--resume True``, ends where the
uninterrupted run ends: same epochs, same learning rate, same best model, same weights to the bit.

For each bundle three real ``python -m monai.bundle run`` processes train the same tiny synthetic set with the same
seed: one uninterrupted, one killed mid-epoch, then the killed one resumed. The kill is delivered by the run itself
(an extra config adds an ``ITERATION_COMPLETED(once=...)`` handler that sends SIGKILL to its own process), so it
lands in the middle of the chosen epoch every time however fast the machine is; SIGKILL cannot be caught, so
nothing gets to tidy up. Every process uses one thread, so the arithmetic, and therefore the weights, are the same
in each. Random augmentation is on (IFE gets a noise transform added; OCT has its affine one), so a resumed run that
did not restore the random generators would not reproduce the uninterrupted weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from bundle_runs import bundle_run_command
from custom_components.core.synthetic import prepare_dataset
from custom_components.ife.synthetic import synthesize_ife_dataset
from custom_components.oct.synthetic import synthesize_oct_dataset

pytestmark = pytest.mark.slow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NARROW = [8, 16, 32, 64]
EPOCHS = 3
#: iterations per epoch: the training images left after the test and validation splits, in batches of 10
ITERATIONS_PER_EPOCH = {"ife_multitask": 5, "oct_fluid_seg": 5}
COMMON = {"max_epochs": EPOCHS, "batch_size": 10, "num_workers": 0, "cache_rate": 0.0, "seed": 3}
SETTINGS = {
    "ife_multitask": {**COMMON, "image_size": 48, "channels": NARROW, "synthetic_count": 63, "warmup_epochs": 1},
    "oct_fluid_seg": {**COMMON, "image_size": 32, "filters": NARROW, "synthetic_count": 63},
}
#: IFE trains without random transforms by default: add one, so that the transforms' own generators matter
IFE_AUGMENTATION = {
    "train#random_transforms": [{"_target_": "RandGaussianNoised", "keys": "image", "prob": 0.5, "std": 0.1}]
}


def _self_kill(bundle: str, at_iteration: int) -> dict:
    """An extra config: the run sends SIGKILL to itself when iteration ``at_iteration`` completes.

    The handler is added in the bundle's own ``run`` list, right before ``trainer.run()``: adding it earlier (say in
    ``initialize``) would build the trainer, and so the network and the data loader, in another order than the
    uninterrupted run does, and they would draw other random numbers.
    """
    run = json.loads((BUNDLES / bundle / "configs" / "train.json").read_text())["run"]
    kill = (
        f"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once={at_iteration}), "
        "lambda engine: os.kill(os.getpid(), signal.SIGKILL))"
    )
    return {"+imports": ["$import signal"], "run": [*run[:-1], kill, run[-1]]}


def _train(bundle: str, root: Path, dataset: Path, extra: list[Path], **override) -> subprocess.CompletedProcess:
    configs = [str(BUNDLES / bundle / "configs" / "train.json"), *map(str, extra)]
    settings = {**SETTINGS[bundle], "bundle_root": str(root), "dataset_dir": str(dataset), **override}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = bundle_run_command(BUNDLES / bundle, configs, settings)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _checked(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.parametrize("bundle", sorted(SETTINGS))
def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(bundle, tmp_path):
    extra = []
    if bundle == "ife_multitask":
        extra.append(tmp_path / "augment.json")
        extra[0].write_text(json.dumps(IFE_AUGMENTATION))
    per_epoch = ITERATIONS_PER_EPOCH[bundle]
    self_kill = tmp_path / "self_kill.json"
    self_kill.write_text(json.dumps(_self_kill(bundle, per_epoch + 2)))  # in the middle of epoch 2
    dataset, settings = tmp_path / "data", SETTINGS[bundle]
    # the synthetic set the bundle would generate, written once here rather than by two runs at the same time
    if bundle == "ife_multitask":
        prepare_dataset(dataset, synthesize_ife_dataset, settings["synthetic_count"], settings["seed"])
    else:
        prepare_dataset(dataset, synthesize_oct_dataset, settings["synthetic_count"], settings["seed"], [settings["image_size"]] * 2)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    with ThreadPoolExecutor(2) as pool:  # two single-threaded processes on two cores
        uninterrupted = pool.submit(_train, bundle, whole, dataset, extra)
        interrupted = pool.submit(_train, bundle, killed, dataset, [*extra, self_kill])
        _checked(uninterrupted.result())
        assert interrupted.result().returncode == -signal.SIGKILL

    # the killed run left the state of its last complete epoch, and a best model, both whole
    state = torch.load(killed / "models" / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["epoch_length"] == per_epoch
    assert state["trainer"]["iteration"] == per_epoch  # epoch 1 saved, epoch 2 was under way
    torch.load(killed / "models" / "model.pt", weights_only=True)
    assert not list((killed / "models").glob(".*.tmp*"))  # no kill while saving here: nothing temporary left

    _checked(_train(bundle, killed, dataset, extra, resume=True))

    final = {run: torch.load(run / "models" / "checkpoint.pt", weights_only=True) for run in (whole, killed)}
    for run in (whole, killed):
        assert final[run]["trainer"]["iteration"] == EPOCHS * per_epoch
    # the learning-rate schedule continued from its saved step: same step count, same rate at the end
    for key in ("last_epoch", "_last_lr"):
        assert final[killed]["lr_scheduler"][key] == final[whole]["lr_scheduler"][key]
    assert [g["lr"] for g in final[killed]["optimizer"]["param_groups"]] == [
        g["lr"] for g in final[whole]["optimizer"]["param_groups"]
    ]
    # shuffling, augmentation and SGD momentum picked up exactly where they were: the same weights, bit for bit
    for name, tensor in final[whole]["model"].items():
        assert torch.equal(final[killed]["model"][name], tensor), name
    # the best-model record survived the kill: same best epoch and metric, the same best model on disk
    assert final[killed]["best_model"]["best_metric_epoch"] == final[whole]["best_model"]["best_metric_epoch"]
    assert final[killed]["best_model"]["best_metric"] == pytest.approx(final[whole]["best_model"]["best_metric"])
    best = {run: torch.load(run / "models" / "model.pt", weights_only=True) for run in (whole, killed)}
    assert all(torch.equal(best[killed][name], tensor) for name, tensor in best[whole].items())
