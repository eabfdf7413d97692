"""Safe arithmetic for the calculator example: find an expression in a prompt, and evaluate one.

Evaluation walks Python's AST and allows numbers, + - * / ** %, parentheses and a few math
functions only, so a prompt can never run code.
"""

from __future__ import annotations

import ast
import math
import operator
import re

MAX_POWER = 1000

_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow, ast.Mod: operator.mod}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}

_SQUARE_ROOT = re.compile(r"square\s+root\s+of\s+(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_EXPRESSION = re.compile(r"[-(]*\d+(?:\.\d+)?(?:\s*(?:\*\*|[-+*/%^])\s*[-(]*\d+(?:\.\d+)?\)*)+")


class NotArithmetic(ValueError):
    """Raised when a text is not an expression this calculator evaluates."""


def find_expression(text: str) -> str | None:
    """The first arithmetic question in `text` as an expression (`sqrt(71)`, `3 * (4 + 2)`), or None."""
    match = _SQUARE_ROOT.search(text)
    if match:
        return f"sqrt({match.group(1)})"
    match = _EXPRESSION.search(text)
    if match:
        expression = match.group(0).replace("^", "**").strip()
        # Balance parentheses a greedy match may have cut.
        expression += ")" * max(0, expression.count("(") - expression.count(")"))
        return expression
    return None


def evaluate(expression: str) -> float:
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise NotArithmetic(f"not an arithmetic expression: {expression[:80]!r}") from None
    return float(_eval(tree.body))


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_POWER:
            raise NotArithmetic("exponent too large")
        try:
            return _BINARY[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as exc:
            raise NotArithmetic(str(exc)) from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and len(node.args) == 1 and not node.keywords):
        try:
            return _FUNCTIONS[node.func.id](_eval(node.args[0]))
        except (ValueError, OverflowError) as exc:
            raise NotArithmetic(str(exc)) from None
    raise NotArithmetic("only numbers, + - * / ** % and sqrt/abs/log/exp/sin/cos are allowed")


def format_number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
