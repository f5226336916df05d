#!/usr/bin/env python
"""Training and inference throughput of the bundles: the network alone against the bundle's own pipeline.

Everything is built from the bundles' own configs with the overrides given here, so the figures describe what
users run. For each bundle it measures:

- ``train, model alone``: training steps (forward, loss, backward, optimizer step, in the config's precision and
  memory format) on one batch already on the device: the ceiling the pipeline should approach.
- ``train, bundle``: the ``train#trainer`` of ``train.json`` itself, with its dataset and cache, transforms,
  loader and every training handler (loss terms, clipping, LR schedule, logging, progress bar), for ``--steps``
  iterations after ``--warmup``; the run stops before the epoch's validation and checkpoint.
- ``infer, model alone``: forward passes of the network in eval mode without gradients, batch of ``inference.json``.
- ``infer, bundle``: the evaluator of ``inference.json`` over the synthetic images (reading, resizing, the
  network, the prediction writer; IFE without attention figures), from a checkpoint written from the network,
  timed after its first batch. Images are gels (IFE) or B-scans (OCT: 2D scans, one B-scan per file).
- ``infer, onnxruntime``: with ``--onnx``, the network exported to ONNX and run by onnxruntime (CPU, or CUDA where
  the CUDA provider is installed), with the largest difference from PyTorch.

It prints a table per bundle, the ratio of each bundle figure to its model-alone ceiling, peak GPU memory on
CUDA, and writes everything with the machine, the command and the settings to ``--json``. Nothing here is
asserted by the tests; the printed figures are what the docs quote, with the machine.

Usage::

    python scripts/benchmark.py                                  # both bundles at the paper sizes
    python scripts/benchmark.py ife --override amp false --override channels_last false   # plain fp32
    python scripts/benchmark.py ife --override compile true
    python scripts/benchmark.py ife oct --image-size 64 --batch-size 8 --steps 5 --small   # quick CPU check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {"ife": "ife_multitask", "oct": "oct_fluid_seg"}
DEFAULT_SIZE = {"ife": 224, "oct": 512}
DEFAULT_BATCH = {"ife": 64, "oct": 8}
# narrow networks for a quick check on a CPU (--small): the same code paths, a fraction of the arithmetic
SMALL_NETWORK = {"ife": {"channels": [16, 32, 64, 128]}, "oct": {"filters": [16, 32, 64, 128, 256], "embed_dim": 64}}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _machine(device: torch.device) -> dict:
    from bundle_runs import cpu_name

    machine = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
               "torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    return machine


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - start


class _IterationTimer:
    """Times iterations ``warmup + 1 .. warmup + steps`` of an ignite engine (the device synchronised at both
    ends) and counts the images they processed; with ``stop`` it terminates the engine after the last one."""

    def __init__(self, engine, warmup: int, steps: int | None, device: torch.device, stop: bool) -> None:
        from ignite.engine import Events

        self.warmup, self.steps, self.device, self.stop = warmup, steps, device, stop
        self.start = self.end = None
        self.images = 0
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)
        engine.add_event_handler(Events.COMPLETED, self._finished)

    def _completed(self, engine) -> None:
        iteration = engine.state.iteration
        if iteration == self.warmup:
            _sync(self.device)
            self.start = time.perf_counter()
        elif iteration > self.warmup:
            batch = engine.state.batch
            # the trainer keeps the collated batch; the evaluator (decollated) a list of items
            self.images += len(batch) if isinstance(batch, list) else len(batch["image"])
            if self.steps is not None and iteration == self.warmup + self.steps:
                _sync(self.device)
                self.end = time.perf_counter()
                if self.stop:
                    engine.terminate()

    def _finished(self, engine) -> None:
        if self.end is None:
            _sync(self.device)
            self.end = time.perf_counter()

    def rate(self) -> float:
        if self.start is None or self.end is None or self.images == 0:
            raise RuntimeError(f"too few iterations to time: raise --count above {self.warmup} batches.")
        return self.images / (self.end - self.start)


def _parser(kind: str, config: str, overrides: dict):
    """A bundle config with its metadata and the overrides, as ``python -m monai.bundle run`` would build it."""
    from monai.bundle import ConfigParser

    configs = REPO / "bundles" / BUNDLES[kind] / "configs"
    parser = ConfigParser()
    parser.read_meta(str(configs / "metadata.json"))
    parser.read_config(str(configs / config))
    parser.update(overrides)
    return parser


def measure_training(kind: str, args: argparse.Namespace, overrides: dict, result: dict):
    """Train steps of the network alone, then ``train#trainer`` with its handlers; returns the trained parser."""
    device = torch.device(args.device)
    train = _parser(kind, "train.json", overrides)
    settings = {key: train.get_parsed_content(key) for key in ("amp", "channels_last", "compile", "cache_rate")}
    amp_dtype = train.get_parsed_content("amp_dtype")
    settings["amp_dtype"] = str(amp_dtype).removeprefix("torch.") if settings["amp"] else None
    settings["on_device"] = train.get_parsed_content("cache_on_device" if kind == "ife" else "augment_on_device")
    result["train_settings"] = settings
    print(f"\n{BUNDLES[kind]}: {args.image_size} px, training batch {args.batch_size}, {args.count} synthetic images; "
          f"{', '.join(f'{k} {v}' for k, v in settings.items())}", flush=True)

    trainer = train.get_parsed_content("train#trainer")  # builds the dataset (and fills its cache) first
    train.get_parsed_content("train#grad_scaler").attach(trainer)  # what the config's "run" list does
    loss, optimizer = train.get_parsed_content("loss"), train.get_parsed_content("optimizer")
    loader = train.get_parsed_content("train#dataloader")
    if len(loader) < args.warmup + args.steps:
        raise SystemExit(f"{BUNDLES[kind]}: {len(loader)} training batches, fewer than warmup + steps: raise --count.")
    result["parameters"] = sum(p.numel() for p in train.get_parsed_content("network").parameters())

    # model alone: the trainer's own (possibly compiled) network, precision and memory format, on one batch
    batch = next(iter(loader))
    images, labels = batch["image"].to(device), batch["label"].to(device)
    autocast = settings["amp"] and device.type == "cuda"  # MONAI's trainers autocast on CUDA only
    scaler = torch.amp.GradScaler("cuda", enabled=autocast and amp_dtype == torch.float16)  # as AmpGradScaler
    trainer.network.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            value = loss(trainer.network(images), labels)
        scaler.scale(value).backward()
        scaler.step(optimizer)
        scaler.update()

    _reset_peak(device)
    seconds = _timed(step, args.steps, args.warmup, device)
    result["train_model_alone"] = {"images_per_s": args.steps * len(images) / seconds,
                                   "peak_gpu_gib": _peak_gib(device)}

    # the bundle's trainer and every handler, stopped after warmup + steps iterations (before validation and the
    # epoch's checkpoint, which the timing leaves out)
    _reset_peak(device)
    timer = _IterationTimer(trainer, args.warmup, args.steps, device, stop=True)
    trainer.state.epoch_length = args.warmup + args.steps
    trainer.run()
    result["train_bundle"] = {"images_per_s": timer.rate(), "peak_gpu_gib": _peak_gib(device)}
    return train


