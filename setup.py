"""Build script for yarn_ext's native extension (yarn_ext._C).

Build with the torch you will run against, without build isolation:

    pip install --no-build-isolation .

Sources: every .cpp under csrc/ (the torch-free headers live in csrc/include). CUDA kernels
(csrc/cuda/*.cu) join the build in a later release; this build is CPU only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def read_version() -> str:
    text = (ROOT / "yarn_ext" / "_version.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    if match is None:
        raise RuntimeError("yarn_ext/_version.py does not define __version__")
    return match.group(1)


def cpp_sources() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in CSRC.rglob("*.cpp"))


def extension() -> CppExtension:
    debug = os.environ.get("YARN_EXT_DEBUG", "0") == "1"
    cxx_flags = ["-O0", "-g"] if debug else ["-O3"]
    # at::parallel_for is OpenMP in torch's CPU builds: without -fopenmp it runs on one thread.
    # The extension then shares torch's libgomp (same soname), not a second OpenMP runtime.
    cxx_flags += ["-fopenmp", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    return CppExtension(
        name="yarn_ext._C",
        sources=cpp_sources(),
        include_dirs=[str(CSRC / "include"), str(CSRC)],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
    )


setup(
    name="yarn_ext",
    version=read_version(),
    packages=find_packages(include=["yarn_ext", "yarn_ext.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
