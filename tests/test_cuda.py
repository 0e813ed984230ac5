"""CUDA kernels against the CPU kernels and the float64 reference (skipped without a GPU).

Run by benchmarks/gpu_check.sh on a GPU machine; `-k smoke` is the short subset it runs under
compute-sanitizer. Outputs are NaN-poisoned (`poison`)."""

from __future__ import annotations

import functools

import pytest
import torch

import yarn_ext
from yarn_ext import YarnEmbedding, ops, reference

from . import hooks, support
from .support import FLOAT_DTYPES, assert_matches_reference, randn, requires_cuda
from .test_cuda_emulation import FAST_LAYOUTS

pytestmark = [requires_cuda, pytest.mark.usefixtures("poison")]

CUDA = "cuda"


tables = functools.partial(support.tables, device=CUDA)


def random_positions(shape: tuple[int, ...], cached: int, seed: int = 0) -> torch.Tensor:
    """Mostly inside the cache, some past it and some negative (computed on the fly)."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.randint(0, cached, shape, generator=generator)
    wild = torch.randint(-(2**20), 2**21, shape, generator=generator)
    pick = torch.rand(shape, generator=generator) < 0.1
    return torch.where(pick, wild, positions)


def check_against_cpu_and_reference(out_cuda, x_cpu, positions_cpu, interleaved, cpu_tables):
    cache, inv_freq, mscale = cpu_tables
    want = reference.rotate(x_cpu, inv_freq, mscale, positions_cpu, interleaved)
    assert_matches_reference(out_cuda.cpu(), want, x_cpu, mscale)
    cpu = ops.rotate(x_cpu, cache, inv_freq, mscale, positions_cpu, interleaved)
    # each device builds its own cache, and the float64 sin/cos of the two may differ in the
    # last bits: within an output rounding of the CPU result (with the same tables the rotation
    # itself gives the same bits: test_rotation_bits_equal_the_cpu_on_every_path)
    eps = 1e-13 if x_cpu.dtype == torch.float64 else 2 * torch.finfo(x_cpu.dtype).eps
    bound = eps * x_cpu.abs().max().double().item() * mscale
    assert (out_cuda.cpu().double() - cpu.double()).abs().max().item() <= bound


def test_cuda_smoke() -> None:
    cache, inv_freq, mscale = tables(128, 64)
    q, k = randn(37, 8, 128, dtype=torch.bfloat16), randn(37, 2, 128, dtype=torch.bfloat16, seed=1)
    positions = random_positions((37, 1), 64)
    want_q = reference.rotate(q, inv_freq.cpu(), mscale, positions)
    want_k = reference.rotate(k, inv_freq.cpu(), mscale, positions)
    q_dev, k_dev = q.to(CUDA), k.to(CUDA)
    ops.rotate_inplace(q_dev, k_dev, cache, inv_freq, mscale, positions.to(CUDA))
    torch.cuda.synchronize()
    assert_matches_reference(q_dev.cpu(), want_q, q, mscale)
    assert_matches_reference(k_dev.cpu(), want_k, k, mscale)


def test_cache_matches_cpu_within_one_ulp() -> None:
    inv_freq = yarn_ext.yarn_inv_freq(128, 1e6, 4.0, 32768)
    mscale = yarn_ext.get_mscale(4.0)
    cpu = ops.build_cos_sin_cache(inv_freq, 131072, mscale)
    gpu = ops.build_cos_sin_cache(inv_freq.to(CUDA), 131072, mscale).cpu()
    ulps = (cpu.view(torch.int32).long() - gpu.view(torch.int32).long()).abs()
    assert ulps.max().item() <= 1


def test_cache_accuracy_up_to_2_pow_20() -> None:
    inv_freq = yarn_ext.yarn_inv_freq(128, 1e6, 4.0, 32768, device=CUDA)
    mscale = yarn_ext.get_mscale(4.0)
    cache = ops.build_cos_sin_cache(inv_freq, 2**20 + 1, mscale)
    worst = 0.0
    for start in range(0, 2**20 + 1, 2**17):
        rows = cache[start : start + 2**17].double()
        cos, sin = reference.cos_sin(
            torch.arange(start, start + rows.shape[0], device=CUDA), inv_freq, mscale
        )
        worst = max(
            worst, (rows[:, :64] - cos).abs().max().item(), (rows[:, 64:] - sin).abs().max().item()
        )
    assert worst <= 1e-6


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize(("head_size", "dim"), [(128, 128), (96, 64), (66, 64), (70, 2)])
def test_rotate_matches_cpu_and_reference(dtype, interleaved, head_size, dim) -> None:
    cpu_tables = tables(dim, 300, device="cpu")
    cache, inv_freq, mscale = tables(dim, 300)
    x = randn(5, 4, 70, head_size, dtype=dtype)  # [B, H, S, D]
    positions = random_positions((5, 1, 70), 300)
    out = ops.rotate(x.to(CUDA), cache, inv_freq, mscale, positions.to(CUDA), interleaved)
    assert out.dtype == dtype and out.shape == x.shape
    check_against_cpu_and_reference(out, x, positions, interleaved, cpu_tables)
    assert torch.equal(out[..., dim:].cpu(), x[..., dim:])


def cuda_token_path(enabled: bool):
    """The launcher's path switch, restored afterwards."""

    class Switch:
        def __enter__(self) -> None:
            self.previous = yarn_ext._set_cuda_token_path(enabled)

        def __exit__(self, *exc: object) -> None:
            yarn_ext._set_cuda_token_path(self.previous)

    return Switch()


