"""Benchmarks: run by hand from the repository root (`python -m tests.bench.<name>`), never
collected by pytest. What they share lives here and in tests/factories.py.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import NoReturn

from gateway.demo import DemoEstate, running_estate


@contextmanager
def bench_estate(prefix: str) -> Iterator[DemoEstate]:
    """A freshly seeded demo estate in a temporary directory, gone on exit, Ctrl-C or SIGTERM."""
    unwind_on_sigterm()
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as state_dir,
        running_estate(Path(state_dir)) as estate,
    ):
        yield estate


def unwind_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so `finally`s drop databases and stop processes."""
    signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)
