# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""ONNX export of both bundles' networks with MONAI's command line, and inference configs that run the ONNX model.

Each bundle gets a tiny checkpoint with its recipe (random weights, narrow network, small image size: no training
needed to compare two runtimes), exported by the README's command, ``python -m monai.bundle onnx_export network_def``
(the two exports run as two processes at once), then:

- ``onnx.checker`` accepts the file; onnxruntime on the CPU matches PyTorch within 1e-4 at batch 1 and batch 3
  (the batch axis is dynamic; the height and width are fixed at the exported size, see the README);
- ``inference.json`` with ``onnx_file`` set gives the PyTorch run's predictions: the same class columns of
  ``predictions.csv`` for IFE (no attention maps on the ONNX path), the same masks for OCT;
- ``ckpt_export`` (TorchScript) still exports the same config.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow, ckpt_export
from PIL import Image

from custom_components.core.recipe import write_recipe
from custom_components.ife.synthetic import render_gel
from custom_components.oct.synthetic import render_bscan
from custom_components.ife.handlers import PREDICTION_COLUMNS
from custom_components.ife.classes import IFE_CLASSES
from custom_components.core.onnx import OnnxRuntimeNetwork
from custom_components.ife.networks import MultiTaskIFEResNet
from custom_components.oct.transunet import TransUNet

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"

#: the tiny networks and the recipe each checkpoint carries (what train.json would record)
IFE_RECIPE = {"image_size": 64, "channels": [8, 16, 32, 64], "stage4_row_stride": 2}
OCT_RECIPE = {
    "image_size": 48, "geometry": "resize", "filters": [4, 8, 16, 32, 64], "patch_size": 1, "embed_dim": 32,
    "training_aspect": None,
}  # fmt: skip


def _ife_network() -> torch.nn.Module:
    return MultiTaskIFEResNet(in_channels=3, shared_stages=3, attention=True, channels=IFE_RECIPE["channels"])


def _oct_network() -> torch.nn.Module:
    size = OCT_RECIPE["image_size"]
    return TransUNet(
        spatial_dims=2, in_channels=1, out_channels=1, filters=OCT_RECIPE["filters"], patch_size=1,
        embed_dim=OCT_RECIPE["embed_dim"], img_size=[size, size],
    )  # fmt: skip


SPECS = {
    "ife": {
        "bundle": BUNDLES / "ife_multitask", "recipe": IFE_RECIPE, "build": _ife_network, "channels": 3,
        "outputs": ["probabilities"], "axes": {0: "batch"},
    },
    "oct": {
        "bundle": BUNDLES / "oct_fluid_seg", "recipe": OCT_RECIPE, "build": _oct_network, "channels": 1,
        "outputs": ["logits"], "axes": {0: "batch"},
    },
}  # fmt: skip


