"""MONAI Label under load: bounded concurrent ``/infer`` requests with bad ones mixed in and a ``/train`` running.

One real server (``conftest.py``: its own process group, copies of the app and both bundles, a network guard) serves
a narrow TransUNet trained at 32 px (README demo size) and the IFE network fine-tuned once at 64 px, so that a few
hundred requests fit in a couple of minutes on 2 CPU cores. Each good request is first answered alone, as the
reference; then they are sent again, shuffled among bad requests (unknown image, path tricks, wrong type, an
oversized upload, and the project's corpus of bad image files, uploaded for inference and to the datastore), eight
at a time on 127.0.0.1, while ``POST /train/ife_multitask`` fine-tunes the IFE model.

What must hold: every good answer equals its reference (IFE: the reference of the checkpoint before or after the
training run, and the new one for every request sent after the run was seen done), every bad request gets the
4xx that names its problem, the server still answers ``/info`` at the end, its memory does not grow with the
number of requests, no upload or answer file is left in its temporary folder, and every image and label in the
datastore is byte-identical before and after. Throughput and p50/p95 latency are printed (``pytest -s``) and
written to ``load_metrics.json`` in the test's temporary folder.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bad_inputs
import numpy as np
import pytest
import requests
from PIL import Image

if TYPE_CHECKING:
    from conftest import Server

pytestmark = pytest.mark.slow

#: requests in flight at once
CONCURRENCY = 8
#: each good request is sent this many times during the load (10 kinds: 100 good requests)
GOOD_REPEATS = 10
#: each bad request is sent this many times (30 kinds: 90 bad requests)
BAD_REPEATS = 3
#: allowed growth of the server's resident memory from the first to the last third of the load, besides one
#: reload of the IFE network; see the test
RSS_GROWTH_LIMIT_MIB = 64
#: the size of the oversized upload
OVERSIZED_BYTES = 16 << 20
#: a studies file whose name is not valid UTF-8 (the byte 0xff), as Python holds it
NON_UTF8_NAME = bad_inputs.NON_UTF8


def _corpus_bytes(name: str) -> bytes:
    """The content of the bad-input corpus file ``name`` (see ``tests/bad_inputs.py``)."""
    return next(case for case in bad_inputs.CASES if case.name == name).content()


@pytest.fixture(scope="module")
def extra_studies() -> dict[str, bytes]:
    """Beside the B-scans and gels, an image whose file name is not valid UTF-8."""
    return {NON_UTF8_NAME: _corpus_bytes(NON_UTF8_NAME)}


def _multipart(filename: bytes, content: bytes) -> dict[str, Any]:
    """``requests`` arguments for a ``file`` upload whose file name is raw bytes (``requests`` would refuse a name
    that is not valid UTF-8): the multipart body built by hand."""
    boundary = b"load-test-boundary"
    body = b"".join(
        [
            b"--" + boundary + b"\r\n",
            b'Content-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n',
            b"Content-Type: image/png\r\n\r\n",
            content,
            b"\r\n--" + boundary + b"--\r\n",
        ]
    )
    return {"data": body, "headers": {"Content-Type": f"multipart/form-data; boundary={boundary.decode()}"}}


@dataclass(frozen=True)
class Request:
    """One request of the load.

    Attributes:
        name: what it is, for messages and the metrics file.
        method: HTTP method.
        path: URL path, e.g. ``/infer/oct_fluid_seg``.
        kwargs: ``requests`` arguments (``params``, ``files``, ``data``, ``headers``).
        status: the status it must get (200 for a good request).
        words: for a bad request, words its ``detail`` must hold.
    """

    name: str
    method: str
    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    words: str = ""

    @property
    def good(self) -> bool:
        return self.status == 200

    @property
    def model(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _infer_request(name: str, model: str, output: str, status: int = 200, words: str = "", **kwargs) -> Request:
    params = {"output": output, **kwargs.pop("params", {})}
    return Request(name, "post", f"/infer/{model}", {"params": params, **kwargs}, status, words)


def _good_requests(server: Server) -> list[Request]:
    """Both models by datastore id and by upload, including JPEG bytes behind a ``.png`` name (read as the JPEG
    it is) and a gel uploaded under a file name that is not valid UTF-8."""
    scan, gel = (server.studies / "oct_001.png").read_bytes(), (server.studies / "ife_001.png").read_bytes()
    return [
        *(_infer_request(f"oct {i} json", "oct_fluid_seg", "json", params={"image": i}) for i in server.masks),
        _infer_request("oct oct_002 mask", "oct_fluid_seg", "image", params={"image": "oct_002"}),
        _infer_request("oct upload", "oct_fluid_seg", "json", files={"file": ("bscan.png", scan, "image/png")}),
        *(_infer_request(f"ife {i}", "ife_multitask", "json", params={"image": i}) for i in server.ife_labels),
        _infer_request("ife upload named gel_\\xff.png", "ife_multitask", "json", **_multipart(b"gel_\xff.png", gel)),
        _infer_request(
            "ife JPEG bytes behind .png",
            "ife_multitask",
            "json",
            files={"file": ("jpeg_named.png", _jpeg(gel), "image/png")},
        ),
    ]


def _jpeg(png: bytes) -> bytes:
    """The same picture as JPEG bytes."""
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


#: corpus files that every upload must refuse, with words of the 415 answer
BAD_FILES = {
    "truncated.png": "unreadable image",
    "zero.png": "empty file (0 bytes)",
    "text.png": "unreadable image (UnidentifiedImageError",
    "one_pixel.png": "too small: 1 x 1 pixels",
    "bomb_20000x20000.png": "too large: 400,000,000 pixels",
    "large_12000x12000.png": "too large: 144,000,000 pixels (12000 x 12000)",
}


def _bad_requests() -> list[Request]:
    """Unknown image, path tricks, wrong type, an oversized upload, and bad image files (inferred and uploaded to
    the datastore), each with the status and words of its answer."""
    requests_ = [
        _infer_request("unknown image", "ife_multitask", "json", 404, "not in the datastore", params={"image": "nope"}),
        _infer_request("image ../", "oct_fluid_seg", "json", 400, "not a datastore id", params={"image": "../studies/oct_000"}),
        _infer_request("image absolute", "oct_fluid_seg", "json", 400, "absolute path", params={"image": "/etc/passwd"}),
        _infer_request("image ..", "ife_multitask", "json", 400, "not a datastore id", params={"image": ".."}),
        _infer_request("image backslash", "ife_multitask", "json", 400, "not a datastore id", params={"image": "..\\oct_000"}),
        _infer_request("unknown model", "no_such_model", "json", 404, "unknown model", params={"image": "oct_000"}),
        _infer_request("output type", "oct_fluid_seg", "bogus", 422, "image", params={"image": "oct_000"}),
        _infer_request("text upload .txt", "oct_fluid_seg", "json", 415, "unsupported file type '.txt'",
                       files={"file": ("notes.txt", b"not an image\n", "text/plain")}),
        _infer_request("PNG named .nii.gz", "oct_fluid_seg", "json", 415, "unsupported file type '.nii.gz'",
                       files={"file": ("scan.nii.gz", _corpus_bytes("gray.png"), "application/gzip")}),
        _infer_request("oversized upload", "ife_multitask", "json", 415, "unreadable image",
                       files={"file": ("big.png", random.Random(0).randbytes(OVERSIZED_BYTES), "image/png")}),
        _infer_request("upload named broken_\\xff.png", "ife_multitask", "json", 415, "unreadable image",
                       **_multipart(b"broken_\xff.png", _corpus_bytes(bad_inputs.NON_UTF8_BROKEN))),
        Request("datastore upload .txt", "put", "/datastore/image", {"files": {"file": ("notes.txt", b"text\n")}},
                415, "uploaded image must be one of"),
    ]  # fmt: skip
    for name, words in BAD_FILES.items():
        content = _corpus_bytes(name)
        for model in ("oct_fluid_seg", "ife_multitask"):
            requests_.append(
                _infer_request(f"{model} upload {name}", model, "json", 415, words, files={"file": (name, content)})
            )
        requests_.append(
            Request(f"datastore upload {name}", "put", "/datastore/image", {"files": {"file": (name, content)}},
                    415, words)
        )  # fmt: skip
    return requests_


@dataclass
class Outcome:
    """What one request of the load got."""

    request: Request
    started: float
    seconds: float
    status: int | None = None
    content: bytes = b""
    error: str = ""


def _send(server: Server, request: Request) -> Outcome:
    started = time.monotonic()
    try:
        response = server.request(request.method, request.path, **request.kwargs)
    except requests.RequestException as err:  # a hang (timeout) or a dropped connection
        return Outcome(request, started, time.monotonic() - started, error=f"{type(err).__name__}: {err}")
    return Outcome(request, started, time.monotonic() - started, response.status_code, response.content)


def _answer(request: Request, content: bytes) -> Any:
    """The part of a good answer that must not change between identical requests: the mask pixels of an
    ``output=image`` answer, the JSON without MONAI Label's ``latencies``."""
    if request.kwargs["params"]["output"] == "image":
        return np.asarray(Image.open(io.BytesIO(content)))
    answer = json.loads(content)
    answer.pop("latencies", None)
    return answer


