#!/usr/bin/env python
"""Training and inference throughput of a bundle, model alone versus the full data path.

Everything is built from the bundle's own ``train.json`` (network, loss, optimizer, dataloader), with the
overrides given here, so the figures describe the configuration users run. Three numbers per run:

- ``model alone``: training steps (forward, loss, backward, optimizer step) on a batch already on the device;
  the ceiling the data path should approach.
- ``full pipeline``: the same steps fed by the bundle's dataloader (decoding/caching, transforms, collation,
  host-to-device copy).
- ``inference``: forward passes of ``network`` in eval mode without gradients.

On CUDA it also prints peak GPU memory. Printed figures are what to quote (with the machine); nothing here is
asserted by the tests.

Usage::

    python scripts/benchmark.py ife --image-size 224 --batch-size 64            # paper size
    python scripts/benchmark.py oct --image-size 512 --batch-size 8 --amp
    python scripts/benchmark.py ife --image-size 64 --batch-size 8 --steps 5    # quick CPU check
    python scripts/benchmark.py oct --override network_def#filters "(16,32,64,128,256)"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {"ife": "ife_multitask", "oct": "oct_fluid_seg"}


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build(kind: str, args: argparse.Namespace, dataset_dir: Path):
    from monai.bundle import ConfigParser

    bundle_root = REPO / "bundles" / BUNDLES[kind]
    parser = ConfigParser()
    parser.read_config(str(bundle_root / "configs" / "train.json"))
    overrides = {
        "bundle_root": str(bundle_root),
        "dataset_dir": str(dataset_dir),
        "synthetic_count": args.count,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "device": f"$torch.device('{args.device}')",
    }
    overrides.update({key: _parse_value(value) for key, value in args.override})
    parser.update(overrides)
    return {name: parser.get_parsed_content(name) for name in ("network", "train_network", "loss", "optimizer", "train#dataloader")}


def _step(parts, images, labels, scaler, amp: bool, device: torch.device) -> None:
    parts["optimizer"].zero_grad(set_to_none=True)
    with torch.autocast(device.type, enabled=amp):
        loss = parts["loss"](parts["train_network"](images), labels)
    scaler.scale(loss).backward()
    scaler.step(parts["optimizer"])
    scaler.update()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(BUNDLES))
    parser.add_argument("--image-size", type=int, default=None, help="default: 224 (ife) / 512 (oct)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 (ife) / 8 (oct)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--count", type=int, default=None, help="synthetic images for the pipeline measurement")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 autocast + GradScaler)")
    parser.add_argument("--dataset-dir", type=Path, default=None, help="data to read (default: a temporary synthetic set)")
    parser.add_argument("--override", nargs=2, action="append", default=[], metavar=("ID", "VALUE"), help="any config override")
    args = parser.parse_args()
    args.image_size = args.image_size or (224 if args.kind == "ife" else 512)
    args.batch_size = args.batch_size or (64 if args.kind == "ife" else 8)
    args.count = args.count or max(2 * args.batch_size * (args.steps + args.warmup) // 3, 4 * args.batch_size)
    device = torch.device(args.device)

    with contextlib.ExitStack() as stack:
        data = args.dataset_dir or Path(stack.enter_context(tempfile.TemporaryDirectory())) / "data"
        print(f"Building {BUNDLES[args.kind]} at {args.image_size} px, batch {args.batch_size}, on {device} "
              f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} CPU threads'})",
              flush=True)
        parts = build(args.kind, args, data)
        loader = parts["train#dataloader"]
        scaler = torch.amp.GradScaler(device.type, enabled=args.amp)
        parts["train_network"].train()
        first = next(iter(loader))
        images, labels = first["image"].to(device), first["label"].to(device)
        batch = images.shape[0]

        alone = _timed(lambda: _step(parts, images, labels, scaler, args.amp, device), args.steps, args.warmup, device)

        def batches():
            while True:
                for item in loader:
                    yield item

        stream = batches()

        def pipeline_step():
            item = next(stream)
            _step(parts, item["image"].to(device, non_blocking=True), item["label"].to(device, non_blocking=True),
                  scaler, args.amp, device)

        piped = _timed(pipeline_step, args.steps, args.warmup, device)

        network = parts["network"].eval()

        def infer():
            with torch.no_grad(), torch.autocast(device.type, enabled=args.amp):
                network(images)

        inferred = _timed(infer, args.steps, args.warmup, device)

    rate_alone, rate_piped = args.steps * batch / alone, args.steps * batch / piped
    print(f"\n{'measurement':<16} {'images/s':>10} {'ms/step':>9}")
    print(f"{'model alone':<16} {rate_alone:>10.1f} {1000 * alone / args.steps:>9.1f}")
    print(f"{'full pipeline':<16} {rate_piped:>10.1f} {1000 * piped / args.steps:>9.1f}   "
          f"({100 * rate_piped / rate_alone:.0f}% of the model alone)")
    print(f"{'inference':<16} {args.steps * batch / inferred:>10.1f} {1000 * inferred / args.steps:>9.1f}")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    params = sum(p.numel() for p in parts["network"].parameters())
    print(f"parameters: {params:,}; amp: {args.amp}; num_workers: {args.num_workers}")


if __name__ == "__main__":
    main()
