"""Create and seed a Tryton database: `python -m sources.tryton_estate.seed --db NAME ...`.

    1. create the database (an empty SQLite file, or CREATE DATABASE on PostgreSQL)
    2. trytond-admin activates the modules (MODULES and what they depend on)
    3. proteus seeds, through Tryton's own models and workflows (never SQL):
       company (EUR), chart of accounts, fiscal year with periods and invoice sequences,
       payment term and method, codes C-00001... for parties and SO-00001... for sales, customers
       with e-mail and phone and some with a credit limit, goods products SKU-1001...
       with stock in the warehouse, a confirmed sale with its posted invoice, and the
       non-privileged user `gatehouse`
    4. print one JSON line: what was made and how long each step took

The gatehouse user's password comes from the environment variable named by
--password-env, never from the command line. Runs in its own process because trytond
and proteus are imported here and nowhere else.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from sources.tryton_estate.server import TrytonDatabase, trytond_config

# The leaves of the order-to-cash estate; --activate-dependencies brings in party, company,
# currency, country, product, stock, account, account_product, account_invoice(_stock),
# sale and account_credit_limit.
MODULES = ("sale_credit_limit", "sale_stock_quantity")
USER_LOGIN = "gatehouse"
# Groups of the gateway's user: no administrator, no credit-limit or stock-quantity
# group (their members get warnings they may skip instead of refusals).
USER_GROUPS = (
    ("party", "group_party_admin"),
    ("product", "group_product_admin"),
    ("sale", "group_sale"),
    ("stock", "group_stock"),
    ("account", "group_account"),
)
CUSTOMERS = (
    # name, e-mail, phone, credit limit (EUR) or None
    ("Aurora Bakery", "orders@aurora-bakery.example", "+32 2 555 01 01", Decimal(5000)),
    ("Brightline Tools", "buying@brightline.example", "+32 2 555 01 02", Decimal(20000)),
    ("Cobalt Cafe", "hello@cobalt-cafe.example", "+32 2 555 01 03", Decimal(300)),
    ("Delta Hardware", "ap@delta-hardware.example", "+32 2 555 01 04", None),
    ("Evergreen Gardens", "office@evergreen.example", "+32 2 555 01 05", Decimal(1000)),
    ("Fjord Outfitters", "sales@fjord.example", "+32 2 555 01 06", None),
    ("Granite Builders", "procurement@granite.example", "+32 2 555 01 07", Decimal(50000)),
    ("Harbor Books", "books@harbor.example", "+32 2 555 01 08", None),
)
PRODUCTS = (
    # code, name, list price, cost price, quantity in stock
    ("SKU-1001", "Steel Hammer", Decimal("24.90"), Decimal("11.20"), 120),
    ("SKU-1002", "Cordless Drill", Decimal("129.00"), Decimal("71.50"), 35),
    ("SKU-1003", "Safety Gloves (pair)", Decimal("6.50"), Decimal("2.10"), 400),
    ("SKU-1004", "Measuring Tape 5 m", Decimal("9.90"), Decimal("3.80"), 150),
    ("SKU-1005", "Work Lamp LED", Decimal("49.00"), Decimal("22.00"), 12),
    ("SKU-1006", "Toolbox Large", Decimal("79.00"), Decimal("38.00"), 0),
)

_T = TypeVar("_T")


def main(argv: list[str] | None = None) -> int:
    """Create, activate and seed one database; print what was made as JSON."""
    args = _arguments(argv)
    password = os.environ.get(args.password_env, "")
    if len(password) < 8:
        sys.exit(f"set {args.password_env} to the gatehouse user's password (8+ characters)")
    database = TrytonDatabase(name=args.db, backend=args.backend, location=args.path)
    if database.backend == "postgresql":
        # Activation commits thousands of times; waiting for each flush to disk would
        # double its time, and a seed cut short is thrown away whole anyway.
        os.environ["PGOPTIONS"] = "-c synchronous_commit=off"
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="tryton-seed-") as scratch:
        config_file = Path(scratch) / "trytond.conf"
        config_file.write_text(trytond_config(database))
        _timed(timings, "create", lambda: _create_database(database))
        _timed(timings, "activate", lambda: _activate(config_file, database.name, scratch))
        made = _timed(timings, "seed", lambda: _seed(database, config_file, password))
    print(json.dumps({"database": database.name, "timings": timings, **made}))
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="database name")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), required=True)
    parser.add_argument(
        "--path", required=True, help="SQLite: a directory; PostgreSQL: a server URI"
    )
    parser.add_argument(
        "--password-env",
        default="GATEHOUSE_TRYTON_PASSWORD",
        help="the environment variable holding the gatehouse user's password",
    )
    return parser.parse_args(argv)


def _timed(timings: dict[str, float], step: str, run: Callable[[], _T]) -> _T:
    started = time.monotonic()
    result = run()
    timings[step] = round(time.monotonic() - started, 2)
    return result


def _create_database(database: TrytonDatabase) -> None:
    if database.backend == "sqlite":
        path = Path(database.location) / f"{database.name}.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            sys.exit(f"{path} exists already")
        sqlite3.connect(path).close()
        return
    import psycopg

    with psycopg.connect(database.location, dbname="postgres", autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE \"{database.name}\" ENCODING 'UTF8'")


def _activate(config_file: Path, name: str, scratch: str) -> None:
    # The admin's password is needed by trytond-admin only; nobody logs in as admin.
    passfile = Path(scratch) / "admin-password"
    passfile.write_text(secrets.token_urlsafe(24))
    admin = str(Path(sys.executable).with_name("trytond-admin"))
    command = [admin, "-c", str(config_file), "-d", name, "--all", "--activate-dependencies"]
    command += ["-u", *MODULES, "--email", "admin@gatehouse.example"]
    env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
    # Our own venv's trytond-admin with typed arguments, no shell.
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)  # noqa: S603


def _seed(database: TrytonDatabase, config_file: Path, password: str) -> dict[str, Any]:
    from proteus import config as proteus_config  # type: ignore[import-untyped]

    configuration = proteus_config.set_trytond(database.uri, config_file=str(config_file))
    company = _company(configuration)
    accounts = _chart(company)
    _fiscal_year(company)
    payment_term = _payment_term()
    _payment_method(company, accounts)
    _sequences()
    customers = _customers(company)
    warehouse, storage = _locations()
    products = _products(accounts)
    _stock(storage, products)
    sale = _sale(customers[1], payment_term, products)
    _user(password, company, warehouse)
    return {
        "company": company.id,
        "warehouse": warehouse.id,
        "storage": storage.id,
        "customers": {party.code: party.id for party in customers},
        "products": {product.code: product.id for product in products},
        "sale": sale.id,
    }


def _model(name: str) -> Any:
    from proteus import Model

    return Model.get(name)


def _company(configuration: Any) -> Any:
    from proteus import Wizard

    currency = _model("currency.currency")(name="Euro", symbol="€", code="EUR")
    currency.rounding = Decimal("0.01")
    currency.save()
    party = _model("party.party")(name="Gatehouse Trading", code="GH")
    party.save()
    wizard = Wizard("company.company.config")
    wizard.execute("company")
    wizard.form.party = party
    wizard.form.currency = currency
    wizard.execute("add")
    # The admin's context gains the new company, as a client's would after login.
    configuration._context = _model("res.user").get_preferences(True, {})
    (company,) = _model("company.company").find()
    return company


def _chart(company: Any) -> dict[str, Any]:
    from proteus import Wizard

    template_id = _model("ir.model.data").get_id("account", "account_template_root_en", {})
    wizard = Wizard("account.create_chart")
    wizard.execute("account")
    wizard.form.account_template = _model("account.account.template")(template_id)
    wizard.form.company = company
    wizard.execute("create_account")
    accounts = _accounts(company)
    wizard.form.account_receivable = accounts["receivable"]
    wizard.form.account_payable = accounts["payable"]
    wizard.form.category_account_expense = accounts["expense"]
    wizard.form.category_account_revenue = accounts["revenue"]
    wizard.execute("create_properties")
    return accounts


def _accounts(company: Any) -> dict[str, Any]:
    account = _model("account.account")
    found = {}
    for kind in ("receivable", "payable", "revenue", "expense"):
        (found[kind],) = account.find(
            [(f"type.{kind}", "=", True), ("company", "=", company.id), ("closed", "!=", True)],
            limit=1,
        )
    (found["cash"],) = account.find([("company", "=", company.id), ("code", "=", "1.1.1")])
    return found


def _fiscal_year(company: Any) -> None:
    year = dt.date.today().year  # noqa: DTZ011 - Tryton's dates are the company's local dates
    sequence_type = _model("ir.sequence.type")
    strict = _model("ir.sequence.strict")
    (move_type,) = sequence_type.find([("name", "=", "Account Move")], limit=1)
    (invoice_type,) = sequence_type.find([("name", "=", "Invoice")], limit=1)
    moves = strict(name=f"Moves {year}", sequence_type=move_type, company=company)
    moves.save()
    invoices = strict(name=f"Invoices {year}", sequence_type=invoice_type, company=company)
    invoices.prefix = f"INV-{year}-"
    invoices.padding = 5
    invoices.save()
    fiscal_year = _model("account.fiscalyear")(name=str(year), company=company)
    fiscal_year.start_date = dt.date(year, 1, 1)
    fiscal_year.end_date = dt.date(year, 12, 31)
    fiscal_year.move_sequence = moves
    (sequences,) = fiscal_year.invoice_sequences
    sequences.out_invoice_sequence = sequences.in_invoice_sequence = invoices
    sequences.out_credit_note_sequence = sequences.in_credit_note_sequence = invoices
    fiscal_year.save()
    fiscal_year.click("create_period")


def _payment_term() -> Any:
    term = _model("account.invoice.payment_term")(name="Net 30")
    line = term.lines.new(type="remainder")
    line.relativedeltas.new(days=30)
    term.save()
    return term


def _payment_method(company: Any, accounts: dict[str, Any]) -> None:
    # What the account.invoice.pay wizard records a customer's payment with.
    (journal,) = _model("account.journal").find([("type", "=", "cash")], limit=1)
    method = _model("account.invoice.payment.method")(name="Bank transfer", company=company)
    method.journal = journal
    method.debit_account = method.credit_account = accounts["cash"]
    method.save()


def _sequences() -> None:
    # Parties (ours and the gateway's) get C-00001, C-00002, ...; sales SO-00001, ...
    codes = (("party", "sequence_party", "C-"), ("sale", "sequence_sale", "SO-"))
    for module, xml_id, prefix in codes:
        sequence = _model("ir.sequence")(_model("ir.model.data").get_id(module, xml_id, {}))
        sequence.prefix = prefix
        sequence.padding = 5
        sequence.save()


def _customers(company: Any) -> list[Any]:
    party_model = _model("party.party")
    customers = []
    for number, (name, email, phone, credit_limit) in enumerate(CUSTOMERS, start=1):
        party = party_model(name=name)
        address = party.addresses[0] if party.addresses else party.addresses.new()
        address.street = f"{number * 7} Market Street"
        address.postal_code = f"10{number:02d}"
        address.city = "Brussels"
        party.contact_mechanisms.new(type="email", value=email)
        party.contact_mechanisms.new(type="phone", value=phone)
        party.save()
        if credit_limit is not None:
            party.credit_limit_amount = credit_limit
            party.save()
        customers.append(party)
    return customers


def _locations() -> tuple[Any, Any]:
    location = _model("stock.location")
    (warehouse,) = location.find([("code", "=", "WH")])
    (storage,) = location.find([("code", "=", "STO")])
    return warehouse, storage


def _products(accounts: dict[str, Any]) -> list[Any]:
    category = _model("product.category")(name="Goods", accounting=True)
    category.account_revenue = accounts["revenue"]
    category.account_expense = accounts["expense"]
    category.save()
    (unit,) = _model("product.uom").find([("name", "=", "Unit")])
    products = []
    for code, name, list_price, cost_price, _quantity in PRODUCTS:
        template = _model("product.template")(name=name, code=code, type="goods")
        template.default_uom = unit
        template.salable = True
        template.list_price = list_price
        template.account_category = category
        (product,) = template.products
        product.cost_price = cost_price
        template.save()
        products.append(template.products[0])
    return products


def _stock(storage: Any, products: list[Any]) -> None:
    inventory = _model("stock.inventory")(location=storage)
    for product, (*_, quantity) in zip(products, PRODUCTS, strict=True):
        if quantity:
            line = inventory.lines.new(product=product)
            line.quantity = quantity
    inventory.click("confirm")


def _sale(customer: Any, payment_term: Any, products: list[Any]) -> Any:
    sale = _model("sale.sale")(party=customer, payment_term=payment_term)
    sale.description = "Seeded order"
    # Shipped on the last day of the year: Tryton's forecast leaves out moves planned for a
    # past day that are not done, and this seed is kept (and reused) for the whole year.
    sale.shipping_date = dt.date(dt.date.today().year, 12, 31)  # noqa: DTZ011 - local dates
    for product, quantity in ((products[0], 10), (products[2], 40)):
        line = sale.lines.new(product=product)
        line.quantity = quantity
    sale.click("quote")
    sale.click("confirm")
    sale.reload()
    for invoice in sale.invoices:
        invoice.click("post")
    return sale


def _user(password: str, company: Any, warehouse: Any) -> None:
    data = _model("ir.model.data")
    group = _model("res.group")
    user = _model("res.user")(name="Gatehouse gateway", login=USER_LOGIN)
    user.password = password
    user.companies.append(company)
    user.company = company
    user.warehouse = warehouse
    for module, xml_id in USER_GROUPS:
        user.groups.append(group(data.get_id(module, xml_id, {})))
    user.save()


if __name__ == "__main__":
    sys.exit(main())
