"""The operators' argument checks, in Python, for the fake (tracing) implementations.

The kernels check their arguments in C++ (csrc/checks.cpp, csrc/tensor_rows.cpp): this module
performs the same checks in the same order with the same messages, so that a traced call
(torch.compile, torch.export, FakeTensor) rejects what an eager call rejects.
tests/test_validation_parity.py runs every bad input through both. Both raise ValueError: the
kernels throw std::invalid_argument, which is what reaches Python through the stable ABI.

Shape checks work on symbolic shapes (a comparison of SymInts becomes a guard). The checks on
memory layout need concrete sizes and strides and are skipped for symbolic ones; the kernel meets
them when the compiled graph runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from yarn_ext._overlap import Overlap, self_overlap, views_overlap

# Must equal kMaxRowDims (csrc/include/yarn_ext/core/strided_rows.h).
MAX_ROW_DIMS = 12
# Must equal kMropeMaxPairs (csrc/include/yarn_ext/core/mrope.h).
MROPE_MAX_PAIRS = 256

_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.int64: "int64",
    torch.float8_e4m3fn: "float8_e4m3fn",
    torch.float8_e5m2: "float8_e5m2",
    torch.float8_e4m3fnuz: "float8_e4m3fnuz",
    torch.float8_e5m2fnuz: "float8_e5m2fnuz",
    torch.bool: "bool",
    torch.complex64: "complex64",
    torch.complex128: "complex128",
}
_ROTATED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def dtype_name(dtype: torch.dtype) -> str:
    """As csrc/checks.cpp names dtypes (dtype_name)."""
    return _DTYPE_NAMES.get(dtype, "another dtype")


def shape_text(shape: Sequence[object]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _fail(op: str, *parts: object) -> None:
    raise ValueError(op + ": " + "".join(str(p) for p in parts))


def concrete(t: Tensor) -> bool:
    """Whether t's sizes, strides and offset are plain ints (not traced with dynamic shapes)."""
    return all(isinstance(v, int) for v in (*t.shape, *t.stride(), t.storage_offset()))


def check_inv_freq(op: str, inv_freq: Tensor) -> int | torch.SymInt:
    if inv_freq.dtype != torch.float64:
        _fail(
            op,
            "inv_freq must be float64 (the angles are formed in float64), got ",
            dtype_name(inv_freq.dtype),
        )
    if inv_freq.dim() != 1 or not inv_freq.shape[0] > 0:
        _fail(
            op,
            "inv_freq must be a non-empty 1-D tensor [dim / 2], got shape ",
            shape_text(inv_freq.shape),
        )
    if not inv_freq.is_contiguous():
        _fail(op, "inv_freq must be contiguous")
    return inv_freq.shape[0]


def check_mscale(op: str, mscale: float) -> None:
    if mscale != mscale or mscale in (float("inf"), float("-inf")):
        _fail(op, "mscale must be finite, got ", mscale)


def check_cache_request(
    op: str, inv_freq: Tensor, num_positions: int | torch.SymInt, mscale: float
) -> int | torch.SymInt:
    half = check_inv_freq(op, inv_freq)
    check_mscale(op, mscale)
    if not num_positions >= 0:
        _fail(op, "num_positions must be >= 0, got ", num_positions)
    return half


def check_tables(op: str, cache: Tensor, inv_freq: Tensor, mscale: float) -> int | torch.SymInt:
    half = check_inv_freq(op, inv_freq)
    check_mscale(op, mscale)
    if cache.dtype != torch.float32:
        _fail(op, "cos_sin_cache must be float32, got ", dtype_name(cache.dtype))
    if cache.dim() != 2 or cache.shape[1] != half * 2:
        _fail(
            op,
            "cos_sin_cache must have shape [positions, ",
            half * 2,
            "] to match inv_freq, got ",
            shape_text(cache.shape),
        )
    if not cache.is_contiguous():
        _fail(op, "cos_sin_cache must be contiguous")
    if cache.device != inv_freq.device:
        _fail(
            op,
            "cos_sin_cache and inv_freq must be on the same device, got ",
            cache.device,
            " and ",
            inv_freq.device,
        )
    return half