def _weights_part(answer: dict) -> dict:
    """What the weights alone decide in an IFE answer: between a new checkpoint and its calibration record (written
    once training has finished) the probabilities and the refer decision are uncalibrated, then calibrated; the
    call and the attention profiles are the weights' in both."""
    return {"label": answer["label"], "severe": answer["severe"]["call"], "mild": answer["mild"]["call"],
            "attention": answer["attention"]}  # fmt: skip


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return _weights_part(a) == _weights_part(b) if "attention" in a else a == b


def _check_alone(server: Server, request: Request, answer: Any, check_ife_answer: Callable[[dict], None]) -> None:
    """What a good answer must be whatever the weights: a {0, 255} mask or fluid area of the B-scan's size, a
    well-formed IFE call."""
    if isinstance(answer, np.ndarray):
        assert answer.shape == server.oct_hw and set(np.unique(answer).tolist()) <= {0, 255}
    elif request.model == "oct_fluid_seg":
        assert answer["image_size"] == list(server.oct_hw) and "warning" not in answer
    else:
        check_ife_answer(answer)
        assert "warning" not in answer


def _references(server: Server, good: list[Request], check: Callable[[dict], None]) -> dict[str, Any]:
    """Each good request answered alone, checked on its own, and twice to be sure identical requests agree."""
    references = {}
    for request in good:
        first, second = (_send(server, request) for _ in range(2))
        assert first.status == second.status == 200, f"{request.name}: {first.content[:300]!r}"
        references[request.name] = _answer(request, first.content)
        _check_alone(server, request, references[request.name], check)
        assert _same(references[request.name], _answer(request, second.content)), request.name
    return references


