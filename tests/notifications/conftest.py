"""The writable estates of the write-path tests (tests/actions), on SQLite and PostgreSQL."""

from tests.actions.conftest import (  # noqa: F401 - fixtures, used by name
    backend,
    postgres_template,
    sqlite_erp_template,
    write_config,
)
