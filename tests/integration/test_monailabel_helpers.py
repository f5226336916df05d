"""Unit tests of the MONAI Label app's pure helpers (apps/monailabel/lib): request checks, label parsing, answers.

The server itself is exercised over HTTP in tests/integration/test_monailabel_app.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

APP_DIR = Path(__file__).resolve().parents[2] / "apps" / "monailabel"
sys.path.insert(0, str(APP_DIR))  # the app's own imports are "lib.*", as when MONAI Label loads it

from lib.infers.ife_multitask import ife_result, requested_weights  # noqa: E402
from lib.infers.oct_fluid_seg import fluid_labels, fluid_mask, fluid_result  # noqa: E402
from lib.trainers.bundle_task import fraction, non_negative_int, positive_int  # noqa: E402
from lib.trainers.oct_fluid_seg import ClassTransferLoader, fine_tuning_classes  # noqa: E402
from lib.validation import check_fluid_mask, check_identifier, parse_class_label, read_image_size  # noqa: E402

from custom_components.ife.classes import IFE_CLASSES  # noqa: E402


@pytest.mark.parametrize("value", ["scan_01", "gel 7", "a.b"])
def test_plain_ids_pass(value):
    assert check_identifier(value) == value


@pytest.mark.parametrize(
    "value, words",
    [
        ("../oct_000", "not a datastore id"),
        ("a/b", "not a datastore id"),
        ("a\\b", "not a datastore id"),
        ("..", "not a datastore id"),
        ("/etc/hostname", "absolute path"),
        ("C:secret", "absolute path"),
        ("", "non-empty string"),
        (None, "non-empty string"),
    ],
)
def test_path_like_ids_are_refused(value, words):
    with pytest.raises(ValueError, match=words):
        check_identifier(value)


def test_read_image_size_is_rows_first_and_names_bad_files(tmp_path):
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(tmp_path / "x.png")
    assert read_image_size(str(tmp_path / "x.png")) == (20, 30)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="upload is not a readable 2D image"):
        read_image_size(str(tmp_path / "bad.png"), "upload")


def test_fluid_mask_checks(tmp_path):
    path = tmp_path / "m.png"
    block = np.ones((4, 4), np.uint8)  # masks of 8 x 8 pixels, the smallest image the screening accepts
    Image.fromarray(np.kron(np.array([[0, 255], [255, 0]], np.uint8), block)).save(path)
    assert check_fluid_mask(str(path), (8, 8)).tolist() == np.kron([[0, 255], [255, 0]], block).tolist()
    with pytest.raises(ValueError, match="size"):
        check_fluid_mask(str(path), (8, 12))
    # a label map of the fluid types (1 IRF, 2 SRF, 3 PED), as the typed model answers it
    Image.fromarray(np.kron(np.array([[0, 1], [2, 3]], np.uint8), block)).save(path)
    assert check_fluid_mask(str(path), (8, 8)).tolist() == np.kron([[0, 1], [2, 3]], block).tolist()
    Image.fromarray(np.kron(np.array([[0, 7], [0, 0]], np.uint8), block)).save(path)
    with pytest.raises(ValueError, match=rf"mask {path}: mask values must be .* found 0, 7"):
        check_fluid_mask(str(path), (8, 8))
    Image.fromarray(np.kron(np.array([[0, 7], [1, 0]], np.uint8), block)).save(path)
    with pytest.raises(ValueError, match=r"label for 'oct_003': .*found 0, 1, 7"):
        check_fluid_mask(str(path), (8, 8), "label for 'oct_003'")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match="single-channel"):
        check_fluid_mask(str(path), (8, 8))


def test_class_label_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"label": "IgA-lambda"}))
    assert parse_class_label(str(path)) == "IgA-lambda"
    path.write_text(json.dumps({"label": "IgZ-kappa"}))
    with pytest.raises(ValueError, match="IgZ-kappa"):
        parse_class_label(str(path))
    path.write_text('["IgG-kappa"]')
    with pytest.raises(ValueError, match="JSON object"):
        parse_class_label(str(path))
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON file"):
        parse_class_label(str(path))


def test_fluid_mask_thresholds_and_restores_the_input_size():
    pred = torch.zeros(1, 4, 6)
    pred[0, 1:3, 2:4] = 1.0
    mask = fluid_mask(pred, (8, 12))  # the prediction was made at half size
    assert mask.shape == (8, 12) and set(np.unique(mask).tolist()) == {0, 255}
    assert np.count_nonzero(mask) == 4 * 4  # 2 x 2 fluid pixels, each now 2 x 2
    result = fluid_result(mask)
    assert result["fluid_area_px"] == 16 and result["fluid_fraction"] == pytest.approx(16 / 96, abs=1e-6)  # rounded to 6 places
    assert result["image_size"] == [8, 12]
    # the binary answer as it was before fluid types, key for key
    assert list(result) == ["fluid_area_px", "fluid_fraction", "image_size", "mask_values"]
    assert result["mask_values"] == {"background": 0, "fluid": 255}
    assert fluid_result(mask, fluid_labels(["fluid"])) == result
    with pytest.raises(ValueError, match="one 2D fluid map per class"):
        fluid_mask(torch.zeros(2, 4, 4), None)


def test_a_typed_prediction_is_answered_as_a_label_map_with_the_area_of_each_type():
    labels = fluid_labels(["IRF", "SRF", "PED"])
    assert labels == {"IRF": 1, "SRF": 2, "PED": 3}
    pred = torch.zeros(3, 4, 6)  # exclusive masks, as the bundle's postprocessing gives them
    pred[0, 0, :3] = 1.0  # 3 IRF pixels
    pred[1, 1:3, 4:6] = 1.0  # 4 SRF pixels
    pred[2, 3, 0] = 1.0  # 1 PED pixel
    mask = fluid_mask(pred, (8, 12), tuple(labels))  # at half size: each pixel becomes 2 x 2
    assert mask.shape == (8, 12) and mask.dtype == np.uint8
    assert {v: int(np.count_nonzero(mask == v)) for v in (0, 1, 2, 3)} == {0: 96 - 32, 1: 12, 2: 16, 3: 4}
    assert mask[0, 0] == 1 and mask[2, 8] == 2 and mask[6, 0] == 3
    result = fluid_result(mask, labels)
    assert result["fluid_area_px"] == 32 and result["fluid_fraction"] == pytest.approx(32 / 96, abs=1e-6)
    assert result["fluid_types"] == {
        "IRF": {"name": "intraretinal fluid", "area_px": 12, "fraction": 0.125},
        "SRF": {"name": "subretinal fluid", "area_px": 16, "fraction": pytest.approx(16 / 96, abs=1e-6)},
        "PED": {"name": "pigment epithelial detachment", "area_px": 4, "fraction": pytest.approx(4 / 96, abs=1e-6)},
    }
    assert result["mask_values"] == {"background": 0, "IRF": 1, "SRF": 2, "PED": 3}
    assert result["image_size"] == [8, 12]
    with pytest.raises(ValueError, match=r"one 2D fluid map per class \(3: IRF, SRF, PED\)"):
        fluid_mask(pred[:1], None, tuple(labels))
    with pytest.raises(ValueError, match="fluid classes must be"):
        fluid_labels(["IRF", "SRF"])


def test_ife_result_follows_the_negative_rule_and_sums_to_one():
    severe_logits = torch.tensor([0.0, 5.0, 0.0, 0.0])  # G
    mild_logits = torch.tensor([5.0, 0.0, 0.0])  # None -> Negative whatever the severe call
    severe, mild = torch.softmax(severe_logits, 0), torch.softmax(mild_logits, 0)
    # the fused probabilities as the network builds them: P(Negative) = P(mild None), the rest severe x mild
    probs = torch.cat([mild[:1], (severe[:, None] * mild[None, 1:]).flatten()])
    heads = {
        "probabilities": probs,
        "severe_logits": severe_logits,
        "mild_logits": mild_logits,
        "attention_severe": torch.tensor([0.1, 0.9, 0.2]),
        "attention_mild": torch.tensor([0.3, 0.4, 0.5]),
    }
    answer = ife_result(heads)
    assert answer["label"] == "Negative" and answer["label_index"] == IFE_CLASSES.index("Negative")
    assert answer["severe"]["call"] == "G" and answer["mild"]["call"] == "None"
    assert sum(answer["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert answer["attention"] == {"severe": [0.1, 0.9, 0.2], "mild": [0.3, 0.4, 0.5]}
    with pytest.raises(ValueError, match="probabilities must have shape"):
        ife_result({**heads, "probabilities": probs[:8]})


def test_ife_result_carries_the_calibrated_heads_and_the_refer_decision():
    severe_logits, mild_logits = torch.tensor([0.0, 2.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])  # IgG-kappa
    heads = {
        "severe_logits": severe_logits, "mild_logits": mild_logits,
        "attention_severe": torch.tensor([0.5]), "attention_mild": torch.tensor([0.5]),
    }  # fmt: skip
    temperatures = {"severe": 2.0, "mild": 0.5}
    severe, mild = torch.softmax(severe_logits / 2.0, 0), torch.softmax(mild_logits / 0.5, 0)
    heads["probabilities"] = torch.cat([mild[:1], (severe[:, None] * mild[None, 1:]).flatten()])  # as ForwardHeads
    confidence = float(heads["probabilities"][IFE_CLASSES.index("IgG-kappa")])
    record = {"temperatures": temperatures,
              "operating_point": {"positive_threshold": 0.5, "confidence_threshold": confidence + 0.01}}  # fmt: skip
    answer = ife_result(heads, record)
    assert answer["label"] == "IgG-kappa" and answer["calibrated"] is True
    assert answer["severe"]["probabilities"]["G"] == pytest.approx(float(severe[1]), abs=1e-6)  # tempered as well
    assert answer["mild"]["probabilities"]["kappa"] == pytest.approx(float(mild[1]), abs=1e-6)
    assert (answer["refer"], answer["refer_reason"]) == (True, "low confidence")
    assert answer["operating_point"] == record["operating_point"]
    # confident enough, but two bands at different heights: referred for the pattern
    record["operating_point"]["confidence_threshold"] = confidence - 0.01
    answer = ife_result(heads, record, band_pattern="two heavy-chain bands at different heights (G, A)")
    assert answer["refer"] and answer["refer_reason"] == "pattern outside the nine: two heavy-chain bands at different heights (G, A)"
    # no calibration record: uncalibrated, nothing referred on the probabilities
    answer = ife_result(heads)
    assert (answer["calibrated"], answer["refer"], answer["refer_reason"], answer["operating_point"]) == (False, False, "not calibrated", None)


@pytest.mark.parametrize(
    "parse, value, expected", [(positive_int, "3", 3), (non_negative_int, 0, 0), (fraction, "0.25", 0.25)]
)
def test_train_parameters(parse, value, expected):
    assert parse(value, "x") == expected


@pytest.mark.parametrize("value", [0, -1, "two", True, 1.5])
def test_bad_positive_int_names_the_parameter(value):
    with pytest.raises(ValueError, match="'batch_size'"):
        positive_int(value, "batch_size")


@pytest.mark.parametrize("value", [0, 1, -1, "a fifth", True, None])
def test_bad_fraction_names_the_parameter(value):
    with pytest.raises(ValueError, match=r"'val_split' must be in \(0, 1\)"):
        fraction(value, "val_split")


def test_training_leaves_the_validation_split_to_the_bundle(tmp_path):
    import shutil

    from lib.trainers.ife_multitask import IFEMultiTaskTrain
    from monai.bundle import ConfigParser

    bundle = tmp_path / "ife_multitask"
    shutil.copytree(APP_DIR.parents[1] / "bundles" / "ife_multitask" / "configs", bundle / "configs")
    task = IFEMultiTaskTrain(str(bundle), {})
    defaults = ConfigParser.load_config_file(str(bundle / "configs" / "train.json"))
    assert task.config()["val_split"] == defaults["val_fraction"]  # shown with the bundle's own default
    # a rare class first: a split that takes the last images for validation would never validate on it
    entries = [{"image": f"/gels/rare_{i}.png", "label": "IgA-lambda"} for i in range(2)]
    entries += [{"image": f"/gels/neg_{i}.png", "label": "Negative"} for i in range(6)]
    train, val = task._partition_datalist(entries, {"val_split": 0.25})
    assert train == entries and val is None  # MONAI Label then leaves validate#dataset#data alone
    task._request = {"val_split": "0.25"}
    overrides = task._update_overrides({"train#dataset#data": train})
    written = json.loads((Path(overrides["dataset_dir"]) / "datalist.json").read_text())
    assert written == {"training": entries} and overrides["val_fraction"] == 0.25

    # the bundle's own stratified split of that datalist: every class on both sides
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle), **overrides})
    train = parser.get_parsed_content("train#dataset#data")
    val = parser.get_parsed_content("validate#dataset#data")
    assert sorted(e["image"] for e in train + val) == sorted(e["image"] for e in entries)
    assert {e["label"] for e in val} == {e["label"] for e in train} == {"IgA-lambda", "Negative"}

    # one labelled image cannot be split, and validating on it would inflate the score that picks the checkpoint
    with pytest.raises(ValueError, match="only one labelled image .* label at least two"):
        task._partition_datalist(entries[:1], {"model": "ife_multitask"})


def _mask(path: Path, values: list[list[int]]) -> str:
    """Write an 8 x 8 mask of 4 x 4 blocks of ``values`` (2 x 2); returns its path."""
    Image.fromarray(np.kron(np.array(values, np.uint8), np.ones((4, 4), np.uint8))).save(path)
    return str(path)


def test_fine_tuning_keeps_the_checkpoint_recipe_unless_the_request_sets_it(tmp_path):
    import shutil

    from lib.trainers.oct_fluid_seg import OCTFluidSegTrain

    from custom_components.core.recipe import write_recipe

    bundle = tmp_path / "oct_fluid_seg"
    shutil.copytree(APP_DIR.parents[1] / "bundles" / "oct_fluid_seg" / "configs", bundle / "configs")
    task = OCTFluidSegTrain(str(bundle), {})
    task._request = {}
    assert task.fine_tuning_settings() == {}  # nothing trained yet: the bundle's defaults
    (bundle / "models").mkdir()
    torch.save({}, bundle / "models" / "model.pt")
    settings = {"image_size": 96, "geometry": "resize", "filters": [16, 32, 64, 128, 256], "training_aspect": 0.5,
                "fluid_classes": ["fluid"]}  # fmt: skip
    write_recipe(bundle / "models" / "model.pt", settings)
    # the network the weights need, not what train.json reads from the data: the aspect of the old training scans,
    # the classes of the old masks
    assert task.fine_tuning_settings() == {k: v for k, v in settings.items() if k not in ("training_aspect", "fluid_classes")}
    task._request = {"pretrained": False}
    assert task.fine_tuning_settings() == {}  # training from scratch starts from the bundle's own settings
    task._request = {"image_size": "64"}
    entries = [{"image": "a.png", "label": _mask(tmp_path / "a_mask.png", [[0, 255], [0, 0]])}]
    overrides = task._update_overrides({"train#dataset#data": entries})
    assert overrides["image_size"] == 64 and overrides["filters"] == settings["filters"]  # the request wins
    assert overrides["fluid_classes"] == ["fluid"]


def test_the_masks_decide_the_classes_and_a_typed_model_keeps_its_types():
    binary, typed = ("fluid",), ("IRF", "SRF", "PED")
    assert fine_tuning_classes([{0, 255}, {0}], None) == binary
    assert fine_tuning_classes([{0, 1}, {0, 1, 2}], None) == typed
    assert fine_tuning_classes([{0, 3}, {0}], binary) == typed  # typed label maps fine-tune a binary model
    assert fine_tuning_classes([{0, 255}], typed) == binary  # 255: binary masks, whatever the model
    # label maps of a typed model's answers that happen to hold IRF only (or no fluid) keep the three types
    assert fine_tuning_classes([{0, 1}, {0}], typed) == typed
    assert fine_tuning_classes([{0, 1}, {0}], None) == binary  # from scratch, the bundle's own reading
    with pytest.raises(ValueError, match="mix fluid-type values"):
        fine_tuning_classes([{0, 255}, {0, 2}], binary)


def test_typed_masks_fine_tune_a_binary_checkpoint_all_but_its_output_layer(tmp_path):
    import shutil

    from lib.trainers.oct_fluid_seg import OCTFluidSegTrain

    from custom_components.core.recipe import write_recipe
    from custom_components.oct.transunet import TransUNet

    bundle = tmp_path / "oct_fluid_seg"
    shutil.copytree(APP_DIR.parents[1] / "bundles" / "oct_fluid_seg" / "configs", bundle / "configs")
    checkpoint = bundle / "models" / "model.pt"
    checkpoint.parent.mkdir()
    widths = {"spatial_dims": 2, "in_channels": 1, "filters": [8, 16, 32, 64], "patch_size": 1, "embed_dim": 96}
    torch.manual_seed(0)
    binary = TransUNet(out_channels=1, img_size=[32, 32], **widths)
    torch.save(binary.state_dict(), checkpoint)
    write_recipe(checkpoint, {"image_size": 32, "filters": widths["filters"], "fluid_classes": ["fluid"]}, binary)
    task = OCTFluidSegTrain(str(bundle), {})
    task._request = {}
    entries = [
        {"image": "a.png", "label": _mask(tmp_path / "a.png", [[0, 1], [2, 0]])},
        {"image": "b.png", "label": _mask(tmp_path / "b.png", [[0, 0], [0, 0]])},
    ]
    # MONAI Label's loader of model.pt, as BundleTrainTask._load_checkpoint adds it
    mlabel_loader = {"_target_": "CheckpointLoader", "load_path": str(checkpoint), "load_dict": {"model": "$@network"},
                     "strict": True}  # fmt: skip
    handlers = [mlabel_loader, {"_target_": "StatsHandler"}]
    overrides = task._update_overrides({"train#dataset#data": entries, "train#handlers": handlers})
    assert overrides["fluid_classes"] == ["IRF", "SRF", "PED"]  # nothing forces the binary model's one class
    assert overrides["train#handlers"][0] == {
        "_target_": "lib.trainers.oct_fluid_seg.ClassTransferLoader",
        "load_path": str(checkpoint),
        "network": "$@network",
    }
    assert overrides["train#handlers"][1] == {"_target_": "StatsHandler"}

    # the loader: every tensor but the output layer's, the position embedding resized to a 64 px run's grid
    torch.manual_seed(1)
    typed = TransUNet(out_channels=3, img_size=[64, 64], **widths)
    assert ClassTransferLoader(str(checkpoint), typed)() == ["head.weight", "head.bias"]
    before, after = binary.state_dict(), typed.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k not in ("head.weight", "head.bias", "pos_embed"))
    assert after["pos_embed"].shape != before["pos_embed"].shape

    # the same classes as the checkpoint: MONAI Label's own strict loader stays
    handlers = [dict(mlabel_loader)]
    entries = [{"image": "a.png", "label": _mask(tmp_path / "c.png", [[0, 255], [0, 0]])}] * 2
    overrides = task._update_overrides({"train#dataset#data": entries, "train#handlers": handlers})
    assert overrides["fluid_classes"] == ["fluid"] and overrides["train#handlers"] == [mlabel_loader]


def test_the_calibration_is_read_for_the_weights_the_request_runs(tmp_path):
    """requested_weights picks the file MONAI Label's _get_network loads, so its own calibration record is read."""
    models = tmp_path / "models"
    models.mkdir()
    default = str(models / "model.pt")
    for name in ("model.pt", "model_fold1.pt"):
        (models / name).write_bytes(b"weights")
    fold = str(models / "model_fold1.pt")
    assert requested_weights(default, str(models), {"model_filename": "model_fold1.pt"}, True) == fold
    # MONAI Label fills the request with the task's config: the option list, whose first entry is taken
    assert requested_weights(default, str(models), {"model_filename": ["model_fold1.pt", "model.pt"]}, True) == fold
    assert requested_weights(default, str(models), {"model_filename": "missing.pt"}, True) == default  # ignored
    not_offered = requested_weights(default, str(models), {"model_filename": "model_fold1.pt"}, False)
    assert not_offered == default
    assert requested_weights(default, str(models), {}, True) == default
    assert requested_weights(None, str(models), None, True) is None


