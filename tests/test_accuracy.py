"""The accuracy promise: max |error| of cos/sin against float64 math at most 1e-6 for positions
up to 2^20, for the cache and for the on-the-fly path. (A float32 angle is off by ~6e-2 there.)"""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import ops, reference

CONFIGS = {
    # name: (dim, base, scale, original)
    "rope-theta1e4": (128, 1e4, 1.0, 2048),
    "qwen3-yarn": (128, 1e6, 4.0, 32768),
}


def cache_error(cache: torch.Tensor, inv_freq: torch.Tensor, mscale: float, start: int) -> float:
    half = inv_freq.numel()
    positions = torch.arange(start, start + cache.shape[0])
    cos, sin = reference.cos_sin(positions, inv_freq, mscale)
    return max(
        (cache[:, :half].double() - cos).abs().max().item(),
        (cache[:, half:].double() - sin).abs().max().item(),
    )


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
def test_cache_is_accurate_up_to_2_pow_20(config: str) -> None:
    dim, base, scale, original = CONFIGS[config]
    inv_freq = yarn_ext.yarn_inv_freq(dim, base, scale, original)
    mscale = yarn_ext.get_mscale(scale)
    length = 2**20 + 1
    cache = ops.build_cos_sin_cache(inv_freq, length, mscale)
    chunk = 2**17
    error = max(
        cache_error(cache[start : start + chunk], inv_freq, mscale, start)
        for start in range(0, length, chunk)
    )
    assert error <= 1e-6, f"{config}: max |error| {error:.3e}"
    # And in fact float32 rounding is all that is left: half an ulp of mscale, and a bit.
    assert error <= 2**-24 * mscale * 1.01


@pytest.mark.parametrize("config", list(CONFIGS))
def test_on_the_fly_is_accurate_near_2_pow_20(config: str) -> None:
    dim, base, scale, original = CONFIGS[config]
    inv_freq = yarn_ext.yarn_inv_freq(dim, base, scale, original)
    mscale = yarn_ext.get_mscale(scale)
    cache = ops.build_cos_sin_cache(inv_freq, 16, mscale)
    positions = torch.arange(2**20 - 4096, 2**20 + 1)
    # a unit vector in feature i (NeoX pairs) comes out as (cos_i, sin_i) in features (i, i+half)
    half = dim // 2
    x = torch.zeros(positions.numel(), half, dim)
    x[:, torch.arange(half), torch.arange(half)] = 1.0
    out = ops.rotate(x, cache, inv_freq, mscale, positions[:, None])
    cos = out[:, torch.arange(half), torch.arange(half)]
    sin = out[:, torch.arange(half), torch.arange(half) + half]
    ref_cos, ref_sin = reference.cos_sin(positions, inv_freq, mscale)
    error = max(
        (cos.double() - ref_cos).abs().max().item(), (sin.double() - ref_sin).abs().max().item()
    )
    assert error <= 1e-6, f"{config}: max |error| {error:.3e}"
