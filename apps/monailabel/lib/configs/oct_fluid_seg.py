"""Task configuration for ``bundles/oct_fluid_seg``."""

from __future__ import annotations

from lib.configs.bundle_config import LocalBundleConfig
from lib.infers.oct_fluid_seg import OCTFluidSegInfer
from lib.strategies.oct_entropy import OCTEntropy
from lib.trainers.oct_fluid_seg import OCTFluidSegTrain

__all__ = ["OCTFluidSegConfig"]


class OCTFluidSegConfig(LocalBundleConfig):
    """OCT fluid segmentation: infer (mask PNG + fluid area, per type for a typed model), fine-tuning on saved masks,
    and the ``oct_entropy`` strategy."""

    bundle_name = "oct_fluid_seg"
    infer_class = OCTFluidSegInfer
    train_class = OCTFluidSegTrain
    strategy_class = OCTEntropy
