"""What the two task configurations share: finding a bundle folder."""

from __future__ import annotations

import os

__all__ = ["resolve_bundle"]


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
