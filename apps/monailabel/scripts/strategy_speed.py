"""How long ``POST /activelearning/<strategy>`` takes over a datastore of unlabelled images, cold and warm.

Builds, in a temporary folder: copies of both bundles with a small, freshly initialised checkpoint each (weights do
not change the time a forward pass takes, so they are random: the scores mean nothing here), and a studies folder
of ``--count`` synthetic gels (``render_gel``) and ``--count`` synthetic B-scans (``render_bscan``). The app is
built in this process and driven through MONAI Label's own FastAPI routes (``fastapi.testclient``, no socket), so
a timing includes everything a client waits for: the strategy, MONAI Label's record of the offered image in the
datastore, the JSON answer. For each strategy:

- ``cold``: no score cache; every image is run through the infer task;
- ``warm``: the same request again; every score comes from the cache;
- ``restart``: a new app on the same folders (the cache is read from its file);
- ``after label``: one image labelled, then asked again (one image fewer, nothing scored);
- ``new model``: the checkpoint replaced by other weights; every image is scored again (``--skip-new-model`` to
  leave it out, it costs as much as ``cold``).

Run from the repository root, with the repository's virtual environment::

    .venv/bin/python apps/monailabel/scripts/strategy_speed.py --count 1000 --json speed.json

The figures are printed and, with ``--json``, written. Use ``--models`` to time one strategy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[1]
REPO = APP_DIR.parents[1]

#: small networks that still run the bundles' whole pipeline (IFE: the lane layout and the band-pattern detector at
#: the bundle's defaults; OCT: BScanInferer with a narrow TransUNet, as the README's demo trains it)
TINY_RECIPES: dict[str, dict[str, Any]] = {
    "ife_multitask": {
        "image_size": 64,
        "channels": [8, 16, 32, 64],
        "stage4_row_stride": 1,
        "lane_layout": True,
        "lane_orientation": "albumin_bottom",
    },
    "oct_fluid_seg": {
        "image_size": 32,
        "geometry": "resize",
        "filters": [8, 16, 32, 64],
        "patch_size": 1,
        "embed_dim": 96,
        "training_aspect": None,
    },
}
#: the strategy of each model
STRATEGIES = {"ife_multitask": "ife_least_certain", "oct_fluid_seg": "oct_entropy"}
#: the images' size (H, W): small, as the README's demo uses
IMAGE_HW = (64, 96)


def copy_bundles(destination: Path, models: Sequence[str] = tuple(STRATEGIES)) -> Path:
    """Copy the bundles' configs (no weights, data or outputs) to ``destination``; returns it."""
    for name in models:
        shutil.copytree(
            REPO / "bundles" / name,
            destination / name,
            ignore=shutil.ignore_patterns("models", "data", "eval", "outputs", "runs", "logs", "__pycache__"),
        )
    return destination


def tiny_checkpoint(bundle: Path, seed: int = 0, recipe: Mapping[str, Any] | None = None) -> Path:
    """Write ``models/model.pt`` of freshly initialised weights and its recipe into a bundle folder.

    The network is the one the bundle's ``inference.json`` builds from the recipe, so the app serves it as it would
    a trained checkpoint.

    Args:
        bundle: the bundle folder (``ife_multitask`` or ``oct_fluid_seg``, by its name).
        seed: the weights' random seed (another seed gives another model version).
        recipe: the recipe's settings (default :data:`TINY_RECIPES` of the bundle).

    Returns:
        the checkpoint's path.
    """
    import torch
    from monai.bundle import ConfigParser

    from custom_components.core.recipe import write_recipe

    checkpoint = bundle / "models" / "model.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    write_recipe(checkpoint, dict(recipe or TINY_RECIPES[bundle.name]))  # first: inference.json reads it
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser.update({"bundle_root": str(bundle)})
    torch.manual_seed(seed)
    network = parser.get_parsed_content("network_def", instantiate=True)
    write_recipe(checkpoint, dict(recipe or TINY_RECIPES[bundle.name]), network=network)
    tmp = checkpoint.with_suffix(".pt.tmp")
    torch.save(network.state_dict(), tmp)
    os.replace(tmp, checkpoint)
    return checkpoint


def write_studies(studies: Path, count: int, models: Sequence[str] = tuple(STRATEGIES), seed: int = 7) -> None:
    """``count`` synthetic gels (``gel_0000.png`` ...) and ``count`` B-scans (``oct_0000.png`` ...) of
    :data:`IMAGE_HW`, of random classes and fluid."""
    import numpy as np
    from PIL import Image

    from custom_components.ife.classes import IFE_CLASSES
    from custom_components.ife.synthetic import render_gel
    from custom_components.oct.synthetic import render_bscan

    studies.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        if "ife_multitask" in models:
            name = IFE_CLASSES[int(rng.integers(len(IFE_CLASSES)))]
            Image.fromarray(render_gel(rng, name, image_size=IMAGE_HW)).save(studies / f"gel_{i:04d}.png")
        if "oct_fluid_seg" in models:
            image, _ = render_bscan(rng, image_size=IMAGE_HW)
            Image.fromarray(image).save(studies / f"oct_{i:04d}.png")


