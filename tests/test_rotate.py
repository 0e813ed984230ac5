"""The rotation operators (out of place and in place) against the float64 reference, over
dtypes, styles, partial rotary, layouts and positions. Outputs are NaN-poisoned (`poison`)."""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import ops, reference

from . import support
from .support import FLOAT_DTYPES, assert_matches_reference, randn

pytestmark = pytest.mark.usefixtures("poison")


tables = support.tables


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize(("head_size", "dim"), [(64, 64), (96, 64), (70, 2), (128, 128), (66, 64)])
def test_rotate_dtypes_styles_partial(dtype, interleaved, head_size, dim) -> None:
    cache, inv_freq, mscale = tables(dim, 512)
    x = randn(3, 40, head_size, dtype=dtype)
    out = ops.rotate(x, cache, inv_freq, mscale, interleaved=interleaved)
    assert out.dtype == dtype and out.shape == x.shape
    want = reference.rotate(x, inv_freq, mscale, interleaved=interleaved)
    assert_matches_reference(out, want, x, mscale)
    # partial rotary: the features past dim are copied exactly
    assert torch.equal(out[..., dim:], x[..., dim:])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotate_inplace_q_and_k_with_different_head_counts(dtype, interleaved) -> None:
    cache, inv_freq, mscale = tables(128, 256)
    tokens = 37
    positions = torch.randint(0, 256, (tokens,), generator=torch.Generator().manual_seed(1))
    q, k = randn(tokens, 32, 128, dtype=dtype), randn(tokens, 8, 128, dtype=dtype, seed=1)
    want_q = reference.rotate(q, inv_freq, mscale, positions[:, None], interleaved)
    want_k = reference.rotate(k, inv_freq, mscale, positions[:, None], interleaved)
    q_in, k_in = q.clone(), k.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, mscale, positions[:, None], interleaved)
    assert_matches_reference(q, want_q, q_in, mscale)
    assert_matches_reference(k, want_k, k_in, mscale)
    # in place and out of place compute the same values
    assert torch.equal(
        q, ops.rotate(q_in, cache, inv_freq, mscale, positions[:, None], interleaved)
    )


def test_rotate_inplace_without_k() -> None:
    cache, inv_freq, mscale = tables(64, 64)
    q = randn(2, 4, 16, 64)
    q_in = q.clone()
    ops.rotate_inplace(q, None, cache, inv_freq, mscale)
    assert_matches_reference(q, reference.rotate(q_in, inv_freq, mscale), q_in, mscale)


@pytest.mark.parametrize("position_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize(
    ("shape", "positions_shape"),
    [
        ((50, 64), (50,)),  # [S, D]
        ((2, 50, 64), (50,)),  # [B, S, D], one sequence for the batch
        ((2, 50, 64), (2, 50)),  # [B, S, D], per-sequence positions
        ((2, 4, 50, 64), (2, 1, 50)),  # [B, H, S, D]
        ((2, 50, 4, 64), (2, 50, 1)),  # [B, S, H, D]
        ((50, 4, 64), (50, 1)),  # [T, H, D]
        ((2, 3, 5, 7, 64), (3, 1, 7)),  # more dimensions than anyone uses
        ((2, 50, 64), ()),  # one position for everything
    ],
)
def test_positions_broadcast(position_dtype, shape, positions_shape) -> None:
    cache, inv_freq, mscale = tables(64, 100)
    x = randn(*shape)
    generator = torch.Generator().manual_seed(2)
    positions = torch.randint(0, 100, positions_shape, generator=generator, dtype=position_dtype)
    out = ops.rotate(x, cache, inv_freq, mscale, positions)
    assert_matches_reference(out, reference.rotate(x, inv_freq, mscale, positions), x, mscale)


# Every int64 is a valid position: inside the cache, before it, far past it, around the 2^44-radian
# angle where the reduction by pi changes method, past 2^53 (where int64 -> float64 rounds) and
# int64's extremes (padding sentinels).
POSITIONS = [0, 15, 16, 17, 1000, 2**20, 2**31 + 5, 2**40, 2**44 - 1, 2**44 + 1, 2**45 + 3]
POSITIONS += [2**53 + 1, 2**56 + 8, 2**62 + 2**40, 2**63 - 1, -1, -16, -(2**33), -(2**50), -(2**63)]


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_positions_outside_the_cache_are_computed(dtype, interleaved) -> None:
    cache, inv_freq, mscale = tables(64, 16)
    positions = torch.tensor(POSITIONS, dtype=torch.int64)[:, None]
    x = randn(positions.numel(), 3, 64, dtype=dtype)
    want = reference.rotate(x, inv_freq, mscale, positions, interleaved)
    out = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved)
    assert_matches_reference(out, want, x, mscale)
    ops.rotate_inplace(x, None, cache, inv_freq, mscale, positions, interleaved)
    assert torch.equal(x, out)


