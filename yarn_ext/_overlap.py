"""Whether views share memory, for the fake (tracing) implementations: csrc/overlap.cpp decides the
same questions for the kernels with the same algorithm and the same search budget, so that tracing
refuses exactly what eager refuses (tests/test_validation_parity.py holds them together).

Fake and meta tensors have no addresses: two views share memory only if they view one storage, and
a view's bytes start at its storage offset there.
"""

from __future__ import annotations

import enum

from torch import Tensor

# How many digits the search may try per question (kSearchBudget in csrc/overlap.cpp).
SEARCH_BUDGET = 100_000


class Overlap(enum.Enum):
    NO = 0
    YES = 1
    UNKNOWN = 2


class _Equation:
    """sum(digit_i * stride_i) == target, digit_i in [lo_i, hi_i] (csrc/overlap.cpp, Equation)."""

    def __init__(self) -> None:
        self.terms: list[list[int]] = []

    def add(self, stride: int, lo: int, hi: int) -> None:
        """Adds stride * digit; equal strides merge (the sum of two digits spans their bounds)."""
        if stride < 0:
            stride, lo, hi = -stride, -hi, -lo
        if stride == 0 or lo == hi:
            return
        for term in self.terms:
            if term[0] == stride:
                term[1] += lo
                term[2] += hi
                return
        self.terms.append([stride, lo, hi])

    def set(self, stride: int, lo: int, hi: int) -> None:
        """A term that must not merge (its range excludes 0)."""
        self.terms.append([stride, lo, hi])

    def solve(self, target: int, budget: list[int]) -> Overlap:
        terms = sorted(self.terms, key=lambda t: -t[0])
        count = len(terms)
        suffix_lo, suffix_hi = [0] * (count + 1), [0] * (count + 1)
        for i in range(count - 1, -1, -1):
            stride, lo, hi = terms[i]
            suffix_lo[i] = suffix_lo[i + 1] + lo * stride
            suffix_hi[i] = suffix_hi[i + 1] + hi * stride

        def search(i: int, target: int) -> Overlap:
            if i == count:
                return Overlap.YES if target == 0 else Overlap.NO
            stride, lo, hi = terms[i]
            first = max(lo, -((suffix_hi[i + 1] - target) // stride))
            last = min(hi, (target - suffix_lo[i + 1]) // stride)
            unknown = False
            for digit in range(first, last + 1):
                budget[0] -= 1
                if budget[0] < 0:
                    return Overlap.UNKNOWN
                found = search(i + 1, target - digit * stride)
                if found is Overlap.YES:
                    return found
                unknown = unknown or found is Overlap.UNKNOWN
            return Overlap.UNKNOWN if unknown else Overlap.NO

        return search(0, target)


def _byte_span(t: Tensor) -> tuple[int, int]:
    item = t.element_size()
    lo = hi = 0
    for size, stride in zip(t.shape, t.stride(), strict=True):
        reach = (size - 1) * stride * item
        if reach < 0:
            lo += reach
        else:
            hi += reach
    start = t.storage_offset() * item
    return start + lo, start + hi + item - 1


def views_overlap(a: Tensor, b: Tensor) -> Overlap:
    """Whether two views (any dtypes) share a byte."""
    if a.numel() == 0 or b.numel() == 0:
        return Overlap.NO
    if a.untyped_storage()._cdata != b.untyped_storage()._cdata:
        return Overlap.NO
    (a_first, a_last), (b_first, b_last) = _byte_span(a), _byte_span(b)
    if a_last < b_first or b_last < a_first:
        return Overlap.NO
    a_item, b_item = a.element_size(), b.element_size()
    equation = _Equation()
    for size, stride in zip(a.shape, a.stride(), strict=True):
        if size > 1:
            equation.add(stride * a_item, 0, size - 1)
    for size, stride in zip(b.shape, b.stride(), strict=True):
        if size > 1:
            equation.add(stride * b_item, 1 - size, 0)
    equation.add(1, 1 - b_item, a_item - 1)
    distance = b.storage_offset() * b_item - a.storage_offset() * a_item
    return equation.solve(distance, [SEARCH_BUDGET])


def self_overlap(t: Tensor) -> Overlap:
    """Whether two different indices of one view address the same element."""
    if t.numel() == 0:
        return Overlap.NO
    steps = sorted(
        ((abs(stride), size) for size, stride in zip(t.shape, t.stride(), strict=True) if size > 1),
        key=lambda step: step[0],
    )
    nested, reach = True, 0
    for i, (stride, size) in enumerate(steps):
        if stride == 0 or (i > 0 and stride == steps[i - 1][0]):
            return Overlap.YES
        nested = nested and stride > reach
        reach += stride * (size - 1)
    if nested:
        return Overlap.NO
    budget, unknown = [SEARCH_BUDGET], False
    for p in range(len(steps) - 1, -1, -1):
        equation = _Equation()
        equation.set(steps[p][0], 1, steps[p][1] - 1)
        for stride, size in steps[:p]:
            equation.set(stride, 1 - size, size - 1)
        found = equation.solve(0, budget)
        if found is Overlap.YES:
            return found
        unknown = unknown or found is Overlap.UNKNOWN
    return Overlap.UNKNOWN if unknown else Overlap.NO
