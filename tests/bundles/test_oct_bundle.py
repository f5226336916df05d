# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Real runs of the ``bundles/oct_fluid_seg`` workflows on small synthetic B-scans, on the CPU.

Train (on the embedded synthetic default, long enough to find fluid), then, with no network or size overrides
(the checkpoint's recipe rebuilds the network): evaluate (clean and noisy; one process and two under torchrun give
the same numbers), the same test scans stored at other sizes and aspects (same pooled Dice), inference over a
folder holding PNG and TIFF B-scans of other sizes (one 16-bit), NIfTI volumes in two axis orders and a corrupt
file, inference over a datalist with broken entries (``--strict`` turns them into an error), checkpoints that do not
fit; bad datalists; native-scale training; the device-side augmentation switch; the Table 1 network overrides;
verify_net_in_out and ckpt_export. 48 px images and a narrow TransUNet keep each run to seconds.

Everything runs in this process (``ConfigWorkflow``, MONAI's ``verify_net_in_out`` / ``ckpt_export`` functions;
``tests/conftest.py`` restores what a workflow changes process-wide) except what only a separate process shows:
evaluation under ``torchrun`` with two processes, and one ``python -m monai.bundle run`` command line (``--strict
true``: parsed from the command line, and a non-zero exit status).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export, verify_net_in_out
from oct_files import write_dicom_oct, write_heidelberg_vol, write_heidelberg_xml, write_topcon
from PIL import Image

from custom_components.core.recipe import CheckpointMismatchError, RecipeMismatchError
from custom_components.core.datalist import DatalistError
from custom_components.oct.synthetic import render_bscan

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "oct_fluid_seg"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
NARROW = [8, 16, 32, 64]
SMALL = {"image_size": 48, "filters": NARROW, "batch_size": 8, "num_workers": 0, "synthetic_count": 60, "seed": 0}
#: enough for a narrow TransUNet to find synthetic fluid (pooled validation Dice about 0.6), in about 15 s
LEARN = {"max_epochs": 10, "learning_rate": 0.003}


