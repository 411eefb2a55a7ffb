"""The drift page: copies of fields held in other systems, and what differs from the record.

    GET  /console/drift          per copy: its system and the authoritative one, its status at
                                 the last sweep, records compared, drifting, lagging, when;
                                 per record that differs: both values, both ages, since when
    POST /console/drift/sweep    sweep every copy now (CSRF-checked), then back to the page
    POST /console/drift/fix      a finding turned into the copy's repair action: step
                                 `dry-run` shows its diff and policy's decision; `submit`
                                 sends it through the write path (approval if policy says so)

Who may see an entity's drift is who may read the entity; pii values are never stored by the
sweep, so never shown here. Gatehouse writes nothing to fix a copy by itself: a person asks,
and the repair is governed and audited as every write is.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response

from gateway.config import CopyRepair
from gateway.console.access import Page, Viewer
from gateway.console.pages import ROOT, ConsoleRoute, Refused, redirect, render
from gateway.console.signin import CSRF_FIELD, FormDep, ServicesDep, allowed
from gateway.drift import Finding, copy_states, findings, sweep
from gateway.drift_report import duration
from gateway.outcomes import WriteRequest
from gateway.services import Services

ReaderDep = Annotated[Viewer, Depends(allowed(Page.DRIFT))]


def router() -> APIRouter:
    """The drift page, its sweep and its repairs."""
    routes = APIRouter(route_class=ConsoleRoute)
    routes.add_api_route("/drift", page, methods=["GET"], include_in_schema=False)
    routes.add_api_route("/drift/sweep", sweep_now, methods=["POST"], include_in_schema=False)
    routes.add_api_route("/drift/fix", fix, methods=["POST"], include_in_schema=False)
    return routes


def _readable(services: Services, viewer: Viewer) -> list[str]:
    policy = services.policy
    return [e for e in services.config.entities if policy.can_read(viewer.principal, e)]


async def page(services: ServicesDep, viewer: ReaderDep, swept: str | None = None) -> Response:
    """Every copy the viewer may see, and each record whose copy differs."""
    entities = _readable(services, viewer)
    async with services.engine.connect() as connection:
        copies = await copy_states(connection, entities=entities)
        found = await findings(connection, entities=entities)
    return render(
        "drift.html",
        viewer=viewer,
        active=Page.DRIFT.value,
        copies=copies,
        findings=found,
        repairs={f"{f.entity}/{f.copy}": _repair(services, f) for f in found},
        declared=sum(len(services.config.entities[e].copies) for e in entities),
        age=lambda finding, at: "unknown" if at is None else duration(finding.checked_at - at),
        swept=swept is not None,
        csrf_field=CSRF_FIELD,
    )


def _repair(services: Services, finding: Finding) -> CopyRepair | None:
    copy = services.config.entities[finding.entity].copies.get(finding.copy)
    repair = copy.repair if copy else None
    if repair is None or repair.action not in services.catalog:
        return None
    return repair


async def sweep_now(services: ServicesDep, viewer: ReaderDep, _: FormDep) -> Response:
    """Compare every copy now."""
    await sweep(services)
    return redirect(f"{ROOT}/drift?swept=1")


async def fix(services: ServicesDep, viewer: ReaderDep, form: FormDep) -> Response:
    """The finding's repair: a dry run first, then the real write on the person's say-so."""
    entity, copy, key = (str(form.get(name, "")) for name in ("entity", "copy", "key"))
    finding = await _finding(services, viewer, entity, copy, key)
    repair = _repair(services, finding)
    if repair is None or finding.masked or finding.record_value is None:
        raise Refused(409, "No repair", "This difference has no repair to offer.", viewer)
    data: dict[str, Any] = {repair.key: key, repair.value: finding.record_value}
    dry = form.get("step") != "submit"
    request = WriteRequest(kind=repair.action, input=data, channel="console", dry_run=dry)
    result = await services.writes.submit(request, viewer.principal)
    if not dry and result.action is not None:
        return redirect(f"{ROOT}/actions/{result.action.id}")
    return render(
        "drift_fix.html",
        viewer=viewer,
        active=Page.DRIFT.value,
        finding=finding,
        repair=repair,
        result=result,
        csrf_field=CSRF_FIELD,
    )


async def _finding(services: Services, viewer: Viewer, entity: str, copy: str, key: str) -> Finding:
    if entity not in _readable(services, viewer):
        raise Refused(403, "Not yours to see", f"You may not read {entity}.", viewer)
    async with services.engine.connect() as connection:
        found = await findings(connection, entities=[entity])
    for finding in found:
        if (finding.copy, finding.key) == (copy, key):
            return finding
    raise Refused(404, "Nothing to fix", "That copy is not drifting (any more).", viewer)