def measure_inference(kind: str, args: argparse.Namespace, common: dict, train, outputs: Path, result: dict) -> None:
    """The network of ``inference.json`` alone, then its evaluator over the synthetic images."""
    from custom_components.core.recipe import write_recipe

    device = torch.device(args.device)
    network = train.get_parsed_content("network")
    checkpoint = outputs / "models" / "model.pt"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), checkpoint)
    write_recipe(checkpoint, train.get_parsed_content("recipe"), network)
    overrides = dict(common, checkpoint=str(checkpoint), output_dir=str(outputs / "inference"),
                     datalist_section="training")
    if kind == "ife":
        overrides["save_figures"] = False
    overrides.update({key: _parse_value(value) for key, value in args.infer_override})
    infer = _parser(kind, "inference.json", overrides)
    evaluator = infer.get_parsed_content("evaluator")
    infer.get_parsed_content("initialize")  # checks the recipe, loads the checkpoint
    # images per forward pass: IFE batches gels; OCT reads one scan per item and batches its B-scans
    batch_key = "batch_size" if infer.get("batch_size") is not None else "sw_batch_size"
    batch_size, amp = infer.get_parsed_content(batch_key), infer.get_parsed_content("amp")
    workers = infer.get_parsed_content("num_workers")
    result["infer_settings"] = {batch_key: batch_size, "amp": amp, "num_workers": workers}
    eval_network = infer.get_parsed_content("network").eval()
    channels = infer.get_parsed_content("network_def#in_channels")
    inputs = torch.randn(batch_size, channels, args.image_size, args.image_size, device=device)
    autocast = amp and device.type == "cuda"
    amp_dtype = train.get_parsed_content("amp_dtype")

    def forward() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=autocast):
            eval_network(inputs)

    _reset_peak(device)
    seconds = _timed(forward, args.steps, args.warmup, device)
    result["infer_model_alone"] = {"images_per_s": args.steps * batch_size / seconds,
                                   "peak_gpu_gib": _peak_gib(device)}

    _reset_peak(device)
    timer = _IterationTimer(evaluator, min(args.warmup, 1), None, device, stop=False)
    evaluator.run()
    result["infer_bundle"] = {"images_per_s": timer.rate(), "images": timer.images, "peak_gpu_gib": _peak_gib(device)}

    if args.onnx:  # the export the bundle READMEs give (traced, dynamic batch), then both timed on the CPU
        from monai.networks import convert_to_onnx

        from custom_components.core.onnx import time_onnx_vs_torch

        network_cpu = eval_network.to("cpu", torch.float32, memory_format=torch.contiguous_format)
        example = inputs.cpu().float()
        onnx_file = str(outputs / "model.onnx")
        convert_to_onnx(network_cpu, [example], input_names=["image"], output_names=["output"], opset_version=17,
                        dynamic_axes={"image": {0: "batch"}, "output": {0: "batch"}}, filename=onnx_file,
                        use_trace=True, dynamo=False)
        result["infer_onnxruntime"] = time_onnx_vs_torch(network_cpu, onnx_file, example, args.steps, args.warmup,
                                                         num_threads=torch.get_num_threads())


