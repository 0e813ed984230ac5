"""yarn_ext's benchmark suite: one run, one table, JSON and PNG plots.

    python -m benchmarks.run --device cpu            # or --device cuda
    python -m benchmarks.run --device cpu --quick    # a smoke run: small sizes, short timings

Measures, in one run, so that every ratio compares figures taken side by side:
  - in-place q+k rotation throughput against tokens: yarn_ext, eager PyTorch, torch.compile,
    the copy of the same bytes (the roofline) and, on CUDA, FlashInfer / Liger-Kernel if installed;
  - MRoPE (the Qwen3.5 and Qwen3-VL shapes, benchmarks/mrope.py) beside plain RoPE and
    transformers' eager MRoPE path;
  - the serving step fused (rotate_store_kv, benchmarks/kv_store.py) beside the same work as
    separate steps and the copy of its bytes;
  - cos/sin cache construction time against length: yarn_ext and the float32 construction;
  - max |error| of cos/sin against float64 math by position up to 2^20 (on the CPU; the tables
    are the same on every device).
Writes results.md, results.json, throughput.png, construction.png and accuracy.png to --out
(default benchmarks/results/DEVICE) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

import yarn_ext

from .accuracy import error_by_position
from .common import BASE, HEAD_DIM, ORIGINAL, SCALE, machine
from .construction import bench_construction
from .kv_store import bench_kv_store, kv_store_table
from .layouts import bench_layouts, layout_table
from .mrope import SHAPES, bench_mrope, mrope_table
from .rotation import MAX_POSITION, bench_one_token_call, bench_rotation

HEADLINE_TOKENS = 4096
CACHE_LENGTH = 131072
SETTINGS = {
    # device: (dtypes, tokens, cache lengths, tokens of the layout table)
    "cpu": (
        [torch.bfloat16, torch.float32],
        [1, 4, 16, 64, 256, 1024, 4096, 16384],
        [1024, 4096, 16384, 65536, 131072],
        [4096, 16384],
    ),
    "cuda": (
        [torch.bfloat16, torch.float16],
        [1, 16, 1024, 16384, 131072],
        [1024, 16384, 131072, 1048576],
        [],
    ),
}
QUICK = ([torch.float32], [1, 64], [1024, 4096], [64])
# tokens of the MRoPE table (bfloat16)
MROPE_TOKENS = {"cpu": [16, 256, 4096], "cuda": [16, 4096, 16384]}
MROPE_QUICK = [16]
# tokens of the serving table (rotate_store_kv, bfloat16)
KV_STORE_TOKENS = {"cpu": [1, 16, 256, 4096], "cuda": [1, 16, 256, 4096, 16384, 131072]}
KV_STORE_QUICK = [16]
LAYOUT_DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def rotation_table(rows: list[dict]) -> list[str]:
    names = [
        n
        for n in ("yarn_ext", "generic", "copy", "eager", "compile", "flashinfer", "liger")
        if any(f"{n}_us" in r for r in rows)
    ]
    generic = "generic" in names
    head = [
        "dtype",
        "tokens",
        *[f"{n} us" for n in names],
        "yarn_ext GB/s",
        "% of copy",
        *(["generic % of copy"] if generic else []),
        "x eager",
        "x compile",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = r["yarn_ext_us"]
        cells = [r["dtype"], str(r["tokens"])]
        cells += [f"{r[n + '_us']:.1f}" if n + "_us" in r else "-" for n in names]
        cells += [
            f"{r['yarn_ext_gbps']:.1f}",
            f"{100 * r['copy_us'] / ours:.0f}%",
            *([f"{100 * r['copy_us'] / r['generic_us']:.0f}%"] if generic else []),
            f"{r['eager_us'] / ours:.1f}" if "eager_us" in r else "-",
            f"{r['compile_us'] / ours:.1f}" if "compile_us" in r else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def headline(
    rows: list[dict],
    calls: dict[str, float],
    construction: list[dict],
    accuracy: list[dict],
    layouts: list[dict],
    mrope: list[dict],
    kv_store: list[dict],
) -> list[str]:
    """The issue's targets, as measured: at HEADLINE_TOKENS (or the largest measured), the
    one-token call, MRoPE against plain RoPE and transformers, the cache at CACHE_LENGTH (or the
    largest) and the error at the top position."""
    lines = ["| figure | measured |", "|---|---|"]
    for dtype in sorted({r["dtype"] for r in rows}):
        series = [r for r in rows if r["dtype"] == dtype]
        big = min(series, key=lambda r: abs(r["tokens"] - HEADLINE_TOKENS))
        ours = big["yarn_ext_us"]
        text = (
            f"{big['yarn_ext_gbps']:.1f} GB/s = {100 * big['copy_us'] / ours:.0f}% of the "
            f"copy ({big['copy_gbps']:.1f} GB/s)"
        )
        if "eager_us" in big:
            text += f"; {big['eager_us'] / ours:.1f}x eager"
        if "compile_us" in big:
            text += f"; {big['compile_us'] / ours:.1f}x torch.compile"
        lines.append(f"| {dtype}, {big['tokens']} tokens, in-place q+k | {text} |")
        lines.append(f"| {dtype}, one-token rotate_ call, data in cache | {calls[dtype]:.1f} us |")
    for dtype in dict.fromkeys(r["dtype"] for r in layouts):
        series = [r for r in layouts if r["dtype"] == dtype]
        worst = min(series, key=lambda r: r["copy_us"] / r["yarn_ext_us"])
        lines.append(
            f"| {dtype}, in place, every layout ({len(series)} runs) | at least "
            f"{100 * worst['copy_us'] / worst['yarn_ext_us']:.0f}% of the copy (lowest: "
            f"{worst['layout']}, {worst['tokens']} tokens) |"
        )
    for shape in dict.fromkeys(r["shape"] for r in mrope):
        series = [r for r in mrope if r["shape"] == shape]
        big = min(series, key=lambda r: abs(r["tokens"] - HEADLINE_TOKENS))
        text = (
            f"{big['mrope_us'] / big['rope_us']:.2f}x plain RoPE's time (image positions), "
            f"{big['scattered_us'] / big['rope_us']:.2f}x (scattered)"
        )
        if "transformers_us" in big:
            text += f"; {big['transformers_us'] / big['mrope_us']:.1f}x transformers' eager MRoPE"
        lines.append(f"| {shape} MRoPE, {big['tokens']} tokens, in-place q+k | {text} |")
    if kv_store:
        big = min(kv_store, key=lambda r: abs(r["tokens"] - HEADLINE_TOKENS))
        lines.append(
            f"| rotate_store_kv (norm + rotation + paged cache write), {big['tokens']} tokens, "
            f"{big['dtype']} | {100 * big['copy_us'] / big['fused_us']:.0f}% of the copy; "
            f"{big['separate_us'] / big['fused_us']:.1f}x the separate steps |"
        )
    cache = max(construction, key=lambda r: r["length"])
    lines.append(
        f"| cache {cache['length']} x {HEAD_DIM} | {cache['yarn_ext_us'] / 1e3:.2f} ms vs float32 "
        f"construction {cache['float32_us'] / 1e3:.2f} ms: "
        f"{cache['float32_us'] / cache['yarn_ext_us']:.1f}x faster |"
    )
    top = accuracy[-1]
    lines.append(
        f"| max error, positions {top['positions'][0]}..{top['positions'][1]} | yarn_ext "
        f"{top['yarn_ext']:.1e}, float32 angles {top['float32']:.1e}: "
        f"{top['float32'] / top['yarn_ext']:.0f}x more accurate |"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/DEVICE")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes")
    parser.add_argument("--tokens", type=int, nargs="*", help="token counts to measure")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile line")
    parser.add_argument(
        "--dtypes",
        nargs="*",
        choices=["bfloat16", "float16", "float32", "float64"],
        help="dtypes of the q+k rotation to measure",
    )
    args = parser.parse_args()
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks.run: --device cuda needs a CUDA device")
    out = args.out or Path(__file__).parent / "results" / device
    out.mkdir(parents=True, exist_ok=True)
    dtypes, tokens, lengths, layout_tokens = QUICK if args.quick else SETTINGS[device]
    tokens = args.tokens or tokens
    if args.dtypes:
        dtypes = [getattr(torch, name) for name in args.dtypes]
    min_time = 0.02 if args.quick else 0.3
    caption = f"{machine(device)}; torch {torch.__version__}, yarn_ext {yarn_ext.__version__}"
    print(caption, flush=True)

    # Qwen3's frequencies; attention_factor 1 keeps the rotation norm-preserving, so inputs
    # rotated in place many times stay finite.
    rope = yarn_ext.YarnEmbedding(
        HEAD_DIM,
        max_position_embeddings=MAX_POSITION,
        base=BASE,
        original_max_position_embeddings=ORIGINAL,
        scaling_factor=SCALE,
        finetuned=True,
        device=device,
        attention_factor=1.0,
    )
    rows = []
    for dtype in dtypes:
        for n in tokens:
            rows.append(bench_rotation(device, dtype, n, rope, not args.no_compile, min_time))
            print(rotation_table(rows[-1:])[-1], flush=True)
    calls = {
        str(dtype).removeprefix("torch."): bench_one_token_call(device, rope, dtype)
        for dtype in dtypes
    }
    layout_dtypes = dtypes if args.quick else LAYOUT_DTYPES
    layouts = [
        row
        for n in layout_tokens
        for row in bench_layouts(device, layout_dtypes, n, rope, min_time)
    ]
    if layouts:
        print("\n".join(layout_table(layouts)), flush=True)
    mrope = [
        bench_mrope(device, torch.bfloat16, n, shape, min_time)
        for shape in SHAPES
        for n in (MROPE_QUICK if args.quick else MROPE_TOKENS[device])
    ]
    print("\n".join(mrope_table(mrope)), flush=True)
    kv_store = [
        bench_kv_store(device, torch.bfloat16, n, min_time)
        for n in (KV_STORE_QUICK if args.quick else KV_STORE_TOKENS[device])
    ]
    print("\n".join(kv_store_table(kv_store)), flush=True)
    construction = bench_construction(device, lengths, min_time)
    top = 2**12 if args.quick else 2**20
    accuracy = error_by_position(HEAD_DIM, BASE, SCALE, ORIGINAL, top=top)

    text = [
        f"# yarn_ext benchmarks, {device}",
        "",
        caption,
        "",
        "## Headline",
        "",
        *headline(rows, calls, construction, accuracy, layouts, mrope, kv_store),
        "",
        "## In-place q+k rotation (32 q + 8 k heads, head_dim 128, random positions)",
        "",
        *rotation_table(rows),
        "",
        *(
            [
                "## In-place rotation by layout (2 sequences, 32 heads, head_dim 128)",
                "",
                *layout_table(layouts),
                "",
            ]
            if layouts
            else []
        ),
        "## MRoPE beside plain RoPE (in place, q+k, bfloat16)",
        "",
        "Qwen3.5: 16 q + 4 kv heads, head_dim 256, rotary dim 64, sections [11, 11, 10] "
        "interleaved; Qwen3-VL: 32 q + 8 kv heads, head_dim 128, sections [24, 20, 20] "
        "interleaved. RoPE: the same call with plain random positions. MRoPE: image positions "
        "(patch grids of up to 32 x 32); scattered: a random t per token with h and w near it "
        "(three cache misses per token). transformers: its rotary class and apply function. The "
        "copy moves the rotated features of q and k.",
        "",
        *mrope_table(mrope),
        "",
        "## Serving: norm, rotation and paged KV-cache write fused (rotate_store_kv, bfloat16)",
        "",
        "Qwen3-8B's attention: 32 q + 8 kv heads, head_dim 128; q, k and v slices of one fused "
        "qkv, random positions, each token at a random row of a paged cache (blocks of 16). "
        "fused: rotate_store_kv_ with both norm weights; separate: torch.rms_norm on q and k, "
        "yarn_ext's rotate_, the cache write by indexing; copy: q, k and v read once, q and the k "
        "and v rows written once.",
        "",
        *kv_store_table(kv_store),
        "",
        "## Cache construction (head_dim 128)",
        "",
        "| positions | yarn_ext ms | float32 construction ms | speed-up |",
        "|---|---|---|---|",
        *[
            f"| {r['length']} | {r['yarn_ext_us'] / 1e3:.3f} | {r['float32_us'] / 1e3:.3f} | "
            f"{r['float32_us'] / r['yarn_ext_us']:.1f}x |"
            for r in construction
        ],
        "",
        "## Max |error| of cos/sin against float64, Qwen3 YaRN (theta 1e6, factor 4)",
        "",
        "| positions | yarn_ext | float32 angles |",
        "|---|---|---|",
        *[
            f"| {r['positions'][0]}..{r['positions'][1]} | {r['yarn_ext']:.1e} | "
            f"{r['float32']:.1e} |"
            for r in accuracy
        ],
        "",
    ]
    (out / "results.md").write_text("\n".join(text))
    (out / "results.json").write_text(
        json.dumps(
            {
                "device": device,
                "machine": machine(device),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "yarn_ext": yarn_ext.__version__,
                "rotation": rows,
                "layouts": layouts,
                "mrope": mrope,
                "kv_store": kv_store,
                "one_token_call_us": calls,
                "construction": construction,
                "accuracy": accuracy,
            },
            indent=2,
        )
    )
    print("\n".join(text))
    written = ["results.md", "results.json"]
    try:
        from . import plots
    except ImportError:  # a bare GPU machine: the table and JSON still count
        print("matplotlib is not installed: no plots (pip install matplotlib)")
    else:
        plots.throughput(rows, caption, out / "throughput.png")
        plots.construction(construction, caption, out / "construction.png")
        plots.accuracy(accuracy, "Qwen3 YaRN (theta 1e6, factor 4)", out / "accuracy.png")
        written += ["throughput.png", "construction.png", "accuracy.png"]
    print(f"wrote {', '.join(written)} to {out}")


if __name__ == "__main__":
    main()
