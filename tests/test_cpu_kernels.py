"""The CPU kernels' vector loops (csrc/cpu/vectorized): every instruction-set copy gives the same
bits, and every way a call is split into tokens and heads - q and k in one job or two, heads
inside or outside tokens, rows as tokens when tokens are too few - rotates correctly."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import yarn_ext
from yarn_ext import ops, reference

from . import support
from .support import FLOAT_DTYPES, assert_matches_reference, randn

pytestmark = pytest.mark.usefixtures("poison")
ROOT = Path(__file__).resolve().parents[1]


def outputs() -> dict[str, torch.Tensor]:
    """Results of every CPU loop variant: dtypes, styles, inverse, partial rotary, a rotary half
    that is no whole number of vectors, strided rows, positions past and before the cache (two
    far enough for the long reduction by pi), and caches of several widths."""
    results = {}
    for dim, head_size in [(128, 128), (64, 96), (26, 30)]:
        inv_freq = yarn_ext.yarn_inv_freq(dim, 1e6, 4.0, 4096)
        cache = ops.build_cos_sin_cache(inv_freq, 300, 1.1)
        results[f"cache-{dim}"] = cache
        positions = torch.randint(-50, 400, (7, 1), generator=torch.Generator().manual_seed(dim))
        positions[3:5, 0] = torch.tensor([2**62 + 5, -(2**47)])  # the long reduction by pi
        for dtype in FLOAT_DTYPES:
            x = randn(7, 5, head_size, dtype=dtype)
            x[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
            x[2, 1, head_size // 2] = float("nan")  # the second of a rotate_half pair
            case = f"{dim}-{head_size}-{dtype}"
            strided = randn(7, 5, 2 * head_size, dtype=dtype)[..., ::2]
            results[f"{case}-strided"] = ops.rotate(strided, cache, inv_freq, 1.1, positions)
            for interleaved in (False, True):
                for inverse in (False, True):
                    results[f"{case}-{interleaved}-{inverse}"] = ops.rotate(
                        x, cache, inv_freq, 1.1, positions, interleaved, inverse
                    )
                q, k = x.clone(), randn(7, 2, head_size, dtype=dtype, seed=1)
                ops.rotate_inplace(q, k, cache, inv_freq, 1.1, positions, interleaved)
                results[f"{case}-{interleaved}-q"], results[f"{case}-{interleaved}-k"] = q, k
            # heads far apart, tokens adjacent ([B, H, S, D]): blocks of many tokens, walked
            # head by head
            bhsd = randn(2, 3, 300, head_size, dtype=dtype, seed=2)
            bhsd_positions = torch.arange(-20, 580, 2)
            bhsd_positions[7] = 2**62 + 5
            for interleaved in (False, True):
                results[f"{case}-{interleaved}-bhsd"] = ops.rotate(
                    bhsd, cache, inv_freq, 1.1, bhsd_positions, interleaved
                )
    results.update(rotate_store_kv_outputs())
    return results


def rotate_store_kv_outputs() -> dict[str, torch.Tensor]:
    """rotate_store_kv's loop: both norms (sums of squares over heads that are no whole number
    of vectors), NaN and infinite inputs, partial rotary, both pair styles, float8 caches."""
    results = {}
    for dim, head_size in [(64, 96), (128, 128)]:
        inv_freq = yarn_ext.yarn_inv_freq(dim, 1e6, 4.0, 4096)
        cache = ops.build_cos_sin_cache(inv_freq, 300, 1.1)
        positions = torch.tensor([5, 299, 400, -3, 2**62 + 5, 17])
        slots = torch.tensor([3, -1, 0, 7, 5, 2])
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            for cache_dtype in (dtype, torch.float8_e4m3fn):
                for unit_offset in (False, True):
                    for interleaved in (False, True):
                        q = randn(6, 3, head_size, dtype=dtype, seed=3) * 4
                        k = randn(6, 2, head_size, dtype=dtype, seed=4) * 4
                        v = randn(6, 2, head_size, dtype=dtype, seed=5) * 4
                        q[0, 0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
                        k[2, 1, head_size - 1] = float("nan")
                        weights = [randn(head_size, dtype=dtype, seed=s) for s in (6, 7)]
                        k_cache = torch.zeros(2, 4, 2, head_size).to(cache_dtype)
                        v_cache = torch.zeros_like(k_cache)
                        fp8 = cache_dtype == torch.float8_e4m3fn
                        scales = (torch.tensor(0.01), torch.tensor(0.2)) if fp8 else (None, None)
                        ops.rotate_store_kv(
                            q,
                            k,
                            v,
                            cache,
                            inv_freq,
                            1.1,
                            positions,
                            k_cache,
                            v_cache,
                            slots,
                            q_norm_weight=weights[0],
                            k_norm_weight=weights[1],
                            norm_unit_offset=unit_offset,
                            k_scale=scales[0],
                            v_scale=scales[1],
                            interleaved=interleaved,
                            write_k=True,
                        )
                        case = f"kv-{dim}-{head_size}-{dtype}-{fp8}-{unit_offset}-{interleaved}"
                        for name, t in (
                            ("q", q),
                            ("k", k),
                            ("k_cache", k_cache),
                            ("v_cache", v_cache),
                        ):
                            results[f"{case}-{name}"] = t
    results.update(conversion_range_outputs())
    return results


def conversion_range_outputs() -> dict[str, torch.Tensor]:
    """The bounds of the AVX512_BF16 copy's conversion loop (csrc/cpu/vectorized/bf16_convert.h),
    bfloat16 only, both norms and styles, rotary dims 64 (partial) and 128, eps 1e-6 and 0.
    Inside them: a value 2^-18 of the rest, a head 2^18 times larger, scales 2^±19 and 0,
    cos/sin rows with zeros (position 0). Outside them, where the other loops run: a denormal
    value (the conversion would flush it), an exact zero and an all-zero head (with eps 0 its
    inverse_rms is infinite), a value whose square is denormal (refused, conservatively),
    cos/sin rows of a table of mscale 1e-37 (their products with the values would be flushed)
    and, with Qwen3's norm (the weight is the scale), a denormal scale - at rotary dim 64 on a
    pass-through feature, whose normalized value is stored as it is."""
    results = {}
    positions = torch.tensor([0, 299, 400, 17])
    slots = torch.tensor([3, 0, 7, 5])
    dtype = torch.bfloat16
    for dim, head_size in [(64, 128), (128, 128)]:
        inv_freq = yarn_ext.yarn_inv_freq(dim, 1e6, 4.0, 4096)
        for mscale in (1.1, 1e-37):
            cache = ops.build_cos_sin_cache(inv_freq, 300, mscale)
            for weight_case in ("in-range", "denormal"):
                weights = [randn(head_size, dtype=dtype, seed=s) for s in (8, 9)]
                weights[0][:3] = torch.tensor([2.0**-19, 2.0**19, 0.0])
                if weight_case == "denormal":
                    weights[1][100] = 1e-39
                for unit_offset, interleaved, eps in itertools.product(
                    (False, True), (False, True), (1e-6, 0.0)
                ):
                    q = randn(4, 4, head_size, dtype=dtype, seed=10)
                    k = randn(4, 2, head_size, dtype=dtype, seed=11)
                    v = randn(4, 2, head_size, dtype=dtype, seed=12)
                    q[0, 0, 7] = 2.0**-18  # in range
                    q[0, 1] *= 2.0**18  # in range
                    q[1, 0, 3] = 1e-39  # a denormal
                    q[1, 2, 60] = 0.0  # an exact zero
                    q[2, 3, 64] = 2.0**-70  # its square is denormal
                    q[3, 0] = 0.0  # all zero
                    k[3, 1, 100] = 1e-39
                    k_cache = torch.zeros(2, 4, 2, head_size, dtype=dtype)
                    v_cache = torch.zeros_like(k_cache)
                    ops.rotate_store_kv(
                        q,
                        k,
                        v,
                        cache,
                        inv_freq,
                        mscale,
                        positions,
                        k_cache,
                        v_cache,
                        slots,
                        q_norm_weight=weights[0],
                        k_norm_weight=weights[1],
                        eps=eps,
                        norm_unit_offset=unit_offset,
                        interleaved=interleaved,
                        write_k=True,
                    )
                    case = f"convert-{dim}-{mscale}-{weight_case}-{unit_offset}-{interleaved}-{eps}"
                    for name, t in (("q", q), ("k", k), ("k_cache", k_cache)):
                        results[f"{case}-{name}"] = t
    return results


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit, NaNs included."""
    as_int = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.dtype == b.dtype and torch.equal(a.view(as_int), b.view(as_int))


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="this CPU runs the DEFAULT kernels only: there is no other copy to compare",
)
def test_instruction_sets_agree_bit_for_bit(tmp_path: Path) -> None:
    # every copy this CPU can run - DEFAULT, AVX2, AVX512 and AVX512_BF16 where it has them -
    # against the host's own, bit for bit (ATEN_CPU_CAPABILITY lowers the choice in a
    # subprocess). ATen has no AVX512_BF16 copy: its AVX512 stands for ours.
    here = yarn_ext.cpu_kernels()
    assert here.removesuffix("_BF16") == torch.backends.cpu.get_cpu_capability()
    order = ["DEFAULT", "AVX2", "AVX512", "AVX512_BF16"]
    lower = order[: order.index(here)]
    script = (
        "import sys, torch, yarn_ext\n"
        "from tests.test_cpu_kernels import outputs\n"
        "torch.save((yarn_ext.cpu_kernels(), outputs()), sys.argv[1])\n"
    )
    ours = outputs()
    assert any(value.isnan().any() for value in ours.values())
    for copy in lower:
        saved = tmp_path / f"{copy}.pt"
        env = dict(os.environ, ATEN_CPU_CAPABILITY=copy.lower())
        subprocess.run([sys.executable, "-c", script, str(saved)], check=True, cwd=ROOT, env=env)
        name, theirs = torch.load(saved)
        assert name == copy
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            assert same_bits(value, theirs[key]), f"{here} and {copy} differ: {key}"


