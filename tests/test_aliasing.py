"""An in-place rotation writes q and k while it reads the cos/sin cache, inv_freq and positions.
A written element that is also read, or written twice, would make the result depend on the order
of the work: such calls raise, naming both tensors, and change nothing. Views that only sit side
by side in one storage are fine, and a layout too irregular to decide is refused."""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import ops, reference

from .support import (
    DEVICES,
    assert_unchanged_after,
    randn,
    undecidable_pair,
    undecidable_self_view,
)


def tables(dim: int = 16, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = yarn_ext.yarn_inv_freq(dim, 1e4, device=device)
    return ops.build_cos_sin_cache(inv_freq, 32, 1.0), inv_freq


def rotate_inplace(q, k, cache, inv_freq, positions=None) -> None:
    ops.rotate_inplace(q, k, cache, inv_freq, 1.0, positions)


@pytest.mark.parametrize("device", DEVICES)
def test_q_or_k_viewing_a_table_is_refused(device: str) -> None:
    cache, inv_freq = tables(device=device)
    other = randn(4, 1, 16).to(device)
    pos = torch.arange(4, device=device)[:, None]
    # q or k as a view of the cache (float32 rows of the right width)
    for q, k in ((cache[:4, None], other), (other, cache[4:8, None])):
        name = "q" if q.data_ptr() == cache.data_ptr() else "k"
        assert_unchanged_after(
            lambda q=q, k=k: rotate_inplace(q, k, cache, inv_freq, pos),
            cache,
            other,
            error=ValueError,
            match=f"{name} shares memory with cos_sin_cache",
        )
    # q reinterpreting inv_freq's float64 bytes as 16 float32 values
    q = inv_freq.view(torch.float32).view(1, 1, 16)
    assert_unchanged_after(
        lambda: rotate_inplace(q, None, cache, inv_freq),
        inv_freq,
        error=ValueError,
        match="q shares memory with inv_freq",
    )


@pytest.mark.parametrize("device", DEVICES)
def test_positions_aliasing_q_or_k_are_refused(device: str) -> None:
    cache, inv_freq = tables(device=device)
    q, k = randn(4, 2, 16).to(device), randn(4, 2, 16, seed=1).to(device)
    # int32 positions read out of q's own bytes; int64 ones read across two of k's floats
    in_q = q.view(torch.int32)[:, :, 0]
    in_k = k.view(torch.int64)[:, :, 0]
    for positions, name in ((in_q, "q"), (in_k, "k")):
        assert_unchanged_after(
            lambda positions=positions: rotate_inplace(q, k, cache, inv_freq, positions),
            q,
            k,
            error=ValueError,
            match=f"{name} shares memory with positions",
        )


def test_views_side_by_side_in_one_storage_are_fine() -> None:
    """Byte-exact: q's float32 rows and int32 positions interleaved in one storage, q and k as
    alternate heads, and a row layout that is not nested but never repeats an element."""
    cache, inv_freq = tables()
    storage = randn(4, 2, 17)
    q = storage[..., :16]
    positions = storage.view(torch.int32)[:, :1, 16]
    positions.copy_(torch.tensor([[3], [0], [7], [40]], dtype=torch.int32))
    want = reference.rotate(q, inv_freq, 1.0, positions.clone())
    rotate_inplace(q, None, cache, inv_freq, positions)
    assert (q.double() - want).abs().max() < 1e-5
    assert positions.flatten().tolist() == [3, 0, 7, 40]

    qk = randn(4, 6, 16)
    want = reference.rotate(qk, inv_freq, 1.0, torch.arange(4)[:, None])
    rotate_inplace(qk[:, 0::2], qk[:, 1::2], cache, inv_freq, torch.arange(4)[:, None])
    assert (qk.double() - want).abs().max() < 1e-5

    # q and k as alternate halves of 16-element rows, each with a size-1 dimension of stride
    # 2^62 (as_strided allows any stride there: it must not enter the overlap arithmetic)
    base = randn(64)
    q = base.as_strided((4, 1, 8), (16, 2**62, 1))
    k = base.as_strided((4, 1, 8), (16, 2**62, 1), 8)
    small_cache, small_freq = tables(dim=8)
    want_q = reference.rotate(q, small_freq, 1.0)
    want_k = reference.rotate(k, small_freq, 1.0)
    rotate_inplace(q, k, small_cache, small_freq)
    assert (q.double() - want_q).abs().max() < 1e-5
    assert (k.double() - want_k).abs().max() < 1e-5

    # rows at offsets 32 i + 48 j (i, j < 3): not a nested layout, yet all nine rows differ
    flat = randn(200)
    q = flat.as_strided((3, 3, 16), (32, 48, 1))
    want = reference.rotate(q, inv_freq, 1.0)
    rotate_inplace(q, None, cache, inv_freq)
    assert (q.double() - want).abs().max() < 1e-5


def test_rows_that_repeat_elements_are_refused() -> None:
    """No zero stride, yet rows overlap: each row starts one element after the last."""
    cache, inv_freq = tables()
    flat = randn(64)
    q = flat.as_strided((4, 2, 16), (1, 20, 1))
    assert_unchanged_after(
        lambda: rotate_inplace(q, None, cache, inv_freq),
        flat,
        error=ValueError,
        match="q has overlapping elements",
    )


def test_undecidable_layouts_are_refused() -> None:
    """Where the overlap search runs out, the call refuses rather than risk a race."""
    cache, inv_freq = tables(dim=2)
    storage = randn(320_000)
    q = undecidable_self_view(storage)
    assert_unchanged_after(
        lambda: rotate_inplace(q, None, cache, inv_freq),
        storage,
        error=ValueError,
        match="the layout of q is too irregular",
    )
    q, k = undecidable_pair(storage)
    assert_unchanged_after(
        lambda: rotate_inplace(q, k, cache, inv_freq),
        storage,
        error=ValueError,
        match="q and k are views too irregular",
    )
    # each alone is fine
    rotate_inplace(q, None, cache, inv_freq)
    rotate_inplace(k, None, cache, inv_freq)


def test_module_rotate_refuses_its_own_tables() -> None:
    rope = yarn_ext.YarnEmbedding(16, max_position_embeddings=32)
    q = rope.cos_sin_cache[:4, None]
    assert_unchanged_after(
        lambda: rope.rotate_(q, None, torch.arange(4)[:, None]),
        rope.cos_sin_cache,
        error=ValueError,
        match="shares memory with cos_sin_cache",
    )
