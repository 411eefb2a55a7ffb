"""The gateway's own database: actions (with their idempotency keys), approvals, the audit trail.

SQLite by default (embedded, zero set-up), PostgreSQL in production. Several gateway
processes may share one PostgreSQL: what must happen once is made safe by constraints and
row locks here, never by process memory.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from sources.sql import SINGLE_STATEMENT

metadata = MetaData()

actions = Table(
    "actions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("kind", String(40), nullable=False),
    Column("status", String(20), nullable=False),
    Column("principal", String(64), nullable=False),
    Column("on_behalf_of", String(64)),
    Column("channel", String(16), nullable=False),
    Column("input", Text, nullable=False),  # canonical JSON, unmasked: it is what executes
    Column("input_digest", String(64), nullable=False),
    Column("target", String(120), nullable=False),
    Column("expected_version", String(64)),
    Column("decision", String(10), nullable=False),
    Column("rule", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("approvals_required", Integer, nullable=False),
    Column("validation", Text, nullable=False),
    Column("diff", Text),
    Column("result", Text),
    Column("error", Text),
    Column("idempotency_key", String(200)),
    # While the key is held (set, until it expires) no other action of the principal's may
    # take it; `request_digest` tells a replay of the same request from a reuse of the key.
    Column("key_held_until", DateTime(timezone=True)),
    Column("request_digest", String(64)),
    # While set, the action is in flight in a live process (leases.py); None once settled.
    Column("lease_until", DateTime(timezone=True)),
    # The version of the target its plan was made against: what recovery resends it on.
    Column("based_on", String(64)),
    Column("trace_id", String(32), nullable=False),
    Column("revision", Integer, nullable=False),  # bumped by every state change (CAS)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
)
Index("ix_actions_status_created", actions.c.status, actions.c.created_at)
Index("ix_actions_principal", actions.c.principal)
Index("ix_actions_lease_until", actions.c.lease_until)
# Listeners following actions (mcp_follow.py) ask, once a second, what changed lately.
Index("ix_actions_updated_at", actions.c.updated_at)
# The compliance ledger (actions/ledger.py): newest first a page at a time, found by
# trace id or by the person an agent acted for. These columns never change once stored.
Index("ix_actions_created", actions.c.created_at, actions.c.id)
Index("ix_actions_on_behalf_of", actions.c.on_behalf_of)
Index("ix_actions_trace_id", actions.c.trace_id)
# The claim on a key: inserting an action that holds a key someone else holds conflicts.
HELD_KEY = actions.c.key_held_until.is_not(None)
Index(
    "ux_actions_held_key",
    actions.c.principal,
    actions.c.idempotency_key,
    unique=True,
    postgresql_where=HELD_KEY,
    sqlite_where=HELD_KEY,
)

approvals = Table(
    "approvals",
    metadata,
    Column("action_id", String(36), ForeignKey("actions.id"), nullable=False),
    Column("approver", String(64), nullable=False),
    Column("verdict", String(10), nullable=False),  # approve | reject
    Column("comment", Text, nullable=False),
    Column("input_digest", String(64), nullable=False),
    Column("policy_version", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("action_id", "approver"),
)
# The ledger's "approved by": what one approver decided.
Index("ix_approvals_approver", approvals.c.approver)

# The outbox: every message owed to someone, written in the transaction that causes it
# (notices.py, alerts.py) and delivered by the sender (sender.py), any replica claiming it.
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(36), primary_key=True),
    # What makes it one message: the same cause for the same recipient is owed only once.
    Column("dedupe", String(200), nullable=False, unique=True),
    Column("topic", String(40), nullable=False),  # approval.requested, alert.opened, ...
    Column("channel", String(64), nullable=False),  # a configured channel, or "email"
    Column("address", String(200)),  # the e-mail address when channel is "email"
    Column("recipient", String(200), nullable=False),  # principal, owner or subscription
    Column("subject", Text, nullable=False),  # one line, no personal data
    Column("document", Text, nullable=False),  # the message as JSON (messages.py)
    Column("action_id", String(36)),
    Column("alert_id", String(36)),
    Column("status", String(12), nullable=False),  # PENDING SENDING DELIVERED FAILED
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),  # while SENDING: a live sender holds it
    Column("last_error", Text),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True)),
)
Index("ix_notifications_due", notifications.c.status, notifications.c.next_attempt_at)
Index("ix_notifications_created", notifications.c.created_at)

# A channel's state as deliveries found it: failing since when, or turned off by a 410.
channel_states = Table(
    "channel_states",
    metadata,
    Column("channel", String(64), primary_key=True),
    Column("failing_since", DateTime(timezone=True)),
    Column("disabled_at", DateTime(timezone=True)),
    Column("last_error", Text),
)

# Owner alerts: one row per incident, open until its condition clears (alerts.py).
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("fingerprint", String(200), nullable=False),  # kind and subject: the incident
    Column("kind", String(32), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("owner", String(200), nullable=False),
    Column("status", String(10), nullable=False),  # OPEN | RESOLVED
    Column("summary", Text, nullable=False),
    Column("evidence", Text, nullable=False),  # JSON: since, last error, counts
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("reminded_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
)
OPEN_ALERT = alerts.c.status == "OPEN"
# One open alert per incident, whichever replica sees it first.
Index(
    "ux_alerts_open",
    alerts.c.fingerprint,
    unique=True,
    postgresql_where=OPEN_ALERT,
    sqlite_where=OPEN_ALERT,
)

# Where a reader of the audit trail got to (notices.py reads it once, in order).
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("id", String(36), nullable=False, unique=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("event", String(40), nullable=False),
    Column("principal", String(64), nullable=False),
    Column("principal_kind", String(10), nullable=False),
    Column("on_behalf_of", String(64)),
    Column("channel", String(16), nullable=False),
    Column("action_id", String(36)),
    Column("action_kind", String(40)),
    Column("target", String(120)),
    Column("outcome", String(20), nullable=False),
    Column("payload", Text, nullable=False),  # canonical JSON; classified values masked
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
Index("ix_audit_events_at", audit_events.c.at)
Index("ix_audit_events_principal", audit_events.c.principal)
Index("ix_audit_events_action_id", audit_events.c.action_id)

# One row: the chain's head. Appends lock it, so concurrent appends from any number of
# processes form one gap-free chain.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Drift (gateway/drift.py): the latest state of each record's copy that is not in sync (a
# record found in sync again is deleted), and of each copy as a whole at its last sweep.
# A pii field's values are never stored: `masked` says they were withheld.
drift_findings = Table(
    "drift_findings",
    metadata,
    Column("entity", String(64), nullable=False),
    Column("copy", String(64), nullable=False),
    Column("key", String(200), nullable=False),
    Column("field", String(120), nullable=False),
    Column("status", String(10), nullable=False),  # DRIFT | LAGGING | UNKNOWN
    Column("record_value", Text),
    Column("copy_value", Text),
    Column("masked", Boolean, nullable=False),
    Column("record_updated_at", DateTime(timezone=True)),
    Column("copy_updated_at", DateTime(timezone=True)),
    Column("first_seen", DateTime(timezone=True), nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("error", Text),
    PrimaryKeyConstraint("entity", "copy", "key"),
)
Index("ix_drift_findings_status", drift_findings.c.status)

drift_copies = Table(
    "drift_copies",
    metadata,
    Column("entity", String(64), nullable=False),
    Column("copy", String(64), nullable=False),
    Column("field", String(120), nullable=False),
    Column("owner", String(200), nullable=False),  # the contract's owner, told of drift
    Column("authority", String(64), nullable=False),  # the system of record's source
    Column("holder", String(64), nullable=False),  # the source holding the copy
    Column("status", String(10), nullable=False),  # IN_SYNC | DRIFT | UNKNOWN
    Column("checked", Integer, nullable=False),  # records compared at the last sweep
    Column("drifting", Integer, nullable=False),
    Column("lagging", Integer, nullable=False),
    Column("checked_at", DateTime(timezone=True), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),  # in this status since
    Column("seconds", Float, nullable=False),  # how long reading and comparing took
    Column("error", Text),  # why it could not be read (UNKNOWN): the source's public words
    PrimaryKeyConstraint("entity", "copy"),
)

# One row: which process runs the periodic sweep now, and when the next one is due.
drift_sweeps = Table(
    "drift_sweeps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True)),
)

GENESIS_HASH = "0" * 64

# Serializes `create_schema` across processes: PostgreSQL's CREATE TABLE is not safe to run
# concurrently (two creators collide on the pg_type row of the table's row type).
SCHEMA_LOCK = 0x6761_7465_686F_7573  # "gatehous"
# Connections older than this are replaced at checkout, before a server or firewall idle
# limit can cut them; a connection that died anyway fails its statement, which the caller
# sees as an error, and the pool drops it. No ping per checkout: that is a round trip each.
POOL_RECYCLE_SECONDS = 1800


def create_engine(url: str) -> AsyncEngine:
    """An engine for the gateway's database; SQLite waits on locks instead of failing.

    Its errors never show statement parameters: they hold actions' inputs, customer data
    included, and errors end up in logs.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=10,
        pool_recycle=POOL_RECYCLE_SECONDS,
        hide_parameters=True,
    )


