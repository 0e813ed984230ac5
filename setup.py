"""Build script for yarn_ext: the operator libraries libyarn_ext and libyarn_ext_cuda (PyTorch's
stable ABI; built by CMakeLists.txt, installed into the package with the C++ API's headers and the
CMake package) and the Python module yarn_ext._C (pybind11 bindings of the helpers, no torch).
Built once, the package loads into every torch from 2.10 on.

Build without build isolation (the build needs torch's headers and nvcc's match for CUDA):

    pip install --no-build-isolation .

An editable or in-place build also builds the test hooks (tests/native/: the CUDA emulation and the
C++ module's parity hook), which are never part of the wheel or the CMake package.

CUDA kernels (csrc/cuda/*.cu) are compiled whenever torch is a CUDA build and the CUDA toolkit is
found - a GPU on the build machine is not needed. Environment switches:

    FORCE_CUDA=1            build the CUDA kernels or fail
    YARN_EXT_CPU_ONLY=1     never build them
    TORCH_CUDA_ARCH_LIST    target architectures (default: the list in CMakeLists.txt)
    CUDA_HOME / CUDA_PATH   the toolkit (else /usr/local/cuda, else torch's guess)
    YARN_EXT_DEBUG=1        -O0 -g
    YARN_EXT_SANITIZE=address,undefined
                            instrument libyarn_ext and _C with these sanitizers (for testing:
                            .ci/sanitizers.sh runs the tests against such a build)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pybind11
from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
# Where editable builds put the test hooks (never packaged).
TEST_HOOKS = ROOT / "tests" / "native"
# Sanitizers for the host code of both libraries (empty: none); see .ci/sanitizers.sh.
SANITIZE = os.environ.get("YARN_EXT_SANITIZE", "")


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


def arch_list() -> str:
    chosen = os.environ.get("TORCH_CUDA_ARCH_LIST")
    return f"TORCH_CUDA_ARCH_LIST={chosen}" if chosen else "CMakeLists.txt's default architectures"


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
        print(f"yarn_ext: FORCE_CUDA=1, building CPU and CUDA kernels for {arch_list()}")
        return True
    if torch.version.cuda is None:
        print("yarn_ext: torch is a CPU build, building the CPU kernels only")
        return False
    if not have_toolkit:
        print("yarn_ext: no CUDA toolkit found (set CUDA_HOME), building the CPU kernels only")
        return False
    print(
        f"yarn_ext: building CPU and CUDA kernels with {cpp_extension.CUDA_HOME}/bin/nvcc for "
        f"{arch_list()}"
    )
    return True


def build_library(package_dir: Path, build_dir: Path, cuda: bool, test_hooks: bool) -> None:
    """Builds libyarn_ext (kernels, operator registrations, the C++ API; no Python) with
    CMakeLists.txt - the same build C++ users run - and installs it into the package: lib/, include/
    and share/cmake/ (the CMake package, found through yarn_ext.cmake_prefix_path)."""
    try:  # the cmake package of requirements.txt, whether or not its bin/ is on PATH
        from cmake import CMAKE_BIN_DIR

        cmake: str | None = str(Path(CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        cmake = shutil.which("cmake")
    if cmake is None:
        raise RuntimeError("building yarn_ext needs cmake (pip install cmake)")
    debug = os.environ.get("YARN_EXT_DEBUG", "0") == "1"
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build_dir),
        f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
        f"-DCMAKE_INSTALL_PREFIX={package_dir}",
        "-DCMAKE_INSTALL_LIBDIR=lib",
        "-DCMAKE_INSTALL_INCLUDEDIR=include",
        "-DYARN_EXT_CMAKE_DIR=share/cmake/yarn_ext",
        f"-DCMAKE_BUILD_TYPE={'Debug' if debug else 'Release'}",
        f"-DYARN_EXT_CUDA={'ON' if cuda else 'OFF'}",
        "-DYARN_EXT_BUILD_TESTS=OFF",
        f"-DYARN_EXT_BUILD_TEST_HOOKS={'ON' if test_hooks else 'OFF'}",
        "-DYARN_EXT_VERSIONED_SONAME=OFF",
        "-DYARN_EXT_PACKAGE_RPATH=ON",
    ]
    if shutil.which("ninja") and not (build_dir / "CMakeCache.txt").exists():
        configure += ["-G", "Ninja"]
    if cuda:
        configure.append(f"-DCUDA_TOOLKIT_ROOT_DIR={cpp_extension.CUDA_HOME}")
    if SANITIZE:
        configure.append(f"-DYARN_EXT_SANITIZE={SANITIZE}")
    subprocess.check_call(configure)
    jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
    subprocess.check_call([cmake, "--build", str(build_dir), "--parallel", jobs])
    subprocess.check_call([cmake, "--install", str(build_dir)])
    if test_hooks:
        TEST_HOOKS.mkdir(exist_ok=True)
        shutil.copy2(build_dir / "libyarn_ext_testing.so", TEST_HOOKS / "libyarn_ext_testing.so")
    # What the package checks at import: a torch of another CUDA major fails with a clear message.
    (package_dir / "_build_info.py").write_text(
        f'"""Written by setup.py at build time."""\n\nTORCH_VERSION = "{torch.__version__}"\n'
        f"TORCH_CUDA = {torch.version.cuda!r}  # torch.version.cuda of the build's torch\n"
        f"CUDA_KERNELS = {cuda}\n"
    )


def build_module_hook(build_dir: Path, package_dir: Path, cuda: bool) -> None:
    """tests/native/yarn_ext_module_hook: the C++ module yarn_ext::YarnEmbedding (the header-only
    C++ API, compiled against this torch's LibTorch) driven from Python, for the parity test of the
    two modules. A test hook: built for editable builds only."""
    hook = cpp_extension.CppExtension(
        name="yarn_ext_module_hook",
        sources=[str(CSRC / "testing" / "module_hook.cpp")],
        include_dirs=[str(CSRC / "include"), str(build_dir / "include")],
        library_dirs=[str(package_dir / "lib")],
        libraries=["yarn_ext"] + (["yarn_ext_cuda"] if cuda else []),
        extra_compile_args={"cxx": ["-O1"]},
        extra_link_args=[f"-Wl,-rpath,{package_dir / 'lib'}"],
    )
    from setuptools import Distribution

    dist = Distribution({"name": "yarn_ext_module_hook", "ext_modules": [hook]})
    command = cpp_extension.BuildExtension(dist)
    command.build_lib = str(TEST_HOOKS)
    command.build_temp = str(build_dir / "module_hook")
    command.ensure_finalized()
    command.run()


class BuildExtension(build_ext):
    """Builds the operator libraries with CMake, then the Python module _C (no torch)."""

    def run(self) -> None:
        package_dir = Path(self.get_ext_fullpath("yarn_ext._C")).resolve().parent
        package_dir.mkdir(parents=True, exist_ok=True)
        cuda = want_cuda()
        editable = bool(self.inplace or getattr(self, "editable_mode", False))
        cmake_dir = Path(self.build_temp).resolve() / "cmake"
        build_library(package_dir, cmake_dir, cuda, test_hooks=editable)
        if editable:
            build_module_hook(cmake_dir, package_dir, cuda)
        super().run()


def extension() -> Extension:
    """yarn_ext._C: pybind11 bindings of the helpers; no torch, so one build serves every torch."""
    debug = os.environ.get("YARN_EXT_DEBUG", "0") == "1"
    compile_args = ["-std=c++17", "-fvisibility=hidden"] + (["-O0", "-g"] if debug else ["-O3"])
    link_args = [f"-Wl,--version-script={CSRC / 'python' / 'exports.map'}"]
    if SANITIZE:
        compile_args += [f"-fsanitize={SANITIZE}", "-fno-sanitize-recover=all"]
        compile_args += ["-fno-omit-frame-pointer"] + ([] if debug else ["-g1", "-O1"])
        link_args.append(f"-fsanitize={SANITIZE}")
    return Extension(
        name="yarn_ext._C",
        sources=["csrc/python/bindings.cpp"],
        include_dirs=[str(CSRC / "include"), pybind11.get_include()],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        language="c++",
    )


setup(
    name="yarn_ext",
    version=read_version(),
    install_requires=["torch>=2.10"],
    packages=find_packages(include=["yarn_ext", "yarn_ext.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
