"""Structured JSON logs: one event per line, with the trace id, never a secret or PII.

The code logs identifiers and outcomes, never values; the redacting filter is the safety
net for what slips through (an exception message quoting a key, an e-mail in a URL).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

from gateway.telemetry import current_trace_id

_SECRETS = [
    (re.compile(r"(?i)bearer\s+[^\s\"',]+"), "Bearer [REDACTED]"),
    (re.compile(r"\bgh_[A-Za-z0-9_-]{8,}"), "[REDACTED-KEY]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), "[REDACTED-JWT]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"), "[REDACTED-EMAIL]"),
    (re.compile(r"\+\d[\d ()./-]{6,}\d"), "[REDACTED-PHONE]"),
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), "[REDACTED-IBAN]"),
]
# Every logger ends at the root's one handler; these are the ones that bring their own.
_THIRD_PARTY = ("uvicorn", "uvicorn.error", "uvicorn.access", "strawberry", "strawberry.execution")
_STANDARD = set(vars(logging.makeLogRecord({})))


def redact(text: str) -> str:
    """The text with anything that looks like a key, token, e-mail or phone number masked."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, trace id and extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None) or current_trace_id(),
        }
        event |= {k: v for k, v in vars(record).items() if k not in _STANDARD and k != "trace_id"}
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(event, default=str))


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr, redacted, for every logger in the process: the gateway's and
    third parties' (uvicorn, Strawberry, SQLAlchemy...) alike, through the root's handler."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)  # third parties: what goes wrong, not their chatter
    for name in ("gatehouse", *_THIRD_PARTY):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("gatehouse").setLevel(level)
    # The gateway writes its own access log (gateway/access_log.py): path only, no query.
    logging.getLogger("uvicorn.access").disabled = True
