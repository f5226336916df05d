# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
from __future__ import annotations

import math
import os
import random
import shutil

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader
from monai.transforms import Compose, RandFlipd, RandGaussianNoised

from custom_components.core.training import (
    AmpGradScaler,
    AtomicCheckpointSaver,
    GradientClipping,
    LossTermsHandler,
    RandomStates,
    TrainingStateSaver,
)
from custom_components.core.events import every_n_iterations


def _linear_problem(grad):
    """A parameter w (zeros) and an input x such that d(w . x)/dw = x = grad."""
    w = torch.nn.Parameter(torch.zeros(len(grad)))
    x = torch.tensor(grad, dtype=torch.float32)
    return w, x


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_norm": 0}, "max_norm"),
        ({"max_norm": -1.0}, "max_norm"),
        ({"max_norm": True}, "max_norm"),
        ({"max_norm": 1.0, "norm_type": 0}, "norm_type"),
    ],
)
def test_gradient_clipping_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GradientClipping(**kwargs)


def test_gradient_clipping_clips_before_step():
    w, x = _linear_problem([3.0, 4.0])  # gradient norm 5
    optimizer = torch.optim.SGD([w], lr=1.0)
    clip = GradientClipping(max_norm=1.0, optimizer=optimizer)
    clip.attach()
    (w * x).sum().backward()
    optimizer.step()
    # clipped gradient = [3, 4] / 5 (clip_grad_norm_ adds 1e-6 to the norm): w = -[0.6, 0.8]
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]), atol=1e-5, rtol=0)
    assert float(clip.last_norm) == pytest.approx(5.0)


def test_gradient_clipping_leaves_small_gradients():
    w, x = _linear_problem([0.3, 0.4])
    optimizer = torch.optim.SGD([w], lr=1.0)
    GradientClipping(max_norm=3.0, optimizer=optimizer).attach()
    (w * x).sum().backward()
    optimizer.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.3, -0.4]))


def test_gradient_clipping_sees_unscaled_gradients_with_grad_scaler():
    w, x = _linear_problem([3.0, 4.0])
    optimizer = torch.optim.SGD([w], lr=1.0)
    clip = GradientClipping(max_norm=1.0, optimizer=optimizer)
    clip.attach()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale((w * x).sum()).backward()
    assert float(w.grad.norm()) == pytest.approx(5.0 * 1024.0)  # scaled before the step
    scaler.step(optimizer)
    scaler.update()
    assert float(clip.last_norm) == pytest.approx(5.0)  # the hook ran after unscaling
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, -0.8]), atol=1e-5, rtol=0)


def test_gradient_clipping_engine_optimizer_set_after_attach():
    """SupervisedTrainer stores its optimizer after attaching handlers: the hook must be set at STARTED."""
    w, x = _linear_problem([6.0, 8.0])
    optimizer = torch.optim.SGD([w], lr=1.0)

    def step(engine, batch):
        engine.optimizer.zero_grad()
        (w * x).sum().backward()
        engine.optimizer.step()

    engine = Engine(step)
    clip = GradientClipping(max_norm=2.0)
    clip.attach(engine)
    clip.attach(engine)  # attaching twice must not clip twice or register twice
    engine.optimizer = optimizer
    engine.run([0], max_epochs=1)
    torch.testing.assert_close(w.detach(), torch.tensor([-1.2, -1.6]), atol=1e-5, rtol=0)
    assert len(clip._hooks) == 1


def test_gradient_clipping_without_optimizer_raises():
    engine = Engine(lambda e, b: None)
    GradientClipping(max_norm=1.0).attach(engine)
    with pytest.raises(ValueError, match="torch optimizer"):
        engine.run([0], max_epochs=1)
    with pytest.raises(ValueError, match="optimizer"):
        GradientClipping(max_norm=1.0).attach(None)


class _FakeLoss:
    def __init__(self, values):
        self.values = values
        self.last_terms = {}


