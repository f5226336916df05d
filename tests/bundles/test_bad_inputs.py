# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The corpus of bad and odd inputs (``tests/bad_inputs.py``) through the real workflows of both bundles.

For each bundle, in this process (``ConfigWorkflow``, as ``tests/bundles/test_*_bundle.py``): training on the usable
corpus files (each with the conversion the docs describe) runs its epoch and evaluation scores them; a datalist
that also names the refused files stops training, and evaluation, before the first epoch with one error naming
every one of them and its problem; inference over a folder holding the whole corpus writes a result for every
usable file, lists every refused one with its problem in ``skipped_inputs.csv`` and nothing else, in valid UTF-8
although two file names are not. 40 x 56 images, narrow networks, one epoch.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import bad_inputs
import nibabel as nib
import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from custom_components.core import inputs
from custom_components.core.datalist import DatalistError
from custom_components.core.image_files import printable_path
from custom_components.ife.classes import IFE_CLASSES

# screening opens the corpus's 12000 x 12000 header with Pillow, which warns (before screening refuses it)
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
KINDS = {"ife": "ife_multitask", "oct": "oct_fluid_seg"}
NARROW = [8, 16, 32, 64]
SMALL = {
    # the corpus holds file oddities, not gels: the IFE model reads whole images (no lanes to find in noise)
    "ife": {"image_size": 64, "channels": NARROW, "batch_size": 4, "num_workers": 0, "cache_rate": 0.0, "seed": 0,
            "lane_layout": False},
    "oct": {"image_size": 32, "filters": NARROW, "batch_size": 4, "num_workers": 0, "seed": 0},
}


def _workflow(kind: str, names, workflow_type: str, run: bool = True, **override) -> ConfigWorkflow:
    configs = BUNDLES / KINDS[kind] / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / n) for n in names], meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), workflow_type=workflow_type, **override,
    )  # fmt: skip
    if run:
        workflow.initialize()
        assert workflow.check_properties() == []
        workflow.run()
        workflow.finalize()
    return workflow


def _datalist_error(workflow: ConfigWorkflow) -> str:
    """The one ``DatalistError`` that initializing ``workflow`` raises (the config parser wraps it), as text."""
    with pytest.raises(Exception) as info:
        workflow.initialize()
    error = info.value
    while error is not None and not isinstance(error, DatalistError):
        error = error.__cause__ or error.__context__
    assert isinstance(error, DatalistError), info.value
    return str(error)


def _entries(kind: str, paths: list[Path], masks: dict[str, Path]) -> list[dict]:
    """Datalist entries: a class label per gel (IFE) or the good mask for every B-scan (OCT)."""
    if kind == "ife":
        return [{"image": str(p), "label": IFE_CLASSES[i % len(IFE_CLASSES)]} for i, p in enumerate(paths)]
    return [{"image": str(p), "label": str(masks["mask_ok.png"])} for p in paths]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    paths, masks = bad_inputs.write_corpus(root / "corpus"), bad_inputs.write_masks(root / "masks")
    return {"folder": root / "corpus", "paths": paths, "masks": masks}


@pytest.fixture(scope="module", params=["ife", "oct"])
def trained(request, corpus):
    """One epoch on the usable 2D corpus files (every conversion the docs describe, as training sees it), with copies
    of them for validation and testing (a datalist may not list one image in two sections)."""
    kind = request.param
    root = corpus["folder"].parent / kind
    data = root / "data"
    sections = {}
    for section in ("training", "validation", "testing"):
        paths = bad_inputs.write_corpus(data / section, kind="ife", usable=True)  # the 2D files
        sections[section] = _entries(kind, list(paths.values()), corpus["masks"])
    sections["validation"] = sections["validation"][:2]
    (data / "datalist.json").write_text(json.dumps(sections))
    override = {"bundle_root": str(root), "dataset_dir": str(data), **SMALL[kind]}
    _workflow(kind, ["train.json"], "train", **override, max_epochs=1)
    assert (root / "models" / "model.pt").is_file()
    return {"kind": kind, "root": root, "data": data, "sections": sections, "override": override, **corpus}


