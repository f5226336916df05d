"""The app's active-learning strategies (apps/monailabel/lib/strategies): scoring, ordering, the score cache, and
``POST /activelearning/<strategy>`` through the app built in this process.

The unit tests drive the strategies with stand-in infer tasks that answer hand-computed probabilities and logits,
over a real :class:`CheckedLocalDatastore` in a temporary folder. The app tests (``slow``) build the app on tiny,
freshly initialised checkpoints of both bundles (``apps/monailabel/scripts/strategy_speed.py``) and ask MONAI
Label's own routes through ``fastapi.testclient``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi import HTTPException
from PIL import Image

APP_DIR = Path(__file__).resolve().parents[2] / "apps" / "monailabel"
sys.path.insert(0, str(APP_DIR))  # the app's own imports are "lib.*", as when MONAI Label loads it
sys.path.insert(0, str(APP_DIR / "scripts"))

from lib.datastore import CheckedLocalDatastore  # noqa: E402
from lib.strategies.cache import FileDigests, ScoreCache, file_signature, model_version  # noqa: E402
from lib.strategies.ife_least_certain import IFELeastCertain  # noqa: E402
from lib.strategies.oct_entropy import OCTEntropy  # noqa: E402
from lib.strategies.scores import (  # noqa: E402
    binary_entropy,
    bscan_entropies,
    ife_rank_key,
    ife_uncertainty,
    retina_region,
    volume_score,
)
from monailabel.tasks.infer.basic_infer import CallBackTypes  # noqa: E402

from custom_components.core.recipe import CheckpointMismatchError  # noqa: E402
from custom_components.ife.classes import IFE_CLASSES  # noqa: E402

H_QUARTER = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # entropy of p = 0.25: 0.8113 bits


# ---- scores: hand-computed values ---------------------------------------------------------------------------------


def _probs(named: dict[str, float]) -> list[float]:
    """9 class probabilities: the named ones, the rest sharing what is left equally."""
    assert set(named) <= set(IFE_CLASSES)
    rest = (1.0 - sum(named.values())) / (9 - len(named))
    return [named.get(name, rest) for name in IFE_CLASSES]


def test_ife_confidence_and_margin():
    probs = _probs({"IgG-kappa": 0.5, "IgG-lambda": 0.3})  # the 7 others: 0.2 / 7 each
    assert ife_uncertainty(probs, IFE_CLASSES.index("IgG-kappa")) == pytest.approx(
        {"confidence": 0.5, "margin": 0.2}
    )
    # the paper's rule may call Negative while a positive class is more probable: a negative margin
    probs = _probs({"Negative": 0.3, "IgG-kappa": 0.4})
    assert ife_uncertainty(probs, 0) == pytest.approx({"confidence": 0.3, "margin": -0.1})
    with pytest.raises(ValueError, match="9 finite"):
        ife_uncertainty(probs[:8], 0)
    with pytest.raises(ValueError, match="class index"):
        ife_uncertainty(probs, 9)


def test_ife_order_refers_first_then_least_certain():
    scores = {
        "sure": {"refer": False, **ife_uncertainty(_probs({"Negative": 0.95}), 0)},
        "two_way": {"refer": False, **ife_uncertainty(_probs({"kappa": 0.6, "lambda": 0.4}), 1)},
        "spread": {"refer": False, **ife_uncertainty(_probs({"kappa": 0.45, "lambda": 0.2, "IgG-kappa": 0.2}), 1)},
        "referred": {"refer": True, **ife_uncertainty(_probs({"Negative": 0.9}), 0)},
    }
    assert scores["two_way"]["confidence"] == pytest.approx(0.6) and scores["two_way"]["margin"] == pytest.approx(0.2)
    assert scores["spread"]["confidence"] == pytest.approx(0.45) and scores["spread"]["margin"] == pytest.approx(0.25)
    by_confidence = sorted(scores, key=lambda k: ife_rank_key(scores[k], "confidence"))
    by_margin = sorted(scores, key=lambda k: ife_rank_key(scores[k], "margin"))
    assert by_confidence == ["referred", "spread", "two_way", "sure"]
    assert by_margin == ["referred", "two_way", "spread", "sure"]
    with pytest.raises(ValueError, match="measure must be one of confidence, margin"):
        ife_rank_key(scores["sure"], "entropy")


def test_binary_entropy_of_known_probabilities():
    p = torch.tensor([0.0, 0.5, 1.0, 0.25, 0.75])
    assert binary_entropy(p).tolist() == pytest.approx([0.0, 1.0, 0.0, H_QUARTER, H_QUARTER])


def _layered_bscan(h: int = 64, w: int = 32, s: int | None = None) -> torch.Tensor:
    """(1, H, W) (or (1, H, W, S)) input: dark vitreous, a bright inner band (rows 12-15), dark fluid between,
    a bright RPE band (rows 40-43), dark below; scaled to [0, 1] as the bundle does."""
    image = torch.zeros(h, w)
    image[12:16] = 1.0
    image[40:44] = 1.0
    image = image[None]
    return image if s is None else image[..., None].repeat(1, 1, 1, s)


def test_retina_region_spans_the_tissue_with_its_dark_fluid():
    region = retina_region(_layered_bscan()[0])
    assert region[12:44].all()  # both bands and the dark pocket between them, in every column
    assert not region[:9].any() and not region[47:].any()  # vitreous and the dark below, but for the blur
    assert not retina_region(torch.full((64, 32), 0.3)).any()  # a blank B-scan has no retina


def test_bscan_entropy_is_the_mean_inside_the_retina():
    image = _layered_bscan()
    region = torch.from_numpy(retina_region(image[0]))
    logits = torch.full_like(image, 0.0)  # p = 0.5: 1 bit everywhere
    (only,) = bscan_entropies(image, logits)
    assert only["entropy"] == pytest.approx(1.0)
    assert only["retina_fraction"] == pytest.approx(float(region.float().mean()))
    logits[0][~region] = 0.0
    logits[0][region] = 30.0  # sure inside the retina, unsure outside: outside does not count
    assert bscan_entropies(image, logits)[0]["entropy"] == pytest.approx(0.0, abs=1e-9)
    logits[0][region] = -math.log(3.0)  # p = 1 / (1 + 3) = 0.25
    assert bscan_entropies(image, logits)[0]["entropy"] == pytest.approx(H_QUARTER)
    with pytest.raises(ValueError, match="logits of its shape"):
        bscan_entropies(image, logits[..., :-1])


def test_a_typed_model_sums_the_entropy_of_its_three_classes():
    image = _layered_bscan()
    region = torch.from_numpy(retina_region(image[0]))
    logits = torch.full((3, *image.shape[1:]), 30.0)  # sure of every type: 0 bits
    assert bscan_entropies(image, logits)[0]["entropy"] == pytest.approx(0.0, abs=1e-9)
    logits[0][region] = 0.0  # unsure of IRF (1 bit) and of SRF (0.81 bits) inside the retina, sure of PED
    logits[1][region] = -math.log(3.0)
    (only,) = bscan_entropies(image, logits)
    assert only["entropy"] == pytest.approx(1.0 + H_QUARTER)
    assert only["retina_fraction"] == pytest.approx(float(region.float().mean()))
    # one channel: the binary model's value, unchanged
    assert bscan_entropies(image, logits[:1])[0]["entropy"] == pytest.approx(1.0)
    volume = _layered_bscan(s=2)
    logits = torch.zeros(3, *volume.shape[1:])  # 1 bit per type: 3 bits in both B-scans
    assert [s["entropy"] for s in bscan_entropies(volume, logits)] == pytest.approx([3.0, 3.0])
    with pytest.raises(ValueError, match="logits of its shape with one channel per class"):
        bscan_entropies(image, torch.zeros(3, 64, 31))


def test_a_volume_is_scored_by_its_most_uncertain_bscan():
    volume = _layered_bscan(s=3)
    logits = torch.empty_like(volume)
    logits[..., 0] = 30.0  # sure: 0 bits
    logits[..., 1] = -math.log(3.0)  # 0.81 bits
    logits[..., 2] = 0.0  # 1 bit
    per_bscan = bscan_entropies(volume, logits)
    assert [s["entropy"] for s in per_bscan] == pytest.approx([0.0, H_QUARTER, 1.0], abs=1e-9)
    assert volume_score(per_bscan) == {"entropy": pytest.approx(1.0), "bscan": 2, "bscans": 3}
    blank = _layered_bscan(s=2)
    blank[..., 1] = 0.5  # a blank B-scan (one value): no retina, 0 bits, whatever the network says
    assert [s["entropy"] for s in bscan_entropies(blank, torch.zeros_like(blank))] == pytest.approx([1.0, 0.0])


# ---- strategies over a real datastore, with stand-in infer tasks -------------------------------------------------


class FakeTask:
    """What a strategy uses of an infer task: ``config``, ``get_path``, ``path``, ``network`` and the call."""

    input_key, output_label_key = "image", "pred"

    def __init__(self, models: Path) -> None:
        self.path = [str(models / "model.pt")]
        self.network = object()
        self.calls: list[str] = []
        self.errors: dict[str, Exception] = {}

    def config(self) -> dict[str, Any]:
        return {}

    def get_path(self) -> str | None:
        return self.path[0] if os.path.exists(self.path[0]) else None

    def __call__(self, request: dict[str, Any], callbacks: dict | None = None):
        stem = Path(request["image"]).stem
        self.calls.append(stem)
        if stem in self.errors:
            raise self.errors[stem]
        return self.answer(stem, request, callbacks or {})


class FakeIFETask(FakeTask):
    """Answers each gel (by file name) with fixed probabilities, call and refer decision, as ife_result would."""

    def __init__(self, models: Path, answers: dict[str, tuple[list[float], int, bool]]) -> None:
        super().__init__(models)
        self.answers = answers

    def answer(self, stem, request, callbacks):
        probs, call, refer = self.answers[stem]
        return None, {
            "probabilities": dict(zip(IFE_CLASSES, probs)),
            "label_index": call,
            "label": IFE_CLASSES[call],
            "refer": refer,
            "refer_reason": "low confidence" if refer else "",
            "calibrated": True,
        }


class FakeOCTTask(FakeTask):
    """Runs the INFERER callback on a fixed input and fixed logits per B-scan (by file name)."""

    def __init__(self, models: Path, logits: dict[str, float]) -> None:
        super().__init__(models)
        self.logits = logits

    def answer(self, stem, request, callbacks):
        image = _layered_bscan()
        data = {"image": image, "pred": torch.full_like(image, self.logits[stem])}
        return None, dict(callbacks[CallBackTypes.INFERER](data))


GELS = {
    "gel_sure": (_probs({"Negative": 0.95}), 0, False),
    "gel_two_way": (_probs({"kappa": 0.6, "lambda": 0.4}), 1, False),
    "gel_spread": (_probs({"kappa": 0.45, "lambda": 0.2, "IgG-kappa": 0.2}), 1, False),
    "gel_referred": (_probs({"Negative": 0.9}), 0, True),
}
BSCANS = {"oct_sure": 30.0, "oct_quarter": -math.log(3.0), "oct_unsure": 0.0}


def _png(path: Path, value: int = 0) -> None:
    Image.fromarray(np.full((16, 24), value, np.uint8)).save(path)


@pytest.fixture
def store(tmp_path: Path):
    """A studies folder with the gels of GELS, the B-scans of BSCANS and a model folder with weights and recipe."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for i, name in enumerate([*GELS, *BSCANS]):
        _png(studies / f"{name}.png", i)
    models = tmp_path / "models"
    models.mkdir()
    (models / "model.pt").write_bytes(b"weights v1")
    (models / "model.recipe.json").write_text('{"settings": {}}')
    datastore = CheckedLocalDatastore(str(studies), auto_reload=False)
    return datastore, studies, models, tmp_path


