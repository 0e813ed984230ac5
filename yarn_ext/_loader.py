"""Loads yarn_ext's native parts: the helper bindings yarn_ext._C (no torch in them), the operator
library libyarn_ext (schemas and CPU kernels, on PyTorch's stable ABI) and, where torch has CUDA,
libyarn_ext_cuda. The libraries are built once against the stable ABI and load into every torch
from MINIMUM_TORCH on; a torch they cannot serve is refused with a message that says why."""

from __future__ import annotations

import ctypes
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from yarn_ext import _version

_LIB_DIR = Path(__file__).resolve().parent / "lib"

try:  # what setup.py recorded: the version, the build's torch, whether it has CUDA kernels
    from yarn_ext import _build_info
except ImportError:
    raise ImportError(
        f"yarn_ext {_version.__version__} is not built: yarn_ext/_build_info.py is missing "
        "(pip install --no-build-isolation .)"
    ) from None

# The release and the variant built, as torch gives its own: 0.1.0+cu130, 0.1.0+cpu.
__version__: str = getattr(_build_info, "VERSION", "")
if not __version__:
    raise ImportError(
        f"yarn_ext {_version.__version__}: yarn_ext/_build_info.py is from an older build "
        "(pip install --no-build-isolation . again)"
    )


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as 2.14.1+cu130 or 13.0."""
    major, minor = version.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# The oldest torch the libraries load into (their TORCH_TARGET_VERSION, csrc/library.json).
MINIMUM_TORCH = _release(_build_info.MINIMUM_TORCH)


def torch_mismatch(
    running: str, built_cuda: str | None, running_cuda: str | None, cuda_kernels: bool
) -> str | None:
    """Why yarn_ext cannot run with torch `running` (CUDA `running_cuda`, None for a CPU-only
    torch) when it was built for CUDA `built_cuda`, or None when it can. A CPU-only torch is
    served by the CPU kernels alone."""
    if _release(running) < MINIMUM_TORCH:
        minimum = ".".join(map(str, MINIMUM_TORCH))
        return (
            f"yarn_ext {__version__} needs torch >= {minimum}, but torch {running} is installed. "
            f"Upgrade torch (pip install 'torch>={minimum}')."
        )
    if cuda_kernels and built_cuda is not None and running_cuda is not None:
        if _release(built_cuda)[0] != _release(running_cuda)[0]:
            return (
                f"yarn_ext {__version__} was built for CUDA {built_cuda}, but the installed torch "
                f"{running} is a CUDA {running_cuda} build; the CUDA major versions differ. "
                f"Install the yarn_ext build for CUDA {_release(running_cuda)[0]} or a torch "
                f"built for CUDA {_release(built_cuda)[0]}; or set YARN_EXT_CPU_ONLY=1 to load "
                f"yarn_ext's CPU kernels alone."
            )
    return None


@dataclass(frozen=True)
class Native:
    """The loaded native parts."""

    helpers: ModuleType  # yarn_ext._C
    cpu: ctypes.CDLL  # libyarn_ext
    cuda: ctypes.CDLL | None  # libyarn_ext_cuda, where built and torch has CUDA


def _library(name: str) -> Path:
    matches = sorted(_LIB_DIR.glob(f"lib{name}.so*"))
    if not matches:
        raise ImportError(f"yarn_ext {__version__}: {_LIB_DIR}/lib{name}.so is missing")
    return matches[0]


def load() -> Native:
    """Loads the native parts. YARN_EXT_CPU_ONLY=1 leaves the CUDA kernels out (and with them the
    check of torch's CUDA version): the CPU kernels under any torch from MINIMUM_TORCH on."""
    built_cuda = _build_info.TORCH_CUDA
    cpu_only = os.environ.get("YARN_EXT_CPU_ONLY", "0") == "1"
    cuda_kernels = bool(_build_info.CUDA_KERNELS) and not cpu_only
    message = torch_mismatch(torch.__version__, built_cuda, torch.version.cuda, cuda_kernels)
    if message is not None:
        raise ImportError(message)
    helpers = importlib.import_module("yarn_ext._C")
    cpu_path = _library("yarn_ext")
    torch.ops.load_library(str(cpu_path))
    cuda = None
    if cuda_kernels and torch.version.cuda is not None:
        cuda_path = _library("yarn_ext_cuda")
        torch.ops.load_library(str(cuda_path))
        cuda = ctypes.CDLL(str(cuda_path))
    cpu = ctypes.CDLL(str(cpu_path))
    cpu.yarn_ext_cpu_kernels.restype = ctypes.c_char_p
    return Native(helpers, cpu, cuda)
