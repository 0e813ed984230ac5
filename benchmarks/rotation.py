"""Rotation throughput: in-place q+k (32 query and 8 key heads, head_dim 128, random positions)
against tokens, for yarn_ext, eager PyTorch, the same under torch.compile, FlashInfer / Liger-Kernel
when installed (CUDA), and the same-run copy of the same bytes (the roofline). On CUDA yarn_ext is
measured twice: on the token-major fast path these [T, H, D] inputs take, and forced onto the
generic path (yarn_ext._set_cuda_token_path(False)), which other layouts take.

GB/s counts the bytes an in-place rotation must move: q and k read and written once. The copy
reads and writes the same number of bytes (q and k into other buffers; an in-place rotation,
which writes back lines it has just read, can beat it). Inputs cycle through enough sets (up to
8192) to exceed the last-level cache, so every figure is a from-memory figure."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

import yarn_ext

from .common import HEAD_DIM, HEADS_K, HEADS_Q, eager_rope, median_seconds

MAX_POSITION = 131072


def optional_peers(cache: Tensor) -> dict[str, Callable[[Tensor, Tensor, Tensor], object]]:
    """CUDA rotations from other libraries, when installed: name -> fn(q, k, positions)."""
    peers: dict[str, Callable[[Tensor, Tensor, Tensor], object]] = {}
    try:
        from flashinfer.rope import apply_rope_with_cos_sin_cache_inplace

        def flashinfer(q: Tensor, k: Tensor, positions: Tensor) -> None:
            apply_rope_with_cos_sin_cache_inplace(
                positions, q.view(q.shape[0], -1), k.view(k.shape[0], -1), HEAD_DIM, cache, True
            )

        peers["flashinfer"] = flashinfer
    except ImportError:
        pass
    try:
        from liger_kernel.transformers.rope import liger_rotary_pos_emb

        half = HEAD_DIM // 2
        cos_full = torch.cat((cache[:, :half], cache[:, :half]), dim=-1)
        sin_full = torch.cat((cache[:, half:], cache[:, half:]), dim=-1)

        def liger(q: Tensor, k: Tensor, positions: Tensor) -> object:
            # Liger wants [B, H, S, D] and per-position cos/sin rows
            cos = cos_full[positions][None].to(q.dtype)
            sin = sin_full[positions][None].to(q.dtype)
            return liger_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)

        peers["liger"] = liger
    except ImportError:
        pass
    return peers


def bench_rotation(
    device: str,
    dtype: torch.dtype,
    tokens: int,
    rope: yarn_ext.YarnEmbedding,
    with_compile: bool,
    min_time: float,
) -> dict:
    element = torch.finfo(dtype).bits // 8
    bytes_moved = 2 * tokens * (HEADS_Q + HEADS_K) * HEAD_DIM * element
    floor = 512 * 2**20 if device == "cuda" else 96 * 2**20  # past L2 (GPU) or L3 (CPU)
    sets = max(2, min(8192, math.ceil(floor / bytes_moved)))
    generator = torch.Generator(device=device).manual_seed(tokens)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, device=device, dtype=dtype, generator=generator)

    qs = [randn(tokens, HEADS_Q, HEAD_DIM) for _ in range(sets)]
    ks = [randn(tokens, HEADS_K, HEAD_DIM) for _ in range(sets)]
    q_copies = [torch.zeros_like(q) for q in qs]  # touched: no page faults while timed
    k_copies = [torch.zeros_like(k) for k in ks]
    positions = [
        torch.randint(0, MAX_POSITION, (tokens,), device=device, generator=generator)
        for _ in range(sets)
    ]
    columns = [p[:, None] for p in positions]
    cache = rope.cos_sin_cache
    half = HEAD_DIM // 2
    cos_cache = torch.cat((cache[:, :half], cache[:, :half]), dim=-1)
    sin_cache = torch.cat((cache[:, half:], cache[:, half:]), dim=-1)
    batch = 20 if tokens <= 16 else 1

    def copy(i: int) -> None:
        q_copies[i].copy_(qs[i])
        k_copies[i].copy_(ks[i])

    fns: dict[str, Callable[[int], object]] = {
        "copy": copy,
        "yarn_ext": lambda i: rope.rotate_(qs[i], ks[i], columns[i]),
        "eager": lambda i: eager_rope(qs[i], ks[i], cos_cache, sin_cache, positions[i]),
    }
    if with_compile:
        # A fresh compilation for each shape and dtype (dynamo stops compiling a function after
        # recompile_limit variants and runs it eagerly); a recompilation while timing is an error.
        torch._dynamo.reset()
        compiled = torch.compile(eager_rope, dynamic=False)
        fns["compile"] = lambda i: compiled(qs[i], ks[i], cos_cache, sin_cache, positions[i])
    if device == "cuda":

        def generic(i: int) -> None:
            previous = yarn_ext._set_cuda_token_path(False)
            try:
                rope.rotate_(qs[i], ks[i], columns[i])
            finally:
                yarn_ext._set_cuda_token_path(previous)

        fns["generic"] = generic
        for name, fn in optional_peers(cache).items():
            fns[name] = lambda i, fn=fn: fn(qs[i], ks[i], positions[i])

    result: dict = {"dtype": str(dtype).removeprefix("torch."), "tokens": tokens}
    result["bytes"] = bytes_moved
    with torch._dynamo.config.patch(error_on_recompile=True):
        medians = median_seconds(fns, sets, device, min_time, batch=batch)
    for name, seconds in medians.items():
        result[f"{name}_us"] = seconds * 1e6
        result[f"{name}_gbps"] = bytes_moved / seconds / 1e9
    return result


def bench_one_token_call(device: str, rope: yarn_ext.YarnEmbedding, dtype: torch.dtype) -> float:
    """Microseconds per rope.rotate_ call on one token (decode), data in cache as it is right
    after the q/k projection: what a call costs beyond moving its 20 KB."""
    q = torch.randn(1, HEADS_Q, HEAD_DIM, device=device, dtype=dtype)
    k = torch.randn(1, HEADS_K, HEAD_DIM, device=device, dtype=dtype)
    positions = torch.tensor([[4095]], device=device)
    times = median_seconds(
        {"call": lambda _: rope.rotate_(q, k, positions)}, 1, device, 0.2, min_rounds=20, batch=100
    )
    return times["call"] * 1e6
