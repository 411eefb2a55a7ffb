"""Connector failures, raised by every connector and nothing else.

    SourceError                  a system of record did not give a usable answer
    ├── SourceUnavailable        could not connect, or the connection broke
    │   └── SourceCircuitOpen    not tried: the source's breaker is open after failures
    ├── SourceTimeout            no answer within the call's timeout
    ├── SourceRejected           the system answered and refused (4xx, constraint)
    │   ├── SourceConflict       the record changed since the version a write was based on
    │   └── SourceRefused        the system's own business rule refused the write
    └── SourceDataError          the answer could not be understood (bad JSON, wrong type)

Each carries the source's name, so the gateway can say which system failed, and its
detail (a host and port, a driver's message naming tables) for the log; what a caller is
shown is `public`: the source and what happened, without the detail.
"""

from __future__ import annotations

from typing import ClassVar


class SourceError(Exception):
    """A system of record failed to answer usefully."""

    code = "SOURCE_ERROR"
    summary: ClassVar[str] = "failed"
    # True where the detail is the system's word to the caller (a business rule's refusal),
    # not a description of the infrastructure.
    public_detail: ClassVar[bool] = False

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"source '{source}': {message}")
        self.source = source
        self.detail = message

    @property
    def public(self) -> str:
        """What a caller is told: the source and what happened, never the infrastructure."""
        if self.public_detail:
            return str(self)
        return f"source '{self.source}' {self.summary}"


class SourceUnavailable(SourceError):
    """The source could not be reached."""

    code = "SOURCE_UNAVAILABLE"
    summary = "is unavailable"


class SourceCircuitOpen(SourceUnavailable):
    """Not tried: the source failed too often in a row and its breaker is open."""

    summary = "is unavailable (circuit open)"


class SourceTimeout(SourceError):
    """The source did not answer in time."""

    code = "SOURCE_TIMEOUT"
    summary = "did not answer in time"


class SourceRejected(SourceError):
    """The source answered with a refusal."""

    code = "SOURCE_REJECTED"
    summary = "refused the request"


class SourceConflict(SourceRejected):
    """The record changed since the version the write was based on."""

    code = "SOURCE_CONFLICT"
    public_detail = True

    def __init__(self, source: str, message: str, *, current_version: str | None) -> None:
        super().__init__(source, message)
        self.current_version = current_version


class SourceRefused(SourceRejected):
    """The system's own business rule refused the write; `detail` holds its message."""

    code = "SOURCE_REFUSED"
    public_detail = True


class SourceDataError(SourceError):
    """The source answered with data that does not match its mapping."""

    code = "SOURCE_DATA_ERROR"
    summary = "answered with data that does not match its contract"

    def __init__(self, source: str, message: str, *, field: str | None = None) -> None:
        super().__init__(source, message)
        self.field = field


def transient(exc: BaseException) -> bool:
    """A failure worth trying again later: the system was not reached or did not answer in
    time (not a refusal, not bad data, and not a call its open breaker never sent)."""
    return isinstance(exc, SourceUnavailable | SourceTimeout) and not isinstance(
        exc, SourceCircuitOpen
    )


class InvalidPosition(ValueError):
    """A paging position that this connector never handed out."""
