# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Real runs of the ``bundles/oct_fluid_seg`` workflows on tiny synthetic B-scans, on the CPU.

Train (on the embedded synthetic default), evaluate (clean and noisy), inference over a folder holding PNG and
TIFF B-scans of other sizes (one 16-bit), a NIfTI volume and a corrupt file; bad datalists; the device-side
augmentation switch; the Table 1 network overrides; verify_net_in_out and ckpt_export. 32 px images and a narrow
TransUNet keep each run to seconds.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from custom_components.data.datalist import DatalistError
from custom_components.data.synthetic.oct import render_bscan

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "oct_fluid_seg"
CONFIGS = BUNDLE / "configs"
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
NARROW = [4, 8, 16, 32, 64]
SMALL = {"image_size": 32, "filters": NARROW, "batch_size": 4, "num_workers": 0, "cache_rate": 0.0, "synthetic_count": 14, "seed": 0}


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


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("oct_bundle")
    override = {"bundle_root": str(root), "dataset_dir": str(root / "data"), "max_epochs": 2, **SMALL}
    _workflow(["train.json"], "train", **override)
    return {"root": root, "override": override}


def test_train_writes_best_model_and_resumable_state(trained):
    root = trained["root"]
    assert (root / "data" / "datalist.json").is_file()
    model = torch.load(root / "models" / "model.pt", weights_only=True)
    assert "pos_embed" in model  # a bare TransUNet state_dict
    state = torch.load(root / "models" / "checkpoint.pt", weights_only=True)
    assert set(state) == {"model", "optimizer", "lr_scheduler", "trainer"}
    assert state["trainer"]["iteration"] == 2 * state["trainer"]["epoch_length"]


@pytest.mark.parametrize("override", [{"max_epochs": 7}, {"train#trainer#max_epochs": 7}])
def test_cosine_schedule_spans_the_epochs_trained(override):
    # MONAI Label and scripts/demo.py set train#trainer#max_epochs only; the schedule must follow either id
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update({"image_size": 32, "filters": NARROW, "device": "$torch.device('cpu')", **override})
    assert parser.get_parsed_content("lr_scheduler").T_max == 7


def test_resume_continues_from_the_saved_epoch(trained, tmp_path):
    import shutil

    shutil.copytree(trained["root"] / "models", tmp_path / "models")
    override = {**trained["override"], "bundle_root": str(tmp_path), "max_epochs": 3, "resume": True}
    workflow = _workflow(["train.json"], "train", **override)
    trainer = workflow.parser.get_parsed_content("train#trainer")
    epoch_length = trainer.state.epoch_length
    assert trainer.state.epoch == 3 and trainer.state.iteration == 3 * epoch_length  # one more epoch, not three
    state = torch.load(tmp_path / "models" / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["iteration"] == 3 * state["trainer"]["epoch_length"]


def test_evaluate_reports_clean_and_noisy_scores(trained, tmp_path):
    out = tmp_path / "eval"
    _workflow(["train.json", "evaluate.json"], "train", **trained["override"], output_dir=str(out), noise_sigma=0.2)
    report = json.loads((out / "metrics.json").read_text())
    n_test = len(json.loads((trained["root"] / "data" / "datalist.json").read_text())["testing"])
    assert report["num_images"] == report["noisy_num_images"] == n_test > 0
    for key in ("dice", "jaccard", "noisy_dice", "noisy_jaccard"):
        assert 0.0 <= report[key] <= 1.0
    assert report["noise_sigma"] == 0.2 and report["section"] == "testing"
    assert len(list((out / "overlays").glob("*.png"))) == n_test
    assert len(list((out / "noisy" / "overlays").glob("*.png"))) == n_test


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
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    out = tmp_path / "out"
    override = {k: v for k, v in trained["override"].items() if k not in ("max_epochs", "batch_size", "cache_rate")}
    _workflow(["inference.json"], "infer", **override, input_dir=str(inputs), output_dir=str(out), pixel_spacing_mm=[0.0039, 0.0117])

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
    assert set(by_image) == {"wide.png", "small.tif", "small16.tif", "slice1.png", "volume.nii.gz"}  # corrupt: skipped
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
    assert len(list((out / "overlays").glob("*.png"))) == 5


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
    assert "values.png: mask values must be {0, 1} or {0, 255}, found 128" in message
    assert "missing.png: file not found" in message
    assert not (tmp_path / "models").exists()


def test_augmentation_on_device_switch(tmp_path):
    """``augment_on_device`` moves the random transforms after a ``ToDeviced`` (here to the CPU, the only device of
    the test machine) and keeps the data loader in the main process, as CUDA tensors cannot cross worker processes."""
    from monai.bundle import ConfigParser
    from monai.transforms import RandAffined, ToDeviced

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    data = tmp_path / "data"
    parser.update({"bundle_root": str(tmp_path), "dataset_dir": str(data), **SMALL, "num_workers": 2})
    parser.update({"augment_on_device": True, "device": "$torch.device('cpu')", "synthetic_count": 8})
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
    parser.update({"bundle_root": str(tmp_path), "filters": [4, 8, 16, 32, 64], "swin_feature_size": 12, "device": "$torch.device('cpu')"})
    net = parser.get_parsed_content("network_def")
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_verify_net_in_out_and_torchscript_export(trained, tmp_path):
    root = trained["root"]
    common = ["--meta_file", META, "--config_file", str(CONFIGS / "inference.json"), "--bundle_root", str(root)]
    narrow = ["--filters", json.dumps(NARROW), "--image_size", "32"]
    shape = ["--_meta_#network_data_format#inputs#image#spatial_shape", "[32, 32]"]
    _cli("verify_net_in_out", "network_def", *common, *narrow, *shape, "--device", "cpu", cwd=tmp_path)
    exported = tmp_path / "model.ts"
    _cli("ckpt_export", "network_def", "--filepath", str(exported), "--ckpt_file", str(root / "models" / "model.pt"), *common, *narrow, cwd=tmp_path)
    scripted = torch.jit.load(str(exported))
    assert scripted(torch.rand(1, 1, 32, 64)).shape == (1, 1, 32, 64)
