"""The active-learning loop on a real MONAI Label server: ask for an image, label it, train, ask again.

The server (``conftest.py``: its own process group, copies of the app and both bundles, untrained at start, a
network guard) serves three synthetic gels and three synthetic B-scans in one studies folder, so each request names
its model's images (``{"images": "ife_*"}``). What must hold: the strategy offers an unlabelled image of its model,
the next request a different one, a labelled image never again, a training run's new checkpoint makes the strategy
score again (and only the images still unlabelled), and the datastore's images and labels are untouched by it all:
every file byte-identical, the labels exactly what was sent.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow


def _files(studies: Path) -> dict[str, str]:
    """SHA-256 of the datastore's images and labels (not MONAI Label's own records, nor the score caches)."""
    files = [p for p in studies.glob("*") if p.is_file() and p.suffix == ".png"]
    files += [p for p in (studies / "labels").rglob("*") if p.is_file()]
    return {str(p.relative_to(studies)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _ask(server: Server, strategy: str, images: str) -> dict[str, Any]:
    response = server.request("post", f"/activelearning/{strategy}", json={"images": images})
    assert response.status_code == 200, f"{response.text}\n{server.log_tail()}"
    return response.json()


def _label_gel(server: Server, gel: str) -> None:
    server.save_label(gel, f"{gel}.json", json.dumps({"label": server.ife_labels[gel]}).encode())


def test_ask_label_train_ask_again(server: Server) -> None:
    before = _files(server.studies)
    gels = set(server.ife_labels)

    first = _ask(server, "ife_least_certain", "ife_*")
    assert first["id"] in gels, first
    details = first["uncertainty"]
    assert (details["candidates"], details["scored"], details["failed"]) == (3, 3, 0)
    assert details["model_version"].startswith("random weights")  # untrained at start
    _label_gel(server, first["id"])

    second = _ask(server, "ife_least_certain", "ife_*")
    assert second["id"] in gels - {first["id"]}
    assert (second["uncertainty"]["candidates"], second["uncertainty"]["scored"]) == (2, 0)  # from the cache
    _label_gel(server, second["id"])

    task = server.train("ife_multitask")
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"

    third = _ask(server, "ife_least_certain", "ife_*")
    assert third["id"] in gels - {first["id"], second["id"]}
    details = third["uncertainty"]
    # the trained checkpoint is a new model version: the one unlabelled gel is scored again, with its weights
    assert (details["candidates"], details["scored"], details["cached"]) == (1, 1, 0)
    assert details["model_version"].startswith("sha256:")

    # OCT from the same datastore: a B-scan, and once labelled never again
    bscan = _ask(server, "oct_entropy", "oct_*")
    assert bscan["id"] in server.masks and 0.0 <= bscan["uncertainty"]["entropy"] <= 1.0
    server.save_label(bscan["id"], f"{bscan['id']}.png", server.png(server.masks[bscan["id"]]))
    assert _ask(server, "oct_entropy", "oct_*")["id"] in set(server.masks) - {bscan["id"]}
    assert server.request("post", "/activelearning/first", json={}).json()["id"] not in {
        first["id"], second["id"], bscan["id"]
    }

    # nothing in the datastore lost or rewritten: every image as it was, and the three labels as sent
    after = _files(server.studies)
    assert {k: v for k, v in after.items() if k in before} == before
    added = sorted(set(after) - set(before))
    assert added == sorted(
        [f"labels/final/{first['id']}.json", f"labels/final/{second['id']}.json", f"labels/final/{bscan['id']}.png"]
    )
    for gel in (first["id"], second["id"]):
        saved = json.loads((server.studies / "labels" / "final" / f"{gel}.json").read_text())
        assert saved == {"label": server.ife_labels[gel]}
    saved_mask = np.asarray(Image.open(server.studies / "labels" / "final" / f"{bscan['id']}.png"))
    assert np.array_equal(saved_mask, server.masks[bscan["id"]])
    assert (server.studies / ".strategy_scores" / "ife_least_certain.json").is_file()