@pytest.mark.hooks
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotation_bits_equal_the_cpu_on_every_path(dtype, interleaved) -> None:
    # The same tables on both devices and positions inside the cache: the rotation alone. Each
    # product and sum rounds on its own on the GPU (no contraction), as on the CPU, so every
    # instantiation - token path, generic 16-byte, generic scalar; in and out of place - gives
    # the CPU's bits.
    cache, inv_freq, mscale = tables(128, 512, device="cpu")
    gpu_tables = cache.to(CUDA), inv_freq.to(CUDA), mscale
    positions = torch.randint(0, 512, (200, 1), generator=torch.Generator().manual_seed(1))
    memory = randn(200, 12, 136, dtype=dtype)
    views = {
        "tokens": (lambda t: t[..., :128], True),
        "generic_vector": (lambda t: t[..., :128], False),
        "generic_scalar": (lambda t: t[..., 1:129], True),
    }
    for path, (view, token_path) in views.items():
        x = view(memory)
        want = ops.rotate(x, cache, inv_freq, mscale, positions, interleaved)
        # the path these views take (with the switch on), as the launcher decides it
        _, launches = hooks.emulate_cuda_rotate(x, cache, inv_freq, mscale, positions, interleaved)
        assert [launch["path"] for launch in launches] == [
            "tokens" if path == "generic_vector" else path
        ]
        with cuda_token_path(token_path):
            out = ops.rotate(view(memory.to(CUDA)), *gpu_tables, positions.to(CUDA), interleaved)
            q_memory = memory.to(CUDA)
            ops.rotate_inplace(view(q_memory), None, *gpu_tables, positions.to(CUDA), interleaved)
        assert torch.equal(out.cpu(), want), path
        assert torch.equal(view(q_memory.cpu()), want), path


@pytest.mark.parametrize("layout", list(FAST_LAYOUTS))
@pytest.mark.parametrize("token_path", [True, False])
def test_every_token_layout_on_both_paths(layout, token_path) -> None:
    # the layouts the emulation tests run through the token path, on the GPU, on each path
    make, make_positions = FAST_LAYOUTS[layout]
    cpu_tables = tables(64, 300, device="cpu")
    cache, inv_freq, mscale = tables(64, 300)
    memory = randn(2, 9, 5, 80, dtype=torch.bfloat16)
    positions = make_positions(random_positions((2, 9), 300))
    x = make(memory)
    dev_positions = None if positions is None else positions.to(CUDA)
    with cuda_token_path(token_path):
        out = ops.rotate(make(memory.to(CUDA)), cache, inv_freq, mscale, dev_positions)
        q_memory = memory.to(CUDA)
        ops.rotate_inplace(make(q_memory), None, cache, inv_freq, mscale, dev_positions)
    check_against_cpu_and_reference(out, x.contiguous(), positions, False, cpu_tables)
    assert torch.equal(make(q_memory).cpu(), out.cpu())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    "make",
    [
        lambda t: t,  # contiguous [T, H, D]: the vector path
        lambda t: t.transpose(0, 1).contiguous().transpose(0, 1),  # head-major storage
        lambda t: t[:, :, ::2],  # element stride 2: the scalar path
        lambda t: t[:, :, 1:],  # rows not 16-byte aligned: the scalar path
        lambda t: t[::3],  # strided tokens
    ],
)
def test_layouts(dtype, make) -> None:
    cpu_tables = tables(64, 128, device="cpu")
    cache, inv_freq, mscale = tables(64, 128)
    base = randn(90, 6, 192, dtype=dtype)
    x = make(base)[..., :64] if make(base).shape[-1] > 64 else make(base)
    positions = random_positions((x.shape[0], 1), 128)
    x_dev = make(base.to(CUDA))
    x_dev = x_dev[..., :64] if x_dev.shape[-1] > 64 else x_dev
    out = ops.rotate(x_dev, cache, inv_freq, mscale, positions.to(CUDA))
    check_against_cpu_and_reference(out, x.contiguous(), positions, False, cpu_tables)
    ops.rotate_inplace(x_dev, None, cache, inv_freq, mscale, positions.to(CUDA))
    check_against_cpu_and_reference(x_dev, x.contiguous(), positions, False, cpu_tables)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("interleaved", [False, True])
