"""Connector failures, raised by every connector and nothing else.

    SourceError                  a system of record did not give a usable answer
    ├── SourceUnavailable        could not connect, or the connection broke
    ├── SourceTimeout            no answer within the call's timeout
    ├── SourceRejected           the system answered and refused (4xx, constraint)
    │   ├── SourceConflict       the record changed since the version a write was based on
    │   └── SourceRefused        the system's own business rule refused the write
    └── SourceDataError          the answer could not be understood (bad JSON, wrong type)

Each carries the source's name, so the gateway can say which system failed.
"""

from __future__ import annotations


class SourceError(Exception):
    """A system of record failed to answer usefully."""

    code = "SOURCE_ERROR"

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"source '{source}': {message}")
        self.source = source
        self.detail = message


class SourceUnavailable(SourceError):
    """The source could not be reached."""

    code = "SOURCE_UNAVAILABLE"


class SourceTimeout(SourceError):
    """The source did not answer in time."""

    code = "SOURCE_TIMEOUT"


class SourceRejected(SourceError):
    """The source answered with a refusal."""

    code = "SOURCE_REJECTED"


class SourceConflict(SourceRejected):
    """The record changed since the version the write was based on."""

    code = "SOURCE_CONFLICT"

    def __init__(self, source: str, message: str, *, current_version: str | None) -> None:
        super().__init__(source, message)
        self.current_version = current_version


class SourceRefused(SourceRejected):
    """The system's own business rule refused the write; `detail` holds its message."""

    code = "SOURCE_REFUSED"


class SourceDataError(SourceError):
    """The source answered with data that does not match its mapping."""

    code = "SOURCE_DATA_ERROR"

    def __init__(self, source: str, message: str, *, field: str | None = None) -> None:
        super().__init__(source, message)
        self.field = field


class InvalidPosition(ValueError):
    """A paging position that this connector never handed out."""