def _ife(store, cache: str | None = "cache", **kwargs) -> tuple[IFELeastCertain, FakeIFETask]:
    """The IFE strategy over the store's gels, scoring with a FakeIFETask; its cache in ``tmp/<cache>``."""
    datastore, studies, models, tmp = store
    task = FakeIFETask(models, GELS)
    kwargs.setdefault("images", "gel_*")
    kwargs.setdefault("served_wait_s", 0)
    return IFELeastCertain(task, str(tmp / cache) if cache else None, **kwargs), task


def _label(datastore, image_id: str, folder: Path) -> None:
    path = folder / f"{image_id}.json"
    path.write_text(json.dumps({"label": "Negative"}))
    datastore.save_label(image_id, str(path), "final", {})


def test_ife_strategy_offers_the_referred_then_the_least_certain_gel_and_never_a_labelled_one(store):
    datastore, studies, models, tmp = store
    strategy, task = _ife(store)
    answer = strategy({"strategy": strategy.name}, datastore)
    assert answer["id"] == "gel_referred"
    details = answer["uncertainty"]
    assert details["refer"] is True and details["candidates"] == 4 and details["scored"] == 4
    assert sorted(task.calls) == sorted(GELS)  # the B-scans are not gels: never scored
    assert strategy({"strategy": strategy.name, "measure": "margin"}, datastore)["id"] == "gel_referred"

    _label(datastore, "gel_referred", tmp)
    assert strategy({"strategy": strategy.name}, datastore)["id"] == "gel_spread"  # confidence 0.45
    assert strategy({"strategy": strategy.name, "measure": "margin"}, datastore)["id"] == "gel_two_way"  # 0.2
    for name in ("gel_spread", "gel_two_way", "gel_sure"):
        _label(datastore, name, tmp)
    assert strategy({"strategy": strategy.name}, datastore) is None  # every gel labelled
    assert len(task.calls) == 4  # every later answer came from the cache

    with pytest.raises(HTTPException) as refused:
        strategy({"strategy": strategy.name, "measure": "entropy"}, datastore)
    assert refused.value.status_code == 400 and "measure must be one of" in refused.value.detail


