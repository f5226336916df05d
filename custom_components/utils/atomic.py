# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Writing report files so that a reader never sees half of one (a crash leaves the old file or none)."""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["write_json_atomic"]


def write_json_atomic(data: Any, path: str) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder and a rename."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
