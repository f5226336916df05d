"""Task configuration for ``bundles/ife_multitask``."""

from __future__ import annotations

from lib.configs.bundle_config import LocalBundleConfig
from lib.infers.ife_multitask import IFEMultiTaskInfer
from lib.trainers.ife_multitask import IFEMultiTaskTrain

__all__ = ["IFEMultiTaskConfig"]


class IFEMultiTaskConfig(LocalBundleConfig):
    """IFE gel classification: infer (class, sub-task calls, attention) and fine-tuning on JSON class labels."""

    bundle_name = "ife_multitask"
    infer_class = IFEMultiTaskInfer
    train_class = IFEMultiTaskTrain
