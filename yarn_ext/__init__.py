"""yarn_ext: YaRN rotary position embeddings with float64-accurate C++ kernels for PyTorch.

Public API:
    YarnEmbedding                   the module (Zeta's API; forward applies the rotation)
    find_correction_dim, find_correction_range, linear_ramp_mask, get_mscale   YaRN helpers
    yarn_ext.ops                    typed wrappers of the torch.ops.yarn_ext operators
    yarn_ext.reference              a slow, independent float64 implementation (the test oracle)
"""

import torch  # noqa: F401  (loads libtorch, which the extension links against)

from yarn_ext import _C, ops, reference
from yarn_ext._version import __version__
from yarn_ext.embedding import YarnEmbedding
from yarn_ext.helpers import (
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
    "find_correction_dim",
    "find_correction_range",
    "get_mscale",
    "linear_ramp_mask",
    "ops",
    "reference",
    "yarn_inv_freq",
]


def built_backends() -> list[str]:
    """Dispatch keys (CPU, CUDA, Meta) that have yarn_ext kernels in this build."""
    return list(_C.built_backends())
