"""Task configuration for ``bundles/ife_multitask``."""

from __future__ import annotations

from typing import Any

from lib.configs.bundle_config import LocalBundleConfig
from lib.infers.ife_multitask import IFEMultiTaskInfer
from lib.strategies.ife_least_certain import IFELeastCertain
from lib.trainers.ife_multitask import IFEMultiTaskTrain

__all__ = ["IFEMultiTaskConfig"]


class IFEMultiTaskConfig(LocalBundleConfig):
    """IFE gel classification: infer (class, sub-task calls, attention), fine-tuning on JSON class labels, and the
    ``ife_least_certain`` strategy (``--conf ife_measure confidence|margin``)."""

    bundle_name = "ife_multitask"
    infer_class = IFEMultiTaskInfer
    train_class = IFEMultiTaskTrain
    strategy_class = IFELeastCertain

    def strategy_settings(self) -> dict[str, Any]:
        return {**super().strategy_settings(), "measure": self.conf.get("ife_measure", "confidence")}
