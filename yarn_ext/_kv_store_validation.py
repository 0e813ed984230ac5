"""rotate_store_kv's argument checks, in Python, for its fake (tracing) implementation: the
checks of csrc/kv_store_plan.cpp in the same order with the same messages (tests hold the two
together). Memory checks need concrete sizes and strides and are skipped for symbolic ones; the
kernel meets them, and the checks of slot_mapping's values, when the compiled graph runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from yarn_ext._overlap import Overlap, self_overlap, views_overlap
from yarn_ext._validation import (
    _fail,
    check_inplace_pair,
    check_mrope_section,
    check_tables,
    concrete,
    dtype_name,
    shape_text,
)

OP = "yarn_ext.rotate_store_kv"
# Must equal kKvMaxHeadSize (csrc/kv_store_layout.h).
MAX_HEAD_SIZE = 1024
_HEAD_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_heads(name: str, t: Tensor, inv_freq: Tensor) -> None:
    if t.dtype not in _HEAD_DTYPES:
        _fail(OP, name, " must be float32, float16 or bfloat16, got ", dtype_name(t.dtype))
    if t.device != inv_freq.device:
        _fail(OP, name, " is on ", t.device, " but the embedding tables are on ", inv_freq.device)
    if t.dim() != 3:
        _fail(
            OP, name, " must have shape [tokens, heads, head_dim], got shape ", shape_text(t.shape)
        )
    if t.shape[-1] > MAX_HEAD_SIZE:
        _fail(
            OP,
            name,
            ".shape[-1] (",
            t.shape[-1],
            ") is larger than the ",
            MAX_HEAD_SIZE,
            " features a head may have",
        )
    if not (t.stride(-1) == 1 or t.shape[-1] <= 1):
        _fail(OP, name, " must have unit stride in its last dimension, got stride ", t.stride(-1))


def _check_cache(name: str, cache: Tensor, like: Tensor, like_name: str, q: Tensor) -> None:
    if cache.dtype not in (q.dtype, torch.float8_e4m3fn):
        _fail(
            OP,
            name,
            " must have q's dtype (",
            dtype_name(q.dtype),
            ") or float8_e4m3fn, got ",
            dtype_name(cache.dtype),
        )
    if cache.device != like.device:
        _fail(OP, name, " is on ", cache.device, " but ", like_name, " is on ", like.device)
    if not (
        cache.dim() == 4 and cache.shape[2] == like.shape[1] and cache.shape[3] == like.shape[2]
    ):
        _fail(
            OP,
            name,
            " must have shape [num_blocks, block_size, ",
            like.shape[1],
            ", ",
            like.shape[2],
            "] (the heads and head_dim of ",
            like_name,
            "), got ",
            shape_text(cache.shape),
        )
    inner = (cache.shape[3] <= 1 or cache.stride(3) == 1) and (
        cache.shape[2] <= 1 or cache.stride(2) == cache.shape[3]
    )
    if not inner:
        _fail(OP, name, " must be contiguous in its last two dimensions (heads, head_dim)")


def _check_weight(name: str, w: Tensor, q: Tensor) -> None:
    if w.dtype != q.dtype:
        _fail(
            OP, name, " must have q's dtype (", dtype_name(q.dtype), "), got ", dtype_name(w.dtype)
        )
    if w.device != q.device:
        _fail(OP, name, " is on ", w.device, " but q is on ", q.device)
    if w.dim() != 1 or w.shape[0] != q.shape[-1]:
        _fail(
            OP,
            name,
            " must have shape [",
            q.shape[-1],
            "] (q's head_dim), got ",
            shape_text(w.shape),
        )
    if not w.is_contiguous():
        _fail(OP, name, " must be contiguous")


def _check_scale(name: str, s: Tensor, q: Tensor) -> None:
    if s.dtype != torch.float32:
        _fail(OP, name, " must be float32, got ", dtype_name(s.dtype))
    if s.device != q.device:
        _fail(OP, name, " is on ", s.device, " but q is on ", q.device)
    if s.numel() != 1:
        _fail(
            OP, name, " must hold one value (a per-tensor scale), got shape ", shape_text(s.shape)
        )


def _check_positions(positions: Tensor, q: Tensor, tokens: object, mrope: bool) -> None:
    if positions.dtype not in (torch.int64, torch.int32):
        _fail(OP, "positions must be an int32 or int64 tensor, got ", dtype_name(positions.dtype))
    if positions.device != q.device:
        _fail(OP, "positions is on ", positions.device, " but q is on ", q.device)
    shape = list(positions.shape)
    dim = len(shape)
    if (dim == 1 or (dim == 2 and shape[1] == 1)) and shape[0] == tokens:
        return
    is_mrope = (dim == 2 or (dim == 3 and shape[2] == 1)) and shape[0] == 3 and shape[1] == tokens
    if is_mrope and not mrope:
        _fail(
            OP,
            "positions of shape ",
            shape_text(shape),
            " are MRoPE positions (t, h, w first), but the call has no mrope_section",
        )
    if not is_mrope:
        _fail(
            OP,
            "positions must have shape [",
            tokens,
            "] or [",
            tokens,
            ", 1]",
            " (MRoPE: [3, T] or [3, T, 1])" if mrope else "",
            " for the ",
            tokens,
            " tokens of q, got ",
            shape_text(shape),
        )


def _check_memory(
    written: Sequence[tuple[str, Tensor]],
    read: Sequence[tuple[str, Tensor]],
    overlapping: Sequence[tuple[str, Tensor]],
    q: Tensor,
    k: Tensor,
) -> None:
    for name, t in overlapping:
        found = self_overlap(t)
        if found is Overlap.YES:
            _fail(
                OP,
                name,
                " has overlapping elements (an expanded view?) and cannot be written in place",
            )
        if found is Overlap.UNKNOWN:
            _fail(
                OP,
                "the layout of ",
                name,
                " is too irregular to prove that its elements do not overlap, which writing it in "
                "place needs (pass a contiguous copy)",
            )
    found = views_overlap(q, k)
    if found is Overlap.YES:
        _fail(OP, "q and k share memory; each shared element would be rotated twice")
    if found is Overlap.UNKNOWN:
        _fail(
            OP,
            "q and k are views too irregular to prove that they do not share memory, which "
            "rotating both in place needs (pass separate tensors)",
        )
    for i, (name, t) in enumerate(written):
        for other_name, other in written[i + 1 :]:
            found = views_overlap(t, other)
            if found is Overlap.YES:
                _fail(
                    OP,
                    name,
                    " and ",
                    other_name,
                    " share memory; the call writes both (pass separate tensors)",
                )
            if found is Overlap.UNKNOWN:
                _fail(
                    OP,
                    name,
                    " and ",
                    other_name,
                    " are views too irregular to prove that they do not share memory, which "
                    "writing both needs (pass separate tensors)",
                )
        for read_name, r in read:
            found = views_overlap(t, r)
            if found is Overlap.YES:
                _fail(
                    OP,
                    name,
                    " shares memory with ",
                    read_name,
                    ", which the call reads; writing ",
                    name,
                    " in place would change it mid-call (pass a copy)",
                )
            if found is Overlap.UNKNOWN:
                _fail(
                    OP,
                    name,
                    " and ",
                    read_name,
                    " are views too irregular to prove that they do not share memory, which "
                    "writing ",
                    name,
                    " in place needs (pass a copy)",
                )


def check_rotate_store_kv(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cos_sin_cache: Tensor,
    inv_freq: Tensor,
    mscale: float,
    positions: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    slot_mapping: Tensor,
    q_norm_weight: Tensor | None,
    k_norm_weight: Tensor | None,
    eps: float,
    k_scale: Tensor | None,
    v_scale: Tensor | None,
    write_k: bool,
    mrope_section: Sequence[int] | None,
    mrope_interleaved: bool,
    invalid_slots: Tensor | None = None,
) -> None:
    """Every check of plan_rotate_store_kv (csrc/kv_store_plan.cpp), in its order."""
    half = check_tables(OP, cos_sin_cache, inv_freq, mscale)
    check_mrope_section(OP, mrope_section, mrope_interleaved, half)
    _check_heads("q", q, inv_freq)
    if q.shape[-1] < half * 2:
        _fail(OP, "q.shape[-1] (", q.shape[-1], ") is smaller than the rotary dim (", half * 2, ")")
    _check_heads("k", k, inv_freq)
    check_inplace_pair(OP, q, k)
    _check_heads("v", v, inv_freq)
    if v.dtype != q.dtype:
        _fail(OP, "v must have q's dtype (", dtype_name(q.dtype), "), got ", dtype_name(v.dtype))
    tokens = q.shape[0]
    if not (k.shape[0] == tokens and v.shape[0] == tokens):
        _fail(
            OP,
            "q, k and v must have the same number of tokens, got shapes ",
            shape_text(q.shape),
            ", ",
            shape_text(k.shape),
            " and ",
            shape_text(v.shape),
        )
    if v.shape[1] != k.shape[1]:
        _fail(
            OP,
            "v must have k's number of heads (",
            k.shape[1],
            "), got shape ",
            shape_text(v.shape),
        )
    _check_positions(positions, q, tokens, mrope_section is not None)
    _check_cache("k_cache", k_cache, k, "k", q)
    _check_cache("v_cache", v_cache, v, "v", q)
    if v_cache.dtype != k_cache.dtype:
        _fail(
            OP,
            "k_cache and v_cache must have the same dtype, got ",
            dtype_name(k_cache.dtype),
            " and ",
            dtype_name(v_cache.dtype),
        )
    if not (v_cache.shape[0] == k_cache.shape[0] and v_cache.shape[1] == k_cache.shape[1]):
        _fail(
            OP,
            "k_cache and v_cache must have the same blocks [num_blocks, block_size], got shapes ",
            shape_text(k_cache.shape),
            " and ",
            shape_text(v_cache.shape),
        )
    if slot_mapping.dtype not in (torch.int64, torch.int32):
        _fail(
            OP,
            "slot_mapping must be an int32 or int64 tensor, got ",
            dtype_name(slot_mapping.dtype),
        )
    if slot_mapping.device != q.device:
        _fail(OP, "slot_mapping is on ", slot_mapping.device, " but q is on ", q.device)
    if not (slot_mapping.dim() == 1 and slot_mapping.shape[0] == tokens):
        _fail(
            OP,
            "slot_mapping must have shape [",
            tokens,
            "] (a slot per token), got ",
            shape_text(slot_mapping.shape),
        )
    if q_norm_weight is not None:
        _check_weight("q_norm_weight", q_norm_weight, q)
    if k_norm_weight is not None:
        _check_weight("k_norm_weight", k_norm_weight, q)
    if not (eps == eps and abs(eps) != float("inf") and eps >= 0):
        _fail(OP, "eps must be finite and >= 0, got ", f"{eps:g}")
    fp8 = k_cache.dtype == torch.float8_e4m3fn
    if fp8:
        if k_scale is None or v_scale is None:
            _fail(
                OP,
                "k_scale and v_scale are required with a float8_e4m3fn cache (float32 tensors of "
                "one value)",
            )
        assert k_scale is not None and v_scale is not None
        _check_scale("k_scale", k_scale, q)
        _check_scale("v_scale", v_scale, q)
    elif k_scale is not None or v_scale is not None:
        _fail(
            OP,
            "k_scale and v_scale are for float8_e4m3fn caches, but the caches are ",
            dtype_name(k_cache.dtype),
        )
    if invalid_slots is not None:
        if invalid_slots.dtype != torch.int32:
            _fail(
                OP, "invalid_slots must be an int32 tensor, got ", dtype_name(invalid_slots.dtype)
            )
        if invalid_slots.device != q.device:
            _fail(OP, "invalid_slots is on ", invalid_slots.device, " but q is on ", q.device)
        if invalid_slots.numel() != 1:
            _fail(
                OP,
                "invalid_slots must hold one value (a counter), got shape ",
                shape_text(invalid_slots.shape),
            )
    tensors = [q, k, v, k_cache, v_cache, positions, slot_mapping, cos_sin_cache, inv_freq]
    if not all(concrete(t) for t in tensors):
        return
    written = [("q", q), ("k_cache", k_cache), ("v_cache", v_cache)]
    read = [
        ("v", v),
        ("cos_sin_cache", cos_sin_cache),
        ("inv_freq", inv_freq),
        ("positions", positions),
        ("slot_mapping", slot_mapping),
    ]
    if write_k:
        written.append(("k", k))
    else:
        read.insert(0, ("k", k))
    if invalid_slots is not None and concrete(invalid_slots):
        written.append(("invalid_slots", invalid_slots))
    for name, t in (
        ("q_norm_weight", q_norm_weight),
        ("k_norm_weight", k_norm_weight),
        ("k_scale", k_scale if fp8 else None),
        ("v_scale", v_scale if fp8 else None),
    ):
        if t is not None and concrete(t):
            read.append((name, t))
    overlapping = [("q", q), ("k", k)] if write_k else [("q", q)]
    overlapping += [("k_cache", k_cache), ("v_cache", v_cache)]
    _check_memory(written, read, overlapping, q, k)