def measure(kind: str, args: argparse.Namespace, work: Path) -> dict:
    outputs = work / f"{kind}_outputs"
    common = {
        "bundle_root": str(REPO / "bundles" / BUNDLES[kind]),
        "dataset_dir": str(work / f"{kind}_data"),
        "synthetic_count": args.count,
        "device": f"$torch.device('{args.device}')",
        "num_workers": args.num_workers,
    }
    overrides = dict(common, image_size=args.image_size, batch_size=args.batch_size,
                     ckpt_dir=str(outputs / "models"), output_dir=str(outputs / "train"))
    if args.small:
        overrides.update(SMALL_NETWORK[kind])
    overrides.update({key: _parse_value(value) for key, value in args.override})
    result = {"bundle": BUNDLES[kind], "image_size": args.image_size, "batch_size": args.batch_size,
              "images": args.count, "train_overrides": overrides}
    train = measure_training(kind, args, overrides, result)
    measure_inference(kind, args, common, train, outputs, result)
    return result


def _rate_text(rate: float) -> str:
    """Three significant figures, without an exponent (0.123, 12.3, 4012)."""
    return f"{rate:.{max(0, 2 - math.floor(math.log10(rate)))}f}" if rate > 0 else "0"


def report(result: dict) -> None:
    rows = [
        ("train, model alone", result["train_model_alone"], None),
        ("train, bundle", result["train_bundle"], result["train_model_alone"]),
        ("infer, model alone", result["infer_model_alone"], None),
        ("infer, bundle", result["infer_bundle"], result["infer_model_alone"]),
    ]
    print(f"{'measurement':<22} {'images/s':>10} {'of model':>9} {'peak GPU GiB':>13}")
    for name, figures, ceiling in rows:
        ratio = f"{100 * figures['images_per_s'] / ceiling['images_per_s']:.0f} %" if ceiling else ""
        peak = f"{figures['peak_gpu_gib']:.2f}" if figures.get("peak_gpu_gib") is not None else "-"
        print(f"{name:<22} {_rate_text(figures['images_per_s']):>10} {ratio:>9} {peak:>13}")
    if "infer_onnxruntime" in result:
        onnx = result["infer_onnxruntime"]
        print(f"{'infer, onnxruntime':<22} {_rate_text(onnx['onnx_images_per_s']):>10}   (CPU; PyTorch on the CPU "
              f"{_rate_text(onnx['torch_images_per_s'])} images/s, x{onnx['speedup']:.2f}; "
              f"max abs diff {onnx['max_abs_diff']:.1e})")
    print(f"parameters: {result['parameters']:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kinds", nargs="*", metavar="bundle", help="ife and/or oct (default: both)")
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 (ife) / 512 (oct)")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch; default: 64 (ife) / 8 (oct)")
    parser.add_argument("--steps", type=int, default=20, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations before them")
    parser.add_argument("--count", type=int, default=None, help="synthetic images (default: enough for the steps)")
    parser.add_argument("--num-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="narrow networks, for a quick check of the pipeline")
    parser.add_argument("--onnx", action="store_true", help="also time the network exported to ONNX in onnxruntime")
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                        help="a train.json override, e.g. --override amp false (JSON values; repeatable)")
    parser.add_argument("--infer-override", nargs=2, action="append", default=[], metavar=("ID", "VALUE"),
                        help="an inference.json override, e.g. --infer-override batch_size 32")
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the synthetic data here (default: temporary)")
    parser.add_argument("--json", type=Path, default=Path("benchmark.json"), help="where to write the figures")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 1:
        parser.error("--steps and --warmup must be at least 1 (timing starts after the warm-up iterations)")
    unknown = sorted(set(args.kinds) - set(BUNDLES))
    if unknown:  # checked here: argparse refuses an empty list when nargs="*" has choices
        parser.error(f"unknown bundle {', '.join(unknown)}: choose from {', '.join(sorted(BUNDLES))}")
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    results = {"machine": _machine(device), "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
               "steps": args.steps, "warmup": args.warmup, "bundles": []}
    print(f"on {results['machine'].get('gpu', results['machine']['cpu'])}, torch {torch.__version__}")
    with contextlib.ExitStack() as stack:
        work = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        for kind in dict.fromkeys(args.kinds or sorted(BUNDLES)):
            run = argparse.Namespace(**vars(args))
            run.image_size = args.image_size or DEFAULT_SIZE[kind]
            run.batch_size = args.batch_size or DEFAULT_BATCH[kind]
            # the synthetic split keeps about half the images for training after validation and testing
            run.count = args.count or 2 * run.batch_size * (args.steps + args.warmup + 1)
            started = time.perf_counter()
            result = measure(kind, run, work)
            result["seconds"] = round(time.perf_counter() - started, 1)
            report(result)
            results["bundles"].append(result)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
