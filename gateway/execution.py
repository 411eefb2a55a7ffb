"""Steps 4 to 8 of a write: plan, precondition, dry run, approval, execution; nothing saved.

    async with source.unit()            the bound source's unit of work: one ERP transaction
      4. plan          kind.plan(data, source)      fresh state, business rules, the diff
      5. precondition  expectedVersion still current                       -> CONFLICT
      6. dry run       everything but the execution                        -> DRY_RUN
      7. approval      review: a pending action a human must approve       -> PENDING_APPROVAL
      8. execution     kind.execute(..., action_id)  once the key is ours   -> APPLIED | FAILED

A write that goes on to execute plans inside the transaction it writes in, so what was
validated is what is written. The implementation reaches only the source it is bound to,
and gets the action's own id to send as the system's idempotency key or to journal with
its effect; anything it raises that is not a verdict is a FAILED action, never a crash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import replace
from datetime import timedelta
from typing import Any

from gateway import approvals
from gateway.actions.store import Action, Status
from gateway.config import EntityConfig
from gateway.errors import GatehouseError
from gateway.freshness import Freshness, Sla
from gateway.idempotency import ClaimFailed, Claiming, KeyHeld
from gateway.outcomes import Found, Outcomes, WriteError
from gateway.reads import Reads
from gateway.telemetry import tracer
from sources.actions import ActionInput, ActionKind, Invalid, Plan
from sources.errors import SourceConflict, SourceError, SourceTimeout

log = logging.getLogger("gatehouse.writes")


class Execution:
    """Runs steps 4 to 8 of a write against its bound source."""

    def __init__(
        self,
        outcomes: Outcomes,
        reads: Reads,
        *,
        entities: Mapping[str, EntityConfig],
        approval_ttl: float,
    ) -> None:
        self._outcomes = outcomes
        self._reads = reads
        self._entities = entities
        self._approval_ttl = approval_ttl

    async def run(
        self,
        action: Action,
        kind: ActionKind,
        data: ActionInput,
        *,
        dry_run: bool,
        claiming: Claiming,
    ) -> Found:
        """Steps 4 to 8; a failure of the implementation is FAILED with a clear error."""
        connector = self._outcomes.catalog.source(kind.kind)
        writes = not dry_run and not approvals.awaited(action)
        try:
            unit: AbstractAsyncContextManager[Any] = (
                connector.unit() if writes else nullcontext(connector)
            )
            async with unit as source:
                return await self._steps(action, kind, data, source, dry_run, claiming)
        except (KeyHeld, ClaimFailed, GatehouseError):
            raise  # the claim's verdict, or the gateway's own refusal: not the action's
        except Invalid as invalid:
            return Found(action, Status.INVALID, validation=invalid.problems)
        except SourceConflict as error:
            message = f"{error}; current version {error.current_version}"
            conflict = WriteError("CONFLICT", message, "expectedVersion", error.current_version)
            return Found(action, Status.CONFLICT, error=message, errors=[conflict])
        except SourceError as error:
            return _failed(action, error)
        except TimeoutError:
            return _failed(
                action, _ActionTimedOut(connector.name, "the action did not finish in time")
            )
        except Exception as exc:  # an estate's implementation broke: FAILED, said, not raised
            log.error(
                "action implementation failed",
                extra={"action_id": action.id, "kind": kind.kind, "error_type": type(exc).__name__},
            )
            return _failed(
                action, _ImplementationFailed(connector.name, "the action's implementation failed")
            )

    async def _steps(
        self,
        action: Action,
        kind: ActionKind,
        data: ActionInput,
        source: Any,
        dry_run: bool,
        claiming: Claiming,
    ) -> Found:
        # 4. plan
        plan = await self._plan(kind, data, source)
        diff = {
            "before": self._outcomes.catalog.masked(kind.kind, plan.before),
            "after": self._outcomes.catalog.masked(kind.kind, plan.after),
        }
        action = replace(action, diff=diff, based_on=plan.target_version)
        freshness = self._freshness(kind, plan)
        # 5. precondition
        if (conflict := _conflict(action, plan)) is not None:
            return Found(action, Status.CONFLICT, errors=[conflict], freshness=freshness)
        if plan.problems:
            return Found(action, Status.INVALID, validation=plan.problems, freshness=freshness)
        # 6. dry run
        if dry_run:
            return Found(action, Status.DRY_RUN, freshness=freshness)
        # 7. approval
        if approvals.awaited(action):
            expires = self._outcomes.clock() + timedelta(seconds=self._approval_ttl)
            return Found(action, Status.PENDING_APPROVAL, expires_at=expires, freshness=freshness)
        # 8. execution, once the key is ours (else KeyHeld rolls the unit back)
        action = await claiming.held(action)
        result = await self._execute(kind, data, plan, source, action.id)
        evicted = self._evict(kind, data, plan)
        return Found(action, Status.APPLIED, result=result, evicted=evicted)

    async def _plan(self, kind: ActionKind, data: ActionInput, source: Any) -> Plan:
        with _span("write validation"):
            plan = await _bounded(kind.plan(data, source), source)
        if not isinstance(plan, Plan):
            raise _malformed(source, "plan", plan)
        return plan

    async def _execute(
        self, kind: ActionKind, data: ActionInput, plan: Plan, source: Any, action_id: str
    ) -> dict[str, Any]:
        with _span("write execution"):
            result = await _bounded(kind.execute(data, plan, source, action_id=action_id), source)
        if not isinstance(result, dict):
            raise _malformed(source, "execute", result)
        return result

    def _freshness(self, kind: ActionKind, plan: Plan) -> Freshness | None:
        record = plan.target_record
        if record is None:
            return None
        contract = self._entities[kind.entity]
        return Freshness(
            system=contract.source,
            fetched_at=self._outcomes.clock(),
            record=record,
            cached=False,
            sla=Sla(contract.warn_after, contract.error_after),
        )

    def _evict(self, kind: ActionKind, data: ActionInput, plan: Plan) -> list[tuple[str, str]]:
        """Forget the changed records here, at once; which they were, to announce."""
        changed = list(dict.fromkeys([(kind.entity, kind.target(data)), *kind.touched(data, plan)]))
        for entity, key in changed:
            self._reads.evict(entity, [key])
        return changed


async def _bounded(call: Any, source: Any) -> Any:
    """An implementation's call, cut off at its source's timeout (a hung one is FAILED)."""
    timeout = getattr(source, "timeout", None)
    async with asyncio.timeout(timeout):
        return await call


class _ImplementationFailed(SourceError):
    """The gateway's own words on an implementation that broke: no infrastructure in them."""

    public_detail = True


class _ActionTimedOut(SourceTimeout):
    """The gateway's own words on an implementation that did not finish in time."""

    public_detail = True


def _failed(action: Action, error: SourceError) -> Found:
    # The caller and the stored action get what failed; the log gets why (redacted).
    log.warning(
        "write failed at its source",
        extra={
            "action_id": action.id,
            "source": error.source,
            "code": error.code,
            "detail": error.detail,
        },
    )
    return Found(
        action, Status.FAILED, error=error.public, errors=[WriteError(error.code, error.public)]
    )


def _malformed(source: Any, step: str, value: object) -> SourceError:
    log.warning("action implementation returned %s from %s", type(value).__name__, step)
    return _ImplementationFailed(
        getattr(source, "name", "source"), f"the action's {step} returned something malformed"
    )


def _conflict(action: Action, plan: Plan) -> WriteError | None:
    expected = action.expected_version
    if expected is None or plan.target_record is None or expected == plan.target_version:
        return None
    return WriteError(
        "CONFLICT",
        f"{action.target} changed since version {expected}; it is now at version "
        f"{plan.target_version}: read it again and decide on the current record",
        "expectedVersion",
        plan.target_version,
    )


def _span(name: str) -> Any:
    return tracer().start_as_current_span(name)