def test_loss_terms_handler_epoch_means():
    # two iterations per epoch; a NaN is skipped, so b's mean is over one value
    values = [{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": math.nan}, {"a": 10.0, "b": 20.0}, {"a": 30.0, "b": 40.0}]
    values[2] = {name: torch.tensor(value) for name, value in values[2].items()}  # detached 0-d tensors or floats
    loss = _FakeLoss(values)

    def step(engine, batch):
        loss.last_terms = values[engine.state.iteration - 1]

    engine = Engine(step)
    recorded = []
    LossTermsHandler(loss, prefix="train_loss_").attach(engine)
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: recorded.append(dict(e.state.metrics)))
    engine.run([0, 1], max_epochs=2)
    assert recorded[0] == {"train_loss_a": 2.0, "train_loss_b": 2.0}
    assert recorded[1] == {"train_loss_a": 20.0, "train_loss_b": 30.0}  # reset between epochs


def test_loss_terms_handler_names_filter_and_missing_attribute():
    loss = _FakeLoss(None)
    loss.last_terms = {"a": 1.0, "b": 2.0}
    engine = Engine(lambda e, b: None)
    LossTermsHandler(loss, prefix="", names=["b"]).attach(engine)
    engine.run([0], max_epochs=1)
    assert engine.state.metrics == {"b": 2.0}

    engine = Engine(lambda e, b: None)
    LossTermsHandler(object()).attach(engine)  # no last_terms: nothing logged, no error
    engine.run([0], max_epochs=1)
    assert engine.state.metrics == {}
    with pytest.raises(ValueError, match="attribute"):
        LossTermsHandler(loss, attribute="")


def _tiny_training(tmp_path, interval=1):
    net = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

    def step(engine, batch):
        optimizer.zero_grad()
        net(torch.ones(1, 2)).sum().backward()
        optimizer.step()

    engine = Engine(step)
    saver = TrainingStateSaver(
        tmp_path, {"model": net, "optimizer": optimizer}, filename="state.pt", interval=interval, engine_key="trainer"
    )
    saver.attach(engine)
    return engine, net, optimizer, saver


def test_training_state_saver_round_trip(tmp_path):
    engine, net, optimizer, saver = _tiny_training(tmp_path)
    engine.run([0, 1, 2], max_epochs=2)
    assert saver.path == os.path.join(tmp_path, "state.pt")
    assert sorted(os.listdir(tmp_path)) == ["state.pt"]  # no temporary file left behind
    state = torch.load(saver.path, weights_only=True)
    assert set(state) == {"model", "optimizer", "trainer"}
    # ignite keeps the iteration and the epoch length; the epoch is their quotient
    assert state["trainer"]["iteration"] == 6 and state["trainer"]["epoch_length"] == 3

    # resume with MONAI's CheckpointLoader into fresh objects
    net2 = torch.nn.Linear(2, 1)
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.1, momentum=0.9)
    engine2 = Engine(lambda e, b: None)
    CheckpointLoader(saver.path, {"model": net2, "optimizer": opt2, "trainer": engine2}).attach(engine2)
    epochs_run = []
    engine2.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs_run.append(e.state.epoch))
    engine2.run([0, 1, 2], max_epochs=3)
    assert epochs_run == [3]  # epochs 1-2 were restored, only the third runs
    torch.testing.assert_close(net2.weight, net.weight)
    assert opt2.state_dict()["state"][0]["momentum_buffer"] is not None


def test_training_state_saver_interval(tmp_path):
    engine, _, _, saver = _tiny_training(tmp_path, interval=2)
    saved_epochs = []
    engine.add_event_handler(
        Events.EPOCH_COMPLETED,
        lambda e: saved_epochs.append(torch.load(saver.path, weights_only=True)["trainer"]["iteration"])
        if os.path.exists(saver.path)
        else saved_epochs.append(None),
    )
    engine.run([0], max_epochs=3)  # one iteration per epoch: iteration == epoch
    assert saved_epochs == [None, 2, 2]