# The audit chain's hash, computed in the database (audit.chain_sha256); PostgreSQL has one.
SQLITE_SHA256 = "gatehouse_sha256"


def _sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sqlite_pragmas(dbapi_connection: object, _: ConnectionPoolEntry) -> None:
    # WAL lets readers go on during a write; isolation_level None hands BEGIN to us.
    dbapi_connection.isolation_level = None  # type: ignore[attr-defined]
    dbapi_connection.create_function(  # type: ignore[attr-defined]
        SQLITE_SHA256, 1, _sha256_hex, deterministic=True
    )
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_immediate(connection: Connection) -> None:
    # A write transaction takes SQLite's write lock up front, so two writers queue on the
    # busy timeout instead of one failing later with "database is locked". A statement
    # that is a transaction of its own needs no BEGIN (sources.sql.single_statement_engine).
    if not connection.get_execution_options().get(SINGLE_STATEMENT):
        connection.exec_driver_sql("BEGIN IMMEDIATE")


async def create_schema(engine: AsyncEngine) -> None:
    """Create the tables that do not exist yet, and the audit chain's head row.

    On PostgreSQL, replicas starting together take turns: the lock is held to the commit.
    """
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK}
            )
        await connection.run_sync(metadata.create_all)
        await connection.run_sync(_check_columns)
        head = await connection.execute(audit_head.select().where(audit_head.c.id == 1))
        if head.first() is None:
            await connection.execute(audit_head.insert().values(id=1, seq=0, hash=GENESIS_HASH))


class SchemaOutdated(Exception):
    """The database holds the gateway's tables as an older release laid them out."""


def _check_columns(connection: Connection) -> None:
    # create_all adds missing tables, never missing columns: say so before a write fails.
    inspector = inspect(connection)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        if missing := [column.name for column in table.columns if column.name not in present]:
            raise SchemaOutdated(
                f"the gateway database's table {table.name} lacks column(s) "
                f"{', '.join(missing)}: it was created by an older Gatehouse. Export its audit "
                "trail (gatehouse audit export), then point GATEHOUSE_DATABASE_URL at a new "
                "database, or move the old one aside"
            )
