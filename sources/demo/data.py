"""Deterministic demo data for the order-to-cash estate.

    build_estate(seed, now)
    ├── locations                      three distribution centres
    ├── customers + accounts           CRM profile and ERP account (currency, terms, credit limit)
    ├── items + prices + stock_levels  catalogue, price list per currency, per-location stock
    ├── orders (lines)                 placed in the 120 days before `now`
    ├── invoices                       one per shipped or delivered order
    ├── payments                       full, partial or none, by the customer's paying habit
    └── credit_notes                   a handful, against unpaid invoice amounts

The same seed and `now` always give the same estate; money is `Decimal` with two places.
"""

from __future__ import annotations

import itertools
import random
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
HISTORY_DAYS = 120
REGIONS = ("EU-NORTH", "EU-WEST", "EU-SOUTH")
SEGMENTS = ("smb", "mid-market", "enterprise")
ORDER_STATUSES = ("open", "shipped", "delivered", "cancelled")
# A fixed price list per currency, so a GBP customer's order is priced in GBP, exactly.
PRICE_LIST_RATES = {"EUR": Decimal(1), "GBP": Decimal("0.86"), "USD": Decimal("1.08")}


@dataclass(frozen=True)
class Location:
    """A distribution centre that holds stock."""

    code: str
    name: str


@dataclass(frozen=True)
class Contact:
    """A person at a customer."""

    name: str
    email: str
    role: str


@dataclass(frozen=True)
class Customer:
    """A customer as the CRM holds it."""

    id: str
    name: str
    email: str
    phone: str
    region: str
    segment: str
    contacts: tuple[Contact, ...]
    updated_at: datetime


@dataclass(frozen=True)
class Account:
    """A customer's account in the ERP ledger."""

    customer_id: str
    currency: str
    credit_limit: Decimal
    payment_terms_days: int
    updated_at: datetime


@dataclass(frozen=True)
class Item:
    """A catalogue item; its own price is in EUR (the price list has every currency)."""

    sku: str
    name: str
    description: str
    unit_price: Decimal
    currency: str
    active: bool
    updated_at: datetime


@dataclass(frozen=True)
class StockLevel:
    """Stock of one item at one location."""

    sku: str
    location: str
    on_hand: int
    reserved: int
    reorder_point: int
    updated_at: datetime


@dataclass(frozen=True)
class OrderLine:
    """One line of a sales order."""

    order_id: str
    line_no: int
    sku: str
    quantity: int
    unit_price: Decimal
    line_total: Decimal


@dataclass(frozen=True)
class Order:
    """A sales order with its lines."""

    id: str
    customer_id: str
    status: str
    currency: str
    total: Decimal
    placed_at: datetime
    updated_at: datetime
    lines: tuple[OrderLine, ...]


@dataclass(frozen=True)
class Invoice:
    """An invoice for a shipped or delivered order."""

    id: str
    customer_id: str
    order_id: str
    currency: str
    amount: Decimal
    issued_at: datetime
    due_date: date
    updated_at: datetime


@dataclass(frozen=True)
class Payment:
    """Money received from a customer; the reference names the invoice it settles."""

    id: str
    customer_id: str
    currency: str
    amount: Decimal
    reference: str
    received_at: datetime


@dataclass(frozen=True)
class CreditNote:
    """A credit granted to a customer against an order."""

    id: str
    customer_id: str
    order_id: str
    currency: str
    amount: Decimal
    reason: str
    issued_at: datetime


@dataclass(frozen=True)
class ListPrice:
    """What one unit of an item costs in one currency: orders are priced from this list."""

    sku: str
    currency: str
    unit_price: Decimal


def list_price(item: Item, currency: str) -> Decimal:
    """The item's price in `currency`, at the price list's fixed rate, to the cent."""
    return (item.unit_price * PRICE_LIST_RATES[currency]).quantize(CENT, ROUND_HALF_UP)


@dataclass(frozen=True)
class Estate:
    """Everything the demo ERP and CRM hold, as of `as_of`."""

    as_of: datetime
    locations: tuple[Location, ...]
    customers: tuple[Customer, ...]
    accounts: tuple[Account, ...]
    items: tuple[Item, ...]
    prices: tuple[ListPrice, ...]
    stock_levels: tuple[StockLevel, ...]
    orders: tuple[Order, ...]
    invoices: tuple[Invoice, ...]
    payments: tuple[Payment, ...]
    credit_notes: tuple[CreditNote, ...]


