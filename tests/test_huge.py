"""A tensor of more than 2^31 elements rotates correctly on the CPU, and in the CUDA fast path's
work emulated on the CPU: 64-bit offsets all the way. About 9 GB of memory and half a minute;
marked slow, and CI runs it."""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import ops, reference

from . import hooks
from .support import assert_matches_reference


@pytest.mark.hooks
@pytest.mark.slow
def test_more_than_2_pow_31_elements() -> None:
    inv_freq = yarn_ext.yarn_inv_freq(128, 1e6, 4.0, 32768)
    mscale = yarn_ext.get_mscale(4.0)
    cache = ops.build_cos_sin_cache(inv_freq, 4096, mscale)
    heads = 8
    tokens = 2**31 // (heads * 128) + 3  # the last rows start past element 2^31
    x = torch.ones(tokens, heads, 128, dtype=torch.bfloat16)
    x[:, :, 64:] = -0.5
    assert x.numel() > 2**31
    positions = torch.arange(tokens)[:, None]  # past the cache from token 4096: on the fly
    out = ops.rotate(x, cache, inv_freq, mscale, positions)
    ops.rotate_inplace(x, None, cache, inv_freq, mscale, positions)
    original = torch.ones(1, heads, 128, dtype=torch.bfloat16)
    original[..., 64:] = -0.5
    # rows at the start, around element 2^31 and at the end: every row of a token is its
    # token's rotation of the same vector
    boundary = 2**31 // (heads * 128)
    for token in (0, 1, 4095, 4096, boundary - 1, boundary, boundary + 1, tokens - 1):
        want = reference.rotate(original, inv_freq, mscale, torch.tensor([[token]]))
        assert_matches_reference(out[token : token + 1], want, original, mscale)
        assert torch.equal(x[token], out[token])  # in place and out of place agree
    # The CUDA fast path's work (token-major, 64-bit pointers formed once per thread), emulated
    # on the CPU over the same tensor: the CPU kernels' bits in every sampled row.
    del out
    y = torch.ones(tokens, heads, 128, dtype=torch.bfloat16)
    y[:, :, 64:] = -0.5
    (launch,) = hooks.emulate_cuda_rotate_inplace(
        y, None, cache, inv_freq, mscale, positions, False
    )
    assert launch["path"] == "tokens"
    for token in (0, 4096, boundary - 1, boundary, boundary + 1, tokens - 1):
        assert torch.equal(y[token], x[token])
