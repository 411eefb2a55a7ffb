"""The demo estate: an order-to-cash ERP (SQL) and a CRM (HTTP JSON in its own process).

build_estate()      deterministic customers, items, stock, orders, invoices, payments
├── create_erp()    the ERP tables and views in SQLite or PostgreSQL
└── seed_crm()      the CRM's SQLite file, served by CrmProcess over loopback
"""

from sources.demo.crm_store import seed_crm
from sources.demo.data import Estate, build_estate
from sources.demo.erp import create_erp
from sources.demo.process import CrmProcess

__all__ = ["CrmProcess", "Estate", "build_estate", "create_erp", "seed_crm"]