def test_evaluation_scores_every_usable_file(trained, tmp_path):
    kind, out = trained["kind"], tmp_path / "eval"
    _workflow(kind, ["train.json", "evaluate.json"], "train", **trained["override"], output_dir=str(out))
    report = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert report["num_samples" if kind == "ife" else "num_scans"] == len(trained["sections"]["testing"])
    if kind == "oct":  # the per-scan table names each scan: a name that is not UTF-8 is escaped there too
        names = [Path(r["image"]).name for r in _rows(out / "per_scan.csv")]
        assert printable_path(bad_inputs.NON_UTF8) in names


def _refused_2d(kind: str, corpus: dict) -> tuple[list[dict], list[tuple[str, str]]]:
    """Datalist entries naming every refused 2D corpus file (and, for OCT, the good image with each bad mask), and
    the (file, problem) pairs the error must name."""
    refused = [c for c in bad_inputs.cases(kind, usable=False) if "ife" in c.kinds]
    entries = _entries(kind, [corpus["paths"][c.name] for c in refused], corpus["masks"])
    expected = [(printable_path(corpus["paths"][c.name]), c.problem) for c in refused]
    if kind == "oct":
        bad_masks = [(name, problem) for name, _, problem in bad_inputs.MASK_CASES if problem]
        for image, (name, problem) in zip(("gray.png", "rgb.png"), bad_masks):  # an image is listed once only
            entries.append({"image": str(corpus["paths"][image]), "label": str(corpus["masks"][name])})
            expected.append((printable_path(corpus["masks"][name]), problem))
    return entries, expected


def _assert_names_each(message: str, expected: list[tuple[str, str]]) -> None:
    """One problem line per bad entry (``  - <entry> <file>: <problem>``), naming its file and its problem."""
    lines = [line for line in message.splitlines() if line.startswith("  - ")]
    assert len(lines) == len(expected), message
    for path, problem in expected:
        assert any(path in line and f": {problem}" in line for line in lines), (path, problem, message)


def _dataset_with_bad_files(trained: dict, folder: Path, section: str) -> tuple[Path, list[tuple[str, str]]]:
    """The trained fixture's datalist with every refused 2D corpus file added to ``section``, in ``folder/data``;
    returns the folder and the (file, problem) pairs the error must name."""
    bad, expected = _refused_2d(trained["kind"], trained)
    data = folder / "data"
    data.mkdir()
    sections = trained["sections"]
    (data / "datalist.json").write_text(json.dumps({**sections, section: sections[section] + bad}))
    return data, expected


def test_training_on_bad_files_stops_before_the_first_epoch_naming_each(trained, tmp_path):
    data, expected = _dataset_with_bad_files(trained, tmp_path, "training")
    override = {**trained["override"], "bundle_root": str(tmp_path), "dataset_dir": str(data), "max_epochs": 1}
    message = _datalist_error(_workflow(trained["kind"], ["train.json"], "train", run=False, **override))
    _assert_names_each(message, expected)
    assert not (tmp_path / "models").exists()  # nothing was trained or saved


def test_evaluation_on_bad_files_stops_before_scoring_naming_each(trained, tmp_path):
    data, expected = _dataset_with_bad_files(trained, tmp_path, "testing")
    override = {**trained["override"], "dataset_dir": str(data), "output_dir": str(tmp_path / "eval")}
    configs = ["train.json", "evaluate.json"]
    message = _datalist_error(_workflow(trained["kind"], configs, "train", run=False, **override))
    _assert_names_each(message, expected)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:  # strict UTF-8: a lone surrogate would not decode
        return list(csv.DictReader(f))