def test_oct_strategy_offers_the_highest_entropy_bscan(store):
    datastore, studies, models, tmp = store
    task = FakeOCTTask(models, BSCANS)
    strategy = OCTEntropy(task, str(tmp / "cache"), images="oct_*", served_wait_s=0)
    answer = strategy({"strategy": strategy.name}, datastore)
    assert answer["id"] == "oct_unsure" and answer["uncertainty"]["entropy"] == pytest.approx(1.0)
    assert answer["uncertainty"]["bscan"] == 0 and answer["uncertainty"]["bscans"] == 1
    Image.fromarray(np.zeros((16, 24), np.uint8)).save(tmp / "mask.png")
    datastore.save_label("oct_unsure", str(tmp / "mask.png"), "final", {})
    answer = strategy({"strategy": strategy.name}, datastore)
    assert answer["id"] == "oct_quarter" and answer["uncertainty"]["entropy"] == pytest.approx(H_QUARTER)
    assert sorted(task.calls) == sorted(BSCANS)


def test_scores_are_cached_per_file_and_model_version(store):
    datastore, studies, models, tmp = store
    strategy, task = _ife(store)
    strategy({"strategy": strategy.name}, datastore)
    assert len(task.calls) == 4
    cache_file = tmp / "cache" / "ife_least_certain.json"
    written = json.loads(cache_file.read_text())
    assert set(written["images"]) == set(GELS) and written["model_version"].startswith("sha256:")

    # hit: the same request again, and a restarted server reading the file
    answer = strategy({"strategy": strategy.name}, datastore)
    assert len(task.calls) == 4 and answer["uncertainty"]["cached"] == 4
    restarted, task2 = _ife(store)
    assert restarted({"strategy": restarted.name}, datastore)["id"] == "gel_referred" and task2.calls == []

    # an image file rewritten: that image alone is scored again
    os.utime(studies / "gel_sure.png", ns=(time.time_ns(), time.time_ns() + 10**9))
    answer = restarted({"strategy": restarted.name}, datastore)
    assert task2.calls == ["gel_sure"] and answer["uncertainty"]["scored"] == 1

    # new weights: every gel again
    (models / "model.pt").write_bytes(b"weights v2")
    answer = restarted({"strategy": restarted.name}, datastore)
    assert sorted(task2.calls[1:]) == sorted(GELS) and answer["uncertainty"]["cached"] == 0
    assert json.loads(cache_file.read_text())["model_version"] != written["model_version"]
    # a new calibration record of the same weights changes the probabilities: every gel again
    (models / "model.calibration.json").write_text('{"temperatures": {"severe": 1.5, "mild": 1.2}}')
    restarted({"strategy": restarted.name}, datastore)
    assert len(task2.calls) == 1 + 4 + 4


