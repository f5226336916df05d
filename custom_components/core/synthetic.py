# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""The embedded synthetic default: a data folder without a datalist gets a synthetic data set, written once.

The generator is handed in by the domain (:func:`custom_components.ife.synthetic.synthesize_ife_dataset`,
:func:`custom_components.oct.synthetic.synthesize_oct_dataset`): this module knows no gel and no B-scan.

A synthetic data set is complete when its ``datalist.json`` exists: the generators remove an old one before they
write anything (:func:`start_synthesis`) and write the new one last, atomically (:func:`finish_synthesis`), so a
generation killed half-way never leaves a folder that looks complete.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from custom_components.core.datalist import DATALIST_NAME, DatalistError
from custom_components.core.atomic import write_json_atomic

__all__ = ["SYNTHESIS_NAME", "check_difficulty", "prepare_dataset", "start_synthesis", "finish_synthesis"]

logger = logging.getLogger(__name__)

#: the generation record beside the datalist: parameters, counts and what was drawn in each image
SYNTHESIS_NAME = "synthesis.json"


def check_difficulty(difficulty: float) -> float:
    """A generator's ``difficulty`` (1 = its default look, higher = harder) as a float.

    Raises:
        ValueError: when it is not a finite positive number.
    """
    value = float(difficulty)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"difficulty must be a finite positive number, got {difficulty!r}.")
    return value


def start_synthesis(folder: str | os.PathLike) -> None:
    """Remove the datalist and generation record of an earlier data set in ``folder`` (if any) before new files
    are written there: until :func:`finish_synthesis`, the folder is not a complete data set."""
    for name in (DATALIST_NAME, SYNTHESIS_NAME):
        Path(folder, name).unlink(missing_ok=True)


def finish_synthesis(folder: str | os.PathLike, datalist: Mapping[str, Any], record: Mapping[str, Any]) -> Path:
    """Write the generation record, then the datalist, each atomically: the datalist last, as the mark of a complete
    data set.

    Returns:
        the datalist path.
    """
    write_json_atomic(record, Path(folder, SYNTHESIS_NAME), indent=1)
    write_json_atomic(datalist, Path(folder, DATALIST_NAME), indent=1)
    return Path(folder, DATALIST_NAME)


def prepare_dataset(
    dataset_dir: str | os.PathLike,
    synthesize: Callable[..., Any],
    synthetic_count: int = 600,
    seed: int = 0,
    image_size: Sequence[int] | None = None,
    generator_options: Mapping[str, Any] | None = None,
) -> str:
    """Return the datalist of ``dataset_dir``, writing the synthetic default there first if it has none.

    This is what makes every bundle command run out of the box: point ``dataset_dir`` at your data (a folder with
    ``datalist.json``) and it is used untouched; leave the default and a synthetic data set is generated once.

    Args:
        dataset_dir: the data folder.
        synthesize: the domain's generator, called as ``synthesize(folder, count=, seed=, **options)`` (with
            ``image_size`` among the options when given); it writes the data set and its datalist into ``folder``.
        synthetic_count: number of synthetic images.
        seed: generator seed.
        image_size: ``(H, W)`` of synthetic images; ``None`` for the generator's default.
        generator_options: further keyword arguments of the generator (for ``"ife"`` e.g. ``{"style": "real",
            "orientation": "albumin_bottom", "biclonal_fraction": 0.05}``, see
            :func:`~custom_components.ife.synthetic.synthesize_ife_dataset`); ``None`` for its defaults.

    Returns:
        the datalist path, as a string.

    Raises:
        DatalistError: when ``dataset_dir`` holds files but no ``datalist.json`` (user data without a datalist
            is never overwritten or guessed at).
        TypeError: when ``synthesize`` is not callable.
        ValueError: from the generator, on bad ``generator_options``.
    """
    root = Path(dataset_dir)
    datalist = root / DATALIST_NAME
    if datalist.is_file():
        return str(datalist)
    if not callable(synthesize):
        raise TypeError(f"synthesize must be a data set generator (a callable), got {synthesize!r}.")
    if root.is_dir() and any(root.iterdir()):
        raise DatalistError(
            f"{root} has files but no {DATALIST_NAME}. Write one (see the bundle's docs/README.md, section Data), "
            "or point dataset_dir at a new folder to generate the synthetic default there."
        )
    logger.info(
        "No %s in %s: generating %d synthetic images there with %s (seed %d).",
        DATALIST_NAME, root, synthetic_count, getattr(synthesize, "__name__", synthesize), seed,
    )  # fmt: skip
    root.parent.mkdir(parents=True, exist_ok=True)
    # build beside the target and rename into place, so concurrent ranks or an interrupted run never leave a
    # half-written data set behind a valid-looking path
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        kwargs = dict(generator_options or {})
        if image_size is not None:
            kwargs["image_size"] = tuple(int(s) for s in image_size)
        synthesize(staging, count=synthetic_count, seed=seed, **kwargs)
        if root.is_dir():
            root.rmdir()  # empty (checked above)
        os.rename(staging, root)
        logger.info("Synthetic data set ready: %s", datalist)
    except OSError:
        if not datalist.is_file():  # someone else's rename did not win either: a real error
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return str(datalist)