def _workflow(names, workflow_type, **override) -> ConfigWorkflow:
    workflow = ConfigWorkflow(
        config_file=[str(CONFIGS / n) for n in names], meta_file=META, logging_file=LOGGING,
        workflow_type=workflow_type, **override,
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()
    return workflow


def _cli(*args: str, cwd: Path, expect_ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert (result.returncode == 0) == expect_ok, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _error_chain(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None:  # the config parser wraps what a config expression raises
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("oct_bundle")
    _workflow(["train.json"], "train", bundle_root=str(root), dataset_dir=str(root / "data"), **SMALL, **LEARN)
    # what later runs pass: where things are, never the network or its size (the checkpoint's recipe has them)
    paths = {"bundle_root": str(root), "dataset_dir": str(root / "data"), "num_workers": 0}
    return {"root": root, "override": {**paths, **SMALL}, "paths": paths}


def test_train_writes_best_model_its_recipe_and_resumable_state(trained):
    root = trained["root"]
    assert (root / "data" / "datalist.json").is_file()
    model = torch.load(root / "models" / "model.pt", weights_only=True)
    assert "pos_embed" in model  # a bare TransUNet state_dict, the zoo's way
    recipe = json.loads((root / "models" / "model.recipe.json").read_text())
    assert recipe["network"] == "custom_components.oct.transunet.TransUNet"
    assert recipe["settings"] == {
        "image_size": 48, "geometry": "resize", "filters": NARROW, "patch_size": 1, "embed_dim": 96, "training_aspect": 1.0,
        "fluid_classes": ["fluid"],  # the synthetic default's masks are binary
    }  # fmt: skip
    assert recipe["bundle"]["version"] == json.loads(Path(META).read_text())["version"]
    state = torch.load(root / "models" / "checkpoint.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "lr_scheduler", "trainer", "best_model", "random_states", "grad_scaler"}
    assert state["trainer"]["iteration"] == LEARN["max_epochs"] * state["trainer"]["epoch_length"]


@pytest.mark.parametrize("override", [{"max_epochs": 7}, {"train#trainer#max_epochs": 7}])
def test_cosine_schedule_spans_the_epochs_trained(override):
    # max_epochs is the id the docs, scripts and MONAI Label set; a user may still set the trainer's own: either way
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    # the classes set, so building the network reads no data (the default reads them from the masks)
    parser.update({"image_size": 32, "filters": NARROW, "device": "$torch.device('cpu')", "classes": ["fluid"], **override})
    assert parser.get_parsed_content("lr_scheduler").T_max == 7


def test_resume_continues_from_the_saved_epoch(trained, tmp_path):

    shutil.copytree(trained["root"] / "models", tmp_path / "models")
    epochs = LEARN["max_epochs"] + 1
    override = {**trained["override"], **LEARN, "bundle_root": str(tmp_path), "max_epochs": epochs, "resume": True}
    workflow = _workflow(["train.json"], "train", **override)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    epoch_length = trainer.state.epoch_length
    assert trainer.state.epoch == epochs and trainer.state.iteration == epochs * epoch_length  # one more epoch
    state = torch.load(tmp_path / "models" / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["iteration"] == epochs * state["trainer"]["epoch_length"]


def test_fine_tuning_starts_from_a_pretrained_checkpoint_and_refuses_another_geometry(trained, tmp_path):
    pretrained = trained["root"] / "models" / "model.pt"
    override = {**trained["override"], "bundle_root": str(tmp_path / "tuned"), "pretrained": str(pretrained),
                "max_epochs": 1, "learning_rate": 0.0}  # fmt: skip
    workflow = _workflow(["train.json"], "train", **override)
    start, tuned = torch.load(pretrained, weights_only=True), workflow.parser.get_parsed_content("network").state_dict()
    # at learning rate 0 one epoch changes no weight: training started from the pretrained weights
    assert all(torch.equal(tuned[key].cpu(), value) for key, value in start.items() if key.endswith("weight"))
    recipe = json.loads((tmp_path / "tuned" / "models" / "model.recipe.json").read_text())
    assert recipe["started_from"]["checkpoint"] == str(pretrained.resolve())
    # B-scans of another shape (a site's wide exports after square synthetic ones): only the aspect differs, allowed
    wide = tmp_path / "wide"
    from custom_components.oct.synthetic import synthesize_oct_dataset

    synthesize_oct_dataset(wide, count=12, seed=5, image_size=(48, 72))
    _workflow(["train.json"], "train", **{**override, "bundle_root": str(tmp_path / "w"), "dataset_dir": str(wide)})
    recipe = json.loads((tmp_path / "w" / "models" / "model.recipe.json").read_text())
    assert recipe["settings"]["training_aspect"] == pytest.approx(48 / 72, abs=1e-4) and recipe["started_from"]
    with pytest.raises(Exception) as error:
        _workflow(["train.json"], "train", **{**override, "bundle_root": str(tmp_path / "x"), "geometry": "native"})
    assert any(isinstance(e, RecipeMismatchError) and "geometry: checkpoint 'resize', this run 'native'" in str(e)
               for e in _error_chain(error.value))  # fmt: skip


def _evaluate(trained, out: Path, **override) -> dict:
    _workflow(["train.json", "evaluate.json"], "train", **trained["paths"], output_dir=str(out), **override)
    return json.loads((out / "metrics.json").read_text())


def test_evaluate_rebuilds_the_network_and_reports_the_literature_metrics(trained, tmp_path):
    out = tmp_path / "eval"
    report = _evaluate(trained, out, noise_sigma=0.2)  # no filters or image_size: they come from the recipe
    testing = json.loads((trained["root"] / "data" / "datalist.json").read_text())["testing"]
    with_fluid = sum(bool(np.asarray(Image.open(trained["root"] / "data" / e["label"])).any()) for e in testing)
    assert report["num_scans"] == report["noisy_num_scans"] == len(testing)
    assert report["num_fluid_scans"] == with_fluid and report["num_normal_scans"] == len(testing) - with_fluid
    assert report["dice"] > 0.3  # it learned: the trained network was rebuilt and loaded, not a default one
    assert report["jaccard"] == pytest.approx(report["dice"] / (2 - report["dice"]), abs=1e-6)  # pooled: J = D/(2-D)
    assert report["noise_sigma"] == 0.2 and report["section"] == "testing"
    assert report["image_size"] == 48 and report["geometry"] == "resize"
    rows = list(csv.DictReader(open(out / "per_scan.csv")))
    assert len(rows) == len(testing)
    tp = sum(int(r["true_positive_pixels"]) for r in rows)
    pred, true = (sum(int(r[k]) for r in rows) for k in ("fluid_pixels_predicted", "fluid_pixels_true"))
    assert report["dice"] == pytest.approx(2 * tp / (pred + true), abs=1e-6)  # the table adds up to the summary
    # the per-scan means over the scans with fluid and the false fluid rate over those without, from the same table
    fluid = [r for r in rows if int(r["fluid_pixels_true"]) > 0]
    normal = [r for r in rows if int(r["fluid_pixels_true"]) == 0]
    assert len(fluid) == with_fluid > 0 and len(normal) > 0
    assert report["dice_fluid_scans"] == pytest.approx(np.mean([float(r["dice"]) for r in fluid]), abs=1e-5)
    assert report["jaccard_fluid_scans"] == pytest.approx(np.mean([float(r["jaccard"]) for r in fluid]), abs=1e-5)
    assert report["false_fluid_rate"] == pytest.approx(np.mean([int(r["false_fluid"]) for r in normal]))
    assert all(r["dice"] == r["jaccard"] == "" for r in normal) and all(r["false_fluid"] == "" for r in fluid)
    noisy = list(csv.DictReader(open(out / "noisy_per_scan.csv")))  # the prefix of the noisy report
    assert len(noisy) == len(testing)
    counts = ("true_positive_pixels", "fluid_pixels_predicted", "fluid_pixels_true")
    tp, pred, true = (sum(int(r[k]) for r in noisy) for k in counts)
    assert report["noisy_dice"] == pytest.approx(2 * tp / (pred + true), abs=1e-6)
    assert len(list((out / "overlays").glob("*.png"))) == len(testing)
    assert len(list((out / "noisy" / "overlays").glob("*.png"))) == len(testing)


def test_fluid_types_train_evaluate_and_infer_end_to_end(tmp_path, capsys):
    """A datalist of typed masks (1 IRF, 2 SRF, 3 PED) trains the three-type network with no flag; evaluation
    reports RETOUCH's measures per type and inference writes label maps; ``fluid_classes ["fluid"]`` trains the
    paper's one class on the same masks."""
    from custom_components.oct.synthetic import synthesize_oct_dataset

    data = tmp_path / "data"
    synthesize_oct_dataset(data, count=30, seed=3, image_size=(32, 32), typed_masks=True)
    root, paths = tmp_path / "typed", {"dataset_dir": str(data), "num_workers": 0}
    tiny = {"image_size": 32, "filters": NARROW, "batch_size": 8, "seed": 0, "max_epochs": 1}
    _workflow(["train.json"], "train", bundle_root=str(root), **paths, **tiny)
    assert "fluid classes IRF, SRF, PED: read from 24 masks" in capsys.readouterr().out  # the bundle's log says which
    recipe = json.loads((root / "models" / "model.recipe.json").read_text())["settings"]
    assert recipe["fluid_classes"] == ["IRF", "SRF", "PED"]
    assert torch.load(root / "models" / "model.pt", weights_only=True)["head.weight"].shape[0] == 3

    out = tmp_path / "eval"
    _workflow(["train.json", "evaluate.json"], "train", bundle_root=str(root), **paths, output_dir=str(out))
    report = json.loads((out / "metrics.json").read_text())
    testing = json.loads((data / "datalist.json").read_text())["testing"]
    for fluid, value in (("IRF", 1), ("SRF", 2), ("PED", 3)):
        shown = sum(bool((np.asarray(Image.open(data / e["label"])) == value).any()) for e in testing)
        assert report[f"num_scans_{fluid}"] == shown
        assert f"dice_{fluid}" in report and report[f"abs_area_difference_{fluid}"] >= 0
    rows = list(csv.DictReader(open(out / "per_scan.csv")))
    assert len(rows) == len(testing) and "PED_pixels_true" in rows[0]

    inferred = tmp_path / "infer"
    _workflow(["inference.json"], "infer", bundle_root=str(root), **paths, output_dir=str(inferred))
    masks = sorted((inferred / "masks").glob("*.png"))
    assert len(masks) == len(testing)
    assert set().union(*(np.unique(np.asarray(Image.open(m))).tolist() for m in masks)) <= {0, 1, 2, 3}

    binary = tmp_path / "binary"
    _workflow(["train.json"], "train", bundle_root=str(binary), **paths, **tiny, fluid_classes=["fluid"])
    assert json.loads((binary / "models" / "model.recipe.json").read_text())["settings"]["fluid_classes"] == ["fluid"]


def _copy_test_set(trained, folder: Path, size=None) -> None:
    """The test scans and masks, resized to ``size`` (H, W) or as they are, under a datalist of their own (with the
    original training list, which a train + evaluate config still expects)."""
    data = trained["root"] / "data"
    original = json.loads((data / "datalist.json").read_text())
    training = [{k: str(data / v) for k, v in e.items()} for e in original["training"]]
    entries = []
    for entry in original["testing"]:
        names = {}
        for key, resample in (("image", Image.Resampling.BILINEAR), ("label", Image.Resampling.NEAREST)):
            picture = Image.open(data / entry[key])
            if size is not None:
                picture = picture.resize((size[1], size[0]), resample)
            names[key] = f"{key}s/{Path(entry[key]).name}"
            (folder / f"{key}s").mkdir(parents=True, exist_ok=True)
            picture.save(folder / names[key])
        entries.append(names)
    (folder / "datalist.json").write_text(json.dumps({"training": training, "testing": entries}))


def test_the_same_scans_at_other_sizes_and_aspects_score_the_same(trained, tmp_path):
    """Evaluation runs the inference geometry at native resolution: a scan stored at twice the size, or stretched
    to another aspect, reaches the network as in training, so the pooled Dice barely moves."""
    scores = {}
    for name, size in (("1x", None), ("2x", (96, 96)), ("stretched", (40, 112))):
        _copy_test_set(trained, tmp_path / name, size)
        report = _evaluate(trained, tmp_path / name / "eval", datalist_file=str(tmp_path / name / "datalist.json"), save_overlays=False)
        scores[name] = report["dice"]
        rows = list(csv.DictReader(open(tmp_path / name / "eval" / "per_scan.csv")))
        stored = (48, 48) if size is None else size
        assert sum(int(r["fluid_pixels_true"]) for r in rows) > 0
        assert all(np.asarray(Image.open(r["image"])).shape == stored for r in rows)  # metrics at native size
    assert scores["1x"] > 0.3
    assert abs(scores["2x"] - scores["1x"]) < 0.05 and abs(scores["stretched"] - scores["1x"]) < 0.1, scores


def test_two_process_evaluation_reports_what_one_process_does(trained, tmp_path):
    """multi_gpu_evaluate.json under torchrun with two gloo processes on the CPU: metrics gathered across ranks are
    those of evaluate.json in one process (run here, in this process, with the same settings)."""
    paths = trained["paths"]
    one = _evaluate(trained, tmp_path / "eval1", save_overlays=False)  # what multi_gpu_evaluate.json sets
    one_rows = sorted(map(tuple, csv.reader(open(tmp_path / "eval1" / "per_scan.csv"))))
    config = "[" + ",".join(f"'{CONFIGS / c}'" for c in ("train.json", "evaluate.json", "multi_gpu_evaluate.json")) + "]"
    out = tmp_path / "eval2"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", config, "--meta_file", META, "--logging_file", LOGGING,
        "--bundle_root", paths["bundle_root"], "--dataset_dir", paths["dataset_dir"], "--num_workers", "0",
        "--device", "$torch.device('cpu')", "--dist_backend", "gloo", "--output_dir", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    two = json.loads((out / "metrics.json").read_text())
    two_rows = sorted(map(tuple, csv.reader(open(out / "per_scan.csv"))))
    assert two_rows == one_rows  # every scan once, with its own counts, whichever rank evaluated it
    assert one.keys() == two.keys()
    for key, value in one.items():
        assert two[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key


def test_two_process_training_shards_the_data_and_gathers_the_validation_metric(trained, tmp_path):
    """multi_gpu_train.json under torchrun with two gloo processes on the CPU: the ranks train on disjoint shards,
    only rank 0 writes files, and the pooled validation Dice gathered from both ranks is the one evaluate.json
    computes in one process with the same model on the same B-scans."""
    root, data = tmp_path / "bundle", trained["paths"]["dataset_dir"]
    config = "[" + ",".join(f"'{CONFIGS / c}'" for c in ("train.json", "multi_gpu_train.json")) + "]"
    settings = {**SMALL, **LEARN}  # as the module's model: enough to segment some fluid (a Dice of 0 proves little)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "--config_file", config, "--meta_file", META, "--logging_file", LOGGING,
        "--bundle_root", str(root), "--dataset_dir", data, "--device", "$torch.device('cpu')", "--dist_backend", "gloo",
        *[arg for key, value in settings.items() for arg in (f"--{key}", str(value))],
        "--finalize#0", "$logging.getLogger('oct_fluid_seg').info('rank %d of %d, shard %s, Dice %.6f, lr %.9f', "
        "dist.get_rank(), dist.get_world_size(), sorted(@train#sampler), @validate#evaluator.state.best_metric, "
        "@optimizer.defaults['lr'])",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = re.findall(r"rank (\d) of 2, shard (\[[\d, ]*\]), Dice ([\d.]+), lr ([\d.]+)", result.stdout)
    ranks = {int(rank): (set(json.loads(shard)), float(dice)) for rank, shard, dice, _ in found}
    assert sorted(ranks) == [0, 1]
    # AdamW's learning rate grows with the square root of the global batch (lr_scaling "sqrt")
    assert [float(lr) for *_, lr in found] == pytest.approx([LEARN["learning_rate"] * 2**0.5] * 2, rel=1e-6)
    datalist = json.loads((Path(data) / "datalist.json").read_text())
    assert ranks[0][0] | ranks[1][0] == set(range(len(datalist["training"])))
    assert len(ranks[0][0] & ranks[1][0]) == len(datalist["training"]) % 2  # disjoint but for odd-count padding
    assert len(list((root / "eval").glob("events.out.tfevents.*"))) == 2  # rank 0's training and validation logs
    assert sorted(p.name for p in (root / "models").iterdir()) == ["checkpoint.pt", "model.pt", "model.recipe.json"]
    assert ranks[0][1] == ranks[1][1] > 0
    out = tmp_path / "single"
    paths = {"bundle_root": str(root), "dataset_dir": data, "num_workers": 0, "eval_section": "validation"}
    _workflow(["train.json", "evaluate.json"], "train", **paths, output_dir=str(out), save_overlays=False)
    report = json.loads((out / "metrics.json").read_text())
    assert report["num_scans"] == len(datalist["validation"]) >= 2
    assert report["dice"] == pytest.approx(ranks[0][1], abs=1e-6)  # the best epoch's model, as model.pt holds


def test_inference_on_pngs_of_any_size_a_nifti_volume_and_a_corrupt_file(trained, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(render_bscan(np.random.default_rng(1), (48, 80))[0]).save(inputs / "wide.png")
    small = render_bscan(np.random.default_rng(2), (32, 32))[0]
    Image.fromarray(small).save(inputs / "small.tif")
    # the same B-scan as a 16-bit TIFF: min-max scaling makes it the same network input, hence the same mask
    Image.fromarray(small.astype(np.uint16) * 257).save(inputs / "small16.tif")
    bscans = [render_bscan(np.random.default_rng(i), (40, 36))[0] for i in range(3)]
    Image.fromarray(bscans[1]).save(inputs / "slice1.png")
    volume = np.stack(bscans, axis=-1)
    affine = np.diag([0.004, 0.012, 0.12, 1.0])
    nib.save(nib.Nifti1Image(volume, affine), inputs / "volume.nii.gz")
    # the same volume with a trailing axis of size 1, as some converters write it
    nib.save(nib.Nifti1Image(volume[..., None], affine), inputs / "volume4d.nii.gz")
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    out = tmp_path / "out"
    _workflow(["inference.json"], "infer", **trained["paths"], input_dir=str(inputs), output_dir=str(out), pixel_spacing_mm=[0.0039, 0.0117])

    wide = np.asarray(Image.open(out / "masks" / "wide_fluid.png"))
    assert wide.shape == (48, 80) and set(np.unique(wide)) <= {0, 255}  # the input's size and orientation
    small_mask = np.asarray(Image.open(out / "masks" / "small_fluid.png"))
    assert small_mask.shape == (32, 32)
    assert np.array_equal(np.asarray(Image.open(out / "masks" / "small16_fluid.png")), small_mask)
    mask_volume = nib.load(out / "masks" / "volume_fluid.nii.gz")
    assert mask_volume.shape == (40, 36, 3) and np.allclose(mask_volume.affine, affine)
    assert set(np.unique(np.asarray(mask_volume.dataobj))) <= {0, 1}
    # each B-scan of a volume is segmented (and intensity-scaled) exactly as the same B-scan given as a PNG
    slice1 = np.asarray(Image.open(out / "masks" / "slice1_fluid.png")) > 0
    assert np.array_equal(np.asarray(mask_volume.dataobj)[:, :, 1] > 0, slice1)

    rows = list(csv.DictReader(open(out / "fluid_measurements.csv")))
    by_image = {}
    for row in rows:
        by_image.setdefault(Path(row["image"]).name, []).append(row)
    assert set(by_image) == {"wide.png", "small.tif", "small16.tif", "slice1.png", "volume.nii.gz", "volume4d.nii.gz"}
    mask_4d = nib.load(out / "masks" / "volume4d_fluid.nii.gz")
    assert mask_4d.shape == (40, 36, 3, 1)  # the file's own shape, trailing axis kept
    assert np.array_equal(np.asarray(mask_4d.dataobj)[..., 0], np.asarray(mask_volume.dataobj))
    wide_row = by_image["wide.png"][0]
    assert int(wide_row["fluid_pixels"]) == int((wide > 0).sum())
    assert float(wide_row["fluid_area_mm2"]) == pytest.approx(int(wide_row["fluid_pixels"]) * 0.0039 * 0.0117, rel=1e-3)
    volume_rows = by_image["volume.nii.gz"]
    assert [r["slice"] for r in volume_rows] == ["0", "1", "2", "all"]
    voxels = int(np.asarray(mask_volume.dataobj).sum())
    assert int(volume_rows[-1]["fluid_pixels"]) == voxels
    assert float(volume_rows[-1]["fluid_volume_mm3"]) == pytest.approx(voxels * 0.004 * 0.012 * 0.12, rel=1e-3)
    assert volume_rows[0]["spacing_source"] == "nifti_header"
    skipped = (out / "skipped_inputs.csv").read_text()
    assert "broken.png" in skipped
    overlays = sorted(p.name for p in (out / "overlays").glob("*.png"))
    # one per 2D input; per volume the B-scan through the fovea (the volume's centre, B-scan 1: no fovea was given)
    # and the one with the most fluid (overlay_bscans=1), which may be the same B-scan
    assert {"wide_overlay.png", "small_overlay.png", "small16_overlay.png", "slice1_overlay.png"} <= set(overlays)
    for name in ("volume", "volume4d"):
        mine = [o for o in overlays if o.startswith(f"{name}_slice")]
        assert f"{name}_slice001_overlay.png" in mine and 1 <= len(mine) <= 2
    assert len(overlays) == 4 + sum(o.startswith("volume") for o in overlays)
    # the fluid report (fluid_report is on by default): a volume's rows in nL from its header spacing, a B-scan's row
    report = list(csv.DictReader(open(out / "fluid_report.csv")))
    total = next(r for r in report if Path(r["image"]).name == "volume.nii.gz" and r["sector"] == "total")
    assert int(total["voxels"]) == voxels and total["provenance"] == "file header"
    assert float(total["volume_nl"]) == pytest.approx(voxels * 0.004 * 0.012 * 0.12 * 1000, rel=1e-4)
    assert total["fovea_source"] == "volume centre" and total["fovea_bscan"] == "1.0"
    wide_report = next(r for r in report if Path(r["image"]).name == "wide.png")
    assert wide_report["sector"] == "total" and wide_report["provenance"] == "user override"  # pixel_spacing_mm
    assert int(wide_report["voxels"]) == int((wide > 0).sum()) and "no ETDRS grid" in wide_report["note"]
    assert (out / "reports" / "volume_fluid_report.png").is_file()
    assert (out / "reports" / "volume_fluid_report.csv").is_file()


def test_fluid_report_from_the_command_line_for_nifti_with_and_without_spacing_and_dicom(trained, tmp_path):
    """``python -m monai.bundle run`` on one set of B-scans stored three ways: a NIfTI volume with its spacing in
    the header, the same without (no qform/sform: nibabel's way of saving no spatial information) and a DICOM OCT,
    with the fovea and ``first_bscan`` given on the command line (none of these files says which B-scan end is
    inferior: without it the vertical quadrants would be ``F``/``E``). nL per ETDRS sector for the NIfTI with spacing
    and the DICOM (which also gives laterality and scan date, and gets a DICOM SEG), voxel counts and
    ``provenance=unknown`` for the bare NIfTI, never nL."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    bscans = [render_bscan(np.random.default_rng(20 + i), (40, 48))[0] for i in range(5)]
    volume = np.stack(bscans, axis=-1)  # (rows, columns, B-scans)
    spacing = (0.0039, 0.012, 0.06)
    nib.save(nib.Nifti1Image(volume, np.diag([*spacing, 1.0])), inputs / "spaced.nii.gz")
    nib.save(nib.Nifti1Image(volume, None), inputs / "bare.nii.gz")
    write_dicom_oct(inputs / "eye.dcm", np.moveaxis(volume, -1, 0), spacing, laterality="R", date="20240510")
    out = tmp_path / "out"
    _cli(
        "run", "--config_file", str(CONFIGS / "inference.json"), "--meta_file", META, "--logging_file", LOGGING,
        "--bundle_root", trained["paths"]["bundle_root"], "--input_dir", str(inputs), "--output_dir", str(out),
        "--num_workers", "0", "--fovea", "[2, 20.5]", "--first_bscan", "inferior", cwd=tmp_path,
    )  # fmt: skip
    rows = list(csv.DictReader(open(out / "fluid_report.csv")))
    report = {name: {r["sector"]: r for r in rows if Path(r["image"]).name == name} for name in ("spaced.nii.gz", "bare.nii.gz", "eye.dcm")}
    spaced, bare, dicom = report["spaced.nii.gz"], report["bare.nii.gz"], report["eye.dcm"]
    # the NIfTI files say nothing of the eye: the horizontal quadrants are named by image side
    assert list(spaced) == list(bare) == ["total", "C0", "S1", "R1", "I1", "L1", "S2", "R2", "I2", "L2"]
    sectors = ["total", "C0", "S1", "N1", "I1", "T1", "S2", "N2", "I2", "T2"]
    assert list(dicom) == sectors
    mask = np.asarray(nib.load(out / "masks" / "spaced_fluid.nii.gz").dataobj) > 0
    assert mask.any()  # the trained network finds fluid, so the numbers below are not all zero
    voxel_nl = spacing[0] * spacing[1] * spacing[2] * 1000
    for scan in (spaced, dicom):  # the same B-scans, read from NIfTI or DICOM: the same fluid and the same nL
        assert int(scan["total"]["voxels"]) == int(mask.sum())
        assert float(scan["total"]["volume_nl"]) == pytest.approx(mask.sum() * voxel_nl, rel=1e-4)
        # the en-face is 5 x 48 A-scans (0.3 x 0.58 mm) around the fovea: inside the grid, so the sectors add up
        assert sum(float(r["volume_nl"]) for k, r in scan.items() if k != "total") == pytest.approx(float(scan["total"]["volume_nl"]), rel=1e-4)
        assert {r["provenance"] for r in scan.values()} == {"file header"}
        assert {(r["fovea_bscan"], r["fovea_column"], r["fovea_source"]) for r in scan.values()} == {("2.0", "20.5", "user")}
        assert {r["first_bscan"] for r in scan.values()} == {"inferior"}
        assert scan["total"]["spacing_mm"] == "0.0039x0.012x0.06"
    assert {(r["laterality"], r["scan_date"]) for r in dicom.values()} == {("OD", "2024-05-10")}
    assert spaced["R1"]["volume_nl"] == dicom["N1"]["volume_nl"]  # OD: the examiner's right is nasal
    # the same scan without a spacing: the same voxels, no nL, no mm, and no grid (it is defined in mm)
    assert int(bare["total"]["voxels"]) == int(mask.sum())
    assert all(r["volume_nl"] == "" and r["area_mm2"] == "" and r["provenance"] == "unknown" for r in bare.values())
    assert all("no ETDRS grid" in r["note"] for k, r in bare.items() if k != "total")
    for name in ("spaced", "bare", "eye"):
        png = Image.open(out / "reports" / f"{name}_fluid_report.png")
        assert png.format == "PNG" and png.size[0] > 600 and png.size[1] > 300
        assert len(list(csv.DictReader(open(out / "reports" / f"{name}_fluid_report.csv")))) == 10
        assert (out / "overlays" / f"{name}_slice002_overlay.png").is_file()  # the B-scan through the given fovea
    bare_mask = nib.load(out / "masks" / "bare_fluid.nii.gz")
    assert int(bare_mask.header["sform_code"]) == 0 and int(bare_mask.header["qform_code"]) == 0  # still unknown
    dicom_mask = nib.load(out / "masks" / "eye_fluid.nii.gz")  # a DICOM's mask as NIfTI with the true voxel size
    assert np.array_equal(np.asarray(dicom_mask.dataobj) > 0, mask)
    assert dicom_mask.header.get_zooms() == pytest.approx(spacing)
    if importlib.util.find_spec("highdicom") is not None:
        import highdicom as hd
        import pydicom

        seg = hd.seg.segread(str(out / "dicom_seg" / "eye_fluid_seg.dcm"))
        source = pydicom.dcmread(inputs / "eye.dcm")
        assert seg.Modality == "SEG" and seg.StudyInstanceUID == source.StudyInstanceUID
        frames = seg.get_pixels_by_source_frame(source_sop_instance_uid=source.SOPInstanceUID, source_frame_numbers=[1, 2, 3, 4, 5])
        assert np.array_equal(np.moveaxis(frames[..., 0], 0, -1) > 0, mask)  # frame k of the SEG is B-scan k


def test_every_vendor_format_written_here_runs_through_inference_to_a_fluid_report(trained, tmp_path):
    """One folder holding the same three B-scans as a Heidelberg VOL, a Heidelberg XML export, a Topcon FDA and FDS,
    a DICOM OCT, and a Zeiss Cirrus IMG cube (``tests/oct_files.py``): one ``inference.json`` run gives each its
    report with the spacing its file holds (nL, ``file header``); the Zeiss cube, which holds none, gets voxel counts
    and ``provenance=unknown``; a truncated VOL is skipped and reported, costing only itself. The Heidelberg files
    give the B-scans' positions, so their sectors are S/I; the others say nothing of it: F/E (B-scan end)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    bscans = np.stack([render_bscan(np.random.default_rng(30 + i), (40, 48))[0] for i in range(3)])  # (B, rows, cols)
    write_heidelberg_vol(inputs / "heidelberg.vol", bscans)
    write_heidelberg_xml(inputs / "export", bscans)
    write_topcon(inputs / "topcon.fda", "fda", bscans.astype(np.uint16) * 257)
    write_topcon(inputs / "topcon.fds", "fds", bscans.astype(np.uint16) * 257)
    write_dicom_oct(inputs / "eye.dcm", bscans)
    cube = np.zeros((1024, 512, 2), np.uint8)
    cube[:, :, :] = np.asarray(Image.fromarray(bscans[0]).resize((512, 1024)))[:, :, None]
    (inputs / "P1_Macular Cube 512x128_01-02-2018_10-11-12_OD_sn1_cube_raw.img").write_bytes(cube.tobytes(order="F"))
    (inputs / "broken.vol").write_bytes((inputs / "heidelberg.vol").read_bytes()[:3000])
    out = tmp_path / "out"
    _workflow(["inference.json"], "infer", **trained["paths"], input_dir=str(inputs), output_dir=str(out), fovea=[1, 24])
    rows = list(csv.DictReader(open(out / "fluid_report.csv")))
    totals = {Path(r["image"]).name: r for r in rows if r["sector"] == "total"}
    named = {"heidelberg.vol", "scan.xml", "topcon.fda", "topcon.fds", "eye.dcm"}
    assert set(totals) == named | {"P1_Macular Cube 512x128_01-02-2018_10-11-12_OD_sn1_cube_raw.img"}
    for name in named:
        assert totals[name]["provenance"] == "file header" and totals[name]["volume_nl"] != "", name
        assert len([r for r in rows if Path(r["image"]).name == name]) == 10  # total and the nine ETDRS sectors
        vertical = {r["sector"] for r in rows if Path(r["image"]).name == name} & {"S1", "I1", "F1", "E1"}
        # the VOL is written inferior B-scan first, the XML superior first: both known, in file order
        assert vertical == ({"S1", "I1"} if name in ("heidelberg.vol", "scan.xml") else {"F1", "E1"}), name
    assert {r["first_bscan"] for r in rows if Path(r["image"]).name == "heidelberg.vol"} == {"inferior"}
    assert {r["first_bscan"] for r in rows if Path(r["image"]).name == "scan.xml"} == {"superior"}
    zeiss = next(r for n, r in totals.items() if n.endswith(".img"))
    assert zeiss["provenance"] == "unknown" and zeiss["volume_nl"] == "" and zeiss["laterality"] == "OD"
    (skipped,) = list(csv.DictReader(open(out / "skipped_inputs.csv")))
    assert Path(skipped["image"]).name == "broken.vol" and "cannot read it as heidelberg vol" in skipped["error"]
    assert len(list((out / "reports").glob("*_fluid_report.png"))) == 6


def test_a_volume_stored_lateral_first_gives_the_same_masks_with_bscan_axes(trained, tmp_path, capsys):
    bscans = [render_bscan(np.random.default_rng(10 + i), (40, 64))[0] for i in range(3)]
    axial_first = np.stack(bscans, axis=-1)  # (axial rows, lateral columns, B-scans): the bundle's default order
    lateral_first = axial_first.transpose(1, 0, 2)  # what many converters write
    (tmp_path / "a").mkdir()
    (tmp_path / "l").mkdir()
    affine_a, affine_l = np.diag([0.0039, 0.0117, 0.12, 1.0]), np.diag([0.0117, 0.0039, 0.12, 1.0])
    affine_l[:3, 3] = [4.0, -2.0, 1.0]
    nib.save(nib.Nifti1Image(axial_first, affine_a), tmp_path / "a" / "eye.nii.gz")
    nib.save(nib.Nifti1Image(lateral_first, affine_l), tmp_path / "l" / "eye.nii.gz")
    # the recipe knows the training scans' aspect: fake a non-square one to exercise the transposition warning
    recipe_file = trained["root"] / "models" / "model.recipe.json"
    original = recipe_file.read_text()
    recipe = json.loads(original)
    recipe["settings"]["training_aspect"] = 0.625
    try:
        recipe_file.write_text(json.dumps(recipe))
        # (the bundle's logging.conf sends the log to stdout)
        _workflow(["inference.json"], "infer", **trained["paths"], input_dir=str(tmp_path / "a"), output_dir=str(tmp_path / "out_a"))
        assert "looks transposed" not in capsys.readouterr().out
        _workflow(["inference.json"], "infer", **trained["paths"], input_dir=str(tmp_path / "l"), output_dir=str(tmp_path / "out_wrong"))
        log = capsys.readouterr().out
        assert "eye.nii.gz: its B-scans are 64 x 40" in log and "looks transposed" in log
        _workflow(["inference.json"], "infer", **trained["paths"], input_dir=str(tmp_path / "l"), output_dir=str(tmp_path / "out_l"), bscan_axes=[1, 0, 2])
        assert "looks transposed" not in capsys.readouterr().out
    finally:
        recipe_file.write_text(original)
    mask_a = nib.load(tmp_path / "out_a" / "masks" / "eye_fluid.nii.gz")
    mask_l = nib.load(tmp_path / "out_l" / "masks" / "eye_fluid.nii.gz")
    assert mask_a.shape == (40, 64, 3) and mask_l.shape == (64, 40, 3)  # each in its input's axis order
    assert np.allclose(mask_a.affine, affine_a) and np.allclose(mask_l.affine, affine_l)  # and with its affine
    assert np.asarray(mask_a.dataobj).any()
    assert np.array_equal(np.asarray(mask_l.dataobj).transpose(1, 0, 2), np.asarray(mask_a.dataobj))
    rows_a = list(csv.DictReader(open(tmp_path / "out_a" / "fluid_measurements.csv")))
    rows_l = list(csv.DictReader(open(tmp_path / "out_l" / "fluid_measurements.csv")))
    assert [r["fluid_pixels"] for r in rows_a] == [r["fluid_pixels"] for r in rows_l]
    assert rows_l[0]["spacing_mm"] == "0.0039x0.0117x0.12"  # rows, columns, B-scans, whatever the file order


def _datalist_with_broken_entries(trained, folder: Path) -> list[dict]:
    """The test section of the trained data set plus a truncated, a zero-byte and a text file named .png."""
    data = trained["root"] / "data"
    datalist = json.loads((data / "datalist.json").read_text())
    good = datalist["testing"][:4]
    png = (data / good[0]["image"]).read_bytes()
    folder.mkdir()
    (folder / "truncated.png").write_bytes(png[: len(png) // 2])
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("a text file, not an image")
    broken = [{"image": str(folder / n), "label": good[0]["label"]} for n in ("truncated.png", "empty.png", "text.png")]
    datalist["testing"] = good[:2] + broken + good[2:]
    (data / "broken.json").write_text(json.dumps(datalist))
    return good


def test_inference_over_a_datalist_skips_broken_entries_and_strict_stops(trained, tmp_path):
    good = _datalist_with_broken_entries(trained, tmp_path / "broken")
    out = tmp_path / "out"
    _workflow(["inference.json"], "infer", **trained["paths"], input_dir=str(trained["root"] / "data" / "broken.json"), output_dir=str(out))
    measured = {Path(r["image"]).name for r in csv.DictReader(open(out / "fluid_measurements.csv"))}
    assert measured == {Path(e["image"]).name for e in good}  # a result for every good scan
    reasons = {Path(r["image"]).name: r["error"] for r in csv.DictReader(open(out / "skipped_inputs.csv"))}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert reasons["truncated.png"].startswith("unreadable image") and reasons["text.png"].startswith("unreadable image")
    # the command a pipeline runs (the one plain command line of these tests, as the bundle README writes it):
    # --strict true makes the same input a failure, a non-zero exit status, before anything is segmented
    strict_out = tmp_path / "strict"
    result = _cli(
        "run", "--config_file", str(CONFIGS / "inference.json"), "--meta_file", META, "--logging_file", LOGGING,
        "--bundle_root", trained["paths"]["bundle_root"], "--input_dir", str(trained["root"] / "data" / "broken.json"),
        "--output_dir", str(strict_out), "--num_workers", "0", "--strict", "true", cwd=tmp_path, expect_ok=False,
    )  # fmt: skip
    assert "strict mode stops on any unusable input: 3 of 7" in result.stderr
    assert (strict_out / "skipped_inputs.csv").is_file() and not (strict_out / "masks").exists()


def test_checkpoints_that_do_not_fit_get_one_clear_error(trained, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(trained["root"] / "models" / "model.pt", models / "model.pt")  # without its recipe
    override = {**trained["paths"], "bundle_root": str(tmp_path), "output_dir": str(tmp_path / "out")}
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=META, logging_file=LOGGING, workflow_type="infer", **override)
    with pytest.raises(Exception) as err:
        workflow.initialize()
    mismatch = [e for e in _error_chain(err.value) if isinstance(e, CheckpointMismatchError)]
    assert mismatch, _error_chain(err.value)
    assert "encoder.0.0.conv.weight: checkpoint (8, 1, 3, 3), network (64, 1, 3, 3)" in str(mismatch[0])
    # with the recipe, asking for another geometry than the one trained is refused
    shutil.copy(trained["root"] / "models" / "model.recipe.json", models / "model.recipe.json")
    workflow = ConfigWorkflow(config_file=str(CONFIGS / "inference.json"), meta_file=META, logging_file=LOGGING, workflow_type="infer", **override, geometry="native")
    with pytest.raises(Exception) as err:
        workflow.initialize()
    assert any(isinstance(e, RecipeMismatchError) and "geometry='resize'" in str(e) for e in _error_chain(err.value))


def test_native_scale_training_and_inference(trained, tmp_path):
    """geometry=native: training on crops of the native pixels, validation and inference with a sliding window."""
    override = {**trained["override"], "bundle_root": str(tmp_path), "image_size": 32, "max_epochs": 1, "geometry": "native"}
    workflow = _workflow(["train.json"], "train", **override)
    batch = next(iter(workflow.parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape[-2:] == (32, 32)  # 32 px crops of the 48 px scans, not the scans resized
    assert workflow.parser.get_parsed_content("validate#inferer").geometry == "native"
    recipe = json.loads((tmp_path / "models" / "model.recipe.json").read_text())
    assert recipe["settings"]["geometry"] == "native" and recipe["settings"]["image_size"] == 32
    out = tmp_path / "out"
    infer = _workflow(["inference.json"], "infer", **{**trained["paths"], "bundle_root": str(tmp_path)}, output_dir=str(out))
    inferer = infer.parser.get_parsed_content("inferer")
    assert inferer.geometry == "native" and inferer.roi_size == (32, 32)
    masks = list((out / "masks").glob("*.png"))
    assert masks and all(np.asarray(Image.open(m)).shape == (48, 48) for m in masks)


def _write_pair(folder: Path, name: str, image_shape, mask):
    Image.fromarray(np.zeros(image_shape, np.uint8)).save(folder / "images" / name)
    Image.fromarray(np.asarray(mask, np.uint8)).save(folder / "masks" / name)


def test_bad_datalist_stops_training_before_the_first_epoch(tmp_path):
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    _write_pair(data, "ok.png", (32, 32), np.zeros((32, 32)))
    _write_pair(data, "size.png", (32, 32), np.zeros((30, 32)))
    _write_pair(data, "values.png", (32, 32), np.full((32, 32), 128))
    entries = [{"image": f"images/{n}", "label": f"masks/{n}"} for n in ("ok.png", "size.png", "values.png")]
    entries.append({"image": "images/missing.png", "label": "masks/ok.png"})
    (data / "datalist.json").write_text(json.dumps({"training": entries, "validation": entries[:1]}))
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), meta_file=META, logging_file=LOGGING, workflow_type="train",
        bundle_root=str(tmp_path), dataset_dir=str(data), max_epochs=1, **{k: v for k, v in SMALL.items() if k != "synthetic_count"},
    )
    with pytest.raises(Exception) as err:
        workflow.initialize()
    error = err.value
    while not isinstance(error, DatalistError) and error.__cause__ is not None:  # the config wraps it
        error = error.__cause__
    assert isinstance(error, DatalistError)
    message = str(error)
    assert "size.png: mask size (30, 32) differs from image size (32, 32)" in message
    assert "values.png: mask values must be {0, 1} or {0, 255} (binary), or within {0, 1, 2, 3} (fluid types), found 128" in message
    assert "missing.png: file not found" in message
    assert not (tmp_path / "models").exists()


def test_augmentation_on_device_switch(tmp_path):
    """``augment_on_device`` moves the random transforms after a ``ToDeviced`` (here to the CPU, the only device of
    the test machine) and keeps the data loader in the main process, as CUDA tensors cannot cross worker processes.
    Training batches carry no metadata either way (training needs none, MONAI's trainer cannot compile with batched
    metadata, and plain tensors collate faster)."""
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor
    from monai.transforms import RandAffined, ToDeviced

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    data = tmp_path / "data"
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(data), **SMALL, "num_workers": 2})
    parser.update({"augment_on_device": True, "device": "$torch.device('cpu')", "synthetic_count": 8, "batch_size": 4, "image_size": 32})
    transforms = parser.get_parsed_content("train#preprocessing").transforms
    names = [type(t).__name__ for t in transforms]
    first_random = names.index("RandScaleCropd")
    assert names[first_random - 1] == "ToDeviced"  # cached up to here (on the device), random after it
    assert isinstance(transforms[first_random - 1], ToDeviced)
    assert next(t for t in transforms if isinstance(t, RandAffined)).rand_affine.resampler.device == torch.device("cpu")
    loader = parser.get_parsed_content("train#dataloader")
    assert loader.num_workers == 0
    batch = next(iter(loader))
    assert batch["image"].shape == batch["label"].shape == (4, 1, 32, 32)
    assert not isinstance(batch["image"], MetaTensor) and not isinstance(batch["label"], MetaTensor)
    assert set(torch.unique(batch["label"]).tolist()) <= {0.0, 1.0}

    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.json"))
    default.update({"bundle_root": str(tmp_path), "dataset_dir": str(data), **SMALL, "num_workers": 2})
    assert "ToDeviced" not in [type(t).__name__ for t in default.get_parsed_content("train#preprocessing").transforms]
    assert default.get_parsed_content("train#dataloader").num_workers == 2


@pytest.mark.parametrize("network", ["unet", "attention_unet", "swin_unetr"])
def test_table1_networks_are_one_override_file_away(network, tmp_path):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "networks" / f"{network}.json")])
    # the classes set, so building the network reads no data (``fluid_classes: auto`` reads them from the masks)
    parser.update({"bundle_root": str(tmp_path), "filters": [4, 8, 16, 32, 64], "swin_feature_size": 12,
                   "device": "$torch.device('cpu')", "classes": ["fluid"]})  # fmt: skip
    net = parser.get_parsed_content("network_def")
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_table1_unet_is_the_two_convolution_unet_of_the_transunets_size(tmp_path):
    """At the paper's filters the U-Net of Table 1 is MONAI's BasicUNet (two convolutions per level, a
    full-resolution level) with about the TransUNet's parameter count, as the paper compares them."""
    from monai.bundle import ConfigParser

    counts = {}
    for name, files in (("transunet", ["train.json"]), ("unet", ["train.json", "networks/unet.json"])):
        parser = ConfigParser()
        parser.read_config([str(CONFIGS / f) for f in files])
        parser.update({"bundle_root": str(tmp_path), "device": "$torch.device('cpu')", "classes": ["fluid"]})
        net = parser.get_parsed_content("network_def")
        counts[name] = (type(net).__name__, sum(p.numel() for p in net.parameters()))
    assert counts["unet"][0] == "BasicUNet" and counts["transunet"][0] == "TransUNet"
    assert counts["unet"][1] == pytest.approx(counts["transunet"][1], rel=0.03)  # 31.1 M against 31.6 M


def test_verify_net_in_out_and_torchscript_export_rebuild_the_trained_network(trained, tmp_path):
    """The README's ``python -m monai.bundle verify_net_in_out`` / ``ckpt_export`` commands, as the functions they
    call, with the inference config and nothing about the network (the checkpoint's recipe has it)."""
    root = trained["root"]
    common = {"meta_file": META, "config_file": str(CONFIGS / "inference.json"), "bundle_root": str(root)}
    shape = {"_meta_#network_data_format#inputs#image#spatial_shape": [48, 48]}
    verify_net_in_out("network_def", **common, **shape, device="cpu")
    exported = tmp_path / "model.ts"
    ckpt_export("network_def", filepath=str(exported), ckpt_file=str(root / "models" / "model.pt"), **common)
    scripted = torch.jit.load(str(exported))
    assert scripted(torch.rand(1, 1, 48, 64)).shape == (1, 1, 48, 64)
    weights = torch.load(root / "models" / "model.pt", weights_only=True)
    torch.testing.assert_close(scripted.state_dict()["encoder.0.0.conv.weight"], weights["encoder.0.0.conv.weight"])