class _Datastore:
    """The one datastore method MONAI Label's train task calls: ``datalist()``, every image with its final label."""

    def __init__(self, entries: list[dict[str, str]]) -> None:
        self.entries = entries

    def datalist(self) -> list[dict[str, str]]:
        return [dict(e) for e in self.entries]


def _site_checkpoint(folder: Path, settings: dict) -> Path:
    """A checkpoint outside the bundle (weights are not read by the app) with a recipe of ``settings``."""
    from custom_components.core.recipe import write_recipe

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({}, folder / "model.pt")
    write_recipe(folder / "model.pt", settings)
    return folder / "model.pt"


def _ife_task(tmp_path: Path, conf: dict[str, str] | None = None):
    """An IFE train task on a copy of the bundle's configs, with a models/model.pt of other settings than any given
    checkpoint's, and a datastore of two labelled gels."""
    import shutil

    from lib.trainers.ife_multitask import IFEMultiTaskTrain

    bundle = tmp_path / "ife_multitask"
    shutil.copytree(APP_DIR.parents[1] / "bundles" / "ife_multitask" / "configs", bundle / "configs")
    _site_checkpoint(bundle / "models", {"image_size": 96, "channels": [16, 32, 64, 128]})
    entries = []
    for i, name in enumerate(("Negative", "IgG-kappa")):
        (tmp_path / f"gel_{i}.json").write_text(json.dumps({"label": name}))
        entries.append({"image": str(tmp_path / f"gel_{i}.png"), "label": str(tmp_path / f"gel_{i}.json")})
    return IFEMultiTaskTrain(str(bundle), conf or {}), _Datastore(entries)


