"""In-place rotation by layout: [T, H, D] and the [B, S, H, D] / [B, H, S, D] layouts that
transformers-style models pass, with explicit and implicit positions, each against a same-run
copy of the same bytes.

A call rotates q (B = 2 sequences of S tokens, 32 heads, head_dim 128) in place; the copy copies
the same q into an existing buffer of its own layout (`copy_`), so both move the same bytes.
Inputs cycle through enough sets to exceed the last-level cache; each row is the median of three
repetitions on fresh tensors."""

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


def _time_layout(
    device: str,
    dtype: torch.dtype,
    seq: int,
    sets: int,
    generator: torch.Generator,
    layout: str,
    rope: yarn_ext.YarnEmbedding,
    min_time: float,
) -> dict[str, float]:
    """yarn_ext's and the copy's median time on fresh tensors of one layout."""
    make, make_positions = LAYOUTS[layout]
    shape = (BATCH, seq, HEADS, HEAD_DIM)
    qs = [
        make(torch.randn(shape, device=device, dtype=dtype, generator=generator))
        for _ in range(sets)
    ]
    copies = [torch.zeros_like(q) for q in qs]  # touched: no page faults while timed
    # positions as a model passes them: each sequence counts 0..S-1
    pos = make_positions(torch.arange(seq, device=device).expand(BATCH, seq))

    def copy(i: int) -> None:
        copies[i].copy_(qs[i])

    def rotate(i: int) -> None:
        rope.rotate_(qs[i], None, pos)

    return median_seconds({"copy": copy, "yarn_ext": rotate}, sets, device, min_time)


def bench_layouts(
    device: str,
    dtypes: list[torch.dtype],
    tokens: int,
    rope: yarn_ext.YarnEmbedding,
    min_time: float,
    repeats: int = 3,
) -> list[dict]:
    """One row per (layout, dtype): yarn_ext's time, the copy's and their ratio, from the
    repetition (fresh tensors each) whose ratio is the median of `repeats`. The development
    machine's memory speed changes from one allocation to the next (one row out of a run slow
    by 3x, its neighbours not); the median of fresh repetitions keeps one such row from deciding
    the figure. Every repetition's ratio is kept in the row."""
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
        for layout in LAYOUTS:
            runs = [
                _time_layout(device, dtype, seq, sets, generator, layout, rope, min_time)
                for _ in range(repeats)
            ]
            runs.sort(key=lambda t: t["copy"] / t["yarn_ext"])
            times = runs[len(runs) // 2]
            rows.append(
                {
                    "layout": layout,
                    "dtype": str(dtype).removeprefix("torch."),
                    "tokens": BATCH * seq,
                    "bytes": moved,
                    "yarn_ext_us": times["yarn_ext"] * 1e6,
                    "copy_us": times["copy"] * 1e6,
                    "of_copy_each_repeat": [t["copy"] / t["yarn_ext"] for t in runs],
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
