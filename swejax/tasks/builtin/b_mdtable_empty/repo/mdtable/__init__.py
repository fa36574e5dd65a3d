"""Render data as GitHub-flavoured Markdown tables."""
from .render import column_widths, render_table

__all__ = ["column_widths", "render_table"]