def _bundle_overrides(task, request: dict, datastore, monkeypatch) -> dict:
    """Run the train task's request handling (MONAI Label's ``__call__`` and the app's) up to ``monai.bundle.run``,
    and return the overrides it would run the bundle with."""
    from monailabel.tasks.train.bundle import BundleTrainTask

    ran = {}
    monkeypatch.setattr(BundleTrainTask, "run_single_gpu", lambda self, req, overrides: ran.update(overrides))
    task({"device": "cpu", **request}, datastore)
    return ran


IFE_SITE = {"image_size": 64, "channels": [8, 16, 32, 64], "stage4_row_stride": 1, "lane_layout": True,
            "lane_orientation": "albumin_top"}  # fmt: skip


def test_a_given_checkpoint_is_the_bundles_pretrained_and_its_recipe_the_runs(tmp_path, monkeypatch):
    task, datastore = _ife_task(tmp_path)
    given = _site_checkpoint(tmp_path / "site", IFE_SITE)
    assert task.config()["pretrained_checkpoint"] == ""  # listed in /info; empty: the --conf default
    request = {"model": "ife_multitask", "pretrained_checkpoint": str(given), "max_epochs": 1}
    overrides = _bundle_overrides(task, request, datastore, monkeypatch)
    # one source of the starting weights: the bundle's load_pretrained, not MONAI Label's loader of models/model.pt
    assert overrides["pretrained"] == str(given)
    assert not any(h.get("_target_") == "CheckpointLoader" for h in overrides["train#handlers"])
    # the network of the given checkpoint's recipe (not models/model.pt's), the lane orientation of the bundle's gels
    assert overrides["image_size"] == 64 and overrides["channels"] == [8, 16, 32, 64]
    assert "lane_orientation" not in overrides
    assert overrides["tie_attention"] is False  # its recipe (as bundle 0.7.0 wrote it) is silent: trained untied
    # the same request settings as the recipe are fine
    overrides = _bundle_overrides(task, {**request, "image_size": "64"}, datastore, monkeypatch)
    assert overrides["image_size"] == 64 and overrides["pretrained"] == str(given)

    # without one, MONAI Label's loader of models/model.pt, as before
    overrides = _bundle_overrides(task, {"model": "ife_multitask"}, datastore, monkeypatch)
    assert "pretrained" not in overrides and overrides["image_size"] == 96
    assert [h["load_path"] for h in overrides["train#handlers"] if h.get("_target_") == "CheckpointLoader"] == [
        str(tmp_path / "ife_multitask" / "models" / "model.pt")
    ]