def check_rotated(
    op: str, name: str, x: Tensor, inv_freq: Tensor, half: int | torch.SymInt
) -> None:
    if x.dtype not in _ROTATED_DTYPES:
        _fail(op, name, " must be float32, float16, bfloat16 or float64, got ", dtype_name(x.dtype))
    if x.device != inv_freq.device:
        _fail(op, name, " is on ", x.device, " but the embedding tables are on ", inv_freq.device)
    if x.dim() < 2:
        _fail(
            op,
            name,
            " must have at least 2 dimensions [..., seq, head_dim], got shape ",
            shape_text(x.shape),
        )
    if x.shape[-1] < half * 2:
        _fail(
            op,
            name,
            ".shape[-1] (",
            x.shape[-1],
            ") is smaller than the rotary dim (",
            half * 2,
            ")",
        )


def _broadcasts(shape: Sequence[object], to: Sequence[object]) -> bool:
    """Whether `shape` expands to `to` (torch.expand's rule: right-aligned, size 1 or equal)."""
    if len(shape) > len(to):
        return False
    return all(s == 1 or s == t for s, t in zip(reversed(shape), reversed(to), strict=False))


def check_mrope_section(
    op: str, sections: Sequence[int] | None, interleaved: bool, half: int | torch.SymInt
) -> None:
    """An MRoPE call's sections (csrc/checks.cpp, check_mrope_section); None: plain RoPE."""
    if sections is None:
        return
    text = shape_text(sections)
    if len(sections) != 3:
        _fail(
            op,
            "mrope_section must have 3 entries (the pairs that follow the t, h and w "
            "positions), got ",
            text,
        )
    if any(s < 0 for s in sections) or sum(sections) != half:
        _fail(op, "mrope_section must be non-negative and sum to dim / 2 = ", half, ", got ", text)
    if half > MROPE_MAX_PAIRS:
        _fail(op, "MRoPE supports up to dim / 2 = ", MROPE_MAX_PAIRS, " pairs, got ", half)
    for c in (1, 2):
        if interleaved and sections[c] != 0 and not c + 3 * (sections[c] - 1) < half:
            _fail(
                op,
                "mrope_section ",
                text,
                " does not fit dim / 2 = ",
                half,
                " pairs interleaved: component ",
                c,
                "'s pairs ",
                c,
                ", ",
                c + 3,
                ", ... run past the last pair",
            )


def position_strides(
    op: str, positions: Tensor | None, x: Tensor, x_name: str, mrope: bool = False
) -> list[int] | None:
    """Checks positions against x and returns its strides expanded to x.shape[:-1] (0 along
    broadcast dimensions), or None when positions is absent. Positions with one more dimension
    than x.shape[:-1] are MRoPE positions (components first): accepted with `mrope`."""
    if positions is None:
        return None
    if positions.dtype not in (torch.int64, torch.int32):
        _fail(op, "positions must be an int32 or int64 tensor, got ", dtype_name(positions.dtype))
    if positions.device != x.device:
        _fail(op, "positions is on ", positions.device, " but ", x_name, " is on ", x.device)
    rows = list(x.shape[:-1])
    shape, strides_in = list(positions.shape), list(positions.stride())
    if len(shape) == len(rows) + 1 and (mrope or shape[0] == 3):
        if not mrope:
            _fail(
                op,
                "positions of shape ",
                shape_text(shape),
                " has one more dimension than ",
                x_name,
                ".shape[:-1] = ",
                shape_text(rows),
                ": MRoPE positions (t, h, w first), but the call has no mrope_section",
            )
        if shape[0] != 3:
            _fail(
                op,
                "MRoPE positions of shape ",
                shape_text(shape),
                " must have 3 components in their first dimension (one per mrope_section entry)",
            )
        shape, strides_in = shape[1:], strides_in[1:]
    if not _broadcasts(shape, rows):
        _fail(
            op,
            "positions of shape ",
            shape_text(positions.shape),
            " does not broadcast against ",
            x_name,
            ".shape[:-1] = ",
            shape_text(rows),
            " (for a [tokens, heads, head_dim] layout pass positions[:, None])",
        )
    lead = len(rows) - len(shape)
    strides = [0] * lead
    for size, stride in zip(shape, strides_in, strict=True):
        strides.append(0 if size == 1 else stride)
    return strides