@dataclass(frozen=True)
class _Country:
    """Where a customer is based: drives region, legal form, phone prefix and currency."""

    region: str
    tld: str
    legal_forms: tuple[str, ...]
    phone_prefix: str
    currency: str


LOCATIONS = (
    Location("WH-BER", "Berlin DC"),
    Location("WH-AMS", "Amsterdam DC"),
    Location("WH-MAD", "Madrid DC"),
)
_COUNTRIES = (
    _Country("EU-NORTH", "de", ("GmbH", "AG", "GmbH & Co. KG"), "+49", "EUR"),
    _Country("EU-NORTH", "dk", ("ApS", "A/S"), "+45", "EUR"),
    _Country("EU-NORTH", "se", ("AB",), "+46", "EUR"),
    _Country("EU-WEST", "nl", ("B.V.", "N.V."), "+31", "EUR"),
    _Country("EU-WEST", "be", ("BV", "NV"), "+32", "EUR"),
    _Country("EU-WEST", "fr", ("SAS", "SARL"), "+33", "EUR"),
    _Country("EU-WEST", "co.uk", ("Ltd", "plc"), "+44", "GBP"),
    _Country("EU-SOUTH", "es", ("S.L.", "S.A."), "+34", "EUR"),
    _Country("EU-SOUTH", "it", ("S.r.l.", "S.p.A."), "+39", "EUR"),
    _Country("EU-SOUTH", "pt", ("Lda.", "S.A."), "+351", "EUR"),
)
_NAME_STEMS = (
    "Nordlicht",
    "Alpenblick",
    "Rheinfeld",
    "Hafenkante",
    "Blauwater",
    "Eikenhof",
    "Solmar",
    "Costa Verde",
    "Lumen",
    "Vasterby",
    "Kronberg",
    "Brightwell",
    "Atlas",
    "Meridian",
    "Oakridge",
    "Silverline",
    "Zuiderzee",
    "Montblanc",
    "Castellano",
    "Fjordline",
    "Greenfield",
    "Ironbridge",
    "Lindenhof",
    "Polaris",
    "Riverside",
    "Seeblick",
    "Tramontana",
    "Vega",
    "Westhaven",
    "Zenit",
    "Aurora",
    "Bergmann",
    "Delta",
    "Elbtal",
    "Falcon",
    "Granite",
    "Helix",
    "Isar",
    "Juniper",
)
_TRADES = (
    "Bakery",
    "Logistics",
    "Tooling",
    "Print",
    "Foods",
    "Electrics",
    "Hospitality",
    "Facilities",
    "Engineering",
    "Construction",
    "Medical Supplies",
    "Packaging",
    "Automotive",
    "Office Services",
    "Hardware",
    "Cleaning",
    "Manufacturing",
    "Retail",
    "Furniture",
    "Catering",
)
_FIRST_NAMES = {
    "EU-NORTH": ("Anna", "Lukas", "Sofie", "Jonas", "Freja", "Mats", "Lena", "Felix", "Ingrid"),
    "EU-WEST": ("Emma", "Daan", "Chloé", "Lucas", "Olivia", "Thomas", "Sanne", "Hugo", "Niamh"),
    "EU-SOUTH": ("Lucía", "Marco", "Inês", "Javier", "Giulia", "Pedro", "Carmen", "Luca", "Ana"),
}
_LAST_NAMES = {
    "EU-NORTH": ("Müller", "Schneider", "Jensen", "Lindqvist", "Hansen", "Becker", "Nilsson"),
    "EU-WEST": ("de Vries", "Jansen", "Dubois", "Peeters", "Smith", "Martin", "Bakker"),
    "EU-SOUTH": ("García", "Rossi", "Silva", "Fernández", "Bianchi", "Santos", "Moreno"),
}
_ROLES = (
    "Purchasing Manager",
    "Accounts Payable",
    "Operations Manager",
    "Managing Director",
    "Warehouse Lead",
    "Office Manager",
)
# (name template, description, low price, high price); "{x|y}" expands to one item per alternative.
_CATALOGUE = (
    (
        "Stainless bolt {M6|M8|M10|M12}x{30|40|50|60|80} (box of 100)",
        "A2 hex bolts, DIN 933.",
        "8",
        "45",
    ),
    (
        "Hex nut {M5|M6|M8|M10|M12|M16} zinc-plated (box of 200)",
        "Steel hex nuts, DIN 934.",
        "4",
        "18",
    ),
    (
        "Wood screw {3.5|4|4.5|5|6}x{30|40|50|60|80} mm (box of 500)",
        "Torx chipboard screws.",
        "6",
        "25",
    ),
    ("Wall plug {5|6|8|10|12} mm (pack of 100)", "Nylon expansion plugs for masonry.", "3", "12"),
    ("Threaded rod {M6|M8|M10|M12} x 1 m (pack of {5|10})", "Zinc-plated, DIN 976.", "9", "35"),
    (
        "Drill bit set HSS {1-10|1-13} mm ({19|25} pieces)",
        "Ground cobalt HSS bits in a case.",
        "15",
        "65",
    ),
    ("A4 copy paper {80|90|100} g/m² ({1 ream|5 reams})", "FSC-certified copy paper.", "5", "40"),
    (
        "Ballpoint pen {black|blue|red} (pack of {20|50})",
        "Retractable pens, medium tip.",
        "6",
        "22",
    ),
    (
        "Lever arch file {50|80} mm {black|blue|red|grey}",
        "Lever arch file with metal edge.",
        "2",
        "6",
    ),
    ("Sticky notes {76x76|76x127} mm {yellow|neon} (12 pads)", "Repositionable notes.", "5", "14"),
    ("Whiteboard {900x600|1200x900|1800x1200} mm", "Magnetic enamel whiteboard.", "45", "190"),
    ("Office chair {mesh|task|ergonomic} {black|grey}", "Adjustable chair, EN 1335.", "120", "420"),
    (
        "Desk {1200|1400|1600}x{700|800} mm {white|oak}",
        "Height-adjustable office desk.",
        "180",
        "640",
    ),
    ("Monitor {24|27} in {FHD|QHD} USB-C", "IPS office monitor with stand.", "139", "389"),
    ("Keyboard {DE|NL|ES|UK} layout {wired|wireless}", "Low-profile office keyboard.", "19", "69"),
    ("Toner cartridge {black|cyan|magenta|yellow} {standard|XL}", "Laser toner.", "39", "129"),
    (
        "Safety gloves nitrile size {S|M|L|XL} (pack of 100)",
        "Powder-free disposable gloves.",
        "7",
        "19",
    ),
    ("Work gloves nitrile-coated size {8|9|10|11} (12 pairs)", "EN 388 grip gloves.", "14", "32"),
    (
        "Hard hat EN 397 {white|yellow|blue|red}",
        "Ventilated safety helmet with ratchet.",
        "9",
        "29",
    ),
    ("Hi-vis vest {yellow|orange} size {M|L|XL|XXL}", "EN ISO 20471 class 2 vest.", "3", "9"),
    ("Safety boots S3 size {39|40|41|42|43|44|45|46}", "Composite toe cap, ESD sole.", "55", "120"),
    (
        "Safety goggles {clear|tinted} anti-fog (pack of 10)",
        "EN 166 indirect-vent goggles.",
        "25",
        "60",
    ),
    ("Ear defenders SNR {27|31|35} dB", "Padded headband ear muffs.", "9", "35"),
    ("First aid kit DIN 13157 {wall-mounted|portable}", "Workplace first aid kit.", "25", "70"),
    (
        "Fire extinguisher {foam|powder|CO2} {2|6} kg",
        "EN 3 extinguisher with bracket.",
        "35",
        "110",
    ),
    ("Stretch film {450|500} mm x {250|300} m", "Cast pallet-wrap film, 23 micron.", "11", "30"),
    (
        "Cardboard box {300x200x150|400x300x200|600x400x400} mm (bundle of 25)",
        "Shipping cartons.",
        "18",
        "55",
    ),
    (
        "Packing tape {brown|clear} 50 mm x 66 m (6 rolls)",
        "Low-noise polypropylene tape.",
        "6",
        "15",
    ),
    ("Label roll {100x150|100x50|57x32} mm (1,000 labels)", "Direct-thermal labels.", "7", "21"),
    (
        "Storage bin {5|10|20|30} l {blue|red|yellow|grey}",
        "Stackable polypropylene bin.",
        "3",
        "16",
    ),
    (
        "Shelving unit {1800|2000}x{900|1200}x{400|600} mm",
        "Galvanised boltless shelving.",
        "70",
        "210",
    ),
    (
        "Pallet truck {2000|2500} kg {540|685} mm forks",
        "Manual hydraulic pallet truck.",
        "260",
        "520",
    ),
    ("Cable ties {200|300|370}x4.8 mm (pack of 100)", "UV-resistant nylon cable ties.", "3", "11"),
    (
        "Installation cable NYM-J {3x1.5|3x2.5|5x1.5|5x2.5} mm² ({50|100} m)",
        "PVC-sheathed cable.",
        "35",
        "180",
    ),
    ("Circuit breaker {B|C}{10|16|20|32} A", "Single-pole miniature circuit breaker.", "4", "15"),
    (
        "LED panel 600x600 {30|36|40} W {3000|4000} K",
        "Flat ceiling panel, flicker-free.",
        "24",
        "79",
    ),
    (
        "Extension lead {4|5|6}-way {1.5|3|5} m",
        "Surge-protected power strip with switch.",
        "12",
        "39",
    ),
    (
        "Cordless drill {12|18} V {compact|brushless}",
        "Drill driver, two batteries, case.",
        "89",
        "249",
    ),
    ("Torque wrench {5-25|20-100|40-200} Nm", "Click-type torque wrench, calibrated.", "45", "180"),
    (
        "Spray paint RAL {1003|3000|5010|6018|7035|9005|9010} 400 ml (case of 6)",
        "Acrylic lacquer.",
        "24",
        "48",
    ),
    ("Hand sanitiser {500|1000} ml (case of 12)", "Alcohol gel, 70 %, pump bottle.", "15", "45"),
    ("Paper towel rolls {150|300} m (case of 6)", "Two-ply centre-feed towel rolls.", "14", "36"),
    ("Bin bags {60|120|240} l (roll of {25|50})", "Heavy-duty polyethylene sacks.", "4", "19"),
    ("Floor cleaner {1|5|10} l", "pH-neutral concentrate for hard floors.", "6", "38"),
)
_CREDIT_REASONS = ("damaged in transit", "short shipment", "pricing error", "goodwill")


