"""Task configuration for ``bundles/oct_fluid_seg``."""

from __future__ import annotations

from lib.configs.bundle_config import LocalBundleConfig
from lib.infers.oct_fluid_seg import OCTFluidSegInfer
from lib.trainers.oct_fluid_seg import OCTFluidSegTrain

__all__ = ["OCTFluidSegConfig"]


class OCTFluidSegConfig(LocalBundleConfig):
    """OCT fluid segmentation: infer (mask PNG + fluid area) and fine-tuning on saved masks."""

    bundle_name = "oct_fluid_seg"
    infer_class = OCTFluidSegInfer
    train_class = OCTFluidSegTrain
