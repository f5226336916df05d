"""Task configuration for ``bundles/oct_fluid_seg``."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.config import TaskConfig

from lib.configs.bundle_config import resolve_bundle
from lib.infers.oct_fluid_seg import OCTFluidSegInfer
from lib.trainers.oct_fluid_seg import OCTFluidSegTrain

__all__ = ["OCTFluidSegConfig"]


class OCTFluidSegConfig(TaskConfig):
    """OCT fluid segmentation: infer (mask PNG + fluid area) and fine-tuning on saved masks."""

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle_path = resolve_bundle(model_dir, "oct_fluid_seg")

    def infer(self) -> OCTFluidSegInfer:
        return OCTFluidSegInfer(self.bundle_path, self.conf)

    def trainer(self) -> OCTFluidSegTrain:
        return OCTFluidSegTrain(self.bundle_path, self.conf)