def build_estate(
    seed: int = 7, customers: int = 300, skus: int = 200, *, now: datetime | None = None
) -> Estate:
    """Build the demo estate: the same seed and `now` give the same data."""
    as_of = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    rng = random.Random(seed)
    profiles = [_customer_profile(rng, number, as_of) for number in range(1, customers + 1)]
    items = _items(rng, skus, as_of)
    orders = _orders(rng, profiles, [item for item in items if item.active], as_of)
    invoices = _invoices(orders, profiles)
    payments = _payments(rng, invoices, profiles, as_of)
    credit_notes = _credit_notes(rng, invoices, payments, as_of)
    return Estate(
        as_of=as_of,
        locations=LOCATIONS,
        customers=tuple(profile.customer for profile in profiles),
        accounts=tuple(_accounts(rng, profiles, invoices, payments, credit_notes, as_of)),
        items=tuple(items),
        prices=tuple(
            ListPrice(item.sku, currency, list_price(item, currency))
            for item in items
            for currency in PRICE_LIST_RATES
        ),
        stock_levels=tuple(_stock_levels(rng, items, as_of)),
        orders=tuple(orders),
        invoices=tuple(invoices),
        payments=tuple(payments),
        credit_notes=tuple(credit_notes),
    )


def to_cents(amount: Decimal) -> int:
    """Minor units of an amount with at most two decimal places."""
    return int(amount.quantize(CENT) * 100)


