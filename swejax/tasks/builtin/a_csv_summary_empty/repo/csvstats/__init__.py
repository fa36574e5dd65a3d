from .summary import read_column, summarize, summarize_csv

__all__ = ["read_column", "summarize", "summarize_csv"]
