"""Tools every team file can name without importing anything: the `BUILTIN` table."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType

from .code import run_code
from .tools import Tool, ToolContext, tool

__all__ = ["BUILTIN", "calculate", "current_time", "post_message", "run_code"]


@tool(approval="always")
async def post_message(channel: str, text: str, context: ToolContext) -> str:
    """Post a message to another channel of this workspace (for example #announcements)."""
    if context.post_message is None:
        return "This chat does not support posting to other channels."
    message_id = await context.post_message(channel, text)
    return f"Posted to {channel} (message {message_id})."


@tool(approval="never")
def current_time(timezone_offset_hours: float = 0.0) -> str:
    """The current date and time (UTC by default, or at a fixed offset in hours)."""
    from datetime import timedelta, timezone
    now = datetime.now(UTC).astimezone(timezone(timedelta(hours=timezone_offset_hours)))
    return now.isoformat(timespec="seconds")


_OPS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos,
}


@tool(approval="never")
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression such as '(1200 * 0.15) / 12'."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
                and not isinstance(node.value, bool):
            return float(node.value)  # floats overflow at once where ints would grow unbounded
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError("only numbers and + - * / // % ** are allowed")
    try:
        value = ev(ast.parse(expression, mode="eval"))
    except OverflowError:
        raise ValueError(f"cannot calculate {expression!r}: the result is too large") from None
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"cannot calculate {expression!r}: {exc}") from exc
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


#: The built-in tools by the name a team file uses.
BUILTIN: Mapping[str, Tool] = MappingProxyType(
    {t.name: t for t in (post_message, current_time, calculate, run_code)})
