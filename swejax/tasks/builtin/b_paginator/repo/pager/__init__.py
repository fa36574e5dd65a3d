"""List pagination helpers."""
from .paginator import PageOutOfRange, Paginator

__all__ = ["PageOutOfRange", "Paginator"]
