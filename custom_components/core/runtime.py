# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The process a bundle runs in: its rank, its device and what that device is fast at.

A config names these (``"amp_dtype": "$core.autocast_dtype(@device)"``) instead of spelling the logic out in
``$`` expressions, so each rule lives here once, with a test, for both bundles.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

__all__ = [
    "is_cuda",
    "autocast_dtype",
    "set_cudnn_benchmark",
    "is_not_rank0",
    "to_device",
    "log_best_model",
]


def is_cuda(device: str | torch.device) -> bool:
    """Whether ``device`` (``"cuda:0"``, ``torch.device("cpu")``, ...) is a CUDA GPU: the GPU speed-ups default to
    it."""
    return torch.device(device).type == "cuda"


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """The autocast dtype for ``device``: bfloat16, except float16 on a CUDA GPU without native bfloat16.

    bfloat16 keeps float32's range (no gradient scaling needed); a GPU that only emulates it runs it slower than
    float16, which then needs a gradient scaler (``AmpGradScaler`` turns one on for float16 only). MONAI's trainers
    autocast on CUDA only, so off CUDA the value is never used and stays bfloat16.
    """
    if is_cuda(device) and not torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.float16
    return torch.bfloat16


def set_cudnn_benchmark(enabled: bool) -> None:
    """Let cuDNN pick the fastest convolution algorithms (``enabled``) or only deterministic ones.

    The fastest algorithms may differ from run to run, so the two switches always move together: benchmarking on
    means ``torch.backends.cudnn.deterministic`` off, and the reverse.
    """
    torch.backends.cudnn.benchmark = bool(enabled)
    torch.backends.cudnn.deterministic = not enabled


def is_not_rank0() -> bool:
    """True in every process of a distributed run but the first (rank 0), which alone logs and writes files;
    False when no process group is initialised (a single-process run is rank 0)."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_rank() > 0


def to_device(network: torch.nn.Module, device: str | torch.device, channels_last: bool) -> torch.nn.Module:
    """``network`` moved to ``device``, in the channels-last memory format when ``channels_last`` (faster
    convolutions on tensor-core GPUs), in the format it has otherwise."""
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    return network.to(device, memory_format=memory_format)


def log_best_model(logger_name: str, metric: str, evaluator: Any, checkpoint: str, training_state: str) -> None:
    """Log, on rank 0 only, where a finished training run left its best model and its full training state.

    Args:
        logger_name: the bundle's logger (``"ife_multitask"``).
        metric: what the validation's key metric is, for the message (``"macro F1"``).
        evaluator: the validation evaluator (its ``state.best_metric`` and ``state.best_metric_epoch``).
        checkpoint: the best model's weights file.
        training_state: the file of the full training state a run resumes from.
    """
    if is_not_rank0():
        return
    logging.getLogger(logger_name).info(
        "best model (validation %s %.4f at epoch %d): %s; full training state: %s",
        metric, evaluator.state.best_metric, evaluator.state.best_metric_epoch, checkpoint, training_state,
    )  # fmt: skip
