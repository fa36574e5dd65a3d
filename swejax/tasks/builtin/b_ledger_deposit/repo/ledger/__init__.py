"""A tiny bank-account ledger."""
from .account import Account, InsufficientFunds, transfer

__all__ = ["Account", "InsufficientFunds", "transfer"]