def export_command(bundle: Path, root: Path, onnx_file: Path, channels: int, size: int, output: str) -> list[str]:
    """The README's export command: the legacy TorchScript-based exporter (``dynamo: False``, no onnxscript needed)
    with a dynamic batch axis."""
    kwargs = (
        f"{{'dynamo': False, 'opset_version': 17, 'input_names': ['image'], 'output_names': ['{output}'], "
        f"'dynamic_axes': {{'image': {{0: 'batch'}}, '{output}': {{0: 'batch'}}}}}}"
    )
    return [
        sys.executable, "-m", "monai.bundle", "onnx_export", "network_def",
        "--filepath", str(onnx_file),
        "--ckpt_file", str(root / "models" / "model.pt"),
        "--meta_file", str(bundle / "configs" / "metadata.json"),
        "--config_file", str(bundle / "configs" / "inference.json"),
        "--bundle_root", str(root),
        "--input_shape", f"[1, {channels}, {size}, {size}]",
        "--use_trace", "True",
        "--converter_kwargs", kwargs,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-weight checkpoint with its recipe per bundle, exported by two concurrent CLI processes."""
    torch.manual_seed(0)
    runs = {}
    for kind, spec in SPECS.items():
        root = tmp_path_factory.mktemp(f"onnx_{kind}")
        (root / "models").mkdir()
        net = spec["build"]()
        for module in net.modules():  # non-trivial normalisation statistics, as after training
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        torch.save(net.state_dict(), root / "models" / "model.pt")
        write_recipe(root / "models" / "model.pt", spec["recipe"], net)
        onnx_file = root / "models" / "model.onnx"
        cmd = export_command(
            spec["bundle"], root, onnx_file, spec["channels"], spec["recipe"]["image_size"], spec["outputs"][0]
        )
        process = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs[kind] = {"root": root, "onnx": onnx_file, "net": net.eval(), "process": process}
    for kind, run in runs.items():
        output, _ = run.pop("process").communicate(timeout=300)
        assert run["onnx"].is_file(), f"onnx_export of {kind} failed:\n{output[-3000:]}"
    return runs


@pytest.mark.parametrize("kind", ["ife", "oct"])
def test_cli_export_is_valid_onnx_with_a_dynamic_batch_matching_pytorch(exported, kind):
    run, spec = exported[kind], SPECS[kind]
    model = onnx.load(str(run["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    size = spec["recipe"]["image_size"]
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", spec["channels"], size, size]
    assert [o.name for o in model.graph.output] == spec["outputs"]

    ort_net = OnnxRuntimeNetwork(run["onnx"], intra_op_num_threads=1)
    for batch in (1, 3):
        x = torch.rand(batch, spec["channels"], size, size)
        with torch.no_grad():
            expected = run["net"](x)
        got = ort_net(x)
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) < 1e-4
    # the height and width are fixed at export: another size is refused by the wrapper, naming the file
    with pytest.raises(ValueError, match=r"model\.onnx.*height"):
        ort_net(torch.rand(1, spec["channels"], size + 32, size))


def _ife_gels(folder: Path) -> None:
    folder.mkdir()
    for i, name in enumerate(IFE_CLASSES[:4]):
        Image.fromarray(render_gel(np.random.default_rng(i), name, (90, 120))).save(folder / f"gel_{i}.png")


def _infer(kind: str, run: dict, inputs: Path, out: Path, **override) -> None:
    bundle = SPECS[kind]["bundle"]
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer", bundle_root=str(run["root"]), input_dir=str(inputs), output_dir=str(out),
        num_workers=0, **override,
    )  # fmt: skip
    workflow.initialize()
    assert workflow.check_properties() == []
    workflow.run()
    workflow.finalize()


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ife_inference_with_onnx_file_gives_the_pytorch_predictions(exported, tmp_path):
    run = exported["ife"]
    _ife_gels(tmp_path / "in")
    _infer("ife", run, tmp_path / "in", tmp_path / "torch")
    _infer("ife", run, tmp_path / "in", tmp_path / "onnx", onnx_file=str(run["onnx"]), onnx_threads=1)

    torch_rows, onnx_rows = _rows(tmp_path / "torch" / "predictions.csv"), _rows(tmp_path / "onnx" / "predictions.csv")
    assert len(onnx_rows) == len(torch_rows) == 4
    class_columns = ["image", "label", "prediction", "severe_prediction", "mild_prediction"]
    for t, o in zip(torch_rows, onnx_rows):
        assert {c: o[c] for c in class_columns} == {c: t[c] for c in class_columns}
        for column in [c for c in PREDICTION_COLUMNS if c == "probability" or c.startswith("p_")]:
            assert abs(float(o[column]) - float(t[column])) <= 2e-6  # 6 decimals in the CSV
        # the ONNX model has no attention maps: the peak rows stay empty
        assert o["severe_attention_peak_row"] == o["mild_attention_peak_row"] == ""
    assert (tmp_path / "torch" / "attention").is_dir() and (tmp_path / "torch" / "attention_profiles.jsonl").is_file()
    assert not (tmp_path / "onnx" / "attention").exists()
    assert not (tmp_path / "onnx" / "attention_profiles.jsonl").exists()


def test_oct_inference_with_onnx_file_gives_the_pytorch_masks(exported, tmp_path):
    run = exported["oct"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, size in enumerate([(48, 48), (40, 64), (64, 56)]):  # resized to the 48 px network input and back
        Image.fromarray(render_bscan(np.random.default_rng(i), size)[0]).save(inputs / f"bscan_{i}.png")
    _infer("oct", run, inputs, tmp_path / "torch")
    _infer("oct", run, inputs, tmp_path / "onnx", onnx_file=str(run["onnx"]), onnx_threads=1)

    masks = sorted(p.name for p in (tmp_path / "torch" / "masks").iterdir())
    assert len(masks) == 3 and masks == sorted(p.name for p in (tmp_path / "onnx" / "masks").iterdir())
    for name in masks:
        expected = np.asarray(Image.open(tmp_path / "torch" / "masks" / name)) > 0
        got = np.asarray(Image.open(tmp_path / "onnx" / "masks" / name)) > 0
        # a pixel whose logit is within float rounding of the 0.5 threshold may flip: allow 0.1 % of them
        assert np.mean(expected != got) <= 1e-3, name


def test_onnx_file_that_is_missing_is_named(exported, tmp_path):
    run = exported["oct"]
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(render_bscan(np.random.default_rng(0), (48, 48))[0]).save(inputs / "bscan.png")
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(Exception) as info:
        _infer("oct", run, inputs, tmp_path / "out", onnx_file=str(missing))
    messages, error = [], info.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__
    assert any(str(missing) in m for m in messages)


@pytest.mark.parametrize("kind", ["ife", "oct"])
def test_torchscript_export_of_the_same_config_still_works(exported, kind, tmp_path):
    run, spec = exported[kind], SPECS[kind]
    bundle = spec["bundle"]
    ckpt_export(
        "network_def", filepath=str(tmp_path / "model.ts"), ckpt_file=str(run["root"] / "models" / "model.pt"),
        meta_file=str(bundle / "configs" / "metadata.json"), config_file=str(bundle / "configs" / "inference.json"),
        bundle_root=str(run["root"]),
    )  # fmt: skip
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    size = spec["recipe"]["image_size"]
    x = torch.rand(2, spec["channels"], size, size)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), run["net"](x), atol=1e-5, rtol=1e-4)
