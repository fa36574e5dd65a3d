"""Invoices made of priced lines."""
from .money import format_cents, to_cents


class Invoice:
    def __init__(self, customer, tax_percent=0):
        self.customer = customer
        self.tax_percent = tax_percent
        self.lines = []

    def add_line(self, description, unit_price, quantity=1):
        if quantity < 1:
            raise ValueError("quantity must be at least 1")
        self.lines.append((description, to_cents(unit_price), quantity))

    def subtotal(self):
        return sum(price * qty for _, price, qty in self.lines)

    def tax(self):
        # integer round-half-up of subtotal * percent / 100
        return (self.subtotal() * self.tax_percent + 50) // 100

    def total(self):
        return self.subtotal() + self.tax()

    def render(self):
        out = ["Invoice for %s" % self.customer]
        for description, price, qty in self.lines:
            out.append("%-20s %3d x %10s" % (description, qty, format_cents(price)))
        out.append("Total: %s" % format_cents(self.total()))
        return "\n".join(out)
