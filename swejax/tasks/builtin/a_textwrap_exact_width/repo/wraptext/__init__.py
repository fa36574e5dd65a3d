from .wrap import fill, indent, wrap

__all__ = ["fill", "indent", "wrap"]