def test_an_untrained_model_has_a_version_of_its_own(store):
    datastore, studies, models, tmp = store
    (models / "model.pt").unlink()
    strategy, task = _ife(store)
    version = strategy.model_version()
    assert version.startswith("random weights")
    strategy({"strategy": strategy.name}, datastore)
    (models / "model.pt").write_bytes(b"first trained weights")  # training wrote a checkpoint
    assert strategy.model_version() != version
    strategy({"strategy": strategy.name}, datastore)
    assert len(task.calls) == 8


def test_a_failing_image_is_skipped_logged_and_remembered(store, caplog):
    datastore, studies, models, tmp = store
    (studies / "gel_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # refused by the screening
    _png(studies / "gel_odd.png")
    datastore.refresh()
    strategy, task = _ife(store)
    task.errors["gel_odd"] = RuntimeError("the loader gave up")  # passes the screening, fails in the pipeline
    with caplog.at_level(logging.WARNING):
        answer = strategy({"strategy": strategy.name}, datastore)
    assert answer["id"] == "gel_referred" and answer["uncertainty"]["failed"] == 2
    assert "'gel_broken' skipped" in caplog.text and "'gel_odd' skipped" in caplog.text
    assert "the loader gave up" in caplog.text
    assert "gel_broken" not in task.calls  # refused before the model
    calls = len(task.calls)
    assert strategy({"strategy": strategy.name}, datastore)["uncertainty"]["failed"] == 2
    assert len(task.calls) == calls  # not tried again while neither the file nor the model changed
    del task.errors["gel_odd"]
    _png(studies / "gel_odd.png", 200)  # fixed: another file
    strategy({"strategy": strategy.name}, datastore)
    assert task.calls[calls:] == ["gel_odd"]


def test_a_model_that_cannot_run_fails_the_request_with_the_reason(store):
    datastore, studies, models, tmp = store
    strategy, task = _ife(store)
    error = CheckpointMismatchError("model.pt does not fit: layer x")
    task.errors = {name: RuntimeError("applying transform") for name in GELS}
    for value in task.errors.values():
        value.__cause__ = error  # as MONAI's Compose wraps it
    with pytest.raises(HTTPException) as failed:
        strategy({"strategy": strategy.name}, datastore)
    assert failed.value.status_code == 500 and "does not fit: layer x" in failed.value.detail
    assert len(task.calls) == 1  # not once per image


def test_recently_offered_images_go_last_and_the_budget_bounds_scoring(store):
    datastore, studies, models, tmp = store
    strategy, task = _ife(store, served_wait_s=600)
    datastore.update_image_info("gel_referred", {"strategy": {strategy.name: {"ts": int(time.time()) - 60}}})
    assert strategy({"strategy": strategy.name}, datastore)["id"] == "gel_spread"
    assert strategy({"strategy": strategy.name, "served_wait_s": 0}, datastore)["id"] == "gel_referred"

    budgeted, task = _ife(store, cache=None, score_budget_s=0)
    answer = budgeted({"strategy": budgeted.name}, datastore)
    assert answer["uncertainty"]["scored"] == 1 and answer["uncertainty"]["unscored"] == 3
    answer = budgeted({"strategy": budgeted.name}, datastore)
    assert answer["uncertainty"]["scored"] == 1 and answer["uncertainty"]["cached"] == 1
    with pytest.raises(ValueError, match="score_budget_s must be a number of seconds"):
        IFELeastCertain(task, None, score_budget_s="soon")


def test_score_cache_file_is_replaced_whole_and_a_bad_one_ignored(tmp_path, caplog):
    path = tmp_path / "c" / "s.json"
    cache = ScoreCache(str(path), "s", "v1")
    assert cache.use_model("m1") == 0
    cache.put("a", {"size": 1, "mtime_ns": 2}, score={"x": 1.0})
    cache.save()
    assert [p.name for p in path.parent.iterdir()] == ["s.json"]  # no temporary file left
    again = ScoreCache(str(path), "s", "v1")
    assert again.use_model("m1") == 0 and again.get("a", {"size": 1, "mtime_ns": 2}) == {
        "file": {"size": 1, "mtime_ns": 2},
        "score": {"x": 1.0},
    }
    assert again.get("a", {"size": 1, "mtime_ns": 3}) is None  # another version of the file
    assert ScoreCache(str(path), "s", "v2").use_model("m1") == 0  # another score version: nothing read
    assert ScoreCache(str(path), "s", "v1").use_model("m2") == 1  # another model: dropped
    path.write_text("{torn")
    with caplog.at_level(logging.WARNING):
        assert ScoreCache(str(path), "s", "v1").use_model("m1") == 0
    assert "unreadable" in caplog.text


def test_model_version_rehashes_only_a_changed_file(tmp_path, monkeypatch):
    weights, recipe = tmp_path / "model.pt", tmp_path / "model.recipe.json"
    weights.write_bytes(b"a")
    digests = FileDigests()
    first = model_version([str(weights), str(recipe)], digests)
    import lib.strategies.cache as cache_module

    monkeypatch.setattr(cache_module, "weights_sha256", lambda p: pytest.fail(f"{p} hashed again"))
    assert model_version([str(weights), str(recipe)], digests) == first
    monkeypatch.undo()
    recipe.write_text("{}")  # a file that appears changes the version
    assert model_version([str(weights), str(recipe)], digests) != first
    assert file_signature(str(weights))["size"] == 1


# ---- the app, built in this process --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_folders(tmp_path_factory):
    """Bundles with tiny fresh checkpoints, and studies of 3 gels, 3 B-scans and a volume of 3 B-scans (a 3-page
    TIFF, which the OCT bundle reads as a volume)."""
    import strategy_speed

    from custom_components.oct.synthetic import render_bscan

    root = tmp_path_factory.mktemp("strategies_app")
    bundles = strategy_speed.copy_bundles(root / "bundles")
    for name in strategy_speed.STRATEGIES:
        strategy_speed.tiny_checkpoint(bundles / name)
    studies = root / "studies"
    strategy_speed.write_studies(studies, 3)
    rng = np.random.default_rng(3)
    pages = [Image.fromarray(render_bscan(rng, image_size=strategy_speed.IMAGE_HW)[0]) for _ in range(3)]
    pages[0].save(studies / "oct_volume.tif", save_all=True, append_images=pages[1:])
    return root, bundles, studies


@pytest.fixture
def monailabel_globals(monkeypatch):
    """MONAI Label's settings that building the app here changes, restored afterwards, and its app registry
    emptied."""
    from monailabel.config import settings
    from monailabel.interfaces.utils import app as app_utils

    for name in ("MONAI_LABEL_APP_DIR", "MONAI_LABEL_STUDIES", "MONAI_LABEL_DATASTORE_AUTO_RELOAD"):
        monkeypatch.setattr(settings, name, getattr(settings, name))
    yield
    app_utils.clear_cache()


def _build(app_folders, **conf):
    import strategy_speed

    root, bundles, studies = app_folders
    os.environ.setdefault("MONAI_LABEL_SESSION_PATH", str(root / "sessions"))
    models = conf.pop("models", "ife_multitask,oct_fluid_seg").split(",")
    return strategy_speed.build_app(studies, bundles, models, conf)


@pytest.mark.slow
def test_activelearning_offers_an_unlabelled_image_for_each_model(app_folders, monailabel_globals):
    import strategy_speed

    root, bundles, studies = app_folders
    app, client = _build(app_folders)
    labels = root / "labels"
    labels.mkdir(exist_ok=True)
    strategy_speed.label(app, "ife_multitask", "gel_0000", labels)
    strategy_speed.label(app, "oct_fluid_seg", "oct_0000", labels)

    info = client.get("/info/").json()
    assert set(info["strategies"]) == {"random", "first", "ife_least_certain", "oct_entropy"}
    assert info["strategies"]["ife_least_certain"]["images"] == "gel_*"

    response = client.post("/activelearning/ife_least_certain", json={})
    assert response.status_code == 200, response.text
    gel = response.json()
    assert gel["id"] in {"gel_0001", "gel_0002"}
    assert gel["uncertainty"]["candidates"] == 2 and gel["uncertainty"]["failed"] == 0
    # the score is what /infer answers for that gel: the same pipeline, calibration and refer rule
    answer = client.post("/infer/ife_multitask", params={"image": gel["id"], "output": "json"}).json()
    assert gel["uncertainty"]["confidence"] == pytest.approx(answer["probabilities"][answer["label"]], abs=1e-6)
    assert gel["uncertainty"]["refer"] == answer["refer"]
    assert gel["uncertainty"]["refer_reason"] == answer["refer_reason"]

    response = client.post("/activelearning/oct_entropy", json={})
    assert response.status_code == 200, response.text
    bscan = response.json()
    assert bscan["id"] in {"oct_0001", "oct_0002", "oct_volume"} and 0.0 <= bscan["uncertainty"]["entropy"] <= 1.0
    assert bscan["uncertainty"]["retina_fraction"] > 0.1 and bscan["uncertainty"]["failed"] == 0
    # the volume is scored by its most uncertain B-scan
    cached = json.loads((studies / ".strategy_scores" / "oct_entropy.json").read_text())["images"]
    assert cached["oct_volume"]["score"]["bscans"] == 3 and cached["oct_0001"]["score"]["bscans"] == 1

    # MONAI Label's own strategies are still there, and an unknown one is named
    assert client.post("/activelearning/first", json={}).json()["id"] == "gel_0001"
    response = client.post("/activelearning/no_such_strategy", json={})
    assert response.status_code == 404 and "ife_least_certain" in response.json()["detail"]
    assert (studies / ".strategy_scores" / "ife_least_certain.json").is_file()


@pytest.mark.slow
def test_only_the_served_models_get_a_strategy(app_folders, monailabel_globals):
    app, client = _build(app_folders, models="ife_multitask")
    assert set(client.get("/info/").json()["strategies"]) == {"random", "first", "ife_least_certain"}
    assert client.post("/activelearning/oct_entropy", json={}).status_code == 404


@pytest.fixture(scope="module")
def typed_app_folders(tmp_path_factory):
    """The OCT bundle with a tiny fresh checkpoint of the three fluid types (``fluid_classes`` IRF, SRF, PED: three
    output channels), and studies of 3 B-scans."""
    import strategy_speed

    root = tmp_path_factory.mktemp("typed_app")
    bundles = strategy_speed.copy_bundles(root / "bundles", ["oct_fluid_seg"])
    recipe = {**strategy_speed.TINY_RECIPES["oct_fluid_seg"], "fluid_classes": ["IRF", "SRF", "PED"]}
    strategy_speed.tiny_checkpoint(bundles / "oct_fluid_seg", recipe=recipe)
    studies = root / "studies"
    strategy_speed.write_studies(studies, 3, ["oct_fluid_seg"])
    return root, bundles, studies


@pytest.mark.slow
def test_a_typed_model_is_served_with_its_three_labels_and_scored(typed_app_folders, monailabel_globals):
    import io

    import strategy_speed

    root, bundles, studies = typed_app_folders
    app, client = _build(typed_app_folders, models="oct_fluid_seg")
    typed = {"IRF": 1, "SRF": 2, "PED": 3}
    assert client.get("/info/").json()["models"]["oct_fluid_seg"]["labels"] == typed

    response = client.post("/infer/oct_fluid_seg", params={"image": "oct_0001", "output": "image"})
    assert response.status_code == 200, response.text
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    assert mask.shape == strategy_speed.IMAGE_HW and set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
    answer = client.post("/infer/oct_fluid_seg", params={"image": "oct_0001", "output": "json"}).json()
    assert answer["mask_values"] == {"background": 0, **typed} and answer["label_names"] == typed
    assert answer["fluid_area_px"] == int(np.count_nonzero(mask))
    for name, value in typed.items():
        area = int(np.count_nonzero(mask == value))
        assert answer["fluid_types"][name]["area_px"] == area
        assert answer["fluid_types"][name]["fraction"] == pytest.approx(area / mask.size, abs=1e-6)

    # the answer saved back as the final label: a label map the datastore accepts for training
    labels = root / "labels"
    labels.mkdir(exist_ok=True)
    Image.fromarray(mask).save(labels / "oct_0001.png")
    app.datastore().save_label("oct_0001", str(labels / "oct_0001.png"), "final", {})

    response = client.post("/activelearning/oct_entropy", json={})
    assert response.status_code == 200, response.text
    offered = response.json()
    assert offered["id"] in {"oct_0000", "oct_0002"} and offered["uncertainty"]["failed"] == 0
    assert 0.0 <= offered["uncertainty"]["entropy"] <= 3.0  # bits summed over the three types


def test_the_calibration_record_is_read_again_only_when_a_file_changes(tmp_path, monkeypatch):
    """The IFE infer task remembers the record per version of the weights and record files: read_calibration hashes
    the weights at every call, which scoring a thousand gels would pay a thousand times."""
    import lib.infers.ife_multitask as ife_infer

    task = object.__new__(ife_infer.IFEMultiTaskInfer)  # only the memo: no bundle, no network
    task._calibration_read = None
    reads: list[str] = []
    monkeypatch.setattr(ife_infer, "read_calibration", lambda w: reads.append(w) or {"temperatures": {"mild": 2.0}})
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"weights")
    assert task.calibration(None) is None and task.calibration(str(tmp_path / "missing.pt")) is None
    assert task.calibration(str(weights)) == {"temperatures": {"mild": 2.0}}
    task.calibration(str(weights))
    assert len(reads) == 1
    (tmp_path / "model.calibration.json").write_text("{}")  # a record appears
    task.calibration(str(weights))
    weights.write_bytes(b"other weights")  # new weights: the record may now be stale
    task.calibration(str(weights))
    assert len(reads) == 3
