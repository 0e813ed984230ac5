"""MRoPE beside plain RoPE, in one run: in-place q+k rotation of the Qwen3.5 and Qwen3-VL
shapes with image-token positions (t, h and w differ for every token: the MRoPE kernels' slower
case), against the same call with plain positions, transformers' eager MRoPE path (its rotary
class and apply function, when transformers is installed) and a copy of the same bytes.

Plain RoPE gets a random position per token, as the rotation benchmark does (every token's
cache row a miss). MRoPE gets two patterns:
  - image: the tokens are images of up to 32 x 32 patches, each at a random start s: t = s,
    h = s + row, w = s + column (transformers' get_rope_index), so a token's three rows are
    shared with its image's other tokens;
  - scattered: a random t per token and h, w within 64 of it - three cache rows per token, each
    a miss: the worst case."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

import yarn_ext

from .common import median_seconds

MAX_POSITION = 32768 + 64


@dataclass(frozen=True)
class Shape:
    name: str
    heads_q: int
    heads_k: int
    head_dim: int
    dim: int  # rotary dim
    base: float
    sections: tuple[int, int, int]
    model: str  # transformers' model module, for its rotary class and apply function


SHAPES = [
    # Qwen3.5 (27B and the MoE's attention): a quarter of a 256-wide head rotated
    Shape("Qwen3.5", 16, 4, 256, 64, 1e7, (11, 11, 10), "qwen3_5"),
    # Qwen3-VL-8B
    Shape("Qwen3-VL", 32, 8, 128, 128, 5e6, (24, 20, 20), "qwen3_vl"),
]


def transformers_path(
    shape: Shape, device: str
) -> Callable[[Tensor, Tensor, Tensor], object] | None:
    """transformers' eager MRoPE: rotary class (cos, sin) then apply_rotary_pos_emb, on q and k
    as its attention holds them ([1, H, T, D] views); None without transformers."""
    import importlib

    prefix = {"qwen3_5": "Qwen3_5", "qwen3_vl": "Qwen3VL"}[shape.model]
    try:  # (a transformers too old for this family: no such column)
        transformers = importlib.import_module("transformers")
        modeling = importlib.import_module(
            f"transformers.models.{shape.model}.modeling_{shape.model}"
        )
        config_cls = getattr(transformers, f"{prefix}TextConfig")
        rotary_cls = getattr(modeling, f"{prefix}TextRotaryEmbedding")
    except (ImportError, AttributeError):
        return None
    config = config_cls(
        head_dim=shape.head_dim,
        num_attention_heads=shape.heads_q,
        num_key_value_heads=shape.heads_k,
        max_position_embeddings=MAX_POSITION,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": shape.base,
            "mrope_section": list(shape.sections),
            "mrope_interleaved": True,
            "partial_rotary_factor": shape.dim / shape.head_dim,
        },
    )
    rotary = rotary_cls(config).to(device)

    def run(q: Tensor, k: Tensor, positions: Tensor) -> object:
        # positions [3, T] -> position_ids [3, 1, T]; q [T, H, D] -> [1, H, T, D]
        cos, sin = rotary(q, positions[:, None, :])
        return modeling.apply_rotary_pos_emb(
            q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin
        )

    return run


def bench_mrope(
    device: str, dtype: torch.dtype, tokens: int, shape: Shape, min_time: float
) -> dict:
    element = torch.finfo(dtype).bits // 8
    # the bytes an in-place rotation moves: the rotary part of q and k, read and written
    bytes_moved = 2 * tokens * (shape.heads_q + shape.heads_k) * shape.dim * element
    floor = 512 * 2**20 if device == "cuda" else 96 * 2**20  # past L2 (GPU) or L3 (CPU)
    sets = max(2, min(512, math.ceil(floor / bytes_moved)))
    generator = torch.Generator(device=device).manual_seed(tokens)

    def randn(*size: int) -> Tensor:
        return torch.randn(*size, device=device, dtype=dtype, generator=generator)

    qs = [randn(tokens, shape.heads_q, shape.head_dim) for _ in range(sets)]
    ks = [randn(tokens, shape.heads_k, shape.head_dim) for _ in range(sets)]
    # the copy moves the rotated features alone, as the rotation does
    q_parts = [q[..., : shape.dim] for q in qs]
    k_parts = [k[..., : shape.dim] for k in ks]
    q_copies = [torch.zeros_like(q) for q in q_parts]
    k_copies = [torch.zeros_like(k) for k in k_parts]
    side = min(32, math.isqrt(tokens))  # image side, in patches
    index = torch.arange(tokens, device=device)
    patch = index % (side * side)
    images, scattered, plain_positions = [], [], []
    for _ in range(sets):
        starts = torch.randint(0, 32768 - 64, (tokens,), device=device, generator=generator)
        start = starts[index // (side * side)]  # one start per image
        images.append(torch.stack([start, start + patch // side, start + patch % side]))
        t = torch.randint(0, 32768, (tokens,), device=device, generator=generator)
        hw = torch.randint(0, 64, (2, tokens), device=device, generator=generator)
        scattered.append(torch.stack([t, t + hw[0], t + hw[1]]))
        plain_positions.append(
            torch.randint(0, 32768, (tokens, 1), device=device, generator=generator)
        )
    image_positions = [p[:, :, None] for p in images]  # [3, T, 1]
    scattered_positions = [p[:, :, None] for p in scattered]
    common = {
        "max_position_embeddings": MAX_POSITION,
        "base": shape.base,
        "device": device,
    }
    plain = yarn_ext.YarnEmbedding(shape.dim, **common)
    mrope = yarn_ext.YarnEmbedding(
        shape.dim, mrope_section=list(shape.sections), mrope_interleaved=True, **common
    )

    def copy(i: int) -> None:
        q_copies[i].copy_(q_parts[i])
        k_copies[i].copy_(k_parts[i])

    fns: dict[str, Callable[[int], object]] = {
        "copy": copy,
        "rope": lambda i: plain.rotate_(qs[i], ks[i], plain_positions[i]),
        "mrope": lambda i: mrope.rotate_(qs[i], ks[i], image_positions[i]),
        "scattered": lambda i: mrope.rotate_(qs[i], ks[i], scattered_positions[i]),
    }
    theirs = transformers_path(shape, device)
    if theirs is not None:
        fns["transformers"] = lambda i: theirs(qs[i], ks[i], images[i])
    batch = 20 if tokens <= 16 else 1
    medians = median_seconds(fns, sets, device, min_time, batch=batch)
    result: dict = {
        "shape": shape.name,
        "dtype": str(dtype).removeprefix("torch."),
        "tokens": tokens,
        "bytes": bytes_moved,
    }
    for name, seconds in medians.items():
        result[f"{name}_us"] = seconds * 1e6
    return result


def mrope_table(rows: list[dict]) -> list[str]:
    head = [
        "shape",
        "dtype",
        "tokens",
        "copy us",
        "RoPE us",
        "MRoPE us",
        "scattered us",
        "transformers us",
        "MRoPE / RoPE",
        "scattered / RoPE",
        "x transformers",
        "MRoPE % of copy",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        theirs = r.get("transformers_us")
        lines.append(
            "| "
            + " | ".join(
                [
                    r["shape"],
                    r["dtype"],
                    str(r["tokens"]),
                    f"{r['copy_us']:.1f}",
                    f"{r['rope_us']:.1f}",
                    f"{r['mrope_us']:.1f}",
                    f"{r['scattered_us']:.1f}",
                    "-" if theirs is None else f"{theirs:.1f}",
                    f"{r['mrope_us'] / r['rope_us']:.2f}",
                    f"{r['scattered_us'] / r['rope_us']:.2f}",
                    "-" if theirs is None else f"{theirs / r['mrope_us']:.1f}",
                    f"{100 * r['copy_us'] / r['mrope_us']:.0f}%",
                ]
            )
            + " |"
        )
    return lines
