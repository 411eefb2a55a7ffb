"""Every error the gateway shows a caller, each with a stable `code` and an HTTP status.

    GatehouseError                 code            status
    ├── ConfigError                CONFIG_INVALID  500   refused at start-up, names file and key
    ├── Unauthenticated            UNAUTHENTICATED 401   no, or a wrong, credential
    ├── Forbidden                  FORBIDDEN       403   policy does not grant it
    ├── InvalidArgument            BAD_ARGUMENT    400   names the argument
    ├── QueryRejected              QUERY_REJECTED  400   over a limit (depth, cost, aliases, tokens,
    │                                                    mutations, operations); names the limit
    ├── RateLimited                RATE_LIMITED    429   the principal's operations per window are
    │                                                    spent; names the limit, says when to retry
    ├── IdempotencyKeyReused       IDEMPOTENCY_KEY_REUSED 422  a key sent again with another input
    ├── ActionError                (its own code)  409   a move on an existing action that cannot
    │                                                    be made: NOT_FOUND, ACTION_NOT_PENDING,
    │                                                    APPROVAL_REFUSED, NOT_IN_DOUBT ...
    └── SourceFailed               SOURCE_*        502   a system of record failed and nothing
                                                         cached could stand in; names the source

Connector failures are `sources.errors.SourceError`; the read path turns them into
`SourceFailed`. Anything else reaching a caller is masked as INTERNAL with its trace id.
"""

from __future__ import annotations

from gateway.telemetry import current_trace_id
from sources.errors import SourceError


class GatehouseError(Exception):
    """An error a caller may see, with a stable code."""

    code = "GATEHOUSE_ERROR"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extensions(self) -> dict[str, object]:
        """What goes into a GraphQL error's `extensions`."""
        return {"code": self.code}


class ConfigError(GatehouseError):
    """The configuration cannot be used; says which file and key."""

    code = "CONFIG_INVALID"


class Unauthenticated(GatehouseError):
    """No credential, or one that matches no principal."""

    code = "UNAUTHENTICATED"
    status = 401


class Forbidden(GatehouseError):
    """The principal is not granted this."""

    code = "FORBIDDEN"
    status = 403


class InvalidArgument(GatehouseError):
    """An argument is out of range or malformed."""

    code = "BAD_ARGUMENT"
    status = 400

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"argument '{argument}': {problem}")
        self.argument = argument

    def extensions(self) -> dict[str, object]:
        """The code and the argument's name."""
        return {"code": self.code, "argument": self.argument}


class QueryRejected(GatehouseError):
    """The operation is refused before it runs (depth, cost, batch size...)."""

    code = "QUERY_REJECTED"
    status = 400

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit

    def extensions(self) -> dict[str, object]:
        """The code and the limit's configuration key."""
        return {"code": self.code, "limit": self.limit}


class RateLimited(GatehouseError):
    """The principal has run as many operations as its rate limit allows, for now."""

    code = "RATE_LIMITED"
    status = 429

    def __init__(self, limit: str, rate: str, retry_after: int) -> None:
        super().__init__(
            f"rate limit {limit} ({rate}) reached: retry in {retry_after} s "
            "(operations are counted, not HTTP requests)"
        )
        self.limit = limit
        self.retry_after = retry_after

    def extensions(self) -> dict[str, object]:
        """The code, the limit's configuration key and the seconds to wait."""
        return {"code": self.code, "limit": self.limit, "retryAfter": self.retry_after}


class IdempotencyKeyReused(GatehouseError):
    """The key was used before with a different input."""

    code = "IDEMPOTENCY_KEY_REUSED"
    status = 422


class ActionError(GatehouseError):
    """A request about an existing action that cannot be done (not found, not pending...)."""

    status = 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class SourceFailed(GatehouseError):
    """A system of record failed and no cached value could stand in."""

    status = 502

    def __init__(self, error: SourceError) -> None:
        # The detail (hosts, tables, the driver's words) is logged where the call failed.
        super().__init__(error.public)
        self.source = error.source
        self.code = error.code
        self.field = getattr(error, "field", None)
        self.trace_id = current_trace_id()

    def extensions(self) -> dict[str, object]:
        """The code, the failing source, the trace id and, for bad data, the field."""
        extensions: dict[str, object] = {
            "code": self.code,
            "source": self.source,
            "traceId": self.trace_id,
        }
        if self.field:
            extensions["field"] = self.field
        return extensions