def test_training_state_saver_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    engine, _, _, saver = _tiny_training(tmp_path)
    engine.run([0], max_epochs=1)
    before = open(saver.path, "rb").read()

    def broken_save(obj, f, *args, **kwargs):  # a crash half-way through writing the file
        with open(f, "wb") as out:
            out.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        saver(engine)
    assert sorted(os.listdir(tmp_path)) == ["state.pt"] and open(saver.path, "rb").read() == before


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"save_dict": {}}, "save_dict"),
        ({"save_dict": {"x": object()}}, "state_dict"),
        ({"interval": 0}, "interval"),
        ({"filename": "sub/state.pt"}, "filename"),
        ({"engine_key": "model"}, "engine_key"),
    ],
)
def test_training_state_saver_bad_arguments(tmp_path, kwargs, message):
    args = {"save_dir": tmp_path, "save_dict": {"model": torch.nn.Linear(1, 1)}, **kwargs}
    with pytest.raises(ValueError, match=message):
        TrainingStateSaver(**args)


def _evaluator_with_saver(tmp_path, scores):
    """An engine whose epochs 'score' the given values, a best-model saver on it writing ``best.pt``."""
    net = torch.nn.Linear(2, 1)

    def score(engine):
        engine.state.metrics["score"] = scores[engine.state.epoch - 1]
        net.weight.data.fill_(engine.state.metrics["score"])  # the weights say which score they were saved with
        if engine.state.metrics["score"] > engine.state.best_metric:
            engine.state.best_metric, engine.state.best_metric_epoch = engine.state.metrics["score"], engine.state.epoch

    engine = Engine(lambda e, b: None)
    engine.state.best_metric, engine.state.best_metric_epoch = -1, -1
    engine.add_event_handler(Events.EPOCH_COMPLETED, score)
    saver = AtomicCheckpointSaver(
        str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="score", key_metric_filename="best.pt"
    )
    saver.attach(engine)
    return engine, saver


def test_atomic_checkpoint_saver_replaces_the_best_model_by_a_rename(tmp_path, monkeypatch):
    engine, saver = _evaluator_with_saver(tmp_path, [0.5, 0.7, 0.6])
    removed = []
    monkeypatch.setattr(os, "remove", lambda path: removed.append(path))
    engine.run([0], max_epochs=3)
    assert removed == []  # the previous best was never deleted before its successor was written
    assert sorted(os.listdir(tmp_path)) == ["best.pt"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["weight"].unique().tolist() == [pytest.approx(0.7)]
    assert saver.state_dict()["best_metric"] == 0.7 and saver.state_dict()["best_metric_epoch"] == 2


def test_atomic_checkpoint_saver_failed_save_keeps_the_previous_best(tmp_path, monkeypatch):
    engine, _ = _evaluator_with_saver(tmp_path, [0.5, 0.7])
    engine.run([0], max_epochs=1)
    before = (tmp_path / "best.pt").read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        with open(f, "wb") as out:
            out.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        engine.run([0], max_epochs=2)
    assert sorted(os.listdir(tmp_path)) == ["best.pt"] and (tmp_path / "best.pt").read_bytes() == before


def test_atomic_checkpoint_saver_record_survives_a_restart(tmp_path):
    engine, saver = _evaluator_with_saver(tmp_path / "run", [0.9])
    engine.run([0], max_epochs=1)
    record = saver.state_dict()
    assert record["key_metric"]["_saved"][0][0] == pytest.approx(0.9)
    shutil.copytree(tmp_path / "run", tmp_path / "fresh")

    # a new process: a fresh engine and saver, the record restored; worse epochs must not replace the best model
    restarted, saver2 = _evaluator_with_saver(tmp_path / "run", [0.5, 0.6])
    saver2.load_state_dict(record)
    assert (restarted.state.best_metric, restarted.state.best_metric_epoch) == (pytest.approx(0.9), 1)
    restarted.run([0], max_epochs=2)
    assert torch.load(tmp_path / "run" / "best.pt", weights_only=True)["weight"].unique().tolist() == [
        pytest.approx(0.9)
    ]

    # without the record the restarted saver takes the worse model: what the record guards against
    fresh, _ = _evaluator_with_saver(tmp_path / "fresh", [0.5, 0.6])
    fresh.run([0], max_epochs=2)
    assert torch.load(tmp_path / "fresh" / "best.pt", weights_only=True)["weight"].unique().tolist() == [
        pytest.approx(0.6)
    ]


def test_random_states_round_trip_through_a_weights_only_file(tmp_path):
    transforms = Compose([RandGaussianNoised("image", prob=1.0), RandFlipd("image", prob=0.5)])
    transforms.set_random_state(seed=7)
    states = RandomStates(transforms)
    # the dictionary transforms and the array transforms they draw from each have a generator
    assert len(states.transforms) >= 4
    torch.save(states.state_dict(), tmp_path / "rng.pt")

    def draws():
        image = {"image": torch.zeros(1, 4, 4)}
        return [random.random(), np.random.rand(), torch.rand(1).item(), transforms(image)["image"].sum().item()]

    expected = draws()
    draws()  # move every generator on
    states.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == expected


def test_random_states_refuse_another_config(tmp_path):
    saved = RandomStates(Compose([RandGaussianNoised("image", prob=1.0)])).state_dict()
    with pytest.raises(ValueError, match="random transforms"):
        RandomStates(None).load_state_dict(saved)


def test_loss_terms_handler_reads_the_device_once_per_epoch(monkeypatch):
    """The sums stay tensors during the epoch: no ``float()``/``.item()`` of a term per iteration (each would wait for
    the GPU); the one read happens at the epoch's end, and gives the same means as floats would."""
    values = [{"a": torch.tensor(1.0), "b": torch.tensor(math.inf)}, {"a": torch.tensor(2.5), "b": torch.tensor(4.0)}]
    loss = _FakeLoss(values)
    reads = []

    def step(engine, batch):
        loss.last_terms = values[engine.state.iteration - 1]

    engine = Engine(step)
    handler = LossTermsHandler(loss)
    handler.attach(engine)
    original_item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append(engine.state.iteration) or original_item(self))
    engine.run([0, 1], max_epochs=1)
    assert engine.state.metrics == {"loss_a": 1.75, "loss_b": 4.0}
    assert reads and set(reads) == {2}  # only at the end of the epoch, after the last iteration


