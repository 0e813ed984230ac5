"""The fake implementations (yarn_ext/_registrations.py, which also serve the Meta device):
shapes and dtypes for FakeTensor tracing, and the same input checks as the kernels."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import yarn_ext
from yarn_ext import ops


def meta_tables(dim: int = 64, positions: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = yarn_ext.yarn_inv_freq(dim).to("meta")
    return ops.build_cos_sin_cache(inv_freq, positions, 1.0), inv_freq


def test_meta_shapes() -> None:
    cache, inv_freq = meta_tables()
    assert cache.device.type == "meta" and cache.shape == (32, 64) and cache.dtype == torch.float32
    x = torch.empty(2, 8, 5, 96, dtype=torch.bfloat16, device="meta")
    out = ops.rotate(x, cache, inv_freq, 1.0, torch.empty(2, 1, 5, dtype=torch.long, device="meta"))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device.type == "meta"
    q = torch.empty(5, 8, 64, device="meta")
    ops.rotate_inplace(q, torch.empty(5, 2, 64, device="meta"), cache, inv_freq, 1.0)


def test_meta_kernels_check_like_the_real_ones() -> None:
    cache, inv_freq = meta_tables()
    with pytest.raises(ValueError, match="positions"):
        ops.rotate(
            torch.empty(2, 5, 64, device="meta"),
            cache,
            inv_freq,
            1.0,
            torch.empty(3, dtype=torch.long, device="meta"),
        )
    with pytest.raises(ValueError, match="q and k must have the same dtype"):
        ops.rotate_inplace(
            torch.empty(5, 2, 64, device="meta"),
            torch.empty(5, 2, 64, device="meta", dtype=torch.half),
            cache,
            inv_freq,
            1.0,
        )


def test_fake_tensor_mode_runs_the_module_path() -> None:
    rope = yarn_ext.YarnEmbedding(64, max_position_embeddings=16)
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(3, 16, 64)
        out = rope(x, positions=torch.zeros(16, dtype=torch.long))
        assert out.shape == (3, 16, 64)
