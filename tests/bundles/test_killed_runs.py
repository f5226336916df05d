# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Runs killed with SIGKILL at random moments never leave a torn file under a final name.

For each bundle, real ``python -m monai.bundle run`` processes are killed while they write: while the synthetic
default is generated, while training saves its models, while evaluation writes its overlays and reports, while
inference writes masks, NIfTI volumes, overlays, attention figures and its tables. After every kill, every file under
the run's folders must be whole: a PNG or TIFF decodes to the last pixel, a CSV has a header and full rows, JSON and
JSON Lines parse, a NIfTI volume reads to the last voxel, a ``.pt`` loads with ``torch.load(weights_only=True)``.

What may be incomplete, and why that is acceptable:

- ``<name>.partial``: a stream written as rows come (predictions, measurements, attention profiles) and renamed to
  ``<name>`` only when the run completes; its name tells any reader that it is not a result.
- ``.<name>.<12 hex digits>.tmp<ending>``: the temporary file of
  :func:`~custom_components.core.atomic.save_atomic`, killed before its rename; hidden, and never under a name a
  reader looks for.
- TensorBoard event files: logs by nature, read as far as they go.

Kill points, per bundle: (1) the synthetic default half generated (the next run must generate it again, in full),
(2) training after 1-8 model saves (``model.pt``, ``model.recipe.json``, ``checkpoint.pt``), (3) evaluation while
it writes overlays and reports, (4) inference while it writes attention figures (IFE; one per gel) or masks,
overlays and NIfTI masks (OCT; 40 B-scans and 3 volumes), with ``predictions.csv``/``fluid_measurements.csv`` and
``attention_profiles.jsonl`` under way. The watcher polls the phase's output folder every millisecond and sends
SIGKILL as soon as it has seen the ``k``-th write start (a file appearing, or changing after a poll without change),
``k`` drawn at random up to the number of files the phase surely writes; so the kill lands within a millisecond or
two of a write starting, often while a temporary file is being written, and a writer that wrote under the final name
is caught half-way (checked by hand: with ``save_atomic`` made a plain write, each of 6 runs failed on a torn PNG or
``.pt``; with only the figure, mask and overlay writers made plain, IFE failed 3 runs of 3 on a torn attention or
confusion figure, OCT 2 of 3 on a torn mask or overlay). The draws are seeded (2026, so a CI run can be repeated);
``KILL_SEED`` sets another seed to explore other kill points.

The runs are forked from one interpreter that has imported torch, MONAI and ``custom_components`` once (a
``forkserver`` with those modules preloaded) and then execute ``monai.bundle``'s ``__main__`` with the command line
of :func:`~bundle_runs.bundle_run_command`, exactly what ``python -m monai.bundle run ...``
executes; a fresh interpreter would spend about 20 s per run importing, 10 runs here. About 45 s in all on a 2-core
CPU (the first run waits for the imports).
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import random
import re
import runpy
import signal
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from tqdm import tqdm

from bundle_runs import bundle_run_command
from custom_components.oct.synthetic import render_bscan

pytestmark = pytest.mark.slow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
NARROW = [8, 16, 32, 64]
COMMON = {"batch_size": 8, "num_workers": 0, "cache_rate": 0.0, "synthetic_count": 40, "seed": 0}
SETTINGS = {
    "ife_multitask": {**COMMON, "image_size": 48, "channels": NARROW},
    "oct_fluid_seg": {**COMMON, "image_size": 32, "filters": NARROW},
}
#: what a run imports, imported once in the forkserver instead of once per run
PRELOAD = [
    "torch", "monai.bundle.scripts", "monai.handlers", "monai.transforms", "monai.networks.nets", "ignite.engine",
    "fire", "nibabel", "scipy.ndimage", "matplotlib.figure", "matplotlib.backends.backend_agg",
    "custom_components.core", "custom_components.ife.handlers", "custom_components.oct.handlers",
    "custom_components.core.training", "custom_components.ife.networks",
    "custom_components.oct.transunet", "custom_components.ife.losses",
    "custom_components.oct.losses", "custom_components.ife.metrics", "custom_components.oct.transforms",
    "custom_components.oct.inferer",
]  # fmt: skip
#: the temporary file of save_atomic: hidden, the target's name, 12 hex digits, ".tmp", the target's ending
ATOMIC_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{12}\.tmp(\..+)?$")
RUN_TIMEOUT_S = 180
#: the latest write a run is killed at, per phase: no more than the files the phase surely writes (each of them is at
#: least one write), so that the kill always comes: 40 gels or 80 B-scans and masks generated, three files saved
#: in the first epoch and one more every epoch after, two reports (IFE) or clean and noisy overlays of the 7-8 test
#: B-scans and their reports (OCT) evaluated, a figure per gel (IFE) or a mask and an overlay per input (OCT: 43)
#: inferred
LAST_KILL_POINT = {
    "ife_multitask": {"synthesis": 35, "training": 8, "evaluation": 2, "inference": 35},
    "oct_fluid_seg": {"synthesis": 70, "training": 8, "evaluation": 14, "inference": 80},
}


