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


def as_float(name: str, value: SupportsFloat) -> float:
    """`value` as a finite Python float."""
    if isinstance(value, bool) or (
        not isinstance(value, (int, float)) and not hasattr(value, "__float__")
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {result}")
    return result


def positive_int(name: str, value: SupportsIndex | float) -> int:
    result = as_int(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result


def positive_float(name: str, value: SupportsFloat) -> float:
    result = as_float(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result
