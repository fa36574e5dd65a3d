"""Recursive-descent parser and evaluator.

Grammar::

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := NUMBER | "-" factor | "(" expr ")"
"""
import operator

from .tokenizer import tokenize

_BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}


class _Parser:
    def __init__(self, tokens):
        self.tokens = tokens
        self.index = 0

    def peek(self):
        return self.tokens[self.index]

    def advance(self):
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect(self, value):
        token = self.advance()
        if token.value != value:
            raise SyntaxError("expected %r at position %d" % (value, token.pos))
        return token

    def expr(self):
        node = self.term()
        while self.peek().value in ("+", "-"):
            op = self.advance().value
            node = (op, node, self.term())
        return node

    def term(self):
        node = self.factor()
        while self.peek().value in ("*", "/"):
            op = self.advance().value
            node = (op, node, self.factor())
        return node

    def factor(self):
        token = self.advance()
        if token.kind == "NUMBER":
            return int(token.value)
        if token.value == "-":
            return ("neg", self.factor())
        if token.value == "(":
            node = self.expr()
            self.expect(")")
            return node
        raise SyntaxError("unexpected token %r at position %d" % (token.value, token.pos))


def parse(text):
    """Parse ``text`` into a nested-tuple syntax tree."""
    parser = _Parser(tokenize(text))
    tree = parser.expr()
    if parser.peek().kind != "EOF":
        token = parser.peek()
        raise SyntaxError("unexpected token %r at position %d" % (token.value, token.pos))
    return tree


def _eval(node):
    if not isinstance(node, tuple):
        return node
    if node[0] == "neg":
        return -_eval(node[1])
    op, left, right = node
    return _BINARY[op](_eval(left), _eval(right))


def evaluate(text):
    """Evaluate an arithmetic expression and return its value."""
    return _eval(parse(text))
