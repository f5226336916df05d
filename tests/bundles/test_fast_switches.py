# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The speed switches of both ``train.json`` files (defaults on for CUDA) run on the CPU and train the same network.

``channels_last``, the cache/augmentation on the device and ``torch.compile`` change how the arithmetic is laid
out, not what it computes: one epoch with all of them on, from the same seed and data, must take the plain run's
steps and write a checkpoint that loads into a plain network. The first step's loss (same weights, same batch) is
equal up to float rounding; later ones and the weights are compared loosely, because a rounding difference of 1e-6
can move a ReLU input across 0 (seen: 4.4e-7 in one layout, -7.5e-7 in the other), which changes that element's
gradient outright: after three steps of this tiny network the weights differed by up to 3e-3 and the loss by
0.3 %. Other data, order, learning rate or a skipped clipping step would differ by far more. bf16 autocast is
the one switch that cannot be checked here: MONAI's trainers autocast on CUDA only (on a GPU,
``scripts/experiments/fast_settings.py`` compares it with fp32). ``torch.compile`` runs with the ``eager`` backend: dynamo traces the network and the
trainer runs the traced graph (what can break: graph breaks, MetaTensor inputs, dict outputs), without the minutes
of C++ code generation that inductor would take on this CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigWorkflow

pytestmark = pytest.mark.slow

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
TINY = {
    "ife_multitask": {"image_size": 64, "channels": [8, 16, 32, 64], "batch_size": 8, "synthetic_count": 40},
    "oct_fluid_seg": {
        "image_size": 64, "filters": [8, 16, 32, 64, 128], "embed_dim": 32, "batch_size": 4, "synthetic_count": 24,
    },
}  # fmt: skip
FAST = {
    "ife_multitask": {"channels_last": True, "cache_on_device": True},
    "oct_fluid_seg": {"channels_last": True, "augment_on_device": True},
}


def _train(bundle: str, root: Path, data: Path, **override) -> tuple[ConfigWorkflow, list[float]]:
    configs = BUNDLES / bundle / "configs"
    workflow = ConfigWorkflow(
        config_file=str(configs / "train.json"), meta_file=str(configs / "metadata.json"),
        logging_file=str(configs / "logging.conf"), workflow_type="train", bundle_root=str(root),
        dataset_dir=str(data), device="$torch.device('cpu')", max_epochs=1, num_workers=0, seed=0,
        **TINY[bundle], **override,
    )  # fmt: skip
    workflow.initialize()
    losses: list[float] = []
    trainer = workflow.parser.get_parsed_content("train#trainer")
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output["loss"])))
    workflow.run()
    workflow.finalize()
    return workflow, losses


@pytest.mark.parametrize("bundle", sorted(TINY))
def test_fast_switches_train_the_same_network(bundle, tmp_path):
    data = tmp_path / "data"
    plain, plain_losses = _train(bundle, tmp_path / "plain", data, channels_last=False, compile=False, log_interval=1)
    fast, fast_losses = _train(bundle, tmp_path / "fast", data, compile=True, compile_kwargs={"backend": "eager"},
                  log_interval=2, **FAST[bundle])  # fmt: skip

    trainer = fast.parser.get_parsed_content("train#trainer")
    assert isinstance(trainer.network, torch._dynamo.eval_frame.OptimizedModule)  # the trainer ran the traced graph
    assert trainer.state.iteration > 1
    convs = [m.weight for m in fast.parser.get_parsed_content("network").modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)

    assert len(fast_losses) == len(plain_losses) > 1
    assert fast_losses[0] == pytest.approx(plain_losses[0], rel=1e-5)
    assert fast_losses == pytest.approx(plain_losses, rel=2e-2)

    plain_weights = torch.load(tmp_path / "plain" / "models" / "model.pt", weights_only=True)
    fast_weights = torch.load(tmp_path / "fast" / "models" / "model.pt", weights_only=True)
    assert plain_weights.keys() == fast_weights.keys()
    for name, value in plain_weights.items():
        torch.testing.assert_close(fast_weights[name], value, rtol=0.05, atol=2e-2, msg=lambda m: f"{name}: {m}")
    # the saved weights load into a plain (contiguous) network
    network = plain.parser.get_parsed_content("network_def")
    network.load_state_dict(fast_weights)
