"""A real MONAI Label server on the app in ``apps/monailabel``, for the integration tests that drive it over HTTP.

The module-scoped ``server`` fixture starts one server per test module, in its own process group, on a copy of the
app and of both bundles in a temporary folder (so a training run never touches ``bundles/*/models`` of the
checkout), with a studies folder of small synthetic B-scans and gels (plus the module's ``extra_studies``). A
``sitecustomize`` module on the server's ``PYTHONPATH`` refuses and records every connection and name lookup that
is not for the local host, in the server and in its training subprocesses: the module fails if any was tried.
Teardown kills the whole process group and checks that nothing is left.

Test modules reach the helpers through the fixtures (``server`` and its methods, ``check_ife_answer``,
``narrow_oct_models``), not by importing this file.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from custom_components.ife.synthetic import render_gel
from custom_components.oct.synthetic import render_bscan
from custom_components.ife.classes import IFE_CLASSES, MILD_CLASSES, SEVERE_CLASSES

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
    """A running server and what its studies folder holds.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        process: the server process (leader of its process group).
        bundles: the bundle copies it serves and trains (``<bundles>/<model>/models/model.pt``).
        studies: its studies folder (the datastore).
        masks: fluid mask (0/255, ``OCT_HW``) of each B-scan id, to be saved as its label.
        ife_labels: class name of each gel id.
        tmp: the server's temporary folder (``TMPDIR``: uploads and answers while a request is served).
        log: the server's stdout and stderr.
        net_log: where the network guard records refused connections (absent while there are none).
        oct_hw: ``(height, width)`` of every B-scan (and gel) of the studies folder.
    """

    url: str
    process: subprocess.Popen
    bundles: Path
    studies: Path
    masks: dict[str, np.ndarray]
    ife_labels: dict[str, str]
    tmp: Path
    log: Path
    net_log: Path
    oct_hw: tuple[int, int] = OCT_HW

    @staticmethod
    def png(array: np.ndarray) -> bytes:
        """``array`` encoded as a PNG file."""
        return png_bytes(array)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """``method`` (``"get"``, ``"post"``, ...) on ``path`` (``"/info/"``), with ``REQUEST_TIMEOUT_S`` unless
        ``kwargs`` give a ``timeout``; the other ``kwargs`` go to ``requests``."""
        kwargs.setdefault("timeout", REQUEST_TIMEOUT_S)
        return requests.request(method, f"{self.url}{path}", **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("get", path, **kwargs)

    def infer(self, model: str, output: str, **kwargs: Any) -> requests.Response:
        """``POST /infer/<model>?output=...``; ``params`` adds query values, other ``kwargs`` go to ``requests``."""
        params = {"output": output, **kwargs.pop("params", {})}
        return self.request("post", f"/infer/{model}", params=params, **kwargs)

    def save_label(self, image_id: str, filename: str, content: bytes) -> None:
        """Save a final label (a mask PNG or an IFE ``.json``) and check that it was accepted."""
        response = self.request(
            "put", "/datastore/label", params={"image": image_id, "tag": "final"}, files={"label": (filename, content)}
        )
        assert response.status_code == 200, response.text
        assert response.json()["label"] == image_id

    def save_all_labels(self, model: str) -> None:
        """Save the final label of every study image of ``model``: the B-scans' masks or the gels' class names."""
        if model == "oct_fluid_seg":
            for image_id, mask in self.masks.items():
                self.save_label(image_id, f"{image_id}.png", png_bytes(mask))
        else:
            for image_id, name in self.ife_labels.items():
                self.save_label(image_id, f"{image_id}.json", json.dumps({"label": name}).encode())

    def start_training(self, model: str) -> str:
        """``POST /train/<model>`` with ``TRAIN_PARAMS`` (one CPU epoch at 64 px); returns the task id."""
        response = self.request("post", f"/train/{model}", json=TRAIN_PARAMS)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def training_task(self, task_id: str) -> dict[str, Any]:
        """The training task ``task_id`` as ``GET /train/?all=true`` lists it (``status``, ``details``, ...)."""
        tasks = self.get("/train/", params={"all": True}).json()
        return next(t for t in tasks if t["id"] == task_id)

    def wait_training(self, task_id: str, timeout_s: float = TRAIN_TIMEOUT_S) -> dict[str, Any]:
        """Poll the training task until it is neither SUBMITTED nor RUNNING; fail after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            task = self.training_task(task_id)
            if task["status"] not in ("SUBMITTED", "RUNNING"):
                return task
            time.sleep(2.0)
        pytest.fail(f"training task {task_id} did not finish within {timeout_s} s:\n{self.log_tail()}")

    def train(self, model: str) -> dict[str, Any]:
        """Train ``model`` on the saved labels and wait for the task to end; returns the task."""
        return self.wait_training(self.start_training(model))

    def install_checkpoint(self, model: str, models: Path) -> None:
        """Replace ``model``'s served ``model.pt`` and ``model.recipe.json`` with those in ``models``, each all at
        once and the weights first, as a training run writes them."""
        served = self.bundles / model / "models"
        served.mkdir(exist_ok=True)
        for name in ("model.pt", "model.recipe.json"):
            shutil.copy(models / name, served / f"{name}.copying")
            os.replace(served / f"{name}.copying", served / name)

    def rss_kib(self, children: bool = True) -> int:
        """Resident memory (KiB) from ``/proc``: of the server and every process under it (training runs), or of
        the server process alone."""
        total = 0
        for pid in _process_tree(self.process.pid) if children else [self.process.pid]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:  # ended between the listing and the read
                continue
            total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        return total


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from the ``PPid`` of every process in ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("PPid:"))
            except (OSError, StopIteration):
                continue
            children.setdefault(int(ppid.split()[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def png_bytes(array: np.ndarray) -> bytes:
    """``array`` encoded as a PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_studies(studies: Path, extra: dict[str, bytes]) -> dict[str, np.ndarray]:
    """Three B-scans (their masks are returned, to be saved as labels), three gels, and the ``extra`` files."""
    studies.mkdir()
    rng = np.random.default_rng(7)
    masks = {}
    for i in range(3):
        image, mask = render_bscan(rng, image_size=OCT_HW)
        Image.fromarray(image).save(studies / f"oct_{i:03d}.png")
        masks[f"oct_{i:03d}"] = (mask > 0).astype(np.uint8) * 255
    for image_id, name in IFE_LABELS.items():
        Image.fromarray(render_gel(rng, name, image_size=IFE_HW)).save(studies / f"{image_id}.png")
    for name, content in extra.items():
        (studies / name).write_bytes(content)
    return masks


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


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
def extra_studies() -> dict[str, bytes]:
    """Files (name -> content) written into the studies folder beside the B-scans and gels before the server starts.

    None by default; a test module overrides this fixture to start its server on more files.
    """
    return {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, extra_studies: dict[str, bytes]) -> Iterator[Server]:
    """One MONAI Label server for the test module (see the module docstring)."""
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
    masks = _write_studies(studies, extra_studies)
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(NET_GUARD)
    net_log = root / "net_guard.log"
    log = root / "server.log"
    tmp = root / "tmp"
    tmp.mkdir()

    port = _free_port()
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(guard), env.get("PYTHONPATH", "")) if p),
        NET_GUARD_LOG=str(net_log),
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        MONAI_LABEL_SESSION_PATH=str(root / "sessions"),
        TMPDIR=str(tmp),
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
    served = Server(f"http://{HOST}:{port}", process, bundles, studies, masks, dict(IFE_LABELS), tmp, log, net_log)
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


def _check_ife_answer(answer: dict) -> None:
    """The checks every ``/infer/ife_multitask`` JSON answer must pass, whatever the weights."""
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
    # calibrated probabilities and the refer-to-expert decision (an untrained bundle has no calibration record)
    assert isinstance(answer["calibrated"], bool) and isinstance(answer["refer"], bool)
    assert answer["refer"] == bool(answer["refer_reason"].replace("not calibrated", "").strip("; "))
    assert answer["calibrated"] or "not calibrated" in answer["refer_reason"]
    profiles = answer["attention"]
    assert set(profiles) == {"severe", "mild"}
    assert len(profiles["severe"]) == len(profiles["mild"]) > 0
    assert all(0.0 <= v <= 1.0 for v in profiles["severe"] + profiles["mild"])


@pytest.fixture
def check_ife_answer() -> Callable[[dict], None]:
    """Asserts that an ``/infer/ife_multitask`` answer is well formed (class, probabilities, heads, attention)."""
    return _check_ife_answer


@pytest.fixture(scope="session")
def narrow_oct_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``models/`` folder of a narrow TransUNet trained by the bundle itself at 32 px, as the README's demo
    leaves one (``model.pt`` and ``model.recipe.json``); trained once for the session."""
    from monai.bundle import ConfigWorkflow

    root = tmp_path_factory.mktemp("narrow_oct")
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
