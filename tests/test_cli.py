"""`gatehouse policy check`: explain a decision from the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gateway.demo import CONFIG_TEMPLATE, DemoEstate


def policy_check(estate: DemoEstate, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "policy",
            "check",
            "--config",
            str(CONFIG_TEMPLATE),
            *args,
        ],
        env={**estate.environ(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("principal", "action", "data", "expected"),
    [
        (
            "restock-bot",
            "adjustInventory",
            {"sku": "SKU-0001", "location": "WH-BER", "delta": 50, "reason": "recount"},
            ["decision:  allow", "rule:      RESTOCK_WITHIN_LIMIT"],
        ),
        (
            "restock-bot",
            "inventory.adjust",
            {"sku": "SKU-0001", "location": "WH-BER", "delta": 500, "reason": "recount"},
            ["decision:  review", "RESTOCK_OVER_LIMIT", "could approve: finn"],
        ),
        (
            "support-bot",
            "recordPayment",
            {"customerId": "C-00001", "amount": "10.00", "currency": "EUR", "reference": "r-1"},
            ["decision:  deny", "rule:      AGENT_NO_PAYMENTS", "Agents may never"],
        ),
        (
            "carla",
            "cancelOrder",
            {"orderId": "SO-100001", "reason": "duplicate"},
            ["decision:  deny", "rule:      DEFAULT_DENY"],
        ),
    ],
)
def test_policy_check_prints_decision_and_rule(
    estate: DemoEstate,
    principal: str,
    action: str,
    data: dict[str, object],
    expected: list[str],
) -> None:
    result = policy_check(
        estate, "--principal", principal, "--action", action, "--input", json.dumps(data)
    )
    assert result.returncode == 0, result.stderr
    for line in expected:
        assert line in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--principal", "mallory", "--action", "adjustInventory"], "no principal named"),
        (["--principal", "olivia", "--action", "launchRocket"], "unknown action"),
        (
            ["--principal", "olivia", "--action", "adjustInventory", "--input", "{oops"],
            "--input is not JSON",
        ),
    ],
)
def test_policy_check_bad_arguments_exit_2_with_a_message(
    estate: DemoEstate, args: list[str], message: str
) -> None:
    result = policy_check(estate, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
