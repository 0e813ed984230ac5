"""rotate_store_kv on a GPU: the CUDA kernel against the CPU kernel bit for bit (the same
arithmetic in the same order: csrc/kv_store_work.h), slots outside the caches skipped and
counted on the device, and the call captured in a CUDA graph and replayed with new positions,
slots and inputs. The caches sit in poisoned guard bands, moved to the GPU with them."""

from __future__ import annotations

import pytest
import torch

from .support import requires_cuda, tables
from .test_kv_store_emulation import CONFIGS, misaligned, norm_kwargs, same_bytes
from .test_rotate_store_kv import HALF, Case, assert_only_slots_written, make_case, run

pytestmark = requires_cuda


def like(store: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
    return store.as_strided(view.shape, view.stride(), view.storage_offset())


def moved(case: Case, device: str) -> Case:
    """The case on `device`, every view keeping its storage offset and strides (so a fused qkv
    stays fused, a misaligned row misaligned and the guard bands around the caches)."""
    bases: dict[int, torch.Tensor] = {}

    def move(t: torch.Tensor) -> torch.Tensor:
        base = t._base if t._base is not None else t
        if id(base) not in bases:
            bases[id(base)] = base.to(device)
        return bases[id(base)].as_strided(t.shape, t.stride(), t.storage_offset())

    k_store, v_store = move(case.k_store), move(case.v_store)
    return Case(
        move(case.q),
        move(case.k),
        move(case.v),
        case.positions.to(device),
        case.slots.to(device),
        like(k_store, case.k_cache),
        like(v_store, case.v_cache),
        k_store,
        v_store,
        case.guard,
    )


def on(device: str, kwargs: dict) -> dict:
    return {n: a.to(device) if isinstance(a, torch.Tensor) else a for n, a in kwargs.items()}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_cuda_kernel_gives_the_cpu_kernels_bits(dtype, interleaved, config) -> None:
    _, case_args, norm, extra = config
    case_args = dict(case_args)
    shift = case_args.pop("misaligned", False)
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    cpu = make_case(dtype, seed=31, **case_args)
    if shift:
        misaligned(cpu)
    gpu = moved(cpu, "cuda")
    kwargs = {**norm_kwargs(norm, dtype, cpu.q.shape[-1]), **extra}
    if cpu.k_cache.dtype == torch.float8_e4m3fn:
        kwargs |= {"k_scale": torch.tensor([0.02]), "v_scale": torch.tensor([0.25])}
    run(cpu, cache, inv_freq, mscale, interleaved=interleaved, **kwargs)
    run(gpu, cache.cuda(), inv_freq.cuda(), mscale, interleaved=interleaved, **on("cuda", kwargs))
    back = moved(gpu, "cpu")
    for field in ("q", "k", "v", "k_store", "v_store"):
        assert same_bytes(getattr(cpu, field), getattr(back, field)), field
    assert_only_slots_written(back, back.k_cache, back.k_store)
    assert_only_slots_written(back, back.v_cache, back.v_store)


def test_cuda_skips_and_counts_invalid_slots() -> None:
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    good = make_case(torch.bfloat16, padding=1, seed=32)
    bad = make_case(torch.bfloat16, padding=1, seed=32)
    num_slots = bad.k_cache.shape[0] * bad.k_cache.shape[1]
    invalid = (bad.slots >= 0).nonzero().flatten()[:3]
    bad.slots[invalid] = torch.tensor([num_slots, -2, 10**12])
    good.slots[invalid] = -1
    kwargs = norm_kwargs("weight", torch.bfloat16, 128) | {"write_k": True}
    run(good, cache, inv_freq, mscale, **kwargs)
    gpu = moved(bad, "cuda")
    counter = torch.tensor([1], dtype=torch.int32, device="cuda")
    run(gpu, cache.cuda(), inv_freq.cuda(), mscale, invalid_slots=counter, **on("cuda", kwargs))
    assert counter.item() == 1 + 3
    back = moved(gpu, "cpu")
    for field in ("q", "k", "k_store", "v_store"):
        assert same_bytes(getattr(good, field), getattr(back, field)), field


def test_cuda_graph_replays_with_new_positions_slots_and_inputs() -> None:
    """One captured call, replayed for three steps whose q, k, v, positions and slots are copied
    into the captured tensors: each step's results are the eager CPU call's."""
    dtype = torch.bfloat16
    cache, inv_freq, mscale = tables(2 * HALF, 64)
    kwargs = norm_kwargs("unit_offset", dtype, 128) | {"write_k": True}
    steps = [make_case(dtype, padding=2, seed=40 + s) for s in range(3)]
    static = moved(make_case(dtype, padding=2, seed=39), "cuda")
    counter = torch.zeros(1, dtype=torch.int32, device="cuda")
    gpu_tables = (cache.cuda(), inv_freq.cuda(), mscale)
    gpu_kwargs = on("cuda", kwargs) | {"invalid_slots": counter}

    def step() -> None:
        run(static, *gpu_tables, **gpu_kwargs)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm-up, outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for case in steps:
        for field in ("q", "k", "v", "positions", "slots"):
            getattr(static, field).copy_(getattr(case, field))
        static.k_store.fill_(float("nan"))
        static.v_store.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        run(case, cache, inv_freq, mscale, **kwargs)
        back = moved(static, "cpu")
        for field in ("q", "k", "k_store", "v_store"):
            assert same_bytes(getattr(case, field), getattr(back, field)), field
    assert counter.item() == 0
