"""What the two task configurations share: finding the bundle folder and building its infer and train tasks."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from monailabel.interfaces.config import TaskConfig

__all__ = ["resolve_bundle", "LocalBundleConfig"]


def resolve_bundle(bundles_dir: str, name: str) -> str:
    """Locate a bundle folder under ``bundles_dir``.

    Args:
        bundles_dir: folder holding the bundles (``--conf bundles_dir``, default ``bundles/`` of the repository).
        name: bundle folder name.

    Returns:
        the absolute bundle path.

    Raises:
        FileNotFoundError: when the folder or its ``configs/metadata.json`` is missing.
    """
    path = os.path.realpath(os.path.join(bundles_dir, name))
    if not os.path.isfile(os.path.join(path, "configs", "metadata.json")):
        raise FileNotFoundError(
            f"bundle {name!r} not found: {path} has no configs/metadata.json (set --conf bundles_dir to the folder "
            "that holds the bundles, or --conf models to the ones you have)."
        )
    return path


class LocalBundleConfig(TaskConfig):
    """A model served from ``<bundles_dir>/<bundle_name>``: subclasses name the bundle and its two task classes.

    ``init`` receives the bundles folder as ``model_dir``; ``infer()`` and ``trainer()`` build the tasks with the
    bundle path and the app's ``--conf`` settings.
    """

    bundle_name: ClassVar[str]
    infer_class: ClassVar[type]
    train_class: ClassVar[type]

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle_path = resolve_bundle(model_dir, self.bundle_name)

    def infer(self):
        return self.infer_class(self.bundle_path, self.conf)

    def trainer(self):
        return self.train_class(self.bundle_path, self.conf)
