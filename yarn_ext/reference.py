"""A slow, independent float64 implementation of YaRN in plain PyTorch: the test oracle.

It shares no code with the C++ core on purpose: the tests, the benchmarks and the self-check of
`python -m yarn_ext` compare the kernels against it. Everything is float64 (the ramp included),
cos/sin come from torch.cos/torch.sin of the float64 angle.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def find_correction_dim(
    num_rotations: float, dim: int, base: float = 10000, max_position_embeddings: int = 2048
) -> float:
    """Zeta's formula, in Python float64."""
    return (dim * math.log(max_position_embeddings / (num_rotations * 2 * math.pi))) / (
        2 * math.log(base)
    )


def find_correction_range(
    low_rot: float,
    high_rot: float,
    dim: int,
    base: float = 10000,
    max_position_embeddings: int = 2048,
    truncate: bool = True,
) -> tuple[float, float]:
    low = find_correction_dim(low_rot, dim, base, max_position_embeddings)
    high = find_correction_dim(high_rot, dim, base, max_position_embeddings)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def linear_ramp_mask(
    min: float,
    max: float,
    dim: int,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Zeta's ramp; float32 reproduces Zeta's tensor arithmetic."""
    if min == max:
        max += 0.001
    return torch.clamp((torch.arange(dim, dtype=dtype) - min) / (max - min), 0, 1)


def get_mscale(scale: float = 1.0, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def yarn_inv_freq(
    dim: int,
    base: float = 10000,
    scale: float = 1.0,
    original_max_position_embeddings: int = 2048,
    extrapolation_factor: float = 1.0,
    beta_fast: float = 32,
    beta_slow: float = 1,
    truncate: bool = True,
) -> Tensor:
    """float64 [dim / 2], Zeta's `yarn()` formula evaluated in float64."""
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    extrapolation = 1.0 / pos_freqs
    interpolation = 1.0 / (scale * pos_freqs)
    low, high = find_correction_range(
        beta_fast, beta_slow, dim, base, original_max_position_embeddings, truncate
    )
    mask = (1 - linear_ramp_mask(low, high, dim // 2, torch.float64)) * extrapolation_factor
    return interpolation * (1 - mask) + extrapolation * mask


def cos_sin(positions: Tensor, inv_freq: Tensor, mscale: float) -> tuple[Tensor, Tensor]:
    """mscale * cos and mscale * sin of positions[..., None] * inv_freq, float64 [..., dim/2]."""
    angle = positions.to(torch.float64)[..., None] * inv_freq.to(torch.float64)
    return torch.cos(angle) * mscale, torch.sin(angle) * mscale


def mrope_components(half: int, sections: list[int], interleaved: bool) -> list[int]:
    """The MRoPE component (0: t, 1: h, 2: w) of each pair, built as transformers builds its
    frequencies: runs of sections[c] pairs, or t everywhere with h written over pairs 1, 4, ...
    (sections[1] of them) and w over 2, 5, ... (apply_interleaved_mrope)."""
    if not interleaved:
        components = [c for c, n in enumerate(sections) for _ in range(n)]
    else:
        components = [0] * half
        for c in (1, 2):
            for j in range(c, 3 * sections[c], 3):
                components[j] = c
    assert len(components) == half
    return components


def rotate(
    x: Tensor,
    inv_freq: Tensor,
    mscale: float,
    positions: Tensor | None = None,
    interleaved: bool = False,
    inverse: bool = False,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
) -> Tensor:
    """float64 result of rotating the first 2 * len(inv_freq) features of x [..., S, D].

    positions broadcasts against x.shape[:-1]; without it row s along dim -2 gets position s.
    inverse rotates by -angle (the transpose). With mrope_section, positions of x.dim()
    dimensions hold the t, h and w components first, and pair j turns with the position of its
    component (plain positions: all three equal).
    """
    half = inv_freq.shape[0]
    x64 = x.to(torch.float64)
    if positions is None:
        positions = torch.arange(x.shape[-2], device=x.device)  # aligns with dim -2 of x
    if mrope_section is not None and positions.dim() == x.dim():
        angles = [cos_sin(p.expand(x.shape[:-1]), inv_freq.to(x.device), mscale) for p in positions]
        pick = torch.tensor(
            mrope_components(half, mrope_section, mrope_interleaved), device=x.device
        )
        cos = torch.stack([c for c, _ in angles], -1).gather(
            -1, pick.expand(*x.shape[:-1], half)[..., None]
        )[..., 0]
        sin = torch.stack([s for _, s in angles], -1).gather(
            -1, pick.expand(*x.shape[:-1], half)[..., None]
        )[..., 0]
    else:
        positions = positions.expand(x.shape[:-1])
        cos, sin = cos_sin(positions, inv_freq.to(x.device), mscale)
    if inverse:
        sin = -sin
    if interleaved:
        a, b = x64[..., 0 : 2 * half : 2], x64[..., 1 : 2 * half : 2]
    else:
        a, b = x64[..., :half], x64[..., half : 2 * half]
    rotated_a = a * cos - b * sin
    rotated_b = b * cos + a * sin
    out = x64.clone()
    if interleaved:
        out[..., 0 : 2 * half : 2], out[..., 1 : 2 * half : 2] = rotated_a, rotated_b
    else:
        out[..., :half], out[..., half : 2 * half] = rotated_a, rotated_b
    return out
