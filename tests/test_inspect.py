"""`python -m yarn_ext inspect CONFIG.json [--plot FILE.png]` on a Qwen3-style config.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from yarn_ext.__main__ import main

from .test_hf_config import GPT_OSS, QWEN35_JSON

QWEN3 = {
    "architectures": ["Qwen3ForCausalLM"],
    "head_dim": 128,
    "hidden_size": 5120,
    "num_attention_heads": 64,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000,
    "rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
}


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_inspect_prints_the_derived_parameters_and_plots(tmp_path, capsys) -> None:
    plot = tmp_path / "inv_freq.png"
    assert main(["inspect", str(write(tmp_path, QWEN3)), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "rotary dim: 128 (64 frequencies); rope_theta: 1e+06" in out
    assert "scale: 4 over original_max_position_embeddings 32768" in out
    # beta_fast 32 -> 23.596, beta_slow 1 -> 39.651 for theta 1e6, dim 128, 32768 positions
    assert "truncated to [23, 40]" in out
    assert "attention factor (mscale, multiplies cos and sin): 1.138629436111989" in out
    assert "frequencies kept: 24, divided by the scale: 24, blended: 16" in out
    assert "67,108,864 bytes" in out
    chart = [line for line in out.splitlines() if line.startswith("  1.00 |")]
    assert chart and chart[0].count("#") == 24 + 2  # the kept 24, and 2 blended that round up
    assert plot.stat().st_size > 0 and plot.read_bytes()[:4] == b"\x89PNG"


def test_inspect_gpt_oss_keeps_the_fractional_range(tmp_path, capsys) -> None:
    config = {
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "rope_theta": 150000,
        "rope_scaling": GPT_OSS,
    }
    assert main(["inspect", str(write(tmp_path, config))]) == 0
    assert "kept as [" in capsys.readouterr().out


def test_inspect_names_what_is_wrong(tmp_path) -> None:
    linear = {**QWEN3, "rope_scaling": {"rope_type": "linear", "factor": 2.0}}
    with pytest.raises(SystemExit, match="rope_type is 'linear'"):
        main(["inspect", str(write(tmp_path, linear))])
    with pytest.raises(SystemExit, match="cannot read"):
        main(["inspect", str(tmp_path / "missing.json")])


def test_inspect_mrope_and_plain_configs(tmp_path, capsys) -> None:
    text = QWEN35_JSON["text_config"]
    rope = {**text["rope_parameters"], "mrope_section": [11, 11, 10], "mrope_interleaved": True}
    qwen35 = {**QWEN35_JSON, "text_config": {**text, "rope_parameters": rope}}
    assert main(["inspect", str(write(tmp_path, qwen35))]) == 0
    out = capsys.readouterr().out
    assert "plain RoPE (no YaRN): rotary dim 64 (32 frequencies); rope_theta: 1e+07" in out
    assert "MRoPE: sections [11, 11, 10] (t, h, w), interleaved" in out
    assert "frequency 0..31: thwthwthwt hwthwthwth wthwthwthw th" in out
    qwen25 = {**QWEN3, "rope_scaling": {**QWEN3["rope_scaling"], "mrope_section": [16, 24, 24]}}
    assert main(["inspect", str(write(tmp_path, qwen25))]) == 0
    out = capsys.readouterr().out
    assert "scale: 4 over original_max_position_embeddings 32768" in out
    assert "frequency 0..63: tttttttttt tttttthhhh hhhhhhhhhh hhhhhhhhhh wwwwwwwwww" in out


def test_inspect_prints_deepseeks_softmax_correction(tmp_path, capsys) -> None:
    deepseek = {
        "model_type": "deepseek_v3",
        "qk_rope_head_dim": 64,
        "hidden_size": 7168,
        "num_attention_heads": 128,
        "max_position_embeddings": 163840,
        "rope_theta": 10000,
        "rope_scaling": {
            "type": "yarn",
            "factor": 40,
            "original_max_position_embeddings": 4096,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
    }
    assert main(["inspect", str(write(tmp_path, deepseek))]) == 0
    out = capsys.readouterr().out
    factor = (0.1 * math.log(40) + 1) ** 2
    assert f"softmax scale factor (mscale_all_dim): {factor!r}" in out
