"""Argument conversion for the Python API: a wrong type or value raises naming the argument."""

from __future__ import annotations

import math
import operator
from typing import SupportsFloat, SupportsIndex


def as_int(name: str, value: SupportsIndex) -> int:
    """`value` as a Python int; bools and non-integral numbers are rejected."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
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


def positive_int(name: str, value: SupportsIndex) -> int:
    result = as_int(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result


def positive_float(name: str, value: SupportsFloat) -> float:
    result = as_float(name, value)
    if result <= 0:
        raise ValueError(f"{name} must be positive, got {result}")
    return result