def _run_cli(cmd: list[str], log: str) -> None:
    """Body of a forked run: what ``python -m monai.bundle run ...`` executes, with its output in ``log``."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the same on every machine: the CPU, one thread
    torch.set_num_threads(1)
    # ignite's progress bar (tqdm) would create a multiprocessing lock, which a killed run cannot release: the
    # resource tracker would warn of leaked semaphores when the tests end; a thread lock does the same job here
    tqdm.set_lock(threading.RLock())
    sys.argv = [cmd[0], *cmd[cmd.index("monai.bundle") + 1 :]]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)


def _stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of every file under ``folder`` (hidden ones too)."""
    stamps = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            try:
                st = os.stat(path)
            except FileNotFoundError:  # a temporary file renamed between the listing and the stat
                continue
            stamps[path] = (st.st_size, st.st_mtime_ns)
    return stamps


class Runs:
    """Starts bundle runs in processes forked from a warm interpreter; waits for them or kills them mid-write."""

    def __init__(self, logs: Path, rng: random.Random, seed: int) -> None:
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(PRELOAD)  # no effect if a forkserver already runs: slower, still right
        self.logs, self.rng, self.seed = logs, rng, seed
        self.logs.mkdir()

    def _start(self, name: str, bundle: str, configs: list[str], overrides: dict):
        cmd = bundle_run_command(BUNDLES / bundle, configs, {**SETTINGS[bundle], **overrides})
        log = self.logs / f"{name}.log"
        process = self.context.Process(target=_run_cli, args=(cmd, str(log)), name=name)
        process.start()
        return process, log

    def _tail(self, log: Path) -> str:
        return "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])

    def complete(self, name: str, bundle: str, configs: list[str], **overrides) -> None:
        """Run to the end; fail with the log's tail on a non-zero exit."""
        process, log = self._start(name, bundle, configs, overrides)
        process.join(RUN_TIMEOUT_S)
        assert process.exitcode == 0, f"{name} failed (exit {process.exitcode}):\n{self._tail(log)}"

    def kill_at_write(self, name: str, bundle: str, configs: list[str], watch: Path, most: int, **overrides) -> int:
        """Run, and SIGKILL the process when the ``k``-th write under ``watch`` shows, ``k`` random in [1, most].

        Returns:
            ``k``.
        """
        k = self.rng.randint(1, most)
        before, moving = _stamps(watch), set()
        process, log = self._start(name, bundle, configs, overrides)
        writes, deadline = 0, time.monotonic() + RUN_TIMEOUT_S
        while process.is_alive() and time.monotonic() < deadline:
            now = _stamps(watch)
            changed = {path for path, stamp in now.items() if stamp != before.get(path)}
            # a write starts where a file appears, or changes after a poll without change; a file growing from one
            # poll to the next is the same write going on
            writes += sum(path not in before or path not in moving for path in changed)
            before, moving = now, changed
            if writes >= k:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        else:
            process.kill()
        process.join(RUN_TIMEOUT_S)
        assert process.exitcode == -signal.SIGKILL and writes >= k, (
            f"{name} was to be killed at write {k} under {watch} (KILL_SEED={self.seed}), but it "
            f"{'ran out of time' if process.exitcode == -signal.SIGKILL else f'ended (exit {process.exitcode})'} "
            f"after {writes} writes:\n{self._tail(log)}"
        )
        return k


def _torn(path: Path) -> str | None:
    """Why the file at ``path`` is not whole (None when it is), by what its name says it is."""
    name = path.name
    try:
        if name.endswith((".png", ".tif", ".tiff")):
            with Image.open(path) as image:
                image.verify()  # chunk structure and checksums, up to the end marker
            with Image.open(path) as image:
                image.load()  # every pixel
        elif name.endswith(".csv"):
            text = path.read_text(encoding="utf-8")
            rows = list(csv.reader(io.StringIO(text)))
            if not rows or not rows[0] or not text.endswith("\n"):
                return "no header, or a last row without its line end"
            short = [row for row in rows[1:] if len(row) != len(rows[0])]
            if short:
                return f"rows of another length than the header's {len(rows[0])}: {short[:3]}"
        elif name.endswith(".jsonl"):
            for line in path.read_text(encoding="utf-8").splitlines():
                json.loads(line)
        elif name.endswith(".json"):
            json.loads(path.read_text(encoding="utf-8"))
        elif name.endswith((".nii", ".nii.gz")):
            np.asanyarray(nib.load(path).dataobj)  # every voxel (the header alone would load from a torn file)
        elif name.endswith(".pt"):
            torch.load(path, weights_only=True)
        else:
            return "a kind of file this test has no check for: add one"
    except Exception as error:  # whatever the reader raises is the finding
        return f"{type(error).__name__}: {error}"
    return None


