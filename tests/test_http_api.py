"""HTTP wiring on a live server over loopback: auth, body limits, malformed JSON, batches."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from gateway import graphiql
from gateway.app import create_app
from gateway.config import GatewayConfig, GraphQLConfig
from gateway.demo import DemoEstate
from gateway.settings import Settings
from tests.factories import LiveServer, live_server

JWT_SECRET = "a-test-signing-secret-of-at-least-32-characters"
QUERY = {"query": '{ customer(id: "C-00001") { id name } }'}


@pytest.fixture(scope="module")
def server(estate: DemoEstate, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    database = tmp_path_factory.mktemp("gateway") / "gatehouse.db"
    settings = Settings(jwt_secret=JWT_SECRET, database_url=f"sqlite+aiosqlite:///{database}")
    with live_server(create_app(settings, estate.config())) as running:
        yield running


@pytest.fixture
def olivia(estate: DemoEstate) -> dict[str, str]:
    return {"Authorization": f"Bearer {estate.keys['olivia']}"}


def post(server: LiveServer, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{server.url}/graphql", json=body, headers=headers or {}, timeout=10)


def test_graphql_with_api_key_answers(server: LiveServer, olivia: dict[str, str]) -> None:
    response = post(server, QUERY, olivia)
    assert response.status_code == 200
    assert response.json()["data"]["customer"]["id"] == "C-00001"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer gh_olivia_wrongwrongwrong"},
        {"Authorization": "Basic b2xpdmlhOnB3"},
        {"Authorization": "Bearer"},
    ],
)
def test_graphql_missing_or_wrong_credential_is_401_without_data(
    server: LiveServer, headers: dict[str, str]
) -> None:
    response = post(server, QUERY, headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert "data" not in response.json()


def _token(subject: str, *, expires_in: float, secret: str = JWT_SECRET) -> str:
    claims = {"sub": subject, "exp": int(time.time() + expires_in)}
    return jwt.encode(claims, secret, algorithm="HS256")


def test_graphql_with_signed_jwt_answers_as_its_subject(server: LiveServer) -> None:
    token = _token("carla", expires_in=60)
    response = post(
        server, {"query": "{ me { id credential } }"}, {"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.json()["data"]["me"] == {"id": "carla", "credential": "jwt"}


@pytest.mark.parametrize(
    "token",
    [
        _token("carla", expires_in=-60),
        _token("carla", expires_in=60, secret="another-secret-that-is-also-32-chars-long"),
        _token("nobody", expires_in=60),
    ],
    ids=["expired", "wrong-signature", "unknown-subject"],
)
def test_graphql_with_bad_jwt_is_401(server: LiveServer, token: str) -> None:
    response = post(server, QUERY, {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_body_over_one_mebibyte_is_413(server: LiveServer, olivia: dict[str, str]) -> None:
    padding = " " * (1024 * 1024)
    body = json.dumps({"query": "{ __typename }" + padding})
    response = httpx.post(
        f"{server.url}/graphql",
        content=body,
        headers={**olivia, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413


def test_streamed_body_over_limit_without_length_is_413(
    server: LiveServer, olivia: dict[str, str]
) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"query": "{ __typename }", "x": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    response = httpx.post(
        f"{server.url}/graphql",
        content=chunks(),
        headers={**olivia, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413


def test_malformed_json_is_400(server: LiveServer, olivia: dict[str, str]) -> None:
    response = httpx.post(
        f"{server.url}/graphql",
        content=b'{"query": "{ __typename }"',
        headers={**olivia, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400


def test_batch_of_two_operations_answers_both(server: LiveServer, olivia: dict[str, str]) -> None:
    response = post(server, [QUERY, {"query": "{ me { id } }"}], olivia)
    assert response.status_code == 200
    first, second = response.json()
    assert first["data"]["customer"]["id"] == "C-00001"
    assert second["data"]["me"]["id"] == "olivia"


def test_batch_over_twenty_operations_is_rejected_before_sources(
    server: LiveServer, olivia: dict[str, str]
) -> None:
    before = _source_calls(server, olivia)
    response = post(server, [QUERY] * 21, olivia)
    assert response.status_code == 400
    assert "Too many operations" in response.text
    assert _source_calls(server, olivia) == before


def test_batch_of_five_mutations_runs_only_the_first(
    server: LiveServer, olivia: dict[str, str]
) -> None:
    adjust = (
        'mutation { adjustInventory(input: {sku: "SKU-0003", location: "WH-MAD", delta: 1, '
        'reason: "cycle count"}, dryRun: true) { status } }'
    )
    response = post(server, [{"query": adjust}] * 5, olivia)
    assert response.status_code == 200
    first, *rest = response.json()
    assert first["data"] == {"adjustInventory": {"status": "DRY_RUN"}}
    for answer in rest:
        assert answer["data"] is None
        (error,) = answer["errors"]
        assert error["extensions"] == {"code": "QUERY_REJECTED", "limit": "max_mutations"}
        assert "max_mutations = 1" in error["message"]


def _source_calls(server: LiveServer, headers: dict[str, str]) -> int:
    body = post(server, {"query": "{ sources { calls } }"}, headers).json()
    return sum(source["calls"] for source in body["data"]["sources"])


def test_graphiql_page_is_served_on_get_with_its_assets_from_the_gateway(
    server: LiveServer,
) -> None:
    if graphiql.missing():
        graphiql.install()
    response = httpx.get(f"{server.url}/graphql", timeout=10)
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
    assert "https://" not in response.text.replace("https://github.com", "")
    urls = re.findall(
        r'(?:src|href)="(/graphql/assets/[^"]+)"\s+integrity="([^"]+)"', response.text
    )
    assert len(urls) == len(graphiql.assets()) >= 5
    for url, integrity in urls:
        asset = httpx.get(f"{server.url}{url}", timeout=10)
        assert asset.status_code == 200, url
        algorithm, _, digest = integrity.partition("-")
        assert base64.b64encode(hashlib.new(algorithm, asset.content).digest()).decode() == digest
    assert httpx.get(f"{server.url}/graphql/assets/../app.py", timeout=10).status_code == 404


def test_production_posture_no_graphiql_no_introspection(
    estate: DemoEstate, olivia: dict[str, str], database_url: str
) -> None:
    config = estate.config().model_copy(update={"graphql": GraphQLConfig()})
    with live_server(create_app(Settings(database_url=database_url), config)) as server:
        page = httpx.get(f"{server.url}/graphql", timeout=10)
        name = next(iter(graphiql.assets()))
        asset = httpx.get(f"{server.url}/graphql/assets/{name}", timeout=10)
        schema = post(server, {"query": "{ __schema { types { name } } }"}, olivia)
        typo = post(server, {"query": '{ custmer(id: "C-00001") { id } }'}, olivia)
    assert page.status_code == 404
    assert "[graphql] graphiql" in page.text
    assert asset.status_code == 404
    assert schema.json()["errors"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED"
    assert "Did you mean" not in typo.text


def test_healthz_is_ok(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/healthz", timeout=10).json() == {"status": "ok"}


def test_internal_error_is_masked_without_traceback(
    estate: DemoEstate, olivia: dict[str, str], database_url: str
) -> None:
    # A config whose ERP table does not exist makes the database raise deep inside
    # SQLAlchemy; the caller must see a coded error naming the source, not a traceback.
    config: GatewayConfig = estate.config()
    broken = config.entities["Order"].model_copy(update={"table": "no_such_table"})
    config = config.model_copy(update={"entities": {**config.entities, "Order": broken}})
    with live_server(create_app(Settings(database_url=database_url), config)) as server:
        response = post(server, {"query": '{ order(id: "SO-100001") { id } }'}, olivia)
    assert response.status_code == 200
    error = response.json()["errors"][0]
    assert error["extensions"]["source"] == "erp"
    assert "Traceback" not in response.text


@pytest.mark.parametrize("amount", ["10.005", "NaN", "12345678901234567890"])
def test_invalid_decimal_input_is_echoed_as_json_not_500(
    server: LiveServer, olivia: dict[str, str], amount: str
) -> None:
    arguments = f'customerId: "C-00003", amount: "{amount}", currency: "EUR", reference: "BB-X3"'
    mutation = (
        f"mutation {{ recordPayment(input: {{{arguments}}}) {{ status action {{ id input }} }} }}"
    )

    response = post(server, {"query": mutation}, olivia)
    assert response.status_code == 200
    result = response.json()["data"]["recordPayment"]
    assert result["status"] == "INVALID"
    assert result["action"]["input"]["amount"] == amount


def test_deeply_nested_variables_are_400_naming_the_limit(
    server: LiveServer, olivia: dict[str, str]
) -> None:
    levels = 100_000
    body = '{"query": "query($v: JSON) { __typename }", "variables": {"v": %s}}' % (
        "[" * levels + "]" * levels
    )
    response = httpx.post(
        f"{server.url}/graphql",
        content=body,
        headers={**olivia, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert "max_json_depth" in error["message"]
    assert error["extensions"]["code"] == "QUERY_REJECTED"


def test_nested_variables_within_the_limit_answer(
    server: LiveServer, olivia: dict[str, str]
) -> None:
    nested: object = "[[ not a bracket {"
    for _ in range(30):
        nested = [nested, {"k": "]}"}]
    query = 'query($v: JSON!) { can(action: "adjustInventory", input: $v) { approvers } }'
    response = post(server, {"query": query, "variables": {"v": {"reason": nested}}}, olivia)
    assert response.status_code == 200
    assert response.json()["data"]["can"] == {"approvers": []}
