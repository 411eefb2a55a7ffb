"""A circuit breaker per source, over purgatory's state machine.

    closed     calls go through; `failures` transport failures in a row open it
    open       calls fail fast with SourceCircuitOpen, without touching the system,
               until `reset` seconds have passed
    half_open  one call goes through as a probe (others fail fast meanwhile): success closes
               it, failure opens it again

Only transport failures count (SourceUnavailable, SourceTimeout): a system that answers with
a refusal or with bad data is up, and such an answer counts as a success.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from enum import StrEnum
from typing import NoReturn

from purgatory.domain.model import Context, OpenedState

from sources.errors import SourceCircuitOpen, transient

log = logging.getLogger("gatehouse.sources")


class BreakerState(StrEnum):
    """Where a source's breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """One source's circuit breaker: `guard` each round-trip to the system with it."""

    def __init__(self, *, failures: int = 5, reset: float = 30.0) -> None:
        if failures < 1 or reset < 0:
            raise ValueError("a breaker opens after 1 failure or more, for 0 seconds or more")
        self.failures = failures
        self.reset = reset
        self.refused = 0  # calls failed fast while open, never sent to the system
        self._probing = False
        self._inside: ContextVar[bool] = ContextVar("inside_guarded_call", default=False)
        self._context = Context(
            "source", threshold=failures, ttl=reset, exclude=[(BaseException, _answered)]
        )

    @property
    def state(self) -> BreakerState:
        """Closed, open, or half-open (open past its reset time: the next call probes)."""
        state = self._context.state
        if state == "closed":
            return BreakerState.CLOSED
        if state == "opened" and not self._reset_elapsed():
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @contextmanager
    def guard(self, source: str) -> Iterator[None]:
        """Let one call through, or raise SourceCircuitOpen; record how the call ended.

        A call made within a guarded one (a statement in a write's transaction) is part of
        it: it passes, and only the outer call's outcome counts.
        """
        if self._inside.get():
            yield
            return
        token = self._inside.set(True)
        try:
            with self._admitted(source):
                yield
        finally:
            self._inside.reset(token)

    @contextmanager
    def _admitted(self, source: str) -> Iterator[None]:
        probe = self._admit(source)
        before = self._context.state
        try:
            yield
        except BaseException as exc:
            self._context.handle_exception(exc)
            raise
        else:
            self._context.handle_end_request()
        finally:
            self._probing = self._probing and not probe
            self._context.messages.clear()
            self._log_change(source, before)

    def _admit(self, source: str) -> bool:
        """Whether the call admitted is the half-open breaker's probe; refuse it when open,
        or when another call is probing already."""
        try:
            self._context.handle_new_request()
        except OpenedState as exc:
            self._refuse(source, exc)
        finally:
            self._context.messages.clear()  # events for purgatory's bus, which we do not run
        if self._context.state != "half-opened":
            return False
        if self._probing:
            self._refuse(source, None)
        self._probing = True
        return True

    def _refuse(self, source: str, cause: BaseException | None) -> NoReturn:
        self.refused += 1
        raise SourceCircuitOpen(source, "circuit open") from cause

    def _log_change(self, source: str, before: str) -> None:
        after = self._context.state
        if after == before:
            return
        if after == "opened":
            log.warning("source circuit opened", extra={"source": source, "reset": self.reset})
        elif after == "closed":
            log.info("source circuit closed", extra={"source": source})

    def _reset_elapsed(self) -> bool:
        opened_at = self._context.opened_at
        return opened_at is not None and time.time() > opened_at + self.reset


def _answered(exc: BaseException) -> bool:
    """Anything but a transport failure: the call does not count against the source."""
    return not transient(exc)
