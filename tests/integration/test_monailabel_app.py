"""A real MONAI Label server on the app in ``apps/monailabel``, driven over HTTP on 127.0.0.1.

The server runs in its own process group on a copy of the app and of both bundles in a temporary folder (so a
training run never touches ``bundles/*/models`` of the checkout), with a studies folder of small synthetic B-scans
and gels. A ``sitecustomize`` module on the server's ``PYTHONPATH`` refuses and records every connection and name
lookup that is not for the local host, in the server and in its training subprocesses: the test fails if any was
tried. Teardown kills the whole process group and checks that nothing is left.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from custom_components.data.synthetic.ife import render_gel
from custom_components.data.synthetic.oct import render_bscan
from custom_components.ife_classes import IFE_CLASSES, MILD_CLASSES, SEVERE_CLASSES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
APP_DIR = REPO / "apps" / "monailabel"
BUNDLES = ("oct_fluid_seg", "ife_multitask")
HOST = "127.0.0.1"
# Non-square on purpose: a mask written with swapped axes would not have the B-scan's shape.
OCT_HW = (64, 96)
IFE_HW = (64, 96)
IFE_LABELS = {"ife_000": "Negative", "ife_001": "IgG-kappa", "ife_002": "lambda"}
TRAIN_PARAMS = {"max_epochs": 1, "val_split": 0.34, "image_size": 64, "batch_size": 2, "num_workers": 0, "device": "cpu"}
START_TIMEOUT_S = 150
REQUEST_TIMEOUT_S = 120
TRAIN_TIMEOUT_S = 240

NET_GUARD = '''
import os
import socket

_LOG = os.environ["NET_GUARD_LOG"]
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0")


def _refuse(what):
    with open(_LOG, "a") as f:
        f.write(f"{os.getpid()} {what}\\n")
    raise OSError(101, f"network access outside 127.0.0.1 refused in this test: {what}")


def _local(host):
    return host is None or str(host).startswith(_LOCAL) or str(host) == ""


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse(f"connect {address}")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
        _refuse(f"connect_ex {address}")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    if not _local(host):
        _refuse(f"getaddrinfo {host}")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    bundles: Path
    studies: Path
    masks: dict[str, np.ndarray]
    log: Path
    net_log: Path

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_studies(studies: Path) -> dict[str, np.ndarray]:
    """Three B-scans (their masks are returned, to be saved as labels) and three gels, as the only images."""
    studies.mkdir()
    rng = np.random.default_rng(7)
    masks = {}
    for i in range(3):
        image, mask = render_bscan(rng, image_size=OCT_HW)
        Image.fromarray(image).save(studies / f"oct_{i:03d}.png")
        masks[f"oct_{i:03d}"] = (mask > 0).astype(np.uint8) * 255
    for image_id, name in IFE_LABELS.items():
        Image.fromarray(render_gel(rng, name, image_size=IFE_HW)).save(studies / f"{image_id}.png")
    return masks


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the server's whole process group (the server and its training processes)."""
    for sig, grace in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if not _group_alive(process.pid):
            break
        os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _group_alive(process.pid):
            if process.poll() is None:
                try:
                    process.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    pass
            else:
                time.sleep(0.2)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("monailabel")
    app = root / "app"
    shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("__pycache__", "model", "logs", "bin", "*.md"))
    bundles = root / "bundles"
    for name in BUNDLES:
        shutil.copytree(
            REPO / "bundles" / name,
            bundles / name,
            ignore=shutil.ignore_patterns("models", "eval", "outputs", "runs", "data", "logs", "__pycache__"),
        )
    studies = root / "studies"
    masks = _write_studies(studies)
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    net_log = root / "net_guard.log"
    log = root / "server.log"

    port = _free_port()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(guard), env.get("PYTHONPATH", "")) if p),
        NET_GUARD_LOG=str(net_log),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MONAI_LABEL_SESSION_PATH=str(root / "sessions"),
    )
    command = [
        sys.executable, "-m", "monailabel.main", "start_server",
        "--app", str(app), "--studies", str(studies), "--host", HOST, "--port", str(port),
        "--conf", "bundles_dir", str(bundles),
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    served = Server(f"http://{HOST}:{port}", process, bundles, studies, masks, log, net_log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode} before answering:\n{served.log_tail()}")
            try:
                if requests.get(f"{served.url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server did not answer /info/ within {START_TIMEOUT_S} s:\n{served.log_tail()}")
            time.sleep(1.0)
        yield served
    finally:
        _stop(process)
        assert not _group_alive(process.pid), "processes of the server's group are still running after SIGKILL"
        assert not net_log.exists(), f"network access outside 127.0.0.1 was attempted:\n{net_log.read_text()}"


def _infer(server: Server, model: str, output: str, **kwargs) -> requests.Response:
    return requests.post(
        f"{server.url}/infer/{model}", params={"output": output, **kwargs.pop("params", {})}, timeout=REQUEST_TIMEOUT_S, **kwargs
    )


def _check_ife_answer(answer: dict) -> None:
    assert answer["label"] in IFE_CLASSES
    assert answer["label_index"] == IFE_CLASSES.index(answer["label"])
    assert list(answer["probabilities"]) == list(IFE_CLASSES)
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert [p["score"] for p in answer["prediction"]] == list(answer["probabilities"].values())
    severe, mild = answer["severe"], answer["mild"]
    assert severe["call"] in SEVERE_CLASSES and mild["call"] in MILD_CLASSES
    assert sum(severe["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert sum(mild["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    # the paper's rule: the class is the pair of head calls, Negative whenever the mild call is None
    heavy = "" if severe["call"] == "None" else f"Ig{severe['call']}-"
    assert answer["label"] == ("Negative" if mild["call"] == "None" else heavy + mild["call"])
    profiles = answer["attention"]
    assert set(profiles) == {"severe", "mild"}
    assert len(profiles["severe"]) == len(profiles["mild"]) > 0
    assert all(0.0 <= v <= 1.0 for v in profiles["severe"] + profiles["mild"])


def test_info_lists_both_models_untrained(server: Server) -> None:
    info = requests.get(f"{server.url}/info/", timeout=REQUEST_TIMEOUT_S).json()
    assert set(info["models"]) == set(BUNDLES) and set(info["trainers"]) == set(BUNDLES)
    assert info["models"]["oct_fluid_seg"]["type"] == "segmentation"
    assert info["models"]["ife_multitask"]["type"] == "classification"
    for name in BUNDLES:
        assert info["models"][name]["checkpoint"] is None
        assert "RANDOM weights" in info["models"][name]["warning"]
    assert "no trained checkpoint" in server.log_tail(10**7)
    assert info["datastore"]["total"] == 6


def test_infer_oct_returns_mask_and_area(server: Server) -> None:
    response = _infer(server, "oct_fluid_seg", "image", params={"image": "oct_000"})
    assert response.status_code == 200, response.text
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == OCT_HW
    assert set(np.unique(mask).tolist()) <= {0, 255}

    answer = _infer(server, "oct_fluid_seg", "json", params={"image": "oct_000"}).json()
    assert answer["image_size"] == list(OCT_HW)
    assert answer["fluid_area_px"] == int(np.count_nonzero(mask))
    assert answer["fluid_fraction"] == pytest.approx(answer["fluid_area_px"] / mask.size, abs=1e-6)
    assert "RANDOM weights" in answer["warning"]


def test_infer_ife_returns_call_heads_and_attention(server: Server) -> None:
    response = _infer(server, "ife_multitask", "json", params={"image": "ife_001"})
    assert response.status_code == 200, response.text
    by_id = response.json()
    _check_ife_answer(by_id)

    gel = (server.studies / "ife_001.png").read_bytes()
    uploaded = _infer(server, "ife_multitask", "json", files={"file": ("gel.png", gel, "image/png")}).json()
    _check_ife_answer(uploaded)
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
        ("put", "/datastore/label", {"params": {"image": "oct_000"}, "files": {"label": ("m.png", _png(np.zeros((8, 8), np.uint8)), "image/png")}}, 422, "size"),
        ("put", "/datastore/label", {"params": {"image": "oct_000"}, "files": {"label": ("m.png", _png(np.full(OCT_HW, 7, np.uint8)), "image/png")}}, 422, "{0, 255}"),
    ],
)  # fmt: skip
def test_bad_request_gets_4xx_and_server_keeps_serving(server: Server, method, path, kwargs, status, words) -> None:
    response = getattr(requests, method)(f"{server.url}{path}", timeout=REQUEST_TIMEOUT_S, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert requests.get(f"{server.url}/info/", timeout=REQUEST_TIMEOUT_S).status_code == 200


def _save_label(server: Server, image_id: str, filename: str, content: bytes) -> None:
    response = requests.put(
        f"{server.url}/datastore/label",
        params={"image": image_id, "tag": "final"},
        files={"label": (filename, content)},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert response.status_code == 200, response.text
    assert response.json()["label"] == image_id


def _train(server: Server, model: str) -> dict:
    response = requests.post(f"{server.url}/train/{model}", json=TRAIN_PARAMS, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    task_id = response.json()["id"]
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        tasks = requests.get(f"{server.url}/train/", params={"all": True}, timeout=REQUEST_TIMEOUT_S).json()
        task = next(t for t in tasks if t["id"] == task_id)
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(2.0)
    pytest.fail(f"training {model} did not finish within {TRAIN_TIMEOUT_S} s:\n{server.log_tail()}")


@pytest.mark.parametrize("model", BUNDLES)
def test_save_labels_then_one_epoch_training_writes_checkpoint(server: Server, model: str) -> None:
    if model == "oct_fluid_seg":
        for image_id, mask in server.masks.items():
            _save_label(server, image_id, f"{image_id}.png", _png(mask))
    else:
        for image_id, name in IFE_LABELS.items():
            _save_label(server, image_id, f"{image_id}.json", json.dumps({"label": name}).encode())
    checkpoint = server.bundles / model / "models" / "model.pt"
    assert not checkpoint.exists()

    task = _train(server, model)
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    assert checkpoint.is_file()
    # the labelled images reach the bundle as its datalist, with no validation list: the bundle splits them itself
    datalist = json.loads((server.bundles / model / "data" / "monailabel" / "datalist.json").read_text())
    assert list(datalist) == ["training"] and len(datalist["training"]) == 3

    info = requests.get(f"{server.url}/info/", timeout=REQUEST_TIMEOUT_S).json()["models"][model]
    assert info["checkpoint"] == str(checkpoint) and "warning" not in info
    image_id = "oct_001" if model == "oct_fluid_seg" else "ife_002"
    answer = _infer(server, model, "json", params={"image": image_id}).json()
    assert "warning" not in answer
    if model == "ife_multitask":
        _check_ife_answer(answer)


def _train_narrow_oct(root: Path) -> Path:
    """A narrow TransUNet trained by the bundle itself at 32 px, as the README's demo leaves one."""
    from monai.bundle import ConfigWorkflow

    configs = REPO / "bundles" / "oct_fluid_seg" / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), workflow_type="train", bundle_root=str(root),
        dataset_dir=str(root / "data"), image_size=32, filters=[8, 16, 32, 64], max_epochs=1, batch_size=4,
        num_workers=0, cache_rate=0.0, synthetic_count=8, seed=0,
    )  # fmt: skip
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return root / "models"


def _replace(source: Path, target: Path) -> None:
    shutil.copy(source, target.with_suffix(".copying"))
    os.replace(target.with_suffix(".copying"), target)  # as a training run writes it: all at once


def test_a_checkpoint_of_other_settings_is_served_from_its_recipe(server: Server, tmp_path: Path) -> None:
    models = _train_narrow_oct(tmp_path / "demo")
    served = server.bundles / "oct_fluid_seg" / "models"
    _replace(models / "model.pt", served / "model.pt")
    _replace(models / "model.recipe.json", served / "model.recipe.json")
    response = _infer(server, "oct_fluid_seg", "image", params={"image": "oct_002"})
    assert response.status_code == 200, f"{response.text}\n{server.log_tail()}"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == OCT_HW and set(np.unique(mask).tolist()) <= {0, 255}

    # without its recipe the checkpoint no longer fits the bundle's default network: a 500 that says why
    os.remove(served / "model.recipe.json")
    response = _infer(server, "oct_fluid_seg", "json", params={"image": "oct_002"})
    assert response.status_code == 500, response.text
    detail = response.json()["detail"]
    assert "does not fit" in detail and "encoder.0.0.conv.weight: checkpoint (8, 1, 3, 3), network (64, 1, 3, 3)" in detail
    assert requests.get(f"{server.url}/info/", timeout=REQUEST_TIMEOUT_S).status_code == 200  # still serving
