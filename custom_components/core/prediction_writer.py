# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Base of the bundles' prediction writers: per-item outputs plus one CSV that only ever exists complete.

:class:`PredictionWriter` owns what the IFE and OCT writers share: the ignite events (started, every iteration,
completed, exception raised), writing on one rank only, the per-item loop over decollated outputs, and the CSV
that is written to ``<name>.partial`` as rows come and renamed to ``<name>`` when the run completes. A subclass
says what one item becomes (:meth:`PredictionWriter.write_item`, using :meth:`PredictionWriter.write_row` for its
CSV rows), may reset per-run state (:meth:`PredictionWriter.reset`) and says what was written
(:meth:`PredictionWriter.summary`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from monai.data import decollate_batch
from monai.utils import IgniteInfo, min_version, optional_import

from custom_components.core.image_files import printable_path
from custom_components.core.events import attach_once

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["PredictionWriter"]


class PredictionWriter:
    """Write every item an engine processes, with a CSV that appears under its final name only when complete.

    Life cycle (the handler's ``attach`` registers all four):

    - ``STARTED`` (:meth:`started`): :meth:`reset`, then on ``save_rank`` create ``output_dir`` and start
      ``<filename>.partial`` with the header row.
    - ``ITERATION_COMPLETED`` (:meth:`__call__`): on ``save_rank``, :meth:`write_item` for every item of
      :meth:`items`, then flush the CSV, so a crash keeps the rows done so far.
    - ``COMPLETED`` (:meth:`completed`): rename ``<filename>.partial`` to ``<filename>`` and log :meth:`summary`.
    - ``EXCEPTION_RAISED`` (:meth:`exception_raised`): close the ``.partial`` file, keeping it, and re-raise.

    Files are written on ``save_rank`` only: run these writers in a single process, or accept that the other ranks'
    items are not written.

    Args:
        output_dir: folder of the CSV and of whatever the subclass writes (created when the run starts).
        filename: CSV file name (a plain name, no folder); None writes no CSV.
        columns: the CSV header.
        output_transform: maps ``engine.state.output`` to the list of per-item dicts (a batched dict is
            decollated).
        batch_transform: maps ``engine.state.batch`` to the list of per-item input dicts, whose keys fill in what an
            output item lacks (or holds as None); None uses the outputs alone.
        save_rank: the rank that writes.

    Raises:
        ValueError: on a ``filename`` with a folder part, or no ``columns`` for a CSV.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        filename: str | None,
        columns: Sequence[str],
        output_transform: Callable[[Any], Any] = lambda x: x,
        batch_transform: Callable[[Any], Any] | None = None,
        save_rank: int = 0,
    ) -> None:
        if filename is not None and (not filename or os.path.basename(filename) != filename):
            raise ValueError(f"filename must be a plain file name, got {filename!r}.")
        if filename is not None and not columns:
            raise ValueError("columns must name the CSV's columns, got none.")
        self.output_dir = os.fspath(output_dir)
        self.filename = filename
        self.columns = tuple(columns)
        self.output_transform = output_transform
        self.batch_transform = batch_transform
        self.save_rank = save_rank
        # named after the subclass's module, so each bundle's log configuration sees its own writer
        self.logger = logging.getLogger(type(self).__module__)
        self._partials: dict[str, Any] = {}  # final path -> open handle of its .partial file
        self._writer: Any = None
        self._running = False
        self.reset()

    @property
    def csv_path(self) -> str | None:
        """Final path of the CSV (None when no CSV is written)."""
        return None if self.filename is None else os.path.join(self.output_dir, self.filename)

    def attach(self, engine: Engine) -> None:
        """Register :meth:`started`, :meth:`__call__`, :meth:`completed` and :meth:`exception_raised`."""
        attach_once(
            engine,
            (Events.STARTED, self.started),
            (Events.ITERATION_COMPLETED, self),
            (Events.COMPLETED, self.completed),
            (Events.EXCEPTION_RAISED, self.exception_raised),
        )

    def is_writer(self) -> bool:
        """Whether this process writes (its rank is ``save_rank``)."""
        return idist.get_rank() == self.save_rank

    def reset(self) -> None:
        """Forget the previous run's per-run state (called on every rank when a run starts); subclasses extend it."""
        self._stems: dict[str, str] = {}

    def unique_stem(self, stem: str, source: str) -> str:
        """The output name stem of ``source``: ``stem``, or ``stem_2``, ``stem_3``, ... when inputs of the run share a
        file name (``p1/b001.png``, ``p2/b001.png``), so that no output overwrites another's."""
        candidate, n = stem, 1
        while self._stems.get(candidate, source) != source:
            n += 1
            candidate = f"{stem}_{n}"
        if candidate != stem and candidate not in self._stems:
            first = self._stems[stem]
            self.logger.warning("%s shares its name with %s: its outputs are named %s*", source, first, candidate)
        self._stems[candidate] = source
        return candidate

    def started(self, engine: Engine | None = None) -> None:
        """Start a run: :meth:`reset`, then (on ``save_rank``) a fresh ``.partial`` CSV with its header."""
        self.close()
        self.reset()
        if not self.is_writer():
            return
        os.makedirs(self.output_dir, exist_ok=True)
        self._running = True
        if self.csv_path is not None:
            self._writer = csv.writer(self.open_partial(self.filename, newline=""))
            self._writer.writerow(self.columns)
            self.flush()

    def open_partial(self, filename: str, **kwargs: Any) -> Any:
        """Open ``output_dir/<filename>.partial`` for writing (text, UTF-8) with the CSV's life cycle: flushed after
        every iteration, renamed to ``filename`` when the run completes, kept as ``.partial`` when it fails.
        For subclasses that write a second stream (call it from ``started``, after ``super().started``)."""
        path = os.path.join(self.output_dir, filename)
        handle = open(f"{path}.partial", "w", encoding="utf-8", **kwargs)
        self._partials[path] = handle
        return handle

    def flush(self) -> None:
        """Flush every open ``.partial`` file."""
        for handle in self._partials.values():
            handle.flush()

    def close(self) -> None:
        """Close the ``.partial`` files, which stay on disk under that name: the run did not complete."""
        for handle in self._partials.values():
            handle.close()
        self._partials, self._writer, self._running = {}, None, False

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """Close the ``.partial`` files, keeping what was written so far, and re-raise.

        Ignite does not re-raise an exception that an ``EXCEPTION_RAISED`` handler received, hence the ``raise``.
        """
        for path in self._partials:
            self.logger.warning(f"run stopped early: what was written so far is in {path}.partial")
        self.close()
        raise e

    def completed(self, engine: Engine | None = None) -> None:
        """Rename the finished files to their final names and log :meth:`summary` (nothing if no run is under way)."""
        if not self._running:
            return
        paths = list(self._partials)
        self.close()
        for path in paths:
            os.replace(f"{path}.partial", path)
        self.logger.info(self.summary())

    def summary(self) -> str:
        """One line saying what the run wrote, logged when it completes; subclasses say more."""
        return f"wrote {self.csv_path}" if self.csv_path is not None else f"wrote outputs to {self.output_dir}"

    @staticmethod
    def _as_list(data: Any) -> list[Mapping]:
        if data is None:
            return []
        if isinstance(data, Mapping):
            data = decollate_batch(data, detach=True)
        return list(data)

    def items(self, engine: Engine) -> list[Mapping]:
        """The current iteration's items: the outputs, completed from the inputs when ``batch_transform`` is set.

        Output values take precedence; inputs fill in what the engine did not copy (a string label becomes
        ``label=None`` in the output, as only tensors are moved to the device), so None never overrides an input.
        Outputs and inputs of different lengths are not paired: the outputs are used alone.
        """
        outputs = self._as_list(self.output_transform(engine.state.output))
        if self.batch_transform is None:
            return outputs
        inputs = self._as_list(self.batch_transform(engine.state.batch))
        if len(inputs) != len(outputs):
            return outputs
        return [{**dict(i), **{k: v for k, v in dict(o).items() if v is not None}} for i, o in zip(inputs, outputs)]

    def write_row(self, row: Sequence[Any]) -> None:
        """Append one row (in ``columns`` order) to the CSV; nothing when no CSV is written.

        Text cells go through :func:`~custom_components.core.image_files.printable_path`: a file name that is not
        valid UTF-8 (``b"gel_\\xff.png"``) is written as ``gel_\\xff.png`` instead of failing the UTF-8 CSV, and with
        it the run.
        """
        if self._writer is not None:
            self._writer.writerow([printable_path(v) if isinstance(v, str) else v for v in row])

    def write_item(self, item: Mapping) -> None:
        """Write the outputs of one decollated item (subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} must implement write_item(item).")

    def __call__(self, engine: Engine) -> None:
        """Write the current iteration's items (on ``save_rank``)."""
        if not self.is_writer():
            return
        if not self._running:  # attached after STARTED, or the engine was not started through run()
            self.started(engine)
        for item in self.items(engine):
            self.write_item(item)
        self.flush()