def test_the_conf_names_a_default_checkpoint_per_model(tmp_path, monkeypatch):
    given = _site_checkpoint(tmp_path / "site", IFE_SITE)
    task, datastore = _ife_task(tmp_path, {"ife_multitask_pretrained_checkpoint": str(given)})
    overrides = _bundle_overrides(task, {"model": "ife_multitask", "pretrained_checkpoint": ""}, datastore, monkeypatch)
    assert overrides["pretrained"] == str(given) and overrides["image_size"] == 64
    # the request's own checkpoint wins over the default
    other = _site_checkpoint(tmp_path / "other", {**IFE_SITE, "image_size": 48})
    overrides = _bundle_overrides(task, {"model": "ife_multitask", "pretrained_checkpoint": str(other)}, datastore,
                                  monkeypatch)  # fmt: skip
    assert overrides["pretrained"] == str(other) and overrides["image_size"] == 48
    # "pretrained": false trains from scratch: no checkpoint at all, the bundle's own settings
    overrides = _bundle_overrides(task, {"model": "ife_multitask", "pretrained": False}, datastore, monkeypatch)
    assert "pretrained" not in overrides and "image_size" not in overrides
    assert not any(h.get("_target_") == "CheckpointLoader" for h in overrides["train#handlers"])
    with pytest.raises(ValueError, match="'pretrained_checkpoint' .* was given with \"pretrained\": false"):
        task({"model": "ife_multitask", "pretrained": False, "pretrained_checkpoint": str(other)}, datastore)