@dataclass(frozen=True)
class _Profile:
    """A customer plus the ERP facts the rest of the build depends on."""

    customer: Customer
    currency: str
    payment_terms_days: int
    habit: str  # "prompt", "late" or "delinquent": how the customer pays its invoices


def _customer_profile(rng: random.Random, number: int, as_of: datetime) -> _Profile:
    country = rng.choice(_COUNTRIES)
    name = f"{rng.choice(_NAME_STEMS)} {rng.choice(_TRADES)}"
    domain = f"{_slug(name)}.{country.tld}"
    currency = "USD" if rng.random() < 0.03 else country.currency
    customer = Customer(
        id=f"C-{number:05d}",
        name=f"{name} {rng.choice(country.legal_forms)}",
        email=f"{rng.choice(('info', 'orders', 'office', 'purchasing'))}@{domain}",
        phone=f"{country.phone_prefix} {rng.randint(10, 99)} {rng.randint(1000000, 9999999)}",
        region=country.region,
        segment=rng.choices(SEGMENTS, weights=(6, 3, 1))[0],
        contacts=_contacts(rng, country.region, domain),
        updated_at=_before(rng, as_of, days=365),
    )
    habit = rng.choices(("prompt", "late", "delinquent"), weights=(70, 22, 8))[0]
    return _Profile(customer, currency, rng.choice((14, 30, 30, 60)), habit)


