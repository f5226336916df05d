# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Run an exported ONNX model with onnxruntime where a bundle config expects a PyTorch network.

The bundles export their networks with MONAI's own command (``python -m monai.bundle onnx_export network_def ...``,
see each bundle's README); :class:`OnnxRuntimeNetwork` loads such a file into an ``onnxruntime.InferenceSession`` and
behaves like the network it came from: a ``torch.nn.Module`` that takes a (B, C, H, W) tensor and returns torch
tensors on the input's device, so an evaluator, an inferer (``SimpleInferer``, ``BScanInferer``) and the
postprocessing run unchanged. :func:`time_onnx_vs_torch` compares the speed and the outputs of the two.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils import optional_import
from torch import nn

ort, _has_ort = optional_import("onnxruntime")

__all__ = ["OnnxRuntimeNetwork", "time_onnx_vs_torch"]

logger = logging.getLogger(__name__)

#: ONNX tensor element types (as onnxruntime names them) that the wrapper feeds, and their numpy types
_ORT_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX model run by onnxruntime, callable like the PyTorch network it was exported from.

    The model must have one floating-point input of rank 4, (B, C, H, W); its declared sizes (fixed or symbolic,
    e.g. a dynamic batch) are checked against every input. Outputs come back as torch tensors on the input's
    device: one tensor for a single-output model, a tuple for several, or a dict when ``output_keys`` names them
    (e.g. ``["probabilities"]`` where the config's postprocessing reads ``pred["probabilities"]``). A
    :class:`~monai.data.MetaTensor` input gives MetaTensor outputs carrying its metadata, as a PyTorch network does.

    onnxruntime runs on the CPU unless ``device`` is a CUDA device and the installed onnxruntime has the
    ``CUDAExecutionProvider`` (the ``onnxruntime-gpu`` package; the pinned ``onnxruntime`` is CPU-only); inputs on
    another device are copied to the host and the outputs copied back. The module has no parameters: ``.to()``,
    ``.eval()`` and ``torch.no_grad()`` change nothing; a pickled or deep-copied module loads the file again.

    Args:
        onnx_file: path of the ``.onnx`` file.
        device: the device the config runs on: a CUDA device selects the CUDAExecutionProvider when available
            (else the CPU, with a warning); None or a CPU device selects the CPU.
        intra_op_num_threads: onnxruntime's intra-op threads; 0 (default) lets onnxruntime choose (one per
            physical core).
        inter_op_num_threads: onnxruntime's inter-op threads (0: onnxruntime's default).
        output_keys: names for the model's outputs, in the model's output order: the call then returns
            ``{key: tensor}``. Their number must match the model's outputs. None returns a tensor (one output) or
            a tuple (several).
        output_transform: applied to what the call would return otherwise (e.g.
            :func:`~custom_components.ife.classes.heads_from_probabilities`, which turns the exported IFE network's
            (B, 9) probabilities into the dict of head outputs the IFE inference config reads); None: no change.

    Shapes:
        input: (B, C, H, W) with C (and H, W, B where fixed) as the model declares them.
        output: the model's outputs, e.g. (B, 9) probabilities (IFE) or (B, 1, H, W) logits (OCT).

    Raises:
        FileNotFoundError: when ``onnx_file`` does not exist.
        ValueError: when ``onnx_file`` is not a loadable ONNX model, does not have exactly one rank-4 floating-point
            input, or ``output_keys`` does not match its outputs (every message names the file); on bad thread
            counts or a non-callable ``output_transform``; when called, on an input whose rank, channels or fixed
            sizes differ from the model's declared input (naming the file).
        ImportError: when onnxruntime is not installed.

    Example::

        net = OnnxRuntimeNetwork("models/model.onnx", intra_op_num_threads=2, output_keys=["probabilities"])
        probs = net(torch.rand(4, 3, 224, 224))["probabilities"]  # (4, 9), an IFE export
        heads = OnnxRuntimeNetwork("models/model.onnx", output_transform=heads_from_probabilities)(images)
        # {"probabilities", "severe_logits", "mild_logits"}: what the IFE inference config runs
    """

    def __init__(
        self,
        onnx_file: str | os.PathLike,
        device: str | torch.device | None = None,
        intra_op_num_threads: int = 0,
        inter_op_num_threads: int = 0,
        output_keys: Sequence[str] | None = None,
        output_transform: Callable[[Any], Any] | None = None,
    ) -> None:
        super().__init__()
        if not _has_ort:
            raise ImportError("OnnxRuntimeNetwork needs onnxruntime (pip install -r requirements.txt).")
        if onnx_file is None or not isinstance(onnx_file, (str, os.PathLike)):
            raise ValueError(f"onnx_file must be the path of an .onnx file, got {onnx_file!r}.")
        self.onnx_file = os.fspath(onnx_file)
        self._init_args = (
            self.onnx_file, device, intra_op_num_threads, inter_op_num_threads, output_keys, output_transform
        )
        if output_transform is not None and not callable(output_transform):
            raise ValueError(f"output_transform must be callable or None, got {output_transform!r}.")
        self.output_transform = output_transform
        if not os.path.isfile(self.onnx_file):
            raise FileNotFoundError(f"ONNX model not found: {self.onnx_file}.")
        threads = {"intra_op_num_threads": intra_op_num_threads, "inter_op_num_threads": inter_op_num_threads}
        for name, value in threads.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer (0: onnxruntime's default), got {value!r}.")
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_num_threads
        options.inter_op_num_threads = inter_op_num_threads
        self.providers = self._providers(device)
        try:
            self.session = ort.InferenceSession(self.onnx_file, sess_options=options, providers=self.providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{self.onnx_file} is not a loadable ONNX model: {err}") from err

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(
                f"{self.onnx_file}: expected a model with one input (B, C, H, W), got {len(inputs)} inputs "
                f"({', '.join(i.name for i in inputs)})."
            )
        self.input_name = inputs[0].name
        self.input_shape: tuple[int | str | None, ...] = tuple(inputs[0].shape)
        if len(self.input_shape) != 4:
            raise ValueError(
                f"{self.onnx_file}: expected a rank-4 (B, C, H, W) input, the model declares {inputs[0].name!r} as "
                f"{list(self.input_shape)}."
            )
        if inputs[0].type not in _ORT_FLOAT_TYPES:
            raise ValueError(f"{self.onnx_file}: expected a floating-point input, the model declares {inputs[0].type}.")
        self.input_dtype = _ORT_FLOAT_TYPES[inputs[0].type]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_keys = None if output_keys is None else [str(k) for k in output_keys]
        if self.output_keys is not None and len(self.output_keys) != len(self.output_names):
            raise ValueError(
                f"{self.onnx_file}: output_keys {self.output_keys} name {len(self.output_keys)} outputs, the model has "
                f"{len(self.output_names)} ({', '.join(self.output_names)})."
            )

    @staticmethod
    def _providers(device: str | torch.device | None) -> list:
        device = torch.device(device) if device is not None else torch.device("cpu")
        if device.type == "cuda":
            if "CUDAExecutionProvider" in ort.get_available_providers():
                # the GPU the config runs on (cuda:1 is not onnxruntime's default GPU 0)
                return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
            logger.warning(
                "OnnxRuntimeNetwork: device %s asked for, but this onnxruntime has no CUDAExecutionProvider (install "
                "onnxruntime-gpu); running on the CPU.", device,
            )
        return ["CPUExecutionProvider"]

    def extra_repr(self) -> str:
        return f"onnx_file={self.onnx_file!r}, input={list(self.input_shape)}, providers={self.providers}"

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{self.onnx_file}: expected a torch tensor (B, C, H, W), got {type(x).__name__}.")
        if x.ndim != len(self.input_shape):
            raise ValueError(
                f"{self.onnx_file}: expected a (B, C, H, W) input matching {list(self.input_shape)}, got shape "
                f"{tuple(x.shape)}."
            )
        for axis, (want, got) in enumerate(zip(self.input_shape, x.shape)):
            if isinstance(want, int) and want > 0 and want != got:
                what = ("batch size", "channels", "height", "width")[axis]
                raise ValueError(
                    f"{self.onnx_file}: the model's input has {what} {want} ({list(self.input_shape)}), got shape "
                    f"{tuple(x.shape)}" + (
                        "; the height and width are fixed at export: resize to them or export at this size."
                        if axis >= 2 else "."
                    )
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]:
        """
        Args:
            x: (B, C, H, W) images (a MetaTensor too), any float dtype and device.

        Returns:
            the model's output(s) as float tensors on ``x``'s device: a tensor, a tuple, or a dict by
            ``output_keys``, then through ``output_transform`` if given.

        Raises:
            ValueError: on an input whose rank, channels or fixed sizes differ from the model's input.
            RuntimeError: when onnxruntime fails on the input (naming the file and the shape).
        """
        self._check_input(x)
        plain = x.as_tensor() if isinstance(x, MetaTensor) else x
        array = np.ascontiguousarray(plain.detach().cpu().numpy(), dtype=self.input_dtype)
        try:
            results = self.session.run(None, {self.input_name: array})
        except Exception as err:  # onnxruntime's own exception types: say which model and input failed
            raise RuntimeError(
                f"{self.onnx_file}: onnxruntime failed on an input of shape {tuple(x.shape)} (the model declares "
                f"{list(self.input_shape)}; a size the export did not trace may be declared but unsupported): {err}"
            ) from err
        outputs = []
        for value in results:
            out = torch.from_numpy(np.asarray(value)).to(x.device)
            if isinstance(x, MetaTensor):
                out = MetaTensor(out)
                out.copy_meta_from(x)
            outputs.append(out)
        if self.output_keys is not None:
            result: Any = dict(zip(self.output_keys, outputs))
        else:
            result = outputs[0] if len(outputs) == 1 else tuple(outputs)
        return result if self.output_transform is None else self.output_transform(result)

    def __reduce__(self) -> Any:
        # an onnxruntime session cannot be pickled or deep-copied: a copy loads the file again
        return (type(self), self._init_args)


def _first_tensor(out: Any) -> torch.Tensor:
    """The first tensor of a network's output (a tensor, a tuple/list or a dict)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        return _first_tensor(next(iter(out.values())))
    if isinstance(out, (tuple, list)) and out:
        return _first_tensor(out[0])
    raise ValueError(f"cannot find a tensor in the network's output ({type(out).__name__}).")


