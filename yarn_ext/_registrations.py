"""What torch needs from Python to trace and differentiate the yarn_ext operators.

The schemas and the CPU/CUDA kernels are registered by the native library (csrc/schemas.cpp, on
PyTorch's stable ABI). Here:
  - fake implementations (torch.library.register_fake): shapes and dtypes for FakeTensor tracing
    (torch.compile, torch.export), with the kernels' argument checks (yarn_ext._validation).
    Written in Python so that shapes stay symbolic: a Meta kernel registered through the stable
    ABI sees concrete sizes only, and every new shape would recompile under dynamic=True;
  - the backward of rotate (torch.library.register_autograd): rotate is linear in x, y = mscale *
    R(angle) x on the rotary features and y = x past them, so its gradient is the transpose,
    mscale * R(-angle) g: the same operator with inverse flipped. The backward calls the operator,
    so every higher derivative follows (gradgradcheck) and AOTAutograd traces it as one more
    yarn_ext::rotate node;

rotate_inplace is for inference: its Python wrapper (yarn_ext.ops.rotate_inplace) refuses tensors
that require grad and bumps the version counters of q and k.

C++ programs get the same autograd behaviour from the header yarn_ext/autograd.h.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from yarn_ext import _validation as v
from yarn_ext._kv_store_validation import check_rotate_store_kv

_ROTATE = "yarn_ext::rotate"
_ROTATE_INPLACE = "yarn_ext::rotate_inplace"
_ROTATE_MROPE = "yarn_ext::rotate.mrope"
_ROTATE_INPLACE_MROPE = "yarn_ext::rotate_inplace.mrope"
_CACHE = "yarn_ext::build_cos_sin_cache"
_OP_NAME = {
    _ROTATE: "yarn_ext.rotate",
    _ROTATE_INPLACE: "yarn_ext.rotate_inplace",
    _CACHE: "yarn_ext.build_cos_sin_cache",
}


@torch.library.register_fake(_CACHE)
def _build_cos_sin_cache_fake(inv_freq: Tensor, num_positions: int, mscale: float) -> Tensor:
    half = v.check_cache_request(_OP_NAME[_CACHE], inv_freq, num_positions, mscale)
    return inv_freq.new_empty((num_positions, half * 2), dtype=torch.float32)


@torch.library.register_fake(_ROTATE_MROPE)
@torch.library.register_fake(_ROTATE)
def _rotate_fake(
    x: Tensor,
    cos_sin_cache: Tensor,
    inv_freq: Tensor,
    mscale: float,
    positions: Tensor | None = None,
    interleaved: bool = False,
    inverse: bool = False,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
) -> Tensor:
    op = _OP_NAME[_ROTATE]
    half = v.check_tables(op, cos_sin_cache, inv_freq, mscale)
    v.check_mrope_section(op, mrope_section, mrope_interleaved, half)
    v.check_rotated(op, "x", x, inv_freq, half)
    strides = v.position_strides(op, positions, x, "x", mrope_section is not None)
    out = torch.empty_like(x)
    if v.concrete(x) and (positions is None or v.concrete(positions)):
        v.check_row_layout(op, "x", x, out.stride(), strides)
    return out


@torch.library.register_fake(_ROTATE_INPLACE_MROPE)
@torch.library.register_fake(_ROTATE_INPLACE)
def _rotate_inplace_fake(
    q: Tensor,
    k: Tensor | None,
    cos_sin_cache: Tensor,
    inv_freq: Tensor,
    mscale: float,
    positions: Tensor | None = None,
    interleaved: bool = False,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
) -> None:
    op = _OP_NAME[_ROTATE_INPLACE]
    half = v.check_tables(op, cos_sin_cache, inv_freq, mscale)
    v.check_mrope_section(op, mrope_section, mrope_interleaved, half)
    v.check_rotated(op, "q", q, inv_freq, half)
    if k is not None:
        v.check_rotated(op, "k", k, inv_freq, half)
    v.check_inplace_pair(op, q, k)
    concrete = all(v.concrete(t) for t in (q, k, positions) if t is not None)
    for name, t in (("q", q), ("k", k)):
        if t is None:
            continue
        strides = v.position_strides(op, positions, t, name, mrope_section is not None)
        if concrete:
            v.check_row_layout(op, name, t, t.stride(), strides)
    # The memory checks come last, as in the kernels. Like the layout checks they need concrete
    # sizes and strides: each runs where its tensors have them (a symbolic cache length skips
    # only the cache's check); the kernel runs them all on every call.
    if all(v.concrete(t) for t in (q, k) if t is not None):
        tables = [
            (name, t)
            for name, t in (
                ("cos_sin_cache", cos_sin_cache),
                ("inv_freq", inv_freq),
                ("positions", positions),
            )
            if t is not None and v.concrete(t)
        ]
        v.check_inplace_memory(op, q, k, tables)


@torch.library.register_fake("yarn_ext::rotate_store_kv")
def _rotate_store_kv_fake(
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
    q_norm_weight: Tensor | None = None,
    k_norm_weight: Tensor | None = None,
    eps: float = 1e-6,
    norm_unit_offset: bool = False,
    k_scale: Tensor | None = None,
    v_scale: Tensor | None = None,
    interleaved: bool = False,
    write_k: bool = False,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
    invalid_slots: Tensor | None = None,
) -> None:
    check_rotate_store_kv(
        q,
        k,
        v,
        cos_sin_cache,
        inv_freq,
        mscale,
        positions,
        k_cache,
        v_cache,
        slot_mapping,
        q_norm_weight,
        k_norm_weight,
        eps,
        k_scale,
        v_scale,
        write_k,
        mrope_section,
        mrope_interleaved,
        invalid_slots,
    )


# -- autograd ----------------------------------------------------------------------------------


def _setup_rotate(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    _, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse = inputs[:7]
    mrope_section, mrope_interleaved = inputs[7:] if len(inputs) > 7 else (None, False)
    # The tables are fixed functions of the configuration, not parameters: a gradient for them
    # would be silently missing, so asking for one is an error.
    if cos_sin_cache.requires_grad or inv_freq.requires_grad:
        raise RuntimeError(
            "yarn_ext.rotate: cos_sin_cache and inv_freq are not differentiable (the rotation "
            "is differentiable with respect to x only); pass tables that do not require grad"
        )
    ctx.save_for_backward(cos_sin_cache, inv_freq, positions)
    ctx.mscale, ctx.interleaved, ctx.inverse = mscale, interleaved, inverse
    ctx.mrope_section, ctx.mrope_interleaved = mrope_section, mrope_interleaved


def _rotate_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    cos_sin_cache, inv_freq, positions = ctx.saved_tensors
    args = (grad, cos_sin_cache, inv_freq, ctx.mscale, positions, ctx.interleaved, not ctx.inverse)
    if ctx.mrope_section is None:
        return torch.ops.yarn_ext.rotate.default(*args), *(None,) * 6
    # The same per-pair angles, MRoPE's, negated: the transpose.
    grad_x = torch.ops.yarn_ext.rotate.mrope(*args, ctx.mrope_section, ctx.mrope_interleaved)
    return grad_x, *(None,) * 8


torch.library.register_autograd(_ROTATE, _rotate_backward, setup_context=_setup_rotate)
torch.library.register_autograd(_ROTATE_MROPE, _rotate_backward, setup_context=_setup_rotate)
