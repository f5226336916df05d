"""A real MONAI Label server on the app in ``apps/monailabel``, driven over HTTP on 127.0.0.1.

The server (``conftest.py``: its own process group, copies of the app and both bundles, a network guard) serves a
studies folder of small synthetic B-scans and gels; the tests save labels, train both models for one epoch and
swap in a checkpoint of other settings, and fine-tune from a given checkpoint.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

if TYPE_CHECKING:
    from conftest import Server

BUNDLES = ("oct_fluid_seg", "ife_multitask")


def test_info_lists_both_models_untrained(server: Server) -> None:
    info = server.get("/info/").json()
    assert set(info["models"]) == set(BUNDLES) and set(info["trainers"]) == set(BUNDLES)
    assert info["models"]["oct_fluid_seg"]["type"] == "segmentation"
    assert info["models"]["ife_multitask"]["type"] == "classification"
    for name in BUNDLES:
        assert info["models"][name]["checkpoint"] is None
        assert "RANDOM weights" in info["models"][name]["warning"]
    assert "no trained checkpoint" in server.log_tail(10**7)
    assert info["datastore"]["total"] == 6


def test_infer_oct_returns_mask_and_area(server: Server) -> None:
    response = server.infer("oct_fluid_seg", "image", params={"image": "oct_000"})
    assert response.status_code == 200, response.text
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == server.oct_hw
    assert set(np.unique(mask).tolist()) <= {0, 255}

    answer = server.infer("oct_fluid_seg", "json", params={"image": "oct_000"}).json()
    assert answer["image_size"] == list(server.oct_hw)
    assert answer["fluid_area_px"] == int(np.count_nonzero(mask))
    assert answer["fluid_fraction"] == pytest.approx(answer["fluid_area_px"] / mask.size, abs=1e-6)
    assert "RANDOM weights" in answer["warning"]


def test_infer_ife_returns_call_heads_and_attention(
    server: Server, check_ife_answer: Callable[[dict], None]
) -> None:
    response = server.infer("ife_multitask", "json", params={"image": "ife_001"})
    assert response.status_code == 200, response.text
    by_id = response.json()
    check_ife_answer(by_id)

    gel = (server.studies / "ife_001.png").read_bytes()
    uploaded = server.infer("ife_multitask", "json", files={"file": ("gel.png", gel, "image/png")}).json()
    check_ife_answer(uploaded)
    assert uploaded["probabilities"] == pytest.approx(by_id["probabilities"], abs=1e-5)


@pytest.mark.parametrize(
    "method, path, kwargs, status, words",
    [
        ("post", "/infer/no_such_model", {"params": {"image": "oct_000"}}, 404, "no_such_model"),
        ("post", "/train/no_such_model", {"json": {"max_epochs": 1}}, 404, "no_such_model"),
        ("post", "/infer/oct_fluid_seg", {"files": {"file": ("scan.png", b"not an image at all", "image/png")}}, 415, "not a readable 2D image"),
        ("post", "/infer/oct_fluid_seg", {"params": {"image": "../studies/oct_000"}}, 400, "not a datastore id"),
        ("post", "/infer/oct_fluid_seg", {"params": {"image": "/etc/hostname"}}, 400, "absolute path"),
        ("post", "/infer/ife_multitask", {"params": {"image": "no_such_image"}}, 404, "not in the datastore"),
        ("put", "/datastore/label", {"params": {"image": "../oct_000"}, "files": {"label": ("m.png", b"x", "image/png")}}, 400, "not a datastore id"),
        ("put", "/datastore/label", {"params": {"image": "oct_000", "tag": "../../x"}, "files": {"label": ("m.png", b"x", "image/png")}}, 400, "label tag"),
        ("put", "/datastore/label", {"params": {"image": "ife_000"}, "files": {"label": ("c.json", b'{"label": "IgZ-kappa"}', "application/json")}}, 422, "IgZ-kappa"),
        ("put", "/datastore/label", {"params": {"image": "oct_000"}, "files": {"label": ("m.png", lambda s: s.png(np.zeros((8, 8), np.uint8)), "image/png")}}, 422, "size"),
        ("put", "/datastore/label", {"params": {"image": "oct_000"}, "files": {"label": ("m.png", lambda s: s.png(np.full(s.oct_hw, 7, np.uint8)), "image/png")}}, 422, "{0, 255}"),
    ],
)  # fmt: skip
def test_bad_request_gets_4xx_and_server_keeps_serving(server: Server, method, path, kwargs, status, words) -> None:
    # a file content given as a function is made from the server (a mask the size of its B-scans)
    files = {
        key: (name, content(server) if callable(content) else content, kind)
        for key, (name, content, kind) in kwargs.get("files", {}).items()
    }
    response = server.request(method, path, **{**kwargs, "files": files})
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert server.get("/info/").status_code == 200


@pytest.mark.parametrize("model", BUNDLES)
def test_save_labels_then_one_epoch_training_writes_checkpoint(
    server: Server, model: str, check_ife_answer: Callable[[dict], None]
) -> None:
    server.save_all_labels(model)
    checkpoint = server.bundles / model / "models" / "model.pt"
    assert not checkpoint.exists()

    task = server.train(model)
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    assert checkpoint.is_file()
    # the labelled images reach the bundle as its datalist, with no validation list: the bundle splits them itself
    datalist = json.loads((server.bundles / model / "data" / "monailabel" / "datalist.json").read_text())
    assert list(datalist) == ["training"] and len(datalist["training"]) == 3

    info = server.get("/info/").json()["models"][model]
    assert info["checkpoint"] == str(checkpoint) and "warning" not in info
    image_id = "oct_001" if model == "oct_fluid_seg" else "ife_002"
    answer = server.infer(model, "json", params={"image": image_id}).json()
    assert "warning" not in answer
    if model == "ife_multitask":
        check_ife_answer(answer)
        assert answer["lane_layout_used"] is True
        # the trained model normalises the lane layout (the default): a readable picture whose lanes cannot be found
        # is answered from the whole image, flagged and referred, and the server goes on serving
        noise = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90), dtype=np.uint8)).save(noise, format="PNG")
        response = server.request("post", "/infer/ife_multitask", params={"output": "json"},
                                  files={"file": ("noise.png", noise.getvalue(), "image/png")})  # fmt: skip
        assert response.status_code == 200, response.text
        flagged = response.json()
        assert flagged["lane_layout_used"] is False and flagged["refer"] is True
        assert "lanes not read: whole image used" in flagged["refer_reason"]
        assert server.infer(model, "json", params={"image": image_id}).json()["label"] == answer["label"]


def test_typed_label_maps_fine_tune_a_binary_model_into_a_typed_one(server: Server, narrow_oct_models: Path) -> None:
    server.install_checkpoint("oct_fluid_seg", narrow_oct_models)  # binary: one output channel, trained at 32 px
    assert server.get("/info/").json()["models"]["oct_fluid_seg"]["labels"] == {"fluid": 255}
    for image_id, mask in server.masks.items():
        # RETOUCH's values: the fluid of the left half IRF, of the right half SRF, and a PED band near the bottom
        label = np.where(mask > 0, 1, 0).astype(np.uint8)
        label[:, label.shape[1] // 2 :] *= 2
        label[-8:-4, 10:40] = 3
        server.save_label(image_id, f"{image_id}.png", server.png(label))

    task = server.train("oct_fluid_seg")  # at 64 px: the position embedding is resized, the output layer is new
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    recipe = json.loads((server.bundles / "oct_fluid_seg" / "models" / "model.recipe.json").read_text())
    assert recipe["settings"]["fluid_classes"] == ["IRF", "SRF", "PED"] and recipe["settings"]["image_size"] == 64
    assert "head.weight, head.bias, which start from their initialisation" in server.log_tail(10**7)

    typed = {"IRF": 1, "SRF": 2, "PED": 3}
    assert server.get("/info/").json()["models"]["oct_fluid_seg"]["labels"] == typed
    response = server.infer("oct_fluid_seg", "image", params={"image": "oct_001"})
    assert response.status_code == 200, f"{response.text}\n{server.log_tail()}"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == server.oct_hw and set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
    answer = server.infer("oct_fluid_seg", "json", params={"image": "oct_001"}).json()
    assert answer["mask_values"] == {"background": 0, **typed} and answer["fluid_area_px"] == np.count_nonzero(mask)
    assert {name: t["area_px"] for name, t in answer["fluid_types"].items()} == {
        name: int(np.count_nonzero(mask == value)) for name, value in typed.items()
    }


def test_a_checkpoint_of_other_settings_is_served_from_its_recipe(server: Server, narrow_oct_models: Path) -> None:
    server.install_checkpoint("oct_fluid_seg", narrow_oct_models)
    served = server.bundles / "oct_fluid_seg" / "models"
    response = server.infer("oct_fluid_seg", "image", params={"image": "oct_002"})
    assert response.status_code == 200, f"{response.text}\n{server.log_tail()}"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == server.oct_hw and set(np.unique(mask).tolist()) <= {0, 255}

    # without its recipe the checkpoint no longer fits the bundle's default network: a 500 that says why
    (served / "model.recipe.json").unlink()
    response = server.infer("oct_fluid_seg", "json", params={"image": "oct_002"})
    assert response.status_code == 500, response.text
    detail = response.json()["detail"]
    assert "does not fit" in detail and "encoder.0.0.conv.weight: checkpoint (8, 1, 3, 3), network (64, 1, 3, 3)" in detail
    assert server.get("/info/").status_code == 200  # still serving


def test_training_starts_from_a_given_checkpoint_and_its_recipe_says_so(server: Server, tmp_path: Path) -> None:
    from custom_components.core.recipe import weights_sha256

    model, served = "ife_multitask", server.bundles / "ife_multitask" / "models"
    server.save_all_labels(model)
    if not (served / "model.pt").is_file():  # the one-epoch training test leaves one; run alone, train it here
        task = server.train(model)
        assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    given = tmp_path / "site" / "model.pt"  # a model from elsewhere: a copy with its recipe, outside the bundle
    given.parent.mkdir()
    for name in ("model.pt", "model.recipe.json"):
        shutil.copy(served / name, given.parent / name)
    size = json.loads((given.parent / "model.recipe.json").read_text())["settings"]["image_size"]
    params = {"max_epochs": 1, "val_split": 0.34, "batch_size": 2, "num_workers": 0, "device": "cpu",
              "pretrained_checkpoint": str(given)}  # fmt: skip

    # another image_size than the checkpoint's is refused before the run: the reason ends what GET /train/ shows
    response = server.request("post", f"/train/{model}", json={**params, "image_size": size // 2})
    assert response.status_code == 200, response.text
    task = server.wait_training(response.json()["id"])
    assert task["status"] == "ERROR", f"{task}\n{server.log_tail()}"
    assert task["details"][-1].endswith(
        f"RecipeMismatchError: {model}: cannot fine-tune from {given}: the request's settings differ from its recipe "
        f"(image_size: checkpoint {size}, request {size // 2}). Drop them from the request (the checkpoint's values "
        "are used) or start from another checkpoint."
    ), task["details"]

    response = server.request("post", f"/train/{model}", json=params)
    assert response.status_code == 200, response.text
    task = server.wait_training(response.json()["id"])
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    recipe = json.loads((served / "model.recipe.json").read_text())
    assert recipe["started_from"]["checkpoint"] == str(given)
    assert recipe["started_from"]["weights_sha256"] == weights_sha256(given)
    assert recipe["settings"]["image_size"] == size