def test_fused_qkv_in_place_in_one_call(dtype, interleaved) -> None:
    cpu_tables = tables(128, 512, device="cpu")
    cache, inv_freq, mscale = tables(128, 512)
    tokens, hq, hk = 1000, 32, 8
    qkv = randn(tokens, hq + 2 * hk, 128, dtype=dtype)
    positions = random_positions((tokens, 1), 512)
    qkv_dev = qkv.to(CUDA)
    q, k = qkv_dev[:, :hq], qkv_dev[:, hq : hq + hk]
    ops.rotate_inplace(q, k, cache, inv_freq, mscale, positions.to(CUDA), interleaved)
    check_against_cpu_and_reference(q, qkv[:, :hq], positions, interleaved, cpu_tables)
    check_against_cpu_and_reference(k, qkv[:, hq : hq + hk], positions, interleaved, cpu_tables)
    assert torch.equal(qkv_dev[:, hq + hk :].cpu(), qkv[:, hq + hk :])


@pytest.mark.parametrize(
    ("shape", "positions_shape"),
    [((3, 50, 64), None), ((3, 50, 4, 64), (3, 50, 1)), ((50, 64), (50,)), ((2, 50, 64), ())],
)
@pytest.mark.parametrize("position_dtype", [torch.int32, torch.int64])
def test_positions_forms(shape, positions_shape, position_dtype) -> None:
    cpu_tables = tables(64, 40, device="cpu")
    cache, inv_freq, mscale = tables(64, 40)
    x = randn(*shape, dtype=torch.bfloat16)
    positions = (
        None
        if positions_shape is None
        else random_positions(positions_shape, 40).to(position_dtype)
    )
    out = ops.rotate(
        x.to(CUDA), cache, inv_freq, mscale, None if positions is None else positions.to(CUDA)
    )
    check_against_cpu_and_reference(out, x, positions, False, cpu_tables)


def test_large_shape_and_all_positions_on_the_fly() -> None:
    cpu_tables = tables(128, 16, device="cpu")
    cache, inv_freq, mscale = tables(128, 16)
    x = randn(16384, 8, 128, dtype=torch.bfloat16)
    positions = torch.arange(16384)[:, None] * 61 - 5000  # nearly all outside the cache
    out = ops.rotate(x.to(CUDA), cache, inv_freq, mscale, positions.to(CUDA))
    check_against_cpu_and_reference(out, x, positions, False, cpu_tables)


@pytest.mark.slow
def test_more_than_2_pow_31_elements() -> None:
    cache, inv_freq, mscale = tables(128, 2**17)
    tokens = 2**17 + 1  # (2^17 + 1) * 128 * 128 elements > 2^31
    x = torch.ones(tokens, 128, 128, dtype=torch.bfloat16, device=CUDA)
    x[:, :, 64:] = -0.5
    positions = torch.arange(tokens, device=CUDA)[:, None]
    ops.rotate_inplace(x, None, cache, inv_freq, mscale, positions)
    for rows in (slice(0, 3), slice(tokens - 3, tokens)):
        sample = torch.ones(3, 128, 128, dtype=torch.bfloat16)
        sample[:, :, 64:] = -0.5
        want = reference.rotate(sample, inv_freq.cpu(), mscale, positions[rows].cpu())
        assert_matches_reference(x[rows].cpu(), want, sample, mscale)


def test_module_on_cuda_with_growth_and_no_host_sync() -> None:
    rope = YarnEmbedding(
        64,
        max_position_embeddings=32,
        original_max_position_embeddings=16,
        finetuned=True,
        device=CUDA,
    )
    assert rope.inv_freq.device.type == "cuda" and rope.inv_freq.dtype == torch.float64
    x = randn(2, 4, 48, 64, dtype=torch.bfloat16)
    out = rope(x.to(CUDA))  # grows the cache on the GPU to 48 positions, scale 3
    assert rope.max_seq_len_cached == 48 and rope.cos_sin_cache.device.type == "cuda"
    assert_matches_reference(
        out.cpu(), reference.rotate(x, rope.inv_freq.cpu(), rope.mscale), x, rope.mscale
    )
    q = randn(16, 8, 64, dtype=torch.bfloat16).to(CUDA)
    positions = torch.arange(16, device=CUDA)[:, None] + 100
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        rope.rotate_(q, None, positions)
        rope(q, positions=positions)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    cpu = YarnEmbedding(
        64, max_position_embeddings=32, original_max_position_embeddings=16, finetuned=True
    )
    cpu(x)
    assert torch.equal(cpu.inv_freq, rope.inv_freq.cpu())


def test_cuda_errors_name_the_argument() -> None:
    cache, inv_freq, mscale = tables(64, 8)
    with pytest.raises(ValueError, match="x is on cpu"):
        ops.rotate(torch.ones(2, 64), cache, inv_freq, mscale)
    with pytest.raises(ValueError, match="positions is on cpu"):
        ops.rotate(torch.ones(2, 64, device=CUDA), cache, inv_freq, mscale, torch.zeros(2).long())
    with pytest.raises(ValueError, match="k is on cpu"):
        ops.rotate_inplace(
            torch.ones(2, 64, device=CUDA), torch.ones(2, 64), cache, inv_freq, mscale
        )
