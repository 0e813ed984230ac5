"""Typed wrappers of the torch.ops.yarn_ext operators (schemas are declared in csrc/ops.cpp).

Tables shared by the operators:
    inv_freq       float64 [dim / 2]
    cos_sin_cache  float32 [positions, dim]: mscale * cos in columns [0, dim/2), mscale * sin in
                   [dim/2, dim); row p holds position p.
Positions outside [0, positions) are never looked up: their cos/sin are computed on the fly from
inv_freq with the same float64 math, so every int64 position is valid.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The overloads, looked up once (yarn_ext/__init__.py has loaded the library): torch.ops'
# attribute lookups would cost a decode call microseconds each time.
_BUILD_COS_SIN_CACHE = torch.ops.yarn_ext.build_cos_sin_cache.default
_ROTATE = torch.ops.yarn_ext.rotate.default
_ROTATE_INPLACE = torch.ops.yarn_ext.rotate_inplace.default
# MRoPE's overloads: a plain call does not pay for parsing their arguments
_ROTATE_MROPE = torch.ops.yarn_ext.rotate.mrope
_ROTATE_INPLACE_MROPE = torch.ops.yarn_ext.rotate_inplace.mrope
_ROTATE_STORE_KV = torch.ops.yarn_ext.rotate_store_kv.default
_INCREMENT_VERSION = torch._C._increment_version


def _no_mrope_section() -> None:
    raise ValueError("yarn_ext: mrope_interleaved needs mrope_section")


def build_cos_sin_cache(inv_freq: Tensor, num_positions: int, mscale: float) -> Tensor:
    """The float32 cos/sin cache for positions [0, num_positions), angles formed in float64."""
    return _BUILD_COS_SIN_CACHE(inv_freq, num_positions, mscale)


def rotate(
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
    """x [..., S, D] (D >= dim) with its first dim features rotated; a new tensor.

    positions (int32/int64) broadcasts against x.shape[:-1]; without it row s along dim -2 gets
    position s. interleaved=False pairs features (i, i + dim/2) (NeoX, Zeta, transformers);
    True pairs (2i, 2i + 1) (GPT-J). inverse=True rotates by -angle (the transpose; both
    directions scale by mscale), which is the gradient. Differentiable with respect to x, to
    any order.

    MRoPE (Qwen2-VL and later): mrope_section gives how many frequencies follow each of a
    token's t, h and w positions (summing to dim/2) - in runs, or interleaved t, h, w, t, ...
    with mrope_interleaved (Qwen3-VL, Qwen3.5). positions may then carry one more leading
    dimension, of size 3: [3, T, 1] for [T, H, D], [3, B, 1, S] for [B, H, S, D]. Plain
    positions mean three equal components (and give plain RoPE's bits).
    """
    if mrope_section is None:
        if mrope_interleaved:
            _no_mrope_section()
        return _ROTATE(x, cos_sin_cache, inv_freq, mscale, positions, interleaved, inverse)
    return _ROTATE_MROPE(
        x,
        cos_sin_cache,
        inv_freq,
        mscale,
        positions,
        interleaved,
        inverse,
        mrope_section,
        mrope_interleaved,
    )


def rotate_inplace(
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
    """Rotates q and (when given) k in place in one call; same conventions as `rotate`. q and k
    may have different head counts and be non-contiguous views (say slices of a fused qkv).
    A call that raises has changed nothing. For inference: where q or k requires grad (and grad
    mode is on) this raises; use `rotate`, which is differentiable."""
    if (q.requires_grad or (k is not None and k.requires_grad)) and torch.is_grad_enabled():
        raise RuntimeError(
            "yarn_ext.rotate_inplace: q or k requires grad, and the in-place rotation "
            "(YarnEmbedding.rotate_) is for inference. Where gradients are needed use "
            "YarnEmbedding.forward (yarn_ext.ops.rotate), which is differentiable"
        )
    if mrope_section is None:
        if mrope_interleaved:
            _no_mrope_section()
        _ROTATE_INPLACE(q, k, cos_sin_cache, inv_freq, mscale, positions, interleaved)
    else:
        _ROTATE_INPLACE_MROPE(
            q,
            k,
            cos_sin_cache,
            inv_freq,
            mscale,
            positions,
            interleaved,
            mrope_section,
            mrope_interleaved,
        )
    # The version counters, bumped as ATen's in-place operators bump them, so that autograd
    # notices saved tensors being overwritten. Here, not in the library: the stable ABI has no
    # call for it, and a Python ADInplaceOrView kernel would cost a decode step microseconds.
    _INCREMENT_VERSION((q,) if k is None else (q, k))


def rotate_store_kv(
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
    *,
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
    """Serving's step between the qkv projection and attention, in one pass over q, k and v:

    - q and k ([T, Hq, D], [T, Hkv, D]; slices of a fused qkv are fine) normalized per head when
      their weights ([D]) are given - Qwen3's RMSNorm (float32, rounded to the dtype, times the
      weight), or with norm_unit_offset Qwen3.5's (times 1 + weight in float32, rounded once);
    - rotated as `rotate_inplace` rotates them, bit for bit: q in place, k into the cache (and
      back into k with write_k);
    - k and v ([T, Hkv, Dv]) written to the paged caches [num_blocks, block_size, Hkv, D] (vLLM's
      flash layout; the block dimensions may be strided) at slot_mapping ([T]; slot = block *
      block_size + offset; -1 is padding and writes nothing), divided by k_scale / v_scale and
      saturated for float8_e4m3fn caches.

    positions: [T] or [T, 1] (MRoPE: [3, T] or [3, T, 1], or plain). The norm covers the whole
    head, the rotation its first dim features. A call that raises has changed nothing: on the
    CPU that includes a slot outside [-1, num_blocks * block_size) and a slot used twice.
    On CUDA the slots are read on the device only (no host synchronization; the call can be
    captured in a CUDA graph): a slot outside the caches is never written - its token's k and v
    are skipped as padding's are - and, when `invalid_slots` (an int32 tensor of one element on
    q's device) is given, the kernel adds the number of such tokens to it; a slot used twice
    holds a mix of its tokens' rows (which token's value lands in each element is undefined).
    For inference: any tensor argument requiring grad (in grad mode) is refused."""
    if torch.is_grad_enabled():
        # Every float tensor: a gradient through any of them (a norm weight that is a model's
        # Parameter, say) would be lost without a word. Under no_grad or inference_mode (serving)
        # nothing to check.
        tensors = {
            "q": q,
            "k": k,
            "v": v,
            "cos_sin_cache": cos_sin_cache,
            "inv_freq": inv_freq,
            "k_cache": k_cache,
            "v_cache": v_cache,
            "q_norm_weight": q_norm_weight,
            "k_norm_weight": k_norm_weight,
            "k_scale": k_scale,
            "v_scale": v_scale,
        }
        for name, tensor in tensors.items():
            if tensor is not None and tensor.requires_grad:
                raise RuntimeError(
                    f"yarn_ext.rotate_store_kv: {name} requires grad; the fused serving step is "
                    "for inference and has no gradient (run it under torch.no_grad() or "
                    "torch.inference_mode())"
                )
    if mrope_interleaved and mrope_section is None:
        _no_mrope_section()
    _ROTATE_STORE_KV(
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
        norm_unit_offset,
        k_scale,
        v_scale,
        interleaved,
        write_k,
        mrope_section,
        mrope_interleaved,
        invalid_slots,
    )
    written = [q, k_cache, v_cache] + ([k] if write_k else [])
    if invalid_slots is not None:
        written.append(invalid_slots)
    _INCREMENT_VERSION(tuple(written))
