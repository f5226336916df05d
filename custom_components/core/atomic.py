# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Writing files so that a reader never sees half of one: a crash leaves the old file, or none, never a torn one.

Every writer goes through :func:`save_atomic`: the content is written to a temporary file in the target's own
folder (so the final ``os.replace`` is a rename within one file system, which is atomic), then renamed over the
target; if anything fails the temporary file is removed and the error propagates.
"""

from __future__ import annotations

import csv
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = ["save_atomic", "write_text_atomic", "write_json_atomic", "write_csv_atomic", "read_json_file"]


def _ending(name: str) -> str:
    """Everything from the first dot of ``name`` (``.png``, ``.nii.gz``); leading dots of hidden files skipped."""
    body = name.lstrip(".")
    dot = body.find(".")
    return body[dot:] if dot >= 0 else ""


def save_atomic(path: str | os.PathLike, save: Callable[[str], Any]) -> None:
    """Write a file atomically: ``save(temporary path)``, then rename the temporary file to ``path``.

    The temporary file is ``.<name>.<random>.tmp<ending>`` in the folder of ``path`` (created if absent): the same
    file system, so the rename is atomic, and the same ending as ``path`` (``.png``, ``.nii.gz``, ``.json``), because
    Pillow, nibabel and others choose the format from it. ``save`` must create the file itself (as ``open(path,
    "w")``, ``torch.save`` or ``Image.save`` do), so it gets the user's usual permissions. The random part keeps
    concurrent writers of the same target (threads or processes) apart; the last rename wins.

    Args:
        path: the file to write.
        save: called once with the temporary path (a ``str``); it writes the whole content there.

    Raises:
        ValueError: when ``path`` names a folder (ends with a separator) or is empty.
        Exception: whatever ``save`` or the rename raises; the temporary file is removed first.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path)) if path else ("", "")
    if not name or path.endswith(("/", os.sep)):
        raise ValueError(f"path must name a file, got {path!r}.")
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name.lstrip('.')}.{uuid.uuid4().hex[:12]}.tmp{_ending(name)}")
    try:
        save(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):  # save or the rename failed: leave nothing behind
            os.remove(tmp)


def write_text_atomic(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`save_atomic`): reports, tables, small markers.

    Args:
        text: the whole content.
        path: the file; its folder is created if absent.
    """

    def save(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    save_atomic(path, save)


def write_json_atomic(data: Any, path: str | os.PathLike, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (UTF-8, with a final newline) to ``path`` atomically (:func:`save_atomic`).

    Args:
        data: anything ``json.dumps`` accepts.
        path: the JSON file; its folder is created if absent.
        indent: ``json.dumps``'s indentation (None: one line).

    Raises:
        TypeError: when ``data`` is not JSON-serialisable (``path`` is left as it was, and no file is created).
    """
    write_text_atomic(json.dumps(data, indent=indent) + "\n", path)


def write_csv_atomic(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a CSV table (UTF-8, header first) to ``path`` atomically (:func:`save_atomic`).

    Args:
        path: the CSV file; its folder is created if absent.
        columns: the column names, in order.
        rows: one mapping from column name to value per row; missing columns are left empty.

    Raises:
        ValueError: on a row with a key that is not a column (``csv.DictWriter``'s check; ``path`` is left as it was).
    """

    def save(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), restval="")
            writer.writeheader()
            writer.writerows(rows)

    save_atomic(path, save)


def read_json_file(path: str | os.PathLike, what: str, error: type[Exception] = ValueError) -> Any | None:
    """The JSON value in ``path`` (a record written with :func:`write_json_atomic`), or ``None`` when there is no
    such file; the caller checks its shape.

    Args:
        path: the file.
        what: what the file holds, for the error message ("checkpoint recipe", "calibration record", ...).
        error: the exception type to raise (the caller's ``ValueError`` subclass).

    Raises:
        ``error``: naming the file, when it cannot be read or is not JSON.
    """
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise error(f"{os.fspath(path)}: unreadable {what} ({err}).") from err
