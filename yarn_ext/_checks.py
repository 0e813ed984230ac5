"""Argument conversion for the Python API: a wrong type or value raises naming the argument."""

from __future__ import annotations

import math
import operator
from typing import SupportsFloat, SupportsIndex


def as_int(name: str, value: SupportsIndex | float) -> int:
    """`value` as a Python int. Integral floats (2048.0, as configs sometimes carry) are
    accepted; bools, fractions and non-numbers are rejected."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"{name} must be a whole number, got {value}")
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


def as_number(name: str, value: SupportsFloat) -> float:
    """`value` as a Python float, any value (the module's policy checks the values)."""
    if isinstance(value, bool) or (
        not isinstance(value, (int, float)) and not hasattr(value, "__float__")
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    return float(value)


def as_float(name: str, value: SupportsFloat) -> float:
    """`value` as a finite Python float."""
    result = as_number(name, value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    return result
