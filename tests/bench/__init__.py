"""Benchmarks: run by hand from the repository root (`python -m tests.bench.<name>`), never
collected by pytest. What they share lives here and in tests/factories.py.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import NoReturn


def unwind_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so `finally`s drop databases and stop processes."""
    signal.signal(signal.SIGTERM, _exit)


def _exit(signum: int, frame: FrameType | None) -> NoReturn:
    raise SystemExit(128 + signum)
