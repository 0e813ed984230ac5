"""Bad input raises a Python exception naming the argument; a failing in-place call changes
nothing."""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import YarnEmbedding, ops, reference

from .support import assert_unchanged_after, randn


@pytest.mark.parametrize(
    ("kwargs", "error", "name"),
    [
        ({"dim": 7}, ValueError, "dim"),
        ({"dim": 0}, ValueError, "dim"),
        ({"dim": -4}, ValueError, "dim"),
        ({"dim": 8.5}, ValueError, "dim"),
        ({"dim": True}, TypeError, "dim"),
        ({"dim": 8, "base": 1}, ValueError, "base"),
        ({"dim": 8, "base": 0.5}, ValueError, "base"),
        ({"dim": 8, "max_position_embeddings": 0}, ValueError, "max_position_embeddings"),
        (
            {"dim": 8, "original_max_position_embeddings": -1},
            ValueError,
            "original_max_position_embeddings",
        ),
        ({"dim": 8, "finetuned": True, "scaling_factor": 0}, ValueError, "scaling_factor"),
        ({"dim": 8, "finetuned": True, "scaling_factor": -2.0}, ValueError, "scaling_factor"),
        ({"dim": 8, "scaling_factor": 2.0}, ValueError, "scaling_factor"),
        ({"dim": 8, "beta_fast": 1, "beta_slow": 32}, ValueError, "beta_fast"),
        ({"dim": 8, "beta_fast": 0, "beta_slow": 0}, ValueError, "beta_fast"),
        ({"dim": 8, "attention_factor": float("nan")}, ValueError, "attention_factor"),
        ({"dim": 8, "base": "big"}, TypeError, "base"),
    ],
)
def test_bad_constructor_arguments(kwargs, error, name) -> None:
    with pytest.raises(error, match=name):
        YarnEmbedding(**kwargs)


@pytest.mark.parametrize("seq_len", [0, -3])
def test_non_positive_seq_len(seq_len) -> None:
    m = YarnEmbedding(8, max_position_embeddings=4)
    with pytest.raises(ValueError, match="seq_len"):
        m(randn(2, 4, 8), seq_len=seq_len)
    with pytest.raises(ValueError, match="seq_len"):
        m.cos_sin(seq_len)


@pytest.mark.parametrize(
    ("fn", "error", "name"),
    [
        (lambda: yarn_ext.find_correction_dim(0, 64), ValueError, "num_rotations"),
        (lambda: yarn_ext.find_correction_dim(8, 0), ValueError, "dim"),
        (lambda: yarn_ext.find_correction_dim(8, 64, base=1), ValueError, "base"),
        (
            lambda: yarn_ext.find_correction_dim(8, 64, 10000, 0),
            ValueError,
            "max_position_embeddings",
        ),
        (lambda: yarn_ext.find_correction_range(-1, 1, 64), ValueError, "low_rot"),
        (lambda: yarn_ext.find_correction_range(32, "1", 64), TypeError, "high_rot"),
        (lambda: yarn_ext.linear_ramp_mask(0, 1, -1), ValueError, "dim"),
        (lambda: yarn_ext.linear_ramp_mask(float("inf"), 1, 4), ValueError, "min"),
        (lambda: yarn_ext.get_mscale(float("inf")), ValueError, "scale"),
        (lambda: yarn_ext.get_mscale(2, float("nan")), ValueError, "mscale"),
    ],
)
def test_bad_helper_arguments(fn, error, name) -> None:
    with pytest.raises(error, match=name):
        fn()


@pytest.fixture
def rope() -> YarnEmbedding:
    return YarnEmbedding(16, max_position_embeddings=32)


@pytest.mark.parametrize(
    ("x", "positions", "error", "name"),
    [
        (torch.ones(2, 4, 16, dtype=torch.int32), None, ValueError, "x must be float"),
        (torch.ones(2, 4, 12), None, ValueError, r"x.shape\[-1\]"),
        (torch.ones(16), None, ValueError, "x must have at least 2 dimensions"),
        (torch.ones(2, 4, 16), torch.zeros(4), ValueError, "positions"),
        (torch.ones(2, 4, 16), torch.zeros(3, dtype=torch.long), ValueError, "positions"),
        (torch.ones(2, 4, 16), torch.zeros(2, 2, 4, dtype=torch.long), ValueError, "positions"),
        (
            torch.ones(2, 4, 16),
            torch.zeros(4, dtype=torch.long, device="meta"),
            ValueError,
            "positions",
        ),
        (torch.ones(2, 4, 16, device="meta"), None, ValueError, "x is on meta"),
    ],
)
def test_bad_forward_inputs(rope, x, positions, error, name) -> None:
    with pytest.raises(error, match=name):
        rope(x, positions=positions)


def test_failed_in_place_calls_change_nothing(rope) -> None:
    q, k = randn(4, 2, 16), randn(4, 1, 16, seed=1)
    pos = torch.arange(4)[:, None]
    assert_unchanged_after(
        lambda: rope.rotate_(q, k.double(), pos), q, k, error=ValueError, match="dtype"
    )
    assert_unchanged_after(
        lambda: rope.rotate_(q, randn(4, 1, 12), pos),
        q,
        k,
        error=ValueError,
        match="head size|k.shape",
    )
    assert_unchanged_after(
        lambda: rope.rotate_(q, k.to("meta"), pos), q, k, error=ValueError, match="k is on meta"
    )
    # positions broadcast against q's rows but not against k's
    assert_unchanged_after(
        lambda: rope.rotate_(q, randn(4, 3, 5, 16), torch.arange(4)[:, None]),
        q,
        error=ValueError,
        match="positions",
    )
    assert_unchanged_after(lambda: rope.rotate_(q, q, pos), q, error=ValueError, match="share")
    fused = randn(4, 6, 16)
    assert_unchanged_after(
        lambda: rope.rotate_(fused[:, :2], fused[:, :2], pos),
        fused,
        error=ValueError,
        match="share",
    )
    assert_unchanged_after(
        lambda: rope.rotate_(q, k, pos.float()), q, k, error=ValueError, match="positions"
    )
    expanded = randn(1, 1, 16).expand(4, 2, 16)
    assert_unchanged_after(
        lambda: rope.rotate_(expanded, None, pos), expanded, error=ValueError, match="overlapping"
    )
    assert_unchanged_after(
        lambda: rope.rotate_(q, expanded, pos), q, error=ValueError, match="k has overlapping"
    )