def test_a_given_checkpoint_of_other_settings_or_no_file_is_refused_before_the_run(tmp_path, monkeypatch):
    from custom_components.core.recipe import RecipeMismatchError

    task, datastore = _ife_task(tmp_path)
    given = _site_checkpoint(tmp_path / "site", IFE_SITE)
    with pytest.raises(RecipeMismatchError) as error:  # models/model.pt would let the request's size win
        _bundle_overrides(task, {"model": "ife_multitask", "pretrained_checkpoint": str(given), "image_size": 32},
                          datastore, monkeypatch)  # fmt: skip
    assert f"cannot fine-tune from {given}" in str(error.value)
    assert "image_size: checkpoint 64, request 32" in str(error.value)

    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError, match=rf"'pretrained_checkpoint' '{missing}': no such file"):
        _bundle_overrides(task, {"model": "ife_multitask", "pretrained_checkpoint": str(missing)}, datastore,
                          monkeypatch)  # fmt: skip
    task = _ife_task(tmp_path / "conf", {"ife_multitask_pretrained_checkpoint": "missing.pt"})[0]
    with pytest.raises(FileNotFoundError, match="--conf ife_multitask_pretrained_checkpoint 'missing.pt': no such"):
        task.take_request({"model": "ife_multitask"})
    with pytest.raises(ValueError, match="must be the path of a checkpoint file, got 3"):
        task.take_request({"model": "ife_multitask", "pretrained_checkpoint": 3})


