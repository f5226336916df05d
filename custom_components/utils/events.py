# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Attaching ignite handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["attach_once"]


def attach_once(engine: Any, *pairs: tuple[Any, Callable]) -> None:
    """Add each ``(event, handler)`` pair to ``engine`` unless it is there already, so a handler attached twice
    (a config that lists it and a helper that attaches it) still runs once per event."""
    for event, handler in pairs:
        if not engine.has_event_handler(handler, event):
            engine.add_event_handler(event, handler)
