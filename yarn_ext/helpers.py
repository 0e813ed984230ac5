"""The YaRN helper functions of Zeta's API, computed by the C++ core (csrc/include/yarn_ext).

Signatures and defaults are Zeta's; the floats are bit-identical to Zeta's float64 Python
formulas and linear_ramp_mask is identical to Zeta's float32 tensor arithmetic.
"""

from __future__ import annotations

from typing import SupportsFloat, SupportsIndex

import torch

from yarn_ext import _C
from yarn_ext._checks import as_float, as_int


def find_correction_dim(
    num_rotations: SupportsFloat,
    dim: SupportsIndex,
    base: SupportsFloat = 10000,
    max_position_embeddings: SupportsIndex = 2048,
) -> float:
    """Dimension index whose frequency turns `num_rotations` times over the context:
    ``dim * ln(L / (2 pi r)) / (2 ln(base))``."""
    return _C.find_correction_dim(
        as_float("num_rotations", num_rotations),
        as_int("dim", dim),
        as_float("base", base),
        as_int("max_position_embeddings", max_position_embeddings),
    )


def find_correction_range(
    low_rot: SupportsFloat,
    high_rot: SupportsFloat,
    dim: SupportsIndex,
    base: SupportsFloat = 10000,
    max_position_embeddings: SupportsIndex = 2048,
    *,
    truncate: bool = True,
) -> tuple[int, int] | tuple[float, float]:
    """(low, high) correction dims, clamped to [0, dim - 1].

    With ``truncate=True`` (Zeta) low is floored and high ceiled and ints come back; with
    ``truncate=False`` (transformers' gpt-oss variant) the fractional bounds come back as floats.
    """
    return _C.find_correction_range(
        as_float("low_rot", low_rot),
        as_float("high_rot", high_rot),
        as_int("dim", dim),
        as_float("base", base),
        as_int("max_position_embeddings", max_position_embeddings),
        bool(truncate),
    )


def linear_ramp_mask(
    min: SupportsFloat,
    max: SupportsFloat,
    dim: SupportsIndex,
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """float32 tensor [dim]: ``clamp((arange(dim) - min) / (max - min), 0, 1)``; when
    min == max, max is nudged by 0.001 as in Zeta."""
    ramp = _C.linear_ramp_mask(as_float("min", min), as_float("max", max), as_int("dim", dim))
    return torch.tensor(ramp, dtype=torch.float32, device=device)


def get_mscale(scale: SupportsFloat = 1.0, mscale: SupportsFloat = 1.0) -> float:
    """YaRN's attention scale for a context extension `scale`: ``0.1 * mscale * ln(scale) + 1``
    above 1, else 1. `mscale` is DeepSeek's coefficient; the default reproduces Zeta."""
    return _C.get_mscale(as_float("scale", scale), as_float("mscale", mscale))


def yarn_inv_freq(
    dim: SupportsIndex,
    base: SupportsFloat = 10000,
    scale: SupportsFloat = 1.0,
    original_max_position_embeddings: SupportsIndex = 2048,
    extrapolation_factor: SupportsFloat = 1.0,
    beta_fast: SupportsFloat = 32,
    beta_slow: SupportsFloat = 1,
    *,
    truncate: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """float64 tensor [dim / 2]: YaRN's blended inverse frequencies for `scale` (1: plain RoPE)."""
    values = _C.yarn_inv_freq(
        as_int("dim", dim),
        as_float("base", base),
        as_float("scale", scale),
        as_int("original_max_position_embeddings", original_max_position_embeddings),
        as_float("extrapolation_factor", extrapolation_factor),
        as_float("beta_fast", beta_fast),
        as_float("beta_slow", beta_slow),
        bool(truncate),
    )
    return torch.tensor(values, dtype=torch.float64, device=device)
