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

import torch  # noqa: F401  (loads libtorch, which the extension links against)

from yarn_ext._loader import load_extension
from yarn_ext._version import __version__

# First: checks the torch ABI, then loads _C and libyarn_ext (the operator registrations).
_C = load_extension()

from yarn_ext import ops, reference  # noqa: E402
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
    """Dispatch keys (CPU, CUDA, Meta) that have yarn_ext kernels in this build."""
    return list(_C.built_backends())


def cpu_kernels() -> str:
    """The instruction set of the CPU kernels in use: "DEFAULT", "AVX2" or "AVX512", chosen from
    ATen's CPU capability (torch.backends.cpu.get_cpu_capability(); the ATEN_CPU_CAPABILITY
    environment variable can lower it). Every other capability - "NO AVX", NEON, SVE, VSX -
    runs the DEFAULT copy."""
    return str(_C.cpu_kernels())
