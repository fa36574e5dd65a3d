"""A small arithmetic expression evaluator."""
from .parser import evaluate, parse
from .tokenizer import Token, tokenize

__all__ = ["Token", "evaluate", "parse", "tokenize"]
