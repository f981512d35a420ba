"""Durations as team files write them: seconds, or a number with s, m, h or d."""

from __future__ import annotations

from typing import Any

__all__ = ["seconds"]

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def seconds(value: Any, what: str) -> float:
    """`90`, `"90s"`, `"30m"`, `"1h"` or `"2d"` as seconds; ValueError naming `what` otherwise."""
    if isinstance(value, str):
        text = value.strip()
        number, unit = text[:-1], text[-1:]
        if unit in _UNITS and number.replace(".", "", 1).isdigit():
            result = float(number) * _UNITS[unit]
            if result > 0:
                return result
    elif isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    raise ValueError(f"{what} must be a positive duration: seconds, or like '90s', '30m', '1h', "
                     f"'2d' (got {value!r})")