def test_a_checkpoint_the_bundle_refuses_ends_the_training_output(tmp_path, monkeypatch):
    """What the bundle's load_pretrained refuses (a recipe setting the app does not set, such as OCT's training
    aspect) reaches GET /train/ as the last line of the run's output: MONAI's RuntimeError wrapping it is too long."""
    from monailabel.tasks.train.bundle import BundleTrainTask

    from custom_components.core.recipe import RecipeMismatchError

    task, _ = _ife_task(tmp_path)

    def refuse(self, request, overrides):
        try:
            raise RecipeMismatchError("cannot fine-tune from /m.pt: its recipe differs (x: checkpoint 1, this run 2)")
        except RecipeMismatchError as err:
            raise RuntimeError("Failed to evaluate ConfigExpression: $core.load_pretrained(...)") from err

    monkeypatch.setattr(BundleTrainTask, "run_single_gpu", refuse)
    with pytest.raises(RecipeMismatchError, match=r"^ife_multitask: cannot fine-tune from /m.pt: .*this run 2\)$"):
        task.run_single_gpu({"model": "ife_multitask"}, {})
    monkeypatch.setattr(BundleTrainTask, "run_single_gpu", lambda *args: 1 / 0)  # other errors pass unchanged
    with pytest.raises(ZeroDivisionError):
        task.run_single_gpu({"model": "ife_multitask"}, {})


