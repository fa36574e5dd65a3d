import pytest

from invoice import Invoice, format_cents, to_cents


def test_to_cents_simple():
    assert to_cents(10) == 1000
    assert to_cents("4.00") == 400
    assert to_cents(2.5) == 250


def test_format_cents():
    assert format_cents(123456) == "$1,234.56"
    assert format_cents(-100) == "-$1.00"
    assert format_cents(5) == "$0.05"


def test_invoice_total_with_tax():
    inv = Invoice("acme", tax_percent=10)
    inv.add_line("widget", 2.5, quantity=4)
    inv.add_line("setup", "15")
    assert inv.subtotal() == 2500
    assert inv.tax() == 250
    assert inv.total() == 2750


def test_bad_quantity():
    with pytest.raises(ValueError):
        Invoice("x").add_line("a", 1, quantity=0)
