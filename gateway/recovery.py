"""Recovery: settling the actions a dead process left in flight, and those in doubt.

    RECEIVED/EXECUTING whose lease lapsed (its process died)
        --recover: the implementation looks for its own effect
            found -> APPLIED, not there -> FAILED (retry-able)       action.recovered
            cannot tell (its source is down, or it cannot look) -> IN_DOUBT  action.in_doubt
    IN_DOUBT
        --recover again, when the implementation can tell now         action.recovered
        --resolve by an operator: applied or not -> APPLIED | FAILED  action.resolved

Recovery runs at start-up and in every process's sweep, and when a replay finds its key's
action in flight with a lapsed lease; replicas racing to settle one action record it once
(compare-and-set). A refused resolve (no operator role, not in doubt, twice) is audited
(action.resolve_refused) before the caller hears why.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from typing import Any

from gateway.actions import store
from gateway.actions.store import IN_FLIGHT, Action, Status
from gateway.errors import ActionError
from gateway.outcomes import Found, Outcomes, WriteResult
from gateway.principals import Principal
from sources.actions import Effect, Plan
from sources.errors import SourceError

log = logging.getLogger("gatehouse.writes")

_RECOVERY = "the gateway process working on it stopped"


@dataclass(frozen=True, slots=True)
class Now:
    """What the system of record holds now for an action's fields, for a person to compare
    with the before-state recorded when it was planned (personal data masked)."""

    values: dict[str, Any] | None  # the fields of the action's diff, as a fresh plan reads them
    version: str | None
    problem: str | None  # why the fields could not be read, or what a fresh plan objects to
    after: dict[str, Any] | None = None  # what a fresh plan would now write


class Recovery:
    """Recover in-flight actions after a crash; resolve those in doubt."""

    def __init__(self, outcomes: Outcomes) -> None:
        self._outcomes = outcomes

    async def recover_due(self) -> int:
        """Settle in-flight actions whose lease lapsed, and re-check those in doubt."""
        async with self._outcomes.engine.connect() as connection:
            due = await store.due_for_recovery(connection, self._outcomes.clock())
        settled = 0
        for action_id in due:
            action = await self._outcomes.get(action_id)
            if action is None:
                continue
            try:
                result = await self.recover(action)
            except ActionError:  # another replica or a replay settled it meanwhile
                continue
            settled += result.status is not Status.IN_DOUBT
        return settled

    async def recover(self, action: Action) -> WriteResult:
        """Ask the action's implementation whether its effect reached the system, and say so."""
        was_in_doubt = action.status is Status.IN_DOUBT
        effect = await self._find_effect(action)
        if effect is None:
            if was_in_doubt:  # still cannot tell: it stays in the exception queue
                return self._outcomes.result(action)
            found = Found(
                action, Status.IN_DOUBT, error=f"{_RECOVERY}; whether it applied is unknown"
            )
            return await self._outcomes.finish(found, extra={"recovered_from": action.status.value})
        status = Status.APPLIED if effect.applied else Status.FAILED
        error = (
            None
            if effect.applied
            else f"{_RECOVERY} before the write reached the system; nothing was changed"
        )
        finished = replace(
            action,
            status=status,
            updated_at=self._outcomes.clock(),
            error=error,
            result=effect.result,
            lease_until=None,
        )
        saved = await self._outcomes.save(
            action,
            finished,
            "action.recovered",
            None,
            {"recovered_from": action.status.value, "channel": "system"},
        )
        if saved is None:
            raise ActionError("ACTION_CHANGED", f"action {action.id} was settled meanwhile")
        return self._outcomes.result(saved)

    async def now(self, action: Action, *, mask: bool = True) -> Now:
        """The action's fields as its system holds them now: a fresh plan, nothing written.

        `mask=False` only for a person granted the kind's personal data."""
        kind = self._outcomes.catalog.get(action.kind)
        if kind is None:
            return Now(None, None, f"the action '{action.kind}' is no longer configured")
        source = self._outcomes.catalog.source(kind.kind)
        try:
            data = kind.Input.model_validate(action.input)
            async with asyncio.timeout(getattr(source, "timeout", None)), source.unit():
                plan = await kind.plan(data, source)
        except SourceError as error:
            return Now(None, None, f"{error.code}: {source.name} could not be read")
        except Exception as exc:  # the implementation broke or hung; a person must look
            log.warning("reading the current state failed", extra={"action_id": action.id})
            return Now(None, None, f"the action's implementation failed ({type(exc).__name__})")
        if not isinstance(plan, Plan):
            return Now(None, None, "the action's implementation returned no plan")
        problem = "; ".join(p.message for p in plan.problems) or None
        shown = self._outcomes.catalog.masked if mask else (lambda _, values: values)
        return Now(
            shown(kind.kind, plan.before),
            plan.target_version,
            problem,
            shown(kind.kind, plan.after),
        )

    async def _find_effect(self, action: Action) -> Effect | None:
        kind = self._outcomes.catalog.get(action.kind)
        if kind is None or action.status not in (*IN_FLIGHT, Status.IN_DOUBT):
            return None
        try:
            data = kind.Input.model_validate(action.input)
            found = await kind.find_effect(
                data,
                self._outcomes.catalog.source(kind.kind),
                action_id=action.id,
                based_on=action.based_on,
            )
        except SourceError as error:
            log.warning(
                "recovery could not look for the effect",
                extra={"action_id": action.id, "error_code": error.code},
            )
            return None
        except Exception as exc:  # an implementation that breaks cannot tell
            log.error(
                "recovery: the implementation failed",
                extra={"action_id": action.id, "error_type": type(exc).__name__},
            )
            return None
        return found if isinstance(found, Effect) else None

    async def resolve(
        self, action_id: str, operator: Principal, *, applied: bool, note: str
    ) -> WriteResult:
        """An operator settles an IN_DOUBT action as found at the system of record."""
        action = await self._outcomes.get(action_id)
        if action is None:
            raise ActionError("NOT_FOUND", f"no action {action_id}")
        if not self._outcomes.policy.decide(operator, action.kind, "resolve").allowed:
            await self._outcomes.refused(
                action,
                operator,
                "resolve",
                "RESOLVE_REFUSED",
                f"{operator.id} does not have the operator role to resolve {action.kind}",
            )
        if action.status is not Status.IN_DOUBT:
            await self._outcomes.refused(
                action,
                operator,
                "resolve",
                "NOT_IN_DOUBT",
                f"action {action_id} is {action.status.value}; only IN_DOUBT actions are resolved",
            )
        status = Status.APPLIED if applied else Status.FAILED
        error = None if applied else f"resolved as not applied by {operator.id}: {note}"
        finished = replace(action, status=status, updated_at=self._outcomes.clock(), error=error)
        saved = await self._outcomes.save(
            action, finished, "action.resolved", operator, {"applied": applied, "note": note}
        )
        if saved is None:
            await self._outcomes.refused(
                action, operator, "resolve", "NOT_IN_DOUBT", f"action {action_id} was just resolved"
            )
        return self._outcomes.result(saved)
