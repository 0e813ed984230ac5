"""The benchmark suite runs from the README's command and writes what it promises. A smoke run
(--quick: small sizes, short timings; without torch.compile to keep it short) - the figures
themselves are the benchmark's business, not the tests'."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_benchmark_writes_table_json_and_plots(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--device",
            "cpu",
            "--quick",
            "--no-compile",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "## Headline" in run.stdout
    for name in (
        "results.md",
        "results.json",
        "throughput.png",
        "construction.png",
        "accuracy.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    rows = results["rotation"]
    assert {r["tokens"] for r in rows} == {1, 64}
    for row in rows:
        for name in ("yarn_ext", "copy", "eager"):
            assert row[f"{name}_us"] > 0 and row[f"{name}_gbps"] > 0
    assert all(r["yarn_ext_us"] > 0 and r["float32_us"] > 0 for r in results["construction"])
    # every layout of the layout table, each timed beside its copy
    layouts = results["layouts"]
    assert len({r["layout"] for r in layouts}) == 5
    assert all(r["yarn_ext_us"] > 0 and r["copy_us"] > 0 for r in layouts)
    assert "## In-place rotation by layout" in run.stdout
    # MRoPE beside plain RoPE, for both shapes
    mrope = results["mrope"]
    assert {r["shape"] for r in mrope} == {"Qwen3.5", "Qwen3-VL"}
    for row in mrope:
        for name in ("copy", "rope", "mrope", "scattered"):
            assert row[f"{name}_us"] > 0
        # transformers' own path, beside them (requirements-test.txt installs it)
        assert row["transformers_us"] > 0
    assert "## MRoPE beside plain RoPE" in run.stdout
    # the serving step fused, beside the separate steps and the copy
    (kv_store,) = results["kv_store"]
    assert all(kv_store[f"{name}_us"] > 0 for name in ("copy", "fused", "separate"))
    assert "## Serving: norm, rotation and paged KV-cache write fused" in run.stdout
    accuracy = results["accuracy"]
    assert accuracy[-1]["positions"][1] == 2**12
    # the accuracy figures are measurements the tests can hold to: float64 angles stay at
    # float32 rounding, float32 angles do not
    assert max(r["yarn_ext"] for r in accuracy) < 1e-6
    assert accuracy[-1]["float32"] > 100 * accuracy[-1]["yarn_ext"]