def test_a_given_oct_checkpoint_must_segment_the_classes_of_the_masks(tmp_path):
    import shutil

    from lib.trainers.oct_fluid_seg import OCTFluidSegTrain

    from custom_components.core.recipe import RecipeMismatchError

    bundle = tmp_path / "oct_fluid_seg"
    shutil.copytree(APP_DIR.parents[1] / "bundles" / "oct_fluid_seg" / "configs", bundle / "configs")
    task = OCTFluidSegTrain(str(bundle), {})
    narrow = {"image_size": 32, "geometry": "resize", "filters": [8, 16, 32, 64], "patch_size": 1, "embed_dim": 96,
              "training_aspect": 0.6667}  # fmt: skip
    typed = _site_checkpoint(tmp_path / "typed", {**narrow, "fluid_classes": ["IRF", "SRF", "PED"]})
    binary = _site_checkpoint(tmp_path / "binary", {**narrow, "fluid_classes": ["fluid"]})
    # label maps holding IRF alone: a typed checkpoint keeps its three types
    entries = [{"image": "a.png", "label": _mask(tmp_path / "a.png", [[0, 1], [0, 0]])}] * 2
    task.take_request({"model": "oct_fluid_seg", "pretrained_checkpoint": str(typed)})
    overrides = task._update_overrides({"train#dataset#data": list(entries), "train#handlers": []})
    assert overrides["fluid_classes"] == ["IRF", "SRF", "PED"] and overrides["pretrained"] == str(typed)
    assert overrides["image_size"] == 32 and overrides["filters"] == [8, 16, 32, 64]
    assert overrides["train#handlers"] == []  # no class-transfer loader: the bundle loads the whole network
    # a binary checkpoint and the same masks (binary by the bundle's reading of 0/1 masks) also agree
    task.take_request({"model": "oct_fluid_seg", "pretrained_checkpoint": str(binary)})
    assert task._update_overrides({"train#dataset#data": list(entries)})["fluid_classes"] == ["fluid"]
    # label maps with SRF: a binary checkpoint is refused, naming both (models/model.pt would start a fresh head)
    entries = [{"image": "b.png", "label": _mask(tmp_path / "b.png", [[0, 2], [1, 0]])}] * 2
    with pytest.raises(RecipeMismatchError, match=rf"cannot fine-tune from {binary}: it segments fluid, the saved "
                                                  "masks hold IRF, SRF, PED"):  # fmt: skip
        task._update_overrides({"train#dataset#data": list(entries)})
