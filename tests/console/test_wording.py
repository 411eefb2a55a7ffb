"""Plain words for codes, times and diffs."""

from __future__ import annotations

import pytest

from gateway.console import wording
from gateway.services import Services


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (30, "30 s"),
        (60, "1 min"),
        (90, "1.5 min"),
        (600, "10 min"),
        (28800, "8 h"),
        (2e5, "2.3 days"),
    ],
)
def test_duration_of_seconds_uses_largest_fitting_unit(seconds: float, words: str) -> None:
    assert wording.duration(seconds) == words


def test_kind_title_of_action_kind_is_its_mutation_in_words(services: Services) -> None:
    title = wording.kind_title("customer.update_contact", services.catalog)
    assert title == "Update customer contact"
    assert wording.kind_title("unknown.kind", services.catalog) == "unknown.kind"


def test_status_words_of_unknown_status_is_readable() -> None:
    assert wording.status_words("SOMETHING_NEW") == "Something new"


def test_diff_rows_of_created_record_marks_every_field_changed() -> None:
    rows = wording.diff_rows({"before": None, "after": {"id": "O-1", "lines": [{"sku": "A"}]}})
    assert rows == [("id", "—", "O-1", True), ("lines", "—", '[{"sku": "A"}]', True)]


def test_targets_read_as_the_record_a_person_searches_for() -> None:
    assert wording.target_words("InventoryItem:SKU-0012") == "inventory item SKU-0012"
    assert wording.target_words("Balance:C-00001") == "balance C-00001"
    assert wording.target_words("PurchaseOrder:P-1") == "purchase order P-1"
    assert wording.target_words("no-entity") == "no-entity"
