"""Test helpers shared by the test modules. The oracle is yarn_ext.reference (float64)."""

from __future__ import annotations

import pytest
import torch

FLOAT_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Seeded N(0, 1) values, drawn in float64 and rounded to dtype."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def tables(
    dim: int,
    cached: int,
    *,
    base: float = 1e6,
    scale: float = 4.0,
    original: int = 4096,
    mscale: float = 1.25,
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(cos_sin_cache, inv_freq, mscale): YaRN's float64 inverse frequencies for rotary `dim` at
    `scale` over an `original`-position context, and their float32 cache of `cached` positions
    scaled by `mscale`, built by the library, on `device`."""
    import yarn_ext

    inv_freq = yarn_ext.yarn_inv_freq(dim, base, scale, original, device=device)
    return yarn_ext.ops.build_cos_sin_cache(inv_freq, cached, mscale), inv_freq, mscale


def assert_matches_reference(
    actual: torch.Tensor, expected: torch.Tensor, x: torch.Tensor, mscale: float
) -> None:
    """actual (any float dtype) against the float64 `expected` for input x.

    Bound: the output is rounded once to its dtype and the float32 arithmetic costs a few ulps,
    so the error stays below 4 ulps of the largest possible output magnitude. float64 inputs are
    float64 throughout, so their bound is near float64 rounding.
    """
    assert actual.shape == expected.shape
    assert not torch.isnan(actual).any(), "an output element was never written"
    magnitude = x.abs().max().double().item() * max(abs(mscale), 1.0) + 1e-30
    eps = 1e-13 if actual.dtype == torch.float64 else torch.finfo(actual.dtype).eps * 4
    error = (actual.double() - expected).abs().max().item()
    assert error <= eps * magnitude, f"max |error| {error:.3e} > {eps * magnitude:.3e}"


def assert_unchanged_after(fn, *tensors: torch.Tensor, error=Exception, match: str = "") -> None:
    """fn raises `error` (message matching `match`) and leaves every one of `tensors` as it was."""
    before = [t.clone() for t in tensors]
    with pytest.raises(error, match=match):
        fn()
    for old, new in zip(before, tensors, strict=True):
        assert torch.equal(old, new), "a failed in-place call changed its input"


def undecidable_self_view(storage: torch.Tensor) -> torch.Tensor:
    """A view of `storage` (30000 elements or more) with head size 2 and 12 row dimensions of
    size 2 whose strides (a Conway-Guy set) have distinct subset sums: its elements never
    overlap, but proving it takes more search than csrc/overlap.cpp allows."""
    strides = (1690, 1975, 2123, 2200, 2240, 2260, 2271, 2277, 2280, 2282, 2283, 2284, 1120)
    return storage.as_strided((2,) * 13, strides)


def undecidable_pair(storage: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of `storage` (310000 elements or more), head size 2 and 10 row dimensions of
    size 3. Each is laid out like a slice of a dense tensor, all strides are even and the second
    starts one element later, so they never meet; proving it takes more search than
    csrc/overlap.cpp allows."""
    q = (100588, 33530, 11176, 3724, 1242, 414, 138, 46, 16, 4, 2)
    k = (90332, 30112, 10038, 3346, 1114, 372, 124, 40, 14, 4, 2)
    sizes = (3,) * 10 + (2,)
    return storage.as_strided(sizes, q), storage.as_strided(sizes, k, 1)


# The one marker for tests that need a GPU: they skip cleanly where there is none (conftest.py),
# and `pytest -m cuda` selects all of them (benchmarks/gpu_check.sh).
requires_cuda = pytest.mark.cuda

# For tests that run on every device: the CUDA case carries the marker.
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
