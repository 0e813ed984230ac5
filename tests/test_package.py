"""The package around the kernels: version, the C++ side it carries (cmake_prefix_path), the
torch ABI check at import, and the C++ module computing what the Python module computes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

import yarn_ext
from yarn_ext import YarnEmbedding
from yarn_ext._loader import torch_mismatch

from . import hooks
from .support import randn

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_release_and_the_variant_built() -> None:
    """0.1.0+cu130 for a build with CUDA kernels against a CUDA 13.0 torch, 0.1.0+cpu without:
    the release from yarn_ext/_version.py, the label from what the build recorded."""
    from yarn_ext import _build_info

    text = (ROOT / "yarn_ext" / "_version.py").read_text()
    release = re.search(r'"([^"]+)"', text).group(1)  # type: ignore[union-attr]
    if _build_info.CUDA_KERNELS:
        label = "cu" + "".join(_build_info.TORCH_CUDA.split(".")[:2])
    else:
        label = "cpu"
    assert yarn_ext.__version__ == f"{release}+{label}"


def test_cmake_prefix_path_holds_the_cmake_package_headers_and_library() -> None:
    prefix = Path(yarn_ext.cmake_prefix_path)
    assert (prefix / "yarn_ext" / "yarn_extConfig.cmake").is_file()
    assert (prefix / "yarn_ext" / "yarn_extConfigVersion.cmake").is_file()
    package = Path(yarn_ext.__file__).parent
    assert (package / "include" / "yarn_ext" / "yarn_ext.h").is_file()
    assert (package / "include" / "yarn_ext" / "version.h").is_file()
    assert (package / "lib" / "libyarn_ext.so").is_file()


def test_torch_check() -> None:
    # The libraries are on the stable ABI: any torch from 2.10 on, CPU-only ones included.
    for running, cuda in [("2.10.0+cu130", "13.0"), ("2.13.0+cpu", None), ("2.20.1", "13.2")]:
        assert torch_mismatch(running, "13.0", cuda, True) is None
    message = torch_mismatch("2.9.1+cu128", "13.0", "12.8", True)
    assert message is not None and "torch >= 2.10" in message and "2.9.1+cu128" in message
    # Another CUDA major: the message names both.
    message = torch_mismatch("2.11.0+cu128", "13.0", "12.8", True)
    assert message is not None and "CUDA 13.0" in message and "CUDA 12.8" in message
    assert "YARN_EXT_CPU_ONLY" in message
    # A CPU-only build of yarn_ext runs under a CUDA torch (its CPU kernels).
    assert torch_mismatch("2.11.0+cu128", None, "12.8", False) is None


CONFIGS = {
    "dynamic": {"dim": 64, "max_position_embeddings": 16, "original_max_position_embeddings": 16},
    "static_qwen3": {
        "dim": 128,
        "max_position_embeddings": 64,
        "base": 1e6,
        "original_max_position_embeddings": 16,
        "finetuned": True,
    },
    "every_knob": {
        "dim": 32,
        "max_position_embeddings": 8,
        "base": 5e5,
        "original_max_position_embeddings": 32,
        "extrapolation_factor": 0.75,
        "attn_factor": 1.1,
        "beta_fast": 16.0,
        "beta_slow": 2.0,
        "finetuned": True,
        "scaling_factor": 3.0,
        "truncate": False,
        "interleaved": True,
    },
    "attention_factor": {"dim": 16, "max_position_embeddings": 8, "attention_factor": 0.9},
}


@pytest.mark.hooks
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cpp_module_computes_what_the_python_module_computes(name) -> None:
    config = CONFIGS[name]
    dim = config["dim"]
    forwards = [  # implicit positions (growing the cache twice), explicit ones, a seq_len
        (randn(2, 10, dim, seed=1), None, None),
        (randn(3, 40, dim, seed=2), None, None),
        (randn(2, 5, dim, seed=3), None, torch.tensor([[-3, 0, 7, 99, 1 << 20]])),
        (randn(1, 8, dim, seed=4), 100, None),
    ]
    q, k = randn(150, 4, dim, seed=5), randn(150, 2, dim, seed=6)  # rotate_ grows to 150
    cpp_q, cpp_k = q.clone(), k.clone()
    outputs, cos, sin, inv_freq, cache, scale, mscale = hooks.cpp_module_calls(
        config, forwards, cpp_q, cpp_k, None, 200
    )
    rope = YarnEmbedding(**config)
    for (x, seq_len, positions), cpp_out in zip(forwards, outputs, strict=True):
        assert torch.equal(rope(x, seq_len, positions=positions), cpp_out)
    rope.rotate_(q, k)
    assert torch.equal(q, cpp_q) and torch.equal(k, cpp_k)
    py_cos, py_sin = rope.cos_sin(200)
    assert torch.equal(py_cos, cos) and torch.equal(py_sin, sin)
    assert torch.equal(rope.inv_freq, inv_freq) and torch.equal(rope.cos_sin_cache, cache)
    assert (rope.scale, rope.mscale) == (scale, mscale)
    assert rope.max_seq_len_cached == 200


@pytest.mark.hooks
def test_cpp_module_rejects_what_the_python_module_rejects() -> None:
    for bad in ({"dim": 63}, {"dim": 64, "attn_factor": float("nan")}, {"dim": 64, "base": 1.0}):
        with pytest.raises(ValueError):
            YarnEmbedding(**bad)
        with pytest.raises(ValueError):
            hooks.cpp_module_calls(bad, [], randn(4, 2, 64), None, None, 1)
    q = randn(5, 2, 64)
    with pytest.raises(ValueError, match="positions"):  # does not broadcast; q is left unchanged
        hooks.cpp_module_calls({"dim": 64}, [], q, None, torch.arange(3), 1)
    assert torch.equal(q, randn(5, 2, 64))
