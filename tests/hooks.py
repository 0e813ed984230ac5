"""The test hooks: native code built only for the tests (tests/native/, by an editable build; never
in the wheel or the CMake package).

  - libyarn_ext_testing (csrc/testing/cuda_emulation.cpp): the CUDA kernels' work run serially on
    the CPU, with the CUDA launcher's path choice and launch geometry, as operators under
    torch.ops.yarn_ext_testing;
  - yarn_ext_module_hook (csrc/testing/module_hook.cpp): the C++ module yarn_ext::YarnEmbedding,
    compiled from the header-only C++ API against this torch, driven from Python.

They are loaded on first use, so that the tests that do not need them (the wheel matrix's subset)
run where they were not built.
"""

from __future__ import annotations

import functools
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import yarn_ext  # noqa: F401  (the operators the hooks call)

NATIVE = Path(__file__).resolve().parent / "native"
_PATHS = ("tokens", "generic_vector", "generic_scalar")


def _missing(name: str) -> RuntimeError:
    return RuntimeError(
        f"the test hook {NATIVE / name} is missing: build the package in place "
        "(pip install --no-build-isolation -e .), which builds the test hooks too"
    )


@functools.cache
def _testing_ops() -> Any:
    library = NATIVE / "libyarn_ext_testing.so"
    if not library.exists():
        raise _missing(library.name)
    torch.ops.load_library(str(library))
    return torch.ops.yarn_ext_testing


@functools.cache
def _module_hook() -> ModuleType:
    if not any(NATIVE.glob("yarn_ext_module_hook*.so")):
        raise _missing("yarn_ext_module_hook")
    sys.path.insert(0, str(NATIVE))
    try:
        return importlib.import_module("yarn_ext_module_hook")
    finally:
        sys.path.remove(str(NATIVE))


def _launch(row: list[int]) -> dict[str, Any]:
    path, grid_x, grid_y, block_x, block_y, heads_per_slice, operands = row
    return {
        "path": _PATHS[path],
        "grid": (grid_x, grid_y),
        "block": (block_x, block_y),
        "heads_per_slice": heads_per_slice,
        "operands": operands,
    }


def emulate_cuda_rotate(
    x: torch.Tensor,
    cache: torch.Tensor,
    inv_freq: torch.Tensor,
    mscale: float,
    positions: torch.Tensor | None,
    interleaved: bool,
    inverse: bool = False,
    sm_count: int = 132,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """yarn_ext.rotate as the CUDA kernels would compute it (`sm_count` stands for the GPU's
    multiprocessors); returns the output and the launches the CUDA launcher would make."""
    out, launches = _testing_ops().emulate_cuda_rotate(
        x,
        cache,
        inv_freq,
        mscale,
        positions,
        interleaved,
        inverse,
        sm_count,
        mrope_section,
        mrope_interleaved,
    )
    return out, [_launch(row) for row in launches.tolist()]


def emulate_cuda_rotate_inplace(
    q: torch.Tensor,
    k: torch.Tensor | None,
    cache: torch.Tensor,
    inv_freq: torch.Tensor,
    mscale: float,
    positions: torch.Tensor | None,
    interleaved: bool,
    sm_count: int = 132,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
) -> list[dict[str, Any]]:
    """yarn_ext.rotate_inplace as the CUDA kernels would compute it; returns the launches."""
    launches = _testing_ops().emulate_cuda_rotate_inplace(
        q,
        k,
        cache,
        inv_freq,
        mscale,
        positions,
        interleaved,
        sm_count,
        mrope_section,
        mrope_interleaved,
    )
    return [_launch(row) for row in launches.tolist()]


def plan_token_launch(
    num_tokens: int, total_heads: int, items_per_row: int, sm_count: int = 132
) -> tuple[bool, dict[str, Any] | None]:
    """Whether a call of these sizes takes the token path, and its launch."""
    plan = _testing_ops().plan_token_launch(num_tokens, total_heads, items_per_row, sm_count)
    fits, *row = plan.tolist()
    return bool(fits), (_launch(row) if fits else None)


def cpp_module_calls(*args: Any) -> Any:
    """The C++ module's results for the Python constructor's keyword arguments and a sequence of
    calls (csrc/testing/module_hook.cpp)."""
    return _module_hook().module_calls(*args)


def emulate_cuda_rotate_store_kv(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache: torch.Tensor,
    inv_freq: torch.Tensor,
    mscale: float,
    positions: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    *,
    q_norm_weight: torch.Tensor | None = None,
    k_norm_weight: torch.Tensor | None = None,
    eps: float = 1e-6,
    norm_unit_offset: bool = False,
    k_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
    interleaved: bool = False,
    write_k: bool = False,
    mrope_section: list[int] | None = None,
    mrope_interleaved: bool = False,
    invalid_slots: torch.Tensor | None = None,
) -> dict[str, Any]:
    """yarn_ext.rotate_store_kv as the CUDA kernel would compute it (slots outside the caches
    skipped and counted into `invalid_slots`, not refused); returns the launch."""
    width, grid_x, grid_y, block_x, block_y = (
        _testing_ops()
        .emulate_cuda_rotate_store_kv(
            q,
            k,
            v,
            cache,
            inv_freq,
            mscale,
            positions,
            k_cache,
            v_cache,
            slot_mapping,
            q_norm_weight,
            k_norm_weight,
            eps,
            norm_unit_offset,
            k_scale,
            v_scale,
            interleaved,
            write_k,
            mrope_section,
            mrope_interleaved,
            invalid_slots,
        )
        .tolist()
    )
    return {"width": width, "grid": (grid_x, grid_y), "block": (block_x, block_y)}
