"""Accounts with a transaction history, using exact decimal amounts."""
from decimal import Decimal


class InsufficientFunds(Exception):
    """Raised when a withdrawal exceeds the available balance."""


class Account:
    """A single account.

    ``deposit`` and ``withdraw`` accept ints, strings or Decimals and raise
    ``ValueError`` for amounts that are zero or negative.
    """

    def __init__(self, owner, balance=0):
        self.owner = owner
        self.balance = Decimal(str(balance))
        self.history = []

    @staticmethod
    def _amount(value):
        return Decimal(str(value)).quantize(Decimal("0.01"))

    def deposit(self, value, memo=""):
        amount = self._amount(value)
        self.balance += amount
        self.history.append(("deposit", amount, memo))
        return self.balance

    def withdraw(self, value, memo=""):
        amount = self._amount(value)
        if amount <= 0:
            raise ValueError("amount must be positive, got %s" % amount)
        if amount > self.balance:
            raise InsufficientFunds(
                "%s has %s, cannot withdraw %s" % (self.owner, self.balance, amount)
            )
        self.balance -= amount
        self.history.append(("withdraw", amount, memo))
        return self.balance

    def statement(self):
        lines = ["Statement for %s" % self.owner]
        for kind, amount, memo in self.history:
            sign = "+" if kind == "deposit" else "-"
            lines.append(("%s%s %s" % (sign, amount, memo)).rstrip())
        lines.append("Balance: %s" % self.balance)
        return "\n".join(lines)


def transfer(source, target, value, memo="transfer"):
    """Move ``value`` from ``source`` to ``target``."""
    source.withdraw(value, memo)
    target.deposit(value, memo)
