# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""What the scripts that drive the bundles (demo, cross-validation, benchmark, experiments) share: one way to build
and run a ``python -m monai.bundle run`` command line with a log, the machine a measurement ran on, and the small
helpers of their results files (folder names, mean and standard deviation).

Scripts in ``scripts/`` import it as ``bundle_runs`` (their folder is on ``sys.path`` when run); those in
``scripts/experiments/`` put ``scripts/`` there first. Nothing in the package imports it: it starts subprocesses
and reads ``/proc``, which a bundle never needs."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CPU_DEMO_SETTINGS",
    "FULL_DEMO_SETTINGS",
    "bundle_run_command",
    "cpu_name",
    "machine",
    "mean_std",
    "run_logged",
    "slug",
    "train_and_evaluate",
]

#: bundle settings that finish in minutes on a 2-core CPU: the README demo's, shared with the experiments that
#: compare settings at the demo's size (``scripts/demo.py``, ``scripts/experiments/fast_settings.py``)
CPU_DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "ife": {"image_size": 128, "synthetic_count": 450, "max_epochs": 8, "warmup_epochs": 1, "batch_size": 32},
    "oct": {
        "image_size": 96, "synthetic_count": 160, "max_epochs": 15, "learning_rate": 0.001, "batch_size": 8,
        "filters": "[16,32,64,128,256]",
    },
}  # fmt: skip
#: the same at the paper's sizes (the bundles' defaults, with more synthetic images), for a GPU
FULL_DEMO_SETTINGS: dict[str, dict[str, Any]] = {"ife": {"synthetic_count": 3000}, "oct": {"synthetic_count": 400}}


def bundle_run_command(
    bundle_dir: str | os.PathLike, configs: Sequence[str], overrides: Mapping[str, Any] | None = None
) -> list[str]:
    """The command line that runs a bundle's ``configs`` merged in order, with its metadata and logging config.

    Args:
        bundle_dir: the bundle folder (holding ``configs/``).
        configs: file names under ``bundle_dir/configs`` (``"train.json"``, ``"networks/unet.json"``, ...).
        overrides: ``--<id> <value>`` pairs (``bundle_root`` among them); values are written with ``str()``, which
            the command line's parser (``fire``) reads back as the same Python value for numbers, lists, paths,
            ``True``/``False`` and ``None`` (a JSON ``false`` would arrive as the string "false", which is true;
            a string that looks like a number or holds a comma is read as one: quote it inside the value).

    Returns:
        the argument list, starting with this interpreter.
    """
    folder = Path(bundle_dir).resolve() / "configs"
    files = "[" + ",".join(f"'{folder / name}'" for name in configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files]
    cmd += ["--meta_file", str(folder / "metadata.json"), "--logging_file", str(folder / "logging.conf")]
    for key, value in (overrides or {}).items():
        cmd += [f"--{key}", str(value)]
    return cmd


def run_logged(cmd: Sequence[str], log: str | os.PathLike, cwd: str | os.PathLike | None = None) -> None:
    """Run ``cmd`` with its output in ``log`` (after the command line itself); stop with the log's tail on failure.

    Raises:
        SystemExit: when the command exits non-zero; the message names the log and quotes its last 30 lines.
    """
    log = Path(log)
    with open(log, "w") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        result = subprocess.run(list(cmd), stdout=f, stderr=subprocess.STDOUT, cwd=cwd)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise SystemExit(f"command failed (exit {result.returncode}), log {log}:\n{tail}")


def train_and_evaluate(
    bundle_dir: str | os.PathLike, overrides: Mapping[str, Any], root: str | os.PathLike
) -> tuple[float, dict[str, Any]]:
    """An experiment's run: the bundle's ``train.json``, then ``evaluate.json`` on its test split into
    ``root/eval``, each logged in ``root`` (``train.log``, ``evaluate.log``).

    Args:
        bundle_dir: the bundle folder.
        overrides: the ``--<id> <value>`` pairs of both commands (``bundle_root`` among them).
        root: the run's folder (created).

    Returns:
        ``(training seconds, evaluate's metrics.json)``.

    Raises:
        SystemExit: as :func:`run_logged`, when either command fails.
    """
    import json
    import time

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_logged(bundle_run_command(bundle_dir, ["train.json"], overrides), root / "train.log")
    train_s = time.time() - started
    evaluation = {**overrides, "output_dir": str(root / "eval")}
    run_logged(bundle_run_command(bundle_dir, ["train.json", "evaluate.json"], evaluation), root / "evaluate.log")
    return train_s, json.loads((root / "eval" / "metrics.json").read_text())


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (e.g. ``"AMD EPYC"``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """The machine a measurement ran on, one line for a results file: the GPU (or "CPU only"), the CPU, its cores
    and torch's version, e.g. ``"CPU only; AMD EPYC 7B13, 2 cores; torch 2.14.1"``."""
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    return f"{device}; {cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}"


def slug(name: str) -> str:
    """A setting's name as a folder name: every character that is not a letter or digit becomes ``_``."""
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def mean_std(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Mean and (population) standard deviation of the values that are not ``None``; ``None`` when none are."""
    import numpy as np

    values = [v for v in values if v is not None]
    return (float(np.mean(values)), float(np.std(values))) if values else None
