"""torch.library.opcheck over every operator: schema (mutation and aliasing as declared),
autograd registration, FakeTensor/Meta kernels against the real ones, and AOTAutograd with
static and dynamic shapes (forward and backward traced, then compared with eager)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import yarn_ext

from . import support
from .support import DEVICES, randn

ALL_TESTS = (
    "test_schema",
    "test_autograd_registration",
    "test_faketensor",
    "test_aot_dispatch_static",
    "test_aot_dispatch_dynamic",
)


def tables(device: str, dim: int = 64, cached: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    cache, inv_freq, _ = support.tables(
        dim, cached, base=1e4, scale=2.0, original=16, mscale=1.1, device=device
    )
    return cache, inv_freq


def rotate_samples(device: str) -> dict[str, tuple[Any, ...]]:
    cache, inv_freq = tables(device)

    def x(*shape: int, dtype: torch.dtype = torch.float32, grad: bool = False) -> torch.Tensor:
        return randn(*shape, dtype=dtype).to(device).requires_grad_(grad)

    def positions(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        return torch.randint(-8, 60, shape, generator=generator, dtype=dtype).to(device)

    return {
        "implicit": (x(2, 3, 8, 64), cache, inv_freq, 1.1, None, False, False),
        "grad_partial": (
            x(2, 8, 80, grad=True),
            cache,
            inv_freq,
            1.1,
            positions(2, 8),
            False,
            False,
        ),
        "grad_broadcast_interleaved": (
            x(2, 3, 8, 64, dtype=torch.float64, grad=True),
            cache,
            inv_freq,
            1.1,
            positions(2, 1, 8, dtype=torch.int32),
            True,
            False,
        ),
        "bf16_inverse": (
            x(8, 4, 64, dtype=torch.bfloat16),
            cache,
            inv_freq,
            0.9,
            None,
            False,
            True,
        ),
    }


def rotate_inplace_samples(device: str) -> dict[str, tuple[Any, ...]]:
    cache, inv_freq = tables(device)
    qkv = randn(8, 10, 64).to(device)
    tokens = torch.arange(8, device=device)[:, None] * 7
    return {
        "q_and_k": (
            randn(8, 4, 64).to(device),
            randn(8, 2, 64, seed=1).to(device),
            cache,
            inv_freq,
            1.1,
            tokens,
            False,
        ),
        "q_only_half": (
            randn(2, 4, 8, 64, dtype=torch.half).to(device),
            None,
            cache,
            inv_freq,
            1.0,
        ),
        "fused_qkv_interleaved": (qkv[:, :6], qkv[:, 6:8], cache, inv_freq, 1.1, tokens, True),
    }


def run_opcheck(op: Callable[..., Any], args: tuple[Any, ...]) -> None:
    results = torch.library.opcheck(op, args, test_utils=ALL_TESTS)
    assert set(results) == set(ALL_TESTS)
    assert all(value == "SUCCESS" for value in results.values()), results


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("num_positions", [0, 1, 100])
def test_opcheck_build_cos_sin_cache(device, num_positions) -> None:
    inv_freq = yarn_ext.yarn_inv_freq(128, 1e6, 8.0, 4096, device=device)
    run_opcheck(torch.ops.yarn_ext.build_cos_sin_cache.default, (inv_freq, num_positions, 1.2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", list(rotate_samples("cpu")))
def test_opcheck_rotate(device, sample) -> None:
    run_opcheck(torch.ops.yarn_ext.rotate.default, rotate_samples(device)[sample])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sample", list(rotate_inplace_samples("cpu")))
def test_opcheck_rotate_inplace(device, sample) -> None:
    run_opcheck(torch.ops.yarn_ext.rotate_inplace.default, rotate_inplace_samples(device)[sample])