def tables(dim: int = 128, cached: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    cache, inv_freq, _ = support.tables(dim, cached, mscale=1.1)
    return cache, inv_freq


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_k_with_heads_outside_tokens(dtype) -> None:
    # k a transposed view [T, Hk, D] whose heads are further apart than its tokens: the same
    # tokens as q (one job), walked head by head
    cache, inv_freq = tables()
    positions = torch.randint(0, 600, (40, 1), generator=torch.Generator().manual_seed(0))
    q = randn(40, 6, 128, dtype=dtype)
    k = randn(3, 40, 128, dtype=dtype, seed=1).transpose(0, 1)
    want_q = reference.rotate(q, inv_freq, 1.1, positions)
    want_k = reference.rotate(k, inv_freq, 1.1, positions)
    q_in, k_in = q.clone(), k.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, 1.1, positions)
    assert_matches_reference(q, want_q, q_in, 1.1)
    assert_matches_reference(k, want_k, k_in, 1.1)


def test_q_and_k_with_different_token_layouts() -> None:
    # q's batch and sequence merge into one token dimension, k's (a slice) do not: two jobs
    cache, inv_freq = tables()
    positions = torch.arange(2 * 24).reshape(2, 24) * 7
    q = randn(2, 24, 4, 128)
    k = randn(2, 48, 2, 128, seed=1)[:, :24]
    want_q = reference.rotate(q, inv_freq, 1.1, positions[..., None])
    want_k = reference.rotate(k, inv_freq, 1.1, positions[..., None])
    q_in, k_in = q.clone(), k.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, 1.1, positions[..., None])
    assert_matches_reference(q, want_q, q_in, 1.1)
    assert_matches_reference(k, want_k, k_in, 1.1)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs at least two intra-op threads")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_one_position_over_a_large_batch_splits_rows(dtype) -> None:
    # one token (a single position broadcast everywhere) but a lot of work: rows become the
    # tokens that threads share; threaded and serial results agree and match the reference
    cache, inv_freq = tables()
    x = randn(64, 32, 1, 128, dtype=dtype)
    positions = torch.tensor([700])  # past the cache: computed rows
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = ops.rotate(x, cache, inv_freq, 1.1, positions)
    finally:
        torch.set_num_threads(threads)
    parallel = ops.rotate(x, cache, inv_freq, 1.1, positions)
    assert torch.equal(serial, parallel)
    assert_matches_reference(parallel, reference.rotate(x, inv_freq, 1.1, positions), x, 1.1)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_heads_outside_tokens_in_bhsd_layout(dtype, interleaved) -> None:
    # [B, H, S, D] with positions [S]: tokens are S, heads (B and H) are far apart in memory.
    # Walked head by head over blocks of up to 256 tokens (more than two blocks here, the last
    # one partial), each block's rows prefetched ahead across the end of a head's run; cos/sin
    # rows from the cache and computed (positions before and past it), q and k in one job.
    cache, inv_freq = tables()
    q = randn(2, 5, 600, 128, dtype=dtype)
    k = randn(2, 2, 600, 128, dtype=dtype, seed=1)
    positions = torch.arange(600) * 13 - 40
    out = ops.rotate(q, cache, inv_freq, 1.1, positions, interleaved)
    want_q = reference.rotate(q, inv_freq, 1.1, positions, interleaved)
    want_k = reference.rotate(k, inv_freq, 1.1, positions, interleaved)
    assert_matches_reference(out, want_q, q, 1.1)
    q_in, k_in = q.clone(), k.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, 1.1, positions, interleaved)
    assert torch.equal(q, out)
    assert_matches_reference(k, want_k, k_in, 1.1)
    assert_matches_reference(q, want_q, q_in, 1.1)


def test_bfloat16_special_values_round_like_c10() -> None:
    # the bit-operation bfloat16 path rounds as c10::BFloat16 does (to nearest even, NaN kept
    # NaN, overflow to inf); the scalar path (strided rows) is c10's own conversion
    cache, inv_freq = tables()
    x = randn(4, 3, 128).to(torch.bfloat16)
    x[0, 0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), 3.3e38])
    x[1, 1, 64:68] = torch.tensor([float("nan"), 1e-40, -1e-40, -3.3e38])
    positions = torch.tensor([[0], [1], [5], [600]])
    fast = ops.rotate(x, cache, inv_freq, 1.1, positions)
    wide = torch.empty(4, 3, 256, dtype=torch.bfloat16)
    wide[..., ::2] = x
    slow = ops.rotate(wide[..., ::2], cache, inv_freq, 1.1, positions)
    assert torch.equal(fast.isnan(), slow.isnan())
    assert torch.equal(torch.nan_to_num(fast), torch.nan_to_num(slow))
    assert fast.isnan().any() and fast.isinf().any()