@pytest.mark.parametrize(
    ("call", "error", "name"),
    [
        (lambda c, f: ops.rotate(randn(2, 16), c, f.float(), 1.0), ValueError, "inv_freq"),
        (lambda c, f: ops.rotate(randn(2, 16), c.double(), f, 1.0), ValueError, "cos_sin_cache"),
        (lambda c, f: ops.rotate(randn(2, 16), c[:, :8], f, 1.0), ValueError, "cos_sin_cache"),
        (lambda c, f: ops.rotate(randn(2, 16), c.t(), f, 1.0), ValueError, "cos_sin_cache"),
        (lambda c, f: ops.rotate(randn(2, 16), c, f, float("inf")), ValueError, "mscale"),
        (lambda c, f: ops.build_cos_sin_cache(f, -1, 1.0), ValueError, "num_positions"),
        (lambda c, f: ops.build_cos_sin_cache(f[:0], 4, 1.0), ValueError, "inv_freq"),
    ],
)
def test_bad_operator_arguments(call, error, name) -> None:
    inv_freq = yarn_ext.yarn_inv_freq(16)
    cache = ops.build_cos_sin_cache(inv_freq, 8, 1.0)
    with pytest.raises(error, match=name):
        call(cache, inv_freq)


def unmergeable(device: str = "cpu") -> torch.Tensor:
    """A view with 13 row dimensions that no stride pattern lets merge."""
    return randn(*[3] * 13, 16).to(device)[(slice(0, 2),) * 13]


def test_layout_errors_come_before_any_write(rope) -> None:
    q = randn(4, 2, 16)
    k = unmergeable()
    assert_unchanged_after(
        lambda: rope.rotate_(q, k, torch.tensor(5)), q, k, error=ValueError, match="layout of k"
    )
    with pytest.raises(ValueError, match="layout of x"):
        rope(unmergeable(), positions=torch.tensor(5))
    # the Meta kernels enforce the same limit, so tracing rejects what eager rejects
    with pytest.raises(ValueError, match="layout of x"):
        rope.to("meta")(unmergeable("meta"), positions=torch.tensor(5, device="meta"))


def test_many_size_one_dimensions_are_fine(rope) -> None:
    q, k = randn(2, 16), randn(*[1] * 70, 2, 16)
    want = reference.rotate(k, rope.inv_freq, rope.mscale, torch.tensor(5))
    rope.rotate_(q, k, torch.tensor(5))
    assert (k.double() - want).abs().max() < 1e-6


def test_partially_overlapping_q_and_k_are_rejected(rope) -> None:
    fused = randn(4, 2, 48)
    pos = torch.arange(4)[:, None]
    assert_unchanged_after(
        lambda: rope.rotate_(fused[..., 0:32], fused[..., 16:48], pos),
        fused,
        error=ValueError,
        match="share memory",
    )
    # disjoint interleaved views of one tensor are fine: alternate heads as q and k
    qk = randn(4, 6, 16)
    rope.rotate_(qk[:, 0::2], qk[:, 1::2], pos)


def test_module_state_survives_a_failed_call(rope) -> None:
    inv_freq, cache = rope.inv_freq.clone(), rope.cos_sin_cache.clone()
    state = (rope.scale, rope.mscale, rope.max_seq_len_cached)
    with pytest.raises(ValueError):
        rope(torch.ones(2, 100, 16, dtype=torch.int32))  # would grow the cache to 100
    with pytest.raises(ValueError):
        rope.rotate_(randn(1, 100, 16), randn(1, 100, 16, dtype=torch.float64))
    assert (rope.scale, rope.mscale, rope.max_seq_len_cached) == state
    assert torch.equal(rope.inv_freq, inv_freq) and torch.equal(rope.cos_sin_cache, cache)


def test_in_place_rotation_refuses_to_break_autograd(rope) -> None:
    leaf = randn(4, 2, 16).requires_grad_()
    q = leaf * 1.0
    with pytest.raises(RuntimeError, match="forward"):
        rope.rotate_(q, None, torch.arange(4)[:, None])
    with pytest.raises(RuntimeError, match="requires grad"):
        rope.rotate_(randn(4, 2, 16), leaf, torch.arange(4)[:, None])
    assert rope(leaf).requires_grad  # forward is the differentiable path
    with torch.no_grad():
        rope.rotate_(leaf.detach().clone(), None, torch.arange(4)[:, None])


def test_in_place_rotation_bumps_version_counters(rope) -> None:
    weight = randn(4, 2, 16).requires_grad_()
    q, k = randn(4, 2, 16), randn(4, 1, 16)
    product = (weight * q).sum()  # autograd saves q for the backward pass
    versions = (q._version, k._version)
    rope.rotate_(q, k, torch.arange(4)[:, None])
    assert q._version > versions[0] and k._version > versions[1]
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        product.backward()