def time_onnx_vs_torch(
    network: nn.Module,
    onnx_path: str | os.PathLike | OnnxRuntimeNetwork,
    example: torch.Tensor,
    steps: int = 10,
    warmup: int = 2,
    num_threads: int | None = None,
) -> dict[str, float]:
    """CPU inference speed of a PyTorch network and of its ONNX export under onnxruntime, and their difference.

    Both run ``example`` ``warmup`` times untimed, then ``steps`` times timed (``torch.no_grad``, ``network`` in eval
    mode, on the CPU). The outputs compared are the first tensor of each (e.g. the probabilities, or the logits).

    Args:
        network: the PyTorch network, with the weights the ONNX file was exported from.
        onnx_path: the ``.onnx`` file, or an :class:`OnnxRuntimeNetwork` (its own thread settings are kept).
        example: (B, C, H, W) input.
        steps: timed forward passes of each (>= 1).
        warmup: untimed passes before timing (>= 0).
        num_threads: when given, ``torch.set_num_threads(num_threads)`` for the PyTorch timing (restored after)
            and onnxruntime's ``intra_op_num_threads`` for a session built here.

    Returns:
        ``{"torch_images_per_s", "onnx_images_per_s", "speedup" (onnx / torch), "max_abs_diff", "batch", "steps"}``.

    Raises:
        ValueError: when ``steps < 1`` or ``warmup < 0``; as :class:`OnnxRuntimeNetwork` for a bad file or input.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}.")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be a non-negative integer, got {warmup!r}.")
    onnx_net = (
        onnx_path
        if isinstance(onnx_path, OnnxRuntimeNetwork)
        else OnnxRuntimeNetwork(onnx_path, intra_op_num_threads=num_threads or 0)
    )
    example = example.detach().cpu().float()
    network = network.cpu().eval()
    previous_threads = torch.get_num_threads()

    def timed(fn) -> tuple[float, torch.Tensor]:
        out = None
        for _ in range(warmup):
            fn(example)
        start = time.perf_counter()
        for _ in range(steps):
            out = fn(example)
        return time.perf_counter() - start, _first_tensor(out)

    try:
        if num_threads:
            torch.set_num_threads(num_threads)
        with torch.no_grad():
            torch_s, torch_out = timed(network)
            onnx_s, onnx_out = timed(onnx_net)
    finally:
        torch.set_num_threads(previous_threads)
    images = steps * example.shape[0]
    return {
        "torch_images_per_s": images / torch_s,
        "onnx_images_per_s": images / onnx_s,
        "speedup": torch_s / onnx_s,
        "max_abs_diff": float((torch_out.float() - onnx_out.float()).abs().max()),
        "batch": int(example.shape[0]),
        "steps": steps,
    }
