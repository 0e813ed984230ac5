"""rotate_store_kv's CUDA kernel, its work run on the CPU (tests/hooks.py: every thread of the
launch the CUDA launcher would make, csrc/kv_store_work.h), against the CPU kernel bit for bit -
the norm's sum of squares runs in the same order on both - and on what the kernel does with
slots the CPU refuses: a slot outside the caches is skipped and counted, never written; a slot
used twice writes one of its tokens' rows. The caches sit in poisoned guard bands."""

from __future__ import annotations

import pytest
import torch

from yarn_ext import ops

from . import hooks
from .support import randn, tables
from .test_rotate_store_kv import (
    HALF,
    Case,
    assert_only_slots_written,
    cache_rows,
    call_args,
    make_case,
    run,
)


def norm_kwargs(kind: str, dtype: torch.dtype, head_size: int) -> dict:
    if kind == "none":
        return {}
    weights = [randn(head_size, dtype=dtype, seed=s) * 0.5 + 1 for s in (7, 8)]
    return {
        "q_norm_weight": weights[0],
        "k_norm_weight": weights[1],
        "norm_unit_offset": kind == "unit_offset",
    }


def same_bytes(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def misaligned(case: Case) -> Case:
    """q, k and v moved one element off their 16-byte alignment (the kernel's one-element
    path)."""

    def shifted(t: torch.Tensor) -> torch.Tensor:
        store = torch.empty(t.numel() + 1, dtype=t.dtype)
        view = store[1:].view(t.shape)
        view.copy_(t)
        return view

    case.q, case.k, case.v = shifted(case.q), shifted(case.k), shifted(case.v)
    return case


# (name, make_case arguments, norm kind, other call arguments)
CONFIGS = [
    ("qwen3", {}, "weight", {}),
    ("qwen3.5 partial rotary", {"head_size": 256, "v_head_size": 128}, "unit_offset", {}),
    ("fused qkv, strided blocks", {"fused": True, "strided_blocks": True}, "none", {}),
    ("fp8, write_k", {"cache_dtype": torch.float8_e4m3fn}, "weight", {"write_k": True}),
    ("misaligned", {"misaligned": True}, "unit_offset", {"write_k": True}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_emulated_kernel_gives_the_cpu_kernels_bits(dtype, interleaved, config, poison) -> None:
    _, case_args, norm, extra = config
    case_args = dict(case_args)
    shift = case_args.pop("misaligned", False)
    cache, inv_freq, mscale = tables(2 * HALF, 64)  # positions up to 200: many past the cache
    cases = [make_case(dtype, seed=21, **case_args) for _ in range(2)]
    if shift:
        cases = [misaligned(c) for c in cases]
    kwargs = {**norm_kwargs(norm, dtype, cases[0].q.shape[-1]), **extra}
    if cases[0].k_cache.dtype == torch.float8_e4m3fn:
        kwargs |= {"k_scale": torch.tensor([0.02]), "v_scale": torch.tensor([0.25])}
    run(cases[0], cache, inv_freq, mscale, interleaved=interleaved, **kwargs)
    launch = hooks.emulate_cuda_rotate_store_kv(
        *call_args(cases[1], cache, inv_freq, mscale), interleaved=interleaved, **kwargs
    )
    assert launch["width"] == (1 if shift else 16 // dtype.itemsize)
    for field in ("q", "k", "v", "k_store", "v_store"):
        assert same_bytes(getattr(cases[0], field), getattr(cases[1], field)), field
    assert_only_slots_written(cases[1], cases[1].k_cache, cases[1].k_store)
    assert_only_slots_written(cases[1], cases[1].v_cache, cases[1].v_store)


def test_mrope_image_tokens_and_positions_past_the_cache() -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    cases = [make_case(torch.bfloat16, seed=22) for _ in range(2)]
    t = cases[0].positions
    for case in cases:
        case.positions = torch.stack([t, t + 3, t + 70])  # equal for none; w past the cache
    kwargs = {"mrope_section": [11, 11, 10], "mrope_interleaved": True}
    kwargs |= norm_kwargs("weight", torch.bfloat16, 128)
    run(cases[0], cache, inv_freq, mscale, **kwargs)
    hooks.emulate_cuda_rotate_store_kv(*call_args(cases[1], cache, inv_freq, mscale), **kwargs)
    for field in ("q", "k_store", "v_store"):
        assert same_bytes(getattr(cases[0], field), getattr(cases[1], field)), field


def test_invalid_slots_are_skipped_and_counted(poison) -> None:
    """Slots past the caches or below -1 write nothing (q is still rotated, k still written back
    with write_k) and are counted once per token; -1 is padding, not counted."""
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    good = make_case(torch.bfloat16, padding=1, seed=23)
    case = make_case(torch.bfloat16, padding=1, seed=23)
    num_slots = case.k_cache.shape[0] * case.k_cache.shape[1]
    tokens = case.slots >= 0
    invalid = tokens.nonzero().flatten()[:4]
    case.slots[invalid] = torch.tensor([num_slots, 10**9, -2, -(2**40)])
    good.slots[invalid] = -1  # the same call with those tokens as padding
    kwargs = norm_kwargs("weight", torch.bfloat16, 128) | {"write_k": True}
    run(good, cache, inv_freq, mscale, **kwargs)
    counter = torch.tensor([5], dtype=torch.int32)
    hooks.emulate_cuda_rotate_store_kv(
        *call_args(case, cache, inv_freq, mscale), invalid_slots=counter, **kwargs
    )
    assert counter.item() == 5 + 4
    for field in ("q", "k", "k_store", "v_store"):
        assert same_bytes(getattr(good, field), getattr(case, field)), field
    case.slots = good.slots  # the rows that may hold values: the valid slots only
    assert_only_slots_written(case, case.k_cache, case.k_store)
    assert_only_slots_written(case, case.v_cache, case.v_store)


def test_a_slot_used_twice_writes_one_of_its_tokens_rows(poison) -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    case = make_case(torch.float32, padding=0, seed=24)
    case.slots[3] = case.slots[7]
    k_before = case.k.clone()
    v_before = case.v.clone()
    q, k = case.q.clone(), case.k.clone()
    ops.rotate_inplace(q, k, cache, inv_freq, mscale, case.positions[:, None])
    hooks.emulate_cuda_rotate_store_kv(*call_args(case, cache, inv_freq, mscale))
    slot = case.slots[7]
    block, offset = slot // case.k_cache.shape[1], slot % case.k_cache.shape[1]
    row = case.k_cache[block, offset]
    assert torch.equal(row, k[3]) or torch.equal(row, k[7])
    assert torch.equal(case.v_cache[block, offset], v_before[3]) or torch.equal(
        case.v_cache[block, offset], v_before[7]
    )
    assert torch.equal(case.k, k_before)
    assert_only_slots_written(case, case.k_cache, case.k_store)
    k_rows, rows = cache_rows(case.k_cache, case.slots)
    distinct = rows[(rows != 3) & (rows != 7)]
    assert torch.equal(k_rows[(rows != 3) & (rows != 7)], k[distinct])


@pytest.mark.parametrize(
    "heads, block, grid",
    [((250, 5), (208, 1), (11, 5)), ((64, 8), (160, 1), (11, 2)), ((8, 2), (48, 5), (3, 1))],
)
def test_launch_covers_every_row_of_every_token(heads, block, grid) -> None:
    """A row's 4 lanes are consecutive threads; a token of more than 256 lanes is cut into equal
    slices (260 rows: 1040 lanes, five slices of 208; 80 rows: two of 160), fewer are whole
    tokens to a block (12 rows: 48 lanes, 5 tokens)."""
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    cases = [make_case(torch.bfloat16, heads=heads, head_size=64, seed=25) for _ in range(2)]
    run(cases[0], cache, inv_freq, mscale)
    launch = hooks.emulate_cuda_rotate_store_kv(*call_args(cases[1], cache, inv_freq, mscale))
    assert launch["block"] == block and launch["grid"] == grid
    for field in ("q", "k_store", "v_store"):
        assert same_bytes(getattr(cases[0], field), getattr(cases[1], field)), field


def test_no_heads_and_no_tokens_launch_nothing() -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    for case in (make_case(heads=(0, 0), seed=26), make_case(tokens=0, padding=0, seed=26)):
        launch = hooks.emulate_cuda_rotate_store_kv(*call_args(case, cache, inv_freq, mscale))
        assert launch["grid"] == (0, 0)
        run(case, cache, inv_freq, mscale)  # and the CPU kernel
        assert case.k_store.isnan().all() and case.v_store.isnan().all()
