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


def float32_construction(
    dim: int, base: float, scale: float, original: int, length: int
) -> tuple[torch.Tensor, float]:
    """Zeta's / transformers' float32 path: inv_freq, positions and angles all float32."""
    pos_freqs = base ** (torch.arange(0, dim, 2).float() / dim)
    extrapolation, interpolation = 1.0 / pos_freqs, 1.0 / (scale * pos_freqs)
    low, high = reference.find_correction_range(32, 1, dim, base, original)
    mask = 1 - reference.linear_ramp_mask(low, high, dim // 2)
    inv_freq = interpolation * (1 - mask) + extrapolation * mask
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
