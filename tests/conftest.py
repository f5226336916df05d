# Copyright (c) the project authors. Licensed under the Apache License, Version 2.0.
"""Every test module and every test leaves the process as it found it.

The bundle, script and CLI tests run MONAI bundle workflows and scripts' ``main()`` inside the test process (a
second interpreter costs 10-20 s of imports on a small machine). A workflow changes process-wide state that a later
test would otherwise inherit: ``logging.conf`` replaces the root logger's handlers and level,
``monai.utils.set_determinism`` reseeds the global RNGs and flips the cuDNN flags, a script may change the working
directory or ``sys.path``. The autouse fixtures below snapshot that state before each module and each test and put
it back afterwards (module scope too, so that a module-scoped fixture that trains a bundle cannot leak into the
next module).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch

# tests/bad_inputs.py, the corpus of bad and odd input files, is a helper that test modules in every folder import
# (``import bad_inputs``), whatever pytest's import mode; scripts/bundle_runs.py is what the scripts share, imported
# as the scripts import it (``import bundle_runs``)
_TESTS = os.path.dirname(os.path.abspath(__file__))
_SCRIPTS = os.path.join(os.path.dirname(_TESTS), "scripts")
for _position, _folder in enumerate((_TESTS, _SCRIPTS)):  # tests/ first: scripts/ only adds what tests lack
    if _folder not in sys.path:
        sys.path.insert(_position, _folder)


def _own(handler: logging.Handler) -> bool:
    """Whether a handler is fair game: pytest's log capture handlers come and go with each test phase."""
    return not type(handler).__module__.startswith("_pytest")


def _logger_state() -> dict[str, tuple]:
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    return {
        lg.name: (lg, lg.level, lg.disabled, lg.propagate, [h for h in lg.handlers if _own(h)]) for lg in loggers
    }


def _restore_loggers(saved: dict[str, tuple], disable: int) -> None:
    """Put back the handlers, levels and flags of the loggers that existed at the snapshot (loggers created since,
    e.g. by a module imported for the first time, are left as their library set them up)."""
    for lg, level, disabled, propagate, handlers in saved.values():
        for handler in [h for h in lg.handlers if _own(h) and h not in handlers]:
            lg.removeHandler(handler)  # added since the snapshot, e.g. by a bundle's logging.conf
            handler.close()
        for handler in handlers:
            if handler not in lg.handlers:
                lg.addHandler(handler)
        lg.setLevel(level)
        lg.disabled, lg.propagate = disabled, propagate
    # a logger a library set up during the test (MONAI's get_logger adds one stdout handler, once per name) may have
    # bound its handler to a stream that is gone now (capsys, a redirected stdout): point it at today's stdout
    for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(lg, "handlers", []):
            if _own(handler) and isinstance(handler, logging.StreamHandler) and _closed(handler.stream):
                handler.stream = sys.stdout  # not setStream(), which flushes the closed stream first
    logging.disable(disable)


def _closed(stream) -> bool:
    return bool(getattr(stream, "closed", False))


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}


def _monai_seed() -> int | None:
    misc = sys.modules.get("monai.utils.misc")
    return getattr(misc, "_seed", None)


@contextlib.contextmanager
def preserved_process_state() -> Iterator[None]:
    """Restore logging, RNGs, determinism flags, threads, default dtype, grad mode, cwd, sys.path and os.environ."""
    loggers, disable = _logger_state(), logging.root.manager.disable
    cwd, path, environ = os.getcwd(), list(sys.path), _environ()
    rng = (torch.random.get_rng_state(), np.random.get_state(), random.getstate(), _monai_seed())
    flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    try:
        yield
    finally:
        _restore_loggers(loggers, disable)
        os.chdir(cwd)
        sys.path[:] = path
        now = _environ()
        for key in now.keys() - environ.keys():
            del os.environ[key]
        os.environ.update({k: v for k, v in environ.items() if now.get(k) != v})
        torch.random.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if "monai.utils.misc" in sys.modules:  # the seed set_determinism records, for monai.utils.get_seed()
            sys.modules["monai.utils.misc"]._seed = rng[3]
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = flags[2], flags[3]
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_grad_enabled(grad)


@pytest.fixture(autouse=True, scope="module")
def _module_leaves_process_state_alone() -> Iterator[None]:
    with preserved_process_state():
        yield


@pytest.fixture(autouse=True)
def _test_leaves_process_state_alone() -> Iterator[None]:
    with preserved_process_state():
        yield
