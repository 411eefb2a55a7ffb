"""Notifications and owner alerts, delivered to a real SMTP server and real HTTP receivers.

The inbox (gateway/demo/inbox.py) runs in its own process: SMTP with STARTTLS and AUTH, and
webhook receivers that can be told to answer 500, 410 or slowly. The gateway's rounds are
driven by the tests (Notifier.round / watch), so each step is seen as it happens.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from standardwebhooks.webhooks import Webhook
from starlette.testclient import TestClient

from gateway import outbox
from gateway.actions.store import Status
from gateway.alerts import LEADER_LOCK, AlertStatus, listed
from gateway.app import create_app, start
from gateway.config import GatewayConfig, load_config
from gateway.database import channel_states
from gateway.demo import DemoEstate
from gateway.demo.inbox_process import InboxProcess
from gateway.errors import ConfigError
from gateway.outbox import NotificationStatus
from gateway.sender import enable
from gateway.services import Services
from gateway.settings import Settings
from sources.demo import CrmProcess
from tests.actions.conftest import Backend, pg_url
from tests.factories import (
    as_principal,
    postgres_admin,
    run_query,
    services_for,
    submit,
    with_source,
)

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
BIG_ADJUSTMENT = {"sku": "SKU-0002", "location": "WH-BER", "delta": 150, "reason": "pallet"}
SMTP_PASSWORD = "inbox-password-for-tests"


@pytest.fixture(scope="module")
def inbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InboxProcess]:
    folder = tmp_path_factory.mktemp("inbox")
    with InboxProcess.start(folder, smtp_user="gatehouse", smtp_password=SMTP_PASSWORD) as running:
        yield running


@pytest.fixture(autouse=True)
def empty_inbox(inbox: InboxProcess) -> None:
    inbox.clear()


def notifying(config: GatewayConfig, inbox: InboxProcess, **notify: Any) -> GatewayConfig:
    """The config with approvers reachable: finn by e-mail, operations on a signed webhook
    and on Slack, warehouse systems subscribed to applied inventory adjustments."""
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["principals"]["finn"].update(email="finn@acme.example", notify=["ops-slack"])
    raw["principals"]["olivia"].update(email="olivia@acme.example", notify=["ops-hook"])
    raw["channels"] = {
        "ops-hook": {"kind": "webhook", "url": inbox.hook_url("ops"), "secret": SECRET},
        "ops-slack": {"kind": "slack", "url": inbox.hook_url("slack")},
        "operators": {"kind": "webhook", "url": inbox.hook_url("operators"), "secret": SECRET},
        "warehouse": {"kind": "webhook", "url": inbox.hook_url("warehouse"), "secret": SECRET},
    }
    raw["subscriptions"] = {
        "warehouse": {"channel": "warehouse", "actions": ["adjustInventory"]},
    }
    raw["notify"] = {
        "console_url": "https://gatehouse.acme.example/console",
        "operators": ["operators"],
        "backoff": 0.01,
        "timeout": 1.0,
        "smtp": {
            "host": inbox.smtp_host,
            "port": inbox.smtp_port,
            "sender": "gatehouse@acme.example",
            "username": "gatehouse",
            "password": SMTP_PASSWORD,
            "ca_file": str(inbox.cert_file),
        },
        **notify,
    }
    return GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})


@pytest.fixture
async def told(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> AsyncIterator[Services]:
    async with running(notifying(write_config, inbox), backend) as services:
        yield services


class running:
    """Services over the backend, started, closed on exit (a gateway process's life)."""

    def __init__(self, config: GatewayConfig, backend: Backend) -> None:
        self._services = services_for(config, backend.database_url)

    async def __aenter__(self) -> Services:
        await start(self._services)
        return self._services

    async def __aexit__(self, *_: object) -> None:
        await self._services.close()


async def pending(services: Services) -> str:
    result = await submit(services, "inventory.adjust", BIG_ADJUSTMENT, principal="restock-bot")
    assert result.status is Status.PENDING_APPROVAL
    assert result.action is not None
    assert result.approvers == ("finn",)
    return result.action.id


async def rounds(services: Services, times: int = 1) -> None:
    for _ in range(times):
        await services.notifier.round()


async def stored(services: Services, **filters: Any) -> list[outbox.Notification]:
    async with services.engine.connect() as connection:
        return await outbox.listed(connection, status=None, limit=1000, **filters)


def verified(hook: dict[str, Any]) -> dict[str, Any]:
    """The webhook's body, after checking its Standard Webhooks signature."""
    body: dict[str, Any] = Webhook(SECRET).verify(hook["body"], hook["headers"])
    return body


async def test_an_approver_hears_by_email_slack_and_a_signed_webhook(
    told: Services, inbox: InboxProcess
) -> None:
    action_id = await pending(told)
    await rounds(told)
    (mail,) = inbox.wait_for_messages(1)
    assert mail["to"] == ["finn@acme.example"] or "finn@acme.example" in str(mail["to"])
    assert (
        mail["subject"]
        == "Approval needed: Adjust inventory Wood screw 5x80 mm (box of 500) (SKU-0002) at WH-BER"
    )
    link = f"https://gatehouse.acme.example/console/actions/{action_id}"
    assert link in mail["text"]
    assert link in mail["html"]
    assert "Restocking agent (restock-bot, agent) on behalf of" in mail["text"]
    assert "+150 boxes of Wood screw 5x80 mm" in mail["text"]  # the headline, in words
    (slack,) = inbox.wait_for_hooks("slack", 1)
    card = json.loads(slack["body"])
    assert card["text"].startswith(
        "Approval needed: Adjust inventory Wood screw 5x80 mm (box of 500) (SKU-0002) at WH-BER"
    )
    assert any(b["type"] == "actions" and b["elements"][0]["url"] == link for b in card["blocks"])
    # olivia asked (through her agent): she hears of the decision, not of the request.
    assert inbox.hooks("ops") == []
    rows = await stored(told, action_id=action_id)
    assert {n.status for n in rows} == {NotificationStatus.DELIVERED}
    assert {n.channel for n in rows} == {"email", "ops-slack"}


async def test_the_decision_reaches_the_requester_and_subscribed_systems(
    told: Services, inbox: InboxProcess
) -> None:
    action_id = await pending(told)
    await rounds(told)
    await told.writes.approve(action_id, as_principal(told, "finn"), "fine")
    await rounds(told)
    (decided,) = inbox.wait_for_hooks("ops", 1)
    body = verified(decided)
    assert body["type"] == "action.decided"
    assert body["action"]["status"] == "APPLIED"
    assert body["action"]["approvers"] == ["finn"]
    (event,) = inbox.wait_for_hooks("warehouse", 1)
    body = verified(event)
    assert body["type"] == "action.event"
    assert body["action"]["mutation"] == "adjustInventory"
    assert body["action"]["id"] == action_id
    assert len(body["action"]["trace_id"]) == 32
    assert body["event"]["name"] == "action.applied"
    assert decided["headers"]["webhook-id"] != event["headers"]["webhook-id"]


async def test_no_personal_data_goes_into_a_notification(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> None:
    config = notifying(write_config, inbox)
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["subscriptions"] = {"crm": {"channel": "warehouse", "actions": ["updateCustomerContact"]}}
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as services:
        secret_mail = "new.private.address@example.org"
        result = await submit(
            services,
            "customer.update_contact",
            {"customer_id": "C-00001", "email": secret_mail},
            principal="olivia",
        )
        assert result.status is Status.APPLIED, result.errors
        await rounds(services)
        (event,) = inbox.wait_for_hooks("warehouse", 1)
        assert secret_mail not in event["body"]
        for row in await stored(services):
            assert secret_mail not in row.message.to_json()


async def test_a_failing_receiver_is_retried_with_backoff_then_delivered(
    told: Services, inbox: InboxProcess
) -> None:
    inbox.behave("slack", [500, 503])
    await pending(told)
    await rounds(told)
    (row,) = await stored(told, channel="ops-slack")
    assert row.status is NotificationStatus.PENDING
    assert row.attempts == 1
    assert row.last_error == "the receiver answered HTTP 500"
    assert row.next_attempt_at.replace(tzinfo=UTC) > datetime.now(UTC) - timedelta(seconds=1)
    for _ in range(50):
        await rounds(told)
        (row,) = await stored(told, channel="ops-slack")
        if row.status is NotificationStatus.DELIVERED:
            break
        await asyncio.sleep(0.02)
    assert row.status is NotificationStatus.DELIVERED
    assert row.attempts == 3
    assert len(inbox.hooks("slack")) == 3  # two refused, one taken


async def test_a_receiver_that_keeps_failing_ends_failed_with_an_alert(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> None:
    config = notifying(write_config, inbox, attempts=2)
    async with running(config, backend) as services:
        inbox.behave("slack", [500, 500, 500])
        await pending(services)
        for _ in range(20):
            await rounds(services)
            await asyncio.sleep(0.02)
        (row,) = await stored(services, channel="ops-slack")
        assert row.status is NotificationStatus.FAILED
        assert row.attempts == 2
        async with services.engine.connect() as connection:
            failed = await outbox.listed(connection, status=NotificationStatus.FAILED, limit=10)
        assert [n.id for n in failed] == [row.id]
        await services.notifier.watch()
        async with services.engine.connect() as connection:
            (alert,) = await listed(connection, status=AlertStatus.OPEN, limit=10)
        assert (alert.kind, alert.subject) == ("channel.failing", "ops-slack")
        await rounds(services)
        (told_operators,) = inbox.wait_for_hooks("operators", 1)
        assert verified(told_operators)["type"] == "alert.opened"


async def test_a_410_turns_the_channel_off_until_an_operator_turns_it_on(
    told: Services, inbox: InboxProcess
) -> None:
    inbox.behave("slack", [410])
    await pending(told)
    await rounds(told)
    (row,) = await stored(told, channel="ops-slack")
    assert row.status is NotificationStatus.FAILED
    assert "410" in (row.last_error or "")
    await pending(told)  # a second one is not even tried
    await rounds(told)
    assert len(inbox.hooks("slack")) == 1
    assert all(
        n.status is NotificationStatus.FAILED for n in await stored(told, channel="ops-slack")
    )
    await told.notifier.watch()
    async with told.engine.begin() as connection:
        (alert,) = await listed(connection, status=AlertStatus.OPEN, limit=10)
        assert "turned off" in alert.summary
        assert await enable(connection, "ops-slack", datetime.now(UTC)) == 2
    await rounds(told)
    assert len(inbox.wait_for_hooks("slack", 3)) == 3
    await told.notifier.watch()  # the channel works again: the alert resolves
    async with told.engine.connect() as connection:
        assert await listed(connection, status=AlertStatus.OPEN, limit=10) == []
        states = (await connection.execute(select(channel_states))).all()
    assert [s.failing_since for s in states] == [None]


async def test_a_receiver_that_times_out_is_retried(told: Services, inbox: InboxProcess) -> None:
    inbox.behave("slack", [200], delay=3.0)  # slower than the 1 s delivery timeout
    await pending(told)
    await rounds(told)
    (row,) = await stored(told, channel="ops-slack")
    assert row.status is NotificationStatus.PENDING
    assert row.last_error == "the receiver did not answer in time"


async def test_a_gateway_killed_between_the_event_and_delivery_delivers_once_after_restart(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> None:
    config = notifying(write_config, inbox)
    async with running(config, backend) as first:
        await pending(first)  # committed; the process "dies" before any round
    async with running(config, backend) as second:
        await pending(second)
        await second.notifier.notices.fan_out()  # owed, then "dies" before sending
    async with running(config, backend) as third:
        await pending(third)
        async with third.engine.begin() as connection:  # claimed, then "dies" mid-send
            claimed = await outbox.claim(connection, datetime.now(UTC), lease=0.2, limit=100)
        assert claimed
    await asyncio.sleep(0.3)  # the dead sender's lease lapses
    async with running(config, backend) as fourth:
        await rounds(fourth, 2)
        slack = inbox.wait_for_hooks("slack", 3)
        await asyncio.sleep(0.3)
        assert len(inbox.hooks("slack")) == 3  # each of the three actions told once
        assert len(inbox.messages()) == 3
        assert {n.status for n in await stored(fourth)} == {NotificationStatus.DELIVERED}
    assert len({json.loads(h["body"])["text"] for h in slack}) == 3  # one per action


async def test_two_replicas_on_one_postgresql_send_each_notification_once(
    estate: DemoEstate, inbox: InboxProcess, postgres_backend: Backend
) -> None:
    backend = postgres_backend
    config = notifying(with_source(estate.config(), "erp", url=backend.erp_url), inbox)
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["channels"]["ops-slack"]["rate"] = "20/second"  # a storm is paced, not dropped
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as one, running(config, backend) as two:
        for _ in range(30):
            await pending(one)

        async def drain(services: Services) -> None:
            for _ in range(60):
                await rounds(services)
                await asyncio.sleep(0.05)

        await asyncio.gather(drain(one), drain(two))
        rows = await stored(one)
    assert len(rows) == 60
    assert {n.status for n in rows} == {NotificationStatus.DELIVERED}
    assert len(inbox.hooks("slack")) == 30
    assert len(inbox.messages()) == 30


@pytest.fixture
def postgres_backend(postgres_template: str) -> Iterator[Backend]:
    """A fresh PostgreSQL database (ERP and gateway tables) for this test only."""
    name = f"gh_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(postgres_admin(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"'))
    yield Backend("postgres", pg_url(name), pg_url(name))
    asyncio.run(postgres_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def test_an_alert_opens_once_per_incident_and_resolves_on_its_own(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess, own_crm: CrmProcess
) -> None:
    config = with_source(notifying(write_config, inbox), "crm", url=own_crm.url, timeout=0.5)
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["entities"]["Customer"]["owner_contact"] = ["operators"]
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as services:
        own_crm.stop()
        await services.notifier.watch()
        await services.notifier.watch()  # still down: no second alert, no repeat
        await rounds(services)
        (opened,) = inbox.wait_for_hooks("operators", 1)
        body = verified(opened)
        assert body["type"] == "alert.opened"
        assert body["alert"]["subject"] == "crm"
        assert body["alert"]["evidence"]["entities"] == ["Customer"]
        own_crm.restart()
        await services.notifier.watch()
        await rounds(services)
        hooks = inbox.wait_for_hooks("operators", 2)
        assert verified(hooks[1])["type"] == "alert.resolved"
        async with services.engine.connect() as connection:
            (alert,) = await listed(connection, status=None, limit=10)
        assert alert.status is AlertStatus.RESOLVED
        assert alert.resolved_at is not None


async def test_an_open_alert_is_repeated_after_the_reminder_time(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess, own_crm: CrmProcess
) -> None:
    config = with_source(
        notifying(write_config, inbox, reminder_after=0.2), "crm", url=own_crm.url, timeout=0.5
    )
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["entities"]["Customer"]["owner_contact"] = ["operators"]
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as services:
        own_crm.stop()
        await services.notifier.watch()
        await asyncio.sleep(0.3)
        await services.notifier.watch()
        await rounds(services)
        kinds = [verified(h)["type"] for h in inbox.wait_for_hooks("operators", 2)]
        assert kinds == ["alert.opened", "alert.reminder"]


async def test_approvers_are_warned_once_before_the_window_closes(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> None:
    config = notifying(write_config, inbox, expiring_within=7 * 86400)
    async with running(config, backend) as services:
        await pending(services)
        await services.notifier.watch()
        await services.notifier.watch()
        await rounds(services)
        subjects = sorted(m["subject"] for m in inbox.wait_for_messages(2))
        await asyncio.sleep(0.2)
        assert len(inbox.messages()) == 2
    what = "Adjust inventory Wood screw 5x80 mm (box of 500) (SKU-0002) at WH-BER"
    assert subjects == [f"Approval closing soon: {what}", f"Approval needed: {what}"]


@pytest.mark.parametrize(
    ("channel", "problem"),
    [
        ('kind = "pager"\nurl = "https://x.example/"', "channels.bad.kind"),
        ('kind = "webhook"\nurl = "not a url"\nsecret = "' + SECRET + '"', "channels.bad.url"),
        ('kind = "webhook"\nurl = "https://x.example/"', "channels.bad: Value error, secret"),
        ('kind = "webhook"\nurl = "https://x.example/"\nsecret = "short"', "channels.bad.secret"),
    ],
)
def test_a_malformed_channel_is_refused_at_start_naming_the_key(
    estate: DemoEstate, tmp_path: Path, channel: str, problem: str
) -> None:
    base = estate.template.read_text(encoding="utf-8")
    path = estate.template.parent / f"test-notify-{tmp_path.name}.toml"
    path.write_text(base + f"\n[channels.bad]\n{channel}\n", encoding="utf-8")
    try:
        with pytest.raises(ConfigError) as refused:
            load_config(path, environ={**estate.environ()})
    finally:
        path.unlink()
    assert problem.replace("Value error, ", "") in str(refused.value)


def test_an_email_channel_without_a_mail_server_is_refused(config: GatewayConfig) -> None:
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["notify"]["smtp"] = None
    raw["channels"]["bad"] = {"kind": "email", "to": ["ops@acme.example"]}
    with pytest.raises(ValueError, match=r"channels\.bad: e-mail needs \[notify\.smtp\]"):
        GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})


def test_a_channel_named_nowhere_is_refused(estate: DemoEstate, tmp_path: Path) -> None:
    base = estate.template.read_text(encoding="utf-8")
    path = estate.template.parent / f"test-notify-{tmp_path.name}.toml"
    text = base.replace('roles = ["compliance"]', 'roles = ["compliance"]\nnotify = ["nowhere"]', 1)
    path.write_text(text, encoding="utf-8")
    try:
        with pytest.raises(ConfigError, match=r"principals\.carla\.notify: no channel named"):
            load_config(path, environ={**estate.environ()})
    finally:
        path.unlink()


async def test_operators_list_failed_notifications_and_open_alerts_in_graphql(
    told: Services, inbox: InboxProcess
) -> None:
    inbox.behave("slack", [410])
    await pending(told)
    await rounds(told)
    await told.notifier.watch()
    query = """{ notifications(status: FAILED) { channel status attempts lastError link }
                 alerts { kind subject owner status evidence } }"""
    answer = await run_query(told, query, principal="sam")
    assert answer.errors is None, answer.errors
    assert answer.data is not None
    (failed,) = answer.data["notifications"]
    assert failed["channel"] == "ops-slack"
    assert failed["status"] == "FAILED"
    assert "410" in failed["lastError"]
    assert failed["link"].startswith("https://gatehouse.acme.example/console/actions/")
    (alert,) = answer.data["alerts"]
    assert (alert["kind"], alert["subject"], alert["status"]) == (
        "channel.failing",
        "ops-slack",
        "OPEN",
    )
    assert alert["evidence"]["disabled"] is True
    refused = await run_query(told, query, principal="restock-bot")
    assert refused.errors is not None
    assert refused.errors[0].extensions is not None
    assert refused.errors[0].extensions["code"] == "FORBIDDEN"


async def test_a_storm_is_paced_per_receiver_and_nothing_is_lost(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> None:
    config = notifying(write_config, inbox)
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["channels"]["ops-slack"]["rate"] = "5/second"
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as services:
        for _ in range(25):
            await pending(services)
        started = time.monotonic()
        await rounds(services)
        slack = await stored(services, channel="ops-slack")
        # The rate's window admits some; the rest wait their turn, not counted as tries.
        waiting = [n for n in slack if n.status is NotificationStatus.PENDING]
        assert 10 <= len(waiting) < 25
        assert {n.attempts for n in waiting} == {0}
        assert all(n.last_error is None for n in waiting)
        for _ in range(60):
            await asyncio.sleep(0.2)
            await rounds(services)
            slack = await stored(services, channel="ops-slack")
            if all(n.status is NotificationStatus.DELIVERED for n in slack):
                break
        assert {n.status for n in slack} == {NotificationStatus.DELIVERED}
        assert time.monotonic() - started >= 2.0  # 25 at 5 a second: spread out
    assert len(inbox.hooks("slack")) == 25


async def test_a_storm_of_mail_goes_over_one_smtp_connection_per_round(
    told: Services, inbox: InboxProcess
) -> None:
    for _ in range(12):
        await pending(told)
    await rounds(told)
    mails = inbox.wait_for_messages(12)
    assert len(mails) == 12
    assert all(mail["tls"] and mail["login"] == "gatehouse" for mail in mails)
    # STARTTLS and AUTH once for the round, not once per message.
    assert len({mail["peer"] for mail in mails}) == 1
    await pending(told)
    await rounds(told)
    (*_, later) = inbox.wait_for_messages(13)
    assert later["peer"] != mails[0]["peer"]  # closed after its round: a new one


async def test_failed_actions_open_an_alert_to_the_owner_of_their_entity(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess
) -> None:
    acme = {"unreliable": {"implementation": "tests.acme.actions:Unreliable", "source": "erp"}}
    config = notifying(write_config, inbox)
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["actions"] = {**raw["actions"], **acme}
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as services:
        failed = await submit(
            services, "item.unreliable", {"sku": "SKU-0003", "mode": "raise"}, principal="olivia"
        )
        assert failed.status is Status.FAILED
        await services.notifier.watch()
        await rounds(services)
        async with services.engine.connect() as connection:
            (alert,) = await listed(connection, status=AlertStatus.OPEN, limit=10)
        assert (alert.kind, alert.subject) == ("actions.failed", "item.unreliable")
        assert alert.owner == "Supply Chain <inventory@acme.example>"
        assert alert.evidence["actions"] == 1
        (mail,) = inbox.wait_for_messages(1)
        assert "inventory@acme.example" in str(mail["to"])
        assert mail["subject"] == "Alert: actions.failed item.unreliable"
        assert "jane.doe" not in mail["text"]  # the implementation's words stay in the log


async def test_reads_served_stale_past_their_limit_open_an_alert_that_clears(
    write_config: GatewayConfig, backend: Backend, inbox: InboxProcess, own_crm: CrmProcess
) -> None:
    config = with_source(notifying(write_config, inbox), "crm", url=own_crm.url, timeout=0.5)
    raw = config.model_dump(mode="json", by_alias=True, exclude={"base_dir"})
    raw["entities"]["Customer"].update(warn_after=0.1, error_after=0.2, owner_contact=["operators"])
    config = GatewayConfig.model_validate({**raw, "base_dir": config.base_dir})
    async with running(config, backend) as services:
        assert await services.reads.get("Customer", "C-00001") is not None
        own_crm.stop()
        await asyncio.sleep(0.3)
        stale = await services.reads.get("Customer", "C-00001")  # the last good value
        assert stale is not None
        assert stale.freshness.error is not None
        await services.notifier.watch()
        async with services.engine.connect() as connection:
            opened = {a.kind: a for a in await listed(connection, status=AlertStatus.OPEN, limit=9)}
        assert set(opened) == {"entity.stale", "source.down"}
        assert opened["entity.stale"].subject == "Customer"
        assert opened["entity.stale"].evidence["records_served_stale"] == 1
        own_crm.restart()
        assert await services.reads.get("Customer", "C-00001", max_age=0) is not None
        await services.notifier.watch()
        async with services.engine.connect() as connection:
            assert await listed(connection, status=AlertStatus.OPEN, limit=9) == []


def test_stopping_the_app_waits_for_its_rounds_before_closing_the_database(
    estate: DemoEstate,
) -> None:
    # The notifier's first round starts with the app; stopping at once used to dispose of
    # the engine under a round still in flight (KeyError from the pool, a failed round).
    for _ in range(12):
        app = create_app(Settings(database_url="sqlite+aiosqlite://"), estate.config())
        with TestClient(app) as http:
            assert http.get("/healthz").status_code == 200


async def test_a_replica_whose_lock_session_ended_stops_leading_the_alerts(
    estate: DemoEstate, inbox: InboxProcess, postgres_backend: Backend
) -> None:
    config = notifying(with_source(estate.config(), "erp", url=postgres_backend.erp_url), inbox)
    async with running(config, postgres_backend) as one, running(config, postgres_backend) as two:
        assert await one.notifier.alerts.leads()
        assert not await two.notifier.alerts.leads()
        # PostgreSQL ends the leader's session (a restart, an idle timeout): its lock goes too.
        async with two.engine.connect() as connection:
            ended = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted"
                    " AND classid::bigint = :high AND objid::bigint = :low"
                ),
                {"high": LEADER_LOCK >> 32, "low": LEADER_LOCK & 0xFFFF_FFFF},
            )
        assert ended == 1
        for _ in range(50):  # the backend ends, and its lock with it, a moment after the signal
            if await two.notifier.alerts.leads():
                break
            await asyncio.sleep(0.1)
        assert await two.notifier.alerts.leads()
        assert not await one.notifier.alerts.leads()  # it would evaluate alongside, unchecked
        assert await one.notifier.alerts.round() == 0
