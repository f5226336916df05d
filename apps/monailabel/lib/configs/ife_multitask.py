"""Task configuration for ``bundles/ife_multitask``."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig

from lib.configs.bundle_config import resolve_bundle
from lib.infers.ife_multitask import IFEMultiTaskInfer
from lib.trainers.ife_multitask import IFEMultiTaskTrain

__all__ = ["IFEMultiTaskConfig"]


class IFEMultiTaskConfig(TaskConfig):
    """IFE gel classification: infer (class, sub-task calls, attention) and fine-tuning on JSON class labels."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle_path = resolve_bundle(model_dir, "ife_multitask")

    def infer(self) -> IFEMultiTaskInfer:
        return IFEMultiTaskInfer(self.bundle_path, self.conf)

    def trainer(self) -> IFEMultiTaskTrain:
        return IFEMultiTaskTrain(self.bundle_path, self.conf)
