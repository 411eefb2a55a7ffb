"""`gatehouse demo`: one command brings the estate and the gateway up; Ctrl-C stops it all."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def read_banner(process: subprocess.Popen[str], timeout: float = 60) -> str:
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("The keys are also in"):
            return "".join(lines)
    raise AssertionError("no banner: " + "".join(lines))


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"{url} did not come up")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_demo_starts_prints_keys_answers_and_stops_everything(
    tmp_path: Path, stop: signal.Signals
) -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "gateway",
        "demo",
        "--port",
        str(port),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        _exercise(process, port, stop)


def _exercise(process: subprocess.Popen[str], port: int, stop: signal.Signals) -> None:
    try:
        banner = read_banner(process)
        key = re.search(r"^\s+olivia\s+(\S+)$", banner, re.MULTILINE)
        crm = re.search(r"CRM\s+(http://127\.0\.0\.1:\d+)", banner)
        inbox = re.search(r"Inbox\s+(http://127\.0\.0\.1:\d+)", banner)
        storefront = re.search(r"Storefront\s+(http://127\.0\.0\.1:\d+)", banner)
        assert key, banner
        assert crm, banner
        assert inbox, banner  # where the demo's notifications land
        assert storefront, banner
        base = f"http://127.0.0.1:{port}"
        wait_until_up(base)
        response = httpx.post(
            f"{base}/graphql",
            json={"query": '{ customer(id: "C-00001") { name freshness { system } } }'},
            headers={"Authorization": f"Bearer {key.group(1)}"},
            timeout=10,
        )
        assert response.json()["data"]["customer"]["freshness"]["system"] == "crm"
        process.send_signal(stop)
        assert process.wait(timeout=30) in (0, 130)
        assert _refused(crm.group(1)), "the CRM process outlived the demo"
        assert _refused(storefront.group(1)), "the storefront process outlived the demo"
        assert _refused(inbox.group(1)), "the inbox process outlived the demo"
        assert _refused(base)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _refused(url: str) -> bool:
    try:
        httpx.get(f"{url}/health", timeout=2)
    except httpx.ConnectError:
        return True
    return False


@pytest.mark.postgres  # not PostgreSQL, but as slow: Tryton is seeded on first use
def test_demo_tryton_estate_seeds_starts_tryton_answers_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "gateway", "demo", "--estate", "tryton"]
    command += ["--port", str(port), "--state-dir", str(tmp_path / "state")]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        try:
            banner = read_banner(process, timeout=600)
            key = re.search(r"^\s+olivia\s+(\S+)$", banner, re.MULTILINE)
            tryton = re.search(r"Tryton\s+(http://127\.0\.0\.1:\d+)/", banner)
            assert key, banner
            assert tryton, banner
            base = f"http://127.0.0.1:{port}"
            wait_until_up(base)
            query = (
                '{ customer(id: "C-00001") { name email freshness { system } } '
                'inventoryItem(sku: "SKU-1001") { name levels { location onHand } } }'
            )
            response = httpx.post(
                f"{base}/graphql",
                json={"query": query},
                headers={"Authorization": f"Bearer {key.group(1)}"},
                timeout=30,
            )
            data = response.json()["data"]
            assert data["customer"] == {
                "name": "Aurora Bakery",
                "email": "orders@aurora-bakery.example",
                "freshness": {"system": "erp"},
            }
            assert data["inventoryItem"]["levels"][0]["location"] == "WH"
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) in (0, 130)
            assert _refused(tryton.group(1)), "Tryton outlived the demo"
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
