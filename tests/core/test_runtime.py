# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Tests of custom_components.core.runtime (rank, device, CUDA switches, autocast dtype) and of attach_handlers."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from custom_components.core import runtime
from custom_components.core.events import attach_handlers
from custom_components.core.runtime import (
    autocast_dtype,
    is_cuda,
    is_not_rank0,
    log_best_model,
    set_cudnn_benchmark,
    to_device,
)


def test_is_cuda_reads_the_device_type():
    assert is_cuda("cuda:1") and is_cuda(torch.device("cuda"))
    assert not is_cuda("cpu") and not is_cuda(torch.device("cpu"))


@pytest.mark.parametrize("native_bf16, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_autocast_dtype_on_cuda_depends_on_native_bf16(monkeypatch, native_bf16, expected):
    calls = []

    def supported(including_emulation=True):
        calls.append(including_emulation)
        return native_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert autocast_dtype("cuda:0") == expected
    assert calls == [False]  # emulated bf16 is slower than fp16: only native support counts


def test_autocast_dtype_off_cuda_is_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda **_: pytest.fail("asked off CUDA"))
    assert autocast_dtype("cpu") == torch.bfloat16


@pytest.mark.parametrize("enabled", [True, False])
def test_set_cudnn_benchmark_moves_both_switches(enabled):
    before = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    try:
        set_cudnn_benchmark(enabled)
        assert torch.backends.cudnn.benchmark is enabled
        assert torch.backends.cudnn.deterministic is (not enabled)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def test_is_not_rank0_without_and_with_a_process_group(monkeypatch):
    assert is_not_rank0() is False  # no process group: a single process is rank 0
    monkeypatch.setattr(torch.distributed, "is_available", lambda: True)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    for rank, expected in [(0, False), (1, True), (3, True)]:
        monkeypatch.setattr(torch.distributed, "get_rank", lambda rank=rank: rank)
        assert is_not_rank0() is expected


@pytest.mark.parametrize("channels_last", [True, False])
def test_to_device_chooses_the_memory_format(channels_last):
    net = to_device(torch.nn.Conv2d(3, 8, 3), "cpu", channels_last)
    assert net.weight.device.type == "cpu"
    assert net.weight.is_contiguous(memory_format=torch.channels_last) is channels_last


def test_log_best_model_on_rank0_only(monkeypatch, caplog):
    evaluator = SimpleNamespace(state=SimpleNamespace(best_metric=0.91234, best_metric_epoch=7))
    with caplog.at_level(logging.INFO, logger="some_bundle"):
        log_best_model("some_bundle", "macro F1", evaluator, "models/model.pt", "models/checkpoint.pt")
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("some_bundle", "best model (validation macro F1 0.9123 at epoch 7): models/model.pt; full training state: "
         "models/checkpoint.pt")
    ]  # fmt: skip
    caplog.clear()
    monkeypatch.setattr(runtime, "is_not_rank0", lambda: True)
    with caplog.at_level(logging.INFO, logger="some_bundle"):
        log_best_model("some_bundle", "macro F1", evaluator, "models/model.pt", "models/checkpoint.pt")
    assert caplog.records == []


def test_attach_handlers_in_order_skipping_none():
    attached = []

    class Handler:
        def __init__(self, name):
            self.name = name

        def attach(self, engine):
            attached.append((engine, self.name))

    attach_handlers("engine", Handler("scaler"), None, Handler("loader"))
    assert attached == [("engine", "scaler"), ("engine", "loader")]