def build_app(studies: Path, bundles: Path, models: Sequence[str], extra_conf: Mapping[str, str] | None = None):
    """The app on ``studies`` with the bundles in ``bundles``, as MONAI Label's server would build it, registered
    so that MONAI Label's routes reach it; returns ``(app, client)`` (a ``fastapi.testclient.TestClient``)."""
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))  # the app's own imports are "lib.*", as when MONAI Label loads it
    from fastapi.testclient import TestClient
    from monailabel.app import app as fastapi_app
    from monailabel.config import settings
    from monailabel.interfaces.utils import app as app_utils

    from main import BundlesApp

    conf = {
        "bundles_dir": str(bundles),
        "models": ",".join(models),
        "oct_fluid_seg_images": "oct_*",
        "ife_multitask_images": "gel_*",
        **(extra_conf or {}),
    }
    settings.MONAI_LABEL_APP_DIR, settings.MONAI_LABEL_STUDIES = str(APP_DIR), str(studies)
    # no folder watcher: nothing changes the folder behind the app's back here, and a watcher thread would outlive
    # the app (and the temporary folder)
    settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD = False
    app = BundlesApp(str(APP_DIR), str(studies), conf)
    app_utils.clear_cache()
    app_utils.apps[f"{settings.MONAI_LABEL_APP_DIR}{settings.MONAI_LABEL_STUDIES}"] = app
    return app, TestClient(fastapi_app)  # not entered: no start-up hooks, the app above is the instance


def ask(client, strategy: str) -> tuple[float, dict[str, Any]]:
    """``POST /activelearning/<strategy>``; returns the seconds it took and the answer."""
    start = time.perf_counter()
    response = client.post(f"/activelearning/{strategy}", json={})
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"/activelearning/{strategy} answered {response.status_code}: {response.text}")
    return seconds, response.json()


def label(app, model: str, image_id: str, folder: Path) -> None:
    """Save a final label of ``image_id`` through the datastore (a Negative class or an empty mask)."""
    import numpy as np
    from PIL import Image

    if model == "ife_multitask":
        path = folder / f"{image_id}.json"
        path.write_text(json.dumps({"label": "Negative"}))
    else:
        path = folder / f"{image_id}.png"
        Image.fromarray(np.zeros(IMAGE_HW, np.uint8)).save(path)
    app.datastore().save_label(image_id, str(path), "final", {})


def measure(count: int, models: Sequence[str], workdir: Path, skip_new_model: bool) -> dict[str, Any]:
    """Build everything under ``workdir`` and time the requests (see the module docstring)."""
    import torch

    bundles = copy_bundles(workdir / "bundles", models)
    for name in models:
        tiny_checkpoint(bundles / name)
    studies = workdir / "studies"
    start = time.perf_counter()
    write_studies(studies, count, models)
    results: dict[str, Any] = {
        "count": count,
        "image_hw": list(IMAGE_HW),
        "recipes": {m: TINY_RECIPES[m] for m in models},
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "synthesis_s": round(time.perf_counter() - start, 1),
        "strategies": {},
    }
    app, client = build_app(studies, bundles, models)
    labels = workdir / "labels"
    labels.mkdir()
    for model in models:
        strategy = STRATEGIES[model]
        row: dict[str, Any] = {}
        row["cold_s"], cold = ask(client, strategy)
        row["cold_counts"] = {k: cold["uncertainty"][k] for k in ("candidates", "scored", "cached", "failed")}
        row["cold_per_image_ms"] = round(1000 * row["cold_s"] / max(1, cold["uncertainty"]["scored"]), 1)
        row["warm_s"], warm = ask(client, strategy)
        row["warm_counts"] = {k: warm["uncertainty"][k] for k in ("candidates", "scored", "cached", "failed")}
        print(f"{strategy}: cold {row['cold_s']:.1f} s, warm {row['warm_s']:.3f} s", flush=True)
        results["strategies"][strategy] = row
    cache_dir = studies / ".strategy_scores"
    results["cache_bytes"] = {p.name: p.stat().st_size for p in sorted(cache_dir.glob("*.json"))}

    app, client = build_app(studies, bundles, models)  # a restarted server: the caches come from their files
    for model in models:
        strategy = STRATEGIES[model]
        row = results["strategies"][strategy]
        row["restart_s"], answer = ask(client, strategy)
        row["restart_counts"] = {k: answer["uncertainty"][k] for k in ("candidates", "scored", "cached", "failed")}
        label(app, model, answer["id"], labels)
        row["after_label_s"], after = ask(client, strategy)
        row["after_label_counts"] = {k: after["uncertainty"][k] for k in ("candidates", "scored", "cached", "failed")}
        assert after["id"] != answer["id"], "a labelled image was offered again"
        if not skip_new_model:
            tiny_checkpoint(bundles / model, seed=1)
            row["new_model_s"], renewed = ask(client, strategy)
            row["new_model_counts"] = {k: renewed["uncertainty"][k] for k in ("candidates", "scored", "cached")}
        print(f"{strategy}: {json.dumps(row)}", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="unlabelled images per model (default 1000)")
    parser.add_argument("--models", default="ife_multitask,oct_fluid_seg", help="comma-separated models to time")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--skip-new-model", action="store_true", help="do not time the rescoring after a new model")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: on a CPU shared with other jobs, OpenMP threads that wait for each "
        "other made the tiny networks' forward passes 100 to 300 times slower with 2 threads than with 1)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in STRATEGIES]
    if unknown or not models or args.count < 2:
        parser.error(f"--models must name some of {', '.join(STRATEGIES)} and --count be >= 2.")
    sys.path.insert(0, str(REPO))
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="strategy_speed_"))
    os.environ.setdefault("MONAI_LABEL_SESSION_PATH", str(workdir / "sessions"))
    try:
        results = measure(args.count, models, workdir, args.skip_new_model)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