def _datastore_files(server: Server) -> dict[str, str]:
    """SHA-256 of every image and label file of the studies folder (not ``datastore_v2.json``, whose time stamps
    a reconcile may rewrite)."""
    return {
        str(p.relative_to(server.studies)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(server.studies.rglob("*"))
        if p.is_file() and p.name != "datastore_v2.json"
    }


def _datastore_entries(server: Server) -> dict[str, list[str]]:
    """Image id -> its label tags, as ``GET /datastore/?output=all`` lists them (which must answer 200)."""
    response = server.get("/datastore/", params={"output": "all"})
    assert response.status_code == 200, response.text
    return {image_id: sorted(entry["labels"]) for image_id, entry in response.json()["objects"].items()}


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


@pytest.fixture(scope="module")
def trained_server(server: Server, narrow_oct_models: Path) -> Server:
    """The server with labels for every image, the narrow TransUNet and an IFE checkpoint trained at 64 px."""
    server.install_checkpoint("oct_fluid_seg", narrow_oct_models)
    for model in ("oct_fluid_seg", "ife_multitask"):
        server.save_all_labels(model)
    task = server.train("ife_multitask")
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    return server


def test_concurrent_inference_with_bad_requests_and_training(
    trained_server: Server, tmp_path: Path, check_ife_answer: Callable[[dict], None]
) -> None:
    server = trained_server
    good, bad = _good_requests(server), _bad_requests()
    before = _references(server, good, check_ife_answer)
    files_before, entries_before = _datastore_files(server), _datastore_entries(server)
    # the file whose name is not valid UTF-8 is left out of the datastore, named in the log, kept on disk (its
    # lone-surrogate id used to make the listing a 500 and every training run fail on datastore_v2.json)
    assert NON_UTF8_NAME in files_before and set(entries_before) == {*server.masks, *server.ife_labels}
    assert "left out of the datastore: " in server.log_tail(10**7) and "gel_\\xff.png" in server.log_tail(10**7)
    checkpoint = server.bundles / "ife_multitask" / "models" / "model.pt"
    checkpoint_mtime = checkpoint.stat().st_mtime_ns

    load = good * GOOD_REPEATS + bad * BAD_REPEATS
    random.Random(0).shuffle(load)
    rss_kib: list[int] = []  # the server process's resident memory after each completed request
    done_lock = threading.Lock()

    def send_and_measure(request: Request) -> Outcome:
        outcome = _send(server, request)
        with done_lock:
            rss_kib.append(server.rss_kib(children=False))
        return outcome

    train_task = server.start_training("ife_multitask")  # from the main thread, alongside the load
    train_seen_done: list[float] = []
    stop_watching = threading.Event()

    def watch_training() -> None:
        while not stop_watching.is_set():
            if server.training_task(train_task)["status"] not in ("SUBMITTED", "RUNNING"):
                train_seen_done.append(time.monotonic())
                return
            stop_watching.wait(1.0)

    watcher = threading.Thread(target=watch_training, daemon=True)
    watcher.start()
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        outcomes = list(pool.map(send_and_measure, load))
    elapsed = time.monotonic() - started
    stop_watching.set()
    watcher.join()
    tree_rss_kib = server.rss_kib()  # with the training run, if it is still going

    # the training run ends well (it may outlast the load), and the new checkpoint is then the reference
    task = server.wait_training(train_task)
    assert task["status"] == "DONE", f"{task}\n{server.log_tail()}"
    assert checkpoint.stat().st_mtime_ns != checkpoint_mtime, "the training run during the load wrote no checkpoint"
    after = _references(server, good, check_ife_answer)

    # every request answered, none with a 5xx, none hung
    failures = [f"{o.request.name}: {o.error}" for o in outcomes if o.error]
    assert not failures, f"{len(failures)} requests got no answer: {failures[:5]}\n{server.log_tail()}"
    wrong_status = [
        f"{o.request.name}: {o.status} {o.content[:200]!r}" for o in outcomes if o.status != o.request.status
    ]
    assert not wrong_status, "\n".join(wrong_status[:10]) + f"\n{server.log_tail()}"
    # every bad request named its problem
    for o in outcomes:
        if not o.request.good:
            assert o.request.words in str(json.loads(o.content)["detail"]), f"{o.request.name}: {o.content[:300]!r}"
    # every good answer is its reference: OCT is not retrained, IFE answers from the old or the new checkpoint,
    # the new one once the run was seen done
    for o in outcomes:
        if o.request.good:
            answer = _answer(o.request, o.content)
            allowed = [before[o.request.name]]
            if o.request.model == "ife_multitask":
                new_only = bool(train_seen_done) and o.started > train_seen_done[0]
                allowed = [after[o.request.name]] if new_only else [before[o.request.name], after[o.request.name]]
            assert any(_same(answer, ref) for ref in allowed), f"{o.request.name}: {answer}"
    assert any(not _same(before[r.name], after[r.name]) for r in good if r.model == "ife_multitask"), (
        "the IFE answers did not change with the new checkpoint: the comparison above proves nothing"
    )

    # the server is alive and serving
    assert server.process.poll() is None
    assert server.get("/info/").status_code == 200
    # the numbers, written before the checks on memory so that they are there when a check fails
    latencies = [o.seconds for o in outcomes if o.request.good]
    third = len(rss_kib) // 3
    first_third_mib, last_third_mib = max(rss_kib[:third]) / 1024, max(rss_kib[-third:]) / 1024
    metrics = {
        "machine": "2 CPU cores, no GPU (OMP_NUM_THREADS=1 in the server)",
        "requests": len(outcomes),
        "good": len(latencies),
        "bad": len(outcomes) - len(latencies),
        "concurrency": CONCURRENCY,
        "seconds": round(elapsed, 2),
        "throughput_requests_per_s": round(len(outcomes) / elapsed, 2),
        "good_latency_p50_s": round(_percentile(latencies, 50), 3),
        "good_latency_p95_s": round(_percentile(latencies, 95), 3),
        "good_latency_mean_s": round(statistics.fmean(latencies), 3),
        "server_rss_mib": {
            "first_third_peak": round(first_third_mib, 1),
            "last_third_peak": round(last_third_mib, 1),
            "min": round(min(rss_kib) / 1024, 1),
            "max": round(max(rss_kib) / 1024, 1),
            "with_children_after_load": round(tree_rss_kib / 1024, 1),
            "every_10th_request": [round(v / 1024) for v in rss_kib[::10]],
        },
        "training_seen_done_after_s": round(train_seen_done[0] - started, 1) if train_seen_done else None,
        "bad_answers": {
            o.request.name: f"{o.status} {json.loads(o.content)['detail']}" for o in outcomes if not o.request.good
        },
    }
    (tmp_path / "load_metrics.json").write_text(json.dumps(metrics, indent=2))
    print(f"\nMONAI Label load ({tmp_path / 'load_metrics.json'}):\n{json.dumps(metrics, indent=2)}")

    # Memory does not grow with the number of requests. After warm-up (the references above) the server's
    # resident memory is torch's and the networks' (about 1.3 GB) plus allocator caches that plateau, and the mix
    # of requests is the same in every third of the shuffled load. One step up is expected: the IFE network is
    # loaded again from the checkpoint the training run wrote, and the allocator may keep the old weights' pages
    # (at most the checkpoint's size). The bound: the peak of the last third may exceed the peak of the first by
    # RSS_GROWTH_LIMIT_MIB plus that checkpoint. Growth per request breaks it: the two peaks are 60 to 120 requests
    # apart, so keeping about 1 MiB or more per request does (a retained oversized body is 16 MiB, one decoded
    # 12000 x 12000 "bomb" 1.6 GiB as float RGB); a leak of a few KiB per request is below what RSS can resolve
    # in a few hundred requests.
    reload_mib = checkpoint.stat().st_size / 2**20
    assert last_third_mib - first_third_mib <= RSS_GROWTH_LIMIT_MIB + reload_mib, metrics["server_rss_mib"]
    # nothing left behind in the server's temporary folder: uploads and answer files are removed once sent, and
    # refused uploads too (they stayed: 80 files, 67 MB after one run)
    # FastAPI removes them in background tasks after the response: wait for that, up to a deadline
    # (a .json there is the training run's logging configuration, not a request's)
    deadline = time.monotonic() + 30
    while (leftovers := [p.name for p in server.tmp.iterdir() if p.name.startswith("tmp") and p.suffix != ".json"]):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not leftovers, leftovers
    # nothing in the datastore lost or changed, nothing added by the refused uploads
    assert _datastore_files(server) == files_before
    assert _datastore_entries(server) == entries_before
