"""yarn_ext: YaRN rotary position embeddings with float64-accurate C++ kernels for PyTorch.

Public API:
    YarnEmbedding                   the module (Zeta's API; forward applies the rotation)
    find_correction_dim, find_correction_range, linear_ramp_mask, get_mscale   YaRN helpers
    yarn_ext.ops                    typed wrappers of the torch.ops.yarn_ext operators
    yarn_ext.reference              a slow, independent float64 implementation (the test oracle)
    yarn_ext.cmake_prefix_path      the folder to put on CMAKE_PREFIX_PATH to build C++ programs
                                    against this install (find_package(yarn_ext))
"""

from pathlib import Path

import torch

from yarn_ext._loader import __version__, load

# First: checks the torch release, then loads _C and the operator libraries.
_native = load()
_C = _native.helpers

from yarn_ext import _registrations, ops, reference  # noqa: E402, F401
from yarn_ext.embedding import YarnEmbedding  # noqa: E402
from yarn_ext.helpers import (  # noqa: E402
    find_correction_dim,
    find_correction_range,
    get_mscale,
    linear_ramp_mask,
    yarn_inv_freq,
)

__all__ = [
    "YarnEmbedding",
    "__version__",
    "built_backends",
    "cmake_prefix_path",
    "cpu_kernels",
    "find_correction_dim",
    "find_correction_range",
    "get_mscale",
    "linear_ramp_mask",
    "ops",
    "reference",
    "yarn_inv_freq",
]


# Like torch.utils.cmake_prefix_path: share/cmake of this install holds yarn_extConfig.cmake.
cmake_prefix_path = str(Path(__file__).resolve().parent / "share" / "cmake")


def built_backends() -> list[str]:
    """Dispatch keys (CPU, CUDA, Meta) that have a yarn_ext::rotate kernel in this process (CUDA
    only where the build has the CUDA kernels and torch has CUDA; Meta: the fake implementation)."""
    return [
        key
        for key in ("CPU", "CUDA", "Meta")
        if torch._C._dispatch_has_kernel_for_dispatch_key("yarn_ext::rotate", key)
    ]


def cpu_kernels() -> str:
    """The instruction set of the CPU kernels in use: "DEFAULT", "AVX2", "AVX512" or
    "AVX512_BF16", the best this CPU supports, decided as ATen decides its own
    (torch.backends.cpu.get_cpu_capability(), which calls both AVX-512 copies "AVX512"); the
    ATEN_CPU_CAPABILITY environment variable can lower it ("avx512": the plain AVX512 copy). Every
    other CPU - NEON, SVE, VSX - runs the DEFAULT copy."""
    return str(_native.cpu.yarn_ext_cpu_kernels().decode())


def _set_cuda_token_path(enabled: bool) -> bool:
    """Whether the CUDA launcher may take its token-major fast path (default: yes; off, every
    layout takes the generic path). For measuring the generic path (benchmarks/rotation.py) and
    for telling a suspected fast-path problem apart; YARN_EXT_CUDA_TOKEN_PATH=0 sets it off at
    load time. Returns the previous setting."""
    if _native.cuda is None:
        raise RuntimeError(
            "yarn_ext: the CUDA kernels are not loaded (no CUDA build or no CUDA torch)"
        )
    return bool(_native.cuda.yarn_ext_set_cuda_token_path(int(bool(enabled))))
