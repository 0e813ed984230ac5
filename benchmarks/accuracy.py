"""Accuracy of cos/sin tables against float64 math, by position range.

    python -m benchmarks.accuracy

Compares yarn_ext's cache (float64 angles, float32 storage) with the float32 construction Zeta and
transformers use (float32 inv_freq, float32 positions, outer product, cos/sin), both against
yarn_ext.reference in float64, for plain RoPE (theta 1e4) and Qwen3's YaRN (theta 1e6, factor 4).
"""

from __future__ import annotations

import argparse
import itertools

import torch

import yarn_ext
from yarn_ext import ops, reference

CONFIGS = {
    "theta 1e4, dim 128": (128, 1e4, 1.0, 2048),
    "Qwen3 YaRN (theta 1e6, s 4)": (128, 1e6, 4.0, 32768),
}
EDGES = [0, 4096, 32768, 131072, 2**20 + 1]


def float32_inv_freq(dim: int, base: float, scale: float, original: int) -> torch.Tensor:
    """Zeta's float32 inv_freq (Zeta's YarnEmbedding._set_inv_freq, in float32)."""
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (scale * pos_freqs)
    low, high = reference.find_correction_range(32, 1, dim, base, original)
    mask = 1 - reference.linear_ramp_mask(low, high, dim // 2)
    return interpolation * (1 - mask) + extrapolation * mask


def float32_construction(
    dim: int, base: float, scale: float, original: int, length: int
) -> tuple[torch.Tensor, float]:
    """Zeta's / transformers' float32 path: inv_freq, positions and angles all float32."""
    inv_freq = float32_inv_freq(dim, base, scale, original)
    mscale = yarn_ext.get_mscale(scale)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32), inv_freq)
    return torch.cat((freqs.cos() * mscale, freqs.sin() * mscale), dim=-1), mscale


def max_error_by_range(table: torch.Tensor, inv_freq: torch.Tensor, mscale: float) -> list[float]:
    half = inv_freq.numel()
    errors = []
    for lo, hi in itertools.pairwise(EDGES):
        worst = 0.0
        for start in range(lo, hi, 2**16):
            stop = min(hi, start + 2**16)
            cos, sin = reference.cos_sin(torch.arange(start, stop), inv_freq, mscale)
            rows = table[start:stop].double()
            worst = max(
                worst,
                (rows[:, :half] - cos).abs().max().item(),
                (rows[:, half:] - sin).abs().max().item(),
            )
        errors.append(worst)
    return errors


def error_by_position(
    dim: int, base: float, scale: float, original: int, top: int = 2**20, per_bin: int = 2048
) -> list[dict]:
    """max |error| of cos/sin against float64 math in the position bins [0, 1), [2^k, 2^(k+1))
    and [top / 2, top] (top a power of two), for yarn_ext's cache and for the float32
    construction; up to `per_bin` evenly spaced positions per bin, its first and last included."""
    inv_freq = yarn_ext.yarn_inv_freq(dim, base, scale, original)
    mscale = yarn_ext.get_mscale(scale)
    cache = ops.build_cos_sin_cache(inv_freq, top + 1, mscale)
    theirs_inv_freq = float32_inv_freq(dim, base, scale, original)
    half = dim // 2
    rows = []
    start = 0
    while start <= top:
        stop = top + 1 if 2 * start >= top else max(1, 2 * start)  # the last bin ends at top
        positions = torch.unique(torch.linspace(start, stop - 1, per_bin).round().long())
        cos, sin = reference.cos_sin(positions, inv_freq, mscale)
        ours = cache[positions].double()
        angles = positions.float()[:, None] * theirs_inv_freq  # float32 angles, as Zeta's
        theirs_cos, theirs_sin = angles.cos() * mscale, angles.sin() * mscale
        rows.append(
            {
                "positions": [start, stop - 1],
                "yarn_ext": max(
                    (ours[:, :half] - cos).abs().max().item(),
                    (ours[:, half:] - sin).abs().max().item(),
                ),
                "float32": max(
                    (theirs_cos.double() - cos).abs().max().item(),
                    (theirs_sin.double() - sin).abs().max().item(),
                ),
            }
        )
        start = stop
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    length = EDGES[-1]
    header = ["config", "construction"] + [f"[{lo}, {hi})" for lo, hi in itertools.pairwise(EDGES)]
    print("max |error| of cos/sin against float64 math, by position range")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, (dim, base, scale, original) in CONFIGS.items():
        inv_freq = yarn_ext.yarn_inv_freq(dim, base, scale, original)
        mscale = yarn_ext.get_mscale(scale)
        ours = ops.build_cos_sin_cache(inv_freq, length, mscale)
        theirs, _ = float32_construction(dim, base, scale, original, length)
        for label, table in (("yarn_ext", ours), ("float32 angles", theirs)):
            errors = max_error_by_range(table, inv_freq, mscale)
            print(f"| {name} | {label} | " + " | ".join(f"{e:.1e}" for e in errors) + " |")


if __name__ == "__main__":
    main()