def test_inference_over_the_whole_corpus_costs_each_bad_file_only_itself(trained, tmp_path, capsys):
    kind = trained["kind"]
    out = tmp_path / "out"
    paths = {"bundle_root": str(trained["root"]), "num_workers": 0}
    _workflow(kind, ["inference.json"], "infer", **paths, input_dir=str(trained["folder"]), output_dir=str(out))
    log = capsys.readouterr().out

    skipped = {Path(r["image"]).name: r["error"] for r in _rows(out / "skipped_inputs.csv")}
    refused = {printable_path(c.name): c.problem for c in bad_inputs.cases(kind, usable=False)}
    assert skipped.keys() == refused.keys()  # every refused file, and nothing else
    for name, problem in refused.items():
        assert skipped[name].startswith(problem), (name, skipped[name])
    assert "broken_\\xff.png" in skipped  # a name that is not UTF-8, escaped: the CSV stays valid UTF-8

    usable = {printable_path(c.name) for c in bad_inputs.cases(kind, usable=True)}
    results = _rows(out / ("predictions.csv" if kind == "ife" else "fluid_measurements.csv"))
    assert {Path(r["image"]).name for r in results} == usable  # a result for every usable file, and nothing else
    if kind == "ife":
        probabilities = {Path(r["image"]).name: [r[f"p_{c}"] for c in IFE_CLASSES] for r in results}
        # 16-bit gels are scaled (value / 257), not clipped to white: the same gel as its 8-bit original
        assert probabilities["gray16.png"] == probabilities["gray16.tif"] == probabilities["gray.png"]
        assert probabilities["gel_\\xff.png"] == probabilities["gray.png"]
    else:
        masks = out / "masks"
        gray = np.asarray(Image.open(masks / "gray_fluid.png"))
        assert gray.shape == bad_inputs.SHAPE
        # gray16.png and gray16.tif share a stem: the second one's outputs are named gray16_2*
        for stem in ("gray16", "gray16_2", bad_inputs.NON_UTF8.removesuffix(".png")):
            assert np.array_equal(np.asarray(Image.open(masks / f"{stem}_fluid.png")), gray), stem
        # a volume without image content: no fluid, and the log says why
        constant = np.asarray(nib.load(masks / "constant_fluid.nii.gz").dataobj)
        assert constant.shape == (*bad_inputs.SHAPE, 3) and not constant.any()
        assert "constant.nii.gz: B-scan(s) [0, 1, 2] of 3 hold no image" in log


def test_ife_attention_figure_of_a_name_that_is_not_utf8(trained, tmp_path):
    if trained["kind"] != "ife":
        pytest.skip("attention figures are the IFE bundle's")
    folder = tmp_path / "gels"
    folder.mkdir()
    (folder / bad_inputs.NON_UTF8).write_bytes(trained["paths"][bad_inputs.NON_UTF8].read_bytes())
    out = tmp_path / "out"
    paths = {"bundle_root": str(trained["root"]), "num_workers": 0, "input_dir": str(folder), "output_dir": str(out)}
    _workflow("ife", ["inference.json"], "infer", **paths)
    assert [Path(r["image"]).name for r in _rows(out / "predictions.csv")] == ["gel_\\xff.png"]
    assert len(os.listdir(out / "attention")) == 1


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_file_that_fails_after_screening_costs_only_itself(trained, tmp_path, monkeypatch, batch_size):
    """A file that changes on disk between screening and loading (here: screening is told it is fine) fails in the
    data loader; the run goes on, every other file gets its result, and the skipped-inputs CSV names it."""
    kind = trained["kind"]
    folder = tmp_path / "inputs"
    good = bad_inputs.write_corpus(folder, kind="ife", usable=True)
    broken = folder / "zz_truncated_later.png"
    broken.write_bytes((folder / "gray.png").read_bytes()[:200])
    screen = inputs.screen_image_file
    monkeypatch.setattr(inputs, "screen_image_file", lambda path, **kw: None if path == str(broken) else screen(path, **kw))
    out = tmp_path / "out"
    override = {"bundle_root": str(trained["root"]), "num_workers": 0, "input_dir": str(folder), "output_dir": str(out)}
    if kind == "ife":
        override["batch_size"] = batch_size  # with 3, the broken gel shares its batch with good ones
    elif batch_size != 1:
        pytest.skip("OCT inference reads one input per batch")
    _workflow(kind, ["inference.json"], "infer", **override)

    results = _rows(out / ("predictions.csv" if kind == "ife" else "fluid_measurements.csv"))
    assert sorted(Path(r["image"]).name for r in results) == sorted(printable_path(p.name) for p in good.values())
    (skipped,) = _rows(out / "skipped_inputs.csv")
    assert skipped["image"] == str(broken)
    assert skipped["error"].startswith("failed while loading (") and ("LoadImage" if kind == "ife" else "LoadOCTVolumed") in skipped["error"]
    assert not list(out.glob("*.partial"))  # the run completed: every output under its final name