def test_cos_sin_of_far_angles_are_bounded_and_accurate() -> None:
    # each position against many frequencies: the vectorized lanes and the scalar tail (half = 37)
    # meet angles on both sides of the 2^44 limit in one vector
    inv_freq = yarn_ext.yarn_inv_freq(74, 1e6, 8.0, 4096)
    cache = ops.build_cos_sin_cache(inv_freq, 1, 1.0)
    positions = torch.tensor(POSITIONS, dtype=torch.int64)[:, None]
    ones = torch.zeros(positions.numel(), 1, 74, dtype=torch.float64)
    ones[..., :37] = 1.0  # rotating (1, 0) pairs gives (cos, sin)
    out = ops.rotate(ones, cache, inv_freq, 1.0, positions)
    cos, sin = reference.cos_sin(positions, inv_freq, 1.0)
    assert (out[..., :37] - cos).abs().max() < 1e-15
    assert (out[..., 37:] - sin).abs().max() < 1e-15
    assert ((out[..., :37] ** 2 + out[..., 37:] ** 2 - 1).abs() < 1e-15).all()


def test_on_the_fly_values_equal_cached_values_bit_for_bit() -> None:
    inv_freq = yarn_ext.yarn_inv_freq(128, 1e6, 4.0, 32768)
    big = ops.build_cos_sin_cache(inv_freq, 3000, 1.1)
    small = ops.build_cos_sin_cache(inv_freq, 10, 1.1)
    x = randn(2000, 2, 128)
    positions = torch.arange(1000, 3000)[:, None]
    from_cache = ops.rotate(x, big, inv_freq, 1.1, positions)
    on_the_fly = ops.rotate(x, small, inv_freq, 1.1, positions)
    assert torch.equal(from_cache, on_the_fly)


def test_fused_qkv_slices_in_place_leave_v_untouched() -> None:
    cache, inv_freq, mscale = tables(128, 64)
    tokens, hq, hk = 19, 8, 2
    qkv = randn(tokens, hq + 2 * hk, 128)
    original = qkv.clone()
    q, k = qkv[:, :hq], qkv[:, hq : hq + hk]
    positions = torch.arange(tokens)[:, None] + 40  # some past the cache
    ops.rotate_inplace(q, k, cache, inv_freq, mscale, positions)
    assert_matches_reference(
        qkv[:, :hq],
        reference.rotate(original[:, :hq], inv_freq, mscale, positions),
        original,
        mscale,
    )
    assert_matches_reference(
        qkv[:, hq : hq + hk],
        reference.rotate(original[:, hq : hq + hk], inv_freq, mscale, positions),
        original,
        mscale,
    )
    assert torch.equal(qkv[:, hq + hk :], original[:, hq + hk :])


@pytest.mark.parametrize(
    "make_view",
    [
        lambda t: t.transpose(1, 2),  # [B, S, H, D] storage seen as [B, H, S, D]
        lambda t: t[:, ::2],  # strided along a row dimension
        lambda t: t[..., ::2],  # strided along the head dimension itself
        lambda t: t.permute(2, 0, 1, 3),
    ],
)
@pytest.mark.parametrize("in_place", [False, True])
def test_non_contiguous_layouts(make_view, in_place) -> None:
    cache, inv_freq, mscale = tables(32, 64)
    base = randn(3, 10, 6, 64)
    x = make_view(base)
    x_in = x.clone()
    want = reference.rotate(x_in, inv_freq, mscale)
    if in_place:
        ops.rotate_inplace(x, None, cache, inv_freq, mscale)
        out = x
    else:
        out = ops.rotate(x, cache, inv_freq, mscale)
    assert_matches_reference(out, want, x_in, mscale)


def test_empty_tensors_are_a_no_op() -> None:
    cache, inv_freq, mscale = tables(64, 8)
    x = torch.empty(0, 4, 64)
    assert ops.rotate(x, cache, inv_freq, mscale).shape == (0, 4, 64)
    q, k = torch.empty(2, 0, 64), torch.empty(2, 0, 64)
    ops.rotate_inplace(q, k, cache, inv_freq, mscale)
    positions = torch.empty(0, 1, dtype=torch.int64)
    ops.rotate_inplace(torch.empty(0, 4, 64), None, cache, inv_freq, mscale, positions)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs at least two intra-op threads")
def test_many_rows_use_all_threads_and_agree() -> None:
    # large enough to be split over threads; single- and multi-threaded results are identical
    cache, inv_freq, mscale = tables(128, 4096)
    x = randn(4096, 8, 128)
    positions = torch.arange(4096)[:, None]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = ops.rotate(x, cache, inv_freq, mscale, positions)
    finally:
        torch.set_num_threads(threads)
    parallel = ops.rotate(x, cache, inv_freq, mscale, positions)
    assert torch.equal(serial, parallel)
    assert_matches_reference(parallel, reference.rotate(x, inv_freq, mscale, positions), x, mscale)
