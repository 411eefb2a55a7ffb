"""What a person does in the console, as HTTP: sign in, read a form's token, post a form."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass(frozen=True)
class Console:
    """A live gateway: its URL, the demo keys, and its database file."""

    url: str
    keys: dict[str, str]
    database: Path

    def client(self) -> httpx.Client:
        """A browser-like client: keeps cookies, does not follow redirects by itself."""
        return httpx.Client(base_url=self.url, follow_redirects=False, timeout=15)

    @contextmanager
    def signed_in(self, principal: str) -> Iterator[httpx.Client]:
        """A client with a console session for `principal`."""
        with self.client() as client:
            response = sign_in(client, self.keys[principal])
            assert response.status_code == 303, response.text
            yield client

    def graphql(self, principal: str, query: str) -> dict[str, Any]:
        """Run a GraphQL document as `principal`; its `data`."""
        response = httpx.post(
            f"{self.url}/graphql",
            json={"query": query},
            headers={"Authorization": f"Bearer {self.keys[principal]}"},
            timeout=15,
        )
        body: dict[str, Any] = response.json()
        assert "errors" not in body, body
        data: dict[str, Any] = body["data"]
        return data

    def pending_restock(self, delta: int = 150, sku: str = "SKU-0001") -> str:
        """A restock by restock-bot over its limit of 100 units: waits for a human."""
        data = self.graphql(
            "restock-bot",
            f'mutation {{ adjustInventory(input: {{sku: "{sku}", location: "WH-BER", '
            f'delta: {delta}, reason: "inbound pallet {uuid.uuid4().hex[:6]}"}}) '
            "{ status action { id } } }",
        )
        result = data["adjustInventory"]
        assert result["status"] == "PENDING_APPROVAL", result
        action_id: str = result["action"]["id"]
        return action_id

    def status_of(self, action_id: str) -> str:
        """An action's status, as its requester sees it through GraphQL."""
        data = self.graphql("restock-bot", f'{{ action(id: "{action_id}") {{ status }} }}')
        status: str = data["action"]["status"]
        return status

    def audit_count(self) -> int:
        """How many audit events the gateway's database holds."""
        return int(self.sql("SELECT count(*) FROM audit_events")[0][0])

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """Run SQL on the gateway's database file (to look behind the console's back)."""
        with sqlite3.connect(self.database) as connection:
            return list(connection.execute(statement, params))


def csrf_token(html: str) -> str:
    """The CSRF token of the first form on a page."""
    found = CSRF.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def sign_in(client: httpx.Client, api_key: str, next_path: str = "") -> httpx.Response:
    """Open the sign-in page and post the key with the form's token."""
    form = client.get("/console/login")
    return client.post(
        "/console/login",
        data={"api_key": api_key, "csrf_token": csrf_token(form.text), "next": next_path},
    )