def _contacts(rng: random.Random, region: str, domain: str) -> tuple[Contact, ...]:
    people: list[Contact] = []
    for role in rng.sample(_ROLES, rng.randint(1, 3)):
        first, last = rng.choice(_FIRST_NAMES[region]), rng.choice(_LAST_NAMES[region])
        email = f"{_slug(first)}.{_slug(last)}@{domain}"
        people.append(Contact(name=f"{first} {last}", email=email, role=role))
    return tuple(people)


def _slug(text: str) -> str:
    """Lower-case ASCII letters and digits joined by hyphens, for e-mail addresses."""
    spelled = text.lower().replace("ß", "ss").replace("ø", "o")
    folded = unicodedata.normalize("NFKD", spelled).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z0-9]+", "-", folded).strip("-")


def _items(rng: random.Random, count: int, as_of: datetime) -> list[Item]:
    items: list[Item] = []
    for number, (name, description, low, high) in enumerate(_catalogue(rng, count), start=1):
        items.append(
            Item(
                sku=f"SKU-{number:04d}",
                name=name,
                description=description,
                unit_price=_money(rng, Decimal(low), Decimal(high)),
                currency="EUR",
                active=rng.random() >= 0.03,
                updated_at=_before(rng, as_of, days=180),
            )
        )
    return items


def _catalogue(rng: random.Random, count: int) -> list[tuple[str, str, str, str]]:
    """`count` distinct catalogue entries in random order."""
    entries = [
        (name, description, low, high)
        for template, description, low, high in _CATALOGUE
        for name in _expand(template)
    ]
    rng.shuffle(entries)
    picked: list[tuple[str, str, str, str]] = []
    for index in range(count):
        name, description, low, high = entries[index % len(entries)]
        if index >= len(entries):  # an estate bigger than the catalogue repeats it, numbered
            name = f"{name} #{index // len(entries) + 1}"
        picked.append((name, description, low, high))
    return picked


def _expand(template: str) -> list[str]:
    """Every name a template spells, one per combination of its alternatives."""
    parts = re.split(r"\{([^}]*)\}", template)
    # re.split puts the literal text at even positions and the captured alternatives at odd ones.
    choices = [part.split("|") if index % 2 else [part] for index, part in enumerate(parts)]
    return ["".join(combination) for combination in itertools.product(*choices)]


