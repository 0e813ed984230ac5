"""Build script for yarn_ext's native extension (yarn_ext._C).

Build with the torch you will run against, without build isolation:

    pip install --no-build-isolation .

CUDA kernels (csrc/cuda/*.cu) are compiled whenever torch is a CUDA build and the CUDA toolkit is
found - a GPU on the build machine is not needed. Environment switches:

    FORCE_CUDA=1            build the CUDA kernels or fail
    YARN_EXT_CPU_ONLY=1     never build them
    TORCH_CUDA_ARCH_LIST    target architectures (default: DEFAULT_ARCH_LIST below)
    CUDA_HOME / CUDA_PATH   the toolkit (else /usr/local/cuda, else torch's guess)
    YARN_EXT_DEBUG=1        -O0 -g
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
# Every architecture CUDA 12.8+/13 compiles for that PyTorch supports, plus PTX for newer GPUs.
DEFAULT_ARCH_LIST = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"


def find_cuda_home() -> str | None:
    """The toolkit root. torch guesses it from the nvcc on PATH, which is wrong when that nvcc is
    a wrapper script (the link then fails with `cannot find -lcudart`), so look at the
    environment and the standard location first."""
    for candidate in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if candidate and (Path(candidate) / "bin" / "nvcc").exists():
            return candidate
    return None


_cuda_home = find_cuda_home()
if _cuda_home is not None:
    # torch.utils.cpp_extension reads CUDA_HOME when it is imported.
    os.environ["CUDA_HOME"] = _cuda_home

import torch  # noqa: E402
from torch.utils import cpp_extension  # noqa: E402


def read_version() -> str:
    text = (ROOT / "yarn_ext" / "_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    if match is None:
        raise RuntimeError("yarn_ext/_version.py does not define __version__")
    return match.group(1)


def sources(pattern: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob(pattern))


def want_cuda() -> bool:
    if os.environ.get("YARN_EXT_CPU_ONLY", "0") == "1":
        print("yarn_ext: YARN_EXT_CPU_ONLY=1, building the CPU kernels only")
        return False
    have_toolkit = cpp_extension.CUDA_HOME is not None
    if os.environ.get("FORCE_CUDA", "0") == "1":
        if torch.version.cuda is None or not have_toolkit:
            raise RuntimeError(
                "FORCE_CUDA=1 needs a CUDA build of torch and the CUDA toolkit "
                f"(torch.version.cuda={torch.version.cuda}, CUDA_HOME={cpp_extension.CUDA_HOME})"
            )
        return True
    if torch.version.cuda is None:
        print("yarn_ext: torch is a CPU build, building the CPU kernels only")
        return False
    if not have_toolkit:
        print("yarn_ext: no CUDA toolkit found (set CUDA_HOME), building the CPU kernels only")
        return False
    return True


def extension() -> cpp_extension.CppExtension:
    debug = os.environ.get("YARN_EXT_DEBUG", "0") == "1"
    optimize = ["-O0", "-g"] if debug else ["-O3"]
    # at::parallel_for is OpenMP in torch's CPU builds: without -fopenmp it runs on one thread.
    # The extension then shares torch's libgomp (same soname), not a second OpenMP runtime.
    cxx = [*optimize, "-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    common = {
        "name": "yarn_ext._C",
        "include_dirs": [str(CSRC / "include"), str(CSRC)],
        "extra_link_args": ["-fopenmp"],
    }
    if not want_cuda():
        return cpp_extension.CppExtension(
            sources=sources("*.cpp"), extra_compile_args={"cxx": cxx}, **common
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_ARCH_LIST)
    print(
        f"yarn_ext: building CPU and CUDA kernels with {cpp_extension.CUDA_HOME}/bin/nvcc for "
        f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}"
    )
    # No fast-math: the angles are reduced in float64 and need precise sin/cos.
    nvcc = [*optimize, "-lineinfo", "--expt-relaxed-constexpr", "-Xcompiler=-Wall"]
    return cpp_extension.CUDAExtension(
        sources=sources("*.cpp") + sources("*.cu"),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        **common,
    )


setup(
    name="yarn_ext",
    version=read_version(),
    packages=find_packages(include=["yarn_ext", "yarn_ext.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension},
)
