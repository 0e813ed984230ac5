"""The CUDA rotation's work items (core/rotate_work.h) run serially on the CPU through the test
hooks in yarn_ext._C, with the CUDA launcher's argument building and vector-path decision. On the
CPU they must equal the CPU kernels bit for bit, so these tests check the GPU's index arithmetic
(flat index -> operand, row, item; 16-byte vectors; pass-through copies) without a GPU."""

from __future__ import annotations

import pytest
import torch

import yarn_ext
from yarn_ext import _C, ops

from .support import FLOAT_DTYPES, randn

pytestmark = pytest.mark.usefixtures("poison")


def tables(dim: int, cached: int = 64, mscale: float = 1.1):
    inv_freq = yarn_ext.yarn_inv_freq(dim, 1e6, 4.0, 4096)
    return ops.build_cos_sin_cache(inv_freq, cached, mscale), inv_freq, mscale


def positions_for(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """In, past and before the cache, and a few far enough for the long reduction by pi."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(-100, 200, shape, generator=generator)
    far = torch.tensor([2**63 - 1, -(2**63), 2**50 + 3, -(2**45) - 7])
    count = min(far.numel(), positions.numel() - 1)
    positions.view(-1)[1 : 1 + count] = far[:count]
    return positions


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize(("head_size", "dim"), [(128, 128), (96, 64), (66, 64), (70, 2)])
def test_out_of_place_equals_cpu_kernel(dtype, interleaved, head_size, dim) -> None:
    cache, inv_freq, mscale = tables(dim)
    x = randn(3, 4, 20, head_size, dtype=dtype)
    positions = positions_for((3, 1, 20))
    out, vector_path = _C._emulate_cuda_rotate(x, cache, inv_freq, mscale, positions, interleaved)
    want = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved)
    assert torch.equal(out, want)
    # 16-byte vectors whenever the rotary half and the pass-through split into whole vectors
    width = 16 // x.element_size()
    assert vector_path == ((dim // 2) % width == 0 and (head_size - dim) % width == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("interleaved", [False, True])
def test_in_place_q_and_k_in_one_launch(dtype, interleaved) -> None:
    cache, inv_freq, mscale = tables(128)
    tokens, hq, hk = 23, 8, 2
    qkv = randn(tokens, hq + 2 * hk, 128, dtype=dtype)
    positions = positions_for((tokens, 1))
    emulated = qkv.clone()
    vector_path = _C._emulate_cuda_rotate_inplace(
        emulated[:, :hq],
        emulated[:, hq : hq + hk],
        cache,
        inv_freq,
        mscale,
        positions,
        interleaved,
    )
    assert vector_path
    want = qkv.clone()
    ops.rotate_inplace(
        want[:, :hq], want[:, hq : hq + hk], cache, inv_freq, mscale, positions, interleaved
    )
    assert torch.equal(emulated, want)


@pytest.mark.parametrize(
    ("make", "vector"),
    [
        (lambda t: t[..., :64], True),  # rows of a wider tensor, 16-byte aligned
        (lambda t: t[..., ::2][..., :64], False),  # element stride 2
        (lambda t: t[..., 1:65], False),  # rows start off a 16-byte boundary
        (lambda t: t.transpose(0, 1)[..., :64], True),  # head-major strides
        (lambda t: t[:, :, 3:67], False),
    ],
)
def test_layouts_and_the_vector_decision(make, vector) -> None:
    cache, inv_freq, mscale = tables(64)
    x = make(randn(30, 5, 136, dtype=torch.bfloat16))
    positions = positions_for((x.shape[0], 1)) if x.shape[0] == 30 else None
    out, vector_path = _C._emulate_cuda_rotate(x, cache, inv_freq, mscale, positions, False)
    assert vector_path == vector
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, False))
    q = x.clone() if not vector else x
    _C._emulate_cuda_rotate_inplace(q, None, cache, inv_freq, mscale, positions, False)
    assert torch.equal(q, out)


def test_implicit_and_int32_positions() -> None:
    cache, inv_freq, mscale = tables(64, cached=16)
    x = randn(2, 3, 40, 64)
    out, _ = _C._emulate_cuda_rotate(x, cache, inv_freq, mscale, None, True)
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, None, True))
    positions = positions_for((2, 1, 40)).to(torch.int32)
    out, _ = _C._emulate_cuda_rotate(x, cache, inv_freq, mscale, positions, False)
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, False))


def test_a_cache_view_off_its_alignment_takes_the_scalar_path() -> None:
    cache, inv_freq, mscale = tables(128)
    # a contiguous cache 16 bytes into a buffer: fine for 16-byte x vectors, not for the 32-byte
    # runs of 8 cos/sin floats that bf16 items read
    buffer = torch.empty(cache.numel() + 4)
    shifted = buffer[4:].view_as(cache)
    shifted.copy_(cache)
    x = randn(7, 4, 128, dtype=torch.bfloat16)
    positions = positions_for((7, 1))
    out, vector_path = _C._emulate_cuda_rotate(x, shifted, inv_freq, mscale, positions, False)
    assert not vector_path
    assert torch.equal(out, ops.rotate(x, cache, inv_freq, mscale, positions, False))
    _, vector_path = _C._emulate_cuda_rotate(x, cache, inv_freq, mscale, positions, False)
    assert vector_path
