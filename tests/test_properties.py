"""Property-based tests (hypothesis): random shapes, head counts, layouts (contiguous, transposed,
slices of a fused qkv, a strided last dimension), broadcast positions of both integer dtypes
anywhere in their range (inside, before and far past the cache, out to int64's extremes),
dtypes, both pair styles and partial rotary - against the float64 reference, out of place and
in place, on the CPU and (where there is one) on the GPU; and the CUDA kernels' work emulated on
the CPU (fast and generic path) against the CPU kernels, bit for bit. Fresh tensors start NaN
(the poison fixture), so an unwritten output fails.

Examples per test: the "ci" profile (default) runs 500, "slow" 5000
(HYPOTHESIS_PROFILE=slow python -m pytest tests/test_properties.py)."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import yarn_ext
from yarn_ext import ops, reference

from . import hooks, support
from .support import DEVICES, FLOAT_DTYPES, assert_matches_reference, randn

# The poison fixture switches a global setting for the whole test, which is what every example
# wants: hence function_scoped_fixture is not a problem here.
_QUIET = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=500, deadline=None, suppress_health_check=_QUIET)
settings.register_profile("slow", max_examples=5000, deadline=None, suppress_health_check=_QUIET)
pytestmark = pytest.mark.usefixtures("poison")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CACHED = 64  # a short cache, so that many positions are computed on the fly
ON_DEVICES = pytest.mark.parametrize("device", DEVICES)


@st.composite
def tables(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    half = draw(st.integers(1, 40))
    base = draw(st.sampled_from([1e4, 5e5, 1e6]))
    scale = draw(st.sampled_from([1.0, 4.0, 32.0]))
    inv_freq = yarn_ext.yarn_inv_freq(2 * half, base, scale, 256)
    mscale = yarn_ext.get_mscale(scale)
    return inv_freq, ops.build_cos_sin_cache(inv_freq, CACHED, mscale), mscale, 2 * half


def positions_for(draw: st.DrawFn, shape: tuple[int, ...]) -> torch.Tensor:
    """int64 or int32 positions broadcasting to `shape` (some dims kept, the others 1)."""
    dtype = draw(st.sampled_from([torch.int64, torch.int32]))
    low, high = (-(2**31), 2**31 - 1) if dtype == torch.int32 else (-(2**63), 2**63 - 1)
    kept = [draw(st.booleans()) for _ in shape]
    pshape = tuple(n if keep else 1 for n, keep in zip(shape, kept, strict=True))
    count = 1
    for n in pshape:
        count *= n
    value = st.one_of(st.integers(0, CACHED - 1), st.integers(low, -1), st.integers(CACHED, high))
    values = draw(st.lists(value, min_size=count, max_size=count))
    return torch.tensor(values, dtype=dtype).reshape(pshape)


@st.composite
def layouts(draw: st.DrawFn, head_size: int, dtype: torch.dtype, device: str) -> torch.Tensor:
    """x [B, S, H, head_size] in one of the layouts kernels see (the view is taken on the
    device: moving a view would make it contiguous)."""
    b, s, h = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device, dtype)

    kind = draw(st.sampled_from(["contiguous", "transposed", "fused", "strided", "offset"]))
    if kind == "contiguous":
        return randn(b, s, h, head_size)
    if kind == "transposed":  # [B, H, S, D] storage seen as [B, S, H, D]
        return randn(b, h, s, head_size).transpose(1, 2)
    if kind == "fused":  # the q part of a fused qkv
        return randn(b, s, 3 * h, head_size)[:, :, h : 2 * h]
    if kind == "strided":  # a last dimension with stride 2
        return randn(b, s, h, 2 * head_size)[..., ::2]
    return randn(b * s * h * head_size + 1)[1:].reshape(b, s, h, head_size)  # unaligned start


@ON_DEVICES
@given(data=st.data())
def test_rotate_matches_reference(device: str, data: st.DataObject) -> None:
    inv_freq, cache, mscale, dim = data.draw(tables())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    head_size = dim + data.draw(st.integers(0, 6))
    x = data.draw(layouts(head_size, dtype, device))
    positions = positions_for(data.draw, tuple(x.shape[:-1]))
    interleaved = data.draw(st.booleans())
    out = ops.rotate(
        x, cache.to(device), inv_freq.to(device), mscale, positions.to(device), interleaved
    ).cpu()
    x = x.cpu()
    want = reference.rotate(x, inv_freq, mscale, positions, interleaved)
    assert_matches_reference(out, want, x, mscale)
    assert torch.equal(out[..., dim:], x[..., dim:])  # partial rotary: the rest passes through


@ON_DEVICES
@given(data=st.data())
def test_rotate_inplace_matches_reference(device: str, data: st.DataObject) -> None:
    inv_freq, cache, mscale, dim = data.draw(tables())
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    head_size = dim + data.draw(st.integers(0, 6))
    tokens, hq, hk = (
        data.draw(st.integers(1, 12)),
        data.draw(st.integers(1, 6)),
        data.draw(st.integers(1, 3)),
    )
    seed = data.draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    qkv = torch.randn(tokens, hq + 2 * hk, head_size, generator=generator, dtype=torch.float64)
    original = qkv.to(dtype)
    qkv = original.to(device, copy=True)
    q, k = qkv[:, :hq], qkv[:, hq : hq + hk]
    positions = positions_for(data.draw, (tokens, 1))
    interleaved = data.draw(st.booleans())
    want_q = reference.rotate(original[:, :hq], inv_freq, mscale, positions, interleaved)
    want_k = reference.rotate(original[:, hq : hq + hk], inv_freq, mscale, positions, interleaved)
    ops.rotate_inplace(
        q, k, cache.to(device), inv_freq.to(device), mscale, positions.to(device), interleaved
    )
    qkv = qkv.cpu()
    assert_matches_reference(qkv[:, :hq], want_q, original[:, :hq], mscale)
    assert_matches_reference(qkv[:, hq : hq + hk], want_k, original[:, hq : hq + hk], mscale)
    assert torch.equal(qkv[:, hq + hk :], original[:, hq + hk :])  # v untouched


@pytest.mark.hooks
@given(data=st.data())
def test_cuda_work_on_the_cpu_matches_the_cpu_kernels(data: st.DataObject) -> None:
    # The CUDA kernels' work (token-major fast path and generic path), emulated on the CPU with
    # the launcher's path choice and geometry, equals the CPU kernels bit for bit over random
    # layouts, positions and head slicings (sm_count). Rotary halves that are whole 16-byte
    # vectors are drawn often, so that the fast path gets most examples.
    half = data.draw(st.one_of(st.sampled_from([4, 8, 16, 24, 32]), st.integers(1, 40)))
    inv_freq = yarn_ext.yarn_inv_freq(2 * half, 1e6, 4.0, 256)
    mscale = yarn_ext.get_mscale(4.0)
    cache = ops.build_cos_sin_cache(inv_freq, CACHED, mscale)
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    head_size = 2 * half + data.draw(st.sampled_from([0, 0, 8, 16, 3]))
    x = data.draw(layouts(head_size, dtype, "cpu"))
    view = data.draw(st.sampled_from(["bshd", "bhsd", "thd"]))
    if view == "bhsd":
        x = x.transpose(1, 2)
    elif view == "thd" and x.is_contiguous():
        x = x.flatten(0, 1)
    positions = data.draw(st.one_of(st.none(), st.just("drawn")))
    if positions is not None:
        positions = positions_for(data.draw, tuple(x.shape[:-1]))
    interleaved = data.draw(st.booleans())
    sm_count = data.draw(st.sampled_from([1, 4, 132, 100000]))
    want = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved)
    out, launches = hooks.emulate_cuda_rotate(
        x, cache, inv_freq, mscale, positions, interleaved, sm_count=sm_count
    )
    assert torch.equal(out, want)
    event(f"out of place: {'+'.join(launch['path'] for launch in launches)}")
    # in place on the same strides (a fresh allocation: the alignment may differ)
    q = torch.empty_strided(x.shape, x.stride(), dtype=dtype).copy_(x)
    want_q = torch.empty_strided(x.shape, x.stride(), dtype=dtype).copy_(x)
    ops.rotate_inplace(want_q, None, cache, inv_freq, mscale, positions, interleaved)
    launches = hooks.emulate_cuda_rotate_inplace(
        q, None, cache, inv_freq, mscale, positions, interleaved, sm_count=sm_count
    )
    assert torch.equal(q, want_q)
    event(f"in place: {'+'.join(launch['path'] for launch in launches)}")


@given(data=st.data())
def test_rotate_store_kv_cpu_kernel_and_cuda_work_agree(data: st.DataObject) -> None:
    """rotate_store_kv: drawn slots (padding among them, any block size), layouts (fused qkv,
    strided cache blocks, rows off their alignment), head sizes, dtypes, norms and caches; the
    CPU kernel and the CUDA kernel's work (emulated) give the same bits, and neither writes
    outside the rows of the tokens' slots (the caches sit in poisoned guard bands)."""
    from .test_kv_store_emulation import misaligned, same_bytes
    from .test_rotate_store_kv import assert_only_slots_written, make_case

    inv_freq, cache, mscale, dim = data.draw(tables())
    dtype = data.draw(st.sampled_from([torch.float32, torch.float16, torch.bfloat16]))
    fp8 = data.draw(st.booleans())
    head_size = dim + data.draw(st.sampled_from([0, 0, 8, 16, 3]))
    tokens = data.draw(st.integers(0, 12))
    block_size = data.draw(st.sampled_from([1, 2, 4, 16]))
    blocks = -(-tokens // block_size) + data.draw(st.integers(0, 3))
    shape = {
        "dtype": dtype,
        "cache_dtype": torch.float8_e4m3fn if fp8 else dtype,
        "tokens": tokens,
        "heads": (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))),
        "head_size": head_size,
        "v_head_size": data.draw(st.sampled_from([head_size, 8, 24])),
        "blocks": max(blocks, 1),
        "block_size": block_size,
        "padding": data.draw(st.integers(0, tokens)),
        "fused": data.draw(st.booleans()),
        "strided_blocks": data.draw(st.booleans()),
        "seed": data.draw(st.integers(0, 2**16)),
    }
    shift = data.draw(st.booleans())
    positions = torch.tensor(
        data.draw(st.lists(st.integers(-50, 300), min_size=tokens, max_size=tokens)),
        dtype=data.draw(st.sampled_from([torch.int64, torch.int32])),
    )
    slot_dtype = data.draw(st.sampled_from([torch.int64, torch.int32]))
    kwargs: dict = {
        "interleaved": data.draw(st.booleans()),
        "write_k": data.draw(st.booleans()),
    }
    norm = data.draw(st.sampled_from(["none", "weight", "unit_offset"]))
    if norm != "none":
        kwargs["q_norm_weight"] = randn(head_size, dtype=dtype, seed=1) * 0.5 + 1
        kwargs["k_norm_weight"] = randn(head_size, dtype=dtype, seed=2) * 0.5 + 1
        kwargs["norm_unit_offset"] = norm == "unit_offset"
        kwargs["eps"] = data.draw(st.sampled_from([1e-6, 1e-5, 0.0]))
    if fp8:
        kwargs["k_scale"] = torch.tensor([data.draw(st.sampled_from([0.01, 0.5, 2.0]))])
        kwargs["v_scale"] = torch.tensor(data.draw(st.sampled_from([0.05, 1.0])))
    cases = [make_case(**shape), make_case(**shape)]
    for case in cases:
        case.positions = positions
        case.slots = case.slots.to(slot_dtype)
        if shift:
            misaligned(case)

    def args(case):
        return (case.q, case.k, case.v, cache, inv_freq, mscale, case.positions, case.k_cache)

    ops.rotate_store_kv(*args(cases[0]), cases[0].v_cache, cases[0].slots, **kwargs)
    launch = hooks.emulate_cuda_rotate_store_kv(
        *args(cases[1]), cases[1].v_cache, cases[1].slots, **kwargs
    )
    event(f"vector width {launch['width']}")
    for field in ("q", "k", "k_store", "v_store"):
        assert same_bytes(getattr(cases[0], field), getattr(cases[1], field)), field
    for case in cases:
        assert_only_slots_written(case, case.k_cache, case.k_store)
        assert_only_slots_written(case, case.v_cache, case.v_store)


