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
    """A model served from ``<bundles_dir>/<bundle_name>``: subclasses name the bundle, its two task classes and its
    active-learning strategy.

    ``init`` receives the bundles folder as ``model_dir``; ``infer()`` and ``trainer()`` build the tasks with the
    bundle path and the app's ``--conf`` settings; ``strategy()`` builds the strategy on an infer task.
    """

    bundle_name: ClassVar[str]
    infer_class: ClassVar[type]
    train_class: ClassVar[type]
    #: the model's uncertainty strategy (:class:`~lib.strategies.base.UncertaintyStrategy`), or None
    strategy_class: ClassVar[type | None] = None

    def init(self, name: str, model_dir: str, conf: dict[str, str], planner: Any, **kwargs: Any) -> None:
        super().init(name, model_dir, conf, planner, **kwargs)
        self.bundle_path = resolve_bundle(model_dir, self.bundle_name)

    def infer(self):
        return self.infer_class(self.bundle_path, self.conf)

    def trainer(self):
        return self.train_class(self.bundle_path, self.conf)

    def strategy_settings(self) -> dict[str, Any]:
        """The strategy's settings from ``--conf``: ``<model>_images`` (id patterns of this model's images, default
        ``*``), ``strategy_served_wait_s`` (default 3600) and ``strategy_score_budget_s`` (default none)."""
        return {
            "images": self.conf.get(f"{self.name}_images", "*"),
            "served_wait_s": self.conf.get("strategy_served_wait_s", 3600.0),
            "score_budget_s": self.conf.get("strategy_score_budget_s"),
        }

    def strategy(self, infer_task: Any = None, cache_dir: str | None = None) -> dict[str, Any] | None:
        """The model's strategy, by name, scoring with ``infer_task`` (the app passes the one ``/infer`` uses, so the
        network is in memory once; default: a new infer task).

        Args:
            infer_task: the infer task to score with.
            cache_dir: folder of the score cache, or None to keep scores in memory.

        Raises:
            ValueError: on a bad strategy setting.
        """
        if self.strategy_class is None:
            return None
        strategy = self.strategy_class(infer_task or self.infer(), cache_dir, **self.strategy_settings())
        return {strategy.name: strategy}