def _stock_levels(rng: random.Random, items: Sequence[Item], as_of: datetime) -> list[StockLevel]:
    levels: list[StockLevel] = []
    for item in items:
        for location in LOCATIONS:
            reorder_point = rng.randint(20, 150)
            if rng.random() < 0.11:  # below the reorder point: what a restocking agent acts on
                on_hand = rng.randint(0, reorder_point - 1)
                reserved = rng.randint(0, on_hand // 2)
            else:
                on_hand = rng.randint(reorder_point, 800)
                reserved = rng.randint(0, min(60, on_hand - reorder_point))
            levels.append(
                StockLevel(
                    item.sku,
                    location.code,
                    on_hand,
                    reserved,
                    reorder_point,
                    _before(rng, as_of, 30),
                )
            )
    return levels


def _orders(
    rng: random.Random, profiles: Sequence[_Profile], catalogue: Sequence[Item], as_of: datetime
) -> list[Order]:
    # Draw every order's customer and time first, so order ids rise with placed_at.
    drafts: list[tuple[datetime, _Profile]] = []
    for profile in profiles:
        for _ in range(rng.choice((0, 0, 1, 2, 2, 3, 3, 3, 4, 4, 5, 6, 7))):
            drafts.append((_before(rng, as_of, days=HISTORY_DAYS), profile))
    drafts.sort(key=lambda draft: (draft[0], draft[1].customer.id))
    return [
        _order(rng, f"SO-{100001 + index}", profile, catalogue, placed_at, as_of)
        for index, (placed_at, profile) in enumerate(drafts)
    ]


def _order(
    rng: random.Random,
    order_id: str,
    profile: _Profile,
    catalogue: Sequence[Item],
    placed_at: datetime,
    as_of: datetime,
) -> Order:
    lines = tuple(
        _order_line(rng, order_id, line_no, item, profile.currency)
        for line_no, item in enumerate(rng.sample(catalogue, rng.randint(1, 5)), start=1)
    )
    status = _order_status(rng, (as_of - placed_at).days)
    updated_at = placed_at if status == "open" else _between(rng, placed_at, as_of, max_days=12)
    return Order(
        id=order_id,
        customer_id=profile.customer.id,
        status=status,
        currency=profile.currency,
        total=sum((line.line_total for line in lines), Decimal("0.00")),
        placed_at=placed_at,
        updated_at=updated_at,
        lines=lines,
    )


def _order_line(
    rng: random.Random, order_id: str, line_no: int, item: Item, currency: str
) -> OrderLine:
    quantity = rng.randint(1, 50)
    unit_price = list_price(item, currency)
    return OrderLine(order_id, line_no, item.sku, quantity, unit_price, unit_price * quantity)


def _order_status(rng: random.Random, age_days: int) -> str:
    """Older orders have moved further along, as they would in a real ledger."""
    if rng.random() < 0.05:
        return "cancelled"
    if age_days < 3:
        return "open"
    if age_days < 10:
        return rng.choice(("open", "shipped"))
    if age_days < 20:
        return rng.choice(("shipped", "delivered"))
    return rng.choices(("shipped", "delivered"), weights=(1, 9))[0]


def _invoices(orders: Sequence[Order], profiles: Sequence[_Profile]) -> list[Invoice]:
    terms = {profile.customer.id: profile.payment_terms_days for profile in profiles}
    invoices: list[Invoice] = []
    for order in (order for order in orders if order.status in ("shipped", "delivered")):
        issued_at = min(order.updated_at, order.placed_at + timedelta(days=2))
        invoices.append(
            Invoice(
                id=f"INV-{200001 + len(invoices)}",
                customer_id=order.customer_id,
                order_id=order.id,
                currency=order.currency,
                amount=order.total,
                issued_at=issued_at,
                due_date=issued_at.date() + timedelta(days=terms[order.customer_id]),
                updated_at=issued_at,
            )
        )
    return invoices


def _payments(
    rng: random.Random, invoices: Sequence[Invoice], profiles: Sequence[_Profile], as_of: datetime
) -> list[Payment]:
    habits = {profile.customer.id: profile.habit for profile in profiles}
    drafts = [
        draft
        for invoice in invoices
        for draft in _invoice_payments(rng, invoice, habits[invoice.customer_id], as_of)
    ]
    drafts.sort(key=lambda payment: (payment.received_at, payment.reference))
    return [
        Payment(
            f"PAY-{300001 + index}", p.customer_id, p.currency, p.amount, p.reference, p.received_at
        )
        for index, p in enumerate(drafts)
    ]


def _invoice_payments(
    rng: random.Random, invoice: Invoice, habit: str, as_of: datetime
) -> list[Payment]:
    """What a customer with this habit has paid on one invoice by `as_of` (ids come later)."""
    terms = (invoice.due_date - invoice.issued_at.date()).days
    if habit == "prompt":
        received_at = invoice.issued_at + timedelta(
            days=rng.randint(3, terms), hours=rng.randint(0, 9)
        )
    elif habit == "late":
        received_at = invoice.issued_at + timedelta(days=terms + rng.randint(5, 45))
    else:  # a delinquent customer pays only its oldest invoices, and late
        received_at = invoice.issued_at + timedelta(days=terms + rng.randint(40, 90))
    if received_at > as_of:
        return []
    amount = invoice.amount
    if habit != "prompt" and rng.random() < 0.3:
        amount = (invoice.amount * Decimal(rng.randint(30, 70)) / 100).quantize(CENT)
    reference = f"{invoice.id}/1"
    return [Payment("", invoice.customer_id, invoice.currency, amount, reference, received_at)]


def _credit_notes(
    rng: random.Random, invoices: Sequence[Invoice], payments: Sequence[Payment], as_of: datetime
) -> list[CreditNote]:
    # Credit only what is still unpaid, so no customer ends up owed money by the demo.
    paid = {payment.reference.split("/")[0]: payment.amount for payment in payments}
    open_invoices = [inv for inv in invoices if inv.amount - paid.get(inv.id, Decimal(0)) >= 10]
    chosen = sorted(rng.sample(open_invoices, min(8, len(open_invoices))), key=lambda i: i.id)
    notes: list[CreditNote] = []
    for invoice in chosen:
        unpaid = invoice.amount - paid.get(invoice.id, Decimal(0))
        amount = (unpaid * Decimal(rng.randint(5, 30)) / 100).quantize(CENT)
        notes.append(
            CreditNote(
                id=f"CN-{400001 + len(notes)}",
                customer_id=invoice.customer_id,
                order_id=invoice.order_id,
                currency=invoice.currency,
                amount=amount,
                reason=rng.choice(_CREDIT_REASONS),
                issued_at=_between(rng, invoice.issued_at, as_of, max_days=20),
            )
        )
    return notes


def _accounts(
    rng: random.Random,
    profiles: Sequence[_Profile],
    invoices: Sequence[Invoice],
    payments: Sequence[Payment],
    credit_notes: Sequence[CreditNote],
    as_of: datetime,
) -> list[Account]:
    owed: dict[str, Decimal] = {}
    for invoice in invoices:
        owed[invoice.customer_id] = owed.get(invoice.customer_id, Decimal(0)) + invoice.amount
    settlements: list[Payment | CreditNote] = [*payments, *credit_notes]
    for settled in settlements:
        owed[settled.customer_id] = owed.get(settled.customer_id, Decimal(0)) - settled.amount
    return [
        Account(
            customer_id=profile.customer.id,
            currency=profile.currency,
            credit_limit=_credit_limit(
                rng, profile.customer.segment, owed.get(profile.customer.id)
            ),
            payment_terms_days=profile.payment_terms_days,
            updated_at=_before(rng, as_of, days=365),
        )
        for profile in profiles
    ]


def _credit_limit(rng: random.Random, segment: str, outstanding: Decimal | None) -> Decimal:
    """A limit for the segment, raised to cover what the customer already owes (up to the cap)."""
    low, high = {"smb": (10, 60), "mid-market": (50, 200), "enterprise": (200, 500)}[segment]
    limit = Decimal(rng.randint(low, high) * 500)
    if outstanding is not None and outstanding * Decimal("1.2") > limit:
        limit = ((outstanding * Decimal("1.2")) / 5000).to_integral_value(ROUND_CEILING) * 5000
    return min(limit, Decimal(250000)).quantize(CENT)


def _money(rng: random.Random, low: Decimal, high: Decimal) -> Decimal:
    cents = rng.randint(to_cents(low), to_cents(high))
    return (Decimal(cents) / 100).quantize(CENT)


def _before(rng: random.Random, as_of: datetime, days: int) -> datetime:
    """A whole-second instant within `days` before `as_of`."""
    return as_of - timedelta(seconds=rng.randint(60, days * 86400))


def _between(rng: random.Random, start: datetime, as_of: datetime, max_days: int) -> datetime:
    """An instant after `start`, at most `max_days` later, never after `as_of`."""
    span = int(min(timedelta(days=max_days), as_of - start).total_seconds())
    return start + timedelta(seconds=rng.randint(0, max(span, 0)))