def _assert_all_whole(folder: Path, context: str) -> dict[str, int]:
    """Check every file under ``folder``; returns the number of whole files by kind, for the test's log."""
    torn, kinds = [], {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            if name.endswith(".partial") or ATOMIC_TEMPORARY.match(name) or name.startswith("events.out.tfevents."):
                kind = "left as incomplete (.partial, temporary) or a log"
            else:
                problem = _torn(path)
                if problem:
                    torn.append(f"{path.relative_to(folder)}: {problem}")
                    continue
                kind = "".join(Path(name).suffixes[-2:]) if name.endswith(".nii.gz") else Path(name).suffix
            kinds[kind] = kinds.get(kind, 0) + 1
    assert not torn, f"{context}: torn files under final names:\n" + "\n".join(torn)
    return kinds


@pytest.fixture(scope="module")
def kill_seed() -> int:
    seed = int(os.environ.get("KILL_SEED", 2026))  # fixed, so CI runs are repeatable; set KILL_SEED to explore
    print(f"KILL_SEED={seed}")
    return seed


def _complete_datalist(dataset: Path) -> None:
    """The regenerated data set is the whole one: every image of the requested count, all listed and present."""
    datalist = json.loads((dataset / "datalist.json").read_text())
    entries = [e for section in datalist.values() for e in section]
    assert len(entries) == COMMON["synthetic_count"]
    assert all((dataset / e["image"]).is_file() for e in entries)


def _oct_inputs(folder: Path) -> Path:
    """Inference inputs: 40 B-scans at 192 x 256, whose masks and overlays take milliseconds to write (a window a
    kill can hit), and, for NIfTI outputs, three small volumes."""
    folder.mkdir()
    for i in range(40):
        Image.fromarray(render_bscan(np.random.default_rng([7, i]), (192, 256))[0]).save(folder / f"scan{i:02d}.png")
    for v in range(3):
        volume = np.stack([render_bscan(np.random.default_rng([v, i]), (64, 64))[0] for i in range(6)], axis=-1)
        nib.save(nib.Nifti1Image(volume, np.diag([0.004, 0.012, 0.12, 1.0])), folder / f"eye{v}.nii.gz")
    return folder


@pytest.mark.parametrize("bundle", sorted(SETTINGS))
def test_killed_runs_leave_only_whole_files(bundle, tmp_path, kill_seed):
    rng = random.Random(f"{kill_seed}-{bundle}")
    runs = Runs(tmp_path / "logs", rng, kill_seed)
    root = tmp_path / "runs"
    root.mkdir()
    dataset = root / "data"
    most = LAST_KILL_POINT[bundle]
    found: dict[str, dict[str, int]] = {}

    def killed(name: str, configs: list[str], watch: Path, **overrides) -> None:
        start = time.monotonic()
        k = runs.kill_at_write(name, bundle, configs, watch, most[name], **overrides)
        found[f"{name}, killed at write {k} after {time.monotonic() - start:.1f} s"] = _assert_all_whole(
            root, f"{bundle}, {name} killed at write {k} (KILL_SEED={kill_seed})"
        )

    # the synthetic default, written on first use, killed half-way: no datalist, so it is never taken for whole
    killed("synthesis", ["train.json"], root, bundle_root=str(root / "first"), dataset_dir=str(dataset))
    assert not (dataset / "datalist.json").exists()
    # training on the same folder generates the data set again, in full; killed while saving its models
    killed("training", ["train.json"], root / "killed" / "models", bundle_root=str(root / "killed"),
           dataset_dir=str(dataset), max_epochs=50)  # fmt: skip
    _complete_datalist(dataset)

    trained = {"bundle_root": str(root / "trained"), "dataset_dir": str(dataset)}
    runs.complete("train", bundle, ["train.json"], **trained, max_epochs=1)
    evaluation, inference = root / "evaluation", root / "inference"
    killed("evaluation", ["train.json", "evaluate.json"], evaluation, **trained, output_dir=str(evaluation))
    inputs = dataset / "images" if bundle == "ife_multitask" else _oct_inputs(tmp_path / "inputs")
    killed("inference", ["inference.json"], inference, **trained, input_dir=str(inputs), output_dir=str(inference))
    print(f"{bundle}: whole files by kind after each kill (KILL_SEED={kill_seed}):")
    for kill, kinds in found.items():
        print(f"  {kill}: {kinds}")
