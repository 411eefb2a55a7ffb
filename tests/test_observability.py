"""Operators' view: /metrics, /healthz, /readyz, traces, and logs free of secrets and PII."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.app import create_app
from gateway.config import BreakerConfig
from gateway.demo import DemoEstate
from gateway.logs import JsonFormatter
from gateway.settings import Settings
from gateway.telemetry import add_processor
from sources.demo import CrmProcess, build_estate, seed_crm
from tests.factories import LiveServer, live_server, with_source
from tests.serving import Gateway, demo_config

JWT_SECRET = "observability-test-secret-of-32-characters!"


@pytest.fixture(scope="module")
def spans() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    add_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="module")
def own_crm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrmProcess]:
    path = tmp_path_factory.mktemp("obs-crm") / "crm.db"
    seed_crm(path, build_estate())
    with CrmProcess.start(path) as process:
        yield process


@pytest.fixture(scope="module")
def server(
    estate: DemoEstate, own_crm: CrmProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    directory = tmp_path_factory.mktemp("obs")
    shutil.copy(estate.erp_url.split("///", 1)[1], directory / "erp.db")
    config = with_source(estate.config(), "erp", url=f"sqlite+aiosqlite:///{directory / 'erp.db'}")
    config = with_source(config, "crm", url=own_crm.url, timeout=1.0)
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{directory / 'gatehouse.db'}", jwt_secret=JWT_SECRET
    )
    with live_server(create_app(settings, config)) as running:
        yield running


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Everything the gateway logs during the test, as the JSON lines it writes."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("gatehouse")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.DEBUG)
    yield buffer
    logger.removeHandler(handler)
    logger.setLevel(previous)


def graphql(server: LiveServer, key: str, query: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition; 0 when absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample, _, label_text = series.partition("{")
        found = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample == name and found == wanted:
            return float(value)
    return 0.0


def test_metrics_counters_move_as_requests_are_made(server: LiveServer, estate: DemoEstate) -> None:
    before = httpx.get(f"{server.url}/metrics", timeout=10).text
    query = 'query Lookup { customer(id: "C-00007") { name } }'
    for _ in range(3):
        assert graphql(server, estate.keys["olivia"], query).status_code == 200
    after = httpx.get(f"{server.url}/metrics", timeout=10).text
    requests = "gatehouse_requests_total"
    assert (
        metric(after, requests, operation="graphql:Lookup", outcome="ok")
        - metric(before, requests, operation="graphql:Lookup", outcome="ok")
        == 3
    )
    hits = "gatehouse_cache_lookups_total"
    assert (
        metric(after, hits, entity="Customer", result="hit")
        - metric(before, hits, entity="Customer", result="hit")
        == 2
    )
    assert metric(
        after, "gatehouse_source_calls_total", source="crm", operation="read_many"
    ) > metric(before, "gatehouse_source_calls_total", source="crm", operation="read_many")
    assert "gatehouse_request_seconds_bucket" in after
    assert "gatehouse_pending_approvals" in after


def test_write_outcomes_are_counted_by_status(server: LiveServer, estate: DemoEstate) -> None:
    mutation = (
        'mutation { adjustInventory(input: {sku: "SKU-0009", location: "WH-AMS", '
        'delta: 2, reason: "recount"}) { status } }'
    )
    before = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert (
        graphql(server, estate.keys["olivia"], mutation).json()["data"]["adjustInventory"]["status"]
        == "APPLIED"
    )
    after = httpx.get(f"{server.url}/metrics", timeout=10).text
    name = "gatehouse_writes_total"
    assert (
        metric(after, name, kind="inventory.adjust", status="APPLIED")
        - metric(before, name, kind="inventory.adjust", status="APPLIED")
        == 1
    )


def test_health_and_readiness_name_a_stopped_source(
    server: LiveServer, own_crm: CrmProcess
) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    own_crm.stop()
    try:
        down = httpx.get(f"{server.url}/readyz", timeout=10)
        assert down.status_code == 503
        body = down.json()
        assert body["failing"] == ["crm"]
        assert body["sources"]["crm"]["ok"] is False
        assert body["sources"]["erp"]["ok"] is True
        assert httpx.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        own_crm.restart()
    assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200


def test_metrics_show_a_stopped_source_breaker_open_stale_served_then_closed(
    estate: DemoEstate, tmp_path: Path
) -> None:
    seed_crm(tmp_path / "crm.db", build_estate())
    crm = CrmProcess.start(tmp_path / "crm.db")
    breaker = BreakerConfig(failures=3, reset=3.0)
    config = with_source(estate.config(), "crm", url=crm.url, timeout=1.0, breaker=breaker)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}")
    query = '{ customer(id: "C-00003", maxAge: 0) { name freshness { status error } } }'
    key = estate.keys["olivia"]

    def crm_metrics() -> dict[str, float]:
        text = httpx.get(f"{server.url}/metrics", timeout=10).text
        states = {
            s: metric(text, "gatehouse_source_breaker_state", source="crm", state=s)
            for s in ("closed", "open", "half_open")
        }
        calls = metric(text, "gatehouse_source_calls_total", source="crm", operation="read_many")
        refused = metric(text, "gatehouse_source_refused_calls_total", source="crm")
        return {**states, "calls": calls, "refused": refused}

    with crm, live_server(create_app(settings, config)) as server:
        assert graphql(server, key, query).json()["data"]["customer"]["name"]
        before = crm_metrics()
        crm.stop()
        answers = [graphql(server, key, query).json()["data"]["customer"] for _ in range(20)]
        down = crm_metrics()
        crm.restart()
        time.sleep(3.1)
        probing = crm_metrics()
        back = graphql(server, key, query).json()["data"]["customer"]
        after = crm_metrics()

    assert {"closed": 1, "open": 0, "half_open": 0}.items() <= before.items()
    assert {a["freshness"]["status"] for a in answers} == {"STALE"}
    assert answers[-1]["freshness"]["error"] == "source 'crm' is unavailable (circuit open)"
    # The first read's 3 attempts open the breaker; the 19 reads after it are not sent.
    assert down["calls"] - before["calls"] == 3
    assert down["refused"] == 19
    assert {"closed": 0, "open": 1, "half_open": 0}.items() <= down.items()
    assert {"closed": 0, "open": 0, "half_open": 1}.items() <= probing.items()
    assert back["freshness"] == {"status": "FRESH", "error": None}
    assert {"closed": 1, "open": 0, "half_open": 0}.items() <= after.items()
    assert after["calls"] - down["calls"] == 1


def test_trace_id_is_in_the_response_and_the_audit_event(
    server: LiveServer, estate: DemoEstate, spans: InMemorySpanExporter
) -> None:
    response = graphql(
        server,
        estate.keys["olivia"],
        'mutation { adjustInventory(input: {sku: "SKU-0010", location: "WH-AMS", '
        'delta: 1, reason: "recount"}) { status action { id traceId } } }',
    )
    body = response.json()
    trace_id = body["extensions"]["traceId"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert body["data"]["adjustInventory"]["action"]["traceId"] == trace_id
    names = {s.name for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == trace_id}
    assert {
        "graphql anonymous",
        "write policy",
        "write validation",
        "write execution",
        "write audit",
    } <= names
    assert any(name.startswith("source ") for name in names)


def test_no_secret_or_pii_reaches_logs_or_spans(
    server: LiveServer,
    estate: DemoEstate,
    spans: InMemorySpanExporter,
    log_lines: io.StringIO,
) -> None:
    customer = httpx.get(f"{estate.crm.url}/api/customers/C-00011", timeout=10).json()
    new_email = "very.private.person@example-secret.org"
    new_phone = "+49 30 5550199"
    token = jwt.encode(
        {"sub": "olivia", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256"
    )
    secrets = [
        estate.keys["olivia"],
        estate.keys["support-bot"],
        token,
        JWT_SECRET,
        customer["email"],
        customer["phone"],
        new_email,
        new_phone,
    ]
    graphql(
        server,
        estate.keys["olivia"],
        '{ customer(id: "C-00011") { email phone contacts { email } } }',
    )
    graphql(server, token, '{ customer(id: "C-00011") { email } }')
    graphql(
        server,
        estate.keys["support-bot"],
        f'mutation {{ updateCustomerContact(input: {{customerId: "C-00011", '
        f'email: "{new_email}", phone: "{new_phone}"}}) {{ status }} }}',
    )
    graphql(
        server,
        estate.keys["support-bot"],
        'mutation { updateCustomerContact(input: {customerId: "C-00011", '
        'email: "not-an-email"}) { status } }',
    )
    httpx.post(
        f"{server.url}/graphql",
        json={"query": "{ me { id } }"},
        headers={"Authorization": "Bearer gh_wrong_key_that_must_not_be_logged"},
        timeout=10,
    )
    secrets.append("gh_wrong_key_that_must_not_be_logged")
    time.sleep(0.3)  # the last access log line is written just after its response
    logged = log_lines.getvalue()
    assert logged, "the gateway logs one event per request and per write"
    exported = "\n".join(str(s.to_json()) for s in spans.get_finished_spans())
    for secret in secrets:
        assert secret not in logged, secret
        assert secret not in exported, secret
    for line in logged.splitlines():
        assert re.fullmatch(r"[0-9a-f]{32}", json.loads(line)["trace_id"])


def test_logs_are_one_json_event_per_request(
    server: LiveServer, estate: DemoEstate, log_lines: io.StringIO
) -> None:
    graphql(server, estate.keys["olivia"], "{ me { id } }")
    # The access log is written once the response has gone out, a moment after the client
    # has it.
    deadline = time.monotonic() + 5
    requests: list[dict[str, object]] = []
    while not requests and time.monotonic() < deadline:
        events = [json.loads(line) for line in log_lines.getvalue().splitlines()]
        requests = [e for e in events if e["event"] == "request"]
        time.sleep(0.02)
    assert requests
    assert {"method", "path", "status", "duration_ms", "trace_id"} <= set(requests[-1])
    assert requests[-1]["path"] == "/graphql"


class _OtlpReceiver:
    """An OTLP/HTTP trace receiver on loopback that keeps every body it is sent."""

    def __init__(self) -> None:
        bodies = self.bodies = list[bytes]()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_serve_writes_only_redacted_json_lines_and_value_free_spans(
    estate: DemoEstate, tmp_path: Path
) -> None:
    """Everything `gatehouse serve` writes to stderr and exports over OTLP, through syntax and
    validation errors, refused and denied writes and a failing source."""
    shutil.copy(estate.erp_url.split("///", 1)[1], tmp_path / "erp.db")
    seed_crm(tmp_path / "crm.db", build_estate())
    crm = CrmProcess.start(tmp_path / "crm.db")
    receiver = _OtlpReceiver()
    environ = {
        **os.environ,
        **estate.environ(),
        "GATEHOUSE_ERP_URL": f"sqlite+aiosqlite:///{tmp_path / 'erp.db'}",
        "GATEHOUSE_CRM_URL": crm.url,
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gatehouse.db'}",
        "GATEHOUSE_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    gateway = Gateway("serve", environ, demo_config(tmp_path, writes={}), tmp_path)
    email, phone, iban, name = (
        "jane.doe@example.com",
        "+49 30 5550123",
        "DE89370400440532013000",
        "Zebulon Quackenbush",
    )
    wrong_key = "gh_wrong_key_that_must_not_be_logged"
    secrets = [email, phone, iban, name, wrong_key, *estate.keys.values()]
    try:
        url = gateway.start()

        def send(principal: str, query: str, variables: object = None) -> dict[str, Any]:
            key = estate.keys.get(principal, principal)
            response = httpx.post(
                f"{url}/graphql",
                json={"query": query, "variables": variables},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
            return dict(response.json())

        send("olivia", f'{{ customer(id: "{email}") {{ id ')  # a syntax error
        send("olivia", f'{{ customer(id: "{phone}") {{ nme }} }}')  # a validation error
        send("olivia", f'{{ customers(search: "{name}") {{ edges {{ node {{ nam }} }} }}')
        send("olivia", "query($n: Int) { customers(first: $n) { edges { cursor } } }", {"n": iban})
        denied = send(
            "support-bot",
            'mutation { recordPayment(input: {customerId: "C-00001", amount: "5.00", '
            f'currency: "EUR", reference: "{iban}"}}) {{ status }} }}',
        )
        assert denied["data"]["recordPayment"]["status"] == "DENIED"
        pending = send(
            "restock-bot",
            'mutation { adjustInventory(input: {sku: "SKU-0009", location: "WH-AMS", '
            f'delta: 200, reason: "{name} counted"}}) {{ status action {{ id }} }} }}',
        )["data"]["adjustInventory"]
        assert pending["status"] == "PENDING_APPROVAL"
        refused = send(
            "olivia",
            f'mutation {{ approveAction(id: "{pending["action"]["id"]}", comment: "{email}") '
            "{ status } }",
        )
        assert refused["errors"][0]["extensions"]["code"] == "APPROVAL_REFUSED"
        send(wrong_key, "{ me { id } }")
        crm.stop()
        failed = send("olivia", '{ customer(id: "C-00002") { name } }')
        assert failed["errors"][0]["extensions"]["code"] == "SOURCE_UNAVAILABLE"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"graphql" not in b"".join(receiver.bodies):
            time.sleep(0.1)
    finally:
        gateway.stop()
        crm.stop()
        receiver.close()
    written = gateway.log.read_text()
    exported = b"".join(receiver.bodies)
    assert b"source read_many" in exported
    assert "Traceback" not in written
    for secret in secrets:
        assert secret not in written, secret
        assert secret.encode() not in exported, secret
    events = [json.loads(line) for line in written.splitlines() if line.strip()]
    assert all(isinstance(event, dict) for event in events)
    codes = {event.get("code"): event for event in events if event["event"] == "graphql error"}
    assert {"GRAPHQL_VALIDATION_FAILED", "APPROVAL_REFUSED", "SOURCE_UNAVAILABLE"} <= set(codes)
    assert codes["APPROVAL_REFUSED"]["level"] == "INFO"
    assert "exception" not in codes["APPROVAL_REFUSED"]
