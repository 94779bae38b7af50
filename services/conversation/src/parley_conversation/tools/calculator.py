"""``calculator``: arithmetic on a parsed expression tree, never ``eval``.

The expression is parsed by ``ast`` and walked over an allowlist of nodes: numbers, the
operators ``+ - * / // % **``, unary signs, parentheses, the constants ``pi`` and ``e``, and a
few functions of ``math``. Anything else (names, attributes, strings, comprehensions, ``^``)
is refused. Sizes are bounded: the expression's length and node count, the bits of an integer
(a power is refused before it is computed when its result would pass them), float overflow.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from parley_conversation.conversations import Conversation
from parley_conversation.tools.base import ToolContext, ToolError, ToolSpec

MAX_EXPRESSION_CHARS = 500
MAX_NODES = 200
MAX_INT_BITS = 4096

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}
# name: (function, fewest arguments, most arguments)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
    "min": (min, 2, 20),
    "max": (max, 2, 20),
    "sqrt": (math.sqrt, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (math.log, 1, 2),
    "log10": (math.log10, 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
}


def _refuse(message: str) -> ToolError:
    return ToolError("invalid_expression", message)


def _checked(value: Any) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _refuse("the expression must compute a number")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError("result_too_large", f"a number passed {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("math_error", "the result is not a finite number")
    return value


def _power(base: Number, exponent: Number) -> Number:
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and abs(base) > 1
        and exponent * (abs(base).bit_length() - 1) > MAX_INT_BITS
    ):
        raise ToolError("result_too_large", f"the power would pass {MAX_INT_BITS} bits")
    result = operator.pow(base, exponent)
    if isinstance(result, complex):
        raise ToolError("math_error", "a negative number has no real power of that kind")
    return _checked(result)


def _evaluate(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant):
        return _checked(node.value)
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op is ast.BitXor:
            raise _refuse("^ is not a power here; write ** (2 ** 10)")
        if op not in _BINARY:
            raise _refuse(f"the operator {op.__name__} is not allowed")
        left, right = _evaluate(node.left), _evaluate(node.right)
        if op is ast.Pow:
            return _power(left, right)
        return _checked(_BINARY[op](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.Name):
        if node.id not in _CONSTANTS:
            raise _refuse(f"unknown name {node.id!r}; the constants are pi and e")
        return _CONSTANTS[node.id]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            raise _refuse(f"functions allowed: {', '.join(_FUNCTIONS)}")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse("functions take plain arguments only")
        function, fewest, most = _FUNCTIONS[node.func.id]
        if not fewest <= len(node.args) <= most:
            raise _refuse(f"{node.func.id} takes {fewest} to {most} arguments")
        return _checked(function(*(_evaluate(a) for a in node.args)))
    raise _refuse(f"{type(node).__name__} is not allowed in an expression")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic expression (see the module docstring); ``ToolError``
    ``invalid_expression``, ``math_error`` or ``result_too_large`` otherwise."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise _refuse(f"the expression exceeds {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise _refuse("the expression is not valid arithmetic") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise _refuse(f"the expression has more than {MAX_NODES} parts")
    try:
        return _evaluate(tree)
    except ZeroDivisionError:
        raise ToolError("math_error", "division by zero") from None
    except (OverflowError, ValueError, TypeError) as error:
        raise ToolError("math_error", str(error) or "the result is out of range") from None


def formatted(value: Number) -> str:
    return str(value) if isinstance(value, int) else repr(value)


class Calculator:
    """The ``calculator`` tool (see the module docstring), offered to every conversation."""

    spec = ToolSpec(
        name="calculator",
        description=(
            "Evaluate an arithmetic expression exactly, e.g. 25 * 0.8 + 3 or sqrt(2) / 2. "
            "Operators: + - * / // % ** and parentheses; constants pi, e; functions "
            + ", ".join(_FUNCTIONS)
            + "."
        ),
        parameters={
            "type": "object",
            "properties": {
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_EXPRESSION_CHARS,
                    "description": "The expression to evaluate.",
                }
            },
            "required": ["expression"],
            "additionalProperties": False,
        },
    )

    def offered(self, conversation: Conversation) -> bool:
        return True

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> str:
        return formatted(evaluate(str(arguments["expression"])))
