"""Smoke test of an installed wheel, run in a fresh virtual environment that holds only torch and
the wheel: import, the examples of Zeta's YarnEmbedding documentation (with yarn_ext's import),
the self-check, and the C++ side that the wheel carries."""

from __future__ import annotations

import importlib.metadata
import runpy
import sys
from pathlib import Path

import torch

import yarn_ext
from yarn_ext import (
    YarnEmbedding,
    find_correction_dim,
    find_correction_range,
    get_mscale,
    linear_ramp_mask,
)

print(f"yarn_ext {yarn_ext.__version__} from {Path(yarn_ext.__file__).parent}")
assert "site-packages" in yarn_ext.__file__, "the wheel, not the source tree, must be imported"
# The wheel's metadata names the variant built, as torch's do (0.1.0+cu130).
assert importlib.metadata.version("yarn_ext") == yarn_ext.__version__
assert yarn_ext.__version__.endswith("+cu" + "".join(torch.version.cuda.split(".")[:2])), (
    yarn_ext.__version__
)

# The documentation's examples.
yarn_embedding = YarnEmbedding(dim=256, max_position_embeddings=2048)
input_tensor = torch.rand(16, 32, 256)
output = yarn_embedding(input_tensor, seq_len=32)
assert output.shape == input_tensor.shape
geometry = {"dim": 256, "base": 10000, "max_position_embeddings": 2048}
correction_dim = find_correction_dim(num_rotations=8, **geometry)
low, high = find_correction_range(low_rot=16, high_rot=32, **geometry)
ramp_mask = linear_ramp_mask(min=0.2, max=0.8, dim=128)
mscale = get_mscale(scale=2.0)
# against the package's independent float64 formulas (yarn_ext.reference)
assert correction_dim == yarn_ext.reference.find_correction_dim(8, **geometry)
assert (low, high) == yarn_ext.reference.find_correction_range(16, 32, **geometry)
assert ramp_mask.shape == (128,) and mscale == yarn_ext.reference.get_mscale(2.0)

# The C++ side: headers, the Python-free library and the CMake package.
prefix = Path(yarn_ext.cmake_prefix_path)
package = Path(yarn_ext.__file__).parent
for required in (
    prefix / "yarn_ext" / "yarn_extConfig.cmake",
    package / "include" / "yarn_ext" / "yarn_ext.h",
    package / "lib" / "libyarn_ext.so",
):
    assert required.exists(), f"missing from the wheel: {required}"

sys.argv = ["yarn_ext"]
try:  # python -m yarn_ext: the self-check against the float64 reference
    runpy.run_module("yarn_ext", run_name="__main__")
except SystemExit as done:
    assert done.code in (0, None), f"python -m yarn_ext failed with {done.code}"
print("wheel smoke test passed")
