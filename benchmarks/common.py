"""What the benchmarks share: the timer, the shapes and the baselines."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch
from torch import Tensor

HEADS_Q, HEADS_K, HEAD_DIM = 32, 8, 128
# Qwen3's YaRN: theta 1e6, factor 4 over 32768 positions.
BASE, SCALE, ORIGINAL = 1e6, 4.0, 32768


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(
    fns: dict[str, Callable[[int], object]],
    sets: int,
    device: str,
    min_time: float = 0.2,
    min_rounds: int = 5,
    batch: int = 1,
    refresh: dict[str, Callable[[int], object]] | None = None,
) -> dict[str, float]:
    """Median time of one call of each fn(i), i cycling through `sets` input sets (so that calls
    see data that is not in cache). The functions are timed in rounds, one sample of each per
    round, so that they share the machine's conditions (clock, neighbours) and their ratios are
    fair. A sample times `batch` back-to-back calls (amortising the timer for tiny calls);
    rounds continue until there are `min_rounds` and `min_time` seconds have passed. CUDA
    samples are CUDA-event times. A function that raises is reported and left out.

    refresh[name](i), when given, runs untimed after each call of fn `name` on set i (after the
    sample): it restores inputs the call changed in place, where calls on their own output would
    drift from what the function meets in use (a norm applied again and again, say)."""
    live = dict(fns)
    refresh = refresh or {}
    calls = 0

    def run(name: str, count: int) -> list[int]:
        nonlocal calls
        used = []
        for _ in range(count):
            live[name](calls % sets)
            used.append(calls % sets)
            calls += 1
        return used

    def restore(name: str, used: list[int]) -> None:
        if name in refresh:
            synchronize(device)
            for i in used:
                refresh[name](i)
            synchronize(device)

    for name in list(live):  # warm-up: compilation, allocator, page faults
        try:
            restore(name, run(name, max(2, batch)))
        except Exception as error:  # a baseline's failure must not lose the others
            print(f"{name} failed: {error}")
            del live[name]
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in live}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside a sample is not the call's cost
    started = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - started < min_time and rounds < 1000):
        for name in live:
            if device == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                used = run(name, batch)
                end.record()
                end.synchronize()
                samples[name].append(start.elapsed_time(end) * 1e-3 / batch)
            else:
                t0 = time.perf_counter()
                used = run(name, batch)
                samples[name].append((time.perf_counter() - t0) / batch)
            restore(name, used)
        rounds += 1
    if gc_was_enabled:
        gc.enable()
    return {name: sorted(times)[len(times) // 2] for name, times in samples.items()}


def rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def eager_rope(
    q: Tensor, k: Tensor, cos_cache: Tensor, sin_cache: Tensor, positions: Tensor
) -> tuple[Tensor, Tensor]:
    """transformers' apply_rotary_pos_emb, with cos/sin gathered for each token's position;
    q [T, Hq, D], k [T, Hk, D], caches [P, D] (each half repeated), positions [T]."""
    cos = cos_cache[positions].unsqueeze(1).to(q.dtype)
    sin = sin_cache[positions].unsqueeze(1).to(q.dtype)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def float32_cos_sin_tables(inv_freq: Tensor, length: int, mscale: float) -> tuple[Tensor, Tensor]:
    """The float32 construction of Zeta and transformers: float32 positions and frequencies, outer
    product, concatenated halves, cos and sin ([length, dim] each)."""
    positions = torch.arange(length, device=inv_freq.device, dtype=torch.float32)
    freqs = torch.outer(positions, inv_freq.float())
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos() * mscale, emb.sin() * mscale


def machine(device: str) -> str:
    """The device in words, for table captions."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{name}, {torch.get_num_threads()} threads, {capability}"
