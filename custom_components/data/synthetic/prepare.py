# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The embedded synthetic default: a data folder without a datalist gets a synthetic data set, written once."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from custom_components.data.datalist import DATALIST_NAME, DatalistError

__all__ = ["prepare_dataset"]

logger = logging.getLogger(__name__)


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    kind: str,
    synthetic_count: int = 600,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
) -> str:
    """Return the datalist of ``dataset_dir``, writing the synthetic default there first if it has none.

    This is what makes every bundle command run out of the box: point ``dataset_dir`` at your data (a folder with
    ``datalist.json``) and it is used untouched; leave the default and a synthetic data set is generated once.

    Args:
        dataset_dir: the data folder.
        kind: ``"ife"`` (gels) or ``"oct"`` (B-scans with masks), for the synthetic default.
        synthetic_count: number of synthetic images.
        seed: generator seed.
        image_size: ``(H, W)`` of synthetic images; ``None`` for the generator's default.

    Returns:
        the datalist path, as a string.

    Raises:
        DatalistError: when ``dataset_dir`` holds files but no ``datalist.json`` (user data without a datalist
            is never overwritten or guessed at).
        ValueError: on an unknown ``kind``.
    """
    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if datalist.is_file():
        return str(datalist)
    if kind not in ("ife", "oct"):
        raise ValueError(f"kind must be 'ife' or 'oct', got {kind!r}.")
    if root.is_dir() and any(root.iterdir()):
        raise DatalistError(
            f"{root} has files but no {DATALIST_NAME}. Write one (see the bundle's docs/README.md, section Data), "
            "or point dataset_dir at a new folder to generate the synthetic default there."
        )
    logger.info(
        "No %s in %s: generating %d synthetic %s images there (seed %d).",
        DATALIST_NAME, root, synthetic_count, kind, seed,
    )  # fmt: skip
    root.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename into place, so concurrent ranks or an interrupted run never leave a
    # half-written data set behind a valid-looking path
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        kwargs = {} if image_size is None else {"image_size": tuple(int(s) for s in image_size)}
        if kind == "ife":
            from custom_components.data.synthetic.ife import synthesize_ife_dataset as synthesize
        else:
            from custom_components.data.synthetic.oct import synthesize_oct_dataset as synthesize
        synthesize(staging, count=synthetic_count, seed=seed, **kwargs)
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.rename(staging, root)
        logger.info("Synthetic %s data set ready: %s", kind, datalist)
    except OSError:
        if not datalist.is_file():  # someone else's rename did not win either: a real error
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return str(datalist)
