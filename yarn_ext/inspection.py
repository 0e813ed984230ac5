"""`python -m yarn_ext inspect CONFIG.json [--plot FILE.png]`: the YaRN parameters a transformers
config.json derives (as YarnEmbedding.from_hf_config reads it), for model builders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from yarn_ext import _C
from yarn_ext.helpers import (
    find_correction_dim,
    find_correction_range,
    linear_ramp_mask,
    yarn_inv_freq,
)
from yarn_ext.hf_config import HFYarnParameters, hf_yarn_parameters

CHART_ROWS = 4  # height of the text chart of the ramp


def yarn_frequencies(p: HFYarnParameters) -> torch.Tensor:
    """The config's YaRN inv_freq (float64), as YarnEmbedding.from_hf_config has it."""
    return yarn_inv_freq(
        p.dim,
        p.base,
        p.scale,
        p.original_max_position_embeddings,
        1.0,
        p.beta_fast,
        p.beta_slow,
        truncate=p.truncate,
    )


def correction_range(p: HFYarnParameters) -> tuple[float, float]:
    return find_correction_range(
        p.beta_fast,
        p.beta_slow,
        p.dim,
        p.base,
        p.original_max_position_embeddings,
        truncate=p.truncate,
    )


def _extrapolation_mask(p: HFYarnParameters) -> torch.Tensor:
    """m_i: 1 where frequency i keeps its original value, 0 where it is divided by the scale -
    one minus the linear ramp over the correction range, as the frequencies are blended."""
    low, high = correction_range(p)
    return 1 - linear_ramp_mask(low, high, p.dim // 2).double()


def ramp_chart(mask: torch.Tensor) -> list[str]:
    """A text chart of m_i against the frequency index i (one column per frequency)."""
    heights = [round(float(m) * CHART_ROWS) for m in mask]
    lines = []
    for row in range(CHART_ROWS, 0, -1):
        label = f"{row / CHART_ROWS:4.2f}" if row in (CHART_ROWS, CHART_ROWS // 2) else "    "
        bars = "".join("#" if h >= row else " " for h in heights)
        lines.append(f"  {label} |{bars}".rstrip())
    lines.append("  0.00 +" + "-" * len(heights))
    ticks = "".join(str(i // 10 % 10) if i % 10 == 0 else " " for i in range(len(heights)))
    lines.append("        " + ticks + "  (frequency index i, tens)")
    return lines


def mrope_lines(p: HFYarnParameters) -> list[str]:
    """The MRoPE layout: which position (t, h, w) each frequency turns with, as the kernels
    read it, ten frequencies to a group."""
    if p.mrope_section is None:
        return []
    half = p.dim // 2
    components = _C.mrope_components(list(p.mrope_section), p.mrope_interleaved, half)
    letters = "".join("thw"[c] for c in components)
    groups = " ".join(letters[i : i + 10] for i in range(0, half, 10))
    style = "interleaved (t, h, w, t, ...)" if p.mrope_interleaved else "contiguous"
    return [
        f"MRoPE: sections {list(p.mrope_section)} (t, h, w), {style}; positions [3, ...]",
        f"  frequency 0..{half - 1}: {groups}",
    ]


def softmax_lines(p: HFYarnParameters) -> list[str]:
    if p.softmax_scale_factor == 1.0:
        return []
    return [
        f"softmax scale factor (mscale_all_dim): {p.softmax_scale_factor!r} - the attention's "
        "1/sqrt(head_dim) is multiplied by it (YarnEmbedding.softmax_scale_factor)"
    ]


def describe_plain(p: HFYarnParameters, source: str) -> list[str]:
    half = p.dim // 2
    cache_bytes = p.max_position_embeddings * p.dim * 4
    inv_freq = yarn_inv_freq(p.dim, p.base, 1.0, p.original_max_position_embeddings)
    return [
        f"config: {source}",
        f"plain RoPE (no YaRN): rotary dim {p.dim} ({half} frequencies); rope_theta: "
        f"{p.base:g}; pairs: " + ("interleaved (GPT-J)" if p.interleaved else "rotate_half (NeoX)"),
        *mrope_lines(p),
        f"max_position_embeddings {p.max_position_embeddings}; wavelengths: "
        f"{2 * math.pi / float(inv_freq[0]):.3g} to {2 * math.pi / float(inv_freq[-1]):.3g} "
        "positions",
        f"cos/sin cache: {p.max_position_embeddings} positions x {p.dim} float32 = "
        f"{cache_bytes:,} bytes ({cache_bytes / 2**20:.1f} MiB); inv_freq: {half} float64 = "
        f"{half * 8} bytes",
    ]


def describe(config: dict, source: str) -> list[str]:
    p = hf_yarn_parameters(config)
    if not p.yarn:
        return describe_plain(p, source)
    low, high = correction_range(p)
    low_exact = find_correction_dim(p.beta_fast, p.dim, p.base, p.original_max_position_embeddings)
    high_exact = find_correction_dim(p.beta_slow, p.dim, p.base, p.original_max_position_embeddings)
    mask = _extrapolation_mask(p)
    inv_freq = yarn_frequencies(p)
    cache_bytes = p.max_position_embeddings * p.dim * 4
    half = p.dim // 2
    kept = int((mask >= 1).sum())
    divided = int((mask <= 0).sum())
    return [
        f"config: {source}",
        f"rotary dim: {p.dim} ({half} frequencies); rope_theta: {p.base:g}; pairs: "
        + ("interleaved (GPT-J)" if p.interleaved else "rotate_half (NeoX)"),
        f"scale: {p.scale:g} over original_max_position_embeddings "
        f"{p.original_max_position_embeddings}; max_position_embeddings "
        f"{p.max_position_embeddings}",
        f"correction range: beta_fast {p.beta_fast:g} -> dim {low_exact:.3f}, beta_slow "
        f"{p.beta_slow:g} -> dim {high_exact:.3f}; "
        + (f"truncated to [{low}, {high}]" if p.truncate else f"kept as [{low:.3f}, {high:.3f}]"),
        *mrope_lines(p),
        f"attention factor (mscale, multiplies cos and sin): {p.attention_factor!r}",
        *softmax_lines(p),
        f"frequencies kept: {kept}, divided by the scale: {divided}, blended: "
        f"{half - kept - divided}",
        f"wavelengths: {2 * math.pi / float(inv_freq[0]):.3g} to "
        f"{2 * math.pi / float(inv_freq[-1]):.3g} positions",
        "ramp m_i (1: original frequency kept, 0: divided by the scale):",
        *ramp_chart(mask),
        f"cos/sin cache: {p.max_position_embeddings} positions x {p.dim} float32 = "
        f"{cache_bytes:,} bytes ({cache_bytes / 2**20:.1f} MiB); inv_freq: {half} float64 = "
        f"{half * 8} bytes",
    ]


def plot(config: dict, path: Path) -> None:
    """inv_freq against the frequency index, plain RoPE and YaRN, log scale."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise SystemExit("--plot needs matplotlib (pip install matplotlib)") from error
    p = hf_yarn_parameters(config)
    rope = yarn_inv_freq(p.dim, p.base, 1.0, p.original_max_position_embeddings)
    yarn = yarn_frequencies(p)
    index = range(p.dim // 2)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(index, rope.tolist(), "-", color="tab:blue", label=f"plain RoPE (theta {p.base:g})")
    ax.plot(index, yarn.tolist(), "-", color="tab:red", label=f"YaRN (scale {p.scale:g})")
    ax.set_yscale("log")
    ax.set_xlabel("frequency index i (dimension 2i)")
    ax.set_ylabel("inv_freq (radians per position)")
    ax.set_title("inv_freq against dimension")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def inspect(path: Path, plot_path: Path | None) -> int:
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise SystemExit(f"inspect: cannot read {path}: {error}") from error
    try:
        lines = describe(config, str(path))
    except (TypeError, ValueError) as error:
        raise SystemExit(f"inspect: {path}: {error}") from error
    print("\n".join(lines))
    if plot_path is not None:
        plot(config, plot_path)
        print(f"plot: {plot_path}")
    return 0