@given(
    data=st.data(),
    half=st.integers(1, 24),
    interleaved=st.booleans(),
    mrope_interleaved=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float64]),
)
def test_mrope_any_sections_and_positions(
    data, half, interleaved, mrope_interleaved, dtype
) -> None:
    """MRoPE: any sections that fit (interleaved or in runs), any positions in, past and before
    the cache, against the float64 reference."""
    if mrope_interleaved:  # what fits interleaved: component c has at most (half - c + 2) // 3
        h = data.draw(st.integers(0, (half + 1) // 3))
        w = data.draw(st.integers(0, min(half // 3, half - h)))
    else:
        h = data.draw(st.integers(0, half))
        w = data.draw(st.integers(0, half - h))
    sections = [half - h - w, h, w]
    tokens = data.draw(st.integers(1, 9))
    heads = data.draw(st.integers(1, 3))
    extra = data.draw(st.sampled_from([0, 2, 8]))
    seed = data.draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(-40, 200, (3, tokens, 1), generator=generator)
    cache, inv_freq, mscale = support.tables(2 * half, 64, mscale=1.1)
    x = randn(tokens, heads, 2 * half + extra, dtype=dtype, seed=seed)
    mrope = (sections, mrope_interleaved)
    out = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved, False, *mrope)
    want = reference.rotate(x, inv_freq, mscale, positions, interleaved, False, *mrope)
    assert_matches_reference(out, want, x, mscale)
