# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""``OnnxRuntimeNetwork``, ``time_onnx_vs_torch`` and ``heads_from_probabilities`` on tiny in-process exports.

The bundles' command-line exports and the inference configs that run them are tested in
``tests/bundles/test_onnx_bundles.py``.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
from monai.data import MetaTensor
from torch import nn

from custom_components.ife.classes import call_from_probabilities, fuse_subtask_probabilities, heads_from_probabilities
from custom_components.core.onnx import OnnxRuntimeNetwork
from custom_components.core.onnx import time_onnx_vs_torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


class _TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y.mean(dim=(2, 3))


def _export(net: nn.Module, path, shape=(1, 3, 16, 16), outputs=("features", "pooled")) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter, as the bundles use
        torch.onnx.export(
            net.eval(), (torch.rand(shape),), str(path), dynamo=False, input_names=["image"],
            output_names=list(outputs), dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
            opset_version=17,
        )  # fmt: skip


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    net = _TwoOutputs()
    path = tmp_path_factory.mktemp("onnx") / "two.onnx"
    _export(net, path)
    return net, path


def test_outputs_match_pytorch_as_tuple_dict_and_metatensor(model):
    net, path = model
    ort_net = OnnxRuntimeNetwork(path, intra_op_num_threads=1)
    assert ort_net.input_shape == ("batch", 3, 16, 16) and ort_net.output_names == ["features", "pooled"]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
    got = ort_net(x)
    assert isinstance(got, tuple) and len(got) == 2
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    keyed = OnnxRuntimeNetwork(path, output_keys=["a", "b"])(x.double())  # any float dtype in, the model's out
    assert set(keyed) == {"a", "b"} and keyed["b"].shape == (3, 4) and keyed["b"].dtype == torch.float32
    meta = MetaTensor(x, meta={"filename_or_obj": ["x0", "x1", "x2"]})
    meta.is_batch = True
    out = ort_net(meta)[0]
    assert isinstance(out, MetaTensor) and out.is_batch and out.meta["filename_or_obj"] == ["x0", "x1", "x2"]
    transformed = OnnxRuntimeNetwork(path, output_transform=lambda outs: outs[1])(x)
    torch.testing.assert_close(transformed, expected[1], atol=1e-5, rtol=1e-5)


def test_copies_load_the_file_again(model):
    _, path = model
    ort_net = OnnxRuntimeNetwork(path, output_keys=["a", "b"])
    x = torch.rand(1, 3, 16, 16)
    for clone in (copy.deepcopy(ort_net), pickle.loads(pickle.dumps(ort_net))):
        torch.testing.assert_close(clone(x)["a"], ort_net(x)["a"])
    assert ort_net.to("cpu").eval() is ort_net and list(ort_net.parameters()) == []


def test_errors_name_the_file(model, tmp_path):
    _, path = model
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        OnnxRuntimeNetwork(tmp_path / "missing.onnx")
    not_onnx = tmp_path / "weights.onnx"
    not_onnx.write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match=r"weights\.onnx is not a loadable ONNX model"):
        OnnxRuntimeNetwork(not_onnx)
    with pytest.raises(ValueError, match=r"two\.onnx: output_keys"):
        OnnxRuntimeNetwork(path, output_keys=["only_one"])
    with pytest.raises(ValueError, match="intra_op_num_threads"):
        OnnxRuntimeNetwork(path, intra_op_num_threads=-1)
    ort_net = OnnxRuntimeNetwork(path)
    with pytest.raises(ValueError, match=r"two\.onnx: the model's input has channels 3"):
        ort_net(torch.rand(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"two\.onnx: the model's input has height 16.*fixed at export"):
        ort_net(torch.rand(1, 3, 32, 16))
    with pytest.raises(ValueError, match=r"two\.onnx: expected a \(B, C, H, W\) input"):
        ort_net(torch.rand(3, 16, 16))


def test_model_with_another_input_rank_is_refused(tmp_path):
    path = tmp_path / "flat.onnx"
    _export(nn.Linear(8, 2), path, shape=(1, 8), outputs=("out",))
    with pytest.raises(ValueError, match=r"flat\.onnx: expected a rank-4 \(B, C, H, W\) input"):
        OnnxRuntimeNetwork(path)


def test_cuda_device_without_cuda_provider_falls_back_to_the_cpu(model):
    _, path = model
    import onnxruntime

    ort_net = OnnxRuntimeNetwork(path, device="cuda:1")
    expected = [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]  # the config's GPU
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        expected = ["CPUExecutionProvider"]
    assert ort_net.providers == expected


def test_time_onnx_vs_torch_reports_speeds_and_difference(model):
    net, path = model
    threads = torch.get_num_threads()
    result = time_onnx_vs_torch(net, path, torch.rand(2, 3, 16, 16), steps=2, warmup=1, num_threads=1)
    assert result["batch"] == 2 and result["steps"] == 2
    assert result["torch_images_per_s"] > 0 and result["onnx_images_per_s"] > 0
    assert result["max_abs_diff"] < 1e-5
    assert torch.get_num_threads() == threads  # restored
    with pytest.raises(ValueError, match="steps"):
        time_onnx_vs_torch(net, path, torch.rand(1, 3, 16, 16), steps=0)


def test_heads_from_probabilities_recovers_the_head_calls():
    torch.manual_seed(0)
    severe_logits, mild_logits = torch.randn(64, 4) * 3, torch.randn(64, 3) * 3
    probs = fuse_subtask_probabilities(severe_logits.softmax(1), mild_logits.softmax(1))
    heads = heads_from_probabilities(probs)
    assert heads["probabilities"] is probs
    torch.testing.assert_close(heads["severe_logits"].softmax(1), severe_logits.softmax(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(heads["mild_logits"].softmax(1), mild_logits.softmax(1), atol=1e-5, rtol=1e-4)
    assert torch.equal(heads["severe_logits"].argmax(1), severe_logits.argmax(1))
    # the fused call is unchanged: it is still read from the probabilities
    assert torch.equal(call_from_probabilities(heads["probabilities"]), call_from_probabilities(probs))
    # no mass on any positive class: a uniform severe head, finite values
    negative = torch.zeros(1, 9)
    negative[0, 0] = 1.0
    assert torch.isfinite(heads_from_probabilities(negative)["severe_logits"]).all()
    with pytest.raises(ValueError, match=r"\(B, 9\)"):
        heads_from_probabilities(torch.rand(2, 7))


class _FixedGrid(nn.Module):
    """A learned (1, 3, 16, 16) map added to the input: another height is declared (dynamic axes) but fails."""

    def __init__(self) -> None:
        super().__init__()
        self.grid = nn.Parameter(torch.rand(1, 3, 16, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.grid


def test_onnxruntime_failure_names_the_file_and_the_shape(tmp_path):
    path = tmp_path / "grid.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            _FixedGrid().eval(), (torch.rand(1, 3, 16, 16),), str(path), dynamo=False, input_names=["image"],
            output_names=["out"], dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}, "out": {0: "b"}}, opset_version=17,
        )  # fmt: skip
    ort_net = OnnxRuntimeNetwork(path)
    assert ort_net(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)
    with pytest.raises(RuntimeError, match=r"grid\.onnx: onnxruntime failed on an input of shape \(1, 3, 32, 16\)"):
        ort_net(torch.rand(1, 3, 32, 16))