def check_inplace_pair(op: str, q: Tensor, k: Tensor | None) -> None:
    if k is None:
        return
    if k.device != q.device:
        _fail(op, "q and k must be on the same device, got ", q.device, " and ", k.device)
    if k.dtype != q.dtype:
        _fail(
            op,
            "q and k must have the same dtype, got ",
            dtype_name(q.dtype),
            " and ",
            dtype_name(k.dtype),
        )
    if k.dim() < 1 or q.dim() < 1 or k.shape[-1] != q.shape[-1]:
        _fail(
            op,
            "q and k must have the same head size, got ",
            shape_text(q.shape),
            " and ",
            shape_text(k.shape),
        )


def check_inplace_memory(
    op: str,
    q: Tensor,
    k: Tensor | None,
    tables: Sequence[tuple[str, Tensor | None]],
) -> None:
    """Each written element once, and nothing the call reads (csrc/checks.cpp, the in-place
    memory checks; `tables` are cos_sin_cache, inv_freq and positions, by name)."""
    written = [("q", q)] if k is None else [("q", q), ("k", k)]
    for name, t in written:
        found = self_overlap(t)
        if found is Overlap.YES:
            _fail(
                op,
                name,
                " has overlapping elements (an expanded view?) and cannot be written in place",
            )
        if found is Overlap.UNKNOWN:
            _fail(
                op,
                "the layout of ",
                name,
                " is too irregular to prove that its elements do not overlap, which writing it in "
                "place needs (pass a contiguous copy)",
            )
        if name == "k":
            found = views_overlap(q, t)
            if found is Overlap.YES:
                _fail(op, "q and k share memory; each shared element would be rotated twice")
            if found is Overlap.UNKNOWN:
                _fail(
                    op,
                    "q and k are views too irregular to prove that they do not share memory, "
                    "which rotating both in place needs (pass separate tensors)",
                )
    for table_name, table in tables:
        if table is None:
            continue
        for name, t in written:
            found = views_overlap(t, table)
            if found is Overlap.YES:
                _fail(
                    op,
                    name,
                    " shares memory with ",
                    table_name,
                    ", which the call reads; writing ",
                    name,
                    " in place would change it mid-call (pass a copy)",
                )
            if found is Overlap.UNKNOWN:
                _fail(
                    op,
                    name,
                    " and ",
                    table_name,
                    " are views too irregular to prove that they do not share memory, which "
                    "writing ",
                    name,
                    " in place needs (pass a copy)",
                )


def check_row_layout(
    op: str, name: str, x: Tensor, out_strides: Sequence[int], positions: list[int] | None
) -> None:
    """Rejects a layout whose row dimensions do not merge into MAX_ROW_DIMS (csrc/tensor_rows.cpp,
    rotation_rows: the same merging, counted)."""
    row_dims = x.dim() - 1
    kept: list[tuple[int, tuple[int, int, int]]] = []
    for d in range(row_dims - 1, -1, -1):
        size = x.shape[d]
        if size == 1:
            continue
        implicit = 1 if d == row_dims - 1 else 0
        s = (x.stride(d), out_strides[d], positions[d] if positions is not None else implicit)
        if kept and all(s[i] == kept[-1][1][i] * kept[-1][0] for i in range(3)):
            kept[-1] = (kept[-1][0] * size, kept[-1][1])
            continue
        kept.append((size, s))
    if len(kept) > MAX_ROW_DIMS:
        _fail(
            op,
            "the layout of ",
            name,
            " has ",
            len(kept),
            " row dimensions that cannot be merged; at most ",
            MAX_ROW_DIMS,
            " are supported (pass ",
            name,
            ".contiguous())",
        )
