"""Configuration: validated at start-up, with errors naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.demo import CONFIG_TEMPLATE, TRYTON_CONFIG_TEMPLATE, DemoEstate
from gateway.errors import ConfigError
from tests.serving import serve_refused


@pytest.fixture
def environ(estate: DemoEstate) -> dict[str, str]:
    return estate.environ()


def write_variant(tmp_path: Path, old: str, new: str) -> Path:
    """The demo config with one piece of text replaced, next to a link to the policies."""
    text = CONFIG_TEMPLATE.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "gatehouse.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_demo_config_loads_with_every_field_contracted(environ: dict[str, str]) -> None:
    config = load_config(CONFIG_TEMPLATE, environ=environ)
    assert set(config.entities) == {"Customer", "InventoryItem", "Order", "Balance"}
    assert config.entities["Customer"].warn_after == 600
    assert config.policy_path("model").is_file()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('warn_after = "10m"', 'warn_afer = "10m"', "entities.Customer.warn_afer: unknown key"),
        ('kind = "sql"', 'kind = "mysql"', "sources.erp.kind"),
        ('error_after = "1h"', 'error_after = "soon"', "entities.Customer.error_after"),
        (
            'email = { classification = "pii"',
            'email = { classification = "secret"',
            "entities.Customer.fields.email.classification",
        ),
        (
            'email = { classification = "pii"',
            'email = { system = "erp", classification = "pii"',
            "two systems of record",
        ),
        ('source = "crm"', 'source = "salesforce"', "no source named 'salesforce'"),
        ('on_behalf_of = "olivia"', 'on_behalf_of = "storefront"', "not a human principal"),
        ('key = "sku"', 'key = "sku_code"', "'sku_code' is not one of this entity's fields"),
        (
            'breaker = { failures = 5, reset = "30s" }',
            'breaker = { failures = 5, rest = "30s" }',
            "sources.crm.breaker.rest: unknown key",
        ),
        ("breaker = { failures = 5,", "breaker = { failures = 0,", "sources.crm.breaker.failures"),
        ("read_retry = { attempts = 3,", "read_retry = { attempts = 0,", "read_retry.attempts"),
        (
            'name = { classification = "public" }',
            'name = { classification = "public", min = 0 }',
            "min and max bound int and decimal fields only",
        ),
        (
            'fields.on_hand = { type = "int", classification = "internal", min = 0 }',
            'fields.on_hand = { type = "int", classification = "internal", min = 9, max = 1 }',
            "entities.InventoryItem.children.levels.fields.on_hand: min must not be greater",
        ),
    ],
)
def test_config_with_mistake_names_the_key(
    tmp_path: Path, environ: dict[str, str], old: str, new: str, expected: str
) -> None:
    path = write_variant(tmp_path, old, new)
    with pytest.raises(ConfigError) as error:
        load_config(path, environ=environ)
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_config_missing_environment_variable_names_it(environ: dict[str, str]) -> None:
    del environ["GATEHOUSE_CRM_URL"]
    with pytest.raises(
        ConfigError,
        match=r"sources\.crm\.url: environment variable "
        "GATEHOUSE_CRM_URL is not set",
    ):
        load_config(CONFIG_TEMPLATE, environ=environ)


def test_config_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[sources.erp\nkind = 'sql'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_serve_with_typo_exits_2_naming_the_key(tmp_path: Path, environ: dict[str, str]) -> None:
    path = write_variant(tmp_path, "cache_size = 20000", "cache_sise = 20000")
    result = serve_refused(path, environ)
    assert result.returncode == 2
    assert "entities.Customer.cache_sise: unknown key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            '"sources.demo.actions.inventory:AdjustInventory"',
            '"sources.demo.actions.inventory:AdjustStock"',
            "actions.adjust_inventory.implementation: cannot import",
        ),
        (
            '"sources.demo.actions.inventory:AdjustInventory"',
            '"acme.nowhere:AdjustInventory"',
            "actions.adjust_inventory.implementation: cannot import",
        ),
        (
            '"sources.demo.actions.inventory:AdjustInventory"',
            '"sources.demo.actions.erp:ErpAction"',
            "actions.adjust_inventory.implementation: 'sources.demo.actions.erp:ErpAction' lacks",
        ),
        (
            '"sources.demo.actions.orders:PlaceOrder"\nsource = "erp"',
            '"sources.demo.actions.orders:PlaceOrder"\nsource = "warehouse"',
            "actions.place_order.source: no source named 'warehouse'",
        ),
        (
            '"sources.demo.actions.orders:CancelOrder"',
            '"sources.demo.actions.inventory:AdjustInventory"',
            "actions.cancel_order: 'inventory.adjust' is also the name of actions.adjust_inventory",
        ),
        (
            '"sources.demo.actions.inventory:AdjustInventory"',
            '"tests.acme.actions:RenameInStyle"',
            "action 'item.rename_in_style' ('tests.acme.actions:RenameInStyle'): its Input cannot "
            "be a GraphQL input",
        ),
    ],
)
def test_serve_with_bad_action_exits_2_naming_the_key(
    tmp_path: Path, environ: dict[str, str], old: str, new: str, expected: str
) -> None:
    path = write_variant(tmp_path, old, new)
    done = serve_refused(path, {**environ, "GATEHOUSE_DATABASE_URL": "sqlite+aiosqlite://"})
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_tryton_estate_contracts_each_entitys_key_as_the_demo_does(
    environ: dict[str, str],
) -> None:
    # Agents and apps read one contract whichever ERP answers: a key is never null in either.
    tryton_environ = {
        **environ,
        "GATEHOUSE_TRYTON_URL": "http://127.0.0.1:8000/",
        "GATEHOUSE_TRYTON_DATABASE": "tryton",
        "GATEHOUSE_TRYTON_USER": "gatehouse",
    }
    demo = load_config(CONFIG_TEMPLATE, environ=environ)
    tryton = load_config(TRYTON_CONFIG_TEMPLATE, environ=tryton_environ)
    for name, entity in demo.entities.items():
        assert entity.fields[entity.key].required, name
        other = tryton.entities[name]
        assert other.key == entity.key, name
        assert other.fields[other.key].required, name
