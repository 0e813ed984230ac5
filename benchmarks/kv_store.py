"""The serving step fused (rotate_store_kv: QK-RMSNorm, rotation, paged KV-cache write) beside
the same work as separate steps and a copy of the same bytes, in one run. Qwen3-8B's attention
(32 q + 8 kv heads, head_dim 128), bfloat16, q, k and v slices of one fused qkv projection,
random positions, each token's slot at a random row of a paged cache (blocks of 16).

  - fused: YarnEmbedding.rotate_store_kv_ with both norm weights;
  - separate: torch.rms_norm on q and k, yarn_ext's rotate_, and the cache write by indexing;
  - copy: q, k and v read once, q and the k and v rows written once (copy_ into other buffers).

The fused call normalizes q in place; each set's q is restored after it, untimed, so that every
call meets a projection's values, as in use (the norm applied to its own output again and again
would drive the features of the smaller weights toward zero)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

import yarn_ext

from .common import median_seconds

HEADS_Q, HEADS_KV, HEAD_DIM = 32, 8, 128
BLOCK_SIZE = 16


def bench_kv_store(device: str, dtype: torch.dtype, tokens: int, min_time: float) -> dict:
    element = torch.finfo(dtype).bits // 8
    # q, k and v read; q, the k rows and the v rows written
    bytes_moved = 2 * tokens * (HEADS_Q + 2 * HEADS_KV) * HEAD_DIM * element
    floor = 512 * 2**20 if device == "cuda" else 96 * 2**20  # past L2 (GPU) or L3 (CPU)
    sets = max(2, min(64, math.ceil(floor / bytes_moved)))
    generator = torch.Generator(device=device).manual_seed(tokens)
    width = (HEADS_Q + 2 * HEADS_KV) * HEAD_DIM
    q_end, k_end = HEADS_Q * HEAD_DIM, (HEADS_Q + HEADS_KV) * HEAD_DIM
    qkv = [
        torch.randn(tokens, width, device=device, dtype=dtype, generator=generator)
        for _ in range(sets)
    ]
    q = [x[:, :q_end].view(tokens, HEADS_Q, HEAD_DIM) for x in qkv]
    k = [x[:, q_end:k_end].view(tokens, HEADS_KV, HEAD_DIM) for x in qkv]
    v = [x[:, k_end:].view(tokens, HEADS_KV, HEAD_DIM) for x in qkv]
    blocks = (tokens + BLOCK_SIZE - 1) // BLOCK_SIZE + 4
    shape = (blocks, BLOCK_SIZE, HEADS_KV, HEAD_DIM)
    k_caches = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(sets)]
    v_caches = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(sets)]
    positions = [
        torch.randint(0, 32768, (tokens,), device=device, generator=generator) for _ in range(sets)
    ]
    slots = [
        torch.randperm(blocks * BLOCK_SIZE, device=device, generator=generator)[:tokens]
        for _ in range(sets)
    ]
    q_weight = torch.rand(HEAD_DIM, device=device, dtype=dtype, generator=generator) + 0.5
    k_weight = torch.rand(HEAD_DIM, device=device, dtype=dtype, generator=generator) + 0.5
    q_out = [torch.empty_like(x) for x in q]
    q_fresh = [x.clone() for x in q]
    rope = yarn_ext.YarnEmbedding(HEAD_DIM, max_position_embeddings=40960, device=device)

    def fused(i: int) -> None:
        rope.rotate_store_kv_(
            q[i],
            k[i],
            v[i],
            positions[i],
            k_caches[i],
            v_caches[i],
            slots[i],
            q_norm_weight=q_weight,
            k_norm_weight=k_weight,
        )

    def separate(i: int) -> None:
        q_normed = torch.rms_norm(q[i], (HEAD_DIM,), q_weight, 1e-6)
        k_normed = torch.rms_norm(k[i], (HEAD_DIM,), k_weight, 1e-6)
        rope.rotate_(q_normed, k_normed, positions[i][:, None])
        k_caches[i].view(-1, HEADS_KV, HEAD_DIM)[slots[i]] = k_normed
        v_caches[i].view(-1, HEADS_KV, HEAD_DIM)[slots[i]] = v[i]

    def copy(i: int) -> None:
        q_out[i].copy_(q[i])
        k_caches[i].view(-1, HEADS_KV, HEAD_DIM)[:tokens].copy_(k[i])
        v_caches[i].view(-1, HEADS_KV, HEAD_DIM)[:tokens].copy_(v[i])

    fns: dict[str, Callable[[int], object]] = {
        "copy": copy,
        "fused": fused,
        "separate": separate,
    }
    batch = 20 if tokens <= 16 else 1
    with torch.no_grad():
        medians = median_seconds(
            fns,
            sets,
            device,
            min_time,
            batch=batch,
            refresh={"fused": lambda i: q[i].copy_(q_fresh[i])},
        )
    result: dict = {
        "dtype": str(dtype).removeprefix("torch."),
        "tokens": tokens,
        "bytes": bytes_moved,
    }
    for name, seconds in medians.items():
        result[f"{name}_us"] = seconds * 1e6
    return result


def kv_store_table(rows: list[dict]) -> list[str]:
    head = [
        "dtype",
        "tokens",
        "copy us",
        "fused us",
        "separate us",
        "fused GB/s",
        "% of copy",
        "x separate",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["dtype"],
                    str(r["tokens"]),
                    f"{r['copy_us']:.1f}",
                    f"{r['fused_us']:.1f}",
                    f"{r['separate_us']:.1f}",
                    f"{r['bytes'] / r['fused_us'] / 1e3:.1f}",
                    f"{100 * r['copy_us'] / r['fused_us']:.0f}%",
                    f"{r['separate_us'] / r['fused_us']:.1f}",
                ]
            )
            + " |"
        )
    return lines


def _main() -> None:
    rows = [bench_kv_store("cpu", torch.bfloat16, n, 1.0) for n in (1, 16, 256, 4096)]
    print("\n".join(kv_store_table(rows)))


if __name__ == "__main__":
    _main()
