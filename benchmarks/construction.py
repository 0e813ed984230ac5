"""Cache construction time against length: yarn_ext's build_cos_sin_cache (float64 angles and
cos/sin, float32 table) against the float32 construction Zeta and transformers use (arange,
outer product, cat, cos, sin), Qwen3's frequencies, head_dim 128."""

from __future__ import annotations

import yarn_ext
from yarn_ext import ops

from .common import BASE, HEAD_DIM, ORIGINAL, SCALE, float32_cos_sin_tables, median_seconds


def bench_construction(device: str, lengths: list[int], min_time: float) -> list[dict]:
    inv_freq = yarn_ext.yarn_inv_freq(HEAD_DIM, BASE, SCALE, ORIGINAL, device=device)
    mscale = yarn_ext.get_mscale(SCALE)
    rows = []
    for length in lengths:
        times = median_seconds(
            {
                "yarn_ext": lambda _, n=length: ops.build_cos_sin_cache(inv_freq, n, mscale),
                "float32": lambda _, n=length: float32_cos_sin_tables(inv_freq, n, mscale),
            },
            1,
            device,
            min_time,
        )
        rows.append(
            {
                "length": length,
                "yarn_ext_us": times["yarn_ext"] * 1e6,
                "float32_us": times["float32"] * 1e6,
            }
        )
    return rows
