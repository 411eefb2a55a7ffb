"""Notification latency on the demo: from a governed write to its message at the receiver.

    python -m tests.bench.bench_notify [--writes N] [--gap SECONDS]

The demo estate runs as `gatehouse demo` runs it (ERP, CRM, storefront, and the local inbox:
SMTP with STARTTLS and a login, webhook receivers), with `gatehouse serve` in a process of
its own over the demo configuration. This process sends N writes over HTTP, one every
--gap seconds, alternating:

    review   restock-bot adjusts stock by +150: PENDING_APPROVAL, so finn (the one who may
             approve it) is e-mailed "Approval needed" through the SMTP server
    applied  olivia adjusts stock by +1: APPLIED, so the warehouse system's subscription
             receives a signed webhook

Latency is the inbox's time of receipt minus the moment the write was sent (one clock: the
same machine). Reported: p50 and p95 per channel, and the worst. A write wakes its
process's sender at once; writes of other replicas would be seen at its next tick
([notify] every, 1 s).

Not part of the test run; exits 1 when a message never arrives.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.demo import DemoEstate, running_estate
from gateway.demo.inbox_process import InboxProcess
from tests.serving import Gateway, demo_config

ADJUST = """mutation($input: AdjustInventoryInput!) {
  adjustInventory(input: $input) { status action { id } errors { code message } }
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=60)
    parser.add_argument("--gap", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, running_estate(Path(folder) / "demo") as estate:
        inbox = estate.mailroom.inbox
        assert inbox is not None
        gateway = _gateway(estate, Path(folder))
        url = gateway.start()
        try:
            sent = _send(url, estate, args.writes, args.gap)
            email, webhook = _arrivals(inbox, sent)
        finally:
            gateway.stop()
    return _report(email, webhook, sent)


def _gateway(estate: DemoEstate, folder: Path) -> Gateway:
    environ = {
        **os.environ,
        **estate.environ(),
        "GATEHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{folder / 'gatehouse.db'}",
    }
    config = demo_config(
        folder, writes={}, rates={"human": "100000/minute", "agent": "100000/minute"}
    )
    return Gateway("bench-notify", environ, config, folder)


def _send(url: str, estate: DemoEstate, writes: int, gap: float) -> dict[str, tuple[str, float]]:
    """Each action's id -> (which channel should tell of it, when it was sent)."""
    sent: dict[str, tuple[str, float]] = {}
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(writes):
            review = n % 2 == 0
            who = "restock-bot" if review else "olivia"
            sku = f"SKU-{(n % 20) + 1:04d}"
            data = {"sku": sku, "location": "WH-BER", "delta": 150 if review else 1}
            data["reason"] = "bench"
            started = time.time()
            answer = client.post(
                "/graphql",
                json={"query": ADJUST, "variables": {"input": data}},
                headers={"authorization": f"Bearer {estate.keys[who]}"},
            ).json()
            result = answer["data"]["adjustInventory"]
            expected = "PENDING_APPROVAL" if review else "APPLIED"
            assert result["status"] == expected, result
            sent[result["action"]["id"]] = ("email" if review else "webhook", started)
            time.sleep(gap)
    return sent


def _arrivals(
    inbox: InboxProcess, sent: dict[str, tuple[str, float]]
) -> tuple[list[float], list[float]]:
    email_ids = {a for a, (channel, _) in sent.items() if channel == "email"}
    hook_ids = set(sent) - email_ids
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mails = [m for m in inbox.messages() if _action_of_mail(m) in email_ids]
        hooks = [h for h in inbox.hooks("warehouse") if _action_of_hook(h) in hook_ids]
        if len(mails) >= len(email_ids) and len(hooks) >= len(hook_ids):
            break
        time.sleep(0.5)
    email = [_received(m) - sent[_action_of_mail(m)][1] for m in mails]
    webhook = [_received(h) - sent[_action_of_hook(h)][1] for h in hooks]
    return email, webhook


def _action_of_mail(mail: dict[str, Any]) -> str:
    # The console link in every message names the action.
    text = str(mail.get("text") or "")
    return text.split("/console/actions/", 1)[1].split()[0] if "/console/actions/" in text else ""


def _action_of_hook(hook: dict[str, Any]) -> str:
    body = hook.get("json") or {}
    return str(body.get("action", {}).get("id", ""))


def _received(message: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(message["received_at"])).timestamp()


def _report(email: list[float], webhook: list[float], sent: dict[str, tuple[str, float]]) -> int:
    expected = {
        c: sum(1 for channel, _ in sent.values() if channel == c) for c in ("email", "webhook")
    }
    print("notification latency, write sent -> message received (ms)")
    print(f"{'channel':<34} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}")
    missing = False
    for name, values, channel in (
        ("e-mail (SMTP, STARTTLS + AUTH)", email, "email"),
        ("signed webhook (subscription)", webhook, "webhook"),
    ):
        missing = missing or len(values) < expected[channel]
        if not values:
            print(f"{name:<34} {0:>4} {'-':>8} {'-':>8} {'-':>8}")
            continue
        ms = sorted(v * 1000 for v in values)
        p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
        print(f"{name:<34} {len(ms):>4} {statistics.median(ms):>8.0f} {p95:>8.0f} {ms[-1]:>8.0f}")
    if missing:
        print(f"missing messages: expected {expected}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
