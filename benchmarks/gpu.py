"""GPU benchmark: in-place q+k rotation and cache construction against the copy roofline.

    python -m benchmarks.gpu --out DIR

bf16 and fp16, 32 query and 8 key heads, head_dim 128, random positions; tokens 1 to 131072.
Every figure is a median of per-call CUDA-event times, cycling through enough input sets to
exceed L2. GB/s counts the bytes an in-place rotation must move: q and k read and written once
plus one float32 cos/sin row per token. The same-run device-to-device copy is the roofline.
Baselines: eager PyTorch (transformers' rotate_half with cos/sin gathered by position), the same
under torch.compile, and FlashInfer / Liger-Kernel when installed. Writes gpu.md and gpu.json.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import yarn_ext
from yarn_ext import ops

HEADS_Q, HEADS_K, HEAD_DIM = 32, 8, 128
TOKENS = [1, 16, 1024, 16384, 131072]
MAX_POSITION = 131072


def median_ms(fn: Callable[[int], object], sets: int, iters: int, batch: int = 1) -> float:
    """Median over `iters` samples of one call's time; each sample times `batch` back-to-back
    calls between two CUDA events (batching amortises the event and host overhead of tiny
    calls), cycling through the `sets` input sets."""
    calls = 0
    for _ in range(5 * batch):  # warm-up: compilation, caches, allocator
        fn(calls % sets)
        calls += 1
    torch.cuda.synchronize()
    pairs = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(iters)
    ]
    for start, end in pairs:
        start.record()
        for _ in range(batch):
            fn(calls % sets)
            calls += 1
        end.record()
    torch.cuda.synchronize()
    times = sorted(start.elapsed_time(end) / batch for start, end in pairs)
    return times[len(times) // 2]


def copy_bandwidth() -> float:
    """Bytes read + written per second by a large device-to-device copy."""
    src = torch.randn(2**28 // 2, device="cuda", dtype=torch.bfloat16)  # 256 MiB
    dst = torch.empty_like(src)
    ms = median_ms(lambda _: dst.copy_(src), 1, 30)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def eager_rope(
    q: Tensor, k: Tensor, cos_cache: Tensor, sin_cache: Tensor, positions: Tensor
) -> tuple[Tensor, Tensor]:
    # transformers' apply_rotary_pos_emb with cos/sin gathered for each token
    cos = cos_cache[positions].unsqueeze(1).to(q.dtype)
    sin = sin_cache[positions].unsqueeze(1).to(q.dtype)
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def optional_peers(cache: Tensor) -> dict[str, Callable[[Tensor, Tensor, Tensor], None]]:
    """Rotations from other libraries, when installed: name -> fn(q, k, positions)."""
    peers = {}
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

        def liger(q: Tensor, k: Tensor, positions: Tensor) -> None:
            # Liger wants [B, H, S, D] and per-position cos/sin rows
            cos = cos_full[positions][None].to(q.dtype)
            sin = sin_full[positions][None].to(q.dtype)
            liger_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)

        peers["liger"] = liger
    except ImportError:
        pass
    return peers


def bench_rotation(
    dtype: torch.dtype,
    tokens: int,
    roofline: float,
    rope: yarn_ext.YarnEmbedding,
    eager_compiled: Callable[..., object],
) -> dict:
    bytes_moved = 2 * tokens * (HEADS_Q + HEADS_K) * HEAD_DIM * torch.finfo(dtype).bits // 8
    bytes_moved += tokens * HEAD_DIM * 4  # one float32 cos/sin row per token
    sets = max(2, min(64, math.ceil(512 * 2**20 / bytes_moved)))  # well past L2 (50 MB)
    generator = torch.Generator(device="cuda").manual_seed(tokens)
    qs = [torch.randn(tokens, HEADS_Q, HEAD_DIM, device="cuda", dtype=dtype) for _ in range(sets)]
    ks = [torch.randn(tokens, HEADS_K, HEAD_DIM, device="cuda", dtype=dtype) for _ in range(sets)]
    positions = [
        torch.randint(0, MAX_POSITION, (tokens,), device="cuda", generator=generator)
        for _ in range(sets)
    ]
    columns = [p[:, None] for p in positions]
    iters = 100 if tokens <= 16384 else 30
    batch = 20 if tokens <= 1024 else 1
    cache = rope.cos_sin_cache
    half = HEAD_DIM // 2
    cos_cache = torch.cat((cache[:, :half], cache[:, :half]), dim=-1)
    sin_cache = torch.cat((cache[:, half:], cache[:, half:]), dim=-1)

    results = {"dtype": str(dtype).removeprefix("torch."), "tokens": tokens, "bytes": bytes_moved}
    times = {
        "yarn_ext": median_ms(lambda i: rope.rotate_(qs[i], ks[i], columns[i]), sets, iters, batch),
        "eager": median_ms(
            lambda i: eager_rope(qs[i], ks[i], cos_cache, sin_cache, positions[i]),
            sets,
            iters,
            batch,
        ),
        "compile": median_ms(
            lambda i: eager_compiled(qs[i], ks[i], cos_cache, sin_cache, positions[i]),
            sets,
            iters,
            batch,
        ),
    }
    for name, fn in optional_peers(cache).items():
        try:
            times[name] = median_ms(
                lambda i, fn=fn: fn(qs[i], ks[i], positions[i]), sets, iters, batch
            )
        except Exception as error:  # a peer's failure must not lose the table
            print(f"{name} failed at {tokens} tokens: {error}")
    for name, ms in times.items():
        results[f"{name}_us"] = ms * 1e3
        results[f"{name}_gbps"] = bytes_moved / (ms * 1e-3) / 1e9
    results["copy_fraction"] = results["yarn_ext_gbps"] * 1e9 / roofline
    return results


def bench_cache(roofline: float) -> dict:
    inv_freq = yarn_ext.yarn_inv_freq(128, 1e6, 4.0, 32768, device="cuda")
    ms = median_ms(lambda _: ops.build_cos_sin_cache(inv_freq, 131072, 1.1), 1, 50)
    written = 131072 * 128 * 4
    floor_ms = written / roofline * 1e3  # the copy moves bytes at `roofline` (read + write)

    def float32_construction(_: int) -> torch.Tensor:
        freqs = torch.outer(
            torch.arange(131072, device="cuda", dtype=torch.float32), inv_freq.float()
        )
        return torch.cat((freqs.cos() * 1.1, freqs.sin() * 1.1), dim=-1)

    f32_ms = median_ms(float32_construction, 1, 50)
    return {
        "cache_us": ms * 1e3,
        "write_floor_us": floor_ms * 1e3,
        "floor_ratio": ms / floor_ms,
        "float32_construction_us": f32_ms * 1e3,
    }


def markdown(device: str, roofline: float, rows: list[dict], cache: dict) -> str:
    own = ("yarn_ext_us", "eager_us", "compile_us")
    peers = sorted(
        {k.removesuffix("_us") for r in rows for k in r if k.endswith("_us")}
        - {k.removesuffix("_us") for k in own}
    )
    head = [
        "dtype",
        "tokens",
        "yarn_ext us",
        "GB/s",
        "% of copy",
        "eager us",
        "compile us",
        "x eager",
        "x compile",
        *[f"{p} us" for p in peers],
    ]
    lines = [
        f"GPU: {device}; same-run copy bandwidth {roofline / 1e9:.0f} GB/s",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [
            r["dtype"],
            str(r["tokens"]),
            f"{r['yarn_ext_us']:.1f}",
            f"{r['yarn_ext_gbps']:.0f}",
            f"{100 * r['copy_fraction']:.0f}%",
            f"{r['eager_us']:.1f}",
            f"{r['compile_us']:.1f}",
            f"{r['eager_us'] / r['yarn_ext_us']:.1f}",
            f"{r['compile_us'] / r['yarn_ext_us']:.1f}",
            *[f"{r[p + '_us']:.1f}" if p + "_us" in r else "failed" for p in peers],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"cache 131072 x 128: {cache['cache_us']:.1f} us, write-bound floor "
        f"{cache['write_floor_us']:.1f} us ({cache['floor_ratio']:.2f}x); float32 "
        f"construction {cache['float32_construction_us']:.1f} us",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=int, nargs="*", default=TOKENS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name()
    roofline = copy_bandwidth()
    # Qwen3's frequencies; attention_factor 1 keeps the rotation norm-preserving, so inputs
    # rotated in place a few hundred times stay finite in fp16.
    rope = yarn_ext.YarnEmbedding(
        HEAD_DIM,
        max_position_embeddings=MAX_POSITION,
        base=1e6,
        original_max_position_embeddings=32768,
        finetuned=True,
        device="cuda",
        attention_factor=1.0,
    )
    eager_compiled = torch.compile(eager_rope)
    rows = [
        bench_rotation(dtype, tokens, roofline, rope, eager_compiled)
        for dtype in (torch.bfloat16, torch.float16)
        for tokens in args.tokens
    ]
    cache = bench_cache(roofline)
    table = markdown(device, roofline, rows, cache)
    (args.out / "gpu.md").write_text(table)
    (args.out / "gpu.json").write_text(
        json.dumps(
            {
                "device": device,
                "copy_bandwidth": roofline,
                "rotation": rows,
                "cache": cache,
                "torch": torch.__version__,
            },
            indent=2,
        )
    )
    print(table)


if __name__ == "__main__":
    main()
