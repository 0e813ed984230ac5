"""In-place rotation by layout: [T, H, D] and the [B, S, H, D] / [B, H, S, D] layouts that
transformers-style models pass, with explicit and implicit positions, each against a same-run
copy of the same bytes.

A call rotates q (B = 2 sequences of S tokens, 32 heads, head_dim 128) in place; the copy copies
the same q into an existing buffer of its own layout (`copy_`), so both move the same bytes.
Inputs cycle through enough sets to exceed the last-level cache."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

import yarn_ext

from .common import HEAD_DIM, median_seconds

HEADS = 32
BATCH = 2


def _tokens(x: Tensor) -> Tensor:  # [T, H, D]
    return x.flatten(0, 1)


def _bshd(x: Tensor) -> Tensor:  # [B, S, H, D]
    return x


def _bhsd_view(x: Tensor) -> Tensor:  # [B, H, S, D] view of [B, S, H, D] memory
    return x.transpose(1, 2)


def _bhsd(x: Tensor) -> Tensor:  # contiguous [B, H, S, D]
    return x.transpose(1, 2).contiguous()


# name -> (q from [B, S, H, D] memory, its positions from [B, S] positions; None: implicit)
LAYOUTS: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor | None]]] = {
    "[T, H, D], positions [T, 1]": (_tokens, lambda p: p.flatten()[:, None]),
    "[B, S, H, D], positions [B, S, 1]": (_bshd, lambda p: p[:, :, None]),
    "[B, H, S, D] view of [B, S, H, D], implicit": (_bhsd_view, lambda p: None),
    "[B, H, S, D] view of [B, S, H, D], positions [B, 1, S]": (_bhsd_view, lambda p: p[:, None]),
    "contiguous [B, H, S, D], implicit": (_bhsd, lambda p: None),
}


def bench_layouts(
    device: str,
    dtypes: list[torch.dtype],
    tokens: int,
    rope: yarn_ext.YarnEmbedding,
    min_time: float,
) -> list[dict]:
    """One row per (layout, dtype): yarn_ext's time, the copy's, and their ratio."""
    seq = tokens // BATCH
    rows = []
    for dtype in dtypes:
        element = torch.finfo(dtype).bits // 8
        moved = 2 * BATCH * seq * HEADS * HEAD_DIM * element
        # past L2 (GPU) or well past L3 (CPU: 32 MB here; with less, what stays cached varies
        # from run to run, and with it the copy's time)
        floor = 512 * 2**20 if device == "cuda" else 384 * 2**20
        sets = max(2, min(64, math.ceil(floor / moved)))
        generator = torch.Generator(device=device).manual_seed(seq)
        # positions as a model passes them: each sequence counts 0..S-1
        positions = torch.arange(seq, device=device).expand(BATCH, seq)
        for name, (make, make_positions) in LAYOUTS.items():
            shape = (BATCH, seq, HEADS, HEAD_DIM)
            qs = [
                make(torch.randn(shape, device=device, dtype=dtype, generator=generator))
                for _ in range(sets)
            ]
            copies = [torch.zeros_like(q) for q in qs]  # touched: no page faults while timed
            pos = make_positions(positions)

            def copy(i: int, qs: list[Tensor] = qs, copies: list[Tensor] = copies) -> None:
                copies[i].copy_(qs[i])

            def rotate(i: int, qs: list[Tensor] = qs, pos: Tensor | None = pos) -> None:
                rope.rotate_(qs[i], None, pos)

            times = median_seconds({"copy": copy, "yarn_ext": rotate}, sets, device, min_time)
            rows.append(
                {
                    "layout": name,
                    "dtype": str(dtype).removeprefix("torch."),
                    "tokens": BATCH * seq,
                    "bytes": moved,
                    "yarn_ext_us": times["yarn_ext"] * 1e6,
                    "copy_us": times["copy"] * 1e6,
                }
            )
    return rows


def layout_table(rows: list[dict]) -> list[str]:
    """Rows: layout and tokens; columns: yarn_ext's time and % of the copy, per dtype."""
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    lines = [
        "| layout | tokens | " + " | ".join(f"{d} us | {d} % of copy" for d in dtypes) + " |",
        "|---|---|" + "---|---|" * len(dtypes),
    ]
    for tokens in dict.fromkeys(r["tokens"] for r in rows):
        for layout in dict.fromkeys(r["layout"] for r in rows):
            cells = []
            for d in dtypes:
                match = [
                    r for r in rows if (r["layout"], r["dtype"], r["tokens"]) == (layout, d, tokens)
                ]
                if not match:
                    cells += ["-", "-"]
                    continue
                r = match[0]
                cells += [
                    f"{r['yarn_ext_us']:.0f}",
                    f"{100 * r['copy_us'] / r['yarn_ext_us']:.0f}%",
                ]
            lines.append(f"| {layout} | {tokens} | " + " | ".join(cells) + " |")
    return lines
