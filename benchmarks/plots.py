"""PNG plots of a benchmark run (matplotlib, without a display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLES = {
    "copy": {"color": "black", "linestyle": "--", "label": "copy of the same bytes (roofline)"},
    "yarn_ext": {"color": "tab:red", "marker": "o", "label": "yarn_ext rotate_"},
    "eager": {"color": "tab:blue", "marker": "s", "label": "eager PyTorch"},
    "compile": {"color": "tab:green", "marker": "^", "label": "torch.compile"},
    "flashinfer": {"color": "tab:purple", "marker": "v", "label": "FlashInfer"},
    "liger": {"color": "tab:orange", "marker": "D", "label": "Liger-Kernel"},
}


def _log_axes(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _save(fig: plt.Figure, caption: str | None, path: Path) -> None:
    if caption:
        fig.suptitle(caption, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(rows: list[dict], caption: str, path: Path) -> None:
    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 4.2), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes, strict=True):
        series = [r for r in rows if r["dtype"] == dtype]
        for name, style in STYLES.items():
            points = [(r["tokens"], r[f"{name}_gbps"]) for r in series if f"{name}_gbps" in r]
            if points:
                ax.plot(*zip(*points, strict=True), **style)
        _log_axes(
            ax,
            "tokens (32 q + 8 k heads, head_dim 128)",
            "GB/s moved (q and k read and written once)",
            f"in-place q+k rotation, {dtype}",
        )
    _save(fig, caption, path)


def construction(rows: list[dict], caption: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    lengths = [r["length"] for r in rows]
    ax.plot(
        lengths,
        [r["yarn_ext_us"] / 1e3 for r in rows],
        "o-",
        color="tab:red",
        label="yarn_ext (float64 angles and cos/sin)",
    )
    ax.plot(
        lengths,
        [r["float32_us"] / 1e3 for r in rows],
        "s-",
        color="tab:blue",
        label="float32 construction (arange, outer, cat, cos, sin)",
    )
    _log_axes(ax, "positions (head_dim 128)", "ms", "cos/sin cache construction")
    _save(fig, caption, path)


def accuracy(rows: list[dict], config: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ends = [max(1, r["positions"][1]) for r in rows]
    ax.plot(ends, [r["yarn_ext"] for r in rows], "o-", color="tab:red", label="yarn_ext")
    ax.plot(
        ends,
        [r["float32"] for r in rows],
        "s-",
        color="tab:blue",
        label="float32 angles (Zeta, transformers)",
    )
    _log_axes(
        ax,
        "position (end of each bin [2^k, 2^(k+1)))",
        "max |error| of cos, sin vs float64",
        f"cos/sin accuracy, {config}",
    )
    _save(fig, None, path)
