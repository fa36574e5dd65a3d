from decimal import Decimal

import pytest

from ledger import Account, InsufficientFunds, transfer


def test_deposit_and_withdraw():
    acct = Account("ann", 10)
    acct.deposit("5.25")
    acct.withdraw(3)
    assert acct.balance == Decimal("12.25")
    assert [h[0] for h in acct.history] == ["deposit", "withdraw"]


def test_insufficient_funds():
    acct = Account("bob", 5)
    with pytest.raises(InsufficientFunds):
        acct.withdraw(6)
    assert acct.balance == Decimal("5")


def test_withdraw_rejects_non_positive():
    acct = Account("cy", 5)
    with pytest.raises(ValueError):
        acct.withdraw(0)
    with pytest.raises(ValueError):
        acct.withdraw(-1)


def test_transfer():
    a, b = Account("a", 100), Account("b")
    transfer(a, b, "40.50")
    assert a.balance == Decimal("59.50")
    assert b.balance == Decimal("40.50")


def test_statement():
    acct = Account("dee")
    acct.deposit(20, "salary")
    assert acct.statement().splitlines() == [
        "Statement for dee", "+20.00 salary", "Balance: 20.00",
    ]
