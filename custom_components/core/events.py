# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Attaching ignite handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["attach_once", "attach_handlers", "every_n_iterations"]


def attach_once(engine: Any, *pairs: tuple[Any, Callable]) -> None:
    """Add each ``(event, handler)`` pair to ``engine`` unless it is there already, so a handler attached twice
    (a config that lists it and a helper that attaches it) still runs once per event."""
    for event, handler in pairs:
        if not engine.has_event_handler(handler, event):
            engine.add_event_handler(event, handler)


def attach_handlers(engine: Any, *handlers: Any) -> None:
    """Attach each handler to ``engine`` in the order given (handlers of one event run in the order they were
    attached), skipping ``None``: a config component that ``_disabled_`` turned off, such as the resume loader of a
    run that starts afresh."""
    for handler in handlers:
        if handler is not None:
            handler.attach(engine)


def every_n_iterations(n: int) -> Callable[[Any, int], bool]:
    """An ignite event filter that is true on every ``n``-th iteration (``StatsHandler(iteration_log=...)``).

    Logging a GPU loss reads it on the host, which waits for the device: done on every iteration, it stalls the
    data pipeline; every ``n`` iterations it costs almost nothing.

    Args:
        n: logging interval in iterations, >= 1 (1 logs every iteration).

    Raises:
        ValueError: when ``n`` is not a positive integer.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"the logging interval must be a positive integer, got {n!r}.")

    def every(engine: Any, iteration: int) -> bool:
        return iteration % n == 0

    return every