def test_every_n_iterations_filter():
    every_3 = every_n_iterations(3)
    assert [i for i in range(1, 10) if every_3(None, i)] == [3, 6, 9]
    assert all(every_n_iterations(1)(None, i) for i in range(1, 5))
    engine, seen = Engine(lambda e, b: None), []
    every_2 = Events.ITERATION_COMPLETED(event_filter=every_n_iterations(2))
    engine.add_event_handler(every_2, lambda e: seen.append(e.state.iteration))
    engine.run(range(5), max_epochs=1)
    assert seen == [2, 4]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="logging interval"):
            every_n_iterations(bad)


def test_amp_grad_scaler_scales_float16_only_and_keeps_its_state():
    """MONAI's trainer makes an enabled GradScaler for any autocast dtype; the handler replaces it on STARTED by one
    enabled for float16 only (bfloat16 needs no scaling, and an enabled scaler reads the device every step)."""
    for dtype, enabled in ((torch.bfloat16, False), (torch.float16, True)):
        handler = AmpGradScaler(dtype, device_type="cpu")
        engine = Engine(lambda e, b: None)
        engine.amp, engine.scaler = True, "MONAI's own"
        handler.attach(engine)
        handler.attach(engine)  # attached twice: installed once
        engine.run([0], max_epochs=1)
        assert engine.scaler is handler.scaler and engine.scaler.is_enabled() is enabled
    # without amp the trainer keeps no scaler
    engine = Engine(lambda e, b: None)
    engine.amp, engine.scaler = False, None
    AmpGradScaler(torch.float16, device_type="cpu").attach(engine)
    engine.run([0], max_epochs=1)
    assert engine.scaler is None

    # float16: the loss scale survives a save and a load (a resumed run does not start again at 2**16)
    saved = AmpGradScaler(torch.float16, device_type="cpu")
    saved.scaler.scale(torch.ones(()))  # the scale is created lazily, at the first scaled loss
    saved.scaler.update(1024.0)
    resumed = AmpGradScaler(torch.float16, device_type="cpu")
    resumed.load_state_dict(saved.state_dict())
    assert resumed.scaler.get_scale() == 1024.0
    resumed.load_state_dict({})  # a state saved with bfloat16: the scale stays, with a warning
    assert resumed.scaler.get_scale() == 1024.0
    assert AmpGradScaler(torch.bfloat16, device_type="cpu").state_dict() == {}
    with pytest.raises(ValueError, match="floating-point"):
        AmpGradScaler(torch.int64)
